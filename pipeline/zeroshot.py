"""Zero-shot heads from text: class names become prompts, encoded by the text tower of the same CLIP checkpoint."""
from __future__ import annotations

import numpy as np
import torch
from transformers import AutoTokenizer, CLIPTextModelWithProjection
from transformers.utils import logging as hf_logging

from pipeline.errors import ConfigError, HeadError
from pipeline.heads import ZeroShotHead
from pipeline.hub import load_pretrained

# Prompt templates, ensembled: each class's text embedding is the mean of its unit-length prompt embeddings.
TEMPLATES = ("a video of a person {}.", "a photo of a person {}.", "a person {}.", "someone {}.",
             "a video of someone {}.")


def class_prompts(class_name: str, templates: tuple[str, ...] = TEMPLATES) -> list[str]:
    """The prompts for one class: underscores become spaces ("walking_while_reading_book" -> "walking while ...")."""
    name = class_name.replace("_", " ").strip()
    return [t.format(name) for t in templates]


@torch.inference_mode()
def text_embeddings(model_id: str, class_names: list[str], templates: tuple[str, ...] = TEMPLATES) -> np.ndarray:
    """Unit-length text embedding of each class, float32 (C, D): the prompt ensemble through CLIP's text tower.

    ConfigError without a class name; HeadError when the checkpoint has no tokenizer or text tower, or cannot be
    loaded.
    """
    if not class_names:
        raise ConfigError("zero-shot needs at least one class name")
    try:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a full CLIP checkpoint loaded into the text tower lists the vision weights
        try:
            tokenizer, model = load_pretrained((AutoTokenizer, CLIPTextModelWithProjection), model_id)
            model.eval()
        finally:
            hf_logging.set_verbosity(verbosity)
    except (OSError, ValueError) as e:  # transformers' own: no such files, or not a CLIP text tower
        raise HeadError(f"cannot load the CLIP text tower and tokenizer of {model_id!r}: "
                         f"{str(e).splitlines()[0]}") from None
    out = []
    for name in class_names:
        tokens = tokenizer(class_prompts(name, templates), padding=True, truncation=True, return_tensors="pt")
        emb = model(**tokens).text_embeds  # (T, D)
        emb = emb / emb.norm(dim=1, keepdim=True)
        mean = emb.mean(dim=0)
        out.append((mean / mean.norm()).numpy())
    return np.stack(out).astype(np.float32)


def zeroshot_head(text_emb: np.ndarray, class_names: list[str], attrs: dict,
                  templates: tuple[str, ...] = TEMPLATES) -> ZeroShotHead:
    """A fitted ZeroShotHead scoring videos by cosine of their mean frame embedding to each class's text embedding
    float32 (C, D). attrs: the encoder and sampling it serves (a cache's attrs, or an encoder's describe() plus
    num_frames and sampling), recorded in its metadata like any head's."""
    return ZeroShotHead(templates).fit(text_emb, class_names, attrs)
