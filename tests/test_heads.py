"""Heads as estimators on a clearly separable synthetic cache, checkpoints loaded with weights_only, mismatch errors,
and the one training loop: K heads at once equal to each alone."""
import dataclasses

import numpy as np
import pytest
import torch

from pipeline.extract.cache import ROW_FIELDS, empty_cache, open_cache, write_cache
from pipeline.errors import ConfigError, HeadError
from pipeline.heads.estimators import HEAD_SCHEMA, LinearHead, NotFittedError, ZeroShotHead, mean_pool
from pipeline.heads.logreg import LogRegConfig, LogRegHead
from pipeline.heads.kinds import fit_predict_many
from pipeline.heads.kinds import load_head
from pipeline.heads.split import split_videos
from pipeline.heads.training import LinearConfig, LinearModule, train_linear

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
    head = LinearHead(LinearConfig()).fit(x[tr], y[tr], NAMES, ATTRS, x[va], y[va])
    assert head is not None and head.classes_ == NAMES
    assert len(head.history_) == LinearConfig().epochs
    assert head.history_[-1]["train_loss"] < head.history_[0]["train_loss"]
    losses = [h["val_loss"] for h in head.history_]
    assert head.best_epoch_ == int(np.argmin(losses)) + 1 == head.meta_.epoch
    assert np.mean(head.predict_proba(emb[te]).argmax(1) == y[te]) >= 0.95
    assert np.mean(head.predict(emb[te]) == y[te]) >= 0.95
    assert head.final_head().meta_.epoch == LinearConfig().epochs


def test_logistic_regression_learns_a_separable_task(data):
    emb, y, parts = data
    x = mean_pool(emb)
    head = LogRegHead(LogRegConfig()).fit(x[parts == "train"], y[parts == "train"], NAMES, ATTRS)
    assert np.mean(head.predict(x[parts == "test"]) == y[parts == "test"]) >= 0.95


def test_a_head_used_before_fit_is_a_clear_error(data):
    emb, _, _ = data
    for head in (LinearHead(), LogRegHead(), ZeroShotHead()):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            head.predict_proba(emb[:2])
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)


def test_linear_checkpoint_round_trip_with_weights_only(data, tmp_path):
    emb, y, parts = data
    x = mean_pool(emb)
    fitted = LinearHead(LinearConfig(epochs=5)).fit(x, y, NAMES, ATTRS)
    assert fitted.module_ is fitted.final_ and fitted.best_epoch_ == 5  # no validation: final is best
    fitted.save(tmp_path / "h.pt")
    raw = torch.load(tmp_path / "h.pt", weights_only=True)  # plain tensors and types only
    assert raw["meta"]["class_names"] == NAMES and raw["meta"]["features"]["encoder_fingerprint"] == "abc"
    assert raw["meta"]["pooling"] == "mean" and raw["meta"]["features"]["num_frames"] == 4
    assert raw["meta"]["schema_version"] == HEAD_SCHEMA
    head = load_head(tmp_path / "h.pt")
    assert isinstance(head, LinearHead) and head.classes_ == NAMES and head.meta_ == fitted.meta_
    proba = head.predict_proba(emb[:5])
    assert proba.shape == (5, 4) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(proba, fitted.predict_proba(emb[:5]), atol=1e-6)


def test_a_zero_shot_head_saved_before_siglip_loads_with_clips_scoring(tmp_path):
    text = np.eye(3, 8, dtype=np.float32)
    head = ZeroShotHead().fit(text, ["a", "b", "c"], {**ATTRS, "embedding_dim": 8})
    saved = {"state_dict": {k: v for k, v in head.module_.state_dict().items() if k in ("text", "scale")},
             "meta": dataclasses.asdict(head.meta_)}  # the buffers a zero-shot head had before
    torch.save(saved, tmp_path / "old.pt")
    x = np.random.default_rng(0).normal(size=(4, 2, 8)).astype(np.float32)
    np.testing.assert_allclose(load_head(tmp_path / "old.pt").logits(x), head.logits(x), rtol=1e-6)


def test_logreg_round_trip(data, tmp_path):
    emb, y, _ = data
    fitted = LogRegHead().fit(mean_pool(emb), y, NAMES, ATTRS)
    fitted.save(tmp_path / "b.pt")
    head = load_head(tmp_path / "b.pt")
    assert isinstance(head, LogRegHead) and head.meta_.features["embedding_dim"] == 64
    np.testing.assert_allclose(head.predict_proba(emb[:3]), fitted.model_.predict_proba(mean_pool(emb[:3])),
                               atol=1e-6)


def test_the_refits_of_cross_validation_follow_the_config(data):
    emb, y, _ = data
    x = mean_pool(emb)
    for cfg in (LinearConfig(lr=1e-2, epochs=20), LogRegConfig()):
        [pred] = fit_predict_many([(x[::2], y[::2], x[1::2])], len(NAMES), cfg)
        assert pred.shape == (len(x[1::2]),) and np.mean(pred == y[1::2]) >= 0.9


def test_mismatched_cache_or_encoder_is_a_clear_error(data):
    emb, y, _ = data
    head = LogRegHead().fit(mean_pool(emb), y, NAMES, ATTRS)
    head.check_compatible(ATTRS, NAMES)  # the same: no error
    with pytest.raises(HeadError, match="encoder_fingerprint='abc' but the cache has 'xyz'"):
        head.check_compatible({**ATTRS, "encoder_fingerprint": "xyz"}, NAMES)
    with pytest.raises(HeadError, match="num_frames=4 but the encoder has 8"):
        head.check_compatible({**ATTRS, "num_frames": 8}, what="encoder")
    with pytest.raises(HeadError, match="classes"):
        head.check_compatible(ATTRS, NAMES[::-1])
    with pytest.raises(HeadError, match="^models/x.pt: the logreg head"):
        head.check_compatible({**ATTRS, "encoder_fingerprint": "xyz"}, source="models/x.pt")
    # what heads do not match on: the encoder's id, precision, device, storage dtype, stage one's batch size
    head.check_compatible({**ATTRS, "encoder_model": "elsewhere", "precision": "fp16", "device_type": "cuda",
                           "dtype": "float16", "batch_size": 256}, NAMES)


def test_wrong_input_shape_is_rejected(data, tmp_path):
    emb, y, _ = data
    LogRegHead().fit(mean_pool(emb), y, NAMES, ATTRS).save(tmp_path / "b.pt")
    with pytest.raises(HeadError, match="expected embeddings"):
        load_head(tmp_path / "b.pt").predict_proba(emb[:, :, :8])


def test_missing_or_corrupt_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(HeadError, match="no trained head.*dvc repro"):
        load_head(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(HeadError, match="bad.pt: not a head this project wrote"):
        load_head(tmp_path / "bad.pt")
    torch.save({"state_dict": {}, "meta": {"schema_version": HEAD_SCHEMA, "kind": "linear"}}, tmp_path / "part.pt")
    with pytest.raises(HeadError, match="part.pt: not a usable head: its metadata has no"):
        load_head(tmp_path / "part.pt")
    (tmp_path / "head.onnx").write_bytes(b"x")
    with pytest.raises(HeadError, match="unknown head file type"):
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
    features = {**ATTRS, "num_frames": 8, "embedding_dim": 16}
    LinearHead(LinearConfig(lr=1e-2, epochs=60, head=pooling)).fit(tx, ty, ["ab", "ba"], features).save(
        tmp_path / "t.pt")
    head = load_head(tmp_path / "t.pt")  # rebuilt from its metadata: the pooling and the number of frames
    assert head.meta_.pooling == pooling
    assert np.mean(head.predict(vx) == vy) >= 0.95
    mean = LinearHead(LinearConfig(lr=1e-2, epochs=60)).fit(tx, ty, ["ab", "ba"], features)
    assert np.mean(mean.predict(vx) == vy) < 0.75  # mean pooling: near chance


def test_unknown_pooling_and_pooled_input_for_a_temporal_head_are_refused():
    with pytest.raises(ConfigError, match="train.head must be one of"):
        LinearModule(16, 2, "lstm", 4)
    with pytest.raises(ConfigError, match="train.head must be one of"):
        LinearHead(LinearConfig(head="lstm")).fit(np.zeros((4, 16), np.float32), np.array([0, 1, 0, 1]), ["a", "b"],
                                                  ATTRS)
    with pytest.raises(ConfigError, match="needs frame embeddings"):
        LinearHead(LinearConfig(head="conv")).fit(np.zeros((4, 16), np.float32), np.array([0, 1, 0, 1]),
                                                  ["a", "b"], ATTRS)


@pytest.mark.parametrize("pooling", ["mean", "conv"])
def test_heads_train_from_the_cache_file_as_from_memory(pooling, tmp_path):
    """Frames left in the cache file (mini-batches read as needed; mean pooling block by block) give the head that
    frames in memory give, and predict the same."""
    x, y = order_task(n=60)
    empty = empty_cache(8, 16, {}, ["ab", "ba"])
    fields = {name: np.zeros((60, *getattr(empty, name).shape[1:]), getattr(empty, name).dtype) for name in ROW_FIELDS}
    names = np.array([f"v{i}" for i in range(60)], object)
    fields.update(embeddings=x, labels=y, paths=names, content_hash=names, sampled=np.full(60, 8))
    cache = dataclasses.replace(empty, **fields)
    write_cache(tmp_path / "f.h5", cache)
    lazy = open_cache(tmp_path / "f.h5").embeddings
    cfg = LinearConfig(lr=1e-2, epochs=3, batch_size=8, head=pooling)
    train, val = np.arange(60) % 4 != 0, np.arange(60) % 4 == 0
    features = {**ATTRS, "num_frames": 8, "embedding_dim": 16}
    a = LinearHead(cfg).fit(x[train], y[train], ["ab", "ba"], features, x[val], y[val])
    b = LinearHead(cfg).fit(lazy[train], y[train], ["ab", "ba"], features, lazy[val], y[val])
    for key, value in a.final_.state_dict().items():
        torch.testing.assert_close(b.final_.state_dict()[key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert [h["train_loss"] for h in b.history_] == pytest.approx([h["train_loss"] for h in a.history_], rel=1e-4)
    a.final_head().save(tmp_path / "t.pt")
    head = load_head(tmp_path / "t.pt")
    np.testing.assert_allclose(head.logits(lazy[val]), head.logits(x[val]), rtol=1e-5, atol=1e-5)


def _adam_alone(x, y, cfg, text_init=None, x_val=None, y_val=None):
    """The reference: one LinearModule trained with the torch.optim.Adam class, the way any torch user writes it,
    from the same start as train_linear's (its initial weights and standardisation)."""
    start = train_linear([(x, y)], 3, LinearConfig(**{**vars(cfg), "epochs": 0}), text_init)[0].final
    model = LinearModule(16, 3, "mean", 1)  # mean pooling: no weight per frame, so any number of frames
    model.load_state_dict(start.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    best, best_loss = None, float("inf")
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(yt), generator=gen).split(cfg.batch_size):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            optimizer.step()
        if x_val is not None:
            with torch.no_grad():
                loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x_val)),
                                                         torch.from_numpy(y_val.astype(np.int64))).item()
            if loss < best_loss:
                best_loss, best = loss, {k: v.clone() for k, v in model.state_dict().items()}
    return model.state_dict(), best


@pytest.mark.parametrize("weight_decay,text", [(0.0, False), (0.01, False), (0.0, True)])
def test_heads_trained_together_equal_each_trained_alone(weight_decay, text):
    """train_linear with K heads (tasks of different sizes, so heads sit out steps; weight decay; a zero-shot start)
    gives each head what it gives that head alone (to float rounding), and what torch.optim.Adam and autograd give
    it; a validation set keeps the same best epoch."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(70, 16)).astype(np.float32), rng.integers(0, 3, 70)
    text_init = rng.normal(size=(3, 16)).astype(np.float32) if text else None
    if text:
        text_init /= np.linalg.norm(text_init, axis=1, keepdims=True)
    cfg = LinearConfig(lr=1e-2, epochs=12, batch_size=16, weight_decay=weight_decay)
    tasks = [(x, y), (x[:41], y[:41]), (x[:9], y[:9])]
    together = train_linear(tasks, 3, cfg, text_init)
    for (xt, yt), got in zip(tasks, together):
        alone = train_linear([(xt, yt)], 3, cfg, text_init)[0]
        for key, value in alone.final.state_dict().items():
            torch.testing.assert_close(got.final.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
        assert [h["train_loss"] for h in got.history] == pytest.approx([h["train_loss"] for h in alone.history],
                                                                       rel=1e-6)
        reference, _ = _adam_alone(xt, yt, cfg, text_init)
        for key, value in reference.items():
            torch.testing.assert_close(got.final.state_dict()[key], value, rtol=0, atol=1e-5, msg=key)
    with_val = train_linear([(x[:50], y[:50])], 3, cfg, text_init, x[50:], y[50:])[0]
    _, best = _adam_alone(x[:50], y[:50], cfg, text_init, x[50:], y[50:])
    torch.testing.assert_close(with_val.best.state_dict()["fc.weight"], best["fc.weight"], rtol=0, atol=1e-5)
    preds = fit_predict_many([(xt, yt, x) for xt, yt in tasks], 3, cfg, text_init)
    alone = [fit_predict_many([(xt, yt, x)], 3, cfg, text_init)[0] for xt, yt in tasks]
    assert [p.tolist() for p in preds] == [p.tolist() for p in alone]
    with pytest.MonkeyPatch.context() as mp:  # tasks over the memory budget train in groups, to the same answers
        mp.setattr("pipeline.heads.estimators.BATCHED_BYTES", 41 * 16 * 4)
        grouped = fit_predict_many([(xt, yt, x) for xt, yt in tasks], 3, cfg, text_init)
    assert [p.tolist() for p in grouped] == [p.tolist() for p in preds]


def test_temporal_heads_trained_together_equal_each_trained_alone():
    x, y = order_task(n=40)
    cfg = LinearConfig(lr=1e-2, epochs=3, batch_size=8, head="attention")
    together = train_linear([(x, y), (x[:20], y[:20])], 2, cfg)
    for (xt, yt), got in zip([(x, y), (x[:20], y[:20])], together):
        alone = train_linear([(xt, yt)], 2, cfg)[0]
        for key, value in alone.final.state_dict().items():
            torch.testing.assert_close(got.final.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)


def test_training_does_not_import_torch_dynamo():
    """torch.optim.Adam's first use imports torch._dynamo (about a second in each stage's process); the loop uses
    torch's Adam function without it."""
    import subprocess
    import sys
    code = ("import sys, numpy as np; from pipeline.heads.training import LinearConfig, train_linear; "
            "train_linear([(np.ones((4, 3), np.float32), np.array([0, 1, 0, 1]))], 2, LinearConfig(epochs=2)); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == "False"


def padded_cache(tmp_path, n=40, frames=8, dim=16):
    """A cache sampled by frame rate, written and opened lazily: clips of 1 to `frames` frames (padding zeros past
    each one's own), two classes told apart by the mean frame; returns (Embeddings, frames in memory, counts, y)."""
    rng = np.random.default_rng(0)
    counts = rng.integers(1, frames + 1, n)
    y = np.arange(n) % 2
    x = (rng.normal(0, 1, (n, frames, dim)) + 2 * y[:, None, None]).astype(np.float32)
    x[np.arange(frames) >= counts[:, None]] = 0.0
    empty = empty_cache(frames, dim, {}, ["a", "b"])
    fields = {name: np.zeros((n, *getattr(empty, name).shape[1:]), getattr(empty, name).dtype) for name in ROW_FIELDS}
    names = np.array([f"v{i}" for i in range(n)], object)
    fields.update(embeddings=x, labels=y, paths=names, content_hash=names, sampled=counts)
    write_cache(tmp_path / "f.h5", dataclasses.replace(empty, **fields))
    return open_cache(tmp_path / "f.h5").embeddings, x, counts, y


def test_pooling_a_padded_batch_equals_each_video_alone(tmp_path):
    """Frames past a clip's own (a cache sampled by frame rate) never count: the mean of a padded batch, from the
    file or from memory with the counts, and every pooling's logits, equal each video's own frames alone."""
    lazy, x, counts, _ = padded_cache(tmp_path)
    assert lazy.counts.tolist() == counts.tolist() and lazy[[3, 1]].counts.tolist() == counts[[3, 1]].tolist()
    alone = np.stack([x[v, :counts[v]].mean(axis=0) for v in range(len(x))])
    np.testing.assert_allclose(mean_pool(lazy), alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean_pool(x, counts), alone, rtol=1e-5, atol=1e-6)
    assert not np.allclose(mean_pool(x), alone)  # padding that counted would differ
    torch.manual_seed(0)
    for pooling in ("mean", "attention", "conv"):
        module = LinearModule(16, 2, pooling, num_frames=8).eval()
        with torch.no_grad():
            batch = module(torch.from_numpy(x), torch.from_numpy(counts))
            for v in range(len(x)):
                torch.testing.assert_close(batch[v], module(torch.from_numpy(x[v:v + 1, :counts[v]]))[0],
                                           rtol=1e-4, atol=1e-5, msg=pooling)


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_a_head_trained_on_a_cache_sampled_by_frame_rate_predicts_each_video_as_alone(pooling, tmp_path):
    """Trained from the padded cache file, the head's answers for its rows equal its answers for each video's own
    frames alone (what clip-har-predict gives it), and it learned the task."""
    lazy, x, counts, y = padded_cache(tmp_path)
    features = {**ATTRS, "num_frames": 8, "embedding_dim": 16, "sampling": "fps-centers:1"}
    head = LinearHead(LinearConfig(lr=1e-2, epochs=20, batch_size=8, head=pooling)).fit(lazy, y, ["a", "b"], features)
    from_cache = head.predict_proba(lazy)
    alone = np.concatenate([head.predict_proba(x[v:v + 1, :counts[v]]) for v in range(len(x))])
    np.testing.assert_allclose(from_cache, alone, rtol=1e-4, atol=1e-5)
    assert (from_cache.argmax(axis=1) == y).mean() > 0.9
    logreg = LogRegHead().fit(lazy, y, ["a", "b"], features)  # the baseline: the mean of each video's own frames
    np.testing.assert_array_equal(logreg.predict(lazy), logreg.predict(mean_pool(x, counts)))
