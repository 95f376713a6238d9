"""`clip-har-inspect --outliers` where nearly every pair is a near-duplicate: time and peak memory, A against B.

    python bench/outliers.py [--videos 1347] [--before main]

The cache is synthetic: V videos of 2 frames, 32 dims (the tiny CLIP's), all within cosine 0.99 of one direction
(as the tiny random CLIP made 13,320 placeholder clips: issue 28.7), 7 classes, a split of 3 parts. Each run is a
fresh process: `python -m pipeline.tools.inspector CACHE --outliers --json`, its peak resident memory (ru_maxrss of the
child) and wall time. A is `git archive BEFORE pipeline` (default: main), B this checkout; A and B alternate.
Mind A's memory: before the bound it kept every pair (2.8 GiB at 1,347 videos; pairs grow as V^2).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_cache(folder: Path, videos: int) -> Path:
    """The synthetic cache and its split.csv in folder."""
    from pipeline.extract.cache import empty_cache, write_cache
    from pipeline.heads.split_file import write_split

    rng = np.random.default_rng(0)
    means = np.zeros((videos, 32), np.float32)
    means[:, 0] = 1
    means += 0.02 * rng.normal(size=means.shape).astype(np.float32)
    names = [f"class_{c}" for c in range(7)]
    labels = np.arange(videos) % 7
    cache = empty_cache(2, 32, {"encoder_model": "synthetic", "embedding_dim": 32, "num_frames": 2,
                                "preprocess_config": "{}", "data_root": "data"}, names)
    cache.embeddings = np.repeat(means[:, None], 2, axis=1)
    cache.frame_indices, cache.timestamps = np.tile([0, 1], (videos, 1)), np.tile([0.0, 0.5], (videos, 1))
    cache.labels = labels.astype(np.int64)
    cache.paths = np.array([f"{names[y]}/v{i:06d}.mp4" for i, y in enumerate(labels)], object)
    cache.content_hash = np.array([f"{i:064x}" for i in range(videos)], object)
    cache.fps, cache.frame_count, cache.duration = np.full(videos, 25.0), np.full(videos, 50), np.full(videos, 2.0)
    cache.repeated = np.zeros(videos, bool)
    cache.file_size, cache.mtime_ns = np.full(videos, 100), np.zeros(videos, np.int64)
    cache.decode_errors = np.zeros(videos, np.int64)
    cache.segment = np.full((videos, 2), np.nan)
    cache.group, cache.annotated_part = np.full(videos, "", object), np.full(videos, "", object)
    cache.sampled = np.full(videos, 2)
    write_cache(folder / "features.h5", cache)
    parts = np.array(["train", "val", "test"], object)[np.arange(videos) % 3]
    write_split(folder / "split.csv", cache.paths, cache.labels, names, parts)
    return folder / "features.h5"


WRAPPER = """
import resource, subprocess, sys, time
started = time.perf_counter()
out = subprocess.run(sys.argv[1:], capture_output=True, check=True).stdout
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, len(out))
"""


def run(code: Path, cache: Path) -> tuple[float, float, int]:
    """(seconds, peak resident GiB, output bytes) of one `--outliers --json` run of the code under `code` (run from
    there: `python -m` puts the working folder first on the path), measured by a wrapper process of its own
    (ru_maxrss of children is the largest child so far)."""
    out = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-m", "pipeline.tools.inspector", str(cache),
                          "--outliers", "--json"], env={**os.environ, "PYTHONPATH": str(code)}, cwd=code,
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1]) / 2**20, int(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, nargs="+", default=[1347])
    parser.add_argument("--before", default="main")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        data = subprocess.run(["git", "archive", args.before, "pipeline"], cwd=ROOT, check=True,
                              capture_output=True).stdout
        with tarfile.open(fileobj=BytesIO(data)) as tar:
            tar.extractall(before, filter="data")
        for n in args.videos:
            folder = Path(tmp) / f"v{n}"
            folder.mkdir()
            cache = make_cache(folder, n)
            for name, code in (("A", before), ("B", ROOT)) if n % 2 else (("B", ROOT), ("A", before)):
                seconds, peak, size = run(code, cache)
                print(f"{n} videos, {name}: {seconds:.1f} s, peak {peak:.2f} GiB, JSON {size / 2**20:.1f} MiB",
                      flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
