"""Annotation files: which file (or which segment of it) is which class, in which group and which official part.

Three formats, recognised from the file itself:
- CSV with a header naming `path` and `label`, and optionally `start`, `end` (seconds), `group` and `split`;
- a Kinetics CSV (`label,youtube_id,time_start,time_end[,split]`): the clip is `<youtube_id>_<start:06d>_<end:06d>`
  (any video extension, anywhere under the data root) as the usual downloaders save it, or else the full video
  `<youtube_id>.*` with [time_start, time_end) as its segment; the group is the YouTube video;
- an mmaction2 list (`path label` per line, label an index into the class-names file).
Paths are relative to the data root. A file that is not there is skipped with its line number (a downloaded
dataset always misses some); a malformed line or an unknown class stops the run, every such line listed.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path, PurePosixPath

from pipeline.cache import clip_id
from pipeline.errors import DataError
from pipeline.discover import VideoFile, find_video_files

FORMATS = ("csv", "kinetics", "mmaction2")
# The words annotation files use for the official parts, and the part each names ("" = not said)
PART_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
              "validation": "val", "test": "test", "testing": "test", "unused": "unused", "": ""}
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
MAX_LISTED = 10  # errors listed in one message; the rest are counted


def read_annotations(file: str | os.PathLike, root: str | os.PathLike, classes_file: str | os.PathLike = ""
                     ) -> tuple[list[VideoFile], list[str], list[tuple[str, str]]]:
    """The clips an annotation file names, as discover_videos gives a folder's: the clips sorted by path and
    segment, the class names (the classes file's order when given, else sorted), and (clip id, reason) for each
    line whose file is missing.

    DataError naming the file, listing the lines (numbered from 1) that are malformed or name an unknown class.
    """
    file, root = Path(file), Path(root)
    lines = _read_lines(file)
    classes = [c.strip() for c in _read_lines(Path(classes_file)) if c.strip()] if classes_file else None
    kind = detect_format(file, lines)
    if kind == "mmaction2" and classes is None:
        raise DataError(f"{file}: an mmaction2 list numbers its classes: set data.classes to the class-names file "
                         "(one name per line, in label order)")
    rows, errors = (_mmaction2_rows if kind == "mmaction2" else _csv_rows)(file, lines, kind, root, classes)
    seen: dict[str, int] = {}
    videos, problems = [], []
    for line, video in rows:
        name = clip_id(video.path, video.segment)
        if name in seen:
            errors.append(f"line {line}: {name} is already on line {seen[name]}")
            continue
        seen[name] = line
        if classes is not None and video.label not in classes:
            errors.append(f"line {line}: unknown class {video.label!r} (not in {classes_file})")
        elif not video.file.is_file():
            problems.append((name, f"{name}: {file} line {line}: no such file under the data root {str(root)!r}"))
        else:
            videos.append(video)
    if errors:
        more = f"\n  ... and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
        raise DataError(f"{file} ({kind}): {len(errors)} bad lines:\n  " + "\n  ".join(errors[:MAX_LISTED]) + more)
    if not videos and not problems:
        raise DataError(f"{file} ({kind}) names no videos")
    videos.sort(key=lambda v: (v.path, v.segment or (-1.0, -1.0)))
    names = classes if classes is not None else sorted({v.label for v in videos})
    return videos, names, sorted(problems)


def detect_format(file: Path, lines: list[str]) -> str:
    """"csv", "kinetics" or "mmaction2", from the first line; DataError naming the file when none fits."""
    first = next((line for line in lines if line.strip()), "")
    header = {h.strip().lower() for h in next(csv.reader([first]), [])}
    if {"path", "label"} <= header:
        return "csv"
    if set(KINETICS_COLUMNS) <= header:
        return "kinetics"
    fields = first.rsplit(maxsplit=1)
    if len(fields) == 2 and fields[1].isdigit():
        return "mmaction2"
    raise DataError(f"{file}: not an annotation file this pipeline reads: expected a CSV whose header names path "
                     f"and label (and optionally start, end, group, split), a Kinetics CSV "
                     f"({','.join(KINETICS_COLUMNS)},split), or an mmaction2 list (`path label` per line); "
                     f"its first line is {first[:80]!r}")


def _read_lines(file: Path) -> list[str]:
    try:
        return file.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DataError(f"annotation file {str(file)!r} does not exist") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{file}: cannot be read ({e.strerror})") from None


def _relative(path: str) -> str | None:
    """The path as posix under the data root, or None when it is absolute or climbs out (`..`)."""
    p = PurePosixPath(path.strip().replace("\\", "/"))
    return None if not path.strip() or p.is_absolute() or ".." in p.parts else p.as_posix()


def _csv_rows(file: Path, lines: list[str], kind: str, root: Path, classes) -> tuple[list, list[str]]:
    """(line number, VideoFile) of each row of a CSV or Kinetics CSV, and the malformed lines."""
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    reader.fieldnames = [h.strip().lower() for h in reader.fieldnames or []]
    stems = _stems(root) if kind == "kinetics" else {}
    rows, errors = [], []
    for row in reader:
        line = reader.line_num
        cells = [v for k, v in row.items() if k is not None] + row.get(None, [])  # None: fields past the header
        if not any((v or "").strip() for v in cells):
            continue
        try:
            get = lambda key: (row.get(key) or "").strip()  # noqa: E731
            part = PART_WORDS.get(get("split").lower())
            if part is None:
                raise DataError(f"split {get('split')!r} is not one of {', '.join(w for w in PART_WORDS if w)}")
            if not get("label"):
                raise DataError("no label")
            if kind == "kinetics":
                start, end = _segment(get("time_start"), get("time_end"))
                youtube_id = get("youtube_id")
                trimmed = stems.get(f"{youtube_id}_{int(start):06d}_{int(end):06d}")
                path, segment = (trimmed, None) if trimmed else (stems.get(youtube_id), (start, end))
                path = path or f"{get('label')}/{youtube_id}_{int(start):06d}_{int(end):06d}.mp4"  # reported missing
                group = youtube_id
            else:
                path = _relative(get("path"))
                if path is None:
                    raise DataError(f"path {get('path')!r} is not relative to the data root")
                segment = _segment(get("start"), get("end")) if get("start") or get("end") else None
                group = get("group")
            rows.append((line, VideoFile(path, get("label"), root / path, segment, group, part)))
        except DataError as e:  # this line's problem: listed with the others
            errors.append(f"line {line}: {e}")
    return rows, errors


def _segment(start: str, end: str) -> tuple[float, float]:
    try:
        lo, hi = float(start), float(end)
    except ValueError:  # float() of text that is not a number
        raise DataError(f"start and end must be seconds, got {start!r} and {end!r}") from None
    if not 0 <= lo < hi < float("inf"):
        raise DataError(f"the segment [{start}, {end}) is empty or negative")
    return lo, hi


def _stems(root: Path) -> dict[str, str]:
    """{file name without extension: path under the root} of every video under the root (the first by path)."""
    stems: dict[str, str] = {}
    for f in find_video_files(root).files:
        stems.setdefault(f.stem, f.relative_to(root).as_posix())
    return stems


def _mmaction2_rows(file: Path, lines: list[str], kind: str, root: Path, classes: list[str]
                    ) -> tuple[list, list[str]]:
    """(line number, VideoFile) of each `path label` line, and the malformed lines (a label out of range)."""
    rows, errors = [], []
    for line, text in enumerate(lines, 1):
        if not text.strip():
            continue
        fields = text.rsplit(maxsplit=1)
        path = _relative(fields[0]) if len(fields) == 2 else None
        if path is None or not fields[1].isdigit():
            errors.append(f"line {line}: expected `path label` (label a class number), got {text[:80]!r}")
        elif int(fields[1]) >= len(classes):
            errors.append(f"line {line}: unknown class {fields[1]} (the class-names file has {len(classes)}: "
                          f"0 to {len(classes) - 1})")
        else:
            rows.append((line, VideoFile(path, classes[int(fields[1])], root / path)))
    return rows, errors
