"""The HDF5 feature cache: each clip's frame embeddings and the configuration that made them, written and read.

Written atomically, row block by row block; read whole or lazily (metadata in memory, embeddings left in the file).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from pipeline.data.discover import clip_id  # noqa: F401 (also its importers' name for it)
from pipeline.embed.choices import RANDOM_WEIGHTS  # noqa: F401 (also its importers' name for it)
from pipeline.errors import CacheError, ConfigError
from pipeline.extract.choices import STORAGE_DTYPES
from pipeline.extract.cache_door import check_frames, check_rows, check_shapes, check_storage, disk_problem
from pipeline.extract.embeddings import BLOCK_ROWS, Embeddings, file_identity, open_file

SCHEMA_VERSION = 5  # 5: a skip's kind (skipped/kind), frames sampled per clip (sampled); 4: rows are clips
READ_VERSIONS = (4, 5)  # what open_cache reads: a version-4 cache (a persisted DVC output) lacks what 5 added
# The cache's key: attributes every cache carries, the one list of them (stage one's reuse, the heads' match, the
# inspector read it). Two caches whose KEY_ATTRS differ hold embeddings that must not be mixed: a cache made with
# other values is re-encoded. batch_size is in it because a forward pass of another shape may round differently.
# Filled from the encoder's describe(), the sampling's attrs() (pipeline.decode.sampling.Sampling) and the run.
KEY_ATTRS = ("encoder_model", "encoder_fingerprint", "embedding_dim", "num_frames", "sampling", "preprocess",
             "preprocess_config", "backend", "quantize", "precision", "device_type", "decoder", "dtype",
             "batch_size")
# Recorded, not part of the key: RANDOM_WEIGHTS, True when the encoder has random weights (pipeline.embed.choices).
# Every output that shows numbers made from such features carries RANDOM_ENCODER_NOTE.
RANDOM_ENCODER_NOTE = "random encoder: these numbers mean nothing"


def random_encoder_note(attrs: dict) -> str:
    """RANDOM_ENCODER_NOTE when a cache's attributes (or a head's metadata) say the encoder had random weights,
    else ""."""
    return RANDOM_ENCODER_NOTE if attrs.get(RANDOM_WEIGHTS) else ""


_STR = h5py.string_dtype()


FRAMES, DIM = "F", "D"  # a column's axes after the row: a clip's frames, the embedding's dimensions
# Where a newly encoded clip's value of a column comes from (writer.part_cache): the encoder's output, the decoded
# Clip's attribute of the column's `clip` name, the file's content hash, or this run's listing of the clip (path,
# label, stat, annotation: renewed for every row, reused or not: writer.listing_columns).
SOURCES = ("embeddings", "clip", "content", "listing")


@dataclass(frozen=True)
class Column:
    """One row field of the cache, the one statement of its layout: dtype (str: text, held as object arrays and
    stored as HDF5 strings), axes after the row (FRAMES, DIM or a length), source (SOURCES), clip (the Clip
    attribute a "clip" column copies), absent (the value of an optional column not given: a whole file's NaN
    segment, no group; FRAMES: the number of frames F), pad (a FRAMES column's value past a clip's own frames, when
    it has fewer than F: sampling by frame rate) and since (the schema version that added it: an older cache
    lacks it, and reads as `absent`)."""

    dtype: type
    axes: tuple = ()
    source: str = "listing"
    clip: str = ""
    absent: object = None
    pad: object = 0
    since: int = 4

    @property
    def text(self) -> bool:
        return self.dtype is str

    def shape(self, rows: int, frames: int, dim: int) -> tuple[int, ...]:
        """The column's shape for `rows` rows of `frames` frames of `dim` dimensions."""
        return (rows, *(frames if a == FRAMES else dim if a == DIM else a for a in self.axes))

    def empty(self, rows: int, frames: int, dim: int) -> np.ndarray:
        """Zeros of the column's shape and in-memory dtype (object for text)."""
        return np.zeros(self.shape(rows, frames, dim), object if self.text else self.dtype)


def column(dtype: type, *axes, source: str = "listing", clip: str = "", absent: object = None, pad: object = 0,
           since: int = 4) -> dict:
    """A Cache field's metadata that makes it a row column: `field(metadata=column(...))`, with default=None for an
    optional one (`absent` set)."""
    assert source in SOURCES, source
    return {"column": Column(dtype, axes, source, clip, absent, pad, since)}


@dataclass
class Cache:
    """A feature cache in memory: row v describes the video at paths[v]. Each row field is a column (Column in its
    metadata: the layout the writer, the reader, the part files and the door all derive from).

    embeddings float32 (V, F, D) (or Embeddings, the same rows left in the file: see open_cache); frame_indices
    int64 (V, F); timestamps float64 (V, F) seconds; labels int64 (V,) into class_names; paths str (V,) relative
    to the data root; content_hash str (V,) SHA-256; fps float64, frame_count int64, duration float64 seconds,
    repeated bool (fewer than F frames), decode_errors int64 (packets the decoder rejected or concealed; 0 for a
    sound file), file_size int64, mtime_ns int64: all (V,). skipped: (clip id, line) pairs, the line naming the
    clip and why; skipped_kind: {clip id: the name of the error type that skipped it (errors.Unusable.kind:
    VideoError, EmptySegment, InternalError; DataError for what the listing refused)}, absent for a skip of a
    version-4 cache;
    skipped_stat: {path: (file_size, mtime_ns)} of the skipped files that were read, so that an unchanged one is not
    read again (pipeline.extract.runner). attrs: encoder, sampling, preprocessing, precision, decoder, storage dtype,
    versions.

    A row is a clip: a whole file, or a segment of one (an annotation's start and end): segment float64 (V, 2)
    (start, end) seconds, NaN for a whole file; frames were sampled inside it. Two segments of one file are two
    rows with the same path and content hash: a row is known by row_keys() (content and segment) for reuse and by
    clip_ids() (path and segment) everywhere else. group str (V,) and annotated_part str (V,) ("train", "val",
    "test" or "unused"): what the annotations say ("" when nothing). Defaults: whole files, no groups or parts.

    sampled int64 (V,): how many of the F frames are the clip's own (1 to F). Sampling by frame rate (attrs
    "sampling": Sampling.attrs) gives each clip its own number of frames, at most F (extract.max_frames): frames past
    `sampled` are padding (zero embeddings, frame index -1, timestamp NaN) that pooling masks out (frame_mask,
    Embeddings.mean). Sampling a fixed number of frames gives every row F (older caches read so).
    """

    embeddings: np.ndarray = field(metadata=column(np.float32, FRAMES, DIM, source="embeddings"))
    frame_indices: np.ndarray = field(metadata=column(np.int64, FRAMES, source="clip", clip="indices", pad=-1))
    timestamps: np.ndarray = field(metadata=column(np.float64, FRAMES, source="clip", clip="timestamps", pad=np.nan))
    labels: np.ndarray = field(metadata=column(np.int64))
    paths: np.ndarray = field(metadata=column(str))
    content_hash: np.ndarray = field(metadata=column(str, source="content"))
    fps: np.ndarray = field(metadata=column(np.float64, source="clip", clip="fps"))
    frame_count: np.ndarray = field(metadata=column(np.int64, source="clip", clip="frame_count"))
    duration: np.ndarray = field(metadata=column(np.float64, source="clip", clip="duration"))
    repeated: np.ndarray = field(metadata=column(bool, source="clip", clip="repeated"))
    decode_errors: np.ndarray = field(metadata=column(np.int64, source="clip", clip="decode_errors"))
    file_size: np.ndarray = field(metadata=column(np.int64))
    mtime_ns: np.ndarray = field(metadata=column(np.int64))
    segment: np.ndarray | None = field(default=None, metadata=column(np.float64, 2, absent=np.nan))
    group: np.ndarray | None = field(default=None, metadata=column(str, absent=""))
    annotated_part: np.ndarray | None = field(default=None, metadata=column(str, absent=""))
    sampled: np.ndarray | None = field(default=None, metadata=column(np.int64, source="clip", clip="sampled",
                                                                      absent=FRAMES, since=5))
    class_names: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    skipped_kind: dict[str, str] = field(default_factory=dict)
    skipped_stat: dict[str, tuple[int, int]] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.paths)
        for name, col in COLUMNS.items():  # an optional column not given (None, or left empty by empty_cache)
            given = getattr(self, name)
            if col.absent is not None and (given is None or (n and not len(given))):
                values = col.empty(n, 0, 0)
                values[...] = self.embeddings.shape[1] if col.absent == FRAMES else col.absent
                setattr(self, name, values)

    def __len__(self) -> int:
        return len(self.paths)

    def frame_mask(self) -> np.ndarray:
        """bool (V, F): which frames are the clip's own (not padding)."""
        return np.arange(self.embeddings.shape[1]) < self.sampled[:, None]

    def clip_ids(self) -> np.ndarray:
        """str (V,): each row's name for people and the split: its path, and `#t=start,end` (seconds, as in W3C
        media fragments) for a segment."""
        return np.array([clip_id(p, s) for p, s in zip(self.paths, self.segment)], object)

    def row_keys(self) -> np.ndarray:
        """str (V,): what a row's embeddings are keyed by: the content hash, and `#t=start,end` for a segment."""
        return np.array([clip_id(h, s) for h, s in zip(self.content_hash, self.segment)], object)

    def take(self, rows) -> "Cache":
        """The cache restricted to `rows` (int array, in that order); class names, skipped and attrs kept."""
        rows = np.asarray(rows, dtype=np.int64)
        return dataclasses.replace(self, **{name: getattr(self, name)[rows] for name in ROW_FIELDS})


COLUMNS: dict[str, Column] = {f.name: f.metadata["column"] for f in dataclasses.fields(Cache) if "column" in f.metadata}
ROW_FIELDS = tuple(COLUMNS)
_STR_FIELDS = tuple(name for name, col in COLUMNS.items() if col.text)
# The skipped table's datasets (one entry per skip) and their dtypes; "kind" is new in version 5
SKIPPED_COLUMNS = {"path": str, "reason": str, "kind": str, "file_size": np.int64, "mtime_ns": np.int64}
META_FIELDS = tuple(name for name in ROW_FIELDS if name != "embeddings")  # what open_cache holds in memory


def empty_cache(num_frames: int, dim: int, attrs: dict, class_names: list[str]) -> Cache:
    """A cache with no rows but the right shapes, to start from or to write when every video was skipped."""
    return Cache(**{name: col.empty(0, num_frames, dim) for name, col in COLUMNS.items()},
                 class_names=list(class_names), attrs=dict(attrs))


def gather_rows(sources: list[Cache], source: np.ndarray, row: np.ndarray, template: Cache) -> Cache:
    """Row row[i] of sources[source[i]] for each i, as a cache in memory (embeddings read from the sources' files
    where they were opened lazily), with template's class names, skipped list and attrs."""
    block = template.take([])
    for name in ROW_FIELDS:
        first = getattr(sources[source[0]], name) if len(source) else getattr(template, name)
        values = np.empty((len(source), *first.shape[1:]), first.dtype)
        for s in np.unique(source):
            at = source == s
            values[at] = np.asarray(getattr(sources[s], name)[row[at]])
        setattr(block, name, values)
    return block


def write_cache(path: str | os.PathLike, cache: Cache) -> None:
    """Write `cache` (in memory) to `path` atomically; see write_cache_blocks."""
    blocks = (cache.take(np.arange(s, min(s + BLOCK_ROWS, len(cache)))) for s in range(0, len(cache), BLOCK_ROWS))
    write_cache_blocks(path, cache, len(cache), blocks)


def write_cache_blocks(path: str | os.PathLike, template: Cache, num_rows: int, blocks: Iterable[Cache]) -> None:
    """Write a cache of `num_rows` rows given as consecutive `blocks` (caches in memory) to `path` atomically:
    datasets created whole in a temporary file beside it, filled block by block, fsync, then rename over the old
    one. Memory holds one block, whatever the number of rows.

    template: class names, skipped list and attrs; attrs["dtype"] (default float32) is the embeddings' storage.
    A crash at any moment leaves either the previous file or the new one, never a half-written cache; the rename
    also replaces a DVC cache link instead of writing through it.
    """
    path = Path(path)
    dtype = template.attrs.get("dtype", "float32")
    if dtype not in STORAGE_DTYPES:
        raise ConfigError(f"extract.dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(tmp, "w") as f:
            datasets = {}
            for name, col in COLUMNS.items():
                like = getattr(template, name)
                kind = _STR if col.text else (dtype if name == "embeddings" else like.dtype)
                datasets[name] = f.create_dataset(name, shape=(num_rows, *like.shape[1:]), dtype=kind)
            written = 0
            for block in blocks:
                assert block.embeddings.ndim == 3 and len(block.embeddings) == len(block), "embeddings: (V, F, D)"
                for name in ROW_FIELDS:
                    values = getattr(block, name)
                    datasets[name][written:written + len(block)] = (
                        np.array([str(v) for v in values], dtype=object) if name in _STR_FIELDS else values)
                written += len(block)
            assert written == num_rows, f"{written} rows written, {num_rows} announced"
            f.create_dataset("class_names", data=np.asarray(template.class_names, dtype=object), dtype=_STR)
            skipped = f.create_group("skipped")
            for name, values in _skipped_table(template).items():
                skipped.create_dataset(name, data=values, dtype=_STR if SKIPPED_COLUMNS[name] is str else None)
            f.attrs.update(template.attrs)
            f.attrs["dtype"] = dtype
            f.attrs["schema_version"] = SCHEMA_VERSION
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    except BaseException as e:  # a full disk, a failed write, an interrupt: leave no half-written file behind
        disk = disk_problem(e, path.parent) if isinstance(e, (OSError, RuntimeError)) else None  # before the unlink
        tmp.unlink(missing_ok=True)
        if disk is not None:
            raise disk from None
        raise
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def open_cache(path: str | os.PathLike) -> Cache:
    """The cache with every field but the embeddings in memory; embeddings is an Embeddings (rows read when
    asked, in blocks, each checked finite). The door every reader of a cache or a part file goes through:
    CacheError naming the file when it is missing, damaged or of another schema version, when it would make HDF5
    read another file (cache_door.check_storage, before any data is read), when its datasets disagree in shape or
    kind (check_shapes), when it holds no rows, labels outside its class list or attributes of other types
    (check_rows)."""
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"no feature cache at {str(path)!r}: run stage one first (dvc repro extract)")
    try:
        with open_file(path) as f:
            identity = file_identity(path)
            version = f.attrs.get("schema_version")
            if version not in READ_VERSIONS:
                raise CacheError(f"{path}: cache schema version {version}, this code reads "
                                 f"{', '.join(map(str, READ_VERSIONS))}: re-run stage one to rebuild it")
            check_storage(f, path)
            present = {name: col for name, col in COLUMNS.items() if col.since <= version}  # what it must hold
            _check_layout(f, path, int(version), present)
            shape = check_shapes(f, path, {name: (col.dtype, col.axes) for name, col in present.items()})
            rows = {name: (np.asarray(f[name].asstr()[()], dtype=object) if name in _STR_FIELDS else f[name][()])
                    for name in META_FIELDS if name in present}
            check_frames(path, rows.get("sampled"), shape[1])
            counts = rows.get("sampled")
            cache = Cache(
                embeddings=Embeddings(path, identity, shape,
                                      counts=None if counts is None or (counts == shape[1]).all() else counts), **rows,
                class_names=list(f["class_names"].asstr()[()]),
                skipped=list(zip(f["skipped/path"].asstr()[()], f["skipped/reason"].asstr()[()])),
                skipped_kind=_skipped_kind(f["skipped"]),
                skipped_stat=_skipped_stat(f["skipped"]),
                attrs={k: _plain(v) for k, v in f.attrs.items()},
            )
            check_rows(path, rows, cache.class_names, cache.attrs, shape)
            return cache
    except OSError as e:  # not HDF5, truncated, or a block that cannot be read
        raise CacheError(f"{path}: not a readable feature cache ({e})") from None


def cache_attrs(path: str | os.PathLike) -> dict:
    """The attributes of the cache at `path` alone (plain values; nothing else is read, so no dataset's storage is
    followed), {} where there is none or it cannot be read. Information only: a reader of its rows uses open_cache."""
    try:
        with open_file(Path(path)) as f:
            return {k: _plain(v) for k, v in f.attrs.items()}
    except (OSError, ValueError):  # missing, not HDF5, damaged
        return {}


def read_cache(path: str | os.PathLike) -> Cache:
    """Read a whole cache into memory, embeddings float32 (V, F, D); CacheError naming the file when unusable.
    For a large cache, open_cache reads the embeddings only as they are needed."""
    cache = open_cache(path)
    try:
        cache.embeddings = np.asarray(cache.embeddings)
    except OSError as e:
        raise CacheError(f"{path}: not a readable feature cache ({e})") from None
    return cache


def _check_layout(f: h5py.File, path: Path, version: int, columns: dict[str, Column]) -> None:
    """CacheError unless every dataset the schema of that version names (its `columns`, the class names, the
    skipped table) is there, as a dataset of its kind (strings, numbers)."""
    skipped = {f"skipped/{name}": kind for name, kind in SKIPPED_COLUMNS.items() if version >= 5 or name != "kind"}
    names = {**{name: col.dtype for name, col in columns.items()}, "class_names": str, **skipped}
    for name, kind in names.items():
        ds = f.get(name)
        text = kind is str
        if not isinstance(ds, h5py.Dataset):
            problem = f"no dataset {name!r}"
        elif text != (h5py.check_string_dtype(ds.dtype) is not None):
            problem = f"{name!r} holds {'numbers' if text else 'strings'}"
        elif name == "embeddings" and (ds.dtype.kind != "f" or ds.ndim != 3):
            problem = f"embeddings are {ds.dtype} in {ds.ndim} dimensions, not floats (V, F, D)"
        else:
            continue
        raise CacheError(f"{path}: not a readable feature cache ({problem})")


def _skipped_table(cache: Cache) -> dict[str, np.ndarray]:
    """The skipped group's datasets (SKIPPED_COLUMNS), one entry per skip: path, reason (the line), kind ("" when
    not known), file_size and mtime_ns (-1: not known, the file could not be stat'ed)."""
    names = [p for p, _ in cache.skipped]
    stat = np.array([cache.skipped_stat.get(p, (-1, -1)) for p in names], np.int64).reshape(-1, 2)
    return {"path": np.asarray(names, dtype=object), "reason": np.asarray([r for _, r in cache.skipped], dtype=object),
            "kind": np.asarray([cache.skipped_kind.get(p, "") for p in names], dtype=object),
            "file_size": stat[:, 0], "mtime_ns": stat[:, 1]}


def _skipped_kind(group: h5py.Group) -> dict[str, str]:
    """{path: error type name} of the skips whose kind is known (none in a version-4 cache)."""
    if "kind" not in group:
        return {}
    return {p: k for p, k in zip(group["path"].asstr()[()], group["kind"].asstr()[()]) if k}


def _skipped_stat(group: h5py.Group) -> dict[str, tuple[int, int]]:
    """{path: (file_size, mtime_ns)} of the skipped files whose stat is known."""
    return {p: (int(s), int(m)) for p, s, m in zip(group["path"].asstr()[()], group["file_size"][()],
                                                   group["mtime_ns"][()]) if s >= 0}


def _plain(value):
    """HDF5 attribute values as plain Python scalars, so they compare and serialise simply."""
    return value.item() if isinstance(value, np.generic) else value
