"""DVC stage `evaluate`: every head on the test part (and k-fold CV): metrics, confusion and data-efficiency plots."""
import json
from dataclasses import replace
from pathlib import Path

from pipeline.extract.cache import open_cache, random_encoder_note
from pipeline.heads.calibration import expected_calibration_error
from pipeline.heads.evaluate import (HEAD_METRICS, SUMMARY_METRICS, cross_validate, data_efficiency,
                                     evaluate_predictions, format_table, leakage_note, small_test_note, unit_rows,
                                     usable_folds)
from pipeline.heads.kinds import HEADS, load_head
from pipeline.paths import CACHE_PATH, EVALUATE_LIVE, METRICS_DETAILS, METRICS_SUMMARY, SPLIT_PATH
from pipeline.heads.plots import NOTICE, StageLive, by_head, confusion_rows, notice_rows
from pipeline.heads.split import UNUSED, SplitConfig, clip_groups, describe_protocol
from pipeline.heads.split_file import read_split
from pipeline.threads import set_threads
from pipeline.heads.training import mean_pool
from stages import config, read_params, stage

OUT = EVALUATE_LIVE
# The numbers DVC tabulates (the `metrics:` of dvc.yaml) are in SUMMARY alone; strings and the other numbers are in
# DETAILS beside it (an output, not a metric), so that `dvc exp show` stays narrow: a column per head and metric.
SUMMARY, DETAILS = METRICS_SUMMARY, METRICS_DETAILS


@stage("evaluate")
def main() -> None:
    set_threads("stage_two")
    params = read_params()
    cache = open_cache(CACHE_PATH)  # embeddings stay in the file: heads read them in blocks
    parts = read_split(SPLIT_PATH, cache.clip_ids(), needs=("train", "test"))
    test = parts == "test"
    x, y, names = mean_pool(cache.embeddings), cache.labels, cache.class_names
    # cross-validation refits each trained head with the params of its own stage
    configs = {name: config(kind.config, params[kind.stage], kind.stage) for name, kind in HEADS.items()
               if kind.trained}
    # a small dataset gets as many folds as its smallest class allows, or none: said here and in the metrics
    folds, note = usable_folds(y, names, params["evaluate"]["folds"])
    split_cfg = config(SplitConfig, params["split"], "split")
    protocol = describe_protocol(split_cfg, clip_groups(cache, split_cfg).how)  # quoted with every accuracy
    # cross-validation keeps groups whole when the split does, and leaves out what official lists leave out
    groups = read_split(SPLIT_PATH, cache.clip_ids(), "group") if split_cfg.method != "random" else None
    used = parts != UNUSED
    if note:
        print(f"evaluate: note: {note}")
    warning = random_encoder_note(cache.attrs)
    # a test part too small to measure on, or near-duplicates across the parts: said before the table
    cautions = [c for c in (small_test_note(y, parts, names, split_cfg.test),
                            leakage_note(unit_rows(x), cache.row_keys(), parts, cache.clip_ids())) if c]
    for caution in cautions:
        print(f"evaluate: warning: {caution}")
    results, per_class, metrics = {}, {}, {key: {} for key in HEAD_METRICS}
    if params["evaluate"]["folds"]:
        metrics["cv_folds"] = {}  # the folds used (0: too small for cross-validation)
    with StageLive(OUT, dvcyaml=None, save_dvc_exp=False) as live:
        loaded = {}  # each head as read and checked here, read once
        for name, kind in HEADS.items():
            head = loaded[name] = load_head(kind.file)
            head.check_compatible(cache.attrs, names, source=kind.file)
            proba = head.predict_proba(cache.embeddings[test])
            pred = proba.argmax(1)
            r = evaluate_predictions(y[test], pred, names)
            r["temperature"] = float(head.temperature_)
            r["ece"] = expected_calibration_error(proba, y[test])
            r["ece_uncalibrated"] = expected_calibration_error(
                head.predict_proba(cache.embeddings[test], calibrated=False), y[test])
            if folds:  # every fold through the kind's own refit (HeadKind.refit)
                refit = kind.refit(configs.get(name), len(names), head)
                # a temporal linear head (attention, conv) needs the frames; every other head sees only their mean
                temporal = kind.trained and kind.estimator(configs[name]).pooling != "mean"
                acc = cross_validate((cache.embeddings if temporal else x)[used], y[used], names, folds,
                                     params["split"]["seed"], refit, None if groups is None else groups[used])
                r["cv"], r["cv_std"] = float(acc.mean()), float(acc.std())
            results[name], per_class[name] = r, r.pop("per_class")
            for key in HEAD_METRICS:
                if key in r:
                    metrics[key][name] = r[key]
            if "cv_folds" in metrics:
                metrics["cv_folds"][name] = folds
            if head.meta_.epoch is not None:  # the linear head's best epoch (train), beside its test numbers
                metrics.setdefault("best_epoch", {})[name] = int(head.meta_.epoch)
            live.log_plot(f"{name}_confusion", confusion_rows(r["confusion"], names), x="predicted", y="actual",
                          template="confusion_counts")
        if params["evaluate"]["shots"]:
            rows = data_efficiency(cache.embeddings, y, parts, efficiency_fits(configs, names, loaded),
                                   params["evaluate"]["shots"], params["split"]["seed"])
            live.log_plot("data_efficiency", by_head(rows, "videos_per_class", "accuracy"), x="videos_per_class",
                          y="accuracy", template="by_head")
    write_metrics({k: v for k, v in metrics.items() if v}, {"warning": warning, "protocol": protocol,
                                                           "test_videos": int(test.sum()), "cautions": cautions})
    # `dvc plots show` draws this first (dvc.yaml): the random encoder's warning and the cautions above the charts
    Path(NOTICE).write_text(json.dumps(notice_rows(warning, cautions, f"test part: {protocol}"), indent=2) + "\n")
    with open(f"{OUT}/per_class.json", "w") as f:
        json.dump(per_class, f, indent=2)
    print(format_table(results, warning))
    print(f"test part: {protocol}")
    if params["evaluate"]["shots"]:
        print("test accuracy by training videos per class: " + "; ".join(
            f"{r['videos_per_class']}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items() if k != "videos_per_class")
            for r in rows))


def write_metrics(values: dict[str, dict[str, float]], notes: dict, summary: str = SUMMARY,
                  details: str = DETAILS) -> None:
    """values {metric: {head: number}}: the SUMMARY_METRICS -> `summary` as {metric: {head: number}}, numbers only
    (DVC names its columns `accuracy.linear` and so on); `details` = the notes that are set (the random encoder's
    warning, how the test part was chosen), then every other metric, {metric: {head: number}}. Numbers are rounded
    to 4 decimals (the terminal tables stay narrow)."""
    rounded = {metric: {head: round(v, 4) if isinstance(v, float) else v for head, v in heads.items()}
               for metric, heads in values.items()}
    Path(summary).parent.mkdir(parents=True, exist_ok=True)
    Path(summary).write_text(json.dumps({k: v for k, v in rounded.items() if k in SUMMARY_METRICS}, indent=2) + "\n")
    Path(details).write_text(json.dumps({**{k: v for k, v in notes.items() if v},
                                         **{k: v for k, v in rounded.items() if k not in SUMMARY_METRICS}},
                                        indent=2) + "\n")


def efficiency_fits(configs: dict, names: list[str], loaded: dict) -> dict:
    """How each head is refitted on a subset for the data-efficiency curve, {curve: refit} (HeadKind.refit): the
    untrained heads (zero-shot: nothing to fit; loaded: every head as read, by name), each trained kind with
    from_text started from their class text embeddings (linear_from_zeroshot: mean pooling, docs/heads.md), then the
    trained heads."""
    untrained = {name: loaded[name] for name, kind in HEADS.items() if not kind.trained}
    fits = {name: HEADS[name].refit(None, len(names), head) for name, head in untrained.items()}
    for name, kind in HEADS.items():
        if kind.from_text:  # started from each untrained head's class text embeddings, over the mean frame
            for source, head in untrained.items():
                fits[f"{name}_from_{source}"] = kind.refit(replace(configs[name], head="mean"), len(names),
                                                           text_init=head.text_)
    return {**fits, **{name: kind.refit(configs[name], len(names)) for name, kind in HEADS.items() if kind.trained}}


if __name__ == "__main__":
    main()
