"""The tiny CLIP through from_pretrained, preprocessing parity with CLIPImageProcessor, batch-independent embeddings."""
import cv2
import numpy as np
import pytest
import torch

from pipeline.encoder import build_random_clip, embed_frames, load_encoder, preprocess_frames


@pytest.fixture(scope="module")
def encoder(tiny_clip):
    return load_encoder(tiny_clip, device="cpu")


def test_tiny_clip_loads_through_from_pretrained(encoder, tiny_clip):
    assert encoder.dim == 32 and encoder.model_id == tiny_clip and encoder.device.type == "cpu"
    d = encoder.describe()
    assert d["encoder_fingerprint"] == encoder.fingerprint and len(encoder.fingerprint) == 16
    assert '"shortest_edge": 224' in d["preprocess_config"]


def test_fingerprint_is_stable_and_tells_weights_apart(encoder, tiny_clip, tmp_path):
    assert load_encoder(tiny_clip, device="cpu").fingerprint == encoder.fingerprint
    other = build_random_clip(tmp_path / "other", seed=1)
    assert load_encoder(str(other), device="cpu").fingerprint != encoder.fingerprint


def _natural_frames(n, h, w, seed=0):
    """Smooth random RGB frames: closer to video than white noise, which exaggerates resampling differences."""
    rng = np.random.default_rng(seed)
    return np.stack([cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (7, 7), 2) for _ in range(n)])


@pytest.mark.parametrize("h,w", [(720, 1280), (240, 320), (300, 200), (224, 224), (16, 16), (100, 500)])
def test_fast_preprocessing_matches_clip_image_processor(encoder, h, w):
    frames = _natural_frames(3, h, w)
    fast = preprocess_frames(frames, encoder)
    encoder.preprocess = "processor"
    try:
        reference = preprocess_frames(frames, encoder)
    finally:
        encoder.preprocess = "fast"
    assert fast.shape == reference.shape == (3, 3, 224, 224) and fast.dtype == torch.float32
    diff = (fast - reference).abs()
    # stated tolerance: two uint8 steps after normalisation (2 / 255 / min std = 0.0304), mean far below one step
    assert diff.max().item() <= 0.031
    assert diff.mean().item() < 1e-3


def test_embeddings_do_not_depend_on_batch_composition(encoder):
    pixels = preprocess_frames(_natural_frames(21, 64, 80), encoder)
    together = embed_frames(pixels, encoder, batch_size=8)
    assert together.shape == (21, 32) and together.dtype == np.float32
    shifted = embed_frames(pixels[3:], encoder, batch_size=8)
    alone = embed_frames(pixels[20:], encoder, batch_size=8)
    np.testing.assert_array_equal(shifted, together[3:])
    np.testing.assert_array_equal(alone, together[20:])
    assert embed_frames(pixels[:0], encoder, batch_size=8).shape == (0, 32)


def test_offline_hub_id_fails_with_one_clear_sentence(monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what a machine without network ends up at, at once
    with pytest.raises(ValueError, match=r"set encoder.model in params.yaml to a local directory") as err:
        load_encoder("openai/clip-vit-base-patch32-not-cached", device="cpu")
    assert "python -m pipeline.encoder --tiny" in str(err.value)


def test_missing_local_directory_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_encoder(str(tmp_path / "no-such-model"), device="cpu")


def test_bad_options_are_rejected(tiny_clip):
    with pytest.raises(ValueError, match="preprocess"):
        load_encoder(tiny_clip, preprocess="magic")
    with pytest.raises(ValueError, match="device"):
        load_encoder(tiny_clip, device="tpu")


def test_int8_encoder_is_close_to_fp32_and_recorded(encoder, tiny_clip):
    int8 = load_encoder(tiny_clip, device="cpu", quantize="int8")
    assert int8.describe()["quantize"] == "int8" and encoder.describe()["quantize"] == "none"
    assert int8.fingerprint == encoder.fingerprint  # the same weights; the cache key also holds `quantize`
    pixels = preprocess_frames(_natural_frames(8, 120, 160), encoder)
    a, b = embed_frames(pixels, encoder, 8), embed_frames(pixels, int8, 8)
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99 and not np.array_equal(a, b)
    with pytest.raises(ValueError, match="quantize"):
        load_encoder(tiny_clip, quantize="int4")


def test_tiny_clip_has_a_text_tower_and_a_tokenizer(tiny_clip):
    from transformers import AutoTokenizer, CLIPTextModelWithProjection
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip)
    text = CLIPTextModelWithProjection.from_pretrained(tiny_clip).eval()
    tokens = tokenizer(["a video of a person clapping", "walking"], padding=True, return_tensors="pt")
    assert tokenizer.decode(tokens["input_ids"][1], skip_special_tokens=True) == "walking"
    with torch.inference_mode():
        embeds = text(**tokens).text_embeds
    assert embeds.shape == (2, 32) and not torch.allclose(embeds[0], embeds[1])
