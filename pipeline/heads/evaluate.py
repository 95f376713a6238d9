"""Honest numbers for a head: accuracy with a Wilson interval, macro F1, per-class metrics, confusion, k-fold CV."""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from pipeline.errors import ConfigError, DataError, printable
from pipeline.heads.neardup import similar_pairs


# What the evaluate stage writes per head: the headline numbers are the only ones DVC tabulates (`dvc exp show`, `dvc
# metrics show`: a column each per head, `accuracy.zeroshot` and so on; two metrics keep `dvc metrics show` within
# 120 characters, a third made it 177); the rest are written beside them. cv: the mean k-fold CV accuracy.
SUMMARY_METRICS = ("accuracy", "cv")
DETAIL_METRICS = ("macro_f1", "ci95_low", "ci95_high", "cv_std", "ece", "ece_uncalibrated", "temperature")
HEAD_METRICS = SUMMARY_METRICS + DETAIL_METRICS


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion correct/total (sensible at 0%, 100% and small totals)."""
    if total == 0:
        return 0.0, 1.0
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate_predictions(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    """Metrics of int predictions (N,) against int labels (N,).

    Returns accuracy, ci95_low, ci95_high, macro_f1, n, per_class {name: {precision, recall, f1, support}} and
    confusion (C, C) as nested lists (rows: true class, columns: predicted).
    """
    labels = np.arange(len(class_names))
    correct = int(np.sum(y_true == y_pred))
    low, high = wilson_interval(correct, len(y_true))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                                     zero_division=0)
    return {
        "accuracy": correct / len(y_true) if len(y_true) else 0.0,
        "ci95_low": low,
        "ci95_high": high,
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "n": int(len(y_true)),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(class_names)},
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def usable_folds(labels: np.ndarray, class_names: list[str], folds: int) -> tuple[int, str]:
    """The folds stratified cross-validation can use on int labels (V,), and a note when not `folds`.

    Every class needs a video in each fold: with a class smaller than `folds`, as many folds as the smallest class
    allows (at least 2); with a class of one video, 0 (cross-validation left out). folds=0 means off (no note).
    ConfigError for folds=1 or below 0.
    """
    if folds == 0:
        return 0, ""
    if folds < 2:
        raise ConfigError(f"evaluate.folds must be 0 (off) or at least 2, got {folds}")
    counts = np.bincount(labels, minlength=len(class_names))
    small = [f"{class_names[c]} ({counts[c]})" for c in range(len(class_names)) if 0 < counts[c] < folds]
    if not small:
        return folds, ""
    smallest = int(counts[counts > 0].min())
    if smallest >= 2:
        return smallest, (f"{smallest}-fold cross-validation instead of {folds}: classes with fewer than {folds} "
                          f"videos: {', '.join(small)} (add videos, or set evaluate.folds to {smallest})")
    ones = [s for s in small if s.endswith("(1)")]
    return 0, (f"cross-validation left out: it needs at least 2 videos per class, and {', '.join(ones)} "
               f"{'has' if len(ones) == 1 else 'have'} 1 (add videos, or set evaluate.folds: 0)")


Task = tuple[np.ndarray, np.ndarray, np.ndarray]  # (x_train, y_train, x_test) of one refit


def each(fit_predict: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> Callable[[list[Task]], list]:
    """A refit of one task, fit_predict(x_train, y_train, x_test) -> int predictions, made a refit of many."""
    return lambda tasks: [fit_predict(*task) for task in tasks]


def cross_validate(features: np.ndarray, labels: np.ndarray, class_names: list[str], folds: int, seed: int,
                   fit_predict_many: Callable[[list[Task]], list[np.ndarray]],
                   groups: np.ndarray | None = None) -> np.ndarray:
    """Stratified k-fold accuracy of a head: float64 (folds,).

    fit_predict_many([(x_train (N, D), y_train (N,), x_test (M, D)), ...]) -> int predictions (M,) per fold, all
    folds in one call (HeadKind.refit: a mean-pooling linear head trains them together; `each` adapts a one-task refit).
    groups (V,): keep each group in one fold (StratifiedGroupKFold), as the split keeps it in one part. DataError
    naming the classes with fewer videos than folds.
    """
    counts = np.bincount(labels, minlength=len(class_names))
    small = [f"{class_names[c]} ({counts[c]})" for c in range(len(class_names)) if 0 < counts[c] < folds]
    if folds < 2 or small:
        raise DataError(f"{folds}-fold cross-validation needs folds >= 2 and at least {folds} videos per class; "
                         f"too small: {', '.join(small) or 'none'}")
    splitter = (StratifiedKFold if groups is None else StratifiedGroupKFold)(folds, shuffle=True, random_state=seed)
    splits = list(splitter.split(np.zeros(len(labels)), labels, groups))
    preds = fit_predict_many([(features[tr], labels[tr], features[te]) for tr, te in splits])
    return np.array([float(np.mean(pred == labels[te])) for pred, (_, te) in zip(preds, splits)])


def format_table(results: dict[str, dict], warning: str = "") -> str:
    """A short terminal table: one line per head with test accuracy, its 95% interval, macro F1 and CV accuracy;
    `warning` (the random encoder's note) first and last, when given."""
    lines = [f"{'head':<8} {'test acc':>8}  {'95% CI':<14} {'macro F1':>8}  {'CV acc':<14} {'ECE raw -> calibrated'}"]
    for name, r in results.items():
        cv = f"{r['cv']:.3f} ± {r['cv_std']:.3f}" if "cv" in r else "-"
        ece = f"{r['ece_uncalibrated']:.3f} -> {r['ece']:.3f}" if "ece" in r else "-"
        lines.append(f"{name:<8} {r['accuracy']:>8.3f}  [{r['ci95_low']:.3f}, {r['ci95_high']:.3f}] "
                     f"{r['macro_f1']:>8.3f}  {cv:<14} {ece}")
    n = next(iter(results.values()))["n"] if results else 0
    lines.append(f"({n} test video{'' if n == 1 else 's'})")
    if warning:
        lines = [f"*** {warning} ***", *lines, f"*** {warning} ***"]
    return "\n".join(lines)


def data_efficiency(frames: np.ndarray, labels: np.ndarray, parts: np.ndarray, fits: dict[str, Callable],
                    shots: list[int], seed: int = 0) -> list[dict]:
    """Test accuracy against the number of training videos per class: one row per shot count.

    frames float32 (V, F, D), labels (V,), parts str (V,) ("train" videos are subsampled, "test" ones scored).
    fits: {name: fit_predict_many([(frames_train, labels_train, frames_test), ...]) -> int (M,) per task}, each
    called once with every subset. shots: videos per class, kept where every class has more than that; a last row
    uses all training videos. Rows: {"videos_per_class": n, name: accuracy, ...} (n = the largest class's count
    for the last row). The subsets are nested and seeded: 2 per class holds the 1 per class.
    """
    rng = np.random.default_rng(seed)
    train, test = np.flatnonzero(parts == "train"), np.flatnonzero(parts == "test")
    order = {c: rng.permutation(train[labels[train] == c]) for c in np.unique(labels[train])}
    smallest = min(len(m) for m in order.values())
    sizes = [s for s in shots if 0 < s < smallest] + [0]
    picks = [np.concatenate([members if n == 0 else members[:n] for members in order.values()]) for n in sizes]
    rows = [{"videos_per_class": int(max(len(m) for m in order.values())) if n == 0 else int(n)} for n in sizes]
    test_frames = frames[test]
    for name, fit_predict_many in fits.items():
        preds = fit_predict_many([(frames[pick], labels[pick], test_frames) for pick in picks])
        for row, pred in zip(rows, preds):
            row[name] = float(np.mean(pred == labels[test]))
    return rows


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows float (V, D) scaled to unit length, float32 (V, D) (a zero row stays zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1)).astype(np.float32)


MIN_TEST_VIDEOS = 5  # test videos of a class below which its accuracy moves by 1/5 or more per video
LEAK_COSINE = 0.9999  # mean-embedding cosine of a clip cut from another (and of copies): the inspector's leakage


def small_test_note(labels: np.ndarray, parts: np.ndarray, class_names: list[str], test_fraction: float) -> str:
    """A note when some class has fewer than MIN_TEST_VIDEOS test videos (labels int (V,), parts str (V,)), with
    what makes it larger; "" otherwise."""
    counts = np.bincount(labels[parts == "test"], minlength=len(class_names))
    small = [f"{class_names[c]} {counts[c]}" for c in range(len(class_names)) if counts[c] < MIN_TEST_VIDEOS]
    if not small:
        return ""
    need = math.ceil(MIN_TEST_VIDEOS / test_fraction) if test_fraction > 0 else 0
    add = f"add videos ({need} of a class give it {MIN_TEST_VIDEOS} test videos at split.test {test_fraction:g})" \
        if need else "add videos"
    return (f"the test part has fewer than {MIN_TEST_VIDEOS} videos of {len(small)} of {len(class_names)} classes "
            f"({', '.join(small[:5])}{' ...' if len(small) > 5 else ''}): one video moves such a class's test "
            f"accuracy by {1 / max(1, min(counts)):.0%}; {add}, and meanwhile read the cross-validated accuracy "
            "(the `cv` column), which tests on every video")


def leakage_note(means: np.ndarray, keys: np.ndarray, parts: np.ndarray, ids: np.ndarray) -> str:
    """A note when near-duplicates (mean-embedding cosine >= LEAK_COSINE: a clip cut from another, a copy) sit in
    different parts; "" otherwise. means: unit mean embeddings float32 (V, D); keys: Cache.row_keys (V,); parts
    str (V,) (unused clips left out); ids: the clip ids (V,), as split.csv names them."""
    used = np.flatnonzero(parts != "unused")
    found = similar_pairs(means[used], LEAK_COSINE, 3, keys=keys[used], parts=parts[used])
    if not found.across:
        return ""
    a, b, sim = found.pairs[0]
    a, b = used[a], used[b]
    return (f"{found.across} pair{'s' if found.across > 1 else ''} of near-duplicate clips (cosine >= {LEAK_COSINE}: "
            f"one cut from the other, or a copy) sit in different parts, so the test numbers are optimistic, e.g. "
            f"{printable(str(ids[a]))} ({parts[a]}) and {printable(str(ids[b]))} ({parts[b]}), cosine {sim:.5f}: "
            "give each such pair one group (a `group` column in data.annotations: docs/datasets.md, 'Groups') and "
            "run with split.method group, or remove the copies; `clip-har-inspect --outliers` lists them all")
