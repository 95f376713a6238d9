"""Search the cached videos: a text, a cached clip or any video file in, the nearest clips and their best moments out.

The library behind `clip-har-search` (pipeline.tools.cli) and the app's Search page. Scoring (docs/inspect.md,
"Search"): a clip's vector is the unit mean of its unit frame embeddings (pipeline.tools.search_index), ranked by
cosine to the query's unit vector; its moment is its best-scoring frame, read from the cache for the results only.
A text is embedded by the text tower of the cache's own encoder (text_vector: the one call of it); a video file is
decoded, sampled and encoded exactly as stage one does (the decode workers, the cache's encoder and batch size).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, DataError, printable
from pipeline.extract.cache import Cache, clip_id, open_cache
from pipeline.heads.split_file import PARTS, read_split
from pipeline.tools.inspector import row_of, split_file
from pipeline.tools.search_index import SearchIndex, index_path, open_index, unit

SPLIT_PARTS = tuple(p for p in PARTS if p != "unused")  # what --split chooses from
MAX_K = 1000  # results asked for at most


@dataclass
class Hit:
    """One result: the cache's row, its clip id (path, `#t=start,end` for a segment), class name, cosine to the
    query, and its best moment: the sampled frame's position (0..F-1) and timestamp in seconds."""

    row: int
    path: str
    label: str
    score: float
    frame: int
    time: float

    def json(self) -> dict:
        """The entry `clip-har-search --json` prints: exactly path, label, score, time."""
        return {"path": self.path, "label": self.label, "score": self.score, "time": self.time}


@dataclass
class Found:
    """A search's answer: the hits, best first, and its own time in milliseconds (from the query's vector to the
    hits with their moments: no start-up, model loading or text embedding)."""

    hits: list[Hit]
    took_ms: float


@dataclass
class Searcher:
    """A cache opened lazily with its checked index (and its split parts, None without a split file)."""

    cache: Cache
    index: SearchIndex
    parts: np.ndarray | None
    cache_path: Path

    def allowed(self, class_name: str | None = None, split: str | None = None) -> np.ndarray | None:
        """bool (V,) of the clips a filter keeps (None: every clip). ConfigError for a class the cache does not
        have, a part that is not one, or a split asked for without a split file."""
        keep = None
        if class_name is not None:
            if class_name not in self.cache.class_names:
                raise ConfigError(f"no class {printable(class_name)!r} in the cache (classes: "
                                  f"{', '.join(printable(c) for c in self.cache.class_names[:20])}"
                                  f"{', ...' if len(self.cache.class_names) > 20 else ''})")
            keep = self.cache.labels == self.cache.class_names.index(class_name)
        if split is not None:
            if split not in SPLIT_PARTS:
                raise ConfigError(f"--split must be one of {', '.join(SPLIT_PARTS)}, not {printable(split)!r}")
            if self.parts is None:
                raise DataError(f"no split file beside {printable(self.cache_path)}: make it with `dvc repro split`")
            keep = (self.parts == split) if keep is None else keep & (self.parts == split)
        return keep

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None,
               excluded: np.ndarray | None = None) -> Found:
        """The k clips nearest the unit query float32 (D,), among `allowed` (bool (V,); None: all) but not
        `excluded` (bool (V,): the query's own clip), each with its best moment."""
        if not 1 <= k <= MAX_K:
            raise ConfigError(f"-k must be from 1 to {MAX_K}, not {k}")
        started = time.perf_counter()
        if excluded is not None and excluded.any():
            allowed = ~excluded if allowed is None else allowed & ~excluded
        rows, scores = self.index.search(query, k, allowed)
        frames = best_frames(self.cache, rows, query)
        cache = self.cache
        hits = [Hit(int(r), clip_id(str(cache.paths[r]), cache.segment[r]), cache.class_names[cache.labels[r]],
                    float(s), int(f), float(cache.timestamps[r, f])) for r, s, f in zip(rows, scores, frames)]
        return Found(hits, 1e3 * (time.perf_counter() - started))


def best_frames(cache: Cache, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """int64 (n,): for each row, its sampled frame (0..F-1) whose unit embedding is nearest the query (the first
    of equals). Reads those rows' frame embeddings from the cache, nothing else."""
    if not len(rows):
        return np.zeros(0, np.int64)
    rows = np.asarray(rows, np.int64)
    scores = unit(np.asarray(cache.embeddings[rows])) @ query  # (n, F)
    scores[np.arange(scores.shape[1]) >= cache.sampled[rows][:, None]] = -np.inf  # padding is no moment
    return np.argmax(scores, axis=1)


def open_searcher(cache_path: str | os.PathLike, index: str | os.PathLike | None = None) -> Searcher:
    """The cache (open_cache), its index (`<cache stem>.index.h5` beside it unless given; StaleIndex when missing
    or of another cache version) and its split parts when split.csv is beside it."""
    cache = open_cache(cache_path)
    found = open_index(index or index_path(cache_path), cache)
    split = split_file(cache_path)
    return Searcher(cache, found, read_split(split, cache.clip_ids()) if split.is_file() else None, Path(cache_path))


def text_vector(model_id: str, text: str) -> np.ndarray:
    """float32 (D,), unit: `text` through the text tower of the encoder `model_id` (the cache's own), the family's
    way (tokenizer, padding, projection), in the same prompt ensemble as the project's zero-shot classes
    (pipeline.heads.zeroshot.query_embedding with project_templates()). The one place search embeds text.
    ConfigError for an empty text or a wrong zeroshot.templates; HeadError when the model has no text tower or
    tokenizer (a vision-only folder)."""
    from pipeline.embed.hub import may_download
    from pipeline.heads.zeroshot import project_templates, query_embedding

    if not text.strip():
        raise ConfigError("type something to search for")
    return query_embedding(model_id, text.strip(), project_templates(), download=may_download(model_id)).embedding


def cached_query(searcher: Searcher, path: str) -> tuple[np.ndarray, np.ndarray]:
    """(vector, excluded) for "more like this" of a cached clip: its index vector, and bool (V,) marking the clip
    itself (a bare path: every clip of that file). ConfigError naming the nearest paths when it is not cached."""
    cache = searcher.cache
    row = row_of(cache, path)
    excluded = cache.paths == cache.paths[row] if path in set(cache.paths.tolist()) else np.arange(len(cache)) == row
    return searcher.index.vector(row), excluded


@dataclass
class EncodedVideo:
    """A video file encoded for a query: its unit vector (D,), sampled frames uint8 (F, S, S, 3), their
    timestamps (F,) seconds and embeddings float32 (F, D), and its SHA-256."""

    vector: np.ndarray
    frames: np.ndarray
    timestamps: np.ndarray
    embeddings: np.ndarray
    digest: str | None


def encode_video(file: str | os.PathLike, cache: Cache, encoder, pool, limits=None) -> EncodedVideo:
    """A video decoded in `pool` (the caller's decode workers, with stage one's limits), sampled and encoded as
    the cache's clips were (its frames per video, the encoder's preprocessing, stage one's batch size).
    VideoError naming the file when it cannot be used; ConfigError when `encoder` is not the cache's."""
    from pipeline.decode.workers import ReadConfig
    from pipeline.embed.encoder import embed_frames
    from pipeline.tools.predict import stage_one_batch_size

    mine, theirs = encoder.describe()["encoder_fingerprint"], cache.attrs.get("encoder_fingerprint")
    if theirs is not None and mine != theirs:
        raise ConfigError(f"the encoder {printable(encoder.model_id)} is not the one that made the cache "
                          f"(fingerprint {printable(mine)[:12]}, the cache's {printable(theirs)[:12]})")
    kwargs = {} if limits is None else {"limits": limits}
    cfg = ReadConfig(int(cache.embeddings.shape[1]), encoder.frame_spec(), **kwargs)
    loaded = pool.read(os.path.abspath(file), cfg, hash_bytes=True)  # a worker's path: absolute
    embeddings = embed_frames(loaded.clip.frames, encoder, stage_one_batch_size(cache.attrs, encoder))
    return EncodedVideo(unit(unit(embeddings).mean(axis=0)), loaded.clip.frames,
                        np.asarray(loaded.clip.timestamps, np.float64), embeddings, loaded.digest)


def file_query(searcher: Searcher, video: EncodedVideo) -> tuple[np.ndarray, np.ndarray]:
    """(vector, excluded) for "more like this" of an encoded file: excluded marks the cached clips of the same
    bytes (the file itself, wherever it is cached)."""
    return video.vector, searcher.cache.content_hash == video.digest


def is_cached(searcher: Searcher, path: str) -> bool:
    """Whether `path` names a cached clip (its clip id or its file's path)."""
    cache = searcher.cache
    return path in set(cache.paths.tolist()) or path in set(cache.clip_ids().tolist())


def existing_file(path: str) -> Path:
    """`path` as a regular file (DataError when it is not one: missing, a folder)."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{printable(path)} is neither a cached clip nor a video file")
    return file


if __name__ == "__main__":  # python -m pipeline.tools.search: the command line lives in pipeline.tools.search_cli
    from pipeline.tools.search_cli import main
    raise SystemExit(main())
