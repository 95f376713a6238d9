"""Where the project's files live, relative to the project folder: the one home of every path the stages write.

dvc.yaml reads this file (`vars:`) and names its outputs `${CACHE_PATH}` and so on; the code imports it. Only
literal assignments here: DVC parses the file, it does not run it.
"""
PARAMS = "params.yaml"  # every setting; the stages, pipeline.tools.predict and the app read it in the project folder
ANNOTATIONS_DIR = "annotations"  # annotation files and split lists: the extract and split stages depend on it
DEMO_DIR = "data/demo"  # the demo stage's clips (params.yaml's default data.root)
TINY_CLIP = "models/tiny-clip"  # where the random tiny CLIP is written (the offline demo's encoder.model)
CACHE_PATH = "cache/features.h5"  # stage one's cache: every reader looks here
SKIPPED_LIST = "cache/features.skipped.tsv"  # stage one's full list of skipped clips (<cache stem>.skipped.tsv)
SPLIT_PATH = "cache/split.csv"  # the split stage's parts and groups, beside the cache
SEARCH_INDEX = "cache/features.index.h5"  # the index stage's video vectors for search (<cache stem>.index.h5)
HEAD_FILES = {"linear": "models/linear.pt", "logreg": "models/logreg.pt", "zeroshot": "models/zeroshot.pt"}
LINEAR_FINAL = "models/linear_final.pt"  # the linear head after its last epoch (HEAD_FILES's is the best epoch's)
TRAIN_LIVE = "dvclive/train"  # DVCLive's folder for the train stage (curves)
EVALUATE_LIVE = "dvclive/evaluate"  # DVCLive's folder for the evaluate stage (confusion matrices, per class)
EVALUATE_NOTICE = "dvclive/evaluate/plots/notice.json"  # the lines `dvc plots show` draws above the charts
METRICS_SUMMARY = "metrics/summary.json"  # the one `metrics:` file, numbers only: {metric: {head: value}}
METRICS_DETAILS = "metrics/details.json"  # warning, protocol, intervals, calibration (an out, not a metric)
