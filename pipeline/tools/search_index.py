"""The search index beside a feature cache: each clip's video vector, exact or in faiss IVF lists, built, checked, searched.

A clip's video vector is the L2-normalised mean of its L2-normalised frame embeddings (the standard mean-pooled video
embedding); a query ranks clips by cosine. Up to `exact_up_to` clips the search is exact (one float32 matrix-vector
product, ties broken by row: the brute-force order); beyond, faiss's IVF (inverted lists over spherical k-means
centroids; `nprobe` lists searched), whose scores are still exact cosines, its recall measured in bench/README.md.

The file is HDF5, arrays only: `vectors` float32 (V, D), and beyond exact size `centroids` float32 (L, D) and
`lists` int64 (V,) (each clip's list). It may come from a shared DVC remote, so it is read as a cache is
(cache_door.check_storage: no links, no external storage), every array checked (shape, finiteness, lists in range),
and the faiss index is made again in memory from the checked arrays (faiss.read_index, a C++ parser of an untrusted
binary, is never used). It records the fingerprint of the cache it was built from: another version of the cache
is refused (StaleIndex) with the command that rebuilds it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pipeline.errors import CacheError, printable
from pipeline.extract.cache import KEY_ATTRS, Cache
from pipeline.extract.cache_door import check_storage, disk_problem, finite_rows
from pipeline.extract.embeddings import masked_mean

FORMAT = "clip-har search index"
VERSION = 1
REBUILD = "rebuild it: `dvc repro index` in the project (or `clip-har-search --build-index --cache CACHE`)"
TRAIN_PER_LIST = 64  # k-means trains on at most this many vectors per list (faiss warns under 39)
ASSIGN_ROWS = 65_536  # vectors assigned to their list at once: (rows, L) float32 scores
GATHER_FRACTION = 8  # exact search over fewer than 1/8 of the clips gathers their vectors; over more, scores them all


class StaleIndex(CacheError):
    """There is no search index beside the cache, or it was built from another version of it."""


@dataclass(frozen=True)
class IndexConfig:
    """How the index is built (params.yaml: search). exact_up_to: clips searched exactly (beyond: IVF); lists: IVF
    lists (0: auto, 4 x sqrt(V) as faiss's guidelines advise, at most V / 39); nprobe: lists searched per query
    (recorded in the index: the command needs no params.yaml); seed: k-means's."""

    exact_up_to: int = 150_000
    lists: int = 0
    nprobe: int = 32
    seed: int = 0


def index_path(cache_path: str | os.PathLike) -> Path:
    """The index beside a cache: `<cache stem>.index.h5` (pipeline.paths.SEARCH_INDEX for the project's)."""
    path = Path(cache_path)
    return path.with_name(f"{path.stem}.index.h5")


def cache_fingerprint(cache: Cache) -> str:
    """SHA-256 (hex) of what the index's rows stand for: the cache's key (encoder, sampling, ...), class names, and
    each row's path, content hash, segment and label, in order. Two caches with the same fingerprint hold the same
    clips with the same embeddings; reads only the metadata (a fraction of a second at 240,000 rows)."""
    h = hashlib.sha256(json.dumps([{k: cache.attrs.get(k) for k in KEY_ATTRS}, list(cache.class_names),
                                   list(cache.embeddings.shape)], default=str).encode())
    for column in (cache.paths, cache.content_hash):
        h.update("\0".join(map(str, column)).encode("utf-8", "surrogateescape") + b"\1")
    h.update(np.ascontiguousarray(cache.segment, np.float64).tobytes())
    h.update(np.ascontiguousarray(cache.labels, np.int64).tobytes())
    return h.hexdigest()


def unit(x: np.ndarray) -> np.ndarray:
    """x scaled to unit length along its last axis (zero vectors stay zero), float32."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32, copy=False)


def video_vectors(embeddings, progress=None, sampled: np.ndarray | None = None) -> np.ndarray:
    """float32 (V, D): each clip's unit mean of its own unit frame embeddings, from float32 (V, F, D) (an array, or
    the cache's Embeddings read a block at a time: memory one block); sampled int64 (V,): how many of the F frames
    are the clip's own (a cache sampled by frame rate pads the rest), None: all. progress(rows) after each block."""
    out = np.empty((len(embeddings), embeddings.shape[2]), np.float32)
    blocks = embeddings.blocks() if hasattr(embeddings, "blocks") else [(0, np.asarray(embeddings, np.float32))]
    for start, block in blocks:
        counts = None if sampled is None else sampled[start:start + len(block)]
        out[start:start + len(block)] = unit(masked_mean(unit(block), counts))
        if progress:
            progress(len(block))
    return out


def list_count(videos: int, lists: int = 0) -> int:
    """IVF lists for `videos` clips: `lists`, or 4 x sqrt(V) (0: auto), kept within [1, V / 39]."""
    wanted = lists or round(4 * math.sqrt(videos))
    return max(1, min(wanted, videos // 39))


def build_index(cache: Cache, cfg: IndexConfig = IndexConfig(), progress=None) -> dict:
    """The index's arrays and attributes for a cache (see write_index): vectors always; beyond cfg.exact_up_to
    clips, spherical k-means centroids (trained on TRAIN_PER_LIST vectors a list, chosen with cfg.seed) and each
    clip's list."""
    own = cache.sampled if (cache.sampled < cache.embeddings.shape[1]).any() else None  # None: numpy's plain mean
    vectors = video_vectors(cache.embeddings, progress, own)
    arrays = {"vectors": vectors}
    attrs = {"format": FORMAT, "version": VERSION, "cache_fingerprint": cache_fingerprint(cache),
             "exact_up_to": cfg.exact_up_to, "nprobe": cfg.nprobe}
    if len(vectors) > cfg.exact_up_to:
        import faiss

        lists = list_count(len(vectors), cfg.lists)
        rng = np.random.default_rng(cfg.seed)
        sample = vectors[np.sort(rng.choice(len(vectors), min(len(vectors), TRAIN_PER_LIST * lists), replace=False))]
        kmeans = faiss.Kmeans(vectors.shape[1], lists, niter=20, seed=cfg.seed, spherical=True,
                              max_points_per_centroid=TRAIN_PER_LIST)
        kmeans.train(sample)
        centroids = np.ascontiguousarray(kmeans.centroids, np.float32)
        arrays["centroids"], arrays["lists"] = centroids, assign_lists(vectors, centroids)
    return {"arrays": arrays, "attrs": attrs}


def assign_lists(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """int64 (V,): each vector's nearest centroid by inner product (ties: the lower list), ASSIGN_ROWS at a time."""
    out = np.empty(len(vectors), np.int64)
    for start in range(0, len(vectors), ASSIGN_ROWS):
        out[start:start + ASSIGN_ROWS] = np.argmax(vectors[start:start + ASSIGN_ROWS] @ centroids.T, axis=1)
    return out


def write_index(path: str | os.PathLike, built: dict) -> None:
    """Write build_index's result to `path` atomically (a temporary file beside it, fsync, rename): a crash leaves
    the previous index or the new one. CacheError naming the folder when the disk is full or read-only."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            for name, values in built["arrays"].items():
                f.create_dataset(name, data=values)
            f.attrs.update(built["attrs"])
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    except BaseException as e:  # a full disk, an interrupt: no half-written index
        disk = disk_problem(e, path.parent) if isinstance(e, (OSError, RuntimeError)) else None
        tmp.unlink(missing_ok=True)
        if disk is not None:
            raise disk from None
        raise
    os.replace(tmp, path)


class SearchIndex:
    """A checked index over a cache's V clips, searched by cosine to a unit query: exact (vectors float32 (V, D) in
    memory) or, beyond exact size, a faiss IVF index holding the vectors in its lists (no second copy)."""

    def __init__(self, vectors: np.ndarray | None, ivf=None, exact_up_to: int = IndexConfig.exact_up_to,
                 nprobe: int = IndexConfig.nprobe):
        self.vectors, self.ivf, self.exact_up_to = vectors, ivf, exact_up_to
        self.nprobe = nprobe if ivf is None else min(nprobe, ivf.nlist)

    @property
    def exact(self) -> bool:
        return self.ivf is None

    def __len__(self) -> int:
        return len(self.vectors) if self.exact else int(self.ivf.ntotal)

    def vector(self, row: int) -> np.ndarray:
        """Clip `row`'s vector float32 (D,)."""
        return self.vectors[row] if self.exact else self.ivf.reconstruct(int(row))

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k clips nearest `query` (float32 (D,), unit length): (rows int64 (n,), cosines float32 (n,)), best
        first, ties by row; n < k when fewer clips are allowed. allowed: bool (V,), the clips that may be returned
        (a class, a split part, the query's own clip left out). Exact when the index is, or when at most
        exact_up_to clips are allowed (IVF with every list searched, the others skipped); else IVF over nprobe
        lists."""
        query = np.ascontiguousarray(query, np.float32)
        if self.exact:
            rows = None if allowed is None else np.flatnonzero(allowed)
            if rows is None:
                scores = self.vectors @ query
            elif len(rows) * GATHER_FRACTION < len(self.vectors):  # a few clips: gather their vectors
                scores = self.vectors[rows] @ query
            else:  # most clips: every score (one pass over memory), then theirs (a gather would copy them all)
                scores = (self.vectors @ query)[rows]
            top = _top(scores, k)
            return (top if rows is None else rows[top]), scores[top]
        import faiss

        few = allowed is not None and int(allowed.sum()) <= self.exact_up_to
        params = faiss.SearchParametersIVF(nprobe=self.ivf.nlist if few else self.nprobe)
        if allowed is not None:
            bits = np.packbits(allowed, bitorder="little")  # kept alive until the search returns
            params.sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
        scores, rows = self.ivf.search(query[None], k, params=params)
        keep = rows[0] >= 0
        rows, scores = rows[0][keep].astype(np.int64), scores[0][keep]
        order = np.lexsort((rows, -scores))
        return rows[order], scores[order]


def ivf_from_arrays(centroids: np.ndarray, blocks):
    """A faiss IndexIVFFlat (inner product) over `centroids` float32 (L, D), filled from `blocks`, an iterable of
    (vectors float32 (B, D), lists int64 (B,)) in row order, each list already checked within [0, L) (faiss
    trusts them); with a direct map, so that a row's vector can be read back."""
    import faiss
    from faiss.contrib.ivf_tools import add_preassigned

    quantizer = faiss.IndexFlatIP(centroids.shape[1])
    quantizer.add(centroids)
    ivf = faiss.IndexIVFFlat(quantizer, centroids.shape[1], len(centroids), faiss.METRIC_INNER_PRODUCT)
    ivf.is_trained = True
    for vectors, lists in blocks:
        add_preassigned(ivf, np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(lists, np.int64))
    ivf.make_direct_map()
    return ivf


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, highest first, ties by index: the brute-force order."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64)
    candidates = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    kth = scores[candidates].min()
    candidates = np.flatnonzero(scores >= kth)  # every tie of the k-th score, so ties go by index
    return candidates[np.lexsort((candidates, -scores[candidates]))][:k]


def open_index(path: str | os.PathLike, cache: Cache) -> SearchIndex:
    """The index at `path` for `cache` (opened with open_cache), checked at the door: StaleIndex when it is missing
    or was built from another version of the cache (the message says how to rebuild it); CacheError when it is not
    an index, would make HDF5 read another file, or holds arrays of other shapes, non-finite values or lists out of
    range."""
    path = Path(path)
    shown = printable(path)
    if not path.is_file():
        raise StaleIndex(f"no search index at {shown}: {REBUILD}")
    rows, dim = len(cache), cache.embeddings.shape[2]
    try:
        with h5py.File(path, "r", locking=False) as f:
            check_storage(f, path)
            attrs = dict(f.attrs)
            if attrs.get("format") != FORMAT or attrs.get("version") != VERSION:
                raise CacheError(f"{shown}: not a search index of this version ({FORMAT} {VERSION}): {REBUILD}")
            if attrs.get("cache_fingerprint") != cache_fingerprint(cache):
                raise StaleIndex(f"{shown} was built from another version of the cache: {REBUILD}")
            exact_up_to, nprobe = attrs.get("exact_up_to"), attrs.get("nprobe")
            if not all(isinstance(v, (int, np.integer)) and v >= 1 for v in (exact_up_to, nprobe)):
                raise _refuse(path, "its exact_up_to and nprobe are not whole numbers from 1")
            if "centroids" not in f:
                vectors = _array(f, "vectors", (rows, dim), "f", path)
                _check_finite(vectors, path, "vectors")
                return SearchIndex(vectors, exact_up_to=int(exact_up_to), nprobe=int(nprobe))
            _array(f, "vectors", (rows, dim), "f", path, read=False)
            centroids = _check_finite(_array(f, "centroids", (None, dim), "f", path), path, "centroids")
            lists = _array(f, "lists", (rows,), "iu", path)
            if len(lists) and (lists.min() < 0 or lists.max() >= len(centroids)):
                raise _refuse(path, "a clip's list is outside its centroids")
            ivf = ivf_from_arrays(centroids, _vector_blocks(f["vectors"], lists, path))
    except OSError as e:  # not HDF5, truncated
        raise CacheError(f"{shown}: not a readable search index ({e}): {REBUILD}") from None
    return SearchIndex(None, ivf, int(exact_up_to), int(nprobe))


def _vector_blocks(ds: h5py.Dataset, lists: np.ndarray, path: Path):
    """(vectors float32 (B, D), lists (B,)) of the dataset, ASSIGN_ROWS at a time, each block checked finite."""
    for start in range(0, len(lists), ASSIGN_ROWS):
        block = _check_finite(np.asarray(ds[start:start + ASSIGN_ROWS], np.float32), path, "vectors")
        yield block, lists[start:start + ASSIGN_ROWS]


def _check_finite(values: np.ndarray, path: Path, name: str) -> np.ndarray:
    if not finite_rows(values[:, None, :]).all():
        raise _refuse(path, f"its {name} hold values that are not finite numbers")
    return values


def _array(f: h5py.File, name: str, shape: tuple, kinds: str, path: Path, read: bool = True) -> np.ndarray | None:
    """Dataset `name` of f read whole, as float32 or int64, once its shape and kind are checked (a None length:
    from 1 to the clips' count, as the vectors' first length bounds it): what it announces is what the cache's
    own shape allows, never more."""
    ds = f.get(name)
    most = f["vectors"].shape[0] if "vectors" in f else 0
    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in kinds or len(ds.shape) != len(shape) or any(
            (not 1 <= have <= most) if want is None else have != want for have, want in zip(ds.shape, shape)):
        found = f"{ds.dtype} {ds.shape}" if isinstance(ds, h5py.Dataset) else "none"
        raise _refuse(path, f"{name!r} is {found}, the cache needs {shape}")
    return np.ascontiguousarray(ds[()], np.float32 if kinds == "f" else np.int64) if read else None


def _refuse(path: Path, problem: str) -> CacheError:
    return CacheError(f"{printable(path)}: not a usable search index ({problem}): {REBUILD}")


def build_index_file(cache_path: str | os.PathLike, out: str | os.PathLike | None = None,
                     cfg: IndexConfig = IndexConfig()) -> str:
    """Build the index of the cache at `cache_path` and write it to `out` (default: beside the cache), with a
    progress bar on stderr; returns a line saying what was written. CacheError when the cache cannot be read."""
    from pipeline.extract.cache import open_cache
    from pipeline.progress import progress_bar

    cache = open_cache(cache_path)
    out = Path(out) if out is not None else index_path(cache_path)
    with progress_bar(total=len(cache), unit="clip", desc="index", disable=len(cache) < 10_000) as bar:
        built = build_index(cache, cfg, bar.update)
    write_index(out, built)
    arrays = built["arrays"]
    kind = (f"IVF: {len(arrays['centroids']):,} lists, {cfg.nprobe} searched per query" if "centroids" in arrays
            else f"exact up to {cfg.exact_up_to:,} clips")
    return f"{printable(out)}: {len(cache):,} clips x {arrays['vectors'].shape[1]} ({kind})"
