"""Metrics with known answers, cross-validation, and the terminal table."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.errors import ConfigError, DataError
from pipeline.heads.evaluate import (cross_validate, each, evaluate_predictions, format_table, usable_folds,
                               wilson_interval)
from tests.conftest import committed_params

ROOT = Path(__file__).resolve().parents[1]


def test_wilson_interval_known_values():
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert low == pytest.approx(0.7225, abs=1e-4) and high == pytest.approx(1.0)
    low, high = wilson_interval(50, 100)
    assert (low, high) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_evaluate_predictions_on_a_hand_checked_example():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 0])
    r = evaluate_predictions(y_true, y_pred, ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(4 / 6) and r["n"] == 6
    assert r["ci95_low"] < 4 / 6 < r["ci95_high"]
    assert r["confusion"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert r["per_class"]["a"] == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
                                   "f1": pytest.approx(2 / 3), "support": 3}
    assert r["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0) / 3)


def test_cross_validate_returns_one_accuracy_per_fold():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 10)
    x = np.c_[labels * 10.0, rng.normal(size=20)].astype(np.float32)
    seen = []

    def threshold(x_train, y_train, x_test):
        seen.append(len(x_train))
        return (x_test[:, 0] > 5).astype(int)

    acc = cross_validate(x, labels, ["a", "b"], folds=5, seed=0, fit_predict_many=each(threshold))
    assert acc.tolist() == [1.0] * 5 and seen == [16] * 5
    wrong = cross_validate(x, labels, ["a", "b"], 4, 0, each(lambda xt, yt, xs: np.zeros(len(xs), int)))
    assert wrong.mean() == pytest.approx(0.5)


def test_small_classes_get_fewer_folds_or_none_with_a_note():
    names = ["a", "animation", "c"]
    assert usable_folds(np.array([0] * 10 + [1] * 10 + [2] * 7), names, 5) == (5, "")
    folds, note = usable_folds(np.array([0] * 10 + [1] * 3 + [2] * 4), names, 5)
    assert folds == 3 and note.startswith("3-fold cross-validation instead of 5") and "animation (3), c (4)" in note
    folds, note = usable_folds(np.array([0] * 10 + [1] * 1 + [2] * 4), names, 5)
    assert folds == 0 and note.startswith("cross-validation left out") and "animation (1) has 1" in note
    assert "a (1), animation (1) have 1" in usable_folds(np.array([0, 1, 2, 2]), names, 5)[1]
    assert usable_folds(np.array([0, 1]), ["a", "b"], 0) == (0, "")  # off
    with pytest.raises(ConfigError, match="evaluate.folds must be 0 .off. or at least 2, got 1"):
        usable_folds(np.array([0, 1]), ["a", "b"], 1)


def test_the_evaluate_stage_on_classes_smaller_than_the_folds(project, tmp_path, monkeypatch, capsys, keep_threads):
    """Three videos per class and evaluate.folds 5: 3-fold cross-validation, said in the output and metrics. The
    linear head's refits are the attention head's (train.head: attention): a temporal head reads the frames."""
    import stages.evaluate
    from pipeline.extract.cache import RANDOM_ENCODER_NOTE
    from pipeline.extract.cache import read_cache
    from pipeline.paths import HEAD_FILES, SPLIT_PATH
    from pipeline.heads.split import split_videos
    from pipeline.heads.split_file import write_split
    from pipeline.heads.zeroshot import zeroshot_head

    for part in ("cache", "models"):
        shutil.copytree(project / part, tmp_path / part)
    params = committed_params(train={"epochs": 5, "head": "attention"})
    assert params["evaluate"]["folds"] == 5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    cache = read_cache("cache/features.h5")
    write_split(SPLIT_PATH, cache.paths, cache.labels, cache.class_names,
                split_videos(cache.labels, cache.class_names, 0.15, 0.15, 0))
    text = np.random.default_rng(0).normal(size=(3, cache.embeddings.shape[2])).astype(np.float32)
    head = zeroshot_head(text / np.linalg.norm(text, axis=1, keepdims=True), cache.class_names, cache.attrs)
    head.save(HEAD_FILES["zeroshot"])
    stages.evaluate.main()
    out = capsys.readouterr().out
    assert "evaluate: note: 3-fold cross-validation instead of 5: classes with fewer than 5 videos: clapping (3)" in out
    summary = json.loads((tmp_path / "metrics" / "summary.json").read_text())
    details = json.loads((tmp_path / "metrics" / "details.json").read_text())
    assert list(summary) == ["accuracy", "cv"] and set(summary["cv"]) == set(HEAD_FILES)
    assert set(details["macro_f1"]) == set(HEAD_FILES)
    assert details["cv_folds"] == {"linear": 3, "logreg": 3, "zeroshot": 3}
    assert details["warning"] == RANDOM_ENCODER_NOTE  # the tiny CLIP is random
    assert details["protocol"] == "random split: test 0.15, val 0.15, seed 0" and details["test_videos"] == 3
    # 3 videos a class: 1 test video each, said before the table, in details.json and on the plots page
    said = [line for line in out.splitlines() if line.startswith("evaluate: warning: the test part has fewer")]
    assert len(said) == 1 and details["cautions"] == [said[0].removeprefix("evaluate: warning: ")], out
    notice = json.loads((tmp_path / "dvclive" / "evaluate" / "plots" / "notice.json").read_text())
    assert notice[0]["text"] == notice[-1]["text"] == f"*** {RANDOM_ENCODER_NOTE} ***" and all(
        len(row["text"]) <= 120 for row in notice), notice
    assert " ".join(row["text"] for row in notice if row["kind"] == "warning")[len(notice[0]["text"]) + 1:].startswith(
        details["cautions"][0][:100]), notice
    assert f"*** {RANDOM_ENCODER_NOTE} ***\nhead " in out  # the table says so too
    assert (tmp_path / "dvclive" / "evaluate" / "per_class.json").is_file()  # the rest of the evaluation is written
    plots = tmp_path / "dvclive" / "evaluate" / "plots" / "custom"
    for name in HEAD_FILES:  # every (actual, predicted) pair, as pipeline.heads.plots.confusion_rows writes them
        cells = json.loads((plots / f"{name}_confusion.json").read_text())
        assert len(cells) == 9 and sum(c["count"] for c in cells) == 3, cells


def test_a_stage_stopped_by_the_users_data_or_settings_says_so_in_one_line(project, tmp_path, monkeypatch,
                                                                          keep_threads):
    import stages.split
    import stages.train

    shutil.copytree(project / "cache", tmp_path / "cache")
    params = committed_params()
    params["train"]["epoch"] = 10  # a typo
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        stages.train.main()
    assert str(stopped.value) == ("train: error: params.yaml: unknown key train.epoch (known: batch_size, epochs, "
                                  "head, lr, seed, weight_decay)")
    params["split"].update(val=0.5, test=0.6)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit, match=r"^split: error: split fractions must be in \[0, 1\) and sum below 1"):
        stages.split.main()
    (tmp_path / "params.yaml").unlink()
    run = subprocess.run([sys.executable, "-m", "stages.split"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 1 and run.stderr == ("split: error: cannot read params.yaml: run the stages from the "
                                                  "project folder (dvc repro does)\n")


def test_cross_validate_names_classes_smaller_than_the_folds():
    with pytest.raises(DataError, match=r"too small: b \(3\)"):
        cross_validate(np.zeros((13, 2)), np.array([0] * 10 + [1] * 3), ["a", "b"], 5, 0, None)


def test_format_table_lists_every_head():
    r = {"accuracy": 0.9, "ci95_low": 0.8, "ci95_high": 0.95, "macro_f1": 0.88, "n": 21}
    table = format_table({"linear": {**r, "cv": 0.85, "cv_std": 0.03}, "logreg": r})
    lines = table.splitlines()
    assert lines[1].startswith("linear") and "0.900" in lines[1] and "0.850 ± 0.030" in lines[1]
    assert lines[2].startswith("logreg") and lines[2].rstrip().endswith("-")
    assert lines[-1] == "(21 test videos)"


def test_expected_calibration_error_on_hand_checked_cases():
    from pipeline.heads.calibration import expected_calibration_error
    proba = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    # bin of 0.9: confidence 0.9, accuracy 0.5 (gap 0.4); bin of 0.6: confidence 0.6, accuracy 1.0 (gap 0.4)
    assert expected_calibration_error(proba, labels) == pytest.approx(0.4)
    assert expected_calibration_error(np.array([[1.0, 0.0]]), np.array([0])) == pytest.approx(0.0)


def test_temperature_scaling_lowers_ece_of_an_overconfident_model():
    from pipeline.heads.calibration import expected_calibration_error, fit_temperature, softmax
    rng = np.random.default_rng(0)
    n, c = 4000, 5
    true_logits = rng.normal(0, 1.0, (n, c))
    labels = np.array([rng.choice(c, p=p) for p in softmax(true_logits)])  # calibrated by construction
    overconfident = 4.0 * true_logits  # the same ranking, four times too sharp
    val, test = slice(0, 2000), slice(2000, None)
    t, note = fit_temperature(overconfident[val], labels[val])
    assert t == pytest.approx(4.0, rel=0.15) and note == ""
    before = expected_calibration_error(softmax(overconfident[test]), labels[test])
    after = expected_calibration_error(softmax(overconfident[test] / t), labels[test])
    assert before > 0.15 and after < 0.05 and after < before / 3


def test_data_efficiency_uses_nested_seeded_subsets_of_the_training_part():
    from pipeline.heads.evaluate import data_efficiency
    labels = np.repeat([0, 1, 2], 10)
    parts = np.array((["train"] * 8 + ["test"] * 2) * 3, dtype=object)
    frames = np.repeat(labels[:, None, None], 4, axis=1).astype(np.float32)  # (30, 4, 1): the label itself
    seen = []

    def by_majority(ft, lt, fs):
        seen.append(sorted(lt.tolist()))
        return np.full(len(fs), np.bincount(lt).argmax())

    def oracle(ft, lt, fs):
        return fs[:, 0, 0].astype(int)

    rows = data_efficiency(frames, labels, parts, {"majority": each(by_majority), "oracle": each(oracle)},
                           [1, 2, 8, 16], seed=0)
    assert [r["videos_per_class"] for r in rows] == [1, 2, 8]
    assert seen == [[0, 1, 2], [0, 0, 1, 1, 2, 2], [0] * 8 + [1] * 8 + [2] * 8]
    assert all(r["oracle"] == 1.0 and r["majority"] == pytest.approx(1 / 3) for r in rows)


def test_cross_validation_keeps_groups_whole():
    labels = np.repeat([0, 1], 12)
    groups = np.array([f"g{i // 3}" for i in range(24)])  # 8 groups of 3 clips
    seen = []

    @each
    def fit_predict(x_train, y_train, x_test):  # the features are the rows' numbers
        train, test = set(groups[x_train[:, 0].astype(int)]), set(groups[x_test[:, 0].astype(int)])
        seen.append(len(test))
        assert not train & test
        return np.zeros(len(x_test), np.int64)

    acc = cross_validate(np.arange(24, dtype=float)[:, None], labels, ["a", "b"], 4, 0, fit_predict, groups)
    assert acc.shape == (4,) and sum(seen) == 8


def test_dvc_tabulates_only_the_headline_numbers_and_the_notes_are_beside_them(tmp_path):
    """summary.json (the only `metrics:` file) holds numbers alone, {metric: {head: value}}: `dvc exp show` names
    its columns accuracy.linear and so on; the strings and the other numbers are in details.json."""
    from stages.evaluate import write_metrics
    write_metrics({"accuracy": {"linear": 0.123456, "logreg": 0.5}, "ece": {"linear": 0.25}, "cv_folds": {"linear": 5}},
                  {"warning": "careful", "protocol": "random split", "test_videos": 7, "unset": ""},
                  tmp_path / "m" / "summary.json", tmp_path / "m" / "details.json")
    assert json.loads((tmp_path / "m" / "summary.json").read_text()) == {"accuracy": {"linear": 0.1235, "logreg": 0.5}}
    assert json.loads((tmp_path / "m" / "details.json").read_text()) == {
        "warning": "careful", "protocol": "random split", "test_videos": 7, "ece": {"linear": 0.25},
        "cv_folds": {"linear": 5}}
    r = {"accuracy": 0.5, "ci95_low": 0.2, "ci95_high": 0.8, "macro_f1": 0.4, "n": 1}
    assert "careful" not in format_table({"linear": r})
    lines = format_table({"linear": r}, "careful").splitlines()
    assert lines[0] == lines[-1] == "*** careful ***" and lines[-2] == "(1 test video)"


def test_the_charts_data_has_every_class_on_both_axes_and_a_row_per_head():
    from pipeline.heads.plots import by_head, confusion_rows
    names = ["clapping", "sitting", "walking"]
    r = evaluate_predictions(np.array([0, 1, 2, 2]), np.array([0, 0, 0, 2]), names)  # sitting is never predicted
    rows = confusion_rows(r["confusion"], names)
    assert len(rows) == 9 and {c["predicted"] for c in rows} == {c["actual"] for c in rows} == set(names)
    assert {(c["actual"], c["predicted"]): c["count"] for c in rows if c["count"]} == {
        ("clapping", "clapping"): 1, ("sitting", "clapping"): 1, ("walking", "clapping"): 1, ("walking", "walking"): 1}
    assert by_head([{"n": 1, "linear": 0.5, "logreg": 0.25}], "n", "accuracy") == [
        {"n": 1, "head": "linear", "accuracy": 0.5}, {"n": 1, "head": "logreg", "accuracy": 0.25}]
