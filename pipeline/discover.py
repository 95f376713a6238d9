"""Discovery: the video files under a folder, found safely, and a dataset's videos with their class folders."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".ts")


@dataclass(frozen=True)
class VideoFile:
    """One video to encode: `path` relative to the data root (posix), its class (folder, or annotation), and the
    absolute file. From an annotation file (pipeline.annotations) also: `segment` (start, end) seconds, the part of
    the file that is the labelled action (None: all of it), its `group` and the `part` the annotations give it
    ("" when they do not)."""

    path: str
    label: str
    file: Path
    segment: tuple[float, float] | None = None
    group: str = ""
    part: str = ""


@dataclass
class Found:
    """What a walk found: video files (sorted), and (path, reason) for what looked like a video or a folder of
    videos but cannot be read: broken links, FIFOs and devices, folders that cannot be listed."""

    files: list[Path] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)


def find_video_files(folder: str | os.PathLike) -> Found:
    """Video files under `folder` at any depth (extension case-insensitive, hidden files and folders skipped).

    Symbolic links are followed, but every real folder is visited once, so a link back up the tree neither lists
    videos twice nor loops.
    """
    found, seen = Found(), set()

    def unreadable(error: OSError) -> None:
        found.problems.append((Path(error.filename), f"the folder cannot be read ({error.strerror})"))

    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=unreadable):
        here = os.stat(dirpath)
        if (here.st_dev, here.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((here.st_dev, here.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            file = Path(dirpath) / name
            if name.startswith(".") or file.suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            try:
                mode = file.stat().st_mode
            except FileNotFoundError:
                found.problems.append((file, "a broken symbolic link"))
                continue
            except OSError as e:
                found.problems.append((file, f"cannot be read ({e.strerror})"))
                continue
            if stat.S_ISREG(mode):
                found.files.append(file)
            elif not stat.S_ISDIR(mode):
                found.problems.append((file, "not a regular file (a FIFO, socket or device)"))
    found.files.sort()
    return found


def discover_videos(root: str | os.PathLike) -> tuple[list[VideoFile], list[str], list[tuple[str, str]]]:
    """List the videos under `root`/<class>/ (see find_video_files); files directly under the root have no class.

    Returns the videos sorted by path, the sorted class names (the first-level folders holding at least one video),
    and (path, reason) for what cannot be used, paths relative to the root. A name that is not valid UTF-8 cannot
    be stored in the cache: it is reported with its bytes escaped (`\\xff`) instead. DataError when root is not a
    folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {str(root)!r} is not a directory")
    found = find_video_files(root)
    videos, problems = [], [(_printable(p.relative_to(root)), f"{_printable(p.relative_to(root))}: {reason}")
                            for p, reason in found.problems]
    for file in found.files:
        rel = file.relative_to(root)
        if _printable(rel) != rel.as_posix():
            problems.append((_printable(rel), f"{_printable(rel)}: the file name is not valid UTF-8: rename it"))
        elif len(rel.parts) > 1:
            videos.append(VideoFile(path=rel.as_posix(), label=rel.parts[0], file=file))
    videos.sort(key=lambda v: v.path)
    return videos, sorted({v.label for v in videos}), sorted(problems)


def _printable(rel: Path) -> str:
    """The relative path as valid UTF-8 text: bytes that are not UTF-8 written as \\xNN."""
    return os.fsencode(rel.as_posix()).decode("utf-8", "backslashreplace")
