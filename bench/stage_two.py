"""Benchmark of stage two on a synthetic cache of 10,000 videos x 16 frames x 512: load, train, baseline, evaluate.

    python bench/stage_two.py [--videos 10000] [--epochs 30]

The cache is written once to bench/out/ by a child process, so the peak memory printed is that of the head work
alone (load + pool + split + both heads + evaluation). Targets on a 2-core machine: linear head < 5 s, logistic
regression < 10 s.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.extract.cache import Cache, read_cache, write_cache
from pipeline.heads.evaluate import cross_validate, evaluate_predictions
from pipeline.heads.estimators import LinearHead, mean_pool
from pipeline.heads.logreg import LogRegConfig, LogRegHead
from pipeline.heads.kinds import fit_predict_many
from pipeline.heads.split import split_videos
from pipeline.heads.training import LinearConfig

CLASSES = [f"class_{i}" for i in range(7)]
ATTRS = {"encoder_model": "synthetic", "encoder_fingerprint": "0" * 16, "embedding_dim": 512, "num_frames": 16,
         "sampling": "uniform-centers", "preprocess": "fast", "preprocess_config": "{}", "backend": "torch",
         "quantize": "none", "decoder": "synthetic"}


def make_cache(path: Path, videos: int, frames: int = 16, dim: int = 512) -> None:
    """A cache whose frame embeddings scatter around one mean per class (overlapping, so the heads have work)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(CLASSES), videos)
    means = rng.normal(0, 0.015, (len(CLASSES), dim)).astype(np.float32)
    emb = np.empty((videos, frames, dim), np.float32)
    for start in range(0, videos, 1000):  # in chunks, to keep the generator's memory small
        stop = min(start + 1000, videos)
        emb[start:stop] = means[labels[start:stop], None, :] + rng.standard_normal(
            (stop - start, frames, dim), dtype=np.float32)
    write_cache(path, Cache(
        embeddings=emb, frame_indices=np.tile(np.arange(frames), (videos, 1)),
        timestamps=np.tile(np.arange(frames) / 25.0, (videos, 1)), labels=labels.astype(np.int64),
        paths=np.array([f"{CLASSES[y]}/v{i:06d}.mp4" for i, y in enumerate(labels)], object),
        content_hash=np.array([f"{i:064x}" for i in range(videos)], object), fps=np.full(videos, 25.0),
        frame_count=np.full(videos, 250), duration=np.full(videos, 10.0), repeated=np.zeros(videos, bool),
        decode_errors=np.zeros(videos, np.int64),
        file_size=np.full(videos, 10 ** 6), mtime_ns=np.zeros(videos, np.int64), class_names=CLASSES,
        attrs={**ATTRS, "num_frames": frames, "embedding_dim": dim}))


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def measure(path: Path, epochs: int) -> None:
    cache, t_load = timed(lambda: read_cache(path))
    x, t_pool = timed(lambda: mean_pool(cache.embeddings))
    y = cache.labels
    parts = split_videos(y, cache.class_names, 0.15, 0.15, seed=0)
    tr, va, te = parts == "train", parts == "val", parts == "test"
    cfg = LinearConfig(epochs=epochs)
    linear, t_linear = timed(lambda: LinearHead(cfg).fit(x[tr], y[tr], CLASSES, cache.attrs, x[va], y[va]))
    logreg, t_logreg = timed(lambda: LogRegHead(LogRegConfig()).fit(x[tr], y[tr], CLASSES, cache.attrs))

    def evaluate():
        return {h.kind: evaluate_predictions(y[te], h.predict_proba(cache.embeddings[te]).argmax(1), CLASSES)
                for h in (linear, logreg)}

    report, t_eval = timed(evaluate)

    def cv():
        return {name: cross_validate(x, y, CLASSES, 5, 0, lambda tasks: fit_predict_many(tasks, len(CLASSES), c))
                for name, c in (("linear", cfg), ("logreg", LogRegConfig()))}

    folds, t_cv = timed(cv)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size_mib = path.stat().st_size / 2 ** 20
    print(f"cache: {len(cache)} videos x {cache.embeddings.shape[1]} frames x {cache.embeddings.shape[2]} "
          f"({size_mib:.0f} MiB on disk); train {tr.sum()}, val {va.sum()}, test {te.sum()}")
    print(f"cache load (read_cache)        {t_load:7.2f} s   ({size_mib / t_load:.0f} MiB/s)")
    print(f"mean pooling                   {t_pool:7.2f} s")
    print(f"linear head, {epochs} epochs        {t_linear:7.2f} s   target < 5 s: {t_linear / 5:.2f} of it "
          f"(batch {cfg.batch_size}, val each epoch)")
    print(f"logistic regression            {t_logreg:7.2f} s   target < 10 s: {t_logreg / 10:.2f} of it")
    print(f"evaluation (both heads, test)  {t_eval:7.2f} s")
    print(f"5-fold CV, both heads          {t_cv:7.2f} s   (evaluate.folds=5: 10 refits on 8,000 videos)")
    print(f"peak memory (max RSS)          {peak_mib:7.0f} MiB  ({peak_mib / size_mib:.1f}x the cache file)")
    print("test accuracy: " + ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in report.items())
          + "; CV accuracy: " + ", ".join(f"{k} {v.mean():.3f} ± {v.std():.3f}" for k, v in folds.items()))


def _current(path: Path) -> bool:
    """Whether a synthetic cache left by an earlier run carries today's attributes (else it is written again)."""
    import h5py
    with h5py.File(path, "r") as f:
        return all(f.attrs.get(k) == v for k, v in ATTRS.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--make", metavar="PATH", help=argparse.SUPPRESS)  # internal: write the cache and exit
    args = parser.parse_args()
    if args.make:
        make_cache(Path(args.make), args.videos)
        return
    path = Path(__file__).resolve().parent / "out" / f"synthetic_{args.videos}.h5"
    if not path.exists() or not _current(path):
        subprocess.run([sys.executable, __file__, "--make", str(path), "--videos", str(args.videos)], check=True)
    measure(path, args.epochs)


if __name__ == "__main__":
    main()
