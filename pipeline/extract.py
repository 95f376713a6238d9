"""Stage one: discover videos, decode their sampled frames, embed them with CLIP, and write the cache incrementally.

Unit of work: a *part* file (`<cache>.parts/part-*.h5`) holding up to `shard_size` newly encoded videos keyed by
content hash. The cache is the join of the previous cache and the parts, written atomically at the end; a killed
run leaves the previous cache untouched and its finished parts reused by the next run.
"""
from __future__ import annotations

import json
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout
from tqdm import tqdm

from pipeline.cache import KEY_ATTRS, Cache, concat_caches, empty_cache, read_cache, write_cache
from pipeline.encoder import Encoder, embed_frames, load_encoder, preprocess_frames
from pipeline.video import SAMPLING, Clip, VideoFile, content_hash, discover_videos, read_frames


@dataclass
class ExtractConfig:
    """Stage one's settings (params.yaml: data.root, encoder.model, extract.*)."""

    root: str
    cache_path: str = "cache/features.h5"
    model: str = "openai/clip-vit-base-patch32"
    num_frames: int = 16
    batch_size: int = 16  # frames per forward pass, across videos
    device: str = "auto"
    preprocess: str = "fast"
    quantize: str = "none"  # "int8": dynamically quantised Linear layers (CPU), faster, slightly different
    shard_size: int = 64  # videos per part file: the work a kill can lose


@dataclass
class ExtractSummary:
    """What a run did: videos encoded now, reused from earlier work, and skipped with their reasons."""

    cache_path: str
    encoded: int = 0
    reused: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        lines = [f"{self.cache_path}: {self.encoded} encoded, {self.reused} reused, {len(self.skipped)} skipped "
                 f"in {self.seconds:.1f} s"]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)


@dataclass
class _Item:
    """One video on its way through the run; `pixels` (F, 3, S, S) until it is encoded."""

    video: VideoFile
    size: int
    mtime_ns: int
    digest: str
    clip: Clip | None = None
    pixels: torch.Tensor | None = None
    embeddings: np.ndarray | None = None


def extract_features(cfg: ExtractConfig, progress: bool = True) -> ExtractSummary:
    """Bring the cache at cfg.cache_path up to date with the videos under cfg.root; returns what was done.

    Only videos whose content hash is not already in the cache (or in parts of an interrupted run) with the same
    encoder, sampling and preprocessing are decoded and encoded; removed videos are dropped.
    """
    started = time.perf_counter()
    cache_path = Path(cfg.cache_path)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(cache_path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ValueError(f"another stage-one run is writing {cache_path} (lock {lock.lock_file} is held): "
                         "wait for it to finish") from None
    try:
        videos, class_names = discover_videos(cfg.root)
        if not videos:
            raise ValueError(f"no videos under {cfg.root!r}: expected {cfg.root}/<class>/<video>.mp4 "
                             "(mp4, avi, mov, mkv, webm, m4v, mpg, ts)")
        encoder = load_encoder(cfg.model, cfg.device, cfg.preprocess, cfg.quantize)
        attrs = {**encoder.describe(), "num_frames": cfg.num_frames, "sampling": SAMPLING, "data_root": cfg.root,
                 "versions": json.dumps({p: version(p) for p in ("torch", "transformers", "opencv-python-headless",
                                                                 "h5py", "numpy")})}
        parts_dir = cache_path.with_name(cache_path.name + ".parts")
        template = empty_cache(cfg.num_frames, encoder.dim, attrs, class_names)
        sources = _reusable(cache_path, parts_dir, attrs)
        summary = ExtractSummary(str(cache_path))
        new_parts, kept = _encode_new(videos, sources, template, cfg, encoder, parts_dir, summary, progress)
        final = _assemble(kept, sources + new_parts, template, summary.skipped)
        if len(final) == 0:
            raise ValueError(f"none of the {len(videos)} videos under {cfg.root!r} could be used:\n{summary}")
        write_cache(cache_path, final)
        shutil.rmtree(parts_dir, ignore_errors=True)
        summary.seconds = time.perf_counter() - started
        return summary
    finally:
        lock.release()


def _reusable(cache_path: Path, parts_dir: Path, attrs: dict) -> list[Cache]:
    """The previous cache and the parts left by an interrupted run, where made with the same encoder and sampling.

    Other parts (or unreadable ones) are deleted; a previous cache made otherwise is ignored, and replaced at the
    end of the run.
    """
    def same_key(cache: Cache) -> bool:
        return all(cache.attrs.get(k) == attrs[k] for k in KEY_ATTRS)

    found = []
    if cache_path.is_file():
        try:
            previous = read_cache(cache_path)
            if same_key(previous):
                found.append(previous)
        except ValueError:
            pass  # an unreadable or older cache is rebuilt from scratch
    for part_file in sorted(parts_dir.glob("part-*.h5")):
        try:
            part = read_cache(part_file)
        except ValueError:
            part = None
        if part is not None and same_key(part):
            found.append(part)
        else:
            part_file.unlink()
    return found


def _encode_new(videos, sources, template, cfg, encoder: Encoder, parts_dir: Path, summary: ExtractSummary,
                progress: bool) -> tuple[list[Cache], list[_Item]]:
    """Decode and encode every video whose content is not in `sources`.

    Returns the part caches it wrote and every usable video (encoded or reused) in path order.
    """
    known_hashes = {h for src in sources for h in src.content_hash}
    by_stat = {(p, int(s), int(m)): h for src in sources
               for p, s, m, h in zip(src.paths, src.file_size, src.mtime_ns, src.content_hash)}
    new_parts: list[Cache] = []
    kept: list[_Item] = []
    finished: list[_Item] = []
    waiting: list[_Item] = []  # decoded, frames not all encoded yet (in order)
    pixel_queue: list[torch.Tensor] = []
    done_rows: list[np.ndarray] = []
    frames_done = 0
    bar = tqdm(total=len(videos), unit="video", disable=not progress, desc="extract")

    def flush_part(force: bool) -> None:
        if finished and (force or len(finished) >= cfg.shard_size):
            part = _part_cache(finished, template)
            write_cache(parts_dir / f"part-{uuid.uuid4().hex}.h5", part)
            new_parts.append(part)
            for it in finished:
                it.clip = it.embeddings = None  # the part holds them now
            finished.clear()

    def encode(pad_last: bool) -> None:
        nonlocal pixel_queue, done_rows, frames_done
        pixels = torch.cat(pixel_queue) if pixel_queue else torch.zeros(0)
        usable = len(pixels) if pad_last else len(pixels) // cfg.batch_size * cfg.batch_size
        if usable:
            done_rows.append(embed_frames(pixels[:usable], encoder, cfg.batch_size))
        pixel_queue = [pixels[usable:]] if usable < len(pixels) else []
        rows = np.concatenate(done_rows) if done_rows else np.zeros((0, encoder.dim), np.float32)
        while waiting and len(waiting[0].clip.indices) <= len(rows):
            item = waiting.pop(0)
            n = len(item.clip.indices)
            item.embeddings, rows = rows[:n], rows[n:]
            finished.append(item)
            summary.encoded += 1
            frames_done += n
            bar.update(1)
        done_rows = [rows]
        bar.set_postfix(frames_per_s=f"{frames_done / max(bar.format_dict['elapsed'], 1e-9):.1f}", refresh=False)
        flush_part(force=False)

    for item in _prefetch(_read(videos, known_hashes, by_stat, cfg, encoder), depth=4):
        if isinstance(item, tuple):  # (path, reason)
            summary.skipped.append(item)
            bar.update(1)
        elif item.pixels is None:
            kept.append(item)
            summary.reused += 1
            bar.update(1)
        else:
            kept.append(item)
            waiting.append(item)
            pixel_queue.append(item.pixels)
            item.pixels = None
            if sum(len(p) for p in pixel_queue) >= cfg.batch_size:
                encode(pad_last=False)
    encode(pad_last=True)
    flush_part(force=True)
    bar.close()
    return new_parts, kept


def _read(videos: list[VideoFile], known_hashes: set, by_stat: dict, cfg: ExtractConfig, encoder: Encoder):
    """Yield per video: an _Item with pixels to encode, an _Item without (reused), or (path, reason) if unusable."""
    queued = set()  # hashes sent for encoding in this run: a second copy of the same bytes reuses the first
    for video in videos:
        try:
            stat = video.file.stat()
            digest = by_stat.get((video.path, stat.st_size, stat.st_mtime_ns)) or content_hash(video.file)
            item = _Item(video, stat.st_size, stat.st_mtime_ns, digest)
            if digest in known_hashes or digest in queued:
                yield item  # same bytes already encoded (or on their way) with this encoder and sampling
                continue
            item.clip = read_frames(video.file, cfg.num_frames)
            item.pixels = preprocess_frames(item.clip.frames, encoder)
            item.clip.frames = None  # the pixels are all that is needed from here on
            queued.add(digest)
            yield item
        except Exception as e:  # one bad video must never stop the run: record why and go on
            reason = str(e).replace(str(video.file), video.path)  # relative: the cache must not name this machine
            if not reason.startswith(video.path + ":"):
                reason = f"{video.path}: {type(e).__name__}: {reason}"
            yield (video.path, reason)


def _part_cache(items: list[_Item], template: Cache) -> Cache:
    """The finished items as a Cache (rows keyed by content hash), ready to be written as a part file."""
    return Cache(
        embeddings=np.stack([it.embeddings for it in items]).astype(np.float32),
        frame_indices=np.stack([it.clip.indices for it in items]),
        timestamps=np.stack([it.clip.timestamps for it in items]),
        labels=np.array([template.class_names.index(it.video.label) for it in items], np.int64),
        paths=np.array([it.video.path for it in items], object),
        content_hash=np.array([it.digest for it in items], object),
        fps=np.array([it.clip.fps for it in items]),
        frame_count=np.array([it.clip.frame_count for it in items], np.int64),
        duration=np.array([it.clip.duration for it in items]),
        repeated=np.array([it.clip.repeated for it in items], bool),
        file_size=np.array([it.size for it in items], np.int64),
        mtime_ns=np.array([it.mtime_ns for it in items], np.int64),
        class_names=list(template.class_names), attrs=dict(template.attrs),
    )


def _assemble(kept: list[_Item], sources: list[Cache], template: Cache, skipped: list) -> Cache:
    """The new cache: one row per usable video in path order, embeddings looked up by content hash in `sources`."""
    pool = concat_caches(sources, template)
    row_of = {h: i for i, h in enumerate(pool.content_hash)}
    final = pool.take([row_of[it.digest] for it in kept])
    final.paths = np.array([it.video.path for it in kept], object)
    final.labels = np.array([template.class_names.index(it.video.label) for it in kept], np.int64)
    final.file_size = np.array([it.size for it in kept], np.int64)
    final.mtime_ns = np.array([it.mtime_ns for it in kept], np.int64)
    final.class_names, final.skipped, final.attrs = list(template.class_names), list(skipped), dict(template.attrs)
    return final


def _prefetch(items, depth: int):
    """Iterate `items` from a background thread, `depth` ahead: decoding overlaps encoding."""
    q: queue.Queue = queue.Queue(depth)
    end = object()

    def work():
        try:
            for it in items:
                q.put(it)
            q.put(end)
        except BaseException as e:  # surfaces in the consumer instead of dying silently in the thread
            q.put(e)

    threading.Thread(target=work, daemon=True).start()
    while (it := q.get()) is not end:
        if isinstance(it, BaseException):
            raise it
        yield it
