"""The engine interface stage one runs videos through (reader -> embedder), and the engine on this machine."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Protocol

import numpy as np

from pipeline.extract.cache import clip_id
from pipeline.embed.encoder import Embedder, EncoderConfig
from pipeline.embed.in_worker import WORKER_MODULES, decode_and_embed, describe_in_worker, load_in_worker
from pipeline.embed.recorded import Verified, described, verified
from pipeline.errors import ConfigError, Unusable, printable
from pipeline.decode.frames import FrameSpec
from pipeline.decode.hashing import Hashed
from pipeline.decode.workers import DecodePool, Loaded, PoolConfig, ReadConfig, load_video
from pipeline.threads import WORKER_THREADS, role_threads, set_torch_threads, torch_threads

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


def embedding_pool(pool: PoolConfig, encoder: EncoderConfig, decode: Callable = load_video,
                   checked: Verified | None = None) -> DecodePool:
    """Decode workers that also embed what they decode (the CPU path of both engines): each loads `encoder` as it
    starts (its forkserver preloads the encoder's modules; checked: its record and export as this process verified
    them, opened without checking again) and runs decode_and_embed, at nice 0 (they do all the work:
    pipeline.decode.workers._worker_init)."""
    return DecodePool(pool, partial(decode_and_embed, decode), setup=(load_in_worker, (encoder, checked)),
                      preload=WORKER_MODULES, nice=0)


class LocalEngine:
    """The engine on this machine: the decode workers (reader) feed the embedder; results in completion order.

    On the CPU each decode worker embeds the videos it decodes, on its one thread (in_worker.decode_and_embed): only
    embeddings cross processes, the cores run whole videos side by side, and no thread pool wakes per operation.
    The workers load the encoder as they start, this process never: where its record holds (recorded.verified,
    checked here once for all the workers) the record says what the encoder is, else one of them does
    (describe_in_worker); it never imports torch then (stage one starts sooner: bench/README.md, "Stage one's
    start-up"). On a GPU this process embeds, in passes shared across videos, on THREADS["extract"] threads; with
    workers 0 it decodes and embeds itself, on one thread on the CPU as a worker would (the same bytes:
    docs/engines.md). Where it embeds, torch's thread count is put back on close.
    """

    def __init__(self, encoder: EncoderConfig, pool: PoolConfig, decode: Callable = load_video):
        cpu = encoder.device_type() == "cpu"
        self.in_workers = cpu and pool.workers > 0
        self._threads = None  # torch's count before, where this process embeds
        self.pool: DecodePool | None = None
        self.encoder = None  # loaded here only where this process embeds
        if self.in_workers:  # the workers load the encoder (this process never does): from its record where it holds
            # (checked here once: the folder's hash and the export's check, which each worker did before), which also
            # says what the encoder is; else in full, and one of them says what it is
            encoder.check_batch_size()
            checked = verified(encoder, "cpu")
            self.pool = embedding_pool(pool, encoder, decode, checked)
            try:
                if checked is None:
                    self.encoder_attrs, self.frame_spec, self.batch_size = self.pool.call(describe_in_worker)
                else:
                    recorded = described(encoder, checked)
                    self.encoder_attrs, self.frame_spec = recorded.describe(), recorded.frame_spec()
                    self.batch_size = encoder.batch_for("cpu")
            except BaseException:
                self.close()
                raise
            return
        # embedding here, on the CPU on as many threads as a worker would; set before the load: an onnxruntime session
        # takes torch's count when it is made
        self._threads = torch_threads()
        set_torch_threads(WORKER_THREADS if cpu else role_threads("extract"))
        try:
            self.pool = DecodePool(pool, decode)  # its workers start while the encoder loads
            self.encoder, self.batch_size = encoder.load()
        except BaseException:
            self.close()
            raise
        self.encoder_attrs, self.frame_spec = self.encoder.describe(), self.encoder.frame_spec()

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.pool is not None:  # None: its start failed
            self.pool.close()
        if self._threads is not None:
            set_torch_threads(self._threads)

    def results(self, files: list[str], reader: ReadConfig, known: set[str],
                segments: list[tuple[float, float] | None] | None = None,
                hashed: list[Hashed | None] | None = None) -> Iterator[Result]:
        """As Engine.results: the videos decoded (and, on the CPU, embedded) in the pool; else embedded here in
        passes across videos."""
        embedder = None if self.in_workers else Embedder(self.encoder, self.batch_size)
        segments = segments or [None] * len(files)
        seen = set(known)
        for index, out in enumerate(self.pool.map(files, reader, segments=segments, hashed=hashed)):
            if isinstance(out, Unusable):
                yield index, out, None
                continue
            key = clip_id(out.digest, segments[index])
            if out.embeddings is not None:  # embedded in the worker
                expected = self.encoder_attrs["encoder_fingerprint"]
                if out.fingerprint != expected:
                    raise ConfigError(f"a decode worker loaded another encoder than the run's (fingerprint "
                                      f"{out.fingerprint}, not {expected}): "
                                      f"{printable(self.encoder_attrs['encoder_model'])} changed during the run; "
                                      "run stage one again")
                embeddings, out.embeddings = out.embeddings, None
                yield index, out, None if key in seen else embeddings
                seen.add(key)
                continue
            frames, out.clip.frames = out.clip.frames, None
            if key in seen:
                yield index, out, None
                continue
            seen.add(key)
            yield from ((i, o, emb) for (i, o), emb in embedder.add((index, out), frames))
        if embedder is not None:
            yield from ((i, o, emb) for (i, o), emb in embedder.flush())
