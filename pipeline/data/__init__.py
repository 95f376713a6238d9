"""Where the videos come from: class folders, annotation files, official split lists and the demo dataset."""
