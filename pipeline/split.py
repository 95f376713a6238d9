"""A stratified, seeded train/val/test split of the cached videos, stored as a CSV that every head and tool shares."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

PARTS = ("train", "val", "test")
SPLIT_PATH = "cache/split.csv"  # where the split stage writes it, beside the cache (dvc.yaml names it too)


def split_videos(labels: np.ndarray, class_names: list[str], val: float, test: float, seed: int) -> np.ndarray:
    """Assign each video to "train", "val" or "test": str array (V,), stratified by class, seeded.

    Per class of n videos: round(n * test) test videos and round(n * val) validation videos, at least one each
    when the fraction is above 0, and at least one training video; a class too small for that is a ValueError
    naming it.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"split fractions must be in [0, 1) and sum below 1, got val={val}, test={test}")
    labels = np.asarray(labels)
    need = 1 + (val > 0) + (test > 0)
    small = [f"{class_names[c]} ({np.sum(labels == c)})" for c in range(len(class_names))
             if 0 < np.sum(labels == c) < need]
    if small:
        raise ValueError(f"classes too small to split into train/val/test (need {need} videos each): "
                         f"{', '.join(small)}")
    rng = np.random.default_rng(seed)
    parts = np.full(len(labels), "train", dtype=object)
    for c in range(len(class_names)):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = len(members)
        n_test = max(int(test > 0), int(round(n * test)))
        n_val = max(int(val > 0), int(round(n * val)))
        if n - n_test - n_val < 1:  # rounding up both for a tiny class: give the spare video back to training
            n_val = n - n_test - 1
        parts[members[:n_test]] = "test"
        parts[members[n_test:n_test + n_val]] = "val"
    return parts


def write_split(path: str | os.PathLike, paths: np.ndarray, labels: np.ndarray, class_names: list[str],
                parts: np.ndarray) -> None:
    """Write the split as CSV (path, label, part), one row per video, via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "part"])
        writer.writerows((p, class_names[y], part) for p, y, part in zip(paths, labels, parts))
    os.replace(tmp, path)


def read_split(path: str | os.PathLike, paths: np.ndarray) -> np.ndarray:
    """The part ("train"/"val"/"test") of each of `paths`, str array (V,); ValueError if the split misses any."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no split at {str(path)!r}: run `dvc repro split` first")
    with open(path, newline="") as f:
        part_of = {row["path"]: row["part"] for row in csv.DictReader(f)}
    missing = [p for p in paths if p not in part_of]
    if missing:
        raise ValueError(f"{path} does not list {len(missing)} cached videos (e.g. {missing[0]}): "
                         "the split is older than the cache, re-run `dvc repro split`")
    return np.array([part_of[p] for p in paths], dtype=object)
