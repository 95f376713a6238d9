"""Discovery: the video files under a folder, found safely, and a dataset's videos with their class folders."""
from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ConfigError, DataError, printable

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".ts")
# data.follow_links: inside = a link is followed only where its target lies under the data root; all = any link
FOLLOW_LINKS = ("inside", "all")


@dataclass(frozen=True)
class VideoFile:
    """One video to encode: `path` relative to the data root (posix), its class (folder, or annotation), and the
    absolute file. From an annotation file (pipeline.data.annotations) also: `segment` (start, end) seconds, the part of
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
    """What a walk found: video files (sorted), and (path, reason), sorted, for what looked like a video or a folder of
    videos but cannot be read: broken links, links out of the data root, FIFOs and devices, folders that cannot be
    listed."""

    files: list[Path] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)


def check_follow_links(follow_links: str) -> None:
    """ConfigError unless `follow_links` is one of FOLLOW_LINKS."""
    if follow_links not in FOLLOW_LINKS:
        raise ConfigError(f"data.follow_links must be one of {FOLLOW_LINKS}, got {follow_links!r}")


def outside(path: str | os.PathLike, base: str) -> str | None:
    """The real place of `path` when it lies outside the folder `base` (a real path), else None."""
    target = os.path.realpath(path)
    return None if target == base or target.startswith(base.rstrip(os.sep) + os.sep) else target


def link_refusal(target: str, data_root: bool = True) -> str:
    """The reason a link out of the data root (data_root; else out of the folder searched) is not followed
    (target: its real place)."""
    if not data_root:
        return f"a symbolic link out of the folder searched (to {printable(target)}): not followed"
    return (f"a symbolic link out of the data root (to {printable(target)}): not followed "
            "(data.follow_links: all follows it)")


def find_video_files(folder: str | os.PathLike, follow_links: str = "inside", data_root: bool = False) -> Found:
    """Video files under `folder` at any depth (extension case-insensitive, hidden files and folders skipped).

    The walk keeps its own stack (no recursion limit: any depth), visits every real folder once (a link back up the
    tree neither lists videos twice nor loops; real folders are walked before linked ones, so a video is named by
    its real path), and reports folders it cannot list. follow_links "inside" (the default): a symbolic link, to a
    file or a folder, whose target lies outside `folder` is reported, not followed, so nothing outside it is read;
    "all": every link is followed. data_root: `folder` is the data root (the refusal names data.follow_links).
    """
    check_follow_links(follow_links)
    top = Path(folder)
    base = os.path.realpath(top)
    found, seen = Found(), set()
    real, linked = [top], []  # folders still to list; linked ones wait until every real one is walked
    while real or linked:
        here = real.pop() if real else linked.pop()
        try:
            st = os.stat(here)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(here) as it:
                entries = list(it)
        except OSError as e:
            found.problems.append((here, f"the folder cannot be read ({e.strerror})"))
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            path = here / name
            video = os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir()  # follows a link (a broken one is neither a folder nor a file)
                is_file = not is_dir and entry.is_file()
            except OSError as e:
                found.problems.append((path, f"cannot be read ({e.strerror})"))
                continue
            if not (is_dir or video):
                continue
            if is_link and not (is_dir or is_file):
                try:
                    mode = os.stat(path).st_mode
                except FileNotFoundError:
                    found.problems.append((path, "a broken symbolic link"))
                    continue
                except OSError as e:
                    found.problems.append((path, f"cannot be read ({e.strerror})"))
                    continue
                if not stat.S_ISREG(mode):
                    found.problems.append((path, "not a regular file (a FIFO, socket or device)"))
                    continue
            if is_link and follow_links == "inside":
                target = outside(path, base)
                if target is not None:
                    found.problems.append((path, link_refusal(target, data_root)))
                    continue
            if is_dir:
                (linked if is_link else real).append(path)
            elif is_file:
                found.files.append(path)
            else:
                found.problems.append((path, "not a regular file (a FIFO, socket or device)"))
    found.files.sort()
    found.problems.sort()
    return found


def discover_videos(root: str | os.PathLike, classes: list[str] | None = None, follow_links: str = "inside"
                    ) -> tuple[list[VideoFile], list[str], list[tuple[str, str]]]:
    """List the videos under `root`/<class>/ (see find_video_files); files directly under the root have no class.

    Returns the videos sorted by path, the class names, and (path, reason) for what cannot be used, paths relative
    to the root. The class names are the first-level folders holding at least one video, sorted; or, given
    `classes` (data.classes, in label order), those names in that order, each folder matched to its name without
    regard to case (UCF101's classInd.txt says HandstandPushups, its folder HandStandPushups), the videos labelled
    with the file's spelling. A name that is not valid UTF-8 cannot be stored in the cache: it is reported with
    its bytes escaped (`\\xff`) instead. DataError when root is not a folder, or a class folder is not in
    `classes`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {printable(root)!r} is not a directory")
    found = find_video_files(root, follow_links, data_root=True)
    videos, problems = [], [(_printable(p.relative_to(root)), f"{printable(_printable(p.relative_to(root)))}: "
                                                              f"{reason}") for p, reason in found.problems]
    for file in found.files:
        rel = file.relative_to(root)
        if _printable(rel) != rel.as_posix():
            problems.append((_printable(rel), f"{printable(_printable(rel))}: the file name is not valid UTF-8: "
                                              "rename it"))
        elif len(rel.parts) > 1:
            videos.append(VideoFile(path=rel.as_posix(), label=rel.parts[0], file=file))
    videos.sort(key=lambda v: v.path)
    if classes is None:
        return videos, sorted({v.label for v in videos}), sorted(problems)
    spelled = {c.lower(): c for c in classes}
    unknown = sorted({v.label for v in videos if v.label.lower() not in spelled})
    if unknown:
        raise DataError(f"data.classes names {len(classes)} classes, but {len(unknown)} class folders under "
                        f"{printable(root)!r} are not among them: {', '.join(printable(u) for u in unknown[:10])}"
                        f"{' ...' if len(unknown) > 10 else ''} (add them to the file, or move those folders out)")
    videos = [VideoFile(v.path, spelled[v.label.lower()], v.file) for v in videos]
    return videos, list(classes), sorted(problems)


def _printable(rel: Path) -> str:
    """The relative path as valid UTF-8 text: bytes that are not UTF-8 written as \\xNN."""
    return os.fsencode(rel.as_posix()).decode("utf-8", "backslashreplace")


def clip_id(name: str, segment) -> str:
    """`name` for a whole file (segment None or NaN), else `name#t=start,end` (seconds, shortest exact form)."""
    if segment is None or math.isnan(segment[0]):
        return name
    return f"{name}#t={_seconds(segment[0])},{_seconds(segment[1])}"


def _seconds(value) -> str:
    """A float's shortest exact text, without a trailing .0 (12.0 -> 12, 12.5 -> 12.5)."""
    text = repr(float(value))
    return text.removesuffix(".0")
