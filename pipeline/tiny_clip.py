"""A randomly initialised CLIP saved to disk with its own tokenizer: the offline encoder of tests, demos, benchmarks."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.cache import RANDOM_WEIGHTS
from pipeline.hub import no_progress_bars

if TYPE_CHECKING:  # transformers costs seconds to import: imported where it is used
    from transformers import CLIPTokenizer


def build_tiny_clip(out_dir: str | os.PathLike, seed: int = 0, full_size: bool = False) -> Path:
    """Save a randomly initialised CLIP (vision + text towers, projections, processor config, tokenizer) to
    `out_dir`, and return it.

    Tiny by default (2 layers, 32-d embeddings: for tests and offline demos); full_size=True gives the
    ViT-B/32 architecture of openai/clip-vit-base-patch32, with its speed, for benchmarks. Either loads through
    the same `from_pretrained` path as the real model; the embeddings mean nothing (its config says so:
    RANDOM_WEIGHTS).
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    tokenizer = _byte_level_tokenizer(bos_id=49406 if full_size else 512)
    mark = {RANDOM_WEIGHTS: True}
    if full_size:  # the defaults are ViT-B/32 with a 512-d projection, special tokens 49406/49407
        config = CLIPConfig(vision_config=mark, text_config=mark)
    else:
        dim = 32  # the vision and text configs must carry the same projection_dim, or the vision tower fails to load
        config = CLIPConfig(
            projection_dim=dim,
            vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                               image_size=224, patch_size=32, projection_dim=dim, **mark),
            text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                             vocab_size=len(tokenizer), max_position_embeddings=77, projection_dim=dim,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, **mark),
        )
    setattr(config, RANDOM_WEIGHTS, True)
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    with no_progress_bars():
        CLIPModel(config).save_pretrained(out_dir)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    processor.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _byte_level_tokenizer(bos_id: int) -> CLIPTokenizer:
    """A CLIP tokenizer made here, with no download: the 256 byte symbols, each also as a word end, and no merges
    (so every character is a token), plus <|startoftext|> = bos_id and <|endoftext|> = bos_id + 1."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(symbols)} | {s + "</w>": 256 + i for i, s in enumerate(symbols)}
    vocab |= {"<|startoftext|>": bos_id, "<|endoftext|>": bos_id + 1}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


if __name__ == "__main__":  # python -m pipeline.tiny_clip: the command line lives in pipeline.cli
    from pipeline.cli import tiny_clip
    raise SystemExit(tiny_clip())
