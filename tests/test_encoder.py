"""The tiny CLIP and SigLIPs through from_pretrained, the family from the config, preprocessing parity with each
family's image processor, batch-independent embeddings, the ONNX Runtime backend."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.tools.cli import tiny_clip as tiny_clip_command
from pipeline.embed.encoder import (AUTO_BATCH_SIZE, Embedder, EncoderConfig, auto_backend, auto_batch_size,
                                    embed_frames,
                                    load_encoder,
                              preprocess_frames)
from pipeline.errors import ConfigError
from pipeline.embed.tiny_clip import build_tiny_clip
from pipeline.decode.frames import FrameSpec, resize_crop

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder(tiny_clip):
    """The tiny CLIP through torch (the reference the ONNX Runtime tests compare with)."""
    return load_encoder(tiny_clip, device="cpu", backend="torch")


@pytest.fixture(scope="module")
def siglips(tmp_path_factory) -> dict[str, str]:
    """Tiny random SigLIP and SigLIP 2 (fixed resolution) checkpoints, 96x96 input (0.1 s each to build)."""
    return {f: str(build_tiny_clip(tmp_path_factory.mktemp(f), family=f)) for f in ("siglip", "siglip2")}


def test_tiny_clip_loads_through_from_pretrained(encoder, tiny_clip):
    assert encoder.dim == 32 and encoder.model_id == tiny_clip and encoder.device.type == "cpu"
    d = encoder.describe()
    assert d["encoder_fingerprint"] == encoder.fingerprint and len(encoder.fingerprint) == 16
    assert '"shortest_edge": 224' in d["preprocess_config"]


def test_a_random_clip_says_so_in_its_config_and_everything_made_with_it(encoder, tiny_clip, project):
    import json
    from pathlib import Path

    from pipeline.extract.cache import RANDOM_WEIGHTS, read_cache
    from pipeline.heads.estimators import MATCH_KEYS
    from pipeline.heads.kinds import load_head
    from pipeline.paths import HEAD_FILES
    config = json.loads((Path(tiny_clip) / "config.json").read_text())
    assert config[RANDOM_WEIGHTS] and config["vision_config"][RANDOM_WEIGHTS] and config["text_config"][RANDOM_WEIGHTS]
    assert encoder.describe()[RANDOM_WEIGHTS] is True
    assert read_cache(project / "cache" / "features.h5").attrs[RANDOM_WEIGHTS] is True
    assert load_head(project / HEAD_FILES["linear"]).meta_.features[RANDOM_WEIGHTS] is True
    assert RANDOM_WEIGHTS not in MATCH_KEYS  # recorded, not matched: a head works with the same weights either way


def test_fingerprint_is_stable_and_tells_weights_apart(encoder, tiny_clip, tmp_path):
    assert load_encoder(tiny_clip, device="cpu").fingerprint == encoder.fingerprint
    other = build_tiny_clip(tmp_path / "other", seed=1)
    assert load_encoder(str(other), device="cpu").fingerprint != encoder.fingerprint


def _edit_json(path, **changes):
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, **changes}))


def test_a_transformers_upgrade_keeps_the_fingerprint_and_pixel_or_arithmetic_changes_do_not(encoder, tiny_clip,
                                                                                            tmp_path):
    copy = tmp_path / "moved" / "clip"  # another directory, too: the path is not the encoder's identity
    shutil.copytree(tiny_clip, copy)
    _edit_json(copy / "config.json", transformers_version="99.0.0")
    _edit_json(copy / "preprocessor_config.json", image_processor_type="CLIPImageProcessorFast")
    upgraded = load_encoder(str(copy), device="cpu")
    assert upgraded.fingerprint == encoder.fingerprint
    assert upgraded.describe()["preprocess_config"] == encoder.describe()["preprocess_config"]
    for file, change in (("config.json", {"vision_config": {**json.loads((copy / "config.json").read_text())[
                             "vision_config"], "layer_norm_eps": 1e-3}}),
                         ("preprocessor_config.json", {"image_mean": [0.5, 0.5, 0.5]})):
        changed = tmp_path / file
        shutil.copytree(copy, changed)
        _edit_json(changed / file, **change)
        assert load_encoder(str(changed), device="cpu").fingerprint != encoder.fingerprint, file


def _natural_frames(n, h, w, seed=0):
    """Smooth random RGB frames: closer to video than white noise, which exaggerates resampling differences."""
    rng = np.random.default_rng(seed)
    return np.stack([cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (7, 7), 2) for _ in range(n)])


@pytest.mark.parametrize("h,w", [(720, 1280), (240, 320), (300, 200), (224, 224), (16, 16), (100, 500)])
def test_fast_preprocessing_matches_clip_image_processor(encoder, h, w):
    frames = _natural_frames(3, h, w)
    fast = preprocess_frames(frames, encoder)
    reference = encoder.processor(images=list(frames), return_tensors="pt")["pixel_values"]
    encoder.preprocess = "processor"
    try:
        ours = preprocess_frames(frames, encoder)  # PIL resize and crop in the workers, normalised by the embedder
    finally:
        encoder.preprocess = "fast"
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)  # the same pixels, float rounding apart
    assert fast.shape == reference.shape == (3, 3, 224, 224) and fast.dtype == torch.float32
    diff = (fast - reference).abs()
    # stated tolerance: two uint8 steps after normalisation (2 / 255 / min std = 0.0304), mean far below one step
    assert diff.max().item() <= 0.031
    assert diff.mean().item() < 1e-3


@pytest.mark.parametrize("spec", [FrameSpec(224, 224, 224), FrameSpec(224, 224, 224, "processor"),
                                  FrameSpec(96, 96, 96, resample="bilinear", keep_aspect=False)])
def test_frames_resized_together_equal_frames_resized_alone(spec):
    # the decode workers resize a video's frames in one call (frames.FrameGroup): the same bytes as one by one
    for h, w in [(32, 32), (240, 320), (301, 17), (225, 223)]:
        frames = _natural_frames(3, h, w, seed=h)
        together = resize_crop(frames, spec)
        assert together.dtype == np.uint8 and together.flags.c_contiguous
        np.testing.assert_array_equal(together, np.stack([resize_crop(f, spec) for f in frames]))


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
@pytest.mark.parametrize("h,w", [(720, 1280), (300, 200), (16, 16)])
def test_fast_preprocessing_matches_the_siglip_image_processors(siglips, family, h, w):
    """SigLIP: straight to 96x96 (aspect not kept, no crop), bicubic; SigLIP 2: bilinear; mean and std 0.5."""
    enc = load_encoder(siglips[family], device="cpu")
    frames = _natural_frames(3, h, w)
    reference = enc.processor(images=list(frames), return_tensors="pt")["pixel_values"]
    spec = enc.frame_spec()
    assert (spec.crop_h, spec.crop_w, spec.keep_aspect) == (96, 96, False)
    assert spec.resample == {"siglip": "bicubic", "siglip2": "bilinear"}[family]
    fast = preprocess_frames(frames, enc)
    enc.preprocess = "processor"
    torch.testing.assert_close(preprocess_frames(frames, enc), reference, atol=1e-5, rtol=0)
    assert fast.shape == reference.shape == (3, 3, 96, 96)
    diff = (fast - reference).abs()
    assert diff.max().item() <= 2 / 255 / 0.5 + 1e-6 and diff.mean().item() < 2e-3  # two uint8 steps at std 0.5


def test_the_family_comes_from_the_config_not_the_name(siglips, tmp_path):
    from pipeline.decode.frames import FrameSpec
    named_clip = tmp_path / "clip-vit-base-patch32"
    shutil.copytree(siglips["siglip"], named_clip)
    enc = load_encoder(str(named_clip), device="cpu")
    d = enc.describe()
    assert (enc.family, d["encoder_family"], enc.dim) == ("siglip", "siglip", 32)
    assert '"height": 96' in d["preprocess_config"] and enc.fingerprint != load_encoder(
        siglips["siglip2"], device="cpu").fingerprint  # the resampling is part of the identity
    pixels = preprocess_frames(_natural_frames(5, 40, 60), enc)
    emb = embed_frames(pixels, enc, 4)
    assert emb.shape == (5, 32) and np.isfinite(emb).all()
    np.testing.assert_array_equal(embed_frames(pixels[1:], enc, 4), emb[1:])  # fixed batch shape, as CLIP
    assert FrameSpec.from_pixels(json.loads(d["preprocess_config"]), "fast") == enc.frame_spec()  # a cache's record
    for model_type, match in (("siglip2", "NaFlex"), ("bert", "CLIP or SigLIP")):
        other = tmp_path / model_type
        shutil.copytree(siglips["siglip"], other)
        _edit_json(other / "config.json", model_type=model_type)
        with pytest.raises(ConfigError, match=match):
            load_encoder(str(other), device="cpu")
    nearest = tmp_path / "nearest"
    shutil.copytree(siglips["siglip"], nearest)
    _edit_json(nearest / "preprocessor_config.json", resample=0)
    with pytest.raises(ConfigError, match="bicubic and bilinear"):
        load_encoder(str(nearest), device="cpu")


def test_siglip_through_onnxruntime_fp32_and_int8(siglips, onnx_dir):
    torch_enc = load_encoder(siglips["siglip2"], device="cpu", backend="torch")
    pixels = preprocess_frames(_natural_frames(6, 50, 70), torch_enc)
    reference = embed_frames(pixels, torch_enc, 8)
    fp32 = embed_frames(pixels, load_encoder(siglips["siglip2"], device="cpu", backend="onnxruntime"), 8)
    np.testing.assert_allclose(fp32, reference, atol=1e-4)
    int8 = embed_frames(pixels, load_encoder(siglips["siglip2"], device="cpu", backend="onnxruntime",
                                             quantize="int8"), 8)
    assert not np.array_equal(int8, reference) and centred_cosine(int8, reference, reference).min() > 0.9


def test_embeddings_do_not_depend_on_batch_composition(encoder):
    pixels = preprocess_frames(_natural_frames(21, 64, 80), encoder)
    together = embed_frames(pixels, encoder, batch_size=8)
    assert together.shape == (21, 32) and together.dtype == np.float32
    shifted = embed_frames(pixels[3:], encoder, batch_size=8)
    alone = embed_frames(pixels[20:], encoder, batch_size=8)
    np.testing.assert_array_equal(shifted, together[3:])
    np.testing.assert_array_equal(alone, together[20:])
    assert embed_frames(pixels[:0], encoder, batch_size=8).shape == (0, 32)


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable"])
def test_offline_hub_id_fails_at_once_with_the_next_command(monkeypatch, how):
    """No hub retries (huggingface_hub's take ~25 s): the hub is asked once, or not at all when HF_HUB_OFFLINE is
    set, and the error gives the commands to run next."""
    from huggingface_hub import constants
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what a machine without network ends up at
    else:  # a port nothing listens on: the connection is refused
        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ValueError, match=r"hub cannot be reached") as err:
        load_encoder("openai/clip-vit-base-patch32-not-cached", device="cpu")
    assert "python -m pipeline.embed.encoder --tiny models/tiny-clip" in str(err.value)
    assert "dvc exp run -S encoder.model=models/tiny-clip" in str(err.value)


def test_loading_or_building_a_clip_on_disk_shows_no_progress_bar_and_keeps_the_setting(tiny_clip, tmp_path, capfd):
    """Loading from a directory (or the local Hugging Face cache) takes well under a second: transformers' "Loading
    weights" and "Writing model shards" bars stay off (they filled dvc's output), and the setting is as it was."""
    from transformers.utils import logging as hf_logging
    hf_logging.enable_progress_bar()
    load_encoder(tiny_clip, device="cpu")
    build_tiny_clip(tmp_path / "clip")
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err and "%|" not in err, err
    assert hf_logging.is_progress_bar_enabled()


def test_missing_local_directory_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_encoder(str(tmp_path / "no-such-model"), device="cpu")


def test_bad_options_are_rejected(tiny_clip):
    with pytest.raises(ConfigError, match="preprocess"):
        load_encoder(tiny_clip, preprocess="magic")
    with pytest.raises(ConfigError, match="device"):
        load_encoder(tiny_clip, device="tpu")
    with pytest.raises(ConfigError, match="device"):
        EncoderConfig(tiny_clip, device="tpu").load()


def test_an_encoder_config_loads_its_encoder_and_batch_size(encoder, tiny_clip):
    loaded, batch_size = EncoderConfig(tiny_clip, device="cpu").load()  # backend auto: ONNX Runtime on the CPU
    assert batch_size == AUTO_BATCH_SIZE["cpu"]
    assert loaded.describe() == {**encoder.describe(), "backend": "onnxruntime"}
    assert EncoderConfig(tiny_clip, batch_size=3).load(device="cpu")[1] == 3
    assert EncoderConfig(tiny_clip, num_frames=6).load(device="cpu")[1] == 6  # auto: one pass per 6-frame video


def test_batch_size_auto_sizes_a_cpu_pass_to_one_video():
    """On the CPU a pass holds one video's frames (Embedder), so auto takes the fewest passes of at most 16 that
    hold a video, evenly sized; CUDA shares its passes across videos and keeps 256."""
    assert [auto_batch_size("cpu", f) for f in (1, 4, 16, 17, 24, 32, 40)] == [1, 4, 16, 9, 12, 16, 14]
    assert auto_batch_size("cuda", 4) == AUTO_BATCH_SIZE["cuda"] == 256


def test_both_commands_write_a_random_clip_that_loads(tmp_path, capsys):
    """`python -m pipeline.embed.encoder --tiny` (the README's) as a program; clip-har-tiny-clip and `python -m
    pipeline.embed.tiny_clip` are the function it hands over to (their --help runs as programs in test_project)."""
    out = subprocess.run([sys.executable, "-m", "pipeline.embed.encoder", "--tiny", str(tmp_path / "a")], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert tiny_clip_command(["--tiny", str(tmp_path / "b")]) == 0
    for name, printed in (("a", out), ("b", capsys.readouterr().out)):
        assert printed.startswith(f"random CLIP written to {tmp_path / name}")
        assert load_encoder(str(tmp_path / name), device="cpu").random_weights
    assert tiny_clip_command(["--tiny", str(tmp_path / "c"), "--family", "siglip2"]) == 0
    assert capsys.readouterr().out.startswith(f"random SigLIP 2 written to {tmp_path / 'c'}")
    siglip = load_encoder(str(tmp_path / "c"), device="cpu")
    assert siglip.random_weights and siglip.family == "siglip" and siglip.frame_spec().resample == "bilinear"


def centred_cosine(a, b, reference):
    """Per-row cosine of a and b (N, D) after subtracting reference's mean row: with random weights every image maps
    near one direction, and raw cosine would hide the error."""
    mean = reference.mean(0)
    a, b = a - mean, b - mean
    return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_onnxruntime_fp32_matches_torch_and_does_not_depend_on_the_batch(encoder, tiny_clip, onnx_dir):
    ort = load_encoder(tiny_clip, device="auto", backend="onnxruntime")
    d = ort.describe()
    assert (d["backend"], d["quantize"], d["device_type"]) == ("onnxruntime", "none", "cpu")
    assert encoder.describe()["backend"] == "torch" and ort.fingerprint == encoder.fingerprint and ort.model is None
    pixels = preprocess_frames(_natural_frames(21, 64, 80), encoder)
    together = embed_frames(pixels, ort, batch_size=8)
    np.testing.assert_array_equal(embed_frames(pixels[3:], ort, batch_size=8), together[3:])
    np.testing.assert_array_equal(embed_frames(pixels[20:], ort, batch_size=8), together[20:])
    reference = embed_frames(pixels, encoder, batch_size=8)
    np.testing.assert_allclose(together, reference, atol=1e-4)  # the same model, other kernels
    assert centred_cosine(together, reference, reference).min() > 0.9999
    exports = sorted(p.name for p in onnx_dir.rglob("*.onnx"))
    again = load_encoder(tiny_clip, device="cpu", backend="onnxruntime")  # reuses the export
    assert sorted(p.name for p in onnx_dir.rglob("*.onnx")) == exports and "vision-fp32.onnx" in exports
    np.testing.assert_array_equal(embed_frames(pixels, again, batch_size=8), together)


def test_int8_runs_through_onnxruntime_one_video_per_pass(encoder, tiny_clip, onnx_dir):
    int8 = load_encoder(tiny_clip, device="cpu", backend="onnxruntime", quantize="int8")
    assert int8.describe()["quantize"] == "int8" and int8.fingerprint == encoder.fingerprint
    frames = [np.stack([resize_crop(f, encoder.frame_spec()) for f in _natural_frames(n, 48, 64, seed=i)])
              for i, n in enumerate([3, 8, 5])]
    a, b = embed_frames(frames[1], encoder, 8), embed_frames(frames[1], int8, 8)
    # int8 really ran, near fp32 (the tiny random CLIP's 32 dimensions: 0.77 at worst on an AVX2 CPU; a saturating
    # recipe gave 0.61 there and the tiny SigLIP 0.005)
    assert not np.array_equal(a, b) and centred_cosine(a, b, a).min() > 0.7
    # dynamic int8 scales a pass by its whole batch, so the embedder never mixes videos in one pass
    embedder = Embedder(int8, batch_size=8)
    got = [row for key, f in enumerate(frames) for row in embedder.add(key, f)] + embedder.flush()
    assert [k for k, _ in got] == [0, 1, 2]
    for (key, emb) in got:
        np.testing.assert_array_equal(emb, embed_frames(frames[key], int8, 8))
    with pytest.raises(ValueError, match="int8 runs through ONNX Runtime"):
        load_encoder(tiny_clip, device="cpu", backend="torch", quantize="int8")
    with pytest.raises(ValueError, match="runs on the CPU"):
        load_encoder(tiny_clip, device="cuda", backend="onnxruntime")
    with pytest.raises(ValueError, match="backend"):
        load_encoder(tiny_clip, backend="tensorrt")
    with pytest.raises(ValueError, match="quantize"):
        load_encoder(tiny_clip, quantize="int4")


def test_backend_auto_is_onnxruntime_fp32_on_the_cpu_torch_elsewhere_and_keeps_a_torch_cache(tiny_clip):
    auto = load_encoder(tiny_clip, device="cpu")
    assert (auto.backend, auto.describe()["backend"], auto.model) == ("onnxruntime", "onnxruntime", None)
    assert load_encoder(tiny_clip, device="cpu", precision="bf16").backend == "torch"  # ONNX Runtime runs fp32
    assert load_encoder(tiny_clip, device="cpu", quantize="int8").backend == "onnxruntime"
    assert [auto_backend("cuda", p, "none") for p in ("fp16", "fp32")] == ["torch", "torch"]
    cfg = EncoderConfig(tiny_clip, device="cpu")
    torch_cache = {"backend": "torch", "encoder_model": tiny_clip, "device_type": "cpu", "quantize": "none",
                   "precision": "fp32"}
    assert cfg.extending(torch_cache).backend == "torch" and cfg.extending({}).backend == "auto"
    for other in ({"encoder_model": "another"}, {"precision": "bf16"}, {"backend": "onnxruntime"}):
        assert cfg.extending({**torch_cache, **other}).backend == "auto"
    assert EncoderConfig(tiny_clip, device="cpu", backend="onnxruntime").extending(torch_cache).backend == "onnxruntime"


def test_a_damaged_or_stale_export_is_made_again_never_used(tiny_clip, onnx_dir):
    from pipeline.embed import onnx_backend

    first = load_encoder(tiny_clip, device="cpu")
    path = onnx_backend.model_dir(first.fingerprint) / "vision-fp32.onnx"
    whole, pixels = path.read_bytes(), preprocess_frames(_natural_frames(3, 48, 64), first)
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 1  # the same size, one bit off
    path.write_bytes(bytes(flipped))
    assert not onnx_backend._verified(path, first.fingerprint)
    path.write_bytes(whole[:len(whole) // 2])  # truncated
    again = load_encoder(tiny_clip, device="cpu")  # exports it again rather than use it
    assert path.stat().st_size == len(whole) and onnx_backend._verified(path, first.fingerprint)
    np.testing.assert_array_equal(embed_frames(pixels, again, 3), embed_frames(pixels, first, 3))
    manifest = path.with_suffix(".json")
    text = manifest.read_text()
    manifest.write_text(text.replace('"format": 1', '"format": 0'))  # made by another version's exporter: stale
    assert not onnx_backend._verified(path, first.fingerprint)
    manifest.unlink()  # an export without its manifest (killed before it, or by an older version)
    assert not onnx_backend._verified(path, first.fingerprint)
    manifest.write_text(text)
    assert onnx_backend._verified(path, first.fingerprint) and not list(path.parent.glob("tmp-*"))


def test_an_export_that_fails_leaves_no_model_behind(encoder, tmp_path, monkeypatch):
    from pipeline.embed import onnx_backend

    def killed(model, args, path, **kw):
        Path(path).write_bytes(b"half a model")
        raise KeyboardInterrupt  # as a kill would, half-way through writing

    monkeypatch.setattr(torch.onnx, "export", killed)
    with pytest.raises(KeyboardInterrupt):
        onnx_backend.export_onnx(encoder.model, encoder.fingerprint, 224, root=tmp_path)
    assert list(tmp_path.rglob("*.onnx")) == []  # neither the model nor its temporary file


def test_tiny_clip_has_a_text_tower_and_a_tokenizer(tiny_clip):
    from transformers import AutoTokenizer, CLIPTextModelWithProjection
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip)
    text = CLIPTextModelWithProjection.from_pretrained(tiny_clip).eval()
    tokens = tokenizer(["a video of a person clapping", "walking"], padding=True, return_tensors="pt")
    assert tokenizer.decode(tokens["input_ids"][1], skip_special_tokens=True) == "walking"
    with torch.inference_mode():
        embeds = text(**tokens).text_embeds
    assert embeds.shape == (2, 32) and not torch.allclose(embeds[0], embeds[1])


def test_uint8_crops_normalised_by_the_embedder_equal_preprocessed_pixels(encoder):
    frames = _natural_frames(10, 120, 160)
    crops = np.stack([resize_crop(f, encoder.frame_spec()) for f in frames])  # what the decode workers send
    assert crops.dtype == np.uint8 and crops.shape == (10, 224, 224, 3)
    np.testing.assert_array_equal(embed_frames(crops, encoder, 8),
                                  embed_frames(preprocess_frames(frames, encoder), encoder, 8))


def test_the_embedder_batches_across_videos_and_splits_rows_back(encoder):
    lengths = [3, 8, 1, 13, 5]
    videos = [np.stack([resize_crop(f, encoder.frame_spec()) for f in _natural_frames(n, 48, 64, seed=i)])
              for i, n in enumerate(lengths)]
    embedder, got = Embedder(encoder, batch_size=8), []
    for key, frames in enumerate(videos):
        got += embedder.add(key, frames)
        assert sum(len(e) for _, e in got) <= sum(lengths[:key + 1])  # never hands back a video before it is done
    got += embedder.flush()
    assert [k for k, _ in got] == list(range(len(lengths)))  # every video, in order
    everything = embed_frames(np.concatenate(videos), encoder, 8)
    for (key, emb), start in zip(got, np.cumsum([0] + lengths[:-1])):
        np.testing.assert_array_equal(emb, everything[start:start + lengths[key]])  # exact, whatever the batch
    assert embedder.flush() == []


def test_precision_is_recorded_and_bf16_autocast_runs_on_the_cpu(tiny_clip):
    fp32 = load_encoder(tiny_clip, device="cpu")
    assert fp32.precision == "fp32" and fp32.describe()["precision"] == "fp32"  # auto on the CPU: fp32
    assert fp32.describe()["device_type"] == "cpu" and fp32.describe()["decoder"].startswith("pyav-")
    bf16 = load_encoder(tiny_clip, device="cpu", precision="bf16")
    assert bf16.describe()["precision"] == "bf16" and bf16.fingerprint == fp32.fingerprint  # same weights
    pixels = preprocess_frames(_natural_frames(8, 64, 80), fp32)
    a, b = embed_frames(pixels, fp32, 8), embed_frames(pixels, bf16, 8)
    assert not np.array_equal(a, b)  # bf16 arithmetic really ran
    assert (np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min() > 0.99
    with pytest.raises(ValueError, match="precision"):
        load_encoder(tiny_clip, device="cpu", precision="fp8")
    with pytest.raises(ValueError, match="int8"):
        load_encoder(tiny_clip, device="cpu", quantize="int8", precision="bf16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp32_matches_the_cpu_and_fp16_stays_within_cosine_0999(tiny_clip):
    cpu = load_encoder(tiny_clip, device="cpu")
    crops = np.stack([resize_crop(f, cpu.frame_spec()) for f in _natural_frames(40, 90, 120)])
    ref = embed_frames(crops, cpu, 16)
    fp32 = load_encoder(tiny_clip, device="cuda", precision="fp32")
    np.testing.assert_allclose(embed_frames(crops, fp32, 16), ref, atol=1e-4)
    fp16 = load_encoder(tiny_clip, device="cuda")  # auto on CUDA
    assert fp16.precision == "fp16" and fp16.describe()["device_type"] == "cuda"
    half = embed_frames(crops, fp16, 16)
    centred = half - ref.mean(0), ref - ref.mean(0)
    cos = np.sum(centred[0] * centred[1], 1) / np.linalg.norm(centred[0], axis=1) / np.linalg.norm(centred[1], axis=1)
    assert cos.min() > 0.999
    # fixed shapes on the GPU too: a video's rows do not depend on the batch it lands in
    np.testing.assert_array_equal(embed_frames(crops[5:], fp16, 16), half[5:])


def test_the_thread_policy_sets_torch_and_the_onnxruntime_session(tiny_clip, onnx_dir):
    from pipeline.threads import THREADS, cores, set_threads, torch_threads
    before = torch.get_num_threads()
    try:
        assert set_threads("stage_two") == THREADS["stage_two"] == torch.get_num_threads() == torch_threads() == 1
        ort = load_encoder(tiny_clip, device="cpu", backend="onnxruntime")
        assert ort.session.get_session_options().intra_op_num_threads == 1  # the session follows torch's count
        assert set_threads("extract") == torch.get_num_threads() == cores() == len(os.sched_getaffinity(0))
    finally:
        torch.set_num_threads(before)
