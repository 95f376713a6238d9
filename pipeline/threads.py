"""How many threads torch and ONNX Runtime get in each role: the one policy, measured on the 2-core machine."""
from __future__ import annotations

import os

# Threads per role; None: one per core the process may use. Measured on the shared 2-core machine under load
# (bench/README.md, "Threads"): a second thread made stage two's heads 5.3x slower and one video's encode in the
# app slower too; stage one's encoder takes every core, its decode workers (one thread each) run at nice 19 beside it.
THREADS = {"extract": None, "stage_two": 1, "app": 1}


def set_threads(role: str) -> int:
    """Set torch's intra-op threads for `role` (THREADS) and return the count; load the encoder after this call:
    an onnxruntime session takes torch's thread count when it is made."""
    import torch

    n = THREADS[role] or max(1, len(os.sched_getaffinity(0)))
    torch.set_num_threads(n)
    return n
