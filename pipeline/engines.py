"""The engine interface stage one runs videos through (reader -> embedder), and the engine on this machine."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np

from pipeline.cache import clip_id
from pipeline.encoder import Embedder, EncoderConfig
from pipeline.errors import Unusable
from pipeline.frames import FrameSpec
from pipeline.workers import DecodePool, Hashed, Loaded, PoolConfig, ReadConfig, load_video

# What an engine yields per video, in any order: the video's index in the list it was given, then what its reader
# made of it (a Loaded whose clip has no frames left, or an Unusable with the reason), then its embeddings
# float32 (F, D), or None where the clip was already known (its row key in `known`, or earlier in this run).
Result = tuple[int, Loaded | Unusable, np.ndarray | None]


class Engine(Protocol):
    """Decodes and embeds videos: what the encoder is (encoder_attrs: its describe(); frame_spec: the frames it
    takes; batch_size: frames per forward pass), and results() for a list of files. A context manager that
    releases its workers (or cluster) on exit."""

    encoder_attrs: dict
    frame_spec: FrameSpec
    batch_size: int

    def results(self, files: list[str], reader: ReadConfig, known: set[str],
                segments: list[tuple[float, float] | None] | None = None,
                hashed: list[Hashed | None] | None = None) -> Iterator[Result]:
        """Decode and embed `files` (segments: per file, the (start, end) seconds to sample inside, or None; hashed:
        per file, its Hashed from stage one's hashing, or None: DecodePool.map); clips whose row key (SHA-256 and
        segment, clip_id) is in `known`, and repeats within the run, are not encoded."""
        ...

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc) -> None: ...


class LocalEngine:
    """The engine on this machine: the decode workers (reader) feed the embedder; results in completion order."""

    def __init__(self, encoder: EncoderConfig, pool: PoolConfig, decode: Callable = load_video):
        self.pool = DecodePool(pool, decode)  # its workers start while the encoder loads
        try:
            self.encoder, self.batch_size = encoder.load()
        except BaseException:
            self.pool.close()
            raise
        self.encoder_attrs, self.frame_spec = self.encoder.describe(), self.encoder.frame_spec()

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.close()

    def results(self, files: list[str], reader: ReadConfig, known: set[str],
                segments: list[tuple[float, float] | None] | None = None,
                hashed: list[Hashed | None] | None = None) -> Iterator[Result]:
        """As Engine.results: the videos decoded in the pool, embedded here in passes across videos."""
        embedder = Embedder(self.encoder, self.batch_size)
        segments = segments or [None] * len(files)
        seen = set(known)
        for index, out in enumerate(self.pool.map(files, reader, segments=segments, hashed=hashed)):
            if isinstance(out, Unusable):
                yield index, out, None
                continue
            key = clip_id(out.digest, segments[index])
            frames, out.clip.frames = out.clip.frames, None
            if key in seen:
                yield index, out, None
                continue
            seen.add(key)
            yield from ((i, o, emb) for (i, o), emb in embedder.add((index, out), frames))
        yield from ((i, o, emb) for (i, o), emb in embedder.flush())
