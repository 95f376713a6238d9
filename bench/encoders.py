"""The encoder families side by side on the CPU: images/s at batch 16 per backend, FLOPs per image, the fraction of
the fp32 matrix-product ceiling, and how far bf16 and int8 land from fp32; optionally stage one end to end in fp32
against bf16.

    python bench/encoders.py                                   # every model, every backend, 3 rounds
    python bench/encoders.py --models b32 siglip --rounds 1    # a loaded machine: fewer
    python bench/encoders.py --stage-one [--videos 10]         # + stage one, ViT-B/32 fp32 against bf16

Models: the full vision architectures with random weights (their speed; real weights cannot be downloaded here),
saved once under bench/out/encoders/ as vision towers with their families' image processors: CLIP ViT-B/32, B/16,
L/14 (openai/clip-vit-*), SigLIP base 224 (google/siglip-base-patch16-224) and SigLIP 2 base 224
(google/siglip2-base-patch16-224: the same vision architecture as SigLIP's, bilinear resampling). Backends: torch
fp32, torch bf16 (autocast), ONNX Runtime fp32 and int8, each through pipeline.embed.encoder.embed_frames, alternating
within every round. The ceiling is bench/stage_one.py's (--backends-only): the machine's best fp32 matrix product
(torch or ONNX Runtime), divided by each model's FLOPs per image (torch's FlopCounterMode).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
from stage_one import FRAMES, dataset  # noqa: E402  (run as a script: bench/ is on sys.path)
from stage_one_backends import fp32_ceiling  # noqa: E402

from pipeline.extract.cache import RANDOM_WEIGHTS, read_cache  # noqa: E402
from pipeline.embed.encoder import embed_frames, load_encoder, preprocess_frames  # noqa: E402
from pipeline.extract.runner import ExtractConfig, extract_features  # noqa: E402
from pipeline.threads import set_threads  # noqa: E402

OUT = ROOT / "bench" / "out" / "encoders"
BATCH = 16
# name -> (family, vision config): the published checkpoints' vision towers
MODELS = {
    "b32": ("clip", dict(patch_size=32, projection_dim=512)),
    "b16": ("clip", dict(patch_size=16, projection_dim=512)),
    "l14": ("clip", dict(patch_size=14, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                         num_attention_heads=16, projection_dim=768)),
    "siglip": ("siglip", {}),
    "siglip2": ("siglip2", {}),
}
LABELS = {"b32": "CLIP ViT-B/32", "b16": "CLIP ViT-B/16", "l14": "CLIP ViT-L/14", "siglip": "SigLIP base 224",
          "siglip2": "SigLIP 2 base 224"}
# name -> load_encoder options (the backend always named: auto is ONNX Runtime on the CPU)
BACKENDS = {"torch fp32": {"backend": "torch"}, "torch bf16": {"precision": "bf16", "backend": "torch"},
            "ORT fp32": {"backend": "onnxruntime"}, "ORT int8": {"backend": "onnxruntime", "quantize": "int8"}}


def build(name: str) -> Path:
    """The model's folder: a random vision tower and its family's image processor, written once."""
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModelWithProjection,
                              SiglipImageProcessorPil, SiglipVisionConfig, SiglipVisionModel)
    folder = OUT / name
    if (folder / "config.json").is_file():
        return folder
    family, vision = MODELS[name]
    torch.manual_seed(0)
    if family == "clip":
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision, **{RANDOM_WEIGHTS: True}))
        processor = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    else:
        model = SiglipVisionModel(SiglipVisionConfig(**vision, **{RANDOM_WEIGHTS: True}))
        processor = SiglipImageProcessorPil(size={"height": 224, "width": 224},
                                            resample=2 if family == "siglip2" else 3)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def flops_per_image(encoder) -> float:
    """FLOPs of one image through the vision tower (torch's FlopCounterMode: matrix products and attention)."""
    from torch.utils.flop_counter import FlopCounterMode
    from pipeline.embed.onnx_backend import vision_embeds
    size = encoder.model.config.image_size
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        vision_embeds(encoder.model, torch.zeros(1, 3, size, size))
    return counter.get_total_flops()


def natural_pixels(encoder, n: int = 2 * BATCH) -> torch.Tensor:
    """Pixel values (n, 3, S, S) of smooth random images, through the encoder's own preprocessing."""
    rng = np.random.default_rng(0)
    frames = np.stack([cv2.GaussianBlur(rng.integers(0, 256, (360, 640, 3), dtype=np.uint8), (9, 9), 3)
                       for _ in range(n)])
    return preprocess_frames(frames, encoder)


def centred_cosine(a: np.ndarray, b: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-row cosine of a and b (N, D) after subtracting reference's mean row (random weights map every image
    near one direction: raw cosine would hide the error)."""
    mean = reference.mean(0)
    a, b = a - mean, b - mean
    return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def compare(name: str, backends: list[str], rounds: int, ceiling_gflops: float) -> dict:
    """Images/s at batch 16 per backend (alternating within each round), FLOPs, ceiling fraction, closeness."""
    folder = build(name)
    encoders = {b: load_encoder(str(folder), "cpu", **BACKENDS[b]) for b in backends}
    reference = encoders.get("torch fp32") or load_encoder(str(folder), "cpu", backend="torch")
    pixels = natural_pixels(reference)
    flops = flops_per_image(reference)
    fp32 = embed_frames(pixels, reference, BATCH)
    close = {b: float(centred_cosine(embed_frames(pixels, e, BATCH), fp32, fp32).min()) for b, e in encoders.items()
             if b != "torch fp32"}  # (also the warm-up of every backend)
    rates = {b: [] for b in backends}
    for _ in range(rounds):
        for b, enc in encoders.items():
            t = time.perf_counter()
            embed_frames(pixels, enc, BATCH)
            rates[b].append(len(pixels) / (time.perf_counter() - t))
    ceiling = ceiling_gflops * 1e9 / flops
    print(f"{LABELS[name]}: {flops / 1e9:.2f} GFLOP per image, dim {reference.dim}, input "
          f"{reference.model.config.image_size}; fp32 ceiling {ceiling:.1f} images/s", flush=True)
    for b in backends:
        rate = statistics.median(rates[b])
        extra = f", min centred cosine to fp32 {close[b]:.5f}" if b in close else ""
        print(f"   {b:11s} {rate:6.2f} images/s ({rate / ceiling:.0%} of the fp32 ceiling{extra})", flush=True)
    return {"flops": flops, "rates": rates, "closeness": close, "ceiling": ceiling}


def stage_one_precisions(rounds: int, videos: int) -> None:
    """Stage one end to end on the first `videos` of bench/stage_one.py's clips (720p first), ViT-B/32, fp32 against
    bf16 alternating; and the centred cosine between the two caches' embeddings."""
    files = dataset()[:videos]
    root = OUT / "stage_one_data"
    for f in files:
        (root / f.parent.name).mkdir(parents=True, exist_ok=True)
        if not (root / f.parent.name / f.name).exists():
            (root / f.parent.name / f.name).symlink_to(f)
    model = build("b32")
    seconds = {"fp32": [], "bf16": []}
    for _ in range(rounds):
        for precision in seconds:
            cache = OUT / f"stage_one_{precision}" / "features.h5"
            for p in cache.parent.glob("*"):
                p.unlink() if p.is_file() else None
            cfg = ExtractConfig(root=str(root), cache_path=str(cache), model=str(model), num_frames=FRAMES,
                                batch_size=BATCH, device="cpu", precision=precision)
            t = time.perf_counter()
            summary = extract_features(cfg, progress=False)
            seconds[precision].append(time.perf_counter() - t)
            assert summary.encoded == len(files), summary
    a, b = (np.asarray(read_cache(OUT / f"stage_one_{p}" / "features.h5").embeddings[:]).reshape(-1, 512)
            for p in ("fp32", "bf16"))
    cos = centred_cosine(b, a, a)
    fp32, bf16 = statistics.median(seconds["fp32"]), statistics.median(seconds["bf16"])
    print(f"stage one, {len(files)} videos x {FRAMES} frames, ViT-B/32: fp32 {fp32:.1f} s, bf16 {bf16:.1f} s "
          f"({fp32 / bf16:.2f}x); bf16 against fp32, centred cosine min {cos.min():.5f}, median {np.median(cos):.5f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", choices=list(MODELS), default=list(MODELS),
                        help="the models compared (none: only --stage-one)")
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=list(BACKENDS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stage-one", action="store_true", help="also stage one end to end, fp32 against bf16")
    parser.add_argument("--videos", type=int, default=10, help="stage one on this many of the clips (default all)")
    args = parser.parse_args()
    threads = set_threads("extract")
    ceiling = fp32_ceiling(build("b32"))
    best = max(ceiling["gemm_gflops"].values())
    print(f"{threads} threads; best fp32 matrix product {best:.0f} GFLOP/s (torch "
          f"{ceiling['gemm_gflops']['torch']:.0f}, ORT {ceiling['gemm_gflops']['ORT']:.0f}); batch {BATCH}, "
          f"{args.rounds} rounds, medians", flush=True)
    for name in args.models:
        compare(name, args.backends, args.rounds, best)
    if args.stage_one:
        stage_one_precisions(args.rounds, args.videos)


if __name__ == "__main__":
    main()
