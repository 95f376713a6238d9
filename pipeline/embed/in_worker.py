"""The decode workers' encoder: loaded once as a worker starts, then each video embedded where it was decoded."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.errors import BrokenInstall

if TYPE_CHECKING:  # imported where used: stage one calls worker_modules before it imports torch (stages/extract.py)
    from pipeline.decode.frames import FrameSpec
    from pipeline.embed.encoder import EncoderConfig
    from pipeline.embed.recorded import Verified

# Stage one on the CPU embeds in the decode workers (pipeline.extract.engines.LocalEngine): each loads the encoder once
# (load_in_worker, its setup) and runs decode_and_embed per video, on its one thread. What its forkserver imports
# once, so that a worker starts without importing them again: RECORDED_MODULES where the encoder was recorded
# (pipeline.embed.recorded: the worker opens its ONNX export, no model), WORKER_MODULES, with transformers' CLIP and
# SigLIP modules (seconds), for a full load.
RECORDED_MODULES = (__name__, "pipeline.embed.recorded", "pipeline.embed.encoder", "onnxruntime")
WORKER_MODULES = (*RECORDED_MODULES, *(f"transformers.models.{f}.{m}_{f}" for f in ("clip", "siglip")
                                       for m in ("modeling", "image_processing_pil")))
_in_worker: dict = {}  # in such a worker: "encoder" and "batch_size", or "error": why they could not be loaded


def worker_modules(model: str, backend: str) -> tuple[str, ...]:
    """What the forkserver of stage one's workers should import for encoder.model `model` and extract.backend
    `backend`: RECORDED_MODULES where the workers will likely open a recorded encoder (recorded.likely; any other
    backend than torch: on the CPU auto is onnxruntime, and on a GPU the workers do not embed), else WORKER_MODULES.
    A guess either way, never a change of what is loaded: a worker imports what its load needs."""
    from pipeline.embed.recorded import likely

    return RECORDED_MODULES if backend != "torch" and likely(model) else WORKER_MODULES


def load_in_worker(cfg: EncoderConfig, checked: Verified | None = None) -> None:
    """A decode worker's setup (DecodePool's `setup`): load cfg's encoder on the CPU, for decode_and_embed: from its
    record where one holds (recorded.load: the same encoder, without transformers or the model; checked: the record
    and export the run's process verified, opened without checking again), else in full, then recorded. A load that
    fails is kept and raised by the worker's tasks (describe_in_worker or decode_and_embed say why in the run's
    process), not here: a worker whose setup raises dies with a traceback on the terminal."""
    from pipeline.embed.recorded import load

    try:
        _in_worker["encoder"], _in_worker["batch_size"] = load(cfg, "cpu", checked)
    except Exception as e:  # ConfigError (an encoder that cannot be loaded) or anything a library raises
        _in_worker["error"] = e


def describe_in_worker() -> tuple[dict, FrameSpec, int]:
    """The worker's encoder as the run records it: its describe(), frame spec and batch size; or why it could not
    be loaded, raised."""
    if "error" in _in_worker:
        raise _in_worker["error"]
    encoder = _in_worker["encoder"]
    return encoder.describe(), encoder.frame_spec(), _in_worker["batch_size"]


def decode_and_embed(decode: Callable, file: str, cfg, hash_bytes):
    """What a decode worker that embeds runs per video: decode(file, cfg, hash_bytes) (a workers.Loaded), with its
    clip's frames uint8 (F, S, S, 3) replaced by their embeddings float32 (F, D) (Loaded.embeddings: embed_frames,
    in passes of the batch size, on the worker's thread) and the fingerprint of the encoder that made them
    (Loaded.fingerprint, which the run checks against its own). Nothing but the embeddings leaves the worker.
    BrokenInstall (the run stops) when the worker could not load the encoder."""
    if "error" in _in_worker:
        raise BrokenInstall(f"a decode worker cannot load the encoder: {_in_worker['error']}")
    from pipeline.embed.encoder import embed_frames

    out = decode(file, cfg, hash_bytes)
    encoder = _in_worker["encoder"]
    out.embeddings = embed_frames(out.clip.frames, encoder, _in_worker["batch_size"])
    out.clip.frames, out.fingerprint = None, encoder.fingerprint
    return out
