"""The HDF5 feature cache: per-video frame embeddings plus the configuration that made them, written atomically."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

CACHE_PATH = "cache/features.h5"  # where stage one writes the cache and every reader looks (dvc.yaml names it too)
SCHEMA_VERSION = 2  # 2: decode_errors per video; decoder, precision and device type in the key
# Attributes every cache carries; two caches whose KEY_ATTRS differ hold embeddings that must not be mixed.
KEY_ATTRS = ("encoder_model", "encoder_fingerprint", "embedding_dim", "num_frames", "sampling", "preprocess",
             "preprocess_config", "backend", "quantize", "precision", "device_type", "decoder")
_STR = h5py.string_dtype()


@dataclass
class Cache:
    """A feature cache in memory: row v describes the video at paths[v].

    embeddings float32 (V, F, D); frame_indices int64 (V, F); timestamps float64 (V, F) seconds;
    labels int64 (V,) into class_names; paths str (V,) relative to the data root; content_hash str (V,) SHA-256;
    fps float64, frame_count int64, duration float64 seconds, repeated bool (fewer than F frames), decode_errors
    int64 (packets the decoder rejected or concealed; 0 for a sound file), file_size int64, mtime_ns int64: all (V,).
    skipped: (path, reason) pairs; skipped_stat: {path: (file_size, mtime_ns)} of the skipped files that were
    read, so that an unchanged one is not read again (pipeline.extract). attrs: encoder, sampling,
    preprocessing, precision, decoder, versions.
    """

    embeddings: np.ndarray
    frame_indices: np.ndarray
    timestamps: np.ndarray
    labels: np.ndarray
    paths: np.ndarray
    content_hash: np.ndarray
    fps: np.ndarray
    frame_count: np.ndarray
    duration: np.ndarray
    repeated: np.ndarray
    decode_errors: np.ndarray
    file_size: np.ndarray
    mtime_ns: np.ndarray
    class_names: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    skipped_stat: dict[str, tuple[int, int]] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, rows) -> "Cache":
        """The cache restricted to `rows` (int array, in that order); class names, skipped and attrs kept."""
        rows = np.asarray(rows, dtype=np.int64)
        return dataclasses.replace(self, **{name: getattr(self, name)[rows] for name in ROW_FIELDS})


ROW_FIELDS = tuple(f.name for f in dataclasses.fields(Cache)
                   if f.name not in ("class_names", "skipped", "skipped_stat", "attrs"))
_STR_FIELDS = ("paths", "content_hash")


def empty_cache(num_frames: int, dim: int, attrs: dict, class_names: list[str]) -> Cache:
    """A cache with no rows but the right shapes, to start from or to write when every video was skipped."""
    return Cache(
        embeddings=np.zeros((0, num_frames, dim), np.float32), frame_indices=np.zeros((0, num_frames), np.int64),
        timestamps=np.zeros((0, num_frames), np.float64), labels=np.zeros(0, np.int64), paths=np.zeros(0, object),
        content_hash=np.zeros(0, object), fps=np.zeros(0), frame_count=np.zeros(0, np.int64), duration=np.zeros(0),
        repeated=np.zeros(0, bool), decode_errors=np.zeros(0, np.int64), file_size=np.zeros(0, np.int64),
        mtime_ns=np.zeros(0, np.int64),
        class_names=list(class_names), attrs=dict(attrs),
    )


def concat_caches(caches: list[Cache], template: Cache) -> Cache:
    """Rows of all `caches` one after another, with template's class names, skipped list and attrs."""
    if not caches:
        return template.take([])
    return dataclasses.replace(
        template, **{name: np.concatenate([getattr(c, name) for c in caches]) for name in ROW_FIELDS})


def write_cache(path: str | os.PathLike, cache: Cache) -> None:
    """Write `cache` to `path` atomically: a temporary file beside it, fsync, then rename over the old one.

    A crash at any moment leaves either the previous file or the new one, never a half-written cache; the rename
    also replaces a DVC cache link instead of writing through it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    assert cache.embeddings.ndim == 3 and len(cache.embeddings) == len(cache), "embeddings must be (V, F, D)"
    try:
        _write(tmp, cache)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    except BaseException:  # a full disk, a failed write, an interrupt: leave no half-written file behind
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write(tmp: Path, cache: Cache) -> None:
    """Every dataset and attribute of `cache` into a new HDF5 file at `tmp`."""
    with h5py.File(tmp, "w") as f:
        for name in ROW_FIELDS:
            data = getattr(cache, name)
            if name in _STR_FIELDS:
                f.create_dataset(name, data=np.asarray(data, dtype=object), dtype=_STR)
            else:
                f.create_dataset(name, data=data)
        f.create_dataset("class_names", data=np.asarray(cache.class_names, dtype=object), dtype=_STR)
        skipped = f.create_group("skipped")
        skipped.create_dataset("path", data=np.asarray([p for p, _ in cache.skipped], dtype=object), dtype=_STR)
        skipped.create_dataset("reason", data=np.asarray([r for _, r in cache.skipped], dtype=object), dtype=_STR)
        stat = np.array([cache.skipped_stat.get(p, (-1, -1)) for p, _ in cache.skipped], np.int64).reshape(-1, 2)
        skipped.create_dataset("file_size", data=stat[:, 0])  # -1: not known (the file could not be stat'ed)
        skipped.create_dataset("mtime_ns", data=stat[:, 1])
        f.attrs.update(cache.attrs)
        f.attrs["schema_version"] = SCHEMA_VERSION


def read_cache(path: str | os.PathLike) -> Cache:
    """Read a whole cache (each dataset in one contiguous read); ValueError naming the file when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no feature cache at {str(path)!r}: run stage one first (dvc repro extract)")
    try:
        with h5py.File(path, "r", locking=False) as f:  # a reader never blocks, nor is blocked by, stage one
            version = f.attrs.get("schema_version")
            if version != SCHEMA_VERSION:
                raise ValueError(f"{path}: cache schema version {version}, this code reads {SCHEMA_VERSION}: "
                                 "re-run stage one to rebuild it")
            rows = {name: (f[name].asstr()[()] if name in _STR_FIELDS else f[name][()]) for name in ROW_FIELDS}
            return Cache(
                **{k: np.asarray(v, dtype=object) if k in _STR_FIELDS else v for k, v in rows.items()},
                class_names=list(f["class_names"].asstr()[()]),
                skipped=list(zip(f["skipped/path"].asstr()[()], f["skipped/reason"].asstr()[()])),
                skipped_stat=_skipped_stat(f["skipped"]),
                attrs={k: _plain(v) for k, v in f.attrs.items()},
            )
    except ValueError:
        raise
    except (OSError, KeyError) as e:
        raise ValueError(f"{path}: not a readable feature cache ({e})") from None


def _skipped_stat(group: h5py.Group) -> dict[str, tuple[int, int]]:
    """{path: (file_size, mtime_ns)} of the skipped files whose stat is known (none in a cache written before)."""
    if "file_size" not in group:
        return {}
    return {p: (int(s), int(m)) for p, s, m in zip(group["path"].asstr()[()], group["file_size"][()],
                                                   group["mtime_ns"][()]) if s >= 0}


def _plain(value):
    """HDF5 attribute values as plain Python scalars, so they compare and serialise simply."""
    return value.item() if isinstance(value, np.generic) else value
