"""DVC stage `train`: the linear head (mean, attention or conv pooling over time) on the cached frame embeddings."""
from pipeline.extract.cache import open_cache
from pipeline.heads.calibration import CalibrationConfig
from pipeline.errors import ConfigError
from pipeline.heads.estimators import LinearHead
from pipeline.heads.kinds import HEADS
from pipeline.paths import CACHE_PATH, LINEAR_FINAL, SPLIT_PATH, TRAIN_LIVE
from pipeline.heads.plots import StageLive
from pipeline.heads.split_file import read_split
from pipeline.threads import set_threads
from pipeline.heads.training import LinearConfig, mean_pool
from stages import config, read_params, stage

BEST, FINAL = HEADS[LinearHead.kind].file, LINEAR_FINAL


@stage("train")
def main() -> None:
    set_threads("stage_two")
    params = read_params()
    calibration = config(CalibrationConfig, params["calibration"], "calibration")
    cfg = config(LinearConfig, params["train"], "train")
    if cfg.epochs < 1:  # (0 is a head at its starting point: a library use, not a stage's)
        raise ConfigError(f"train.epochs must be at least 1 to train the head, got {cfg.epochs}")
    cache = open_cache(CACHE_PATH)  # embeddings stay in the file until read
    parts = read_split(SPLIT_PATH, cache.clip_ids(), needs=("train",))
    # mean pooling trains on (V, D), pooled a block at a time; attention and conv read mini-batches of frames
    x = mean_pool(cache.embeddings) if cfg.head == "mean" else cache.embeddings
    y = cache.labels
    train, val = parts == "train", parts == "val"
    best = LinearHead(cfg).fit(x[train], y[train], cache.class_names, cache.attrs, x[val], y[val])
    for path, head in ((BEST, best), (FINAL, best.final_head())):
        head.calibrate(x[val], y[val], calibration.not_sure_below_chance_to_certain, y[train]).save(path)
        if head.calibration_.temperature_note and path == BEST:
            print(f"train: note: {head.calibration_.temperature_note}")
    with StageLive(TRAIN_LIVE, dvcyaml=None, save_dvc_exp=False) as live:
        live.log_params(vars(cfg))
        # the steps set, not next_step(): each next_step re-reads every plot file (quadratic: 2.7 s of 200 epochs)
        for step, row in enumerate(best.history_):
            live.step = step
            live.log_metric("train/loss", row["train_loss"])
            if "val_loss" in row:
                live.log_metric("val/loss", row["val_loss"])
                live.log_metric("val/accuracy", row["val_accuracy"])
        live.log_metric("best_epoch", best.best_epoch_, plot=False)
    last = best.history_[-1]
    print(f"linear head ({cfg.head} pooling): best epoch {best.best_epoch_} of {cfg.epochs}, "
          f"final train loss {last['train_loss']:.4f}"
          + (f", val loss {last['val_loss']:.4f}, val accuracy {last['val_accuracy']:.3f}" if "val_loss" in last
             else "") + f"; saved {BEST} and {FINAL}")


if __name__ == "__main__":
    main()
