"""How far to trust a head's answer: the temperature fitted on validation videos, the "not sure" cut-off, the data
counts a head carries, and the expected calibration error."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The temperature is fitted only with at least this many validation videos in every class: with fewer, one wrong
# or right video moves it to its bound (1 to 3 per class gave T = e^5 on the demo). Fewer: T = 1, and a note says so.
MIN_CALIBRATION_PER_CLASS = 5
LOG_T_BOUND = 5.0  # the fit searches log T in [-LOG_T_BOUND, LOG_T_BOUND]; an optimum on the bound is refused


@dataclass
class CalibrationConfig:
    """The "not sure" cut-off (params.yaml: calibration.*): a fraction of the way from chance (1/C) to certainty
    (1), so that it means the same with 2 classes as with 100 (sure_threshold)."""

    not_sure_below_chance_to_certain: float = 0.3


@dataclass
class Calibration:
    """What calibrating a head learned (saved in its metadata): the temperature (1.0 with `temperature_note` saying
    why when the data could not tell it), the "not sure" fraction, and how much data the head learned from and was
    calibrated on (videos, and the fewest in a class; a zero-shot head trains on none)."""

    temperature: float = 1.0
    temperature_note: str = ""
    not_sure_below_chance_to_certain: float = CalibrationConfig.not_sure_below_chance_to_certain
    train_videos: int = 0
    train_min_per_class: int = 0
    val_videos: int = 0
    val_min_per_class: int = 0


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of scores (N, C), float32."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def sure_threshold(fraction: float, num_classes: int) -> float:
    """The top probability an answer needs, `fraction` of the way from chance (1/C) to certainty: with 0.3, 0.65
    for 2 classes, 0.4 for 7, 0.31 for 100 (a fixed probability would be a coin flip's for 2 classes and out of
    reach for many)."""
    chance = 1.0 / max(num_classes, 1)
    return chance + fraction * (1.0 - chance)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> tuple[float, str]:
    """The temperature T > 0 minimising the cross-entropy of softmax(logits / T) on held-out labels (N,), and ""; or
    (1.0, why) when the data cannot tell it: fewer than MIN_CALIBRATION_PER_CLASS videos in a class (of the
    logits' C), every video right (the optimum is T -> 0), or an optimum on the search bound."""
    counts = np.bincount(labels, minlength=logits.shape[1])
    if len(labels) == 0 or counts.min() < MIN_CALIBRATION_PER_CLASS:
        fewest = int(counts.min()) if len(counts) else 0
        return 1.0, (f"temperature not fitted: {fewest} validation video{'' if fewest == 1 else 's'} in the "
                     f"smallest class, it needs {MIN_CALIBRATION_PER_CLASS} per class; T = 1 (uncalibrated)")
    if np.all(logits.argmax(axis=1) == labels):  # the cross-entropy falls all the way to T -> 0
        return 1.0, ("temperature not fitted: every validation video is right, so they cannot tell how sure the "
                     "head should be; T = 1 (uncalibrated)")
    from scipy.optimize import minimize_scalar  # (here: a second's import, not needed when the fit is refused)

    z = logits.astype(np.float64)

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        s = s - s.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(s).sum(axis=1)) - s[np.arange(len(labels)), labels]))

    log_t = float(minimize_scalar(nll, bounds=(-LOG_T_BOUND, LOG_T_BOUND), method="bounded").x)
    if abs(log_t) > LOG_T_BOUND - 0.01:
        why = "nearly every validation video right" if log_t < 0 else "the head no better than chance on them"
        return 1.0, (f"temperature not fitted: the fit ran to its bound T = {np.exp(log_t):.3g} ({why}); "
                     "T = 1 (uncalibrated)")
    return float(np.exp(log_t)), ""


def fit_calibration(val_logits: np.ndarray, val_labels: np.ndarray, not_sure_below: float,
                    train_labels: np.ndarray | None = None) -> Calibration:
    """A head's Calibration from its scores on the validation part (V, C) and their int labels (V,): the
    temperature (fit_temperature), the "not sure" fraction, and the data counts (train_labels None: no training)."""
    temperature, note = fit_temperature(val_logits, val_labels)
    num_classes = val_logits.shape[1]
    train = np.zeros(0, np.int64) if train_labels is None else train_labels

    def fewest(y: np.ndarray) -> int:
        return int(np.bincount(y, minlength=num_classes).min()) if num_classes else 0
    return Calibration(temperature, note, float(not_sure_below), int(len(train)), fewest(train),
                       int(len(val_labels)), fewest(val_labels))


def describe_data(calibration: Calibration | None) -> str:
    """One line on how much data a head was trained and calibrated on (for the app and pipeline.tools.predict)."""
    if calibration is None:
        return "uncalibrated (T = 1)"
    c = calibration
    trained = (f"trained on {c.train_videos} videos (at least {c.train_min_per_class} per class)"
               if c.train_videos else "not trained (text only)")
    # a head trained on none (zero-shot) is calibrated on the training and validation parts: it has seen neither
    held = "validation videos" if c.train_videos else "training and validation videos"
    fitted = f"temperature {c.temperature:.3g}" if not c.temperature_note else "temperature not fitted (T = 1)"
    return (f"{trained}; calibrated on {c.val_videos} {held} (at least "
            f"{c.val_min_per_class} per class): {fitted}")


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE of probabilities (N, C) against int labels (N,): over equal-width bins of the top probability, the
    gap between mean confidence and accuracy, weighted by the share of predictions in the bin."""
    if len(labels) == 0:
        return 0.0
    confidence, predicted = proba.max(axis=1), proba.argmax(axis=1)
    correct = predicted == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(sum(abs(confidence[which == b].mean() - correct[which == b].mean()) * np.mean(which == b)
                     for b in range(bins) if np.any(which == b)))
