"""The train/val/test split of the cached clips: random, by group, or official lists (its file: split_file.py)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.extract.cache import Cache
from pipeline.errors import ConfigError, DataError, printable
from pipeline.data.lists import HMDB51_LIST, UNUSED, match_listed, read_lists
from pipeline.heads.split_file import PARTS
from pipeline.settings import GROUP_BY, SPLIT_METHODS

# Datasets whose file names say which source video a clip was cut from (split.group_by: auto): name -> (regex whose
# first capture names the source within its class, the naming as its authors write it, the group_pattern to use)
NAMINGS = {
    "UCF101": (re.compile(r"^v_.+_g(\d+)_c\d+\.\w+$", re.I), "v_<Class>_g<NN>_c<NN>", r"_g(\d+)_c\d+\."),
    "HMDB51": (re.compile(r"^(.+)_[fhlu]_(?:cm|nm)_np\d+_(?:fr|ba|le|ri)_(?:bad|goo|med)_\d+\.\w+$", re.I),
               "<source video>_<action>_<body>_<camera>_<people>_<view>_<quality>_<n>", r"^(.+)_[fhlu]_(?:cm|nm)_np"),
}
# split.csv's grouped_by column: what each clip's group was found from, and how to say it
GROUNDS = {"pattern": "split.group_pattern", "annotations": "the annotations' group column", "UCF101": "UCF101's "
           "naming, recognised from the file names", "HMDB51": "HMDB51's naming, recognised from the file names",
           "stem": "file-name stems (split.group_by stem)", "folder": "folders (split.group_by folder)",
           "file": "each file (no grouping known, or split.group_by file)",
           "content": "identical content (content hash), joined with another group"}
STEM = re.compile(r"^(.+)[-_. ][^-_. ]*$")  # split.group_by stem: the name without its extension and last field
MAX_NAMED = 3  # examples a note names


@dataclass
class SplitConfig:
    """The split stage's settings (params.yaml: split.*).

    method: random (per clip, stratified), group (whole groups, stratified) or lists (official train/test lists,
    or the annotations' split column; validation carved out of train by group). Groups (clip_groups): group_pattern,
    a regex whose first capture group, found in a file's name, names its group within its class (UCF101:
    `_g(\\d+)_`); else group_by: auto (the annotations' group column, else UCF101's or HMDB51's naming recognised
    from the names, else each file), stem (`rec12_part3.mp4` -> rec12), folder, or file. Identical content is always
    one group. train_list, test_list: the official lists (UCF101 trainlist/testlist files, or a glob of HMDB51's
    per-class split files in test_list).
    """

    val: float = 0.15
    test: float = 0.15
    seed: int = 0
    method: str = "random"
    group_pattern: str = ""
    group_by: str = "auto"
    train_list: str = ""
    test_list: str = ""


@dataclass
class Grouping:
    """Each clip's group, str (V,); what it was found from (a GROUNDS key, str (V,): "content" where identical
    content joined it to another group); how the groups were found, as the protocol line says it; notes for a
    person (identical content joined) and warnings (the same content under two classes)."""

    groups: np.ndarray
    grounds: np.ndarray
    how: str
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Split:
    """The part of each cached clip (str (V,): train, val, test or unused), its group (str (V,)) and what it was
    found from (Grouping.grounds, str (V,)), how the groups were found (Grouping.how), notes for a person (list
    entries the cache lacks, leakage, joined groups) and warnings (the same content under two classes)."""

    parts: np.ndarray
    groups: np.ndarray
    grounds: np.ndarray
    grouping: str
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def describe_protocol(cfg: SplitConfig, grouping: str = "") -> str:
    """One line naming how the test part was chosen and by which groups (grouping: Grouping.how, from clip_groups
    on the same cache): to print beside every accuracy measured on it."""
    by = grouping or (f"split.group_pattern {cfg.group_pattern!r}" if cfg.group_pattern else
                      f"split.group_by {cfg.group_by}")
    if cfg.method == "lists":
        lists = (f"train {cfg.train_list or 'the rest'}, test {cfg.test_list}" if cfg.test_list
                 else "the annotations' split column")
        return f"official lists ({lists}); val {cfg.val:g} of train by {by}, seed {cfg.seed}"
    groups = f" (groups: {by})" if cfg.method == "group" else ""
    return f"{cfg.method} split{groups}: test {cfg.test:g}, val {cfg.val:g}, seed {cfg.seed}"


def make_split(cache: Cache, cfg: SplitConfig) -> Split:
    """The split of the cached clips as cfg says (see Split). ConfigError naming the setting at fault, DataError
    naming the file or the classes."""
    if cfg.method not in SPLIT_METHODS:
        raise ConfigError(f"split.method must be one of {SPLIT_METHODS}, got {cfg.method!r}")
    grouping = clip_groups(cache, cfg)
    groups, notes = grouping.groups, list(grouping.notes)
    if cfg.method == "random":  # per video, but identical content (copies, segments of one file) in one part
        parts = _content_together(split_videos(cache.labels, cache.class_names, cfg.val, cfg.test, cfg.seed),
                                  cache.content_hash)
    elif cfg.method == "group":
        parts = split_groups(cache.labels, groups, cache.class_names, cfg.val, cfg.test, cfg.seed)
    else:
        parts, list_notes = _listed_parts(cache, cfg)
        notes += list_notes
        train = np.flatnonzero(parts == "train")
        if not (parts == "val").any() and cfg.val > 0:
            parts[train] = split_groups(cache.labels[train], groups[train], cache.class_names, cfg.val, 0.0,
                                        cfg.seed)
    notes += _leakage_notes(parts, groups, grouping.how, cfg.method)
    return Split(parts, groups, grouping.grounds, grouping.how, notes, grouping.warnings)


def _listed_parts(cache: Cache, cfg: SplitConfig) -> tuple[np.ndarray, list[str]]:
    """The parts official lists (or the annotations' split column) give the clips, str (V,) with "train" for the
    train part (validation is carved later), and notes."""
    if not (cfg.test_list or cfg.train_list):
        parts = np.array([p or UNUSED for p in cache.annotated_part], object)
        marked = {p: int((parts == p).sum()) for p in (*PARTS, UNUSED) if (parts == p).any()}
        if not (parts != UNUSED).any():
            raise ConfigError("split.method lists needs split.test_list (and train_list), or a split column in "
                              "data.annotations")
        for part in ("test", "train"):
            if part not in marked:
                raise DataError(
                    f"split.method lists without split.test_list takes the parts from the annotations' split column, "
                    f"which marks no clip {part!r} (it marks {', '.join(f'{k} {v}' for k, v in marked.items())}): "
                    f"write {part!r} in that column for the clips to {'measure on' if part == 'test' else 'train on'}"
                    " (Kinetics numbers are reported on its validation set: docs/datasets.md, 'A Kinetics subset'), "
                    "set split.test_list, or use split.method group")
        return parts, []
    if not cfg.test_list:
        raise ConfigError("split.method lists needs split.test_list (split.train_list alone says nothing of test)")
    listed = read_lists(cfg.train_list, cfg.test_list)
    by_part = {p: [e for e in listed.values() if e.part == p] for p in ("train", "test")}
    if cfg.train_list and any(e.labelled for e in by_part["test"]) and not any(e.labelled for e in by_part["train"]):
        raise ConfigError(f"split.train_list and split.test_list look swapped: the lines of {cfg.test_list} carry a "
                          f"class number (UCF101's trainlist's do) and those of {cfg.train_list} do not (its "
                          "testlist's)")
    rows, notes = match_listed(listed, cache.paths)
    rest = UNUSED if cfg.train_list else "train"  # a test list alone: everything else trains
    parts = np.array([rows[i].part if i in rows else rest for i in range(len(cache.paths))], object)
    for part in ("test", "train"):
        if not (parts == part).any():
            example = next(iter(by_part[part] or by_part["test"]), None)
            shown = f" such as {printable(example.path)!r} ({printable(example.file)} line {example.line})" \
                if example else ""
            raise DataError(f"split.method lists: none of the {len(by_part[part])} {part} videos the lists name is "
                            f"in the cache: they name paths{shown}, the cache holds paths such as "
                            f"{printable(cache.paths[0])!r}; both are under data.root, matched without regard to "
                            "case, after dropping leading folders the cache lacks, and across a changed extension")
    hmdb = {e.path.split("/")[0].lower() for e in listed.values() if HMDB51_LIST.match(Path(e.file).name)}
    have = [c for c in cache.class_names if (cache.labels == cache.class_names.index(c)).any()]
    if hmdb and not {c.lower() for c in have} <= hmdb:
        lacking = [c for c in have if c.lower() not in hmdb]
        raise DataError(f"split.test_list names HMDB51 split files of {len(hmdb)} classes, and {len(lacking)} of the "
                        f"cache's {len(have)} classes have none ({', '.join(printable(c) for c in lacking[:5])}"
                        f"{' ...' if len(lacking) > 5 else ''}): they would have no test video. Give a glob of every "
                        "class's file, e.g. 'annotations/hmdb51/testTrainMulti_7030_splits/*_test_split1.txt'")
    for part in ("test", "train"):
        empty = [c for i, c in enumerate(cache.class_names) if (cache.labels == i).any()
                 and not (parts[cache.labels == i] == part).any()]
        if empty:
            notes.append(f"{len(empty)} classes have no {part} video: {', '.join(printable(c) for c in empty[:5])}"
                         f"{' ...' if len(empty) > 5 else ''}")
    if cfg.train_list and (parts == "test").sum() > (parts == "train").sum():
        notes.append(f"the test part ({int((parts == 'test').sum())}) is larger than train "
                     f"({int((parts == 'train').sum())}): are split.train_list and split.test_list swapped?")
    return parts, notes


def clip_groups(cache: Cache, cfg: SplitConfig) -> Grouping:
    """Each clip's group (see SplitConfig): `<class>/<first capture of group_pattern in the file name>`; else by
    group_by; clips with identical content (content hash) are then put in one group. ConfigError when the pattern
    does not compile or misses a file, or when most names follow a known dataset's naming but some do not."""
    if cfg.group_by not in GROUP_BY:
        raise ConfigError(f"split.group_by must be one of {GROUP_BY}, got {cfg.group_by!r}")
    names = [PurePosixPath(p).name for p in cache.paths]
    classes = [cache.class_names[y] for y in cache.labels]
    if cfg.group_pattern:
        if cfg.group_by != "auto":
            raise ConfigError(f"set split.group_pattern or split.group_by, not both (group_pattern "
                              f"{cfg.group_pattern!r}, group_by {cfg.group_by!r})")
        found = _pattern_groups(cfg.group_pattern, names, cache.paths)
        groups, how = [f"{c}/{k}" for c, k in zip(classes, found)], f"split.group_pattern {cfg.group_pattern!r}"
        grounds = ["pattern"] * len(names)
    elif cfg.group_by == "stem":
        stems = [PurePosixPath(n).stem for n in names]
        groups = [f"{c}/{m[1] if (m := STEM.match(s)) else s}" for c, s in zip(classes, stems)]
        how, grounds = GROUNDS["stem"], ["stem"] * len(names)
    elif cfg.group_by == "folder":
        groups, how = [str(PurePosixPath(p).parent) for p in cache.paths], GROUNDS["folder"]
        grounds = ["folder"] * len(names)
    elif cfg.group_by == "file":
        groups, how, grounds = list(cache.paths), "file (split.group_by file)", ["file"] * len(names)
    elif any(cache.group):
        groups, how = [g or p for g, p in zip(cache.group, cache.paths)], GROUNDS["annotations"]
        grounds = ["annotations" if g else "file" for g in cache.group]
    else:
        groups, how, ground = _recognised(names, classes, cache.paths, strict=cfg.method != "random")
        grounds = [ground] * len(names)
    return _join_identical(cache, np.array(groups, object), np.array(grounds, object), how)


def _pattern_groups(pattern: str, names: list[str], paths: np.ndarray) -> list[str]:
    """The first capture of `pattern` in each file name; ConfigError when it does not compile or misses one."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"split.group_pattern {pattern!r} is not a regular expression: {e}") from None
    if regex.groups < 1:
        raise ConfigError(f"split.group_pattern {pattern!r} has no capture group (the group's name): e.g. _g(\\d+)_")
    found = [regex.search(n) for n in names]
    misses = [p for p, m in zip(paths, found) if m is None]
    if misses:
        raise ConfigError(f"split.group_pattern {pattern!r} finds no group in {len(misses)} file names, e.g. "
                          f"{printable(misses[0])}")
    return [m.group(1) for m in found]


def _recognised(names: list[str], classes: list[str], paths: np.ndarray, strict: bool
                ) -> tuple[list[str], str, str]:
    """Groups from a dataset naming (NAMINGS) that every file name follows, with how and its GROUNDS key; else each
    file. strict: a naming most names follow but not all is a ConfigError giving the pattern to set (else each
    file, said so)."""
    for dataset, (regex, naming, pattern) in NAMINGS.items():
        found = [regex.match(n) for n in names]
        misses = [p for p, m in zip(paths, found) if m is None]
        if not misses:
            return ([f"{c}/{m.group(1)}" for c, m in zip(classes, found)],
                    f"{dataset}'s source videos ({naming}), recognised from the file names", dataset)
        if len(misses) < len(names) / 2:
            said = (f"{len(names) - len(misses)} of {len(names)} file names follow {dataset}'s naming ({naming}) "
                    f"but {len(misses)} do not (e.g. {printable(misses[0])})")
            if strict:
                raise ConfigError(f"split.group_by auto: {said}: set split.group_pattern to a regex that finds every "
                                  f"file's source video ({dataset}'s: {pattern!r}), or split.group_by to stem, "
                                  "folder or file")
            return list(paths), f"file ({said})", "file"
    return (list(paths), "file (no grouping known: split.group_by stem or folder, or split.group_pattern, sets one)",
            "file")


def _join_identical(cache: Cache, groups: np.ndarray, grounds: np.ndarray, how: str) -> Grouping:
    """`groups` with every set of groups that share a content hash joined into one (named by its first), and notes
    on the joins and on the same content under two classes."""
    names, member = np.unique(groups.astype(str), return_inverse=True)
    hashes, content = np.unique(cache.content_hash.astype(str), return_inverse=True)
    n, rows = len(names), len(groups)
    graph = coo_matrix((np.ones(rows), (member, n + content)), shape=(n + len(hashes), n + len(hashes)))
    count, component = connected_components(graph, directed=False)
    first = {}
    for g in range(n):  # names are sorted: each component is named by its smallest group
        first.setdefault(component[g], names[g])
    joined = np.array([first[component[g]] for g in member], object)
    grounds = np.where(joined != groups, "content", grounds).astype(object)
    notes, pairs, seen, labels = [], [], {}, {}
    if n > len(first):
        for i, h in enumerate(content):
            j = seen.setdefault(h, i)
            if member[j] != member[i] and len(pairs) < MAX_NAMED:
                pairs.append(f"{printable(cache.paths[j])} = {printable(cache.paths[i])}")
        notes.append(f"{n - len(first)} group{'s' * (n - len(first) > 1)} joined others holding identical content "
                     f"(copies, hard links), so that each content sits in one part: {'; '.join(pairs)}")
        how += f"; identical content kept together ({n - len(first)} joined)"
    clashes, warnings = [], []
    for i, key in enumerate(cache.row_keys()):
        j = labels.setdefault(key, i)
        if cache.labels[j] != cache.labels[i]:
            clashes.append(f"{printable(cache.paths[j])} ({printable(cache.class_names[cache.labels[j]])}) and "
                           f"{printable(cache.paths[i])} ({printable(cache.class_names[cache.labels[i]])})")
    if clashes:
        warnings.append(f"the same content under two classes ({len(clashes)} clip{'s' * (len(clashes) > 1)}): "
                     f"{'; '.join(clashes[:MAX_NAMED])}{' ...' if len(clashes) > MAX_NAMED else ''}")
    return Grouping(joined, grounds, how, notes, warnings)


def _content_together(parts: np.ndarray, content_hash: np.ndarray) -> np.ndarray:
    """parts (str (V,)) with every clip of the same content (content hash) in the part of its first clip."""
    _, first, inverse = np.unique(content_hash.astype(str), return_index=True, return_inverse=True)
    return parts[first[inverse]]


def _leakage_notes(parts: np.ndarray, groups: np.ndarray, how: str, method: str) -> list[str]:
    """A note when groups have clips in more than one of train, val and test (a random split, or lists that do)."""
    used = parts != UNUSED
    names, member = np.unique(groups[used].astype(str), return_inverse=True)
    kinds = np.zeros((len(names), len(PARTS)), bool)
    for k, part in enumerate(PARTS):
        kinds[member[parts[used] == part], k] = True
    straddling = int((kinds.sum(axis=1) > 1).sum())
    if not straddling:  # a group of one file can straddle too: segments of it in two parts
        return []
    fix = ("split.method group keeps them whole" if method == "random" else
           "the lists' own choice, kept as they are" if method == "lists" else "")
    return [f"{straddling} of {len(names)} groups have clips in more than one part, so the test numbers are "
            f"optimistic{' (' + fix + ')' if fix else ''}; groups: {how}"]


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
        n, at = int(sizes[mine].sum()), 0
        for part, fraction, keep in (("test", test, 1 + (val > 0)), ("val", val, 1)):
            target, taken = max(int(fraction > 0), int(round(n * fraction))), 0
            while fraction > 0 and taken < target and at < len(mine) - keep:
                group_part[mine[at]] = part
                taken += int(sizes[mine[at]])
                at += 1
    return group_part[member]


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
        n_test, n_val = max(int(test > 0), int(round(n * test))), max(int(val > 0), int(round(n * val)))
        if n - n_test - n_val < 1:  # rounding up both for a tiny class: give the spare video back to training
            n_val = n - n_test - 1
        parts[members[:n_test]] = "test"
        parts[members[n_test:n_test + n_val]] = "val"
    return parts
