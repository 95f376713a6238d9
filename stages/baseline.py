"""DVC stage `baseline`: logistic regression on standardised mean-pooled embeddings, saved with joblib."""
import yaml

from pipeline.cache import open_cache
from pipeline.heads import HEAD_FILES, Head, LogRegConfig, calibrate, fit_logreg, head_metadata, mean_pool, save_logreg
from pipeline.split import read_split

CACHE, SPLIT, MODEL = "cache/features.h5", "cache/split.csv", HEAD_FILES["logreg"]


def main() -> None:
    params = yaml.safe_load(open("params.yaml"))
    cfg = LogRegConfig(**params["baseline"])
    cache = open_cache(CACHE)
    parts = read_split(SPLIT, cache.paths)
    train, val = parts == "train", parts == "val"
    x = mean_pool(cache.embeddings)  # (V, D), a block of videos at a time
    model = fit_logreg(x[train], cache.labels[train], cfg)
    head = Head("logreg", head_metadata(cache.attrs, cache.class_names, "logreg"), model)
    calibrate(head, x[val], cache.labels[val], params["calibration"]["not_sure_below"])
    save_logreg(MODEL, model, head.meta)
    print(f"logistic regression on {int(train.sum())} training videos saved to {MODEL}")


if __name__ == "__main__":
    main()
