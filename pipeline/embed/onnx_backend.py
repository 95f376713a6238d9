"""The CLIP or SigLIP vision tower through ONNX Runtime on the CPU: exported once per encoder (fp32 or int8), cached."""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
import warnings
import zlib
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch (and numpy) imported where used: a decode worker that opens an export made before (its
    # encoder recorded, pipeline.embed.recorded) needs no model, and stage one's process looks for records without
    # waiting on either
    import numpy as np
    import torch
# Exported models, one folder per encoder fingerprint, exporter and runtime, reused by every process and project:
# onnx_root(), read when an export is looked up, so that the decode workers and subprocesses follow the environment.
ONNX_DIR_ENV = "CLIP_HAR_ONNX_DIR"
OPSET = 18
# Each .onnx has a manifest beside it (<name>.json: its size and CRC-32, what it was exported from), written after
# it: an export whose manifest is missing (an older export, a killed one) or whose bytes differ (truncated, edited)
# is rebuilt, never used. FORMAT changes when what an export holds changes (a stale export then goes too).
FORMAT = 1
INPUT, OUTPUT = "pixel_values", "image_embeds"


def vision_embeds(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Pixel values float32 (B, 3, S, S) -> the image embeddings (B, D) of a vision tower: CLIP's projected
    image_embeds, or SigLIP's pooled output (its attention-pooling head: what SiglipModel.get_image_features gives)."""
    out = model(pixel_values=pixel_values)
    return out.image_embeds if hasattr(out, "image_embeds") else out.pooler_output


def onnx_root() -> Path:
    """Where the exports live: $CLIP_HAR_ONNX_DIR where set, else $XDG_CACHE_HOME/clip-har/onnx (by default
    ~/.cache/clip-har/onnx)."""
    if os.environ.get(ONNX_DIR_ENV):
        return Path(os.environ[ONNX_DIR_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clip-har" / "onnx"


def model_dir(fingerprint: str, root: Path | None = None) -> Path:
    """The folder of one encoder's exports: its fingerprint with the opset, torch and onnxruntime versions (another
    exporter or runtime makes another graph, so it gets its own folder); the versions as installed, the same strings
    as their __version__, read without importing either (stage one's process on the CPU imports neither)."""
    return (root or onnx_root()) / f"{fingerprint}-opset{OPSET}-torch{version('torch')}-ort{version('onnxruntime')}"


def export_onnx(model: torch.nn.Module, fingerprint: str, image_size: int, quantize: str = "none",
                root: Path | None = None) -> Path:
    """The ONNX file of `model` (fp32, or dynamic int8 when quantize="int8"), exported on first use and reused.

    fp32: torch.onnx.export (dynamo exporter, dynamic batch). int8: ONNX Runtime's dynamic quantisation of that
    file, weights per output channel as QInt8 in 7 bits (reduce_range: 8-bit products saturate on CPUs without
    AVX-512 VNNI, docs/engines.md), activations quantised per call. Each file is written under a
    temporary name and renamed into place, then its manifest (size, CRC-32), under a file lock: a killed export
    or a concurrent process never leaves or reads half a model, and only one process exports. A file that does not
    match its manifest (or has none) is made again, never used. The one-time export says so on stderr.
    """
    folder = model_dir(fingerprint, root)
    fp32, int8 = folder / export_name("none"), folder / export_name("int8")
    wanted = int8 if quantize == "int8" else fp32
    if _verified(wanted, fingerprint):  # the usual case: no lock (files and manifests only appear by rename)
        return wanted
    from filelock import FileLock

    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / "export.lock")):
        if not _verified(fp32, fingerprint):
            with _announced(f"exporting the encoder {fingerprint} to ONNX, once", fp32):
                _make(fp32, fingerprint, lambda tmp: _export(model, image_size, tmp))
        if quantize == "int8" and not _verified(int8, fingerprint):
            from onnxruntime.quantization import QuantType, quantize_dynamic

            def quantized(tmp: Path) -> None:
                with _quiet(""):  # its advice to run a pre-processing pass first, which is not taken here
                    quantize_dynamic(fp32, tmp, per_channel=True, reduce_range=True, weight_type=QuantType.QInt8)

            with _announced(f"quantising the encoder {fingerprint} to int8, once", int8):
                _make(int8, fingerprint, quantized)
    return wanted


def verified_export(fingerprint: str, quantize: str = "none", root: Path | None = None) -> Path | None:
    """The export export_onnx would return for this fingerprint and quantisation where it is already made and whole
    (its manifest's size and CRC-32), else None: what a process that has no model to export from may use."""
    path = model_dir(fingerprint, root) / export_name(quantize)
    return path if _verified(path, fingerprint) else None


def export_name(quantize: str) -> str:
    """The export's file name in its model_dir for extract.quantize `quantize`."""
    return "vision-int8-rr.onnx" if quantize == "int8" else "vision-fp32.onnx"


def _export(model: torch.nn.Module, image_size: int, path: Path) -> None:
    """torch.onnx.export of the vision tower to `path`: pixel values (B, 3, S, S) -> embeddings (B, D)."""
    import torch

    class _ImageEmbeds(torch.nn.Module):
        """The vision tower as one tensor in, one out: pixel values float32 (B, 3, S, S) -> embeddings (B, D)."""

        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return vision_embeds(self.model, pixel_values)

    _ImageEmbeds.__qualname__ = "_ImageEmbeds"  # as when it was defined at the top of this module: the same export
    example = torch.zeros(2, 3, image_size, image_size)
    # (onnxscript's optimiser notes the SigLIP pooling head's Split it leaves unfolded)
    with warnings.catch_warnings(), _quiet("torch.onnx"), _quiet("onnxscript"):
        warnings.simplefilter("ignore")  # the tracer's notes on the checks it freezes at this shape
        torch.onnx.export(_ImageEmbeds(model).eval(), (example,), str(path), input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_shapes={INPUT: {0: torch.export.Dim("batch")}},
                          opset_version=OPSET, dynamo=True, external_data=False, verbose=False, optimize=True)


def _make(final: Path, fingerprint: str, write) -> None:
    """write(tmp) a model to a temporary file, then rename it to `final` and write its manifest: the manifest last,
    so that a kill at any point leaves a file without a matching manifest, which is made again."""
    _manifest(final).unlink(missing_ok=True)
    tmp = final.with_name(f"tmp-{uuid.uuid4().hex}.onnx")
    try:
        write(tmp)
        _commit(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    text = json.dumps({"format": FORMAT, "fingerprint": fingerprint, "bytes": final.stat().st_size,
                       "crc32": _crc32(final)}, sort_keys=True)
    tmp = final.with_name(f"tmp-{uuid.uuid4().hex}.json")
    try:
        tmp.write_text(text)
        _commit(tmp, _manifest(final))
    finally:
        tmp.unlink(missing_ok=True)


def _manifest(path: Path) -> Path:
    return path.with_suffix(".json")


def _verified(path: Path, fingerprint: str) -> bool:
    """Whether `path` is a whole export of this fingerprint: its manifest is there, of this FORMAT and fingerprint,
    and the file's size and CRC-32 are the manifest's. CRC-32 finds damage (a truncated, edited or bit-flipped file),
    which is what can happen to the user's own cache folder, at 3x SHA-256's speed: 0.4 s for ViT-B/32's 350 MB
    on the loaded 2-core machine, where SHA-256 took 1.2 s."""
    try:
        manifest = json.loads(_manifest(path).read_text())
        if not (isinstance(manifest, dict) and manifest.get("format") == FORMAT
                and manifest.get("fingerprint") == fingerprint and manifest.get("bytes") == path.stat().st_size):
            return False
        return manifest.get("crc32") == _crc32(path)
    except (OSError, ValueError):  # missing, unreadable, not JSON
        return False


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


@contextmanager
def _announced(what: str, path: Path):
    """A line on stderr before a one-time export (it takes about 10 s for ViT-B/32) and one with its time after."""
    print(f"{what} (about 10 s for ViT-B/32; later runs reuse it): {path}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    yield
    print(f"  done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


def _commit(tmp: Path, final: Path) -> None:
    """Flush a finished file to disk, then rename it into place: the final name only ever names a whole model."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


@contextmanager
def _quiet(logger: str):
    """Errors only from `logger` ("" for the root logger) while inside."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def ort_session(path: Path, threads: int):
    """An ONNX Runtime CPU session on `path` with `threads` intra-op threads (pipeline.threads sets how many)."""
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: the graph optimiser's notes are not the user's business
    return onnxruntime.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_session(session, pixels: np.ndarray) -> np.ndarray:
    """Pixel values float32 (B, 3, S, S) -> image embeddings float32 (B, D)."""
    import numpy as np

    return session.run([OUTPUT], {INPUT: np.ascontiguousarray(pixels, np.float32)})[0]
