"""Load the CLIP vision tower with its own preprocessing config, and turn RGB frames into image embeddings."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer, CLIPVisionModelWithProjection
from transformers.utils import logging as hf_logging

PREPROCESS_BACKENDS = ("fast", "processor")
QUANTIZE = ("none", "int8")
_PIL_BICUBIC = 3


@dataclass
class Encoder:
    """A loaded CLIP vision tower with projection, ready for `preprocess_frames` and `embed_frames`.

    `preprocess` names the backend ("fast": batched torch resize; "processor": CLIPImageProcessor itself);
    `fingerprint` hashes the weights, model config and processor config, so caches and heads can tell encoders apart;
    `quantize` is "int8" when the Linear layers run as dynamically quantised int8 (CPU), else "none".
    """

    model: CLIPVisionModelWithProjection
    processor: CLIPImageProcessorPil
    model_id: str
    fingerprint: str
    dim: int
    device: torch.device
    preprocess: str
    quantize: str = "none"

    def describe(self) -> dict:
        """What a cache or head records about the encoder and its preprocessing (JSON-serialisable)."""
        return {
            "encoder_model": self.model_id,
            "encoder_fingerprint": self.fingerprint,
            "embedding_dim": self.dim,
            "preprocess": self.preprocess,
            "preprocess_config": json.dumps(self.processor.to_dict(), sort_keys=True, default=str),
            "quantize": self.quantize,
        }


def load_encoder(model_id: str, device: str = "auto", preprocess: str = "fast", quantize: str = "none") -> Encoder:
    """Load CLIP from a hub id or a local directory through `from_pretrained`; ValueError saying how to fix it if not.

    quantize="int8" runs the Linear layers as dynamically quantised int8 (CPU only): faster on CPUs without fast
    fp32 matrix units, embeddings slightly different (bench/README.md gives the cosine to fp32).
    """
    if preprocess not in PREPROCESS_BACKENDS:
        raise ValueError(f"preprocess must be one of {PREPROCESS_BACKENDS}, got {preprocess!r}")
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available")
    looks_local = model_id.startswith((".", "/", "~")) or os.path.exists(model_id)
    if looks_local and not Path(model_id).expanduser().is_dir():
        raise ValueError(f"encoder model directory {model_id!r} does not exist")
    try:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # loading a full CLIP checkpoint into the vision tower lists the text weights
        try:
            model = CLIPVisionModelWithProjection.from_pretrained(model_id)
            processor = CLIPImageProcessorPil.from_pretrained(model_id)
        finally:
            hf_logging.set_verbosity(verbosity)
    except OSError as e:
        raise ValueError(
            f"cannot load the CLIP encoder {model_id!r} (no network and not in the local Hugging Face cache?): "
            "set encoder.model in params.yaml to a local directory holding the model saved with save_pretrained, "
            "or build a tiny random one for offline demos with `python -m pipeline.encoder --tiny models/tiny-clip`"
            f" [{str(e).splitlines()[0]}]"
        ) from None
    dev = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    if quantize == "int8" and dev.type != "cpu":
        raise ValueError("int8 quantisation runs on the CPU only: set extract.device to cpu or quantize to none")
    model = model.to(dev).eval()
    fingerprint = _fingerprint(model, processor)  # of the fp32 weights; `quantize` is recorded beside it
    if quantize == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch deprecates the quantised tensor API it still runs on
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return Encoder(model, processor, model_id, fingerprint, model.config.projection_dim, dev, preprocess, quantize)


def preprocess_frames(frames: np.ndarray, encoder: Encoder) -> torch.Tensor:
    """RGB uint8 frames (N, H, W, 3) of one size -> float32 pixel values (N, 3, S, S) as the processor config says.

    Both backends: shortest side resized to size["shortest_edge"] (aspect ratio kept), centre crop, rescale,
    normalise. "fast" does it batched in torch (bicubic with antialias on uint8, as PIL does); it matches
    CLIPImageProcessor within two uint8 steps (max abs 0.031 normalised, mean abs < 1e-3; tests/test_encoder.py).
    """
    p = encoder.processor
    if encoder.preprocess == "processor":
        return p(images=list(frames), return_tensors="pt")["pixel_values"]
    assert p.do_resize and p.do_center_crop and p.do_rescale and p.do_normalize, "unsupported processor config"
    if int(p.resample) != _PIL_BICUBIC:
        raise ValueError(f"fast preprocessing implements bicubic resampling only, the processor asks for {p.resample}")
    n, h, w, _ = frames.shape
    short = p.size["shortest_edge"]
    # transformers' get_resize_output_image_size: the long side is int(short * long / short_side)
    new_h, new_w = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
    x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
    ch, cw = p.crop_size["height"], p.crop_size["width"]
    top, left = (new_h - ch) // 2, (new_w - cw) // 2
    x = x[:, :, top:top + ch, left:left + cw].float() * p.rescale_factor
    mean = torch.tensor(p.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(p.image_std).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.inference_mode()
def embed_frames(pixels: torch.Tensor, encoder: Encoder, batch_size: int) -> np.ndarray:
    """float32 pixel values (N, 3, S, S) -> float32 image embeddings (N, dim), in batches of exactly batch_size.

    The last batch is padded to batch_size: on CPU a matrix multiply of another shape may round differently, and
    a video must get the same embeddings whichever batch it lands in (a resumed run equals an uninterrupted one).
    """
    out = []
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start:start + batch_size]
        real = len(batch)
        if real < batch_size:
            batch = torch.cat([batch, batch.new_zeros((batch_size - real, *batch.shape[1:]))])
        batch = batch.to(encoder.device, non_blocking=True)
        out.append(encoder.model(pixel_values=batch).image_embeds[:real].float().cpu().numpy())
    if not out:
        return np.zeros((0, encoder.dim), np.float32)
    return np.concatenate(out)


def build_random_clip(directory: str | os.PathLike, seed: int = 0, full_size: bool = False) -> Path:
    """Save a randomly initialised CLIP (vision + text towers, projections, processor config, tokenizer) to `directory`.

    Tiny by default (2 layers, 32-d embeddings: for tests and offline demos); full_size=True gives the
    ViT-B/32 architecture of openai/clip-vit-base-patch32, with its speed, for benchmarks. Either loads through
    the same `from_pretrained` path as the real model; the embeddings mean nothing.
    """
    tokenizer = _byte_level_tokenizer(bos_id=49406 if full_size else 512)
    if full_size:
        config = CLIPConfig()  # the defaults are ViT-B/32 with a 512-d projection, special tokens 49406/49407
    else:
        dim = 32  # the vision and text configs must carry the same projection_dim, or the vision tower fails to load
        config = CLIPConfig(
            projection_dim=dim,
            vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                               image_size=224, patch_size=32, projection_dim=dim),
            text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                             vocab_size=len(tokenizer), max_position_embeddings=77, projection_dim=dim,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id),
        )
    torch.manual_seed(seed)
    directory = Path(directory)
    CLIPModel(config).save_pretrained(directory)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    processor.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _byte_level_tokenizer(bos_id: int) -> CLIPTokenizer:
    """A CLIP tokenizer made here, with no download: the 256 byte symbols, each also as a word end, and no merges
    (so every character is a token), plus <|startoftext|> = bos_id and <|endoftext|> = bos_id + 1."""
    from tokenizers import pre_tokenizers

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(symbols)} | {s + "</w>": 256 + i for i, s in enumerate(symbols)}
    vocab |= {"<|startoftext|>": bos_id, "<|endoftext|>": bos_id + 1}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _fingerprint(model: torch.nn.Module, processor: CLIPImageProcessorPil) -> str:
    """First 16 hex digits of SHA-256 over the model config, processor config and every weight's bytes."""
    h = hashlib.sha256()
    h.update(model.config.to_json_string(use_diff=False).encode())
    h.update(json.dumps(processor.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().data)
    return h.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a randomly initialised CLIP (no download needed).")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--tiny", metavar="DIR", help="a tiny one, for tests and offline demos")
    group.add_argument("--vit-b-32", metavar="DIR", help="the full ViT-B/32 architecture, for benchmarks")
    args = parser.parse_args()
    path = build_random_clip(args.tiny or args.vit_b_32, full_size=args.vit_b_32 is not None)
    print(f"random CLIP written to {path} (its embeddings mean nothing: tests, demos and benchmarks only)")


if __name__ == "__main__":
    main()
