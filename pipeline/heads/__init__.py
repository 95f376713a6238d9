"""Stage two: the split, the heads trained from the cache, their calibration, evaluation and plots."""
