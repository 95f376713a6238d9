"""Nearest-video search on the CPU, method against method: numpy matmul (float32, float16), faiss flat, IVF, HNSW.

    python bench/search_methods.py [--sizes 120000 240000] [--queries 50] [--dim 512]

The vectors are synthetic: clustered unit vectors float32 (N, D), each one of 400 class centres plus Gaussian noise,
the centres sharing one direction and grouped in 40 groups (bench/search.py's clustered_centres: as mean-pooled
CLIP embeddings of 400 actions roughly are, all within a cone, related actions nearer). Queries are
fresh vectors from the same clusters (a `--like` query of a video not in the index). Each method answers the same
queries one at a time (what the command does); times are the median and 90th percentile per query, warm (one
query run first). recall@10: the fraction of the exact top 10 (numpy float32) that the method returns. Build: the
time to make the index from the vectors; rebuild: IVF made again from its stored centroids and list assignments
(what pipeline.tools.search_index does at load, instead of faiss.read_index). Threads: every core (faiss's OpenMP
and numpy's BLAS).
"""
from __future__ import annotations

import argparse
import os
import time

import faiss
import numpy as np
from search import clustered_centres  # bench/search.py, beside this file

NOISE, K = 1.2, 10


def clustered(n: int, dim: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    """n unit vectors float32 (n, dim), each a random centre plus noise (NOISE per dimension, as bench/search.py)."""
    x = centres[rng.integers(len(centres), size=n)] + NOISE * rng.standard_normal((n, dim), np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed(fn, queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """fn(q) -> top-K rows for each query: (rows (Q, K), milliseconds per query), one warm-up call first."""
    fn(queries[0])
    out, ms = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q))
        ms.append(1e3 * (time.perf_counter() - t))
    return np.array(out), ms


def exact_numpy(vectors: np.ndarray):
    def search(q):
        s = vectors @ q.astype(vectors.dtype)
        top = np.argpartition(-s, K)[:K]
        return top[np.argsort(-s[top], kind="stable")]
    return search


def with_faiss(index, **params):
    def search(q):
        return index.search(q[None], K, **params)[1][0]
    return search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[120_000, 240_000])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--hnsw", action="store_true", help="also HNSW (its build takes minutes at 240,000)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = clustered_centres(rng, args.dim)
    print(f"load average at start {os.getloadavg()[0]:.1f}; faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} OpenMP threads")
    print(f"{'videos':>8} {'method':<34} {'build s':>8} {'median ms':>9} {'p90 ms':>7} {'recall@10':>9}")
    for n in args.sizes:
        vectors = clustered(n, args.dim, rng, centres)
        queries = clustered(args.queries, args.dim, rng, centres)
        truth, ms = timed(exact_numpy(vectors), queries)

        def row(name, build_s, found, ms, n=n, truth=truth):
            recall = np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)])
            print(f"{n:>8} {name:<34} {build_s:>8.1f} {np.median(ms):>9.1f} {np.percentile(ms, 90):>7.1f} "
                  f"{recall:>9.3f}  (load {os.getloadavg()[0]:.1f})", flush=True)

        row("numpy float32 matmul (exact)", 0.0, truth, ms)
        half = vectors.astype(np.float16)
        found, ms16 = timed(exact_numpy(half), queries[:5])  # 5 queries: numpy has no float16 BLAS
        row("numpy float16 matmul (5 queries)", 0.0, found, ms16, truth=truth[:5])
        del half
        t = time.perf_counter()
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(vectors)
        row("faiss IndexFlatIP (exact)", time.perf_counter() - t, *timed(with_faiss(flat), queries))
        del flat
        nlist = round(4 * n ** 0.5)  # what the index stage chooses (search.lists: 0)
        t = time.perf_counter()
        quantizer = faiss.IndexFlatIP(args.dim)
        ivf = faiss.IndexIVFFlat(quantizer, args.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors[rng.choice(n, min(n, 64 * nlist), replace=False)]
        kmeans = faiss.Kmeans(args.dim, nlist, niter=20, seed=0, spherical=True, max_points_per_centroid=64)
        kmeans.train(sample)
        quantizer.add(kmeans.centroids)
        ivf.is_trained = True
        assign = quantizer.search(vectors, 1)[1][:, 0]
        from faiss.contrib.ivf_tools import add_preassigned
        add_preassigned(ivf, vectors, assign)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        centroids = quantizer.reconstruct_n(0, nlist)
        again = faiss.IndexIVFFlat(faiss.IndexFlatIP(args.dim), args.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        again.quantizer.add(centroids)
        again.is_trained = True
        add_preassigned(again, vectors, assign)
        print(f"{n:>8} IVF{nlist} rebuilt from centroids + assignments: {time.perf_counter() - t:.2f} s")
        del again
        for nprobe in (8, 16, 32, 64, 128):
            params = faiss.SearchParametersIVF(nprobe=nprobe)
            row(f"faiss IVF{nlist},Flat nprobe {nprobe}", build_s, *timed(with_faiss(ivf, params=params), queries))
        del ivf
        if args.hnsw:
            t = time.perf_counter()
            hnsw = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
            hnsw.add(vectors)
            build_s = time.perf_counter() - t
            for ef in (32, 64, 128):
                params = faiss.SearchParametersHNSW(efSearch=ef)
                row(f"faiss HNSW32 efSearch {ef}", build_s, *timed(with_faiss(hnsw, params=params), queries))
            del hnsw


if __name__ == "__main__":
    main()
