"""How many threads torch and ONNX Runtime get in each role: the one policy, measured on the 2-core machine."""
from __future__ import annotations

import os

# Threads per role; None: one per core the process may use. Measured (README, "Threads"): stage two's small heads
# and the app's 16-frame encodes gain nothing from a second thread on an idle 2-core machine and lose up to 3x on a
# loaded one; stage one's encoder uses every core (its decode workers run at the lowest priority beside it).
THREADS = {"extract": None, "stage_two": 1, "app": 1}


def set_threads(role: str) -> int:
    """Set torch's intra-op threads for `role` (THREADS) and return the count; load the encoder after this call:
    an onnxruntime session takes torch's thread count when it is made."""
    import torch

    n = THREADS[role] or max(1, len(os.sched_getaffinity(0)))
    torch.set_num_threads(n)
    return n
