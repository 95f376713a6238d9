"""CPU bf16 recipes for the encoder against fp32: how close each lands (min centred cosine) and what share of the
FLOPs it leaves in bf16, on the full ViT-B/32 vision architecture with random weights.

    python bench/bf16.py [--images 64] [--recipes autocast mlp-only ...]

The project's rule (pipeline.embed.config.AUTO_MIN_COSINE): a precision `auto` may choose must keep every
embedding within centred cosine 0.999 of fp32. Plain bf16 autocast lands at 0.99875 in stage one (bench/README.md).
Each recipe runs torch's CPU autocast to bfloat16 and turns it off (fp32) inside some modules:

- autocast:        every linear layer and the attention in bf16 (what extract.precision: bf16 does today)
- fp32-attention:  the attention (q/k/v, softmax, output projection) in fp32; the MLPs in bf16
- fp32-ends:       the patch embedding, the first and last layer, the final LayerNorm and projection in fp32
- mlp-only:        only the MLPs' two linear layers in bf16 (fc1, fc2), everything else fp32
- mlp-fc1-only:    only each MLP's first linear layer in bf16
The FLOPs share is counted with torch's FlopCounterMode (matrix products and attention), per module.
Cosines are about numbers, not speed: a CPU without native bf16 (AVX512_BF16 / AMX) emulates it, so its time says
nothing about a CPU that has it; the speed-up a recipe can give is bounded by 1 / (fp32 share + bf16 share / r),
with r the native bf16 speed-up of the matrix products (3.4x for the encoder, issue 39).
"""
from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch
from encoders import build, centred_cosine, natural_pixels  # bench/ is on the path when run as a script

from pipeline.embed.encoder import load_encoder
from pipeline.embed.onnx_backend import vision_embeds
from pipeline.threads import set_threads

NATIVE_SPEEDUP = 3.4  # bf16 autocast over fp32 for the encoder on a CPU with native bf16 (issue 39, measured there)


def fp32_modules(model, recipe: str) -> list[torch.nn.Module]:
    """The modules a recipe runs in fp32 (autocast off inside them)."""
    vision = model.vision_model
    layers = list(vision.encoder.layers)
    if recipe == "autocast":
        return []
    if recipe == "fp32-attention":
        return [layer.self_attn for layer in layers]
    if recipe == "fp32-ends":
        ends = [vision.embeddings, layers[0], layers[-1], vision.post_layernorm]
        return ends + ([model.visual_projection] if hasattr(model, "visual_projection") else [])
    if recipe == "mlp-only":
        return [layer.self_attn for layer in layers] + [vision.embeddings, vision.post_layernorm] + (
            [model.visual_projection] if hasattr(model, "visual_projection") else [])
    if recipe == "mlp-fc1-only":
        return [layer.self_attn for layer in layers] + [layer.mlp.fc2 for layer in layers] + [
            vision.embeddings, vision.post_layernorm] + (
            [model.visual_projection] if hasattr(model, "visual_projection") else [])
    raise ValueError(recipe)


RECIPES = ("autocast", "fp32-attention", "fp32-ends", "mlp-only", "mlp-fc1-only")


@contextlib.contextmanager
def fp32_inside(modules: list[torch.nn.Module]):
    """Autocast off inside each module, its inputs cast back to fp32."""
    def pre(module, args):
        return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    def wrap(module):
        forward = module.forward

        def run(*args, **kwargs):
            with torch.autocast("cpu", enabled=False):
                args = pre(module, args)
                kwargs = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
                          for k, v in kwargs.items()}
                return forward(*args, **kwargs)
        module.forward = run
        return forward
    saved = [(m, wrap(m)) for m in modules]
    try:
        yield
    finally:
        for module, forward in saved:
            module.forward = forward


@torch.inference_mode()
def embed(model, pixels: torch.Tensor, recipe: str | None) -> np.ndarray:
    """Unit-length image embeddings (N, D) float32, in fp32 (recipe None) or under a bf16 recipe, batch 16."""
    out = []
    for start in range(0, len(pixels), 16):
        batch = pixels[start:start + 16]
        if recipe is None:
            e = vision_embeds(model, batch)
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16), fp32_inside(fp32_modules(model, recipe)):
                e = vision_embeds(model, batch)
        e = e.float()
        out.append((e / e.norm(dim=1, keepdim=True)).numpy())
    return np.concatenate(out)


def bf16_flop_share(model, recipe: str, size: int) -> float:
    """The share of one image's FLOPs that run in bf16 under the recipe."""
    from torch.utils.flop_counter import FlopCounterMode
    kept = fp32_modules(model, recipe)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        vision_embeds(model, torch.zeros(1, 3, size, size))
    total = counter.get_total_flops()
    per_module = counter.get_flop_counts()  # {module name: {op: flops}}
    names = {m: n for n, m in model.named_modules()}
    fp32 = sum(sum(per_module.get(_counter_name(model, names[m]), {}).values()) for m in kept)
    return 1 - fp32 / total


def _counter_name(model, name: str) -> str:
    """FlopCounterMode's key for a submodule: the model's class name, then the dotted path."""
    return f"{type(model).__name__}.{name}" if name else type(model).__name__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    args = parser.parse_args()
    set_threads("extract")
    encoder = load_encoder(str(build("b32")), "cpu", backend="torch")  # its model (auto: ONNX Runtime on the CPU)
    model = encoder.model
    pixels = natural_pixels(encoder, args.images)
    embed(model, pixels[:2], None)  # warm-up
    t = time.perf_counter()
    fp32 = embed(model, pixels, None)
    fp32_seconds = time.perf_counter() - t
    native = native_bf16()
    print(f"CLIP ViT-B/32 (random weights), {len(pixels)} smooth random images, centred cosine to fp32 "
          f"(rule: >= 0.999); torch's CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 "
          f"(/proc/cpuinfo): {', '.join(native) or 'none, emulated'}; fp32 {fp32_seconds:.2f} s")
    for recipe in args.recipes:
        embed(model, pixels[:2], recipe)  # warm-up, as fp32's
        t = time.perf_counter()
        out = embed(model, pixels, recipe)
        seconds = time.perf_counter() - t
        cos = centred_cosine(out, fp32, fp32)
        share = bf16_flop_share(model, recipe, model.config.image_size)
        bound = 1 / ((1 - share) + share / NATIVE_SPEEDUP)
        print(f"  {recipe:15s} min {cos.min():.5f}  median {np.median(cos):.5f}  bf16 share of FLOPs {share:.0%}"
              f"  speed-up bound at {NATIVE_SPEEDUP}x native: {bound:.2f}x  ({seconds:.2f} s here, "
              f"{fp32_seconds / seconds:.2f}x fp32{'' if native else ', emulated'})", flush=True)


def native_bf16() -> list[str]:
    """The CPU's native bf16 flags (Linux's /proc/cpuinfo, x86's names): avx512_bf16, amx_bf16; empty elsewhere (an
    ARM CPU's bf16 is not looked for: it would be called emulated)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return [flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags]


if __name__ == "__main__":
    main()
