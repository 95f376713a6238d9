"""Look inside a feature cache: summary, one video's frames, neighbours, a 2-D map, likely mislabels and leakage.

The library behind `clip-har-inspect` (pipeline.tools.cli) and the app's Embeddings page. The cache is opened lazily:
embeddings are read a block of videos at a time, so memory grows with V x D, not V x F x D.
"""
from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import numpy as np

from pipeline.extract.cache import KEY_ATTRS, Cache, open_cache
from pipeline.errors import CacheError, ConfigError, DataError, printable
from pipeline.decode.frames import FrameSpec
from pipeline.heads.neardup import principal_axes, similar_pairs
from pipeline.paths import SPLIT_PATH
from pipeline.heads.split_file import PARTS, read_split

NEAR_DUPLICATE = 0.98  # cosine similarity of mean embeddings above which two videos count as near-duplicates
BLOCK_FLOATS = 1 << 20  # similarities to the class centroids computed at once, (rows, C) float32: 4 MiB
TOP = 1000  # likely-mislabelled videos and near-duplicate pairs kept at most (the totals are always counted)
GROUPING_HINT = ("if clips were cut from one recording, keep them together with "
                 "`dvc exp run -S split.method=group -S split.group_by=stem` (docs/datasets.md)")
# Categorical colours, one per class: Tableau 10 up to 10 classes, Kelly's 20 of maximum contrast (white and black
# left out) up to 20; beyond, colours repeat (the class is in each point's tooltip).
TABLEAU10 = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
             "#bab0ac")
KELLY20 = ("#f3c300", "#875692", "#f38400", "#a1caf1", "#be0032", "#c2b280", "#848482", "#008856", "#e68fac",
           "#0067a5", "#f99379", "#604e97", "#f6a600", "#b3446c", "#dcd300", "#882d17", "#8db600", "#654522",
           "#e25822", "#2b3d26")


def summarize(cache: Cache, path: str | Path, parts: np.ndarray | None = None) -> dict:
    """The cache's contents as plain data (`clip-har-inspect --json`; keys documented in docs/inspect.md)."""
    counts = np.bincount(cache.labels, minlength=len(cache.class_names))
    classes = {name: {"videos": int(counts[c])} for c, name in enumerate(cache.class_names)}
    if parts is not None:  # (C, P) counts in one pass: a loop over classes would be C x V comparisons
        by_part = np.zeros((len(cache.class_names), len(PARTS)), np.int64)
        column = {p: i for i, p in enumerate(PARTS)}
        known = np.array([p in column for p in parts], bool)
        np.add.at(by_part, (cache.labels[known], np.array([column[p] for p in parts[known]], np.int64)), 1)
        for c, name in enumerate(cache.class_names):
            classes[name].update({p: int(by_part[c, i]) for i, p in enumerate(PARTS)})
    a = cache.attrs
    # each clip's own frames: all F of a fixed count; 1 to F by frame rate (the rest of its row is padding)
    own = cache.sampled if cache.sampled is not None else np.full(len(cache), cache.embeddings.shape[1])
    return {
        "path": str(path),
        "size_bytes": Path(path).stat().st_size,
        "schema_version": a.get("schema_version"),
        "videos": len(cache),
        "classes": classes,
        "frames_per_video": int(cache.embeddings.shape[1]),
        "frames_sampled": {"min": _stat(own, np.min), "median": _stat(own, np.median), "max": _stat(own, np.max)},
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
    the cache; ConfigError naming the nearest paths when it is not there."""
    hits = np.flatnonzero(cache.clip_ids() == path)
    hits = hits if len(hits) else np.flatnonzero(cache.paths == path)
    if not len(hits):
        similar = nearest_paths(cache, path)
        raise ConfigError(f"{printable(path)} is not in the cache (paths are relative to the data root"
                          + (f"; did you mean {', '.join(printable(p) for p in similar)}?)" if similar else ")"))
    return int(hits[0])


def nearest_paths(cache: Cache, path: str, n: int = 3) -> list[str]:
    """Up to n of the cache's paths closest to `path`: the same file name first, then difflib's closest."""
    paths = list(dict.fromkeys(cache.paths.tolist()))
    same_name = [p for p in paths if Path(p).name == Path(path).name]
    close = difflib.get_close_matches(path, paths, n=n, cutoff=0.5)
    return list(dict.fromkeys(same_name + close))[:n]


def frame_report(cache: Cache, path: str, means: np.ndarray | None = None) -> list[dict]:
    """Per sampled frame of one video (its own: not a cache's padding past them): index, timestamp, embedding norm,
    cosine to the previous frame and to each class centroid."""
    v = row_of(cache, path)
    emb = cache.embeddings[v][:cache.sampled[v]]  # (F_v, D)
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
                  means: np.ndarray | None = None, top: int = TOP) -> dict:
    """Likely mislabelled videos and near-duplicates, as plain data; at most `top` of each kept, the totals counted.

    mislabelled: videos nearer another class's centroid than to their own (own centroid computed without the
    video itself), the `top` most suspicious first; mislabelled_found: how many there are in all.
    near_duplicates: the `top` pairs with cosine >= threshold (or the same bytes, similarity 1.0), pairs across
    split parts first, then the most similar; `leak` is True when the two sit in different split parts.
    near_duplicates_found: {pairs, across_parts (None without a split), top, capped}: every pair that passed.
    Memory: O(V x D + neardup.TILE^2 + top), whatever the data.
    """
    if top < 0:
        raise ConfigError(f"the number of outliers to list must be 0 or more, got {top}")
    means = video_means(cache) if means is None else means
    own_sim, other, other_sim = nearer_centroids(cache, means)
    suspicious = np.flatnonzero(own_sim < other_sim)  # NaN (a class of one video) compares False
    order = suspicious[np.argsort((own_sim - other_sim)[suspicious], kind="stable")][:top]
    mislabelled = [{"path": cache.paths[v], "class": cache.class_names[cache.labels[v]],
                    "own_similarity": float(own_sim[v]), "nearer_class": cache.class_names[other[v]],
                    "nearer_similarity": float(other_sim[v])} for v in order]
    found = similar_pairs(means, threshold, top, keys=cache.row_keys(), parts=parts)
    ids = cache.clip_ids()
    near = [{"a": ids[a], "b": ids[b], "similarity": s,
             "same_bytes": cache.content_hash[a] == cache.content_hash[b],
             "parts": [str(parts[a]), str(parts[b])] if parts is not None else None,
             "leak": bool(parts is not None and parts[a] != parts[b])}
            for a, b, s in found.pairs]
    return {"mislabelled": mislabelled, "mislabelled_found": len(suspicious), "near_duplicates": near,
            "near_duplicates_found": {"pairs": found.passed, "across_parts": found.across if parts is not None
                                      else None, "top": top, "capped": found.passed > len(near)}}


def nearer_centroids(cache: Cache, means: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per video: cosine to its own class's centroid without itself (NaN for a class of one), the nearest other
    class and the cosine to its centroid: float32 (V,), int64 (V,), float32 (V,). BLOCK_FLOATS at a time."""
    num_classes, v = len(cache.class_names), len(means)
    sums = np.zeros((num_classes, means.shape[1]), np.float32)
    np.add.at(sums, cache.labels, means)
    counts = np.bincount(cache.labels, minlength=num_classes)
    centroids = _unit(sums)
    own_sim = np.full(v, np.nan, np.float32)
    other, other_sim = np.zeros(v, np.int64), np.full(v, -np.inf, np.float32)
    step = max(1, BLOCK_FLOATS // max(num_classes, 1))
    for start in range(0, v, step):
        rows = slice(start, start + step)
        labels = cache.labels[rows]
        own = _unit(sums[labels] - means[rows])  # leave-one-out: the class without this video
        own_sim[rows] = np.where(counts[labels] > 1, np.sum(means[rows] * own, axis=1), np.nan)
        if num_classes < 2:
            continue
        sims = means[rows] @ centroids.T  # (B, C)
        sims[np.arange(len(labels)), labels] = -np.inf
        other[rows] = sims.argmax(axis=1)
        other_sim[rows] = sims[np.arange(len(labels)), other[rows]]
    return own_sim, other, other_sim


def project_2d(cache: Cache, method: str = "pca", seed: int = 0, means: np.ndarray | None = None) -> np.ndarray:
    """2-D coordinates of every video's mean embedding, float32 (V, 2): PCA, or t-SNE (slower, local structure)."""
    means = video_means(cache) if means is None else means
    if method == "pca":  # the two principal directions (no scikit-learn import: seconds on a page's first view)
        centre, basis = principal_axes(means, 2)
        return np.pad((means - centre) @ basis, ((0, 0), (0, 2 - basis.shape[1]))).astype(np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE
        perplexity = float(min(30, max(2, (len(means) - 1) // 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            means).astype(np.float32)
    raise ConfigError(f"projection method must be pca or tsne, got {method!r}")


AXES = {"pca": ("principal component 1", "principal component 2"), "tsne": ("t-SNE 1", "t-SNE 2")}
LEGEND_CLASSES = 20  # classes named in a plot's legend at most (beyond, colours repeat: no legend)


def class_colours(n: int) -> list[str]:
    """One colour per class, "#rrggbb": distinct up to 20 classes (TABLEAU10, then KELLY20); beyond, they repeat."""
    palette = TABLEAU10 if n <= len(TABLEAU10) else KELLY20
    return [palette[c % len(palette)] for c in range(n)]


def plot_projection(cache: Cache, coords: np.ndarray, file: str | Path, title: str, method: str = "pca") -> None:
    """Write a PNG scatter of the 2-D coordinates (float32 (V, 2), from project_2d's `method`), one colour per
    class, axes named for the method, every class in the legend (up to LEGEND_CLASSES)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6.5))
    colours = class_colours(len(cache.class_names))
    for c, name in enumerate(cache.class_names):
        pts = coords[cache.labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=14, color=colours[c], label=f"{printable(name)} ({len(pts)})")
    ax.set_title(title)
    ax.set_xlabel(AXES[method][0])
    ax.set_ylabel(AXES[method][1])
    if len(cache.class_names) <= LEGEND_CLASSES:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(file, dpi=110)
    plt.close(fig)


def nearest_classes(centroids: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Each class's k nearest other classes by centroid cosine, nearest first: int64 (C, k') and float32 (C, k'),
    k' = min(k, C - 1); BLOCK_FLOATS at a time, never the (C, C) matrix."""
    n = len(centroids)
    k = max(0, min(k, n - 1))
    idx, sims = np.zeros((n, k), np.int64), np.zeros((n, k), np.float32)
    step = max(1, BLOCK_FLOATS // max(n, 1))
    for start in range(0, n if k else 0, step):
        block = centroids[start:start + step] @ centroids.T  # (B, C)
        rows = np.arange(len(block))
        block[rows, rows + start] = -np.inf  # not itself
        for i in range(k):  # k argmax passes: for a few neighbours, several times faster than argpartition
            best = block.argmax(axis=1)
            idx[start + rows, i], sims[start + rows, i] = best, block[rows, best]
            block[rows, best] = -np.inf
    return idx, sims


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


def source_file(root: str | Path, path: str) -> Path:
    """The file of a cached video `path` under the data root the project's own settings name (`root`: params.yaml's
    data.root), resolved; DataError when the path leaves that root, as written (absolute, `..` after
    normalisation) or through a symbolic link. A cache's own `data_root` attribute is never a place to read: it is
    what the cache says, and a cache can come from anyone."""
    base = Path(root).resolve()
    if "\0" in path:
        raise DataError(f"{printable(path)}: a cached path with a NUL byte is not read")
    lexical = Path(os.path.normpath(base / path))  # an absolute path replaces base: refused below
    if not lexical.is_relative_to(base):
        raise DataError(f"{printable(path)} is outside the data root {printable(base)} (data.root): not read")
    real = lexical.resolve()
    if not real.is_relative_to(base):
        raise DataError(f"{printable(path)} leads out of the data root {printable(base)} through a symbolic link: "
                        "not read")
    return real


def frame_spec(cache: Cache) -> FrameSpec:
    """The frames the cache's embeddings were made from: the resize and crop of the preprocessing it recorded
    (attrs preprocess_config, the encoder's pixel settings as JSON, and preprocess), as the decode workers make
    them. CacheError when the cache does not record them."""
    try:
        return FrameSpec.from_pixels(json.loads(cache.attrs["preprocess_config"]), cache.attrs["preprocess"])
    except (KeyError, TypeError, json.JSONDecodeError) as e:  # a crafted or older cache (ConfigError: another kind)
        raise CacheError(f"the cache does not record the preprocessing its frames had ({type(e).__name__}: "
                         f"{printable(str(e))[:200]}): re-run stage one to rebuild it") from None


if __name__ == "__main__":  # python -m pipeline.tools.inspector: the command line lives in pipeline.tools.cli
    from pipeline.tools.cli import inspect
    raise SystemExit(inspect())
