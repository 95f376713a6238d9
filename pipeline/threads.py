"""How many threads torch and ONNX Runtime get in each role: the one policy, measured on the 2-core machine."""
from __future__ import annotations

import os

# Threads per role; None: one per core the process may use (bench/README.md, "Threads", on the 2-core machine).
# Stage two: one thread. Its small matrix work gains nothing from a second thread on a quiet machine (1.02 s
# against 1.05 s) and lost 5.3x under load. The app: every core (its ONNX Runtime encode 1.75x faster on two than
# one, quiet; under heavy load from other work one thread was faster: this is the place to change). Stage one:
# every core for its own process, which embeds only on a GPU (its engine sets the count there, and where its workers
# embed the process never imports torch); on the CPU its decode workers embed, one thread each (WORKER_THREADS). Search
# (clip-har-search): one thread; its work is one short prompt through the text tower (or one IVF probe), where a
# second thread only waits: 0.41 s against 3.9-4.1 s for the ViT-B/32 text tower at load 11-13 (bench/README.md,
# "Search").
THREADS = {"extract": None, "stage_two": 1, "app": None, "search": 1}
# A decode worker's threads, in every library: the workers are the parallelism. Where they embed (stage one on the
# CPU) each embeds on this many; stage one with workers 0 embeds on as many as a worker would: on the CPU the thread
# count changes how some sums round, so every engine gives the same bytes (docs/engines.md).
WORKER_THREADS = 1


def sleeping_openmp() -> None:
    """Idle OpenMP threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE, unless the environment sets it): for
    a process whose threads share the cores with decode workers or other work. Call it before torch loads: libgomp
    reads it once, at load. Spinning threads took the cores from stage one's decode workers (2,000 tiny clips: 292 s
    with them, 61 s without; bench/per_file.py) and from live's (one tiny-CLIP frame: 650-760 ms on 2 spinning
    threads, 3-15 ms on 2 sleeping ones at load 10; bench/README.md, "Live"), both on the shared 2-core machine."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cores() -> int:
    """The cores this process may use (its CPU affinity, which a container or `taskset` narrows), at least 1."""
    return max(1, len(os.sched_getaffinity(0)))


def role_threads(role: str) -> int:
    """The thread count THREADS gives `role` on this machine (None there: one per core), without importing torch."""
    return THREADS[role] or cores()


def torch_threads() -> int:
    """torch's intra-op thread count in this process now (what set_threads or set_torch_threads made it)."""
    import torch

    return torch.get_num_threads()


def set_torch_threads(n: int) -> None:
    """Set torch's intra-op threads to n (MKL's count is per calling thread: set it on the thread that computes).
    Before an encoder's load: an onnxruntime session takes torch's count when it is made."""
    import torch

    torch.set_num_threads(n)


def set_threads(role: str) -> int:
    """Set torch's intra-op threads for `role` (THREADS), and the BLAS and OpenMP pools numpy, scipy and
    scikit-learn use (threadpoolctl), and return the count; load the encoder after this call: an onnxruntime
    session takes torch's thread count when it is made. (Stage two's logistic regression under load: 6x faster
    with one BLAS thread than with OpenBLAS's default of one per core; bench/README.md, "Head experiments".)"""
    from threadpoolctl import threadpool_limits

    n = role_threads(role)
    set_torch_threads(n)
    threadpool_limits(n)
    return n
