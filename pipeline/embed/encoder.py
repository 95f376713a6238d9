"""Load a CLIP or SigLIP vision tower with its own preprocessing config, and turn RGB frames into image embeddings."""
from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from safetensors import SafetensorError

from pipeline.embed.choices import RANDOM_WEIGHTS
# The settings and their auto rules live in pipeline.embed.config (importable without torch); those callers have
# always imported from here are named here too.
from pipeline.embed.config import (AUTO_BATCH_SIZE, AUTO_PRECISION, PRECISIONS, auto_backend,  # noqa: F401
                                   auto_batch_size, check_settings, resolved)
from pipeline.embed.devices import device_type
from pipeline.errors import ConfigError, printable
from pipeline.embed.hub import OFFLINE_NEXT_STEP, load_pretrained, model_family
from pipeline.embed.onnx_backend import export_onnx, ort_session, run_session, vision_embeds
from pipeline.decode.frames import FrameSpec, resize_crop
from pipeline.decode.sampling import Sampling
from pipeline.decode.video import DECODER

if TYPE_CHECKING:  # torch and transformers are imported where they are used: they cost seconds to import, and a
    # process that only decodes (the decode workers re-run their main module) or decides where the encoder runs (stage
    # one's, on the CPU) never needs them
    import torch
    from transformers import BaseImageProcessor, PreTrainedModel


@dataclass
class Encoder:
    """A loaded CLIP vision tower with projection, ready for `preprocess_frames` and `embed_frames`.

    `preprocess` names the backend ("fast": batched torch resize; "processor": CLIPImageProcessor itself);
    `fingerprint` hashes the weights and the config fields that change the arithmetic or the pixels (not library
    metadata), so caches and heads can tell encoders apart;
    `backend` runs the forward pass: "torch" (`model`) or "onnxruntime" (`session`, an exported copy of the model;
    `model` is then None: the session holds the weights);
    `quantize` is "int8" when the session's MatMuls run as dynamically quantised int8, else "none";
    `precision` the arithmetic of the forward pass (fp32, or fp16 / bf16 under autocast);
    `family` "clip" or "siglip" (pipeline.embed.hub.FAMILIES, from the checkpoint's config): which tower, processor and
    text side.
    """

    model: PreTrainedModel | None  # CLIPVisionModelWithProjection or SiglipVisionModel
    processor: BaseImageProcessor  # CLIPImageProcessorPil or SiglipImageProcessorPil
    model_id: str
    fingerprint: str
    dim: int
    device: torch.device
    preprocess: str
    quantize: str = "none"
    precision: str = "fp32"
    backend: str = "torch"
    session: object | None = None  # onnxruntime.InferenceSession with the onnxruntime backend
    random_weights: bool = False  # a random CLIP built by pipeline.embed.tiny_clip (its config says so)
    family: str = "clip"

    def describe(self) -> dict:
        """What a cache or head records about the encoder and its preprocessing (JSON-serialisable)."""
        return {
            "encoder_model": self.model_id,
            "encoder_family": self.family,  # recorded; the fingerprint and preprocess_config already tell them apart
            "encoder_fingerprint": self.fingerprint,
            "embedding_dim": self.dim,
            "preprocess": self.preprocess,
            "preprocess_config": pixel_config(self.processor),
            "backend": self.backend,
            "quantize": self.quantize,
            "precision": self.precision,
            "device_type": self.device.type,
            "decoder": DECODER,  # the frames it is given come from this decoder (pipeline.decode.video)
            RANDOM_WEIGHTS: self.random_weights,
        }

    def frame_spec(self) -> FrameSpec:
        """The encoder's input as the decode workers make it: resize (and crop) from the processor config."""
        return FrameSpec.from_pixels(self.processor.to_dict(), self.preprocess)


@dataclass(frozen=True)
class EncoderConfig:
    """Which encoder, and how it runs (params.yaml: encoder.model, extract.device, precision, preprocess, backend,
    quantize, batch_size; num_frames: frames per video, extract.num_frames). load() gives the encoder and its batch
    size (frames per forward pass); batch_size auto: auto_batch_size for the device it lands on."""

    model: str
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # fp32 | fp16 | bf16 | auto (AUTO_PRECISION for the device)
    preprocess: str = "fast"  # fast | processor (PREPROCESS_BACKENDS)
    backend: str = "auto"  # auto (auto_backend) | torch | onnxruntime (CPU only: pipeline.embed.onnx_backend)
    quantize: str = "none"  # none | int8 (onnxruntime only)
    batch_size: int | str = "auto"
    num_frames: int = Sampling.num_frames

    def device_type(self) -> str:
        """The type of the device load() puts the encoder on: "cuda" or "cpu" (auto: CUDA where torch has it, unless
        the backend runs on the CPU only)."""
        return device_type(self.device, self.backend)

    def extending(self, previous: dict) -> EncoderConfig:
        """These settings for a run that extends a cache whose attributes are `previous` ({} where there is none):
        backend auto keeps torch where that cache was made with torch on this kind of device, with this model,
        quantisation and precision. Its rows then stay as they are (ONNX Runtime's differ from torch's by about
        1e-6, and the backend is in the cache key: docs/engines.md); a new cache gets auto_backend's choice."""
        precision = AUTO_PRECISION.get(self.device_type(), "fp32") if self.precision == "auto" else self.precision
        same = (previous.get("backend") == "torch" and previous.get("encoder_model") == self.model
                and previous.get("device_type") == self.device_type() and previous.get("quantize") == self.quantize
                and previous.get("precision") == precision)
        return replace(self, backend="torch") if self.backend == "auto" and same else self

    def load(self, device: str | None = None) -> tuple[Encoder, int]:
        """The encoder (on `device`, default self.device) and its batch size; ConfigError for a batch size that is
        neither auto nor a positive whole number."""
        self.check_batch_size()
        encoder = load_encoder(self.model, device or self.device, self.preprocess, self.quantize, self.precision,
                               self.backend)
        return encoder, self.batch_for(encoder.device.type)

    def check_batch_size(self) -> None:
        """ConfigError for a batch size that is neither auto nor a positive whole number."""
        if self.batch_size != "auto" and not (type(self.batch_size) is int and self.batch_size > 0):
            raise ConfigError(f"extract.batch_size must be auto or a positive whole number, got {self.batch_size!r}")

    def batch_for(self, device_type: str) -> int:
        """Frames per forward pass on `device_type`: batch_size, or auto_batch_size for it."""
        return auto_batch_size(device_type, self.num_frames) if self.batch_size == "auto" else self.batch_size


def load_encoder(model_id: str, device: str = EncoderConfig.device, preprocess: str = EncoderConfig.preprocess,
                 quantize: str = EncoderConfig.quantize, precision: str = EncoderConfig.precision,
                 backend: str = EncoderConfig.backend, download: bool = True) -> Encoder:
    """Load a CLIP or SigLIP vision tower (the family from the checkpoint's config: model_family) from a hub id or
    a local directory through `from_pretrained`; ConfigError saying how to fix it.

    backend="auto" is auto_backend's choice for the device and precision (Encoder.backend says which);
    backend="onnxruntime" (CPU only) runs an ONNX export of the loaded model, made once per encoder fingerprint
    (pipeline.embed.onnx_backend), with as many threads as torch has (pipeline.threads sets them);
    quantize="int8" (onnxruntime only) runs its MatMuls as dynamically quantised int8: faster, embeddings
    measurably different (bench/README.md gives the error, which only real weights can tell truly).
    precision: fp32 | fp16 | bf16 (autocast) | auto (AUTO_PRECISION for the device).
    download: whether the hub may be asked (hub.may_download: False for a model id read from an artifact).
    """
    backend = check_settings(device, preprocess, quantize, precision, backend)
    import torch

    family = model_family(model_id, download)
    tower, image_processor = _classes(family)
    from transformers.utils import logging as hf_logging

    try:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # loading a full checkpoint into the vision tower lists the text weights
        try:
            model, processor = load_pretrained((tower, image_processor), model_id, download)
        finally:
            hf_logging.set_verbosity(verbosity)
    except OSError as e:
        raise ConfigError(f"cannot load the {family} encoder {model_id!r} [{str(e).splitlines()[0]}]: "
                         f"{OFFLINE_NEXT_STEP}") from None
    except pickle.UnpicklingError:  # torch refused a pickle's code (weights_only): never suggest loading it unsafely
        raise ConfigError(f"{printable(model_id)}: its weights are a pickle this project never opens (it could run "
                          "code): use a model folder with model.safetensors") from None
    except (SafetensorError, ValueError, RuntimeError, KeyError) as e:  # shapes, headers or configs that lie
        raise ConfigError(f"{printable(model_id)} is not a {family} model folder this code can load "
                          f"({type(e).__name__}): rebuild or re-download it") from None
    FrameSpec.from_pixels(processor.to_dict())  # ConfigError now for preprocessing this code does not implement
    dev_type, precision, backend = resolved(device, precision, backend, quantize)
    dev = torch.device(dev_type)
    model = model.to(dev).eval()
    fingerprint = _fingerprint(model, processor)  # of the fp32 weights; backend and `quantize` are recorded beside it
    # CLIP projects to projection_dim; SigLIP's embedding is its attention-pooling head's output, hidden_size wide
    dim = model.config.projection_dim if family == "clip" else model.config.hidden_size
    random_weights = bool(getattr(model.config, RANDOM_WEIGHTS, False))  # written by build_tiny_clip
    if backend == "torch":
        return Encoder(model, processor, model_id, fingerprint, dim, dev, preprocess, quantize, precision,
                       random_weights=random_weights, family=family)
    path = export_onnx(model, fingerprint, model.config.image_size, quantize)
    session = ort_session(path, torch.get_num_threads())
    return Encoder(None, processor, model_id, fingerprint, dim, dev, preprocess, quantize, precision, backend, session,
                   random_weights, family)


def _classes(family: str) -> tuple[type, type]:
    """The family's vision tower and image processor classes (transformers' PIL processors: the pixels the parity
    tests compare with)."""
    if family == "clip":
        from transformers import CLIPImageProcessorPil, CLIPVisionModelWithProjection
        return CLIPVisionModelWithProjection, CLIPImageProcessorPil
    from transformers import SiglipImageProcessorPil, SiglipVisionModel
    return SiglipVisionModel, SiglipImageProcessorPil


def preprocess_frames(frames: np.ndarray, encoder: Encoder) -> torch.Tensor:
    """RGB uint8 frames (N, H, W, 3) of one size -> float32 pixel values (N, 3, S, S) as the processor config says.

    The decode workers' resize and crop (pipeline.decode.frames.resize_crop), then `normalize`: what stage one does,
    in one call, for frames decoded elsewhere.
    """
    import torch

    spec = encoder.frame_spec()
    crops = np.stack([resize_crop(f, spec) for f in frames]) if len(frames) else np.zeros((0, spec.crop_h,
                                                                                           spec.crop_w, 3), np.uint8)
    return normalize(torch.from_numpy(crops), encoder)


def normalize(crops: torch.Tensor, encoder: Encoder) -> torch.Tensor:
    """uint8 crops (N, S, S, 3), on any device -> float32 pixel values (N, 3, S, S) there: rescale, then the
    processor's mean and std, as one multiply and one subtract in place: x * (rescale / std) - mean / std."""
    import torch

    p = encoder.processor
    # contiguous NCHW: a channels-last input is 3x slower through the patch embedding on the CPU; transposed as
    # uint8, then converted (the same values: 4x faster than converting while transposing, 0.24 ms for 4 frames)
    x = crops.permute(0, 3, 1, 2).contiguous().to(torch.float32)
    mean = torch.tensor(p.image_mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(p.image_std, device=x.device).view(1, 3, 1, 1)
    return x.mul_(p.rescale_factor / std).sub_(mean / std)


def embed_frames(frames: np.ndarray | torch.Tensor, encoder: Encoder, batch_size: int) -> np.ndarray:
    """Frames -> float32 image embeddings (N, dim), in forward passes of exactly batch_size.

    frames: uint8 crops (N, S, S, 3) from the decode workers (normalised on the encoder's device), or float32
    pixel values (N, 3, S, S) from preprocess_frames. The last batch is padded to batch_size: on CPU a matrix
    multiply of another shape may round differently, and a video must get the same embeddings whichever batch it
    lands in (a resumed run equals an uninterrupted one). With int8 the other rows of a pass change the result too
    (see Embedder). The onnxruntime backend runs the same padded passes through its session. On CUDA, uint8
    batches go from pinned memory with non-blocking copies on a side stream, so the next batch's copy overlaps this
    batch's forward pass.
    """
    import torch

    with torch.inference_mode():
        return _embed_frames(frames, encoder, batch_size)


def _embed_frames(frames: np.ndarray | torch.Tensor, encoder: Encoder, batch_size: int) -> np.ndarray:
    """embed_frames' passes, under inference mode."""
    import torch

    frames = torch.as_tensor(frames)
    if len(frames) == 0:
        return np.zeros((0, encoder.dim), np.float32)
    dev, cuda = encoder.device, encoder.device.type == "cuda"
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(encoder.precision)
    copies = torch.cuda.Stream(dev) if cuda else None

    def upload(start: int):
        batch = frames[start:start + batch_size]
        if len(batch) < batch_size:
            batch = torch.cat([batch, batch.new_zeros((batch_size - len(batch), *batch.shape[1:]))])
        if not cuda:
            return batch, None
        with torch.cuda.stream(copies):
            on_device = batch.pin_memory().to(dev, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(copies)
        return on_device, ready

    out, starts = [], range(0, len(frames), batch_size)
    nxt = upload(0)
    for start in starts:
        batch, ready = nxt
        if ready is not None:
            torch.cuda.current_stream(dev).wait_event(ready)
            batch.record_stream(torch.cuda.current_stream(dev))
        if start + batch_size < len(frames):
            nxt = upload(start + batch_size)  # queued now: copied while this batch runs
        pixels = normalize(batch, encoder) if batch.dtype == torch.uint8 else batch
        rows = min(batch_size, len(frames) - start)
        if rows < batch_size:  # (a new tensor: the padded batch was made by torch.cat)
            pixels[rows:] = 0  # the same padding for crops as for pixel values: int8 scales by the whole batch
        if encoder.session is not None:
            emb = torch.from_numpy(run_session(encoder.session, pixels.numpy()))
        else:
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                emb = vision_embeds(encoder.model, pixels)
        out.append(emb[:rows].float())
    return torch.cat(out).cpu().numpy()


class Embedder:
    """The embedder: frames of many videos batched together, every forward pass exactly batch_size frames, and
    the rows split back per video in the order the videos came.

    add(key, frames uint8 (F, S, S, 3)) returns the (key, embeddings float32 (F, D)) of every video now complete;
    flush() encodes what is left (padded) and returns the rest.

    On the CPU, and with int8, every pass holds one video's frames only (padded): with some thread counts (3 on the
    2-core machine) the CPU kernels round a row differently by where it sits in the pass, and dynamic quantisation
    scales a pass's activations by their range over the whole batch, so frames of other videos would change this
    video's embeddings (docs/engines.md, "What decides the bytes").
    """

    def __init__(self, encoder: Encoder, batch_size: int):
        self.encoder, self.batch_size = encoder, batch_size
        self.per_video = encoder.quantize == "int8" or encoder.device.type == "cpu"
        self._waiting: list[tuple[object, int]] = []  # (key, frames) of videos not complete yet, in order
        self._frames: list[np.ndarray] = []  # their frames not encoded yet
        self._rows = np.zeros((0, encoder.dim), np.float32)  # embeddings not handed back yet

    def add(self, key, frames: np.ndarray) -> list[tuple[object, np.ndarray]]:
        if self.per_video:
            return [(key, embed_frames(frames, self.encoder, self.batch_size))]
        self._waiting.append((key, len(frames)))
        self._frames.append(frames)
        return self._encode(pad=False)

    def flush(self) -> list[tuple[object, np.ndarray]]:
        return self._encode(pad=True)

    def _encode(self, pad: bool) -> list[tuple[object, np.ndarray]]:
        pending = sum(len(f) for f in self._frames)
        usable = pending if pad else pending // self.batch_size * self.batch_size
        if usable:  # (joined only when a batch is full: frames are not copied once per video)
            frames = np.concatenate(self._frames)
            self._rows = np.concatenate([self._rows, embed_frames(frames[:usable], self.encoder, self.batch_size)])
            self._frames = [frames[usable:]] if usable < pending else []
        done = []
        while self._waiting and self._waiting[0][1] <= len(self._rows):
            key, n = self._waiting.pop(0)
            done.append((key, self._rows[:n]))
            self._rows = self._rows[n:]
        return done


# What the fingerprint hashes besides the weights: the fields that change the arithmetic of the forward pass
# (not visible in the weights' shapes) and the pixels the encoder sees; never library metadata such as
# transformers_version, the model's path or its label names, so upgrading transformers keeps every cache and head.
# (The family needs no key of its own: its weights' names differ, CLIP's visual_projection, SigLIP's pooling head.)
ARITHMETIC_KEYS = ("hidden_size", "intermediate_size", "projection_dim", "num_hidden_layers", "num_attention_heads",
                   "num_channels", "image_size", "patch_size", "hidden_act", "layer_norm_eps")
PIXEL_KEYS = ("do_convert_rgb", "do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale",
              "rescale_factor", "do_normalize", "image_mean", "image_std")


def pixel_config(processor: BaseImageProcessor) -> str:
    """The processor settings that decide the pixels (PIXEL_KEYS), as sorted JSON."""
    config = processor.to_dict()
    return json.dumps({k: config.get(k) for k in PIXEL_KEYS}, sort_keys=True, default=str)


def _fingerprint(model: torch.nn.Module, processor: BaseImageProcessor) -> str:
    """First 16 hex digits of SHA-256 over the arithmetic fields of the model config (ARITHMETIC_KEYS), the
    processor's pixel settings (PIXEL_KEYS) and every weight's name and bytes."""
    import torch

    config = model.config.to_dict()
    h = hashlib.sha256()
    h.update(json.dumps({k: config.get(k) for k in ARITHMETIC_KEYS}, sort_keys=True, default=str).encode())
    h.update(pixel_config(processor).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().data)
    return h.hexdigest()[:16]


if __name__ == "__main__":  # python -m pipeline.embed.encoder --tiny DIR: the random CLIP (pipeline.embed.tiny_clip)
    from pipeline.tools.cli import tiny_clip
    raise SystemExit(tiny_clip())
