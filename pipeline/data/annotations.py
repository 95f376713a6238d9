"""Annotation files: which file (or which segment of it) is which class, in which group and which official part.

Three formats, recognised from the file itself:
- CSV with a header naming `path` and `label`, and optionally `start`, `end` (seconds), `group` and `split`;
- a Kinetics CSV (`label,youtube_id,time_start,time_end[,split]`): the clip is `<youtube_id>_<start:06d>_<end:06d>`
  (any video extension, anywhere under the data root) as the usual downloaders save it, or else the full video
  `<youtube_id>.*` with [time_start, time_end) as its segment; the group is the YouTube video;
- an mmaction2 video list (`path label` per line, label a number into the class-names file; a line repeated, as
  mmaction2 repeats lines on purpose, is read once). Its multi-label and rawframe lists are refused, named as such.
Class-names files: one name per line (mmaction2's label maps, label 0 first), or numbered lines as UCF101's
classInd.txt (`1 ApplyEyeMakeup`), whose numbers the labels then use. Paths are relative to the data root (an
absolute path inside it is taken as relative). A file that is not there is skipped with its line number (a
downloaded dataset always misses some); a malformed line or an unknown class stops the run, every such line listed.
"""
from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.data.discover import clip_id
from pipeline.data.discover import VideoFile, check_follow_links, find_video_files, link_refusal
from pipeline.errors import DataError, printable

FORMATS = ("csv", "kinetics", "mmaction2")
# The words annotation files use for the official parts, and the part each names ("" = not said)
PART_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
              "validation": "val", "test": "test", "testing": "test", "unused": "unused", "": ""}
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
MAX_LISTED = 10  # errors listed in one message; the rest are counted
MAX_LINE = 16_384  # characters of one line (a path is at most 4,096 bytes): a longer line is refused by its number
SECONDS = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")  # float() also takes 1_0 (10), nan and inf
NUMBERED = re.compile(r"^\s*(\d+)\s+(\S.*?)\s*$")  # a numbered class line, as UCF101's classInd.txt: `1 ApplyEyeMakeup`


@dataclass(frozen=True)
class ClassNames:
    """A class-names file as read: the names in label order, and the number of the first one (0: one name per
    line, as mmaction2's label maps; 1: UCF101's classInd.txt, `1 ApplyEyeMakeup`)."""

    names: list[str]
    first: int = 0


def read_class_names(file: str | os.PathLike) -> ClassNames:
    """The class names of a class-names file (data.classes): one per line (label 0 first), or, when every line is
    `<number> <name>` with the numbers counting up by one from 0 or 1, the names in that order with that first
    number. BOM, CRLF and trailing spaces are ignored. DataError naming the file when it holds no name, or a name
    twice."""
    file = Path(file)
    lines = [line.strip() for line in _read_lines(file) if line.strip()]
    numbered = [NUMBERED.match(line) for line in lines]
    first = int(numbered[0][1]) if lines and numbered[0] else -1
    if first in (0, 1) and all(m and int(m[1]) == first + i for i, m in enumerate(numbered)):
        names = [m[2] for m in numbered]
    else:
        names, first = lines, 0
    if not names:
        raise DataError(f"class-names file {printable(file)!r} names no class")
    where = [i + 1 for i, line in enumerate(_read_lines(file)) if line.strip()]  # file line of each name
    bad = _bad_line(lines)
    if bad:
        raise DataError(f"class-names file {printable(file)!r} line {where[bad[0]]}: {bad[1]}")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise DataError(f"class-names file {printable(file)!r} line {where[i]}: the name of line "
                            f"{where[seen[name]]} again (one line per class)")
        seen[name] = i
    return ClassNames(names, first)


def read_annotations(file: str | os.PathLike, root: str | os.PathLike, classes_file: str | os.PathLike = "",
                     follow_links: str = "inside") -> tuple[list[VideoFile], list[str], list[tuple[str, str]]]:
    """The clips an annotation file names, as discover_videos gives a folder's: the clips sorted by path and
    segment, the class names (the classes file's order when given, else sorted), and (clip id, reason) for each
    line whose file is missing, or reached through a symbolic link out of the data root (follow_links "inside",
    the default; "all" follows it).

    DataError naming the file, listing the lines (numbered from 1) that are malformed or name an unknown class.
    """
    check_follow_links(follow_links)
    file, root = Path(file), Path(root)
    lines = _read_lines(file)
    refused = [(i + 1, why) for i, line in enumerate(lines) if (why := _bad_line([line]))]
    if refused:  # before anything else reads them (csv's field limit is 128 KiB; a NUL cannot be stored)
        raise DataError(f"{printable(file)}: {_listed([(line, why[1]) for line, why in refused])}")
    classes = read_class_names(classes_file) if classes_file else None
    kind = detect_format(file, lines)
    first = next((line for line in lines if line.strip()), "")
    if kind == "mmaction2" and _unsupported(first, root):  # said before asking for a class-names file
        raise DataError(f"{printable(file)} line {lines.index(first) + 1}: {_unsupported(first, root)}")
    if kind == "mmaction2" and classes is None:
        raise DataError(f"{printable(file)}: an mmaction2 list numbers its classes: set data.classes to the "
                        "class-names file (one name per line, in label order, or UCF101's numbered classInd.txt)")
    rows, errors, hint = (_mmaction2_rows if kind == "mmaction2" else _csv_rows)(file, lines, kind, root, classes,
                                                                                 follow_links)
    names = classes.names if classes is not None else None
    seen: dict[str, tuple[int, str]] = {}
    videos, problems = [], []
    place = _Place(root, follow_links)
    for line, video in rows:
        name = clip_id(video.path, video.segment)
        shown = printable(name)
        if name in seen:
            first, label = seen[name]
            if kind != "mmaction2":
                errors.append((line, f"{shown} is already on line {first}"))
            elif label != video.label:  # mmaction2 repeats a line on purpose: read once; another label is not that
                errors.append((line, f"{shown} is on line {first} as {printable(label)!r} and here as "
                              f"{printable(video.label)!r}: one class per video (multi-label lists are not "
                              "supported)"))
            continue
        seen[name] = line, video.label
        if names is not None and video.label not in names:
            errors.append((line, f"unknown class {printable(video.label)!r} (not in {printable(classes_file)})"))
            continue
        if not video.file.is_file() and place.spelled(video.path):  # UCF101: HandstandPushups/v_HandStandPushups_..
            real = place.spelled(video.path)
            video = VideoFile(real, video.label, root / real, video.segment, video.group, video.part)
        refused = place.refusal(video.file)
        if refused:
            problems.append((name, f"{shown}: {printable(file)} line {line}: {refused}"))
        elif not video.file.is_file():
            problems.append((name, f"{shown}: {printable(file)} line {line}: no such file under the data root "
                                   f"{printable(root)!r}"))
        else:
            videos.append(video)
    if errors:
        raise DataError(f"{printable(file)} ({kind}): {_listed(errors, hint)}")
    if not videos and not problems:
        raise DataError(f"{printable(file)} ({kind}) names no videos")
    videos.sort(key=lambda v: (v.path, v.segment or (-1.0, -1.0)))
    return videos, names if names is not None else sorted({v.label for v in videos}), problems  # in line order


class _Place:
    """Where a listed file is: through a symbolic link out of the data root or not (one realpath per folder), and
    the path of the video whose path differs only in case (the data root walked once, when a file is missing)."""

    def __init__(self, root: Path, follow_links: str):
        self.root, self.base, self.follow, self.folders = root, os.path.realpath(root), follow_links, {}
        self.lower: dict[str, str] | None = None

    def spelled(self, path: str) -> str:
        """The path under the root of the one video whose path is `path` but for case, or ""."""
        if self.lower is None:
            found: dict[str, list[str]] = {}
            for f in find_video_files(self.root, self.follow, data_root=True).files:
                rel = f.relative_to(self.root).as_posix()
                found.setdefault(rel.lower(), []).append(rel)
            self.lower = {k: v[0] for k, v in found.items() if len(v) == 1}
        return self.lower.get(path.lower(), "")

    def refusal(self, file: Path) -> str:
        """The reason `file` is not read, or "" (also "" for a missing file: the caller says that)."""
        if self.follow == "all":
            return ""
        parent = self.folders.get(file.parent)
        if parent is None:
            parent = self.folders[file.parent] = os.path.realpath(file.parent)
        target = os.path.realpath(file) if os.path.islink(file) else os.path.join(parent, file.name)
        inside = target == self.base or target.startswith(self.base.rstrip(os.sep) + os.sep)
        return "" if inside or not os.path.exists(target) else link_refusal(target)


def detect_format(file: Path, lines: list[str]) -> str:
    """"csv", "kinetics" or "mmaction2", from the first line; DataError naming the file when none fits."""
    first = next((line for line in lines if line.strip()), "")
    header = {h.strip().lower() for h in next(csv.reader([first]), [])}
    if {"path", "label"} <= header:
        return "csv"
    if set(KINETICS_COLUMNS) <= header:
        return "kinetics"
    if set(KINETICS_COLUMNS[1:]) <= header:
        raise DataError(f"{printable(file)}: a Kinetics CSV without a label column (Kinetics publishes its test "
                        "set's labels in no CSV): it can neither train nor test a head. Kinetics numbers are "
                        "reported on the validation CSV: use that as the test part (docs/datasets.md, 'A Kinetics "
                        "subset')")
    fields = first.rsplit(maxsplit=1)
    if len(fields) == 2 and _number(fields[1]):
        return "mmaction2"
    raise DataError(f"{printable(file)}: not an annotation file this pipeline reads: expected a CSV whose header "
                    f"names path and label (and optionally start, end, group, split), a Kinetics CSV "
                    f"({','.join(KINETICS_COLUMNS)},split), or an mmaction2 list (`path label` per line); "
                    f"its first line (line {lines.index(first) + 1 if first else 1}) is none of these")


def _unsupported(text: str, root: Path) -> str:
    """Why an mmaction2 line of a format this pipeline does not read is refused (a line with several numbers at
    its end: a rawframe list's or a multi-label list's), or ""."""
    fields = text.split()
    numbers = next((i for i, f in enumerate(reversed(fields)) if not _number(f)), len(fields))  # trailing
    if not 2 <= numbers < len(fields):
        return ""
    head = " ".join(fields[:len(fields) - numbers])
    what = ("a rawframe list line (frame folder, [offset,] frame count, label)" if (root / head).is_dir() else
            "a multi-label video line (path, then several labels)" if (root / head).is_file() else
            "a multi-label video line (`path label label ...`) or a rawframe line (`folder frames label`)")
    return (f"the line is {what}, an mmaction2 format this pipeline does not read (it reads one video file and one "
            "label per line: `path label`)")


def _read_lines(file: Path) -> list[str]:
    try:
        return file.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DataError(f"annotation file {printable(file)!r} does not exist") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{printable(file)}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{printable(file)}: cannot be read ({e.strerror})") from None


def _relative(path: str, root: Path) -> str:
    """The path as posix under the data root; an absolute path inside the root is made relative to it. DataError
    when it is empty, absolute elsewhere, or holds `..` (a path that climbs can leave the root, whatever
    data.follow_links says: refused before anything is read)."""
    p = PurePosixPath(path.strip().replace("\\", "/"))
    if ".." in p.parts:
        raise DataError(f"path {printable(path)!r} climbs with `..`: an annotation names files under the data root, "
                        "by their path from it")
    if p.is_absolute():
        for base in (os.path.abspath(root), os.path.realpath(root)):
            if p.is_relative_to(base):
                return p.relative_to(base).as_posix()
        raise DataError(f"path {printable(path)!r} is absolute and not under the data root {printable(root)!r}: "
                        "paths are relative to data.root (set data.root to the folder the paths start from, and "
                        "strip that prefix from the file)")
    if not path.strip():
        raise DataError("no path")
    return p.as_posix()


def _csv_rows(file: Path, lines: list[str], kind: str, root: Path, classes, follow_links: str
              ) -> tuple[list, list[tuple[int, str]], str]:
    """(line number, VideoFile) of each row of a CSV or Kinetics CSV, the malformed lines, and no hint ("")."""
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    try:  # every row read before any is used: a quoted field that runs on is found before any work
        reader.fieldnames = [h.strip().lower() for h in reader.fieldnames or []]
        parsed = [(row, reader.line_num) for row in reader]
    except csv.Error as e:  # csv's one failure: a field over its limit (128 KiB), a quote that does not end...
        raise DataError(f"{printable(file)} line {reader.line_num}: not CSV ({printable(e)})") from None
    stems = _stems(root, follow_links) if kind == "kinetics" else {}
    rows, errors = [], []
    for row, line in parsed:
        cells = [v for k, v in row.items() if k is not None] + row.get(None, [])  # None: fields past the header
        if not any((v or "").strip() for v in cells):
            continue
        try:
            get = lambda key: (row.get(key) or "").strip()  # noqa: E731
            part = PART_WORDS.get(get("split").lower())
            if part is None:
                raise DataError(f"split {printable(get('split'))!r} is not one of "
                                f"{', '.join(w for w in PART_WORDS if w)}")
            if not get("label"):
                raise DataError("no label")
            if kind == "kinetics":
                start, end = _segment(get("time_start"), get("time_end"))
                youtube_id = get("youtube_id")
                trimmed = stems.get(f"{youtube_id}_{int(start):06d}_{int(end):06d}")
                path, segment = (trimmed, None) if trimmed else (stems.get(youtube_id), (start, end))
                # reported missing; a label or id that climbs (`../`) is refused by _relative
                path = path or _relative(f"{get('label')}/{youtube_id}_{int(start):06d}_{int(end):06d}.mp4", root)
                group = youtube_id
            else:
                path = _relative(get("path"), root)
                segment = _segment(get("start"), get("end")) if get("start") or get("end") else None
                group = get("group")
            rows.append((line, VideoFile(path, get("label"), root / path, segment, group, part)))
        except DataError as e:  # this line's problem: listed with the others
            errors.append((line, str(e)))
    return rows, errors, ""


def _segment(start: str, end: str) -> tuple[float, float]:
    """(start, end) seconds from their text: decimal numbers only (float() would read `1_0` as 10, and `nan`), -0
    as 0 (the same clip as 0, named once)."""
    if not (SECONDS.fullmatch(start) and SECONDS.fullmatch(end)):
        raise DataError(f"start and end must be seconds (a decimal number), got {printable(start[:40])!r} and "
                        f"{printable(end[:40])!r}")
    lo, hi = float(start) + 0.0, float(end) + 0.0  # + 0.0: -0.0 becomes 0.0
    if not 0 <= lo < hi < float("inf"):
        raise DataError(f"the segment [{printable(start)}, {printable(end)}) is empty or negative")
    return lo, hi


def _listed(errors: list[tuple[int, str]], hint: str = "") -> str:
    """`N bad lines (hint):` then a line for each (line number, problem), by number, the first MAX_LISTED."""
    more = f"\n  ... and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
    return (f"{len(errors)} bad line{'s' if len(errors) > 1 else ''}{f' ({hint})' if hint else ''}:\n  "
            + "\n  ".join(f"line {line}: {text}" for line, text in sorted(errors)[:MAX_LISTED]) + more)


def _bad_line(lines: list[str]) -> tuple[int, str] | None:
    """(index, why) of the first line that is too long (MAX_LINE) or holds a NUL byte, or None."""
    for i, line in enumerate(lines):
        if len(line) > MAX_LINE:
            return i, f"{len(line):,} characters, more than the {MAX_LINE:,} a line may have"
        if "\0" in line:
            return i, "holds a NUL byte (a path or a name cannot)"
    return None


def _stems(root: Path, follow_links: str) -> dict[str, str]:
    """{file name without extension: path under the root} of every video under the root (the first by path)."""
    stems: dict[str, str] = {}
    for f in find_video_files(root, follow_links, data_root=True).files:
        stems.setdefault(f.stem, f.relative_to(root).as_posix())
    return stems


def _mmaction2_rows(file: Path, lines: list[str], kind: str, root: Path, classes: ClassNames,
                    follow_links: str) -> tuple[list, list[tuple[int, str]], str]:
    """(line number, VideoFile) of each `path label` line, the malformed lines (a label out of range, or a line of
    the mmaction2 formats this pipeline does not read: multi-label video lists, rawframe lists), and a hint when
    the labels look 1-based against a names-only file, or 0-based against a numbered one ("" otherwise)."""
    rows, errors, labels = [], [], []
    first, count = classes.first, len(classes.names)
    for line, text in enumerate(lines, 1):
        if not text.strip():
            continue
        fields = text.split()
        unsupported = _unsupported(text, root)
        if unsupported:
            errors.append((line, unsupported))
            continue
        path_text, label = (text.rsplit(maxsplit=1) + [""])[:2] if len(fields) > 1 else ("", "")
        if not _number(label):
            errors.append((line, "expected `path label` (label a class number)"))
            continue
        try:
            path = _relative(path_text, root)
        except DataError as e:
            errors.append((line, str(e)))
            continue
        labels.append(int(label))
        if not first <= int(label) < first + count:
            errors.append((line, f"unknown class {label} (the class-names file has {count}: {first} to "
                          f"{first + count - 1})"))
        else:
            rows.append((line, VideoFile(path, classes.names[int(label) - first], root / path)))
    hint = ""
    if errors and labels and first == 0 and min(labels) >= 1 and max(labels) == count:
        hint = (f"the labels run from 1 to {count}: they look 1-based, as UCF101's trainlist's, and every line is "
                "then one class off: give data.classes numbered lines (UCF101's classInd.txt, `1 ApplyEyeMakeup`), "
                "whose numbers the labels then follow")
    elif errors and labels and first == 1 and min(labels) == 0:
        hint = ("the labels start at 0 but the class-names file numbers its classes from 1: give data.classes one "
                "name per line (mmaction2's label map, label 0 first)")
    return rows, errors, hint


def _number(text: str) -> bool:
    """Whether text is a whole number in ASCII digits (str.isdigit alone accepts '²', which int() refuses)."""
    return text.isascii() and text.isdigit()
