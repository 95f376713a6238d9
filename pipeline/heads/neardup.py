"""Near-duplicate pairs among unit vectors without the (V, V) matrix: the top pairs kept, all counted, memory bounded.

The search behind `clip-har-inspect --outliers` (pipeline.tools.inspector.find_outliers) and the evaluate stage's
leakage note (pipeline.heads.evaluate.small_test_notes). Memory is O(V x D + TILE^2 + top) whatever the data: where
nearly every pair passes, it still keeps only the `top` best.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pipeline.extract.cache import BLOCK_ROWS

SCREEN_DIMS = 64  # principal directions the search screens pairs on before the exact cosine
TILE = 2048  # videos per side of one tile of the search: (TILE, TILE) float32 = 16 MiB
GATHER = 1 << 22  # floats per side of one batch of candidate pairs' rows gathered for their exact cosine: 16 MiB
PAIRS = 1 << 18  # pairs handed to the top-pairs keeper at once: (PAIRS,) int64 = 2 MiB an index


def principal_axes(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean of rows float32 (V, D) and their k principal directions, float32 (D,) and (D, min(k, D)), largest
    variance first, each signed so that its largest entry is positive; the covariance summed a block at a time."""
    centre = x.mean(axis=0)
    cov = np.zeros((x.shape[1],) * 2)
    for start in range(0, len(x), BLOCK_ROWS * 16):
        block = (x[start:start + BLOCK_ROWS * 16] - centre).astype(np.float64)
        cov += block.T @ block
    basis = np.linalg.eigh(cov)[1][:, ::-1][:, :min(k, x.shape[1])]  # eigh: ascending
    basis *= np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(basis.shape[1])])
    return centre.astype(np.float32), basis.astype(np.float32)


class PairSearch(NamedTuple):
    """similar_pairs' answer: the pairs kept (a, b, cosine), and how many passed in all, and across parts."""

    pairs: list[tuple[int, int, float]]
    passed: int
    across: int


class _TopPairs:
    """The `size` best pairs seen so far (across parts first, then by cosine), in memory O(size + one batch)."""

    def __init__(self, size: int):
        self.size, self.batches, self.held, self.passed, self.across = size, [], 0, 0, 0

    def add(self, a: np.ndarray, b: np.ndarray, sims: np.ndarray, leak: np.ndarray) -> None:
        """One batch of pairs that passed: rows int64 (N,), cosines float32 (N,), leak bool (N,)."""
        self.passed += len(a)
        self.across += int(np.count_nonzero(leak))
        if self.size and len(a):
            self.batches.append((a, b, sims, leak))
            self.held += len(a)
            if self.held > 2 * self.size:
                self._reduce()

    def _reduce(self) -> None:
        a, b, sims, leak = (np.concatenate(x) for x in zip(*self.batches))
        if len(a) > self.size:
            keep = np.argpartition(-(sims + 2.0 * leak), self.size - 1)[:self.size]  # cosine <= 1 < 2: leaks first
            a, b, sims, leak = a[keep], b[keep], sims[keep], leak[keep]
        self.batches, self.held = [(a, b, sims, leak)], len(a)

    def result(self) -> PairSearch:
        if not self.batches:
            return PairSearch([], self.passed, self.across)
        self._reduce()
        a, b, sims, leak = self.batches[0]
        order = np.lexsort((b, a, -(sims + 2.0 * leak)))
        return PairSearch(list(zip(a[order].tolist(), b[order].tolist(), sims[order].tolist())), self.passed,
                          self.across)


def similar_pairs(means: np.ndarray, threshold: float, top: int, keys: np.ndarray | None = None,
                  parts: np.ndarray | None = None) -> PairSearch:
    """The `top` pairs (a, b, cosine), a < b, of unit rows float32 (V, D) whose cosine is >= threshold (pairs
    across `parts`, str (V,), first, then the most similar), and how many passed in all (and across parts);
    without the (V, V) matrix, in memory bounded by TILE, GATHER, PAIRS and top whatever the data. Rows with
    equal `keys` (V,) pass with cosine 1.0.

    Cosine >= t is distance^2 <= 2 - 2t. Projected on the SCREEN_DIMS principal directions of the rows, distances
    only shrink, so a pair whose projections are farther apart cannot qualify: (TILE, TILE) tiles of the projected
    rows screen every pair (SCREEN_DIMS / D of the full products' work), and the exact cosine of each pair that
    passes decides (gathered GATHER floats at a time, or the tile's whole product when most pairs pass). Nothing is
    missed: the screen only removes pairs that cannot qualify.
    """
    kept = _TopPairs(top)
    if len(means) < 2:
        return kept.result()
    codes = np.unique(keys, return_inverse=True)[1].ravel() if keys is not None else np.arange(len(means))
    shared = np.bincount(codes)[codes] > 1  # rows whose key another row has
    part_codes = (np.unique(parts, return_inverse=True)[1].ravel() if parts is not None
                  else np.zeros(len(means), np.int64))
    limit = 2 - 2 * threshold + 1e-3  # slack: float32 rounding of the screen
    centre, basis = principal_axes(means, SCREEN_DIMS)
    z = (means - centre) @ basis  # (V, K)
    sq = np.einsum("ij,ij->i", z, z)
    # d^2(a, b) = |z_a|^2 + |z_b|^2 - 2 z_a.z_b as one product: [-2 z_a, |z_a|^2, 1] . [z_b, 1, |z_b|^2]
    left = np.hstack([-2 * z, sq[:, None], np.ones((len(z), 1), np.float32)])
    right = np.hstack([z, np.ones((len(z), 1), np.float32), sq[:, None]])
    per_batch = max(1, GATHER // means.shape[1])
    for i in range(0, len(z), TILE):
        rows_i = slice(i, i + TILE)
        for j in range(i, len(z), TILE):
            rows_j = slice(j, j + TILE)
            near = left[rows_i] @ right[rows_j].T <= limit  # (Ti, Tj) bool
            same = None
            if shared[rows_i].any() and shared[rows_j].any():
                same = codes[rows_i, None] == codes[None, rows_j]
                near |= same
            if i == j:
                near = np.triu(near, 1)
            count = np.count_nonzero(near)
            if count > near.size // 16:  # many pairs pass the screen: the tile's exact product is cheaper
                sims = means[rows_i] @ means[rows_j].T
                if same is not None:
                    sims[same] = 1.0
                hits = near & (sims >= threshold)
                step = max(1, PAIRS // hits.shape[1])  # rows whose hits are taken at once: PAIRS pairs at most
                for r in range(0, len(hits), step):
                    a, b = np.nonzero(hits[r:r + step])
                    _keep(kept, a + i + r, b + j, sims[r:r + step][a, b], part_codes)
                continue
            a, b = np.nonzero(near)
            for start in range(0, count, per_batch):
                sa, sb = a[start:start + per_batch] + i, b[start:start + per_batch] + j
                sims = np.einsum("ij,ij->i", means[sa], means[sb])
                sims[codes[sa] == codes[sb]] = 1.0
                hit = sims >= threshold
                _keep(kept, sa[hit], sb[hit], sims[hit], part_codes)
    return kept.result()


def _keep(kept: _TopPairs, a: np.ndarray, b: np.ndarray, sims: np.ndarray, part_codes: np.ndarray) -> None:
    kept.add(a, b, sims.astype(np.float32), part_codes[a] != part_codes[b])
