"""Threads per role measured side by side: one thread against every core, for stage two's heads and stage one.

    python bench/threads.py [--rounds 3] [--videos 2000]

Stage two: a synthetic cache (bench/stage_two.py's, --videos videos x 16 frames x 512), the linear head for 30
epochs and the logistic regression, as the train and baseline stages run them. Stage one: bench/stage_one.py's ten
clips end to end with the full ViT-B/32 architecture (random weights), with torch and with onnxruntime; the decode
workers (one per core, one thread each, nice 19) run beside the encoder's threads. Thread counts alternate within
each round; the machine is shared, so read the ratios.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
from stage_one import dataset, full_size_clip, stage_one  # noqa: E402
from stage_two import CLASSES  # noqa: E402
from pipeline.extract.cache import read_cache  # noqa: E402
from pipeline.heads.estimators import mean_pool  # noqa: E402
from pipeline.heads.logreg import LogRegHead  # noqa: E402
from pipeline.heads.training import LinearConfig, train_linear  # noqa: E402


def stage_two(x, y) -> float:
    """Seconds for the linear head (30 epochs, a fifth held out for validation) and the logistic regression."""
    n = len(y) * 4 // 5
    t = time.perf_counter()
    train_linear([(x[:n], y[:n])], len(CLASSES), LinearConfig(epochs=30), None, x[n:], y[n:])
    LogRegHead().fit(mean_pool(x[:n]), y[:n])
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--videos", type=int, default=2000)
    parser.add_argument("--skip-stage-one", action="store_true")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    counts = sorted({1, cores})
    path = ROOT / "bench" / "out" / f"synthetic_{args.videos}.h5"
    if not path.exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "stage_two.py"), "--make", str(path), "--videos",
                        str(args.videos)], check=True)
    cache = read_cache(path)
    print(f"{cores} cores, torch {torch.__version__}; load average {os.getloadavg()[0]:.1f} at the start (shared "
          f"machine); {args.rounds} rounds, thread counts alternating")
    two = {n: [] for n in counts}
    for _ in range(args.rounds):
        for n in counts:
            torch.set_num_threads(n)
            two[n].append(stage_two(cache.embeddings, cache.labels))
    print(f"stage two ({len(cache)} videos: linear head 30 epochs + logistic regression), s: " + "; ".join(
        f"{n} thread(s) {', '.join(f'{t:.2f}' for t in ts)}" for n, ts in two.items())
        + f"; {cores} threads / 1 thread: {statistics.median(a / b for a, b in zip(two[cores], two[1])):.2f}x")
    if args.skip_stage_one:
        return
    files, model = dataset(), full_size_clip()
    one = {(b, n): [] for b in ("torch", "onnxruntime") for n in counts}
    for _ in range(max(1, args.rounds - 1)):
        for backend, n in one:
            torch.set_num_threads(n)  # the onnxruntime session takes torch's count when it is made
            one[(backend, n)].append(stage_one(files, model, backend=backend))
    for backend in ("torch", "onnxruntime"):
        ratio = statistics.median(a / b for a, b in zip(one[(backend, cores)], one[(backend, 1)]))
        print(f"stage one ({len(files)} videos, {backend}), s: " + "; ".join(
            f"{n} thread(s) {', '.join(f'{t:.2f}' for t in one[(backend, n)])}" for n in counts)
            + f"; {cores} threads / 1 thread: {ratio:.2f}x")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
