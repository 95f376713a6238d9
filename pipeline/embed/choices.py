"""The encoder's choices by name (device, precision, preprocessing, backend, quantisation) and the name of its
random-weights mark, without torch.

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
# True in a model's config (and an encoder's describe(), hence a cache's attributes and a head's features) when its
# weights are random: the project's tiny-model builder (pipeline.embed.tiny_clip) writes it; every output that shows
# numbers made from such features says so (pipeline.extract.cache.random_encoder_note).
RANDOM_WEIGHTS = "random_weights"
