"""Zero-shot's text side: seconds to embed C class names through each template preset with the full ViT-B/32
architecture (random weights), prompts batched as text_embeddings does (--per-class: and one forward pass per
class, the earlier way, for the ratio)."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from pipeline.embed.tiny_clip import build_tiny_clip
from pipeline.heads.zeroshot import PRESETS, class_prompts, text_embeddings, text_tower


def per_class(tower, names: list[str], templates: tuple[str, ...]) -> torch.Tensor:
    """The earlier way: one forward pass per class over its prompts (C, D)."""
    out = []
    for name in names:
        emb = tower.encode(class_prompts(name, templates)).mean(dim=0)
        out.append(emb / emb.norm())
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--classes", type=int, default=101, help="class names (UCF101 has 101)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--per-class", action="store_true", help="also time one forward pass per class")
    args = parser.parse_args()
    # CamelCase names of UCF101's shape, three words each ("ApplyEyeMakeup"): the prompts' lengths are what cost
    words = ("Apply", "Eye", "Makeup", "Playing", "Cello", "Jump", "Rope", "Horse", "Riding", "Wall", "Pushups")
    names = [f"{words[i % 11]}{words[(i // 11) % 11]}{words[(i // 121) % 11]}" for i in range(args.classes)]
    with tempfile.TemporaryDirectory() as tmp:
        model = str(build_tiny_clip(Path(tmp) / "b32", full_size=True))
        start = time.perf_counter()
        tower = text_tower(model)
        print(f"load the ViT-B/32 text tower (random weights): {time.perf_counter() - start:.1f} s, once per process")
        for r in range(args.rounds):  # A and B alternate, in one process
            for preset in ("simple", "kinetics", "ucf101"):
                templates = PRESETS[preset]
                start = time.perf_counter()
                batched = text_embeddings(model, names, templates).embeddings
                t_batched = time.perf_counter() - start
                looped = ""
                if args.per_class:
                    start = time.perf_counter()
                    single = per_class(tower, names, templates).numpy()
                    t_looped = time.perf_counter() - start
                    assert abs(batched - single).max() < 1e-4, abs(batched - single).max()
                    looped = f", one pass per class {t_looped:6.1f} s, ratio {t_looped / t_batched:.2f}"
                prompts = len(names) * len(templates)
                print(f"round {r + 1} {preset:8s} {len(templates):2d} templates x {len(names)} classes = {prompts:5d} "
                      f"prompts: batched {t_batched:6.1f} s ({prompts / t_batched:5.1f} prompts/s){looped}")


if __name__ == "__main__":
    main()
