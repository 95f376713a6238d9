"""Look inside a feature cache: summary, one video's frames, neighbours, a 2-D map, likely mislabels and leakage.

The library behind `clip-har-inspect` (pipeline.cli) and the app's Embeddings page. The cache is opened lazily:
embeddings are read a block of videos at a time, so memory grows with V x D, not V x F x D.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.cache import BLOCK_ROWS, KEY_ATTRS, Cache, open_cache
from pipeline.errors import CacheError, ConfigError
from pipeline.paths import SPLIT_PATH
from pipeline.split import PARTS, read_split

if TYPE_CHECKING:
    from pipeline.video import FrameSpec

NEAR_DUPLICATE = 0.98  # cosine similarity of mean embeddings above which two videos count as near-duplicates
SCREEN_DIMS = 64  # principal directions the near-duplicate search screens pairs on before the exact cosine
TILE = 4096  # videos per side of one tile of the near-duplicate search: (TILE, TILE) float32 = 64 MiB


def summarize(cache: Cache, path: str | Path, parts: np.ndarray | None = None) -> dict:
    """The cache's contents as plain data (`clip-har-inspect --json`; keys documented in docs/inspect.md)."""
    counts = np.bincount(cache.labels, minlength=len(cache.class_names))
    classes = {name: {"videos": int(counts[c])} for c, name in enumerate(cache.class_names)}
    if parts is not None:
        for c, name in enumerate(cache.class_names):
            classes[name].update({p: int(np.sum((cache.labels == c) & (parts == p))) for p in PARTS})
    a = cache.attrs
    return {
        "path": str(path),
        "size_bytes": Path(path).stat().st_size,
        "schema_version": a.get("schema_version"),
        "videos": len(cache),
        "classes": classes,
        "frames_per_video": int(cache.embeddings.shape[1]),
        "embedding_dim": int(cache.embeddings.shape[2]),
        "videos_with_repeated_frames": int(cache.repeated.sum()),
        "damaged": [{"path": p, "decode_errors": int(n)} for p, n in zip(cache.paths, cache.decode_errors) if n],
        "duration_seconds": {"min": _stat(cache.duration, np.min), "median": _stat(cache.duration, np.median),
                             "max": _stat(cache.duration, np.max)},
        "encoder": {"model": a.get("encoder_model"), "fingerprint": a.get("encoder_fingerprint"),
                    "precision": a.get("precision"), "device_type": a.get("device_type"), "backend": a.get("backend"),
                    "quantize": a.get("quantize")},
        "sampling": a.get("sampling"),
        "decoder": a.get("decoder"),
        "preprocess": a.get("preprocess"),
        "data_root": a.get("data_root"),
        "split": parts is not None,
        "skipped": [{"path": p, "reason": r} for p, r in cache.skipped],
        # the cache's whole key: a stage-one run with any of these changed re-encodes every video
        "key": {k: a.get(k) for k in KEY_ATTRS},
    }


def _stat(values: np.ndarray, fn) -> float:
    return float(fn(values)) if len(values) else 0.0


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def video_means(cache: Cache) -> np.ndarray:
    """Unit-length mean frame embedding of each video, float32 (V, D): what neighbours and maps compare. One pass
    over the embeddings (a block at a time when they are left in the file): the functions below take it as
    `means` so that a caller computes it once."""
    return _unit(cache.embeddings.mean(axis=1))


def class_centroids(cache: Cache, means: np.ndarray | None = None) -> np.ndarray:
    """Unit-length mean of each class's video means, float32 (C, D) (zeros for a class with no videos)."""
    means = video_means(cache) if means is None else means
    sums = np.zeros((len(cache.class_names), means.shape[1]), np.float32)
    np.add.at(sums, cache.labels, means)
    return _unit(sums)


def row_of(cache: Cache, path: str) -> int:
    """The row of `path` (a clip id: a segment as `path#t=start,end`; a bare path gives the file's first clip) in
    the cache; ConfigError listing close names when it is not there."""
    hits = np.flatnonzero(cache.clip_ids() == path)
    hits = hits if len(hits) else np.flatnonzero(cache.paths == path)
    if not len(hits):
        similar = [p for p in cache.paths if Path(p).name == Path(path).name][:3]
        raise ConfigError(f"{path!r} is not in the cache" + (f" (did you mean {', '.join(similar)}?)" if similar
                                                            else ": paths are relative to the data root"))
    return int(hits[0])


def frame_report(cache: Cache, path: str, means: np.ndarray | None = None) -> list[dict]:
    """Per sampled frame of one video: index, timestamp, embedding norm, cosine to the previous frame and to each
    class centroid."""
    v = row_of(cache, path)
    emb = cache.embeddings[v]  # (F, D)
    unit = _unit(emb)
    to_class = unit @ class_centroids(cache, means).T  # (F, C)
    rows = []
    for f in range(len(emb)):
        rows.append({
            "frame": int(cache.frame_indices[v, f]),
            "time": float(cache.timestamps[v, f]),
            "norm": float(np.linalg.norm(emb[f])),
            "cos_previous": float(unit[f] @ unit[f - 1]) if f else None,
            "cos_class": {name: float(to_class[f, c]) for c, name in enumerate(cache.class_names)},
        })
    return rows


def nearest_neighbors(cache: Cache, path: str, k: int = 5, means: np.ndarray | None = None) -> list[dict]:
    """The k videos whose mean embeddings are most cosine-similar to `path`'s: path, class, similarity."""
    v = row_of(cache, path)
    means = video_means(cache) if means is None else means
    sims = means @ means[v]
    sims[v] = -np.inf
    order = np.argsort(-sims, kind="stable")[:k]
    return [{"path": cache.paths[i], "class": cache.class_names[cache.labels[i]], "similarity": float(sims[i])}
            for i in order]


def find_outliers(cache: Cache, parts: np.ndarray | None = None, threshold: float = NEAR_DUPLICATE,
                  means: np.ndarray | None = None) -> dict:
    """Likely mislabelled videos and near-duplicates, as plain data.

    mislabelled: videos nearer another class's centroid than to their own (own centroid computed without the
    video itself), most suspicious first. near_duplicates: pairs with cosine >= threshold (or the same bytes);
    `leak` is True when the two sit in different split parts.
    """
    means = video_means(cache) if means is None else means
    num_classes = len(cache.class_names)
    sums = np.zeros((num_classes, means.shape[1]), np.float32)
    np.add.at(sums, cache.labels, means)
    counts = np.bincount(cache.labels, minlength=num_classes)
    sims = means @ _unit(sums).T  # (V, C)
    own = sums[cache.labels] - means  # leave-one-out: the class without this video
    own_sim = np.where(counts[cache.labels] > 1, np.sum(means * _unit(own), axis=1), np.nan)
    sims[np.arange(len(means)), cache.labels] = -np.inf
    other = sims.argmax(axis=1)
    other_sim = sims[np.arange(len(means)), other]
    mislabelled = [{"path": cache.paths[v], "class": cache.class_names[cache.labels[v]],
                    "own_similarity": float(own_sim[v]), "nearer_class": cache.class_names[other[v]],
                    "nearer_similarity": float(other_sim[v])}
                   for v in np.argsort(own_sim - other_sim) if own_sim[v] < other_sim[v]]
    pairs = similar_pairs(means, threshold)
    same_bytes = {}
    for v, h in enumerate(cache.row_keys()):  # the same clip: the same bytes and segment
        same_bytes.setdefault(h, []).append(v)
    pairs += [(a, b, 1.0) for rows in same_bytes.values() for a in rows for b in rows if a < b]
    dupes = {}
    for a, b, s in pairs:
        dupes[(a, b)] = max(s, dupes.get((a, b), s))
    ids = cache.clip_ids()
    near = [{"a": ids[a], "b": ids[b], "similarity": s,
             "same_bytes": cache.content_hash[a] == cache.content_hash[b],
             "parts": [str(parts[a]), str(parts[b])] if parts is not None else None,
             "leak": bool(parts is not None and parts[a] != parts[b])}
            for (a, b), s in sorted(dupes.items(), key=lambda kv: -kv[1])]
    return {"mislabelled": mislabelled, "near_duplicates": near}


def similar_pairs(means: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Pairs (a, b, cosine), a < b, of unit rows float32 (V, D) whose cosine is >= threshold, found without the
    (V, V) matrix.

    Cosine >= t is distance^2 <= 2 - 2t. Projected on the SCREEN_DIMS principal directions of the rows, distances
    only shrink, so a pair whose projections are farther apart cannot qualify: (TILE, TILE) tiles of the projected
    rows screen every pair (SCREEN_DIMS / D of the full products' work), and the exact cosine of each pair that
    passes decides. Nothing is missed: the screen only removes pairs that cannot qualify.
    """
    if len(means) < 2:
        return []
    centred, limit = means - means.mean(axis=0), 2 - 2 * threshold + 1e-3  # slack: float32 rounding of the screen
    dims = min(SCREEN_DIMS, means.shape[1])
    cov = np.zeros((means.shape[1],) * 2)
    for start in range(0, len(means), BLOCK_ROWS * 16):
        block = centred[start:start + BLOCK_ROWS * 16].astype(np.float64)
        cov += block.T @ block
    basis = np.linalg.eigh(cov)[1][:, -dims:].astype(np.float32)  # (D, K): the top principal directions
    z = centred @ basis  # (V, K)
    sq = np.einsum("ij,ij->i", z, z)
    # d^2(a, b) = |z_a|^2 + |z_b|^2 - 2 z_a.z_b as one product: [-2 z_a, |z_a|^2, 1] . [z_b, 1, |z_b|^2]
    left = np.hstack([-2 * z, sq[:, None], np.ones((len(z), 1), np.float32)])
    right = np.hstack([z, np.ones((len(z), 1), np.float32), sq[:, None]])
    pairs = []
    for i in range(0, len(z), TILE):
        for j in range(i, len(z), TILE):
            a, b = np.nonzero(left[i:i + TILE] @ right[j:j + TILE].T <= limit)
            a, b = a + i, b + j
            keep = a < b
            a, b = a[keep], b[keep]
            sims = np.einsum("ij,ij->i", means[a], means[b])
            hit = sims >= threshold
            pairs += zip(a[hit].tolist(), b[hit].tolist(), sims[hit].tolist())
    return pairs


def project_2d(cache: Cache, method: str = "pca", seed: int = 0, means: np.ndarray | None = None) -> np.ndarray:
    """2-D coordinates of every video's mean embedding, float32 (V, 2): PCA, or t-SNE (slower, local structure)."""
    means = video_means(cache) if means is None else means
    if method == "pca":
        from sklearn.decomposition import PCA
        return PCA(n_components=2, random_state=seed).fit_transform(means).astype(np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE
        perplexity = float(min(30, max(2, (len(means) - 1) // 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            means).astype(np.float32)
    raise ConfigError(f"projection method must be pca or tsne, got {method!r}")


def plot_projection(cache: Cache, coords: np.ndarray, file: str | Path, title: str) -> None:
    """Write a PNG scatter of the 2-D coordinates, one colour per class."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6.5))
    cmap = plt.get_cmap("tab10" if len(cache.class_names) <= 10 else "tab20")
    for c, name in enumerate(cache.class_names):
        pts = coords[cache.labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=14, color=cmap(c % cmap.N), label=f"{name} ({len(pts)})")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(file, dpi=110)
    plt.close(fig)


def group_leakage(cache: Cache, parts: np.ndarray, groups: np.ndarray, near_duplicates: list[dict]) -> dict:
    """Leakage by group, as plain data: `straddling`, the groups with clips in more than one part (with the count in
    each), and `near_duplicate_groups`, the pairs of groups in different parts holding near-duplicates (the pairs
    of find_outliers' near_duplicates whose `leak` is true), with how many pairs and the highest similarity.

    parts, groups: str (V,) of the cache's clips, as cache/split.csv gives them.
    """
    counts: dict[str, dict[str, int]] = {}
    for g, p in zip(groups, parts):
        counts.setdefault(str(g), {}).setdefault(str(p), 0)
        counts[str(g)][str(p)] += 1
    straddling = [{"group": g, "parts": c} for g, c in sorted(counts.items())
                  if len([p for p in c if p != "unused"]) > 1]
    group_of = dict(zip(cache.clip_ids(), (str(g) for g in groups)))
    pairs: dict[tuple, dict] = {}
    for d in near_duplicates:
        if not d["leak"]:
            continue
        (ga, pa), (gb, pb) = sorted([(group_of[d["a"]], d["parts"][0]), (group_of[d["b"]], d["parts"][1])])
        row = pairs.setdefault((ga, gb, pa, pb), {"a": ga, "b": gb, "parts": [pa, pb], "pairs": 0,
                                                  "max_similarity": 0.0})
        row["pairs"] += 1
        row["max_similarity"] = max(row["max_similarity"], d["similarity"])
    return {"straddling": straddling,
            "near_duplicate_groups": sorted(pairs.values(), key=lambda r: (-r["pairs"], -r["max_similarity"]))}


def split_file(cache_path: str | Path, split_path: str | Path | None = None) -> Path:
    """The split CSV to read: split_path, or split.csv beside the cache."""
    return Path(split_path) if split_path else Path(cache_path).with_name(Path(SPLIT_PATH).name)


def load(cache_path: str | Path, split_path: str | Path | None = None) -> tuple[Cache, np.ndarray | None]:
    """The cache, opened lazily (embeddings left in the file), and its split parts (None when there is no split
    file; a stale split is an error)."""
    cache = open_cache(cache_path)
    split_path = split_file(cache_path, split_path)
    return cache, read_split(split_path, cache.clip_ids()) if split_path.is_file() else None


def frame_spec(cache: Cache) -> FrameSpec:
    """The frames the cache's embeddings were made from: the resize and crop of the preprocessing it recorded
    (attrs preprocess_config, the encoder's pixel settings as JSON, and preprocess), as the decode workers make
    them. CacheError when the cache does not record them."""
    from pipeline.video import FrameSpec  # the decoder (PyAV) is imported only by a caller that decodes

    try:
        pixels = json.loads(cache.attrs["preprocess_config"])
        return FrameSpec(pixels["size"]["shortest_edge"], pixels["crop_size"]["height"],
                         pixels["crop_size"]["width"], cache.attrs["preprocess"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CacheError(f"the cache does not record the preprocessing its frames had ({type(e).__name__}: {e}): "
                         "re-run stage one to rebuild it") from None


if __name__ == "__main__":  # python -m pipeline.inspector: the command line lives in pipeline.cli
    from pipeline.cli import inspect
    raise SystemExit(inspect())
