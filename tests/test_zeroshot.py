"""Zero-shot heads: prompts, the text tower of the tiny CLIP, and a task whose answer is known by construction."""
import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError, HeadError
from pipeline.heads import ZeroShotHead, load_head
from pipeline.zeroshot import TEMPLATES, class_prompts, text_embeddings, zeroshot_head

NAMES = ["clapping", "walking_while_reading_book", "sitting"]


def attrs(dim):
    return {"encoder_model": "tiny", "encoder_fingerprint": "f", "embedding_dim": dim, "num_frames": 4,
            "sampling": "uniform-centers", "preprocess": "fast", "preprocess_config": "{}",
            "backend": "torch", "quantize": "none",
            "decoder": "pyav-test"}


def test_prompts_replace_underscores():
    assert class_prompts("walking_while_reading_book")[0] == "a video of a person walking while reading book."
    assert len(class_prompts("sitting")) == len(TEMPLATES)


def test_text_embeddings_are_unit_length_and_differ_per_class(tiny_clip):
    emb = text_embeddings(tiny_clip, NAMES)
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert np.abs(emb @ emb.T - np.eye(3)).max() > 1e-3  # not all the same vector
    np.testing.assert_allclose(text_embeddings(tiny_clip, NAMES), emb)  # deterministic


def test_zero_shot_finds_the_class_whose_text_the_video_looks_like(tiny_clip):
    # by construction: each video's frames are its class's text embedding (scaled) plus noise
    emb = text_embeddings(tiny_clip, NAMES)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    videos = 7.0 * emb[labels][:, None, :] + rng.normal(0, 0.05, (30, 4, 32))
    head = zeroshot_head(emb, NAMES, attrs(32))
    proba = head.predict_proba(videos.astype(np.float32))
    assert proba.shape == (30, 3) and np.all(proba.argmax(1) == labels)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)


def test_zero_shot_head_round_trip_with_weights_only(tiny_clip, tmp_path):
    emb = text_embeddings(tiny_clip, NAMES)
    head = zeroshot_head(emb, NAMES, attrs(32))
    head.save(tmp_path / "z.pt")
    raw = torch.load(tmp_path / "z.pt", weights_only=True)
    assert raw["meta"]["kind"] == "zeroshot" and raw["meta"]["templates"] == list(TEMPLATES)
    back = load_head(tmp_path / "z.pt")
    x = np.random.default_rng(1).normal(size=(5, 4, 32)).astype(np.float32)
    assert isinstance(back, ZeroShotHead) and back.classes_ == NAMES and back.templates == TEMPLATES
    np.testing.assert_allclose(back.predict_proba(x), head.predict_proba(x), atol=1e-6)


def test_a_checkpoint_without_a_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(HeadError, match="cannot load the CLIP text tower and tokenizer"):
        text_embeddings(str(tmp_path), NAMES)
    with pytest.raises(ConfigError, match="at least one class"):
        text_embeddings(str(tmp_path), [])


def test_a_zero_shot_initialised_linear_head_starts_from_the_zero_shot_answer(tiny_clip):
    from pipeline.heads import LinearHead
    from pipeline.training import LinearConfig
    emb = text_embeddings(tiny_clip, NAMES)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    videos = (7.0 * emb[labels][:, None, :] + rng.normal(0, 0.05, (30, 4, 32))).astype(np.float32)
    pooled = videos.mean(axis=1)
    for text_init, expect_right in ((emb, True), (None, False)):
        start = LinearHead(LinearConfig(epochs=0), text_init).fit(pooled, labels, NAMES, attrs(32))
        right = np.mean(start.predict(pooled) == labels)
        assert (right == 1.0) == expect_right  # before any training step: the zero-shot answer, or a random one
    with pytest.raises(ConfigError, match="mean pooling"):
        LinearHead(LinearConfig(epochs=0, head="conv"), emb).fit(videos, labels, NAMES, attrs(32))
