"""The rules that resolve the encoder settings' auto (backend, precision, batch size, device) and their checks, without
torch: stage one's process decides where the encoder runs without importing it."""
from __future__ import annotations

from pipeline.embed.choices import BACKEND_CHOICES, DEVICES, PRECISIONS, PREPROCESS_BACKENDS, QUANTIZE
from pipeline.embed.devices import cuda_available, device_type
from pipeline.errors import ConfigError

# extract.precision: auto is, per device, the fastest precision whose embeddings stay within centred cosine
# AUTO_MIN_COSINE of fp32 (min over frames, full ViT-B/32 with random weights), else fp32. Measured, fastest first:
# CUDA (H100, bench/README.md): fp16 0.99998, bf16 0.99872 (as fast); a CPU with native bf16 (AVX-512 BF16, the
# 2-core AMD EPYC, docs/encoders.md): bf16 1.6x to 2x fp32's speed but 0.99875 in stage one end to end (0.9989 in
# issue 27), so the CPU stays fp32 (bit for bit as before); a CPU without native bf16 emulates it, slower.
AUTO_MIN_COSINE = 0.999
MEASURED_COSINE = {"cuda": {"fp16": 0.99998, "bf16": 0.99872}, "cpu": {"bf16": 0.99875}}
AUTO_PRECISION = {dev: next((p for p, cos in by_speed.items() if cos >= AUTO_MIN_COSINE), "fp32")
                  for dev, by_speed in MEASURED_COSINE.items()}
# extract.batch_size: auto: the most frames per forward pass (CPU: the stage-one benchmark's best; CUDA: large
# batches); on the CPU a pass holds one video's frames, so auto_batch_size sizes it to the video.
AUTO_BATCH_SIZE = {"cpu": 16, "cuda": 256}


def auto_batch_size(device_type: str, num_frames: int) -> int:
    """extract.batch_size auto: frames per forward pass on `device_type` for videos of `num_frames` frames.

    CUDA: AUTO_BATCH_SIZE (passes shared across videos). CPU: every pass holds one video's frames, padded
    (Embedder), so the fewest passes of at most AUTO_BATCH_SIZE frames that hold a video, evenly sized: no padding
    to speak of (4 frames -> 4, 16 -> 16, 24 -> 12, 40 -> 14). Padding 4 frames to 16 made the tiny CLIP's
    stage one 1.4x slower a clip (bench/per_file.py).
    """
    most = AUTO_BATCH_SIZE[device_type]
    if device_type != "cpu":
        return most
    passes = -(-num_frames // most)
    return -(-num_frames // passes)


def auto_backend(device_type: str, precision: str, quantize: str) -> str:
    """extract.backend auto: the fastest backend that gives the same numbers here, for an encoder on `device_type`
    in `precision` (fp32 | fp16 | bf16, resolved) with `quantize`. ONNX Runtime fp32 on the CPU (the encoder at
    85% of the CPU's fp32 matrix-product ceiling against torch's 37% for ViT-B/32, embeddings within 2.6e-6:
    docs/engines.md), and int8, which only it runs; torch on CUDA, and for fp16 or bf16 (ONNX Runtime runs fp32)."""
    if quantize == "int8" or (device_type == "cpu" and precision == "fp32"):
        return "onnxruntime"
    return "torch"



def check_settings(device: str, preprocess: str, quantize: str, precision: str, backend: str) -> str:
    """The settings' own errors, before any model is read (ConfigError saying how to fix each), and the backend with
    auto resolved where int8 decides it (onnxruntime); auto stays auto otherwise (resolved(): it needs the device)."""
    if backend not in BACKEND_CHOICES:
        raise ConfigError(f"backend must be one of {BACKEND_CHOICES}, got {backend!r}")
    if precision not in (*PRECISIONS, "auto"):
        raise ConfigError(f"precision must be auto or one of {PRECISIONS}, got {precision!r}")
    if preprocess not in PREPROCESS_BACKENDS:
        raise ConfigError(f"preprocess must be one of {PREPROCESS_BACKENDS}, got {preprocess!r}")
    if quantize not in QUANTIZE:
        raise ConfigError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    if device not in DEVICES:
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    if backend == "auto" and quantize == "int8":
        backend = auto_backend("cpu", "fp32", quantize)
    if quantize == "int8" and backend != "onnxruntime":
        raise ConfigError("int8 runs through ONNX Runtime: set extract.backend to onnxruntime, or quantize to none")
    if backend == "onnxruntime" and device == "cuda":
        raise ConfigError("the onnxruntime backend runs on the CPU: set extract.device to cpu (or auto), or the "
                         "backend to torch")
    if device == "cuda" and not cuda_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available")
    return backend


def resolved(device: str, precision: str, backend: str, quantize: str) -> tuple[str, str, str]:
    """(device type, precision, backend) with auto resolved, for settings check_settings passed (its backend);
    ConfigError for onnxruntime in another precision than fp32."""
    dev = device_type(device, backend)
    precision = AUTO_PRECISION[dev] if precision == "auto" else precision
    backend = auto_backend(dev, precision, quantize) if backend == "auto" else backend
    if backend == "onnxruntime" and precision != "fp32":
        raise ConfigError("the onnxruntime backend runs in fp32 (or int8): set extract.precision to fp32 or auto")
    return dev, precision, backend
