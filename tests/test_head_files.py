"""Head files as untrusted input: nothing in one can run code, each is checked in full when opened (one line naming
the file for each fault, before anything is allocated for it), logistic regression kept as plain arrays with the same
probabilities, an old .joblib refused with the command that retrains it, and no non-finite number saved or answered."""
import dataclasses
import math
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError, DataError, HeadError
from pipeline.heads.estimators import LinearHead, ZeroShotHead, mean_pool
from pipeline.heads.logreg import LogRegConfig, LogRegHead
from pipeline.heads.kinds import HEADS, load_head
from pipeline.settings import MAX_FRAMES
from pipeline.heads.training import LinearConfig
from pipeline.paths import HEAD_FILES

NAMES = ["clapping", "sitting", "walking"]
ATTRS = {"encoder_model": "tiny", "encoder_fingerprint": "abc", "embedding_dim": 8, "num_frames": 4,
         "sampling": "uniform-centers", "preprocess": "fast", "preprocess_config": "{}", "backend": "torch",
         "quantize": "none", "decoder": "pyav-test", "batch_size": 16}
PWNED = Path("/tmp/clip-har-head-files-pwned")


def frames(n_per_class=12, classes=3, seed=0):
    """Frame embeddings float32 (V, 4, 8) around one mean per class, and int labels (V,)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    emb = rng.normal(0, 2, (classes, 8))[labels][:, None, :] + rng.normal(0, 1, (len(labels), 4, 8))
    return emb.astype(np.float32), labels


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


def one_line_error(path: Path, match: str) -> str:
    """load_head(path)'s HeadError: one line naming the file and matching `match`."""
    with pytest.raises(HeadError, match=match) as caught:
        load_head(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    return message


@pytest.mark.parametrize("classes, skip", [(3, None), (2, None), (4, 2)])
def test_logistic_regression_is_plain_arrays_with_the_same_probabilities(tmp_path, classes, skip):
    emb, y = frames(classes=classes)
    keep = y != skip  # a class without training videos: the model knows fewer classes than the head's names
    names = [f"c{i}" for i in range(classes)]
    fitted = LogRegHead().fit(mean_pool(emb[keep]), y[keep], names, ATTRS)
    fitted.calibrate(emb, y, 0.3, y[keep])
    fitted.save(tmp_path / "b.pt")
    raw = torch.load(tmp_path / "b.pt", weights_only=True)  # plain tensors and types: nothing to unpickle
    assert set(raw["state_dict"]) == {"coef", "intercept", "classes", "scaler_mean", "scaler_scale"}
    assert all(isinstance(v, torch.Tensor) for v in raw["state_dict"].values())
    head = load_head(tmp_path / "b.pt")
    assert isinstance(head, LogRegHead) and head.meta_ == fitted.meta_
    x = mean_pool(frames(seed=1, classes=classes)[0])
    np.testing.assert_allclose(head.model_.predict_proba(x), fitted.model_.predict_proba(x), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(head.predict_proba(x), fitted.predict_proba(x))
    np.testing.assert_array_equal(head.predict(x), fitted.predict(x))


def test_the_logistic_regression_head_file_is_a_pt(tmp_path):
    assert HEAD_FILES["logreg"].endswith(".pt") and all(p.endswith(".pt") for p in HEAD_FILES.values())
    dvc = (Path(__file__).parent.parent / "dvc.yaml").read_text()
    assert "${HEAD_FILES.logreg}" in dvc and "joblib" not in dvc


def test_an_old_joblib_head_is_refused_without_being_opened(tmp_path):
    PWNED.unlink(missing_ok=True)
    with open(tmp_path / "logreg.joblib", "wb") as f:
        pickle.dump({"model": _Payload(), "meta": {}}, f)
    message = one_line_error(tmp_path / "logreg.joblib", "joblib")
    assert "dvc repro baseline" in message and "python -m stages.baseline" in message
    assert not PWNED.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_payload_is_one_line_that_never_suggests_unsafe_loading(tmp_path):
    PWNED.unlink(missing_ok=True)
    torch.save({"state_dict": {"w": _Payload()}, "meta": {}}, tmp_path / "evil.pt")
    with open(tmp_path / "plain.pt", "wb") as f:
        pickle.dump({"state_dict": _Payload(), "meta": {}}, f)
    for name in ("evil.pt", "plain.pt"):
        message = one_line_error(tmp_path / name, "not a head this project wrote")
        assert "weights_only" not in message and "succeed" not in message
    assert not PWNED.exists()


def saved_head(tmp_path, kind="linear", pooling="mean") -> dict:
    """A head of `kind` trained on frames(), saved and read back as its plain dict {"state_dict", "meta"}."""
    emb, y = frames()
    if kind == "linear":
        head = LinearHead(LinearConfig(epochs=2, head=pooling)).fit(emb, y, NAMES, ATTRS)
    elif kind == "logreg":
        head = LogRegHead().fit(emb, y, NAMES, ATTRS)
    else:
        head = ZeroShotHead(("a {}",)).fit(np.eye(3, 8, dtype=np.float32), NAMES, ATTRS)
    head.calibrate(emb, y, 0.3, y).save(tmp_path / "good.pt")
    return torch.load(tmp_path / "good.pt", weights_only=True)


def _set(path: str, value):
    """A change to a saved head: the value at a "/"-separated path set (or removed, for value DELETE)."""
    def change(saved: dict) -> None:
        *parents, last = path.split("/")
        node = saved
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value(node[last]) if callable(value) else value
    return change


DELETE = object()
CASES = {  # name: (kind, pooling, change, what the message says)
    "no backend": ("linear", "mean", _set("meta/features/backend", DELETE), "no 'backend'"),
    "backend not a string": ("linear", "mean", _set("meta/features/backend", 3), "'backend' must be a string"),
    "a feature that is a list": ("linear", "mean", _set("meta/features/decoder", ["x"]), "plain value"),
    "class names a string": ("linear", "mean", _set("meta/class_names", "abc"), "list of strings"),
    "class names numbers": ("linear", "mean", _set("meta/class_names", [1, 2, 3]), "list of strings"),
    "class names repeated": ("linear", "mean", _set("meta/class_names", ["a", "a", "b"]), "with repeats"),
    "fewer classes than weights": ("linear", "mean", _set("meta/class_names", ["a", "b"]), "fc.weight has shape"),
    "no class names": ("linear", "mean", _set("meta/class_names", DELETE), "no 'class_names'"),
    "unknown kind": ("linear", "mean", _set("meta/kind", "svm"), "unknown kind"),
    "a kind that is a list": ("linear", "mean", _set("meta/kind", ["linear"]), "unknown kind"),
    "a pooling of another kind": ("logreg", "mean", _set("meta/pooling", "attention"), "unknown pooling"),
    "unknown pooling": ("linear", "mean", _set("meta/pooling", "max"), "unknown pooling"),
    "embedding dim 0": ("linear", "mean", _set("meta/features/embedding_dim", 0), "embedding_dim"),
    "another embedding dim": ("linear", "mean", _set("meta/features/embedding_dim", 16), "shape"),
    "5e7 frames": ("linear", "attention", _set("meta/features/num_frames", 50_000_000), "num_frames"),
    "frames within bounds, weights not": ("linear", "attention", _set("meta/features/num_frames", MAX_FRAMES),
                                          "position has shape"),
    "batch size 1e9": ("linear", "mean", _set("meta/features/batch_size", 1_000_000_000), "batch_size"),
    "batch size as a float": ("linear", "mean", _set("meta/features/batch_size", 16.0), "batch_size"),
    "a NaN weight": ("linear", "mean", _set("state_dict/fc.weight", lambda w: w.index_fill(1, torch.tensor([0]),
                                                                                           math.nan)), "not finite"),
    "an infinite std": ("linear", "mean", _set("state_dict/std", lambda w: w.fill_(math.inf)), "not finite"),
    "integer weights": ("linear", "mean", _set("state_dict/fc.bias", lambda w: w.long()), "not floating point"),
    "an unknown tensor": ("linear", "mean", _set("state_dict/extra", torch.zeros(1)), "unknown 'extra'"),
    "a missing tensor": ("linear", "conv", _set("state_dict/conv.weight", DELETE), "lack 'conv.weight'"),
    "a weight named by a number": ("linear", "mean", lambda saved: saved["state_dict"].update({3: torch.zeros(1)}),
                                   "record of tensors"),
    "weights not tensors": ("linear", "mean", _set("state_dict/fc.bias", [0.0, 1.0, 2.0]), "record of tensors"),
    "a NaN temperature": ("linear", "mean", _set("meta/calibration/temperature", math.nan), "temperature"),
    "a not-sure fraction of 5": ("linear", "mean", _set("meta/calibration/not_sure_below_chance_to_certain", 5.0),
                                 "not sure"),
    "an infinite feature": ("linear", "mean", _set("meta/features/quantize_scale", math.inf), "finite"),
    "a huge class name": ("linear", "mean", _set("meta/class_names", ["a" * 70_000, "b", "c"]), "list of strings"),
    "logreg coef infinite": ("logreg", "mean", _set("state_dict/coef", lambda w: w.fill_(-math.inf)), "not finite"),
    "logreg class out of range": ("logreg", "mean", _set("state_dict/classes", torch.tensor([0, 1, 9])),
                                  "increasing indices"),
    "logreg scale 0": ("logreg", "mean", _set("state_dict/scaler_scale", lambda w: w.fill_(0.0)), "scale"),
    "logreg no classes": ("logreg", "mean", _set("state_dict/classes", DELETE), "class indices"),
    "zero-shot text of another size": ("zeroshot", "mean", _set("state_dict/text", torch.zeros(3, 5)), "text has"),
    "zero-shot templates a string": ("zeroshot", "mean", _set("meta/templates", "a {}"), "templates"),
    "not a dict": ("linear", "mean", lambda saved: saved.pop("meta"), "not a head this project wrote"),
}


@pytest.mark.parametrize("case", CASES)
def test_each_fault_of_a_head_file_is_one_line_before_anything_is_built(tmp_path, monkeypatch, case):
    kind, pooling, change, says = CASES[case]
    saved = saved_head(tmp_path, kind, pooling)
    change(saved)
    torch.save(saved, tmp_path / "bad.pt")

    def refuse(*args, **kwargs):
        raise AssertionError("a head was built from a file that was not checked")
    for kind in HEADS.values():  # nothing is built (or allocated) for a head before its checks pass
        monkeypatch.setattr(kind.estimator, "from_state", refuse)
    one_line_error(tmp_path / "bad.pt", says)


@pytest.mark.parametrize("kind, pooling", [("linear", "mean"), ("linear", "attention"), ("linear", "conv"),
                                           ("logreg", "mean"), ("zeroshot", "mean")])
def test_every_head_this_project_writes_passes_the_checks(tmp_path, kind, pooling):
    saved_head(tmp_path, kind, pooling)
    head = load_head(tmp_path / "good.pt")
    assert head.meta_.kind == kind and head.pooling == pooling and head.classes_ == NAMES


def test_a_head_is_never_saved_with_a_non_finite_number(tmp_path):
    emb, y = frames()
    head = LinearHead(LinearConfig(epochs=2)).fit(emb, y, NAMES, ATTRS)
    head.save(tmp_path / "h.pt")
    before = (tmp_path / "h.pt").read_bytes()
    with torch.no_grad():
        head.module_.fc.bias[0] = math.nan
    with pytest.raises(HeadError, match="h.pt: not a usable head: fc.bias holds numbers that are not finite"):
        head.save(tmp_path / "h.pt")
    assert (tmp_path / "h.pt").read_bytes() == before and sorted(os.listdir(tmp_path)) == ["h.pt"]
    with pytest.raises(HeadError, match="features have no 'encoder_model'"):  # a head that could not be used
        LogRegHead().fit(emb, y, NAMES, {}).save(tmp_path / "b.pt")
    assert not (tmp_path / "b.pt").exists()


@pytest.mark.parametrize("setting, value", [("lr", math.nan), ("lr", math.inf), ("lr", "nan"),
                                            ("weight_decay", math.nan), ("weight_decay", math.inf)])
def test_a_non_finite_training_setting_is_one_line_naming_it(setting, value):
    with pytest.raises(ConfigError, match=f"^train.{setting} must be a finite number"):
        LinearConfig(**{setting: value})


def test_a_non_finite_baseline_c_is_one_line():
    with pytest.raises(ConfigError, match="^baseline.C must be a finite number"):
        LogRegConfig(C=math.inf)
    with pytest.raises(ConfigError, match="^baseline.C"):
        LogRegConfig(C=math.nan)


def test_a_learning_rate_torch_cannot_step_is_one_line():
    with pytest.raises(ConfigError, match="^train.lr must be at most 10, got 1e\\+38"):
        LinearConfig(lr=1e38)


@pytest.mark.parametrize("pooling, lr", [("mean", 3e37), ("attention", 1e37)])
def test_a_diverging_loss_stops_training_naming_the_setting(pooling, lr):
    emb, y = frames()
    cfg = LinearConfig(epochs=3, head=pooling)
    cfg.lr = lr  # (past LinearConfig's bound: the last guard, for whatever else makes training diverge)
    with pytest.raises(ConfigError, match="training diverged at epoch .*train.lr .e\\+37.*lower train.lr"):
        LinearHead(cfg).fit(emb, y, NAMES, ATTRS)


def test_non_finite_training_features_are_a_data_error():
    emb, y = frames()
    emb[0, 0, 0] = math.nan
    with pytest.raises(DataError, match="not finite"):
        LinearHead(LinearConfig(epochs=2)).fit(emb, y, NAMES, ATTRS)


@pytest.mark.filterwarnings("ignore:overflow encountered")  # numpy's, pooling 3e38: the head then refuses
@pytest.mark.parametrize("kind", ["linear", "logreg", "zeroshot"])
def test_no_head_answers_nan_or_infinity(tmp_path, kind):
    saved_head(tmp_path, kind)
    head = load_head(tmp_path / "good.pt")
    emb = frames(seed=2)[0]
    assert np.isfinite(head.predict_proba(emb)).all()
    for bad in (math.nan, math.inf, 3e38):
        broken = emb.copy()
        broken[1] = bad
        with pytest.raises(DataError, match="not finite"):
            head.predict_proba(broken)
        with pytest.raises(DataError, match="not finite"):
            head.predict(broken)


def test_the_saved_metadata_is_the_record_load_gives(tmp_path):
    saved = saved_head(tmp_path, "zeroshot")
    assert saved["meta"] == dataclasses.asdict(load_head(tmp_path / "good.pt").meta_)


def project_copy(project: Path, tmp_path: Path, monkeypatch, **params) -> Path:
    """The conftest project's cache and heads in tmp_path, with a split, params.yaml (the committed one with
    `params` sections merged) and tmp_path as the working folder, as `dvc repro` runs the stages."""
    import yaml

    from pipeline.extract.cache import read_cache
    from pipeline.heads.split import split_videos
    from pipeline.heads.split_file import write_split
    from pipeline.paths import SPLIT_PATH
    from tests.conftest import committed_params

    for part in ("cache", "models"):
        shutil.copytree(project / part, tmp_path / part)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(committed_params(**params)))
    monkeypatch.chdir(tmp_path)
    cache = read_cache("cache/features.h5")
    write_split(SPLIT_PATH, cache.paths, cache.labels, cache.class_names,
                split_videos(cache.labels, cache.class_names, 0.3, 0.0, 0))
    return tmp_path


def stage_error(main) -> str:
    """The one line a stage's main() ends with (its SystemExit message)."""
    with pytest.raises(SystemExit) as stopped:
        main()
    message = str(stopped.value.code)
    assert "\n" not in message and "Traceback" not in message, message
    return message


@pytest.mark.parametrize("setting, value", [("lr", math.nan), ("lr", -math.inf), ("weight_decay", math.nan)])
def test_the_train_stage_stops_on_a_non_finite_setting_and_keeps_the_head(project, tmp_path, monkeypatch,
                                                                           keep_threads, setting, value):
    import stages.train

    root = project_copy(project, tmp_path, monkeypatch, train={"epochs": 2, setting: value})
    before = (root / HEAD_FILES["linear"]).read_bytes()
    message = stage_error(stages.train.main)
    assert message.startswith("train: error: ") and f"train.{setting}" in message
    assert (root / HEAD_FILES["linear"]).read_bytes() == before


def test_an_old_project_with_logreg_joblib_is_told_the_command(project, tmp_path, monkeypatch, capsys, keep_threads):
    import stages.baseline
    from pipeline.tools.cli import predict

    root = project_copy(project, tmp_path, monkeypatch)
    PWNED.unlink(missing_ok=True)
    (root / HEAD_FILES["logreg"]).unlink()
    with open(root / "models" / "logreg.joblib", "wb") as f:  # what an older version left (here: a payload)
        pickle.dump({"model": _Payload(), "meta": {}}, f)
    assert predict(["nothing.mp4", "--head", "logreg"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "dvc repro baseline" in err and "models/logreg.joblib" in err, err
    assert not PWNED.exists()
    stages.baseline.main()  # the command it names writes the new file, which loads
    assert load_head(HEAD_FILES["logreg"]).classes_ == ["clapping", "sitting", "walking"]
