"""The door of a cache file: what an HDF5 file must be before any of its data is read, and a full disk named.

A cache (or a part file) may come from a colleague or a shared remote: its data lives in the file itself, in the
layout and shapes stage one writes. check_storage refuses what would make HDF5 read another file (external storage,
virtual datasets, soft and external links); check_shapes refuses datasets of other shapes or kinds, or announcing
more data than the file holds; check_rows refuses rows that would crash or mislead what reads them (labels outside
the class list, attributes of other types); finite_rows finds the rows whose embeddings are unusable.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import h5py
import numpy as np

from pipeline.errors import CacheError, printable

# |value| above this is refused in embeddings: no float16 cache can hold it, no encoder makes it, and sums of squares
# of such values overflow float32 (a LinAlgError, an infinite loss) in the heads.
MAX_ABS_EMBEDDING = float(np.finfo(np.float16).max)
ATTR_TEXT_LIMIT = 65536  # characters of a text attribute (the largest, versions and preprocess_config, take ~1 KB)
# What the metadata and one block of embeddings may take in memory, as a multiple of the file's size: a dataset that
# announces more rows than it stores (HDF5 fills what was never written) would otherwise ask for terabytes.
EXPANSION_LIMIT = 64
LOW_SPACE = 1 << 20  # bytes: a folder with less free space than this after a failed write is a full disk
_LAYOUTS = {h5py.h5d.CONTIGUOUS: "contiguous", h5py.h5d.CHUNKED: "chunked"}
_KINDS = {"i": "iu", "u": "iu", "f": "f", "b": "b"}  # a column's numpy kind -> the stored kinds it accepts
INT_ATTRS = ("embedding_dim", "num_frames", "schema_version")


def refuse(path: Path, problem: str) -> CacheError:
    """The one line for a file that is not a usable cache."""
    return CacheError(f"{printable(path)}: not a usable feature cache ({problem}): re-run stage one to rebuild it")


def check_storage(f: h5py.File, path: Path) -> None:
    """CacheError unless every object of the file is reached by a hard link and every dataset keeps its data in
    this file, contiguous or chunked: no soft, external or user-defined link, no external storage, no virtual
    dataset. Reads no data (only links and creation properties)."""
    problems: list[str] = []

    def visit(name: str, link) -> bool | None:
        shown = printable(name)
        if isinstance(link, h5py.SoftLink):
            problems.append(f"{shown!r} is a soft link")
        elif isinstance(link, h5py.ExternalLink):
            problems.append(f"{shown!r} is a link to another file")
        elif not isinstance(link, h5py.HardLink):
            problems.append(f"{shown!r} is a link of another kind")
        else:
            problems.extend(_object_problem(f[name], shown))
        return True if problems else None  # a true value stops the visit

    try:
        f.visititems_links(visit)
    except (KeyError, TypeError, ValueError):  # h5py's answers to a link class it does not know
        problems.append("a link of an unknown kind")
    if problems:
        raise refuse(path, problems[0])


def checked_dataset(f: h5py.File, name: str, path: Path) -> h5py.Dataset:
    """Dataset `name` of f, refused (CacheError) as check_storage would refuse it: reached by a hard link, its data
    contiguous or chunked in this file. What a read of a file opened before checks, for the one dataset it reads
    (a fraction of a millisecond, where check_storage over every object takes several)."""
    link = f.get(name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        raise refuse(path, f"{name!r} is not a dataset of this file (a soft, external or missing link)")
    problems = _object_problem(f[name], name)
    if problems:
        raise refuse(path, problems[0])
    return f[name]


def _object_problem(obj, shown: str) -> list[str]:
    if isinstance(obj, h5py.Group):
        return []
    if not isinstance(obj, h5py.Dataset):
        return [f"{shown!r} is neither a group nor a dataset"]
    plist = obj.id.get_create_plist()
    if obj.is_virtual or plist.get_layout() not in _LAYOUTS:
        return [f"{shown!r} is a virtual or compact dataset: a cache keeps its data contiguous or chunked"]
    if plist.get_external_count():
        return [f"{shown!r} keeps its data in another file (external storage)"]
    return []


def check_shapes(f: h5py.File, path: Path, columns: dict[str, tuple[type, tuple]]) -> tuple[int, int, int]:
    """CacheError unless the row fields agree with `columns` ({name: (dtype, axes after the row)}, cache.COLUMNS: axes
    "F" the frames, "D" the dimensions, a number a length; dtype str for text): embeddings (V, F, D), every other
    column of the same V (and F) rows, each of its kind; and unless the data they announce (the metadata held in
    memory, a block of embeddings) is within EXPANSION_LIMIT times the file's size. Returns (V, F, D)."""
    shape = f["embeddings"].shape
    rows, frames, dim = shape
    if frames < 1 or dim < 1:
        raise refuse(path, f"embeddings of shape {shape}")
    announced = 0
    for name, (dtype, axes) in columns.items():
        ds = f[name]
        want = (rows, *(frames if a == "F" else dim if a == "D" else a for a in axes))
        if ds.shape != want:
            raise refuse(path, f"{name!r} has shape {ds.shape}, the embeddings' rows need {want}")
        if dtype is not str and ds.dtype.kind not in _KINDS[np.dtype(dtype).kind]:
            raise refuse(path, f"{name!r} holds {ds.dtype}")
        announced += ds.size * ds.dtype.itemsize if name != "embeddings" else 0
    announced += min(rows, 1024) * frames * dim * 4  # one block of embeddings read (cache.BLOCK_ROWS)
    if announced > EXPANSION_LIMIT * max(path.stat().st_size, 1 << 16):
        raise refuse(path, f"its datasets announce {announced:,} bytes, more than a file of "
                           f"{path.stat().st_size:,} bytes holds")
    return shape


def check_rows(path: Path, rows: dict[str, np.ndarray], class_names: list[str], attrs: dict,
               shape: tuple[int, int, int]) -> None:
    """CacheError for rows read from a cache that would crash or mislead its readers: no rows at all, labels
    outside the class list, attributes that are not plain scalars (text within ATTR_TEXT_LIMIT), or whose
    embedding_dim / num_frames disagree with the embeddings' shape."""
    if shape[0] == 0:
        raise CacheError(f"{printable(path)}: the feature cache holds no clips: add videos to the data and re-run "
                         "stage one")
    labels = rows["labels"]
    outside = (labels < 0) | (labels >= len(class_names))
    if outside.any():
        at = int(np.flatnonzero(outside)[0])
        raise refuse(path, f"row {at} has label {int(labels[at])}, outside its {len(class_names)} class names")
    for key, value in attrs.items():
        if key in INT_ATTRS:
            fits, kind = isinstance(value, int) and not isinstance(value, bool), "whole number"
        else:
            fits = isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= ATTR_TEXT_LIMIT)
            kind = "short text or number"
        if not fits:
            raise refuse(path, f"attribute {printable(key)!r} is not a {kind}")
    for key, size in (("num_frames", shape[1]), ("embedding_dim", shape[2])):
        if key in attrs and attrs[key] != size:
            raise refuse(path, f"attribute {key} says {attrs[key]}, the embeddings have {size}")


def check_frames(path: Path, sampled: np.ndarray | None, frames: int) -> None:
    """CacheError unless every row's count of its own frames (the `sampled` column, int (V,); None in a version-4
    cache) is from 1 to the F frames the embeddings hold: a mean over 0 frames, or over more than there are, would
    mislead every head."""
    if sampled is None or not len(sampled):
        return
    bad = (sampled < 1) | (sampled > frames)
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        raise refuse(path, f"row {at} says {int(sampled[at])} frames were sampled, outside 1 to {frames}")


def finite_rows(block: np.ndarray) -> np.ndarray:
    """bool (B,): which rows of a float32 (B, F, D) block hold only finite values within MAX_ABS_EMBEDDING."""
    flat = block.reshape(len(block), -1)
    with np.errstate(invalid="ignore"):
        return np.isfinite(flat).all(axis=1) & (np.abs(flat) <= MAX_ABS_EMBEDDING).all(axis=1)


def disk_problem(error: BaseException, folder: Path) -> CacheError | None:
    """The one line for a write that failed because of the disk holding `folder`, by errno (never by the text):
    no space left (ENOSPC, EDQUOT, or a failure without errno while the folder has under LOW_SPACE bytes free),
    a read-only or forbidden folder (EROFS, EACCES, EPERM). None for any other failure. Call it before removing
    what the failed write left, so that the free space is the one the write met."""
    code = getattr(error, "errno", None)
    shown = printable(folder)
    if code in (errno.ENOSPC, errno.EDQUOT) or (code is None and _free_bytes(folder) < LOW_SPACE):
        return CacheError(f"the disk holding {shown!r} is full (no space left to write the cache): free some space "
                          "and run stage one again; the previous cache is unchanged")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return CacheError(f"cannot write in the cache's folder {shown!r} (read-only or permission denied): make it "
                          "writable or set another cache path; the previous cache is unchanged")
    return None


def _free_bytes(folder: Path) -> int:
    try:
        st = os.statvfs(folder)
    except OSError:
        return LOW_SPACE  # unknown: not called full
    return st.f_bavail * st.f_frsize
