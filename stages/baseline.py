"""DVC stage `baseline`: logistic regression on standardised mean-pooled embeddings, saved with joblib."""
import sys
from pathlib import Path

if not __package__:  # run as a file (python stages/baseline.py): import the project's packages from its folder
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from pipeline.cache import CACHE_PATH, open_cache
from pipeline.heads import (HEAD_FILES, CalibrationConfig, Head, LogRegConfig, calibrate, fit_logreg, head_metadata,
                            mean_pool, save_logreg)
from pipeline.split import SPLIT_PATH, read_split
from pipeline.threads import set_threads
from stages import config, read_params, stage

MODEL = HEAD_FILES["logreg"]


@stage("baseline")
def main() -> None:
    set_threads("stage_two")
    params = read_params()
    calibration = config(CalibrationConfig, params["calibration"], "calibration")
    cfg = config(LogRegConfig, params["baseline"], "baseline")
    cache = open_cache(CACHE_PATH)
    parts = read_split(SPLIT_PATH, cache.clip_ids())
    train, val = parts == "train", parts == "val"
    x = mean_pool(cache.embeddings)  # (V, D), a block of videos at a time
    model = fit_logreg(x[train], cache.labels[train], cfg)
    head = Head("logreg", head_metadata(cache.attrs, cache.class_names, "logreg"), model)
    calibrate(head, x[val], cache.labels[val], calibration.not_sure_below_chance_to_certain,
              cache.labels[train])
    save_logreg(MODEL, model, head.meta)
    if head.meta["temperature_note"]:
        print(f"baseline: note: {head.meta['temperature_note']}")
    print(f"logistic regression on {int(train.sum())} training videos saved to {MODEL}")


if __name__ == "__main__":
    main()
