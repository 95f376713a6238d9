"""Official split lists (UCF101's trainlist/testlist files, HMDB51's split files) read and matched to the cache; a
split file's rows, one per clip. Errors name a list's file and line, never its text."""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline.errors import DataError, printable

UNUSED = "unused"  # the part of a clip that official lists leave out: in the split, in no head's data
HMDB51_LIST = re.compile(r"^(?P<label>.+)_test_split\d+\.txt$")  # HMDB51: <class>_test_split<N>.txt
HMDB51_PARTS = {"0": UNUSED, "1": "train", "2": "test"}


@dataclass(frozen=True)
class Listed:
    """One entry of an official list: its part, its path as the list writes it, where (file, line), and whether the
    line carried a class number (UCF101's trainlist does, its testlist does not)."""

    part: str
    path: str
    file: str
    line: int
    labelled: bool = False


def read_lists(train_list: str, test_list: str) -> dict[str, Listed]:
    """{path under the data root, lower-case: its Listed entry (part "train", "test" or "unused")} from official
    lists.

    UCF101: train_list `Class/v_x.avi [label]` and test_list `Class/v_x.avi` lines. HMDB51: a glob of its
    `<class>_test_split<N>.txt` files (`video.avi 1|2|0`: train, test, unused) as test_list (train_list empty).
    Lower-case, because UCF101's lists and its files disagree on case (HandStandPushups). DataError naming the
    file and line of anything else.
    """
    listed: dict[str, Listed] = {}
    for pattern, part in ((train_list, "train"), (test_list, "test")):
        if not pattern:
            continue
        files = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not files:
            raise DataError(f"split list {printable(pattern)!r} matches no file")
        for file in files:
            for entry in _list_entries(Path(file), part):
                key = entry.path.lower()
                other = listed.setdefault(key, entry)
                if other.part != entry.part:
                    raise DataError(f"{printable(file)} line {entry.line}: {printable(entry.path)} is also listed as "
                                    f"{other.part} ({printable(other.file)} line {other.line})")
    return listed


def _list_entries(file: Path, part: str):
    """The Listed entry of each line of a UCF101 list or an HMDB51 split file, its path as written (posix, `./`
    dropped)."""
    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines()
    except OSError as e:
        raise DataError(f"split list {printable(file)!r} cannot be read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise DataError(f"split list {printable(file)!r} is not UTF-8 text") from None
    hmdb = HMDB51_LIST.match(file.name)
    for line, text in enumerate(lines, 1):
        fields = text.split()
        if not fields:
            continue
        if hmdb:
            if len(fields) != 2 or fields[1] not in HMDB51_PARTS:
                raise DataError(f"{printable(file)} line {line}: expected `video.avi 0|1|2` (HMDB51)")
            yield Listed(HMDB51_PARTS[fields[1]], f"{hmdb['label']}/{fields[0]}", str(file), line)
        elif len(fields) > 2 or (len(fields) == 2 and not (fields[1].isascii() and fields[1].isdigit())):
            raise DataError(f"{printable(file)} line {line}: expected `path [label]` (UCF101)")
        else:
            yield Listed(part, PurePosixPath(fields[0].replace("\\", "/")).as_posix(), str(file), line,
                         len(fields) == 2)


def match_listed(listed: dict[str, Listed], paths: np.ndarray) -> tuple[dict[int, Listed], list[str]]:
    """{cache row: its list entry} for the entries of official lists, and notes. A listed path matches a cached
    one without regard to case; else once leading folders the cache lacks are dropped (`UCF-101/Class/x.avi`);
    else a cached file of another extension (`x.avi` listed, `x.mp4` cached: the lists name a converted copy)."""
    exact = {p.lower(): i for i, p in enumerate(paths)}
    stems: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        stems.setdefault(os.path.splitext(p.lower())[0], []).append(i)
    rows, absent, dropped, renamed = {}, [], [], []
    for key, entry in listed.items():
        steps = PurePosixPath(key).parts
        for drop in range(max(1, len(steps) - 1)):
            candidate = "/".join(steps[drop:])
            same = stems.get(os.path.splitext(candidate)[0], [])
            row = exact.get(candidate, same[0] if len(same) == 1 else None)
            if row is not None:
                rows.setdefault(row, entry)
                if drop:
                    dropped.append(entry)
                if candidate not in exact:
                    renamed.append((entry, row))
                break
        else:
            absent.append(entry)
    notes = []
    if absent:
        notes.append(f"{len(absent)} listed video{'s are' if len(absent) > 1 else ' is'} not in the cache (missing or "
                     f"skipped), e.g. the one of {printable(absent[0].file)} line {absent[0].line}")
    if dropped:
        notes.append(f"{len(dropped)} listed paths matched once their leading folders were dropped (e.g. "
                     f"{printable(dropped[0].path)}): the lists' paths start above data.root")
    if renamed:
        entry, row = renamed[0]
        notes.append(f"{len(renamed)} listed paths matched a cached file of another extension (e.g. "
                     f"{printable(entry.path)} in the list, {printable(paths[row])} in the cache): read as the same "
                     "video")
    return rows, notes


def one_row_each(rows, file: str | os.PathLike) -> dict[str, str]:
    """{clip id: value} of a split file's (clip id, value) rows, in file order (the header is line 1); DataError
    naming the line of a clip listed twice (a hand-edited split.csv: one row would win silently)."""
    found: dict[str, str] = {}
    lines: dict[str, int] = {}
    for line, (clip, value) in enumerate(rows, 2):
        if clip in found:
            raise DataError(f"{printable(file)} line {line}: the clip of line {lines[clip]} again (each clip once): "
                            "re-run `dvc repro split`, or remove one of the two rows")
        found[clip], lines[clip] = value, line
    return found
