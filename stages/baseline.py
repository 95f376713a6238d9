"""DVC stage `baseline`: logistic regression on standardised mean-pooled embeddings, saved as plain arrays (.pt)."""
from pipeline.extract.cache import open_cache
from pipeline.heads.calibration import CalibrationConfig
from pipeline.heads.logreg import LogRegConfig, LogRegHead
from pipeline.heads.training import mean_pool
from pipeline.heads.kinds import HEADS
from pipeline.paths import CACHE_PATH, SPLIT_PATH
from pipeline.heads.split_file import read_split
from pipeline.threads import set_threads
from stages import config, read_params, stage

MODEL = HEADS[LogRegHead.kind].file


@stage("baseline")
def main() -> None:
    set_threads("stage_two")
    params = read_params()
    calibration = config(CalibrationConfig, params["calibration"], "calibration")
    cfg = config(LogRegConfig, params["baseline"], "baseline")
    cache = open_cache(CACHE_PATH)
    parts = read_split(SPLIT_PATH, cache.clip_ids(), needs=("train",))
    train, val = parts == "train", parts == "val"
    x, y = mean_pool(cache.embeddings), cache.labels  # (V, D), a block of videos at a time
    head = LogRegHead(cfg).fit(x[train], y[train], cache.class_names, cache.attrs)
    head.calibrate(x[val], y[val], calibration.not_sure_below_chance_to_certain, y[train]).save(MODEL)
    if head.calibration_.temperature_note:
        print(f"baseline: note: {head.calibration_.temperature_note}")
    n = int(train.sum())
    print(f"logistic regression on {n} training video{'' if n == 1 else 's'} saved to {MODEL}")


if __name__ == "__main__":
    main()
