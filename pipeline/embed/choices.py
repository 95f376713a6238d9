"""The encoder's choices by name (device, precision, preprocessing, backend, quantisation), without torch.

Their one home: the settings (pipeline.settings), the command lines and the encoder (pipeline.embed.encoder) read
them here, so that a process that only checks a setting or parses a command line never imports torch for them.
"""
from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda")  # extract.device, --device; auto: CUDA where torch has it (encoder.py decides)
PRECISIONS = ("fp32", "fp16", "bf16")  # extract.precision is auto or one of these (encoder.AUTO_PRECISION)
PREPROCESS_BACKENDS = ("fast", "processor")  # extract.preprocess (pipeline.decode.frames)
BACKENDS = ("torch", "onnxruntime")  # onnxruntime: the CPU only (pipeline.embed.onnx_backend)
# extract.backend: auto is the default: auto_backend picks one of BACKENDS, and a cache or head records that one.
BACKEND_CHOICES = ("auto", *BACKENDS)
QUANTIZE = ("none", "int8")  # int8: ONNX Runtime's dynamic int8, so the onnxruntime backend only
