"""The split's file (cache/split.csv): each clip's part and group, written safe for a spreadsheet, read back checked.

Every head and tool reads the split through read_split; the split stage writes it with write_split.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from pipeline.csvsafe import cell, uncell
from pipeline.data.lists import UNUSED, one_row_each
from pipeline.errors import DataError, printable

PARTS = ("train", "val", "test")


def write_split(path: str | os.PathLike, paths: np.ndarray, labels: np.ndarray, class_names: list[str],
                parts: np.ndarray, groups: np.ndarray | None = None, grounds: np.ndarray | None = None) -> None:
    """Write the split as CSV (path, label, part, group, grouped_by), one row per clip, every cell safe in a
    spreadsheet (pipeline.csvsafe.cell: read_split takes the ' back off), via a temporary file and a rename.

    paths: the clips' ids (Cache.clip_ids: the path, `#t=start,end` for a segment); groups: default each its own;
    grounds: what each group was found from (GROUNDS keys: Split.grounds), default "file" with groups None, else "".
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.tmp")
    grounds = np.full(len(paths), "file" if groups is None else "", object) if grounds is None else grounds
    groups = paths if groups is None else groups
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "part", "group", "grouped_by"])
        writer.writerows([cell(v) for v in (p, class_names[y], part, g, b)]  # no cell a spreadsheet would run
                         for p, y, part, g, b in zip(paths, labels, parts, groups, grounds))
    os.replace(tmp, path)


def read_split(path: str | os.PathLike, paths: np.ndarray, column: str = "part", needs: tuple[str, ...] = ()
               ) -> np.ndarray:
    """The part ("train"/"val"/"test"/"unused") of each of `paths` (clip ids), or another column of the split
    (column="group"; "grouped_by": a GROUNDS key), str array (V,); DataError if there is no split, it misses
    any, or one of the parts a stage `needs` (train, test) holds no video (a hand-edited file: every row "train")."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no split at {str(path)!r}: run `dvc repro split` first")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise DataError(f"{path} has no {column!r} column: it is older than this code, re-run `dvc repro split`")
        value_of = one_row_each(((uncell(row["path"] or ""), uncell(row[column] or "")) for row in reader),
                                path)  # as write_split had them; DataError: a clip listed twice
    missing = [p for p in paths if p not in value_of]
    if missing:
        raise DataError(f"{path} does not list {len(missing)} cached videos (e.g. {printable(missing[0])}): "
                         "the split is older than the cache, re-run `dvc repro split`")
    values = np.array([value_of[p] for p in paths], dtype=object)
    odd = sorted(set(values) - {*PARTS, UNUSED}) if column == "part" else []
    if odd:  # a hand-edited part (TEST, a typo) would be no part at all for the heads and tools
        raise DataError(f"{path}: a clip's part is {printable(odd[0])!r}, not train, val, test or {UNUSED}")
    empty = [part for part in needs if not (values == part).any()]
    if empty:
        raise DataError(f"{path} puts no video in the {' and '.join(empty)} part: re-run `dvc repro split` (or give "
                        f"split.val / split.test a share that leaves each part a video per class)")
    return values
