"""Find videos in a folder-per-class tree, sample frame indices evenly, and decode only those frames (OpenCV)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".ts")
SAMPLING = "uniform-centers"  # index i of n frames: floor((i + 0.5) * n / num_frames); named in the cache


@dataclass(frozen=True)
class VideoFile:
    """One discovered video: `path` relative to the data root (posix), its class folder, and the absolute file."""

    path: str
    label: str
    file: Path


@dataclass
class Clip:
    """The sampled frames of one video and where they came from.

    frames: uint8 (num_frames, H, W, 3), RGB, upright (rotation metadata applied).
    indices: int64 (num_frames,) frame numbers; timestamps: float64 (num_frames,) seconds.
    repeated: True when the video has fewer frames than num_frames, so some frames appear twice.
    """

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    fps: float
    frame_count: int
    duration: float
    repeated: bool


def find_video_files(folder: str | os.PathLike) -> list[Path]:
    """Video files under `folder` at any depth, sorted: extension case-insensitive, hidden files and folders skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            file = Path(dirpath) / name
            if not name.startswith(".") and file.suffix.lower() in VIDEO_EXTENSIONS and file.is_file():
                found.append(file)
    return sorted(found)


def discover_videos(root: str | os.PathLike) -> tuple[list[VideoFile], list[str]]:
    """List the videos under `root`/<class>/ (see find_video_files); files directly under the root have no class.

    Returns the videos sorted by path and the sorted class names: the first-level folders holding at least one video.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"data root {str(root)!r} is not a directory")
    videos = []
    for file in find_video_files(root):
        rel = file.relative_to(root)
        if len(rel.parts) > 1:
            videos.append(VideoFile(path=rel.as_posix(), label=rel.parts[0], file=file))
    videos.sort(key=lambda v: v.path)
    return videos, sorted({v.label for v in videos})


def content_hash(file: str | os.PathLike) -> str:
    """Hex SHA-256 of the file's bytes: the key under which a video's embeddings are reused."""
    with open(file, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sample_indices(frame_count: int, num_frames: int) -> np.ndarray:
    """Evenly spaced frame indices, int64 (num_frames,): the centre of each of num_frames equal segments.

    A video shorter than num_frames gets repeated indices, in order.
    """
    if frame_count < 1 or num_frames < 1:
        raise ValueError(f"cannot sample {num_frames} frames from {frame_count}")
    return ((np.arange(num_frames) + 0.5) * frame_count / num_frames).astype(np.int64)


def read_frames(file: str | os.PathLike, num_frames: int) -> Clip:
    """Decode the num_frames sampled frames of a video, never holding more than those in memory.

    The container's frame count is used to place the samples, then checked while decoding; when it is missing or
    wrong (some containers report estimates), the frames are counted and the samples placed again.
    Raises ValueError naming the file and the reason when it cannot be decoded.
    """
    reported = _frame_count(file)
    if reported > 0:
        clip = _decode_at(file, sample_indices(reported, num_frames), expect_total=reported)
        if clip is not None:
            return clip
    total = _count_frames(file)
    if total == 0:
        raise ValueError(f"{file}: no decodable video frames")
    clip = _decode_at(file, sample_indices(total, num_frames), expect_total=total)
    if clip is None:
        raise ValueError(f"{file}: decoding is not repeatable (frame count changed between passes)")
    return clip


def _open(file) -> cv2.VideoCapture:
    """An opened capture with rotation metadata applied, or ValueError."""
    cap = cv2.VideoCapture(str(file), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise ValueError(f"{file}: not a readable video (OpenCV could not open it)")
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    return cap


def _frame_count(file) -> int:
    cap = _open(file)
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def _count_frames(file) -> int:
    """Frames that actually decode, counted by grabbing through the whole file (only when the header is wrong)."""
    cap = _open(file)
    try:
        n = 0
        while cap.grab():
            n += 1
        return n
    finally:
        cap.release()


def _decode_at(file, indices: np.ndarray, expect_total: int) -> Clip | None:
    """Grab frames in order and keep those at `indices`; None when the file holds other than expect_total frames.

    Grabbing to the last frame plus one checks the count (about half a sampling gap of extra decoding).
    """
    cap = _open(file)
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if np.isfinite(fps) and fps > 0 else 0.0
        wanted = set(indices.tolist())
        kept: dict[int, tuple[np.ndarray, float]] = {}
        for i in range(expect_total + 1):
            if not cap.grab():
                break
            if i == expect_total:
                return None  # more frames than announced
            if i in wanted:
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    raise ValueError(f"{file}: frame {i} could not be decoded")
                kept[i] = (bgr, cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
        if len(kept) < len(wanted):
            return None  # fewer frames than announced
        frames = np.stack([_to_rgb(kept[i][0]) for i in indices.tolist()])
        stamps = np.array([kept[i][1] for i in indices.tolist()], dtype=np.float64)
        if fps and not (np.all(np.isfinite(stamps)) and np.all(np.diff(stamps) >= 0) and stamps.max() > 0):
            stamps = indices / fps  # the container gave no usable timestamps
        duration = expect_total / fps if fps else float(stamps[-1])
        return Clip(frames, indices.astype(np.int64), stamps, float(fps), expect_total, float(duration),
                    repeated=expect_total < len(indices))
    finally:
        cap.release()


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB from OpenCV's BGR or grayscale frame."""
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
