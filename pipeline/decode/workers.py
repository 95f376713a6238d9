"""The reader: videos (hashed first by pipeline.decode.hashing) decoded, resized and cropped in worker processes.

A worker that crashes, hangs past the timeout or runs out of memory costs only the video it was decoding: the
video gets a reason, the worker is replaced (pebble does that), and the run goes on. Results come back in the
order the videos went in, so what is made from them does not depend on the number of workers.
"""
from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import os
import resource
import signal
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from itertools import repeat

from concurrent.futures.process import BrokenProcessPool

import numpy as np
from pebble import ProcessExpired, ProcessPool

from pipeline.errors import BrokenInstall, InternalError, Unusable, VideoError
from pipeline.decode.frames import FrameSpec
from pipeline.decode.hashing import Hashed, identity, unreadable
from pipeline.decode.server import WORKER_IMPORTS, set_preload
from pipeline.decode.video import SEEK_GAP, Clip, DecodeLimits, content_hash, open_regular, read_frames
from pipeline.threads import WORKER_THREADS, cores, set_torch_threads

# A worker is replaced after this many videos: decoders can leak. Not much more often: a new worker that embeds (stage
# one on the CPU) loads the encoder again (about 0.1 s for the tiny CLIP; at 200, about a sixth of a tiny clip's time).
VIDEOS_PER_WORKER = 1000


@dataclass(frozen=True)
class ReadConfig:
    """How every video is read (picklable: it travels to the workers).

    num_frames sampled evenly, or with fps > 0 that many frames per second, at most num_frames (video.Sampling);
    spec: the encoder's input size (frames come back uint8 (F, crop_h, crop_w, 3)); limits: what one video may
    cost; segment: (start, end) seconds to sample inside (a trimmed clip: an annotation's start and end; a timeline
    window), or None for the whole video.
    """

    num_frames: int
    spec: FrameSpec | None
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    segment: tuple[float, float] | None = None
    fps: float = 0.0


@dataclass
class Loaded:
    """One video read: size and mtime_ns of the file, SHA-256 of its bytes, and the sampled frames; where the worker
    also embedded them (pipeline.embed.in_worker.decode_and_embed), their embeddings float32 (F, D) instead (clip.frames
    None) and the fingerprint of the encoder that made them."""

    size: int
    mtime_ns: int
    digest: str | None
    clip: Clip
    embeddings: np.ndarray | None = None
    fingerprint: str = ""  # of the encoder that made `embeddings`


CHANGED = ("changed while it was being read (written to, or renamed over), twice: run stage one again once it is "
           "complete")


def load_video(file: str, cfg: ReadConfig, hash_bytes: bool | Hashed = True) -> Loaded:
    """Read one video through one open handle (runs in a worker): its SHA-256 (when hash_bytes) and its frames are
    of the same bytes. VideoError with the reason if unusable.

    hash_bytes: True to hash the bytes; False not to (digest None: the app, pipeline.tools.predict); or the Hashed of a
    hashing done before (stage one hashes first, to decode only unknown content). With a hash, the handle's bytes are
    hashed again once decoded (through the same handle): the digest is kept only when
    the bytes before and after decoding hash alike (the Hashed's digest stands for "before" while the handle is
    still that file, same identity) and the handle's identity is still the path's. A file renamed over, written
    to, or rewritten in place with its size and mtime put back (rsync --inplace -t) meanwhile is read again once,
    hashed and decoded anew, then skipped (CHANGED): a row never pairs one file's frames with another's hash.
    """
    for attempt in range(2):
        with open_regular(file) as fh:
            before = identity(os.fstat(fh.fileno()))
            if isinstance(hash_bytes, Hashed) and hash_bytes.identity == before and attempt == 0:
                digest = hash_bytes.digest
            else:
                digest = content_hash(file, fh) if hash_bytes else None
            clip = read_frames(file, cfg.num_frames, SEEK_GAP, None, cfg.limits, cfg.spec, cfg.segment, handle=fh,
                               fps=cfg.fps)
            decoded = content_hash(file, fh) if hash_bytes else None
            after = identity(os.fstat(fh.fileno()))
        if not hash_bytes or (before == after == identity(os.stat(file)) and decoded == digest):
            return Loaded(before[2], before[3], digest, clip)
    raise VideoError(file, CHANGED)


@dataclass(frozen=True)
class PoolConfig:
    """The decode workers (params.yaml: extract.workers, video_timeout_s, worker_memory_mb).

    workers: processes (0: decode in this process, with no isolation: for debugging); timeout_s: wall-clock time
    one video may take; memory_mb: the address space each worker may add to what its imports take (RLIMIT_AS
    set after the imports: a CUDA build of torch maps gigabytes that are never used). named: the skip reasons
    name the setting of the limit hit (extract.video_timeout_s); False for a caller that does not read params.yaml.
    """

    workers: int = 2
    timeout_s: float = 60.0
    memory_mb: int = 2048
    named: bool = True


def auto_workers() -> int:
    """extract.workers: auto. One worker per core the process may use (bench/README.md: 2 workers on 2 cores)."""
    return cores()


def _worker_init(memory_mb: int, setup: tuple[Callable, tuple] | None = None, nice: int = 19) -> None:
    """Runs first in every worker: one thread for each library, every import done, its priority (`nice`), `setup`
    (a function and its arguments: the encoder's load, where the workers embed), then the memory limit."""
    os.environ["OMP_NUM_THREADS"] = str(WORKER_THREADS)
    for name in WORKER_IMPORTS:
        importlib.import_module(name)
    set_torch_threads(WORKER_THREADS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # 19, the lowest priority, where the parent embeds with several threads (the app, predict): a worker that
    # preempts one of them stalls them all (measured when stage one embedded there: at nice 0 and 5, stage one with
    # ViT-B/32 on 2 cores was 8% slower than decoding in a thread; at 19, equal). Workers that embed (stage one on
    # the CPU) do all the work and keep 0: at 19, 2,000 tiny clips took about 9% longer (7 of 7 alternated pairs),
    # the workers giving way at each wake-up of the parent's threads.
    os.nice(nice)
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: a killed run leaves no worker decoding on
    if setup is not None:
        setup[0](*setup[1])
    with open("/proc/self/status") as f:
        mapped = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    limit = mapped + memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class DecodePool:
    """Worker processes that run `decode(file, cfg, hash_bytes)` (default load_video) one video at a time, with
    limits.

    `map` yields, in input order, a Loaded or an Unusable (the file and why) for each file; `read` decodes one
    file or raises VideoError. setup: (function, arguments) every worker runs once as it starts, before its memory
    limit (stage one's encoder load; not run with workers 0); preload: modules the workers' forkserver imports
    once, when this pool is the first to start it; nice: the workers' priority (19, the lowest, unless they embed:
    _worker_init says why). Use as a context manager, or call close().
    """

    def __init__(self, cfg: PoolConfig = PoolConfig(), decode: Callable = load_video,
                 setup: tuple[Callable, tuple] | None = None, preload: tuple[str, ...] = (), nice: int = 19):
        self.cfg, self.decode = cfg, decode
        self._pool = None
        if cfg.workers > 0:
            # forkserver: workers start from a clean process (no model, no CUDA, no threads of this one)
            ctx = multiprocessing.get_context("forkserver")
            set_preload(ctx, preload)
            self._pool = ProcessPool(max_workers=cfg.workers, max_tasks=VIDEOS_PER_WORKER, context=ctx,
                                     initializer=_worker_init, initargs=(cfg.memory_mb, setup, nice))
            self._started = self._pool.schedule(os.getpid)  # pebble starts its workers at the first task: now

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()
            self._pool = None

    def map(self, files: Iterable[str], cfg: ReadConfig, hash_bytes: bool = True,
            segments: Iterable[tuple[float, float] | None] | None = None,
            hashed: Iterable[Hashed | None] | None = None) -> Iterator[Loaded | Unusable]:
        """Read every file; yields per file, in order, a Loaded or an Unusable (the file as given, and why).

        segments: per file, the (start, end) seconds to sample inside (None: cfg.segment). hashed: per file, its
        Hashed from a hashing done before, or None (load_video's hash_bytes): a file still the one hashed is not
        hashed again before decoding (only after, to check that the bytes decoded are those hashed), so the
        bounded hashing (extract.hash_timeout_s) is done before the decode timeout starts. Keeps two videos per
        worker in flight, so workers never wait on the consumer's order.
        """
        jobs = ((file, cfg if seg is None else replace(cfg, segment=tuple(seg)),
                 hash_bytes if pre is None else pre)
                for file, seg, pre in zip(files, repeat(None) if segments is None else segments,
                                          repeat(None) if hashed is None else hashed))
        if self._pool is None:
            for file, file_cfg, how in jobs:
                yield self._in_process(file, file_cfg, how)
            return
        pending: deque = deque()
        ahead = 2 * self.cfg.workers + 1
        for file, file_cfg, how in jobs:
            pending.append((file, self._schedule(self.decode, (file, file_cfg, how), self.cfg.timeout_s)))
            while len(pending) >= ahead:
                yield self._result(*pending.popleft())
        while pending:
            yield self._result(*pending.popleft())

    def read(self, file: str, cfg: ReadConfig, hash_bytes: bool = False) -> Loaded:
        """One video through a worker (the app and pipeline.tools.predict); VideoError with the reason if unusable."""
        out = next(self.map([file], cfg, hash_bytes))
        if isinstance(out, Unusable):
            raise out.error()
        return out

    def call(self, fn: Callable, *args):
        """fn(*args) in a worker (after its setup; workers 0: here), unbounded in time: its result, or its
        exception raised here."""
        if self._pool is None:
            return fn(*args)
        return self._schedule(fn, args, None).result()

    def _schedule(self, fn: Callable, args: tuple, timeout: float | None):
        try:
            return self._pool.schedule(fn, args=args, timeout=timeout)
        except RuntimeError:  # pebble's pool is broken: say why when its workers died as they started
            if self._started.done() and isinstance(self._started.exception(), BrokenProcessPool):
                raise BrokenInstall("the decode workers died as they started (their own message, above, says why; "
                                    "a script that starts stage one needs `if __name__ == \"__main__\":`)") from None
            raise

    def _in_process(self, file: str, cfg: ReadConfig, hash_bytes: bool | Hashed) -> Loaded | Unusable:
        try:
            return self.decode(file, cfg, hash_bytes)
        except Exception as e:  # one bad video must never stop the run: its reason is the result
            return _unusable(file, e, self.cfg.named)

    def _result(self, file: str, future) -> Loaded | Unusable:
        try:
            return future.result()
        except FutureTimeout:
            setting = " (extract.video_timeout_s)" if self.cfg.named else ""
            return Unusable(file, f"timed out after {self.cfg.timeout_s:g} s{setting}")
        except ProcessExpired as e:
            code = e.exitcode
            if code is not None and code < 0:
                return Unusable(file, f"decoder crashed (signal {-code}, {signal.Signals(-code).name})")
            return Unusable(file, f"decoder crashed (exit status {code})")
        except Exception as e:
            return _unusable(file, e, self.cfg.named)


def _unusable(file: str, e: Exception, named: bool = True) -> Unusable:
    """Why `file` could not be used, from the exception's type (never its text); named: say which setting bounds
    it. A failure of the installation, not of the video (a module that does not import), stops the run instead:
    it would skip every video."""
    if isinstance(e, ImportError):
        raise BrokenInstall(f"the decode workers cannot run: {type(e).__name__}: {e}") from e
    if isinstance(e, BrokenInstall):
        raise e
    if isinstance(e, VideoError):
        return Unusable(file, e.reason, type(e))
    if isinstance(e, MemoryError):
        return Unusable(file, "ran out of memory while decoding" + (" (extract.worker_memory_mb)" if named else ""))
    if isinstance(e, OSError):
        return unreadable(file, e)
    # anything else is a bug in this code, not the video's fault: skipped all the same, but said so and counted apart,
    # with the traceback (a worker's, which pebble hands over as the exception's cause) for the bug report
    remote = getattr(e.__cause__, "traceback", None)
    detail = remote if isinstance(remote, str) else "".join(traceback.format_exception(e))
    return Unusable(file, f"internal error, a bug in clip-har rather than the video ({type(e).__name__}: {e})",
                    InternalError, detail)
