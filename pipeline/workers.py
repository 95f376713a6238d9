"""The reader: videos hashed, decoded, resized and cropped in a pool of isolated worker processes with limits.

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
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from itertools import repeat

from pebble import ProcessExpired, ProcessPool

from pipeline.errors import BrokenInstall, Unusable, VideoError
from pipeline.video import SEEK_GAP, Clip, DecodeLimits, FrameSpec, content_hash, read_frames, sample_indices

VIDEOS_PER_WORKER = 200  # a worker is replaced after this many videos: decoders can leak
# What every worker imports before its memory limit is set (PyAV loads av.subtitles.stream lazily, at the first
# open; torch resizes): imported once by the forkserver too, so that a worker starts in milliseconds.
WORKER_IMPORTS = ("av.subtitles.stream", "PIL.Image", "torch", "torch.nn.functional")


@dataclass(frozen=True)
class ReadConfig:
    """How every video is read (picklable: it travels to the workers).

    num_frames sampled evenly; spec: the encoder's input size (frames come back uint8 (F, crop_h, crop_w, 3));
    limits: what one video may cost; window: None for even sampling over the whole video, or (lo, hi) to sample
    evenly inside frames [lo, hi) (a timeline window); segment: (start, end) seconds to sample evenly inside (a
    trimmed clip: an annotation's start and end), or None.
    """

    num_frames: int
    spec: FrameSpec | None
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    window: tuple[int, int] | None = None
    segment: tuple[float, float] | None = None


@dataclass
class Loaded:
    """One video read: size and mtime_ns of the file, SHA-256 of its bytes, and the sampled frames."""

    size: int
    mtime_ns: int
    digest: str | None
    clip: Clip


def load_video(file: str, cfg: ReadConfig, hash_bytes: bool = True) -> Loaded:
    """Stat, hash (when hash_bytes) and read one video (runs in a worker). VideoError with the reason if unusable."""
    st = os.stat(file)
    digest = content_hash(file) if hash_bytes else None
    sampler = None
    if cfg.window is not None:
        lo, hi = cfg.window
        sampler = lambda count: min(lo, count - 1) + sample_indices(max(min(hi, count) - min(lo, count - 1), 1),
                                                                     cfg.num_frames)
    clip = read_frames(file, cfg.num_frames, SEEK_GAP, sampler, cfg.limits, cfg.spec, cfg.segment)
    return Loaded(st.st_size, st.st_mtime_ns, digest, clip)


@dataclass(frozen=True)
class PoolConfig:
    """The decode workers (params.yaml: extract.workers, video_timeout_s, worker_memory_mb).

    workers: processes (0: decode in this process, with no isolation: for debugging); timeout_s: wall-clock time
    one video may take; memory_mb: the address space each worker may add to what its imports take (RLIMIT_AS
    set after the imports: a CUDA build of torch maps gigabytes that are never used).
    """

    workers: int = 2
    timeout_s: float = 60.0
    memory_mb: int = 2048


def auto_workers() -> int:
    """extract.workers: auto. One worker per core the process may use (bench/README.md: 2 workers on 2 cores)."""
    return max(1, len(os.sched_getaffinity(0)))


def _worker_init(memory_mb: int) -> None:
    """Runs first in every worker: one thread for each library, every import done, then the memory limit."""
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in WORKER_IMPORTS:
        importlib.import_module(name)
    sys.modules["torch"].set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # the lowest priority: on a CPU-only machine the encoder's threads are the bottleneck, and a worker that
    # preempts one of them stalls them all (measured: at nice 0 and 5, stage one with ViT-B/32 on 2 cores was 8%
    # slower than decoding in a thread; at 19, equal). Workers still get every cycle the encoder leaves idle.
    os.nice(19)
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: a killed run leaves no worker decoding on
    with open("/proc/self/status") as f:
        mapped = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    limit = mapped + memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class DecodePool:
    """Worker processes that run `decode(file, cfg)` (default load_video) one video at a time, with limits.

    `map` yields, in input order, a Loaded or an Unusable (the file and why) for each file; `read` decodes one
    file or raises VideoError. Use as a context manager, or call close().
    """

    def __init__(self, cfg: PoolConfig = PoolConfig(), decode: Callable = load_video):
        self.cfg, self.decode = cfg, decode
        self._pool = None
        if cfg.workers > 0:
            # forkserver: workers start from a clean process (no model, no CUDA, no threads of this one)
            ctx = multiprocessing.get_context("forkserver")
            # Imported once by the server, so that a worker starts in milliseconds: the workers' own imports, and
            # the main module's (every worker re-runs the main module, as multiprocessing does to unpickle what it
            # defines, and finds its imports already there).
            ctx.set_forkserver_preload([__name__, *WORKER_IMPORTS, *_main_module()])
            self._pool = ProcessPool(max_workers=cfg.workers, max_tasks=VIDEOS_PER_WORKER, context=ctx,
                                     initializer=_worker_init, initargs=(cfg.memory_mb,))
            self._pool.schedule(os.getpid)  # pebble starts its workers at the first task: start them now

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
            segments: Iterable[tuple[float, float] | None] | None = None) -> Iterator[Loaded | Unusable]:
        """Read every file; yields per file, in order, a Loaded or an Unusable (the file as given, and why).

        segments: per file, the (start, end) seconds to sample inside (None: cfg.segment). Keeps two videos per
        worker in flight, so workers never wait on the consumer's order.
        """
        jobs = ((file, cfg if seg is None else replace(cfg, segment=tuple(seg)))
                for file, seg in zip(files, repeat(None) if segments is None else segments))
        if self._pool is None:
            for file, file_cfg in jobs:
                yield self._in_process(file, file_cfg, hash_bytes)
            return
        pending: deque = deque()
        ahead = 2 * self.cfg.workers + 1
        for file, file_cfg in jobs:
            pending.append((file, self._pool.schedule(self.decode, args=(file, file_cfg, hash_bytes),
                                                      timeout=self.cfg.timeout_s)))
            while len(pending) >= ahead:
                yield self._result(*pending.popleft())
        while pending:
            yield self._result(*pending.popleft())

    def read(self, file: str, cfg: ReadConfig, hash_bytes: bool = False) -> Loaded:
        """One video through a worker (the app and pipeline.predict); VideoError with the reason if unusable."""
        out = next(self.map([file], cfg, hash_bytes))
        if isinstance(out, Unusable):
            raise out.error()
        return out

    def _in_process(self, file: str, cfg: ReadConfig, hash_bytes: bool) -> Loaded | Unusable:
        try:
            return self.decode(file, cfg, hash_bytes)
        except Exception as e:  # one bad video must never stop the run: its reason is the result
            return _unusable(file, e)

    def _result(self, file: str, future) -> Loaded | Unusable:
        try:
            return future.result()
        except FutureTimeout:
            return Unusable(file, f"timed out after {self.cfg.timeout_s:g} s (extract.video_timeout_s)")
        except ProcessExpired as e:
            code = e.exitcode
            if code is not None and code < 0:
                return Unusable(file, f"decoder crashed (signal {-code}, {signal.Signals(-code).name})")
            return Unusable(file, f"decoder crashed (exit status {code})")
        except Exception as e:
            return _unusable(file, e)


def _main_module() -> list[str]:
    """The main module's name when it was run by name (python -m stages.extract), for the forkserver to import;
    none when it was run as a file or a package's __main__ (multiprocessing does not re-run those by name)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    return [name] if name and name != "__main__" and not name.endswith(".__main__") else []


def _unusable(file: str, e: Exception) -> Unusable:
    """Why `file` could not be used, from the exception's type (never its text). A failure of the installation,
    not of the video (a module that does not import), stops the run instead: it would skip every video."""
    if isinstance(e, ImportError):
        raise BrokenInstall(f"the decode workers cannot run: {type(e).__name__}: {e}") from e
    if isinstance(e, VideoError):
        return Unusable(file, e.reason)
    if isinstance(e, MemoryError):
        return Unusable(file, "ran out of memory while decoding (extract.worker_memory_mb)")
    if isinstance(e, OSError):  # the file's own name is the record's: the error's (an absolute path) is left out
        return Unusable(file, f"cannot be read ({e.strerror or type(e).__name__})")
    return Unusable(file, f"{type(e).__name__}: {e}")
