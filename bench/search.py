"""Search at scale: the index built from a cache of N clips, `--like` and text queries, peak memory, recall.

    python bench/search.py [--sizes 120000 240000] [--queries 50] [--keep] [--reuse-index] [--methods]

For each N: a synthetic cache of N clips x 16 frames x 512, stored float16 (half the disk; read as float32), written
by stage one's writer. Clips are clustered as mean-pooled CLIP embeddings roughly are (a direction they all share,
40 groups of 10 classes, each clip its class's centre plus noise, each frame its clip plus noise). Its encoder is
the full ViT-B/32 architecture with random weights (the real weights cannot be downloaded here), so the text
tower has the real one's size. Steps, each in its own process (peak: its ru_maxrss from os.wait4):
  build    `clip-har-search --build-index` (the index stage's work) with params.yaml's search settings
  like     Q queries `--like <cached clip>` in one process, warm (the index loaded once): took_ms median and 90th
           percentile, recall@10 against exact (numpy over the index's vectors, brute force)
  command  `clip-har-search --like PATH --json` and `clip-har-search TEXT --json`: peak memory, took_ms, wall
  text     the text embedding of a query, cold (the text tower loaded: what the command pays) and warm (the
           tower already loaded, as a long-lived process would keep it), plus the search
--methods runs bench/search_methods.py (numpy, faiss flat, IVF, HNSW on synthetic vectors) first.
Outputs in bench/out/search/ (deleted unless --keep).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "search"
FRAMES, DIM, GROUPS, CLASSES = 16, 512, 40, 400
TEXT = "someone falls down the stairs"


def clustered_centres(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    """float32 (CLASSES, dim): a shared direction, plus a group's, plus the class's own."""
    shared = rng.standard_normal(dim).astype(np.float32)
    groups = rng.standard_normal((GROUPS, dim)).astype(np.float32)
    own = rng.standard_normal((CLASSES, dim)).astype(np.float32)
    return 1.0 * shared + 0.8 * groups[np.arange(CLASSES) % GROUPS] + 0.8 * own


def write_synthetic_cache(path: Path, n: int, model: Path) -> None:
    """N clips of CLASSES classes (float16 storage) at `path`, their encoder the random ViT-B/32 at `model`."""
    from pipeline.decode.video import SAMPLING
    from pipeline.embed.encoder import load_encoder
    from pipeline.extract.cache import BLOCK_ROWS, Cache, empty_cache, write_cache_blocks

    encoder = load_encoder(str(model), "cpu", "fast", "none", "auto")
    attrs = {**encoder.describe(), "num_frames": FRAMES, "sampling": SAMPLING, "batch_size": 16,
             "data_root": "data", "dtype": "float16", "versions": "{}"}
    classes = [f"class_{c:03d}" for c in range(CLASSES)]
    template = empty_cache(FRAMES, DIM, attrs, classes)
    rng = np.random.default_rng(0)
    centres = clustered_centres(rng)
    labels = np.arange(n) % CLASSES

    def blocks():
        for start in range(0, n, BLOCK_ROWS):
            rows = np.arange(start, min(n, start + BLOCK_ROWS))
            k = len(rows)
            clip = centres[labels[rows]] + 1.2 * rng.standard_normal((k, DIM), dtype=np.float32)
            emb = clip[:, None, :] + 1.0 * rng.standard_normal((k, FRAMES, DIM), dtype=np.float32)
            times = np.tile(np.arange(FRAMES) * 0.6, (k, 1))
            yield Cache(
                embeddings=emb, frame_indices=np.tile(np.arange(FRAMES) * 15, (k, 1)), timestamps=times,
                labels=labels[rows], paths=np.array([f"{classes[labels[r]]}/v{r:06d}.mp4" for r in rows], object),
                content_hash=np.array([f"{r:064x}" for r in rows], object), fps=np.full(k, 25.0),
                frame_count=np.full(k, 240), duration=np.full(k, 9.6), repeated=np.zeros(k, bool),
                decode_errors=np.zeros(k, np.int64), file_size=np.full(k, 1000, np.int64),
                mtime_ns=np.zeros(k, np.int64), class_names=classes, attrs=attrs)

    write_cache_blocks(path, template, n, blocks())


def measure(cmd: list[str], cwd: Path) -> dict:
    """cmd in its own process: wall seconds, peak RSS GiB (with its children), stdout, load average at start."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    load, started = os.getloadavg()[0], time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return {"seconds": seconds, "stdout": out, "stderr": err, "load": load}


WRAPPED = """
import os, resource, subprocess, sys
proc = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(proc.pid, 0)
print(usage.ru_maxrss, file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak(cmd: list[str], cwd: Path) -> dict:
    """measure(), with the command's own peak RSS (GiB): ru_maxrss of the child, from a small wrapper process."""
    got = measure([sys.executable, "-c", WRAPPED, *cmd], cwd)
    got["peak_gib"] = int(got["stderr"].strip().splitlines()[-1]) / 2**20
    return got


LIKE = """
import json, sys, time
import numpy as np, h5py
from pipeline.threads import set_threads
set_threads("search")
from pipeline.tools.search import open_searcher, cached_query
t = time.perf_counter()
s = open_searcher(sys.argv[1])
opened = time.perf_counter() - t
with h5py.File(sys.argv[2], "r") as f:
    vectors = f["vectors"][()]
rng = np.random.default_rng(1)
rows = rng.choice(len(s.cache), int(sys.argv[3]), replace=False)
took, recall = [], []
s.search(vectors[rows[0]], 10)  # warm
for r in rows:
    q, excluded = cached_query(s, s.cache.paths[r])
    found = s.search(q, 10, None, excluded)
    took.append(found.took_ms)
    scores = vectors @ q
    scores[excluded] = -np.inf
    truth = np.argsort(-scores, kind="stable")[:10]
    recall.append(len({h.row for h in found.hits} & set(truth.tolist())) / 10)
print(json.dumps({"open_s": opened, "median_ms": float(np.median(took)), "p90_ms": float(np.percentile(took, 90)),
                  "recall": float(np.mean(recall)), "exact": s.index.exact}))
"""

TEXT_TIMES = """
import json, sys, time
from pipeline.threads import set_threads
set_threads("search")
import functools
import pipeline.heads.zeroshot as zeroshot
from pipeline.tools.search import open_searcher, text_vector
s = open_searcher(sys.argv[1])
model = s.cache.attrs["encoder_model"]
t = time.perf_counter(); text_vector(model, sys.argv[2]); cold = time.perf_counter() - t
zeroshot.load_pretrained = functools.lru_cache(zeroshot.load_pretrained)  # a tower kept loaded, as a server would
text_vector(model, "warm up")
warm = {1: [], 2: []}
for i in range(10):  # one thread and two, alternately
    threads = 1 + i % 2
    set_threads("search") if threads == 1 else set_threads("app")
    t = time.perf_counter(); q = text_vector(model, f"{sys.argv[2]} {i}"); warm[threads].append(time.perf_counter() - t)
set_threads("search")
found = s.search(q, 10)
print(json.dumps({"cold_s": cold, "warm_ms": 1e3 * sorted(warm[1])[2], "warm_2_ms": 1e3 * sorted(warm[2])[2],
                  "search_ms": found.took_ms}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[120_000, 240_000])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--methods", action="store_true")
    parser.add_argument("--reuse-index", action="store_true", help="measure the queries on the index of a kept run")
    args = parser.parse_args()
    if args.methods:
        subprocess.run([sys.executable, str(ROOT / "bench" / "search_methods.py")], check=True)
    OUT.mkdir(parents=True, exist_ok=True)
    model = OUT / "vit-b-32-random"
    if not (model / "config.json").is_file():
        from pipeline.embed.tiny_clip import build_tiny_clip
        build_tiny_clip(str(model), full_size=True)
    search = [sys.executable, "-m", "pipeline.tools.search"]
    for n in args.sizes:
        project = OUT / f"n{n}"
        project.mkdir(exist_ok=True)
        shutil.copy(ROOT / "params.yaml", project / "params.yaml")
        cache = project / "cache" / "features.h5"
        if not cache.is_file():
            cache.parent.mkdir(exist_ok=True)
            t = time.perf_counter()
            write_synthetic_cache(cache, n, model)
            print(f"{n:,}: synthetic cache written in {time.perf_counter() - t:.0f} s "
                  f"({cache.stat().st_size / 2**30:.2f} GiB)", flush=True)
        if not (args.reuse_index and (project / "cache" / "features.index.h5").is_file()):
            built = peak([*search, "--build-index"], project)
            print(f"{n:,} build: {built['seconds']:.0f} s, peak {built['peak_gib']:.2f} GiB (load {built['load']:.1f}): "
                  f"{built['stdout'].strip()}", flush=True)
        like = json.loads(measure([sys.executable, "-c", LIKE, str(cache), str(project / "cache/features.index.h5"),
                                   str(args.queries)], project)["stdout"])
        print(f"{n:,} --like x{args.queries} warm: took_ms median {like['median_ms']:.1f}, p90 {like['p90_ms']:.1f}, "
              f"recall@10 {like['recall']:.3f} ({'exact' if like['exact'] else 'IVF'}); opening the cache and index "
              f"{like['open_s']:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
        for what, argv in (("--like", ["--like", "class_007/v000007.mp4"]), ("text", [TEXT])):
            got = peak([*search, *argv, "--json"], project)
            took = json.loads(got["stdout"])["took_ms"]
            print(f"{n:,} command {what}: peak {got['peak_gib']:.2f} GiB, took_ms {took:.1f}, wall {got['seconds']:.1f} s "
                  f"(load {got['load']:.1f})", flush=True)
        text = json.loads(measure([sys.executable, "-c", TEXT_TIMES, str(cache), TEXT], project)["stdout"])
        print(f"{n:,} text: embedding cold {text['cold_s']:.1f} s (tower loaded), warm {text['warm_ms']:.0f} ms "
              f"(1 thread; 2 threads: {text['warm_2_ms']:.0f} ms); + search {text['search_ms']:.1f} ms = "
              f"{text['warm_ms'] + text['search_ms']:.0f} ms (load {os.getloadavg()[0]:.1f})", flush=True)
        if not args.keep:
            shutil.rmtree(project)


if __name__ == "__main__":
    main()
