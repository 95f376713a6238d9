"""Zero-shot heads from text: class names become prompts, encoded by the text tower of the same CLIP or SigLIP
checkpoint, scored the family's way."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.errors import ConfigError, HeadError
from pipeline.heads.estimators import ZeroShotHead
from pipeline.embed.hub import load_pretrained, model_family
from pipeline.heads.training import LOGIT_SCALE

# Prompt templates, ensembled: each class's text embedding is the mean of its unit-length prompt embeddings.
TEMPLATES = ("a video of a person {}.", "a photo of a person {}.", "a person {}.", "someone {}.",
             "a video of someone {}.")


@dataclass
class ClassText:
    """Each class's text side: unit-length embeddings float32 (C, D), and the checkpoint's own scoring of a cosine
    (pipeline.heads.estimators.ZeroShotModule): scale * cos + bias, through a sigmoid for SigLIP. CLIP: its learned
    exp(logit_scale) (100 for the published checkpoints), no bias, softmax; SigLIP: its learned exp(logit_scale) and
    logit_bias."""

    embeddings: np.ndarray
    scale: float = LOGIT_SCALE
    bias: float = 0.0
    sigmoid: bool = False


def class_prompts(class_name: str, templates: tuple[str, ...] = TEMPLATES) -> list[str]:
    """The prompts for one class: underscores become spaces ("walking_while_reading_book" -> "walking while ...")."""
    name = class_name.replace("_", " ").strip()
    return [t.format(name) for t in templates]


@torch.inference_mode()
def text_embeddings(model_id: str, class_names: list[str], templates: tuple[str, ...] = TEMPLATES,
                    download: bool = True) -> ClassText:
    """Each class's text side (ClassText): the prompt ensemble through the checkpoint's text tower, with its
    tokenizer as the family trained it (CLIP: padded to the longest prompt; SigLIP: padding="max_length" to its
    text length), and its learned logit scale (and SigLIP's bias).

    ConfigError without a class name or for a checkpoint of another family; HeadError when the checkpoint has no
    tokenizer or text tower, or cannot be loaded.
    """
    if not class_names:
        raise ConfigError("zero-shot needs at least one class name")
    family = model_family(model_id, download)
    from transformers import AutoTokenizer, CLIPModel, SiglipModel
    from transformers.utils import logging as hf_logging

    try:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            tokenizer, model = load_pretrained((AutoTokenizer, CLIPModel if family == "clip" else SiglipModel),
                                               model_id, download)
            model.eval()
        finally:
            hf_logging.set_verbosity(verbosity)
    except ConfigError:  # load_pretrained's own: the model not on disk and the hub off, with the next step
        raise
    except (OSError, ValueError) as e:  # transformers' own: no such files, or not a full checkpoint of the family
        raise HeadError(f"cannot load the {family} text tower and tokenizer of {model_id!r}: "
                         f"{str(e).splitlines()[0]}") from None
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):  # transformers makes an empty one when files are missing
        raise HeadError(f"{model_id!r} has no tokenizer (only special tokens): zero-shot needs the checkpoint's own "
                        "tokenizer files beside its weights")
    padding = dict(padding=True) if family == "clip" else dict(
        padding="max_length", max_length=model.config.text_config.max_position_embeddings)
    out = []
    for name in class_names:
        tokens = tokenizer(class_prompts(name, templates), truncation=True, return_tensors="pt", **padding)
        pooled = model.text_model(**tokens).pooler_output  # (T, hidden); SigLIP's includes its head
        emb = model.text_projection(pooled) if family == "clip" else pooled  # (T, D)
        emb = emb / emb.norm(dim=1, keepdim=True)
        mean = emb.mean(dim=0)
        out.append((mean / mean.norm()).numpy())
    bias = float(model.logit_bias) if family == "siglip" else 0.0
    return ClassText(np.stack(out).astype(np.float32), float(model.logit_scale.exp()), bias, family == "siglip")


def zeroshot_head(text: ClassText | np.ndarray, class_names: list[str], attrs: dict,
                  templates: tuple[str, ...] = TEMPLATES) -> ZeroShotHead:
    """A fitted ZeroShotHead scoring videos by the cosine of their mean frame embedding to each class's text
    embedding, the family's way (ClassText; a bare float32 (C, D) array: CLIP's softmax at scale LOGIT_SCALE).
    attrs: the encoder and sampling it serves (a cache's attrs, or an encoder's describe() plus num_frames and
    sampling), recorded in its metadata like any head's."""
    text = text if isinstance(text, ClassText) else ClassText(np.asarray(text, np.float32))
    return ZeroShotHead(templates).fit(text.embeddings, class_names, attrs, text.scale, text.bias, text.sigmoid)
