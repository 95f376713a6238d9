"""Frame embeddings left in a cache file, read a block of rows at a time when asked, each read checked (Embeddings)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from pipeline.errors import CacheError, printable
from pipeline.extract.cache_door import checked_dataset, finite_rows

BLOCK_ROWS = 1024  # videos per read or write block: 1024 x 16 x 512 x 4 B = 32 MiB at ViT-B/32 size


def masked_mean(frames: np.ndarray, counts: np.ndarray | None, dtype=np.float32) -> np.ndarray:
    """Frames float32 (V, F, D) -> the mean of each row's first counts[v] frames, float32 (V, D); counts None: of
    all F (numpy's mean, the same floats as before frame counts existed)."""
    if counts is None:
        return frames.mean(axis=1, dtype=dtype)
    mask = np.arange(frames.shape[1]) < np.asarray(counts)[:, None]  # (V, F)
    total = np.einsum("vfd,vf->vd", frames.astype(dtype, copy=False), mask.astype(dtype))
    return (total / np.maximum(counts, 1)[:, None]).astype(np.float32)


class Embeddings:
    """Frame embeddings left in a cache file: float32 (V, F, D) once read (float16 storage is widened).

    Indexing with rows (a slice, an int array or a bool mask) gives the Embeddings of those rows and reads
    nothing; an int reads one video's (F, D); np.asarray() reads every row; blocks() reads BLOCK_ROWS rows at a
    time; mean(axis=1) is the (V, D) mean over each row's own frames (`counts`, int64 (V,): the cache's sampled;
    None when every row has all F), computed block by block. Each read opens the file and
    checks that it is still the one opened: a cache replaced since is a CacheError, never other videos' rows; that
    its embeddings still keep their data in the file (cache_door.checked_dataset); and that the rows read are
    finite (cache_door.finite_rows): a CacheError naming the row, never a NaN passed on. finite() tells the usable
    rows without refusing (stage one re-encodes the others).
    """

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(self, path: Path, identity: tuple, shape: tuple[int, int, int], rows: np.ndarray | None = None,
                 counts: np.ndarray | None = None):
        self.path, self._identity = path, identity
        self._rows = np.arange(shape[0], dtype=np.int64) if rows is None else rows
        self.shape = (len(self._rows), *shape[1:])
        self.counts = counts  # int64 (V,) of these rows, or None: all F

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self._read(self._rows[[key]])[0]
        counts = None if self.counts is None else self.counts[key]
        return Embeddings(self.path, self._identity, (0, *self.shape[1:]), self._rows[key], counts)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._read(self._rows)
        return out if dtype is None else out.astype(dtype, copy=False)

    def blocks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(start, float32 (B, F, D)) for each block of `rows` (default BLOCK_ROWS) rows, in order."""
        rows = rows or BLOCK_ROWS
        for start in range(0, len(self), rows):
            yield start, self._read(self._rows[start:start + rows])

    def mean(self, axis: int, dtype=np.float32) -> np.ndarray:
        """The mean over each row's own frames, float32 (V, D), a block at a time (the only reduction offered:
        axis=1)."""
        assert axis == 1, "Embeddings only averages over frames (axis=1)"
        out = np.empty((len(self), self.shape[2]), np.float32)
        for start, block in self.blocks():
            out[start:start + len(block)] = masked_mean(block, self.block_counts(start, len(block)), dtype)
        return out

    def block_counts(self, start: int, rows: int) -> np.ndarray | None:
        """The frame counts int64 (rows,) of rows [start, start + rows), or None when every row has all F."""
        return None if self.counts is None else self.counts[start:start + rows]

    def finite(self) -> np.ndarray:
        """bool (V,): which rows hold only finite embeddings within cache_door.MAX_ABS_EMBEDDING; reads every row."""
        out = np.empty(len(self), bool)
        for start in range(0, len(self), BLOCK_ROWS):
            out[start:start + BLOCK_ROWS] = finite_rows(self._read(self._rows[start:start + BLOCK_ROWS], check=False))
        return out

    def _read(self, rows: np.ndarray, check: bool = True) -> np.ndarray:
        """Rows float32 (N, F, D), in the order asked; read in file order, a span or a run of rows at a time.
        check: CacheError for a row that is not finite."""
        out = np.empty((len(rows), *self.shape[1:]), np.float32)
        if not len(rows):
            return out
        order = np.argsort(rows, kind="stable")
        with open_file(self.path) as f:
            if file_identity(self.path) != self._identity:
                raise CacheError(f"{self.path} was replaced since it was opened (a new stage-one run?): open it again")
            ds = checked_dataset(f, "embeddings", self.path)
            for chunk in np.array_split(order, -(-len(order) // BLOCK_ROWS)):
                wanted = rows[chunk]
                lo, hi = int(wanted[0]), int(wanted[-1]) + 1
                if hi - lo <= 2 * len(chunk):  # dense: one read of the span
                    out[chunk] = ds[lo:hi][wanted - lo]
                    continue
                breaks = np.flatnonzero(np.diff(wanted) != 1) + 1  # sparse: each run of consecutive rows
                for run in np.split(np.arange(len(chunk)), breaks):
                    out[chunk[run]] = ds[int(wanted[run[0]]):int(wanted[run[-1]]) + 1]
        bad = ~finite_rows(out) if check else np.zeros(0, bool)
        if bad.any():
            row = int(rows[np.flatnonzero(bad)[0]])
            raise CacheError(f"{printable(self.path)}: row {row} holds embeddings that are not finite numbers (NaN, "
                             "infinite or huge): re-run stage one with extract.rehash: true to re-encode it")
        return out


def open_file(path: Path) -> h5py.File:
    return h5py.File(path, "r", locking=False)  # a reader never blocks, nor is blocked by, stage one


def file_identity(path: Path) -> tuple:
    """What tells one version of a file from the next: a new cache is a new inode (written beside, renamed)."""
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns
