"""Heads on a clearly separable synthetic cache, checkpoints loaded with weights_only, mismatch errors."""
import dataclasses

import numpy as np
import pytest
import torch

from pipeline.cache import ROW_FIELDS, empty_cache, open_cache, write_cache
from pipeline.heads import (LinearConfig, LinearHead, LogRegConfig, check_compatible, fit_logreg, fit_predict,
                            head_metadata, load_head, mean_pool, save_linear, save_logreg, train_linear_head)
from pipeline.split import split_videos

NAMES = ["clapping", "sitting", "walking", "waving"]
ATTRS = {"encoder_model": "tiny", "encoder_fingerprint": "abc", "embedding_dim": 64, "num_frames": 4,
         "sampling": "uniform-centers", "preprocess": "fast", "preprocess_config": "{}",
         "backend": "torch", "quantize": "none",
         "decoder": "pyav-test"}


def separable(n_per_class=30, frames=4, dim=64, seed=0):
    """Frame embeddings float32 (V, frames, dim) around one well-separated mean per class, with labels (V,)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, (len(NAMES), dim))
    labels = np.repeat(np.arange(len(NAMES)), n_per_class)
    emb = means[labels][:, None, :] + rng.normal(0, 1, (len(labels), frames, dim))
    return emb.astype(np.float32), labels


@pytest.fixture(scope="module")
def data():
    emb, labels = separable()
    parts = split_videos(labels, NAMES, 0.15, 0.15, seed=0)
    return emb, labels, parts


def test_mean_pool_averages_frames():
    emb = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(mean_pool(emb), emb.mean(axis=1))
    assert mean_pool(emb).dtype == np.float32


def test_linear_head_learns_a_separable_task_with_default_params(data):
    emb, y, parts = data
    x = mean_pool(emb)
    tr, va, te = parts == "train", parts == "val", parts == "test"
    result = train_linear_head(x[tr], y[tr], x[va], y[va], len(NAMES), LinearConfig())
    assert len(result.history) == LinearConfig().epochs
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    losses = [h["val_loss"] for h in result.history]
    assert result.best_epoch == int(np.argmin(losses)) + 1
    head = _head_from_state(result.best_state)
    assert np.mean(head.predict_proba(emb[te]).argmax(1) == y[te]) >= 0.95


def test_logistic_regression_learns_a_separable_task(data):
    emb, y, parts = data
    x = mean_pool(emb)
    model = fit_logreg(x[parts == "train"], y[parts == "train"], LogRegConfig())
    assert np.mean(model.predict(x[parts == "test"]) == y[parts == "test"]) >= 0.95


def _head_from_state(state):
    """A linear Head built straight from a state dict, without going through a file."""
    from pipeline.heads import Head, LinearHead
    model = LinearHead(64, len(NAMES))
    model.load_state_dict(state)
    return Head("linear", head_metadata(ATTRS, NAMES, "linear"), model.eval())


def test_linear_checkpoint_round_trip_with_weights_only(data, tmp_path):
    emb, y, parts = data
    x = mean_pool(emb)
    result = train_linear_head(x, y, None, None, len(NAMES), LinearConfig(epochs=5))
    assert result.best_state is result.final_state and result.best_epoch == 5  # no validation: final is best
    save_linear(tmp_path / "h.pt", result.final_state, head_metadata(ATTRS, NAMES, "linear"))
    raw = torch.load(tmp_path / "h.pt", weights_only=True)  # plain tensors and strings only
    assert raw["meta"]["class_names"] == NAMES and raw["meta"]["encoder_fingerprint"] == "abc"
    assert raw["meta"]["pooling"] == "mean" and raw["meta"]["num_frames"] == 4
    head = load_head(tmp_path / "h.pt")
    assert head.kind == "linear" and head.class_names == NAMES
    proba = head.predict_proba(emb[:5])
    assert proba.shape == (5, 4) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(proba, _head_from_state(result.final_state).predict_proba(emb[:5]), atol=1e-6)


def test_logreg_round_trip(data, tmp_path):
    emb, y, _ = data
    model = fit_logreg(mean_pool(emb), y, LogRegConfig())
    save_logreg(tmp_path / "b.joblib", model, head_metadata(ATTRS, NAMES, "logreg"))
    head = load_head(tmp_path / "b.joblib")
    assert head.kind == "logreg" and head.meta["embedding_dim"] == 64
    np.testing.assert_allclose(head.predict_proba(emb[:3]), model.predict_proba(mean_pool(emb[:3])), atol=1e-6)


def test_fit_predict_dispatches_on_the_config(data):
    emb, y, _ = data
    x = mean_pool(emb)
    for cfg in (LinearConfig(lr=1e-2, epochs=20), LogRegConfig()):
        pred = fit_predict(x[::2], y[::2], x[1::2], len(NAMES), cfg)
        assert pred.shape == (len(x[1::2]),) and np.mean(pred == y[1::2]) >= 0.9


def test_mismatched_cache_or_encoder_is_a_clear_error():
    meta = head_metadata(ATTRS, NAMES, "linear")
    check_compatible(meta, ATTRS, NAMES)  # the same: no error
    with pytest.raises(ValueError, match="encoder_fingerprint='abc' but the cache has 'xyz'"):
        check_compatible(meta, {**ATTRS, "encoder_fingerprint": "xyz"}, NAMES)
    with pytest.raises(ValueError, match="num_frames=4 but the encoder has 8"):
        check_compatible(meta, {**ATTRS, "num_frames": 8}, what="encoder")
    with pytest.raises(ValueError, match="classes"):
        check_compatible(meta, ATTRS, NAMES[::-1])


def test_wrong_input_shape_is_rejected(data, tmp_path):
    emb, y, _ = data
    save_logreg(tmp_path / "b.joblib", fit_logreg(mean_pool(emb), y, LogRegConfig()),
                head_metadata(ATTRS, NAMES, "logreg"))
    with pytest.raises(ValueError, match="expected embeddings"):
        load_head(tmp_path / "b.joblib").predict_proba(emb[:, :, :8])


def test_missing_or_corrupt_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no trained head.*dvc repro"):
        load_head(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.pt: not a usable head checkpoint"):
        load_head(tmp_path / "bad.pt")
    (tmp_path / "head.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown head file type"):
        load_head(tmp_path / "head.onnx")


def order_task(n=240, frames=8, dim=16, seed=0):
    """Two frame types a and b; class 0 shows a then b, class 1 b then a: the same mean, so the same pooled input."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, dim), rng.normal(0, 1, dim)
    labels = np.arange(n) % 2
    first = np.where(labels[:, None] == 0, 1, 0)[:, :, None]  # (n, 1, 1): 1 where a comes first
    half = frames // 2
    seq = np.empty((n, frames, dim))
    seq[:, :half] = first * a + (1 - first) * b
    seq[:, half:] = first * b + (1 - first) * a
    return (seq + rng.normal(0, 0.3, seq.shape)).astype(np.float32), labels


@pytest.mark.parametrize("pooling", ["attention", "conv"])
def test_temporal_heads_learn_the_order_that_mean_pooling_cannot(pooling, tmp_path):
    x, y = order_task()
    tx, ty, vx, vy = x[:160], y[:160], x[160:], y[160:]
    cfg = LinearConfig(lr=1e-2, epochs=60, head=pooling)
    result = train_linear_head(tx, ty, None, None, 2, cfg)
    save_linear(tmp_path / "t.pt", result.final_state,
                head_metadata({**ATTRS, "num_frames": 8, "embedding_dim": 16}, ["ab", "ba"], "linear", pooling))
    head = load_head(tmp_path / "t.pt")  # rebuilt from its metadata: the pooling and the number of frames
    assert head.meta["pooling"] == pooling
    assert np.mean(head.predict_proba(vx).argmax(1) == vy) >= 0.95
    mean = train_linear_head(tx, ty, None, None, 2, LinearConfig(lr=1e-2, epochs=60))
    model = LinearHead(16, 2)
    model.load_state_dict(mean.final_state)
    assert np.mean(model(torch.from_numpy(vx)).argmax(1).numpy() == vy) < 0.75  # mean pooling: near chance


def test_unknown_pooling_and_pooled_input_for_a_temporal_head_are_refused():
    with pytest.raises(ValueError, match="train.head must be one of"):
        LinearHead(16, 2, "lstm")
    with pytest.raises(ValueError, match="needs frame embeddings"):
        train_linear_head(np.zeros((4, 16), np.float32), np.array([0, 1, 0, 1]), None, None, 2,
                          LinearConfig(head="conv"))


@pytest.mark.parametrize("pooling", ["mean", "conv"])
def test_heads_train_from_the_cache_file_as_from_memory(pooling, tmp_path):
    """Frames left in the cache file (mini-batches read as needed; mean pooling block by block) give the head that
    frames in memory give, and predict the same."""
    x, y = order_task(n=60)
    empty = empty_cache(8, 16, {}, ["ab", "ba"])
    fields = {name: np.zeros((60, *getattr(empty, name).shape[1:]), getattr(empty, name).dtype) for name in ROW_FIELDS}
    names = np.array([f"v{i}" for i in range(60)], object)
    fields.update(embeddings=x, labels=y, paths=names, content_hash=names)
    cache = dataclasses.replace(empty, **fields)
    write_cache(tmp_path / "f.h5", cache)
    lazy = open_cache(tmp_path / "f.h5").embeddings
    cfg = LinearConfig(lr=1e-2, epochs=3, batch_size=8, head=pooling)
    train, val = np.arange(60) % 4 != 0, np.arange(60) % 4 == 0
    a = train_linear_head(x[train], y[train], x[val], y[val], 2, cfg)
    b = train_linear_head(lazy[train], y[train], lazy[val], y[val], 2, cfg)
    for key in a.final_state:
        torch.testing.assert_close(b.final_state[key], a.final_state[key], rtol=1e-4, atol=1e-5, msg=key)
    assert [h["train_loss"] for h in b.history] == pytest.approx([h["train_loss"] for h in a.history], rel=1e-4)
    meta = head_metadata({**ATTRS, "num_frames": 8, "embedding_dim": 16}, ["ab", "ba"], "linear", pooling)
    save_linear(tmp_path / "t.pt", a.final_state, meta)
    head = load_head(tmp_path / "t.pt")
    np.testing.assert_allclose(head.logits(lazy[val]), head.logits(x[val]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weight_decay,text", [(0.0, False), (0.01, False), (0.0, True)])
def test_batched_mean_heads_equal_heads_trained_one_at_a_time_with_torch_adam(weight_decay, text):
    """train_mean_heads (K heads in one loop, Adam computed there) against torch.optim.Adam on each task alone:
    tasks of different sizes (so heads sit out steps), weight decay, a zero-shot start, a validation set."""
    from pipeline.heads import _train_torch_optim, fit_predict_many, train_mean_heads
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(70, 16)).astype(np.float32), rng.integers(0, 3, 70)
    text_init = rng.normal(size=(3, 16)).astype(np.float32) if text else None
    if text:
        text_init /= np.linalg.norm(text_init, axis=1, keepdims=True)
    cfg = LinearConfig(lr=1e-2, epochs=12, batch_size=16, weight_decay=weight_decay)
    tasks = [(x, y), (x[:41], y[:41]), (x[:9], y[:9])]
    together = train_mean_heads(tasks, 3, cfg, text_init)
    for (xt, yt), got in zip(tasks, together):
        alone = _train_torch_optim(xt, yt, None, None, 3, cfg, text_init)
        for key, value in alone.final_state.items():
            assert torch.allclose(got.final_state[key], value, atol=1e-4), key
        assert [h["train_loss"] for h in got.history] == pytest.approx([h["train_loss"] for h in alone.history],
                                                                       rel=1e-4)
    with_val = train_mean_heads([(x[:50], y[:50])], 3, cfg, text_init, x[50:], y[50:])[0]
    alone = _train_torch_optim(x[:50], y[:50], x[50:], y[50:], 3, cfg, text_init)
    assert with_val.best_epoch == alone.best_epoch
    assert torch.allclose(with_val.best_state["fc.weight"], alone.best_state["fc.weight"], atol=1e-4)
    preds = fit_predict_many([(xt, yt, x) for xt, yt in tasks], 3, cfg, text_init)
    assert [p.tolist() for p in preds] == [fit_predict(xt, yt, x, 3, cfg, text_init).tolist() for xt, yt in tasks]
    with pytest.MonkeyPatch.context() as mp:  # tasks over the memory budget train in groups, to the same answers
        mp.setattr("pipeline.heads.BATCHED_BYTES", 41 * 16 * 4)
        grouped = fit_predict_many([(xt, yt, x) for xt, yt in tasks], 3, cfg, text_init)
    assert [p.tolist() for p in grouped] == [p.tolist() for p in preds]
