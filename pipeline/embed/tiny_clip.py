"""A randomly initialised CLIP, SigLIP or SigLIP 2 saved to disk with its own tokenizer: the offline encoder of tests,
demos and benchmarks."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.embed.choices import RANDOM_WEIGHTS
from pipeline.embed.hub import no_progress_bars, quiet_default_text_configs

if TYPE_CHECKING:  # transformers costs seconds to import: imported where it is used
    from transformers import PreTrainedTokenizerBase

# What each family's builder writes: CLIP's processor (shortest edge 224, centre crop, bicubic, CLIP's mean/std);
# SigLIP's (224x224 straight, bicubic, mean/std 0.5); SigLIP 2's fixed-resolution one (as SigLIP, but bilinear),
# as google/siglip-base-patch16-224 and google/siglip2-base-patch16-224 ship them (both model_type "siglip").
TINY_FAMILIES = ("clip", "siglip", "siglip2")
_BILINEAR, _BICUBIC = 2, 3
TINY_SIGLIP_SIZE = 96  # the tiny SigLIPs' input: a resolution other than CLIP's 224 (and 36 patches: fast)


def build_tiny_clip(out_dir: str | os.PathLike, seed: int = 0, full_size: bool = False,
                    family: str = "clip") -> Path:
    """Save a randomly initialised model of `family` (TINY_FAMILIES; vision + text towers, processor config,
    tokenizer) to `out_dir`, and return it.

    Tiny by default (2 layers, 32-d embeddings: for tests and offline demos; the SigLIPs take 96x96 input);
    full_size=True gives the architecture of openai/clip-vit-base-patch32 or google/siglip(2)-base-patch16-224,
    with their speed, for benchmarks (the text tower's vocabulary is the small one made here). Either loads through
    the same `from_pretrained` path as the real model; the embeddings mean nothing (its config says so:
    RANDOM_WEIGHTS).
    """
    import torch

    if family not in TINY_FAMILIES:
        raise ValueError(f"family must be one of {TINY_FAMILIES}, got {family!r}")
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    quiet_default_text_configs()  # saving diffs the config against transformers' default SiglipTextConfig
    model, processor, tokenizer = (_clip if family == "clip" else _siglip)(full_size, family)
    with no_progress_bars():
        model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _clip(full_size: bool, family: str):
    """A random CLIPModel, its CLIPImageProcessorPil and a byte-level CLIP tokenizer."""
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
    processor = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    return CLIPModel(config), processor, tokenizer


def _siglip(full_size: bool, family: str):
    """A random SiglipModel (its learned logit scale and bias at their initial 1 and 0), its SiglipImageProcessorPil
    (SigLIP 2's resampling for family "siglip2") and a Gemma-style tokenizer made here."""
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    tokenizer = _gemma_style_tokenizer()
    mark = {RANDOM_WEIGHTS: True}
    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)
    if full_size:  # the defaults are base, patch 16, 224x224, 768-d
        size, config = 224, SiglipConfig(vision_config=mark, text_config={**ids, **mark})
    else:
        size, tiny = TINY_SIGLIP_SIZE, dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=2)
        config = SiglipConfig(vision_config={**tiny, "image_size": size, "patch_size": 16, **mark},
                              text_config={**tiny, **ids, "max_position_embeddings": 64, **mark})
    setattr(config, RANDOM_WEIGHTS, True)
    processor = SiglipImageProcessorPil(size={"height": size, "width": size},
                                        resample=_BILINEAR if family == "siglip2" else _BICUBIC)
    return SiglipModel(config), processor, tokenizer


def _byte_level_tokenizer(bos_id: int) -> PreTrainedTokenizerBase:
    """A CLIP tokenizer made here, with no download: the 256 byte symbols, each also as a word end, and no merges
    (so every character is a token), plus <|startoftext|> = bos_id and <|endoftext|> = bos_id + 1."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(symbols)} | {s + "</w>": 256 + i for i, s in enumerate(symbols)}
    vocab |= {"<|startoftext|>": bos_id, "<|endoftext|>": bos_id + 1}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _gemma_style_tokenizer() -> PreTrainedTokenizerBase:
    """A SigLIP 2 (Gemma) tokenizer made here, with no download: its five special tokens, the 256 byte-fallback
    tokens and the printable ASCII characters, no merges (every character is a token), 64 tokens long."""
    from transformers import Siglip2Tokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    symbols = specials + [f"<0x{b:02X}>" for b in range(256)] + ["▁"] + [chr(c) for c in range(33, 127)]
    return Siglip2Tokenizer(vocab={s: i for i, s in enumerate(symbols)}, merges=[], model_max_length=64)


if __name__ == "__main__":  # python -m pipeline.embed.tiny_clip: the command line lives in pipeline.tools.cli
    from pipeline.tools.cli import tiny_clip
    raise SystemExit(tiny_clip())
