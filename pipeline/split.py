"""The train/val/test split of the cached clips (random, by group, or official lists), and its CSV.

The CSV (cache/split.csv) holds each clip's part and group; every head and tool shares it.
"""
from __future__ import annotations

import csv
import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline.cache import Cache
from pipeline.errors import ConfigError, DataError

PARTS = ("train", "val", "test")
UNUSED = "unused"  # the part of a clip that official lists leave out: in the split, in no head's data
METHODS = ("random", "group", "lists")
HMDB51_LIST = re.compile(r"^(?P<label>.+)_test_split\d+\.txt$")  # HMDB51: <class>_test_split<N>.txt
HMDB51_PARTS = {"0": UNUSED, "1": "train", "2": "test"}


@dataclass
class SplitConfig:
    """The split stage's settings (params.yaml: split.*).

    method: random (per clip, stratified), group (whole groups, stratified) or lists (official train/test lists,
    or the annotations' split column; validation carved out of train by group). group_pattern: a regex whose
    first capture group, found in a file's name, names its group within its class (UCF101: `_g(\\d+)_`); else
    the annotations' group column; else the file (segments of one file together). train_list, test_list: the
    official lists (UCF101 trainlist/testlist files, or a glob of HMDB51's per-class split files in test_list).
    """

    val: float = 0.15
    test: float = 0.15
    seed: int = 0
    method: str = "random"
    group_pattern: str = ""
    train_list: str = ""
    test_list: str = ""


def describe_protocol(cfg: SplitConfig) -> str:
    """One line naming how the test part was chosen: to print beside every accuracy measured on it."""
    if cfg.method == "lists":
        lists = (f"train {cfg.train_list or 'the rest'}, test {cfg.test_list}" if cfg.test_list
                 else "the annotations' split column")
        return f"official lists ({lists}); val {cfg.val:g} of train by group, seed {cfg.seed}"
    groups = f" (groups: {cfg.group_pattern or 'annotations, else file'})" if cfg.method == "group" else ""
    return f"{cfg.method} split{groups}: test {cfg.test:g}, val {cfg.val:g}, seed {cfg.seed}"


def make_split(cache: Cache, cfg: SplitConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The part of each cached clip (str (V,): train, val, test or unused), its group (str (V,)) and notes
    (list entries the cache lacks). ConfigError naming the setting at fault, DataError naming the file or the
    classes."""
    if cfg.method not in METHODS:
        raise ConfigError(f"split.method must be one of {METHODS}, got {cfg.method!r}")
    groups = clip_groups(cache, cfg.group_pattern)
    if cfg.method == "random":
        return split_videos(cache.labels, cache.class_names, cfg.val, cfg.test, cfg.seed), groups, []
    if cfg.method == "group":
        return split_groups(cache.labels, groups, cache.class_names, cfg.val, cfg.test, cfg.seed), groups, []
    notes = []
    if cfg.test_list or cfg.train_list:
        if not cfg.test_list:
            raise ConfigError("split.method lists needs split.test_list (split.train_list alone says nothing of test)")
        listed = read_lists(cfg.train_list, cfg.test_list)
        lower = {p.lower() for p in cache.paths}
        absent = [p for p in listed if p not in lower]
        if absent:
            notes.append(f"{len(absent)} listed videos are not in the cache (missing or skipped), e.g. {absent[0]}")
        rest = UNUSED if cfg.train_list else "train"  # a test list alone: everything else trains
        parts = np.array([listed.get(p.lower(), rest) for p in cache.paths], object)
    else:
        parts = np.array([p or UNUSED for p in cache.annotated_part], object)
        if not (parts != UNUSED).any():
            raise ConfigError("split.method lists needs split.test_list (and train_list), or a split column in "
                             "data.annotations")
    if not (parts == "test").any() or not (parts == "train").any():
        raise DataError(f"split.method lists: no {'test' if not (parts == 'test').any() else 'train'} videos in "
                         "the cache are listed (check the lists' paths against data.root)")
    train = np.flatnonzero(parts == "train")
    if not (parts == "val").any() and cfg.val > 0:
        carved = split_groups(cache.labels[train], groups[train], cache.class_names, cfg.val, 0.0, cfg.seed)
        parts[train] = carved
    return parts, groups, notes


def clip_groups(cache: Cache, pattern: str = "") -> np.ndarray:
    """Each clip's group, str (V,): `<class>/<first capture of pattern in the file name>` when a pattern is
    given, else the annotations' group column, else the file's path. ConfigError when the pattern does not compile
    or misses a file."""
    if pattern:
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"split.group_pattern {pattern!r} is not a regular expression: {e}") from None
        if regex.groups < 1:
            raise ConfigError(f"split.group_pattern {pattern!r} has no capture group (the group's name): e.g. "
                             r"_g(\d+)_")
        found = [regex.search(PurePosixPath(p).name) for p in cache.paths]
        misses = [p for p, m in zip(cache.paths, found) if m is None]
        if misses:
            raise ConfigError(f"split.group_pattern {pattern!r} finds no group in {len(misses)} file names, e.g. "
                             f"{misses[0]}")
        return np.array([f"{cache.class_names[y]}/{m.group(1)}" for y, m in zip(cache.labels, found)], object)
    return np.array([g or p for g, p in zip(cache.group, cache.paths)], object)


def check_splittable(per_class: np.ndarray, class_names: list[str], val: float, test: float, unit: str) -> None:
    """ConfigError unless the fractions are usable, DataError unless every class with any of its `unit` (videos or
    groups; counts per class, int (C,)) has enough of them for one in train and one in each part whose fraction is
    above 0."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ConfigError(f"split fractions must be in [0, 1) and sum below 1, got val={val}, test={test}")
    need = 1 + (val > 0) + (test > 0)
    shown = "" if unit == "videos" else f" {unit}"  # a video count is plain; a group count says so
    small = [f"{class_names[c]} ({per_class[c]}{shown})" for c in range(len(class_names)) if 0 < per_class[c] < need]
    if small:
        raise DataError(f"classes too small to split into train/val/test (too few {unit}; need {need} each): "
                         f"{', '.join(small)}")


def split_groups(labels: np.ndarray, groups: np.ndarray, class_names: list[str], val: float, test: float,
                 seed: int) -> np.ndarray:
    """Assign each video to "train", "val" or "test", str array (V,), keeping every group whole: seeded, stratified
    by the class most of a group's videos have.

    Per class of n videos, whole groups (in a seeded order) go to test until it holds round(n * test) videos, then
    to val until round(n * val), at least one group each when the fraction is above 0, and at least one group is
    left for training; a class with too few groups for that is a DataError naming it.
    """
    labels, groups = np.asarray(labels), np.asarray(groups, dtype=object)
    names, member = np.unique(groups.astype(str), return_inverse=True)
    sizes = np.bincount(member, minlength=len(names))
    counts = np.zeros((len(names), len(class_names)), np.int64)
    np.add.at(counts, (member, labels), 1)
    owner = counts.argmax(axis=1)  # (G,) the class of each group
    check_splittable(np.bincount(owner, minlength=len(class_names)), class_names, val, test, "groups")
    rng = np.random.default_rng(seed)
    group_part = np.full(len(names), "train", dtype=object)
    for c in range(len(class_names)):
        mine = rng.permutation(np.flatnonzero(owner == c))
        n = int(sizes[mine].sum())
        at = 0
        for part, fraction, keep in (("test", test, 1 + (val > 0)), ("val", val, 1)):
            target, taken = max(int(fraction > 0), int(round(n * fraction))), 0
            while fraction > 0 and taken < target and at < len(mine) - keep:
                group_part[mine[at]] = part
                taken += int(sizes[mine[at]])
                at += 1
    return group_part[member]


def read_lists(train_list: str, test_list: str) -> dict[str, str]:
    """{path under the data root, lower-case: "train", "test" or "unused"} from official lists.

    UCF101: train_list `Class/v_x.avi [label]` and test_list `Class/v_x.avi` lines. HMDB51: a glob of its
    `<class>_test_split<N>.txt` files (`video.avi 1|2|0`: train, test, unused) as test_list (train_list empty).
    Lower-case, because UCF101's lists and its files disagree on case (HandStandPushups). DataError naming the
    file and line of anything else.
    """
    listed: dict[str, str] = {}
    for pattern, part in ((train_list, "train"), (test_list, "test")):
        if not pattern:
            continue
        files = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not files:
            raise DataError(f"split list {pattern!r} matches no file")
        for file in files:
            for line, path, file_part in _list_entries(Path(file), part):
                if listed.get(path, file_part) != file_part:
                    raise DataError(f"{file} line {line}: {path} is also listed as {listed[path]}")
                listed[path] = file_part
    return listed


def _list_entries(file: Path, part: str):
    """(line, path lower-case, part) of each entry of a UCF101 list or an HMDB51 split file."""
    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines()
    except OSError as e:
        raise DataError(f"split list {str(file)!r} cannot be read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise DataError(f"split list {str(file)!r} is not UTF-8 text") from None
    hmdb = HMDB51_LIST.match(file.name)
    for line, text in enumerate(lines, 1):
        fields = text.split()
        if not fields:
            continue
        if hmdb:
            if len(fields) != 2 or fields[1] not in HMDB51_PARTS:
                raise DataError(f"{file} line {line}: expected `video.avi 0|1|2` (HMDB51), got {text[:80]!r}")
            yield line, f"{hmdb['label']}/{fields[0]}".lower(), HMDB51_PARTS[fields[1]]
        elif len(fields) > 2 or (len(fields) == 2 and not fields[1].isdigit()):
            raise DataError(f"{file} line {line}: expected `path [label]` (UCF101), got {text[:80]!r}")
        else:
            yield line, fields[0].replace("\\", "/").lower(), part


def split_videos(labels: np.ndarray, class_names: list[str], val: float, test: float, seed: int) -> np.ndarray:
    """Assign each video to "train", "val" or "test": str array (V,), stratified by class, seeded.

    Per class of n videos: round(n * test) test videos and round(n * val) validation videos, at least one each
    when the fraction is above 0, and at least one training video; a class too small for that is a DataError
    naming it.
    """
    labels = np.asarray(labels)
    check_splittable(np.bincount(labels, minlength=len(class_names)), class_names, val, test, "videos")
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
                parts: np.ndarray, groups: np.ndarray | None = None) -> None:
    """Write the split as CSV (path, label, part, group), one row per clip, via a temporary file and a rename.

    paths: the clips' ids (Cache.clip_ids: the path, `#t=start,end` for a segment); groups: default each its own.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    groups = paths if groups is None else groups
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "part", "group"])
        writer.writerows((p, class_names[y], part, g) for p, y, part, g in zip(paths, labels, parts, groups))
    os.replace(tmp, path)


def read_split(path: str | os.PathLike, paths: np.ndarray, column: str = "part") -> np.ndarray:
    """The part ("train"/"val"/"test"/"unused") of each of `paths` (clip ids), or another column of the split
    (column="group"), str array (V,); DataError if there is no split, or it misses any."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no split at {str(path)!r}: run `dvc repro split` first")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise DataError(f"{path} has no {column!r} column: it is older than this code, re-run `dvc repro split`")
        value_of = {row["path"]: row[column] for row in reader}
    missing = [p for p in paths if p not in value_of]
    if missing:
        raise DataError(f"{path} does not list {len(missing)} cached videos (e.g. {missing[0]}): "
                         "the split is older than the cache, re-run `dvc repro split`")
    return np.array([value_of[p] for p in paths], dtype=object)
