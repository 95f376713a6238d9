"""Answers to trust: the "not sure" cut-off relative to chance, a temperature fit that refuses to pretend, and
the data counts a head carries."""
import numpy as np
import pytest

from pipeline.heads.calibration import (LOG_T_BOUND, MIN_CALIBRATION_PER_CLASS, Calibration, CalibrationConfig,
                                  describe_data, fit_temperature, softmax, sure_threshold)
from pipeline.heads.estimators import ZeroShotHead
from pipeline.heads.logreg import LogRegHead
from pipeline.tools.predict import NOT_SURE, Segment

FEATURES = {"encoder_model": "tiny", "encoder_fingerprint": "f", "embedding_dim": 2, "num_frames": 4,
            "sampling": "uniform-centers", "preprocess": "fast", "preprocess_config": "{}", "backend": "torch",
            "quantize": "none", "decoder": "pyav-test"}


def answer(probabilities: list[float], fraction: float = CalibrationConfig.not_sure_below_chance_to_certain) -> str:
    names = [f"c{i}" for i in range(len(probabilities))]
    return Segment(0.0, 1.0, names, np.array(probabilities), sure_threshold(fraction, len(names))).answer


def test_the_cut_off_is_a_fraction_of_the_way_from_chance_to_certainty():
    assert sure_threshold(0.3, 2) == pytest.approx(0.65) and sure_threshold(0.3, 7) == pytest.approx(0.4)
    assert sure_threshold(0.0, 5) == pytest.approx(0.2) and sure_threshold(1.0, 5) == pytest.approx(1.0)


def test_a_two_class_coin_flip_is_not_sure_and_a_clear_two_class_answer_is():
    assert answer([0.505, 0.495]) == NOT_SURE
    assert answer([0.6, 0.4]) == NOT_SURE  # 20% of the way from chance: under the default 30%
    assert answer([0.9, 0.1]) == "c0"


def test_seven_classes_are_not_all_not_sure():
    """0.45 of 7 classes is about 36% of the way from chance (1/7) to certainty: sure with the default, where a
    fixed 0.5 cut-off said "not sure"; a flat answer near chance stays "not sure"."""
    assert answer([0.45] + [0.55 / 6] * 6) == "c0"
    assert answer([0.2] + [0.8 / 6] * 6) == NOT_SURE


def test_a_head_works_its_threshold_out_for_its_own_classes():
    for classes, expected in ((2, 0.65), (7, 0.4)):
        names = [str(i) for i in range(classes)]
        head = ZeroShotHead().fit(np.eye(classes, 2, dtype=np.float32), names, FEATURES)
        head.use_calibration(Calibration(not_sure_below_chance_to_certain=0.3))
        assert head.not_sure_below_ == pytest.approx(expected)
    untrained = ZeroShotHead().fit(np.eye(2, dtype=np.float32), ["a", "b"], FEATURES)  # typed actions in the app
    default = CalibrationConfig().not_sure_below_chance_to_certain
    assert untrained.calibration_ is None and untrained.not_sure_below_ == pytest.approx(sure_threshold(default, 2))


@pytest.mark.parametrize("per_class", [1, 2, 3])
@pytest.mark.parametrize("classes", [2, 7])
def test_the_temperature_is_not_fitted_on_a_few_validation_videos(per_class, classes):
    rng = np.random.default_rng(per_class)
    labels = np.repeat(np.arange(classes), per_class)
    logits = rng.normal(size=(len(labels), classes)) + 3 * np.eye(classes)[labels]  # mostly right, some wrong
    t, note = fit_temperature(logits, labels)
    videos = "video" if per_class == 1 else "videos"
    assert t == 1.0 and f"{per_class} validation {videos} in the smallest class" in note
    assert f"needs {MIN_CALIBRATION_PER_CLASS} per class" in note


def test_a_fit_on_its_bound_is_refused_and_a_fit_inside_is_kept():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    right = 5 * np.eye(3)[labels]  # every validation video right: the fit would run to T -> 0
    t, note = fit_temperature(right, labels)
    assert t == 1.0 and "every validation video is right" in note
    chance = rng.normal(size=(60, 3)) * 10  # scores unrelated to the labels: T -> infinity
    t, note = fit_temperature(chance, labels)
    assert t == 1.0 and "no better than chance" in note and f"{np.exp(LOG_T_BOUND):.3g}" in note
    noisy = rng.normal(size=(60, 3)) * 4 + 8 * np.eye(3)[labels]  # mostly right, overconfident
    t, note = fit_temperature(noisy, labels)
    assert note == "" and 1 < t < np.exp(LOG_T_BOUND) * 0.99


class _Fixed:
    """A stand-in model: the head reads logits from it (logistic regression path: predict_proba)."""

    def __init__(self, proba):
        self.proba = proba
        self.classes_ = np.arange(proba.shape[1])  # the classes it was fitted on: every one

    def predict_proba(self, x):
        return self.proba[: len(x)]


def test_calibrate_records_the_data_and_the_refusal():
    labels = np.array([0, 0, 1, 1])
    head = LogRegHead().fit(np.array([[0.0, 1], [1, 0], [0, 2], [2, 0]], np.float32), np.array([0, 1, 0, 1]),
                            ["a", "b"], FEATURES)
    head.model_ = _Fixed(softmax(np.array([[2.0, 0], [1, 0], [0, 1], [0, 2]])))
    assert head.calibrate(np.zeros((4, 2), np.float32), labels, 0.3, train_labels=np.array([0] * 7 + [1] * 5)) is head
    cal = head.calibration_
    assert cal.temperature == 1.0 == head.temperature_ and cal.temperature_note.startswith("temperature not fitted")
    assert (cal.train_videos, cal.train_min_per_class, cal.val_videos, cal.val_min_per_class) == (12, 5, 4, 2)
    assert cal.not_sure_below_chance_to_certain == 0.3
    assert describe_data(cal) == ("trained on 12 videos (at least 5 per class); calibrated on 4 validation videos "
                                  "(at least 2 per class): temperature not fitted (T = 1)")
    assert describe_data(None) == "uncalibrated (T = 1)"
    zero_shot = head.calibrate(np.zeros((4, 2), np.float32), labels, 0.3).calibration_  # trained on no video
    assert describe_data(zero_shot).startswith("not trained (text only); calibrated on 4 training and validation "
                                               "videos (at least 2 per class)")
