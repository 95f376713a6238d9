"""The CLIP or SigLIP vision tower through ONNX Runtime on the CPU: exported once per encoder (fp32 or int8), cached."""
from __future__ import annotations

import logging
import os
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

# Exported models, one folder per encoder fingerprint, exporter and runtime, reused by every process and project.
ONNX_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clip-har" / "onnx"
OPSET = 18
INPUT, OUTPUT = "pixel_values", "image_embeds"


def vision_embeds(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Pixel values float32 (B, 3, S, S) -> the image embeddings (B, D) of a vision tower: CLIP's projected
    image_embeds, or SigLIP's pooled output (its attention-pooling head: what SiglipModel.get_image_features gives)."""
    out = model(pixel_values=pixel_values)
    return out.image_embeds if hasattr(out, "image_embeds") else out.pooler_output


class _ImageEmbeds(torch.nn.Module):
    """The vision tower as one tensor in, one out: pixel values float32 (B, 3, S, S) -> embeddings (B, D)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return vision_embeds(self.model, pixel_values)


def model_dir(fingerprint: str, root: Path | None = None) -> Path:
    """The folder of one encoder's exports: its fingerprint with the opset, torch and onnxruntime versions (another
    exporter or runtime makes another graph, so it gets its own folder)."""
    import onnxruntime

    return (root or ONNX_DIR) / f"{fingerprint}-opset{OPSET}-torch{torch.__version__}-ort{onnxruntime.__version__}"


def export_onnx(model: torch.nn.Module, fingerprint: str, image_size: int, quantize: str = "none",
                root: Path | None = None) -> Path:
    """The ONNX file of `model` (fp32, or dynamic int8 when quantize="int8"), exported on first use and reused.

    fp32: torch.onnx.export (dynamo exporter, dynamic batch). int8: ONNX Runtime's dynamic quantisation of that
    file, weights per output channel as QInt8, activations quantised per call. Each file is written under a
    temporary name and renamed into place, under a file lock: a killed export or a concurrent process never
    leaves or reads half a model, and only one process exports.
    """
    from filelock import FileLock

    folder = model_dir(fingerprint, root)
    folder.mkdir(parents=True, exist_ok=True)
    fp32, int8 = folder / "vision-fp32.onnx", folder / "vision-int8.onnx"
    with FileLock(str(folder / "export.lock")):
        if not fp32.exists():
            tmp = folder / f"tmp-{uuid.uuid4().hex}.onnx"
            try:
                example = torch.zeros(2, 3, image_size, image_size)
                # (onnxscript's optimiser notes the SigLIP pooling head's Split it leaves unfolded)
                with warnings.catch_warnings(), _quiet("torch.onnx"), _quiet("onnxscript"):
                    warnings.simplefilter("ignore")  # the tracer's notes on the checks it freezes at this shape
                    torch.onnx.export(_ImageEmbeds(model).eval(), (example,), str(tmp), input_names=[INPUT],
                                      output_names=[OUTPUT], dynamic_shapes={INPUT: {0: torch.export.Dim("batch")}},
                                      opset_version=OPSET, dynamo=True, external_data=False, verbose=False,
                                      optimize=True)
                _commit(tmp, fp32)
            finally:
                tmp.unlink(missing_ok=True)
        if quantize == "int8" and not int8.exists():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            tmp = folder / f"tmp-{uuid.uuid4().hex}.onnx"
            try:
                with _quiet(""):  # its advice to run a pre-processing pass first, which is not taken here
                    quantize_dynamic(fp32, tmp, per_channel=True, weight_type=QuantType.QInt8)
                _commit(tmp, int8)
            finally:
                tmp.unlink(missing_ok=True)
    return int8 if quantize == "int8" else fp32


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
    return session.run([OUTPUT], {INPUT: np.ascontiguousarray(pixels, np.float32)})[0]
