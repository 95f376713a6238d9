"""DVC stage `train`: the linear head (mean, attention or conv pooling over time) on the cached frame embeddings."""
import sys
from pathlib import Path

if not __package__:  # run as a file (python stages/train.py): import the project's packages from its folder
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from pipeline.cache import CACHE_PATH, open_cache
from pipeline.heads import (HEAD_FILES, CalibrationConfig, LinearConfig, calibrate, head_metadata, mean_pool,
                            save_linear, torch_head, train_linear_head)
from pipeline.plots import StageLive
from pipeline.split import SPLIT_PATH, read_split
from pipeline.threads import set_threads
from stages import config, read_params, stage

BEST, FINAL = HEAD_FILES["linear"], "models/linear_final.pt"


@stage("train")
def main() -> None:
    set_threads("stage_two")
    params = read_params()
    calibration = config(CalibrationConfig, params["calibration"], "calibration")
    cfg = config(LinearConfig, params["train"], "train")
    cache = open_cache(CACHE_PATH)  # embeddings stay in the file until read
    parts = read_split(SPLIT_PATH, cache.clip_ids())
    # mean pooling trains on (V, D), pooled a block at a time; attention and conv read mini-batches of frames
    x = mean_pool(cache.embeddings) if cfg.head == "mean" else cache.embeddings
    y = cache.labels
    train, val = parts == "train", parts == "val"
    result = train_linear_head(x[train], y[train], x[val], y[val], len(cache.class_names), cfg)
    meta = head_metadata(cache.attrs, cache.class_names, "linear", pooling=cfg.head)
    for path, state, epoch in ((BEST, result.best_state, result.best_epoch),
                               (FINAL, result.final_state, len(result.history))):
        head = calibrate(torch_head(state, {**meta, "epoch": epoch}), x[val], y[val],
                         calibration.not_sure_below_chance_to_certain, y[train])
        save_linear(path, state, head.meta)
        if head.meta["temperature_note"] and path == BEST:
            print(f"train: note: {head.meta['temperature_note']}")
    with StageLive("dvclive/train", dvcyaml=None, save_dvc_exp=False) as live:
        live.log_params(vars(cfg))
        # the steps set, not next_step(): each next_step re-reads every plot file (quadratic: 2.7 s of 200 epochs)
        for step, row in enumerate(result.history):
            live.step = step
            live.log_metric("train/loss", row["train_loss"])
            if "val_loss" in row:
                live.log_metric("val/loss", row["val_loss"])
                live.log_metric("val/accuracy", row["val_accuracy"])
        live.log_metric("best_epoch", result.best_epoch, plot=False)
    last = result.history[-1]
    print(f"linear head ({cfg.head} pooling): best epoch {result.best_epoch} of {cfg.epochs}, "
          f"final train loss {last['train_loss']:.4f}"
          + (f", val loss {last['val_loss']:.4f}, val accuracy {last['val_accuracy']:.3f}" if "val_loss" in last
             else "") + f"; saved {BEST} and {FINAL}")


if __name__ == "__main__":
    main()
