"""Stage one's runner: the videos to encode, through an engine (reader -> embedder), into the writer's parts and cache.

Unit of work: a *part* file (pipeline.extract.writer) holding up to `shard_size` newly encoded clips keyed by content
hash and segment (Cache.row_keys: a whole file, or a segment of one that an annotation file names). The cache is the
join of the previous cache and the parts, renamed over the old one at the end; a killed run leaves the previous
cache untouched and its finished parts reused by the next run.
"""
from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from pipeline.data.annotations import read_annotations, read_class_names
from pipeline.data.discover import FOLLOW_LINKS, VIDEO_EXTENSIONS, VideoFile, discover_videos
from pipeline.decode.sampling import Sampling
from pipeline.decode.video import DecodeLimits
from pipeline.decode.hashing import hash_videos
from pipeline.decode.workers import Loaded, PoolConfig, ReadConfig, auto_workers, load_video
from pipeline.embed.encoder import EncoderConfig
from pipeline.errors import (CacheError, ConfigError, DataError, InternalError, Unusable, VideoError, number,
                             printable)
from pipeline.extract.cache import empty_cache
from pipeline.extract.choices import STORAGE_DTYPES
from pipeline.extract.cache_door import disk_problem, finite_rows
from pipeline.extract.engines import Engine, LocalEngine
from pipeline.extract.plan import Plan, Rounds, Work
from pipeline.extract.reuse import previous_attrs, reusable
from pipeline.extract.summary import SHOWN_SKIPS, ExtractSummary  # noqa: F401 (SHOWN_SKIPS: as callers import it)
from pipeline.extract.writer import PartWriter, VideoRow, assemble_cache, cache_attributes, write_skipped_list
from pipeline.paths import CACHE_PATH
from pipeline.settings import ENGINES
from pipeline.progress import progress_bar

# The settings a remembered failure was met under (the cache's decode_limits attribute): the pool's bounds, hashing's
# and every per-video limit (DecodeLimits). A file that failed under other values is read again.
FAILURE_LIMITS = ("video_timeout_s", "hash_timeout_s", "worker_memory_mb", *(f.name for f in fields(DecodeLimits)))


@dataclass
class ExtractConfig:
    """Stage one's settings (params.yaml: data.root, data.annotations, data.classes, encoder.model, extract.*).

    The encoder's settings go to EncoderConfig (encoder()), the decode workers' to PoolConfig (pool()) and the
    per-video limits to DecodeLimits (limits()); their defaults are those classes' own.
    """

    root: str
    cache_path: str = CACHE_PATH
    annotations: str = ""  # data.annotations: "" = a folder per class under root, else a file (data.annotations)
    classes: str = ""  # data.classes: class names, one per line (an mmaction2 list's labels index them)
    follow_links: str = FOLLOW_LINKS[0]  # data.follow_links: inside (links to targets under root only) | all
    model: str = "openai/clip-vit-base-patch32"
    num_frames: int = Sampling.num_frames  # frames sampled evenly per clip (fps 0)
    fps: float = 0.0  # > 0: frames per second of each clip instead, at most max_frames (Sampling)
    max_frames: int = 64
    batch_size: int | str = EncoderConfig.batch_size  # frames per forward pass; auto: encoder.auto_batch_size
    device: str = EncoderConfig.device
    precision: str = EncoderConfig.precision  # fp32 | fp16 | bf16 | auto (fp32 on the CPU, AUTO_PRECISION on CUDA)
    preprocess: str = EncoderConfig.preprocess
    backend: str = EncoderConfig.backend  # auto | torch | onnxruntime (CPU only: pipeline.embed.onnx_backend)
    quantize: str = EncoderConfig.quantize  # "int8" (onnxruntime only): quantised MatMuls, faster, less exact
    shard_size: int = 64  # videos per part file: the work a kill can lose
    workers: int | str = "auto"  # decode worker processes; 0 = in this process (debugging); auto = one per core
    video_timeout_s: float = PoolConfig.timeout_s  # wall-clock time one video may take to decode
    hash_timeout_s: float = 600.0  # wall-clock time hashing one file may take (not counted in video_timeout_s)
    worker_memory_mb: int = PoolConfig.memory_mb  # memory a decode worker may take beyond its imports
    max_pixels: int = DecodeLimits.max_pixels  # per frame (8K UHD)
    max_aspect: float = DecodeLimits.max_aspect  # long side / short side
    max_damaged: float = DecodeLimits.max_damaged  # fraction of a video's packets that may fail to decode
    engine: str = "local"  # local: this machine; ray: a Ray cluster (pipeline.extract.ray_engine, requirements-ray.txt)
    ray_address: str = ""  # engine ray: "" starts a Ray on this machine; "auto" or "host:port" joins a cluster
    # False: a file with the (path, size, mtime) of the cache's row is taken as unchanged, and a file skipped before
    # with its (path, size, mtime) as failing again, without reading it. True: every file's bytes are hashed again
    # (catches a file replaced with its mtime preserved: cp -p, rsync -a, touch -r) and skipped files are retried.
    rehash: bool = False
    dtype: str = "float32"  # how the cache stores embeddings: float32 | float16 (half the size; read as float32)

    def __post_init__(self) -> None:  # settings every video needs: refused once, not as a skip reason per video
        self.num_frames = number(self.num_frames, int, "extract.num_frames", 1)
        self.fps = number(self.fps, float, "extract.fps", 0)
        self.max_frames = number(self.max_frames, int, "extract.max_frames", 1)
        if self.fps and self.engine == "ray":
            raise ConfigError("extract.fps needs extract.engine: local (the Ray engine samples num_frames per video)")
        self.shard_size = number(self.shard_size, int, "extract.shard_size", 1)

    def encoder(self) -> EncoderConfig:
        """The encoder these settings name, and how it runs."""
        return EncoderConfig(self.model, self.device, self.precision, self.preprocess, self.backend, self.quantize,
                             self.batch_size, self.sampling().num_frames)

    def sampling(self) -> Sampling:
        """How each clip's frames are chosen: extract.num_frames evenly, or with extract.fps > 0 that many a second,
        at most extract.max_frames."""
        return Sampling(self.max_frames, self.fps) if self.fps else Sampling(self.num_frames)

    def pool(self) -> PoolConfig:
        """The decode workers' settings (extract.workers auto: one per core)."""
        workers = auto_workers() if self.workers == "auto" else self._number("workers", int)
        return PoolConfig(workers, self._number("video_timeout_s", float), self._number("worker_memory_mb", int))

    def limits(self) -> DecodeLimits:
        """What one video may cost (extract.max_pixels, max_aspect, max_damaged)."""
        return DecodeLimits(self._number("max_pixels", int), self._number("max_aspect", float),
                            max_damaged=self._number("max_damaged", float))

    def failure_limits(self) -> dict[str, float]:
        """The settings a failure is remembered under (FAILURE_LIMITS; the cache's decode_limits attribute)."""
        return {name: float(getattr(self, name)) for name in FAILURE_LIMITS}

    def _number(self, name: str, kind: type) -> int | float:
        """extract.<name> as a number of `kind`; ConfigError naming the setting when it is not one."""
        return number(getattr(self, name), kind, f"extract.{name}")


PROBLEMS = "cannot be used as found or listed (data.root, data.annotations)"  # the kind of discovery's skips
NOT_FINITE = "the encoder gave embeddings that are not finite numbers (NaN, infinite or huge)"
REMEMBERED = "failed before and unchanged since (not read again; extract.rehash: true retries them)"


def skipped_list_path(cache_path: str | os.PathLike) -> Path:
    """Where the full list of a cache's skips goes: beside it, <cache stem>.skipped.tsv (SKIPPED_LIST for the
    project's cache, which a test checks)."""
    return Path(cache_path).with_suffix(".skipped.tsv")


def extract_features(cfg: ExtractConfig, progress: bool = True, decode: Callable = load_video) -> ExtractSummary:
    """Bring the cache at cfg.cache_path up to date with the videos under cfg.root; returns what was done.

    Only videos whose content hash is not already in the cache (or in parts of an interrupted run) with the same
    encoder, backend, quantisation, sampling, preprocessing, precision and decoder are decoded and encoded; removed
    videos are dropped.
    decode: what the workers run per video (tests put a faulty decoder here).
    """
    _refuse_worker_rerun()
    if cfg.engine not in ENGINES:
        raise ConfigError(f"extract.engine must be one of {ENGINES}, got {cfg.engine!r}")
    started = time.perf_counter()
    cache_path, sampling = Path(cfg.cache_path), cfg.sampling()
    parts_dir = cache_path.with_name(cache_path.name + ".parts")
    _check_paths(cfg)
    if cfg.dtype not in STORAGE_DTYPES:
        raise ConfigError(f"extract.dtype must be one of {STORAGE_DTYPES}, got {cfg.dtype!r}")
    with _locked(cache_path):
        videos, class_names, problems = dataset(cfg)
        with open_engine(cfg, decode, previous_attrs(cache_path)) as engine:
            attrs = cache_attributes(engine.encoder_attrs, sampling, engine.batch_size, cfg.root, cfg.dtype,
                                     cfg.annotations, cfg.failure_limits())
            template = empty_cache(sampling.num_frames, attrs["embedding_dim"], attrs, class_names)
            summary = ExtractSummary(str(cache_path), sampling=sampling)
            for name, line in problems:  # what the listing refused stays first, in its order
                summary.skip(name, line, PROBLEMS, DataError.__name__)
            sources, summary.note = reusable(cache_path, parts_dir, attrs)
            reader = ReadConfig(sampling.num_frames, engine.frame_spec, cfg.limits(), fps=sampling.fps)
            writer = PartWriter(parts_dir, template, cfg.shard_size)
            kept = _encode_new(Plan(videos, sources, attrs["decode_limits"], bool(cfg.rehash)), engine, reader,
                               writer, summary, progress, cfg._number("hash_timeout_s", float))
        summary.skipped[len(problems):] = sorted(summary.skipped[len(problems):])  # the rest by name
        if not kept:
            raise DataError(f"none of the {len(videos) + len(problems)} videos under {cfg.root!r} could be used:"
                            f"\n{summary}")
        assemble_cache(cache_path, kept, sources + writer.parts, template, sorted(summary.skipped),
                       summary.skipped_stat, summary.skipped_kind)
        try:
            summary.skipped_list = str(write_skipped_list(skipped_list_path(cache_path), summary.skipped))
        except OSError as e:
            raise disk_problem(e, cache_path.parent) or e from None
        shutil.rmtree(parts_dir, ignore_errors=True)
    summary.seconds = time.perf_counter() - started
    return summary


@contextmanager
def _locked(cache_path: Path) -> Iterator[None]:
    """Hold the cache's lock file (`<cache>.lock`) for the run: CacheError at once when another run holds it."""
    lock = FileLock(str(cache_path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:  # before OSError: filelock's Timeout is a TimeoutError
        raise CacheError(f"another stage-one run is writing {cache_path} (lock {lock.lock_file} is held): "
                         "wait for it to finish") from None
    except OSError as e:  # a read-only folder, a full disk
        raise disk_problem(e, cache_path.parent) or e from None
    try:
        yield
    finally:
        lock.release()


def _refuse_worker_rerun() -> None:
    """A decode worker running the parent's main script again (multiprocessing does, as `__mp_main__`) got here:
    the script calls extract_features without `if __name__ == "__main__":`. It exits with the sentence saying so."""
    if multiprocessing.current_process().name != "MainProcess" and "__mp_main__" in sys.modules:
        main = printable(getattr(sys.modules["__mp_main__"], "__file__", "the main script"))
        sys.stderr.write(f"error: {main} calls extract_features at its top level, and every decode worker runs "
                         "that script again as it starts: put the call under `if __name__ == \"__main__\":`\n")
        sys.stderr.flush()
        os._exit(2)  # not an exception: the script's own except clauses must not see it


def dataset(cfg: ExtractConfig) -> tuple[list[VideoFile], list[str], list[tuple[str, str]]]:
    """The videos stage one encodes, their class names and (path, reason) for what cannot be used: those the
    annotation file names (data.annotations), else the class folders under the data root. DataError when the
    folders hold no video."""
    if cfg.annotations:
        return read_annotations(cfg.annotations, cfg.root, cfg.classes, cfg.follow_links)
    names = read_class_names(cfg.classes).names if cfg.classes else None
    videos, class_names, problems = discover_videos(cfg.root, names, cfg.follow_links)
    if not videos:
        raise DataError(f"no videos under {printable(cfg.root)!r}: expected {printable(cfg.root)}/<class>/<video>.mp4 "
                        f"({', '.join(e[1:] for e in VIDEO_EXTENSIONS)}), or set data.annotations")
    return videos, class_names, problems


def open_engine(cfg: ExtractConfig, decode: Callable = load_video, previous: dict | None = None) -> Engine:
    """The engine extract.engine names, from the encoder and pool settings (decode: what the workers run; previous:
    the attributes of the cache the run extends, EncoderConfig.extending)."""
    encoder = cfg.encoder().extending(previous or {})
    if cfg.engine == "ray":
        from pipeline.extract.ray_engine import RayEngine  # the local engine never imports Ray
        return RayEngine(encoder, cfg.pool(), decode, cfg.ray_address)
    return LocalEngine(encoder, cfg.pool(), decode)


def _check_paths(cfg: ExtractConfig) -> None:
    """DataError or CacheError before any work when the data root or the cache's place cannot be used."""
    root, cache_path = Path(cfg.root), Path(cfg.cache_path)
    if not root.is_dir():
        raise DataError(f"data root {cfg.root!r} is not a directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise DataError(f"data root {cfg.root!r} cannot be read (permission denied)")
    if cache_path.is_dir():
        raise CacheError(f"the cache path {printable(cfg.cache_path)!r} is a folder: remove the folder (stage one "
                         "writes the cache, a file, there)")
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise disk_problem(e, cache_path.parent) or CacheError(
            f"cannot create the cache's folder {printable(cache_path.parent)!r}: {e.strerror}") from None
    if not os.access(cache_path.parent, os.W_OK | os.X_OK):
        raise disk_problem(OSError(errno.EACCES, "not writable"), cache_path.parent)


def _encode_new(plan: Plan, engine: Engine, reader: ReadConfig, writer: PartWriter, summary: ExtractSummary,
                progress: bool, hash_timeout_s: float = ExtractConfig.hash_timeout_s) -> list[VideoRow]:
    """The loop joining the roles: hashing, then the engine (reader -> embedder) -> part writer, for every clip
    whose content the plan does not know already. Returns every usable clip (encoded or reused) in path order.

    Each file the plan names is hashed first (hash_videos, bounded by hash_timeout_s), and only content not known
    yet is decoded: a renamed file, a copy or a hard link of a cached one is reused without decoding, and repeats
    within the run wait for the first (reused, or, if it failed, each decoded for itself: Rounds). Failures the plan
    remembers are skipped again without reading (Plan, Known).
    """
    bar = progress_bar(total=plan.size, unit="video", disable=not progress, desc="extract")
    for work, line, kind in plan.remembered:
        summary.skip(work.name, line, REMEMBERED, kind, work.stat)
        summary.remembered += 1
        bar.update(1)
    _hash(plan, summary, bar, progress, hash_timeout_s)
    kept: list[VideoRow] = []
    written = set(plan.keys)  # and, as they come, the contents encoded in this run
    rounds = Rounds(plan.ready)
    while rounds.pending:
        reused, todo = rounds.next(written)
        kept += [work.row() for work in reused]
        summary.reused += len(reused)
        bar.update(len(reused))
        results = engine.results([str(w.video.file) for w in todo], reader, plan.keys, [w.video.segment for w in todo],
                                 [w.hashed for w in todo])
        for index, out, embeddings in results:
            work = todo[index]
            repeats = rounds.repeats(work)
            bar.update(1)
            if _refused(work, out, embeddings, summary):
                rounds.again(repeats, alone=True)  # a crash or a timeout is not a property of the bytes
                continue
            item = VideoRow(work.video, out.size, out.mtime_ns, out.digest)
            kept.append(item)
            summary.decoded(out.clip)
            if out.digest != work.digest:  # changed since it was hashed: its repeats are decoded themselves
                rounds.again(repeats, alone=False)
            else:
                kept += [r.row() for r in repeats]
                summary.reused += len(repeats)
                bar.update(len(repeats))
            if embeddings is None or item.key in written:  # the same clip under another name: encoded once
                summary.reused += 1
                continue
            written.add(item.key)
            item.clip = out.clip
            writer.add(item, embeddings)
            summary.encoded += 1
    writer.flush()
    bar.close()
    kept.sort(key=lambda it: (it.video.path, it.video.segment or (-1.0, -1.0)))
    return kept


def _hash(plan: Plan, summary: ExtractSummary, bar, progress: bool, timeout_s: float) -> None:
    """Hash the files the plan names (hash_videos: each once, in this process, each within timeout_s) and give the
    plan their contents; a file that cannot be hashed is skipped, remembered under these limits."""
    files = plan.files()
    hashes = dict(zip(files, progress_bar(hash_videos(files, timeout_s), total=len(files), unit="video",
                                          disable=not progress or not files, desc="hash", leave=False)))
    for work in plan.to_hash:
        out = hashes[str(work.video.file)]
        if isinstance(out, Unusable):
            summary.skip(work.name, f"{work.name}: {out.reason}", out.reason, out.kind.__name__, work.stat)
            bar.update(1)
        else:
            plan.hashed(work, out)


def _refused(work: Work, out: Loaded | Unusable, embeddings: np.ndarray | None, summary: ExtractSummary) -> bool:
    """Whether the engine's result for `work` is unusable (recorded as a skip under its clip id: the cache must not
    name this machine's files): an Unusable, or embeddings (F, D) that are not finite (never a row the door
    refuses). An internal error (a bug of this code, not the file's) and embeddings that are not finite are not
    remembered as the file's failure: they are retried by the next run."""
    if isinstance(out, Unusable):
        internal = out.kind is InternalError
        summary.skip(work.name, f"{work.name}: {out.reason}", out.reason, out.kind.__name__,
                     None if internal else work.stat)
        if internal:
            summary.internal.append((work.name, out.detail))
        return True
    if embeddings is not None and not finite_rows(embeddings[None])[0]:
        summary.skip(work.name, f"{work.name}: {NOT_FINITE}", NOT_FINITE, VideoError.__name__)
        return True
    return False
