"""Find videos in a folder-per-class tree, sample frame indices evenly, and decode only those frames (OpenCV)."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".ts")
SAMPLING = "uniform-centers"  # index i of n frames: floor((i + 0.5) * n / num_frames); named in the cache
# Gaps between samples longer than this many frames are crossed by seeking instead of decoding every frame:
# seeking decodes from the keyframe before the target, and x264's default keyframe interval is 250 frames.
SEEK_GAP = 300


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


def read_frames(file: str | os.PathLike, num_frames: int, seek_gap: int | None = SEEK_GAP,
                sampler: Callable[[int], np.ndarray] | None = None) -> Clip:
    """Decode the num_frames sampled frames of a video, never holding more than those in memory.

    sampler(frame_count) -> sorted int64 indices replaces the even sampling over the whole video (the timeline
    samples each window this way).

    The container's frame count places the samples. Frames are grabbed in order, and a gap longer than seek_gap
    frames is crossed by seeking (which decodes from the nearest keyframe), so the work is bounded however long
    the video. The count is then checked at the end of the file. A seek that lands elsewhere than asked, or a
    count that proves wrong (some containers report estimates), falls back to reading in order, then to counting
    the frames and placing the samples again. Raises ValueError naming the file and the reason when it cannot be
    decoded.
    """
    _refuse_still_image(file)
    sample = sampler or (lambda count: sample_indices(count, num_frames))
    cap = _open(file)
    try:
        reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if reported > 0:
            clip = _decode_at(cap, file, sample(reported), reported, seek_gap)
            if clip is not None:
                return clip
    finally:
        cap.release()
    if reported > 0 and seek_gap is not None:
        clip = _decode_at(_open(file), file, sample(reported), reported, None)
        if clip is not None:
            return clip
    total = _count_frames(file)
    if total == 0:
        raise ValueError(f"{file}: no decodable video frames")
    clip = _decode_at(_open(file), file, sample(total), total, None)
    if clip is None:
        raise ValueError(f"{file}: decoding is not repeatable (frame count changed between passes)")
    return clip


_IMAGE_MAGIC = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP"}


def _refuse_still_image(file) -> None:
    """ValueError for an image file with a video's name (FFmpeg would happily read it as a one-frame video)."""
    with open(file, "rb") as f:
        head = f.read(12)
    kind = next((k for magic, k in _IMAGE_MAGIC.items() if head.startswith(magic)), None)
    if kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        kind = "WebP"
    if kind:
        raise ValueError(f"{file}: a still {kind} image, not a video")


def _open(file) -> cv2.VideoCapture:
    """An opened capture with rotation metadata applied, or ValueError."""
    cap = cv2.VideoCapture(str(file), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise ValueError(f"{file}: not a readable video (OpenCV could not open it)")
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    return cap


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


def _decode_at(cap: cv2.VideoCapture, file, indices: np.ndarray, expect_total: int,
               seek_gap: int | None) -> Clip | None:
    """Keep the frames at `indices` (sorted) from an opened capture, which it releases.

    Returns None when the file holds other than expect_total frames, or when a seek (only across gaps longer
    than seek_gap; None: never) does not land on the frame asked for. The frames are written straight into the
    output array as they are decoded: memory is the sampled frames plus one.
    """
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if np.isfinite(fps) and fps > 0 else 0.0
        rows: dict[int, list[int]] = {}
        for row, idx in enumerate(indices.tolist()):
            rows.setdefault(idx, []).append(row)
        frames, stamps = None, np.zeros(len(indices), np.float64)
        pos = 0  # the index of the frame the next grab() returns
        for idx in sorted(rows):
            if not _advance(cap, pos, idx, seek_gap):
                return None
            pos = idx + 1
            ok, bgr = cap.retrieve()
            if not ok or bgr is None:
                raise ValueError(f"{file}: frame {idx} could not be decoded")
            if frames is None:
                frames = np.empty((len(indices), *bgr.shape[:2], 3), np.uint8)
            elif bgr.shape[:2] != frames.shape[1:3]:
                raise ValueError(f"{file}: the frame size changes mid-stream ({frames.shape[2]}x{frames.shape[1]} "
                                 f"to {bgr.shape[1]}x{bgr.shape[0]} at frame {idx})")
            _to_rgb(bgr, frames[rows[idx][0]])
            for row in rows[idx][1:]:
                frames[row] = frames[rows[idx][0]]
            stamps[rows[idx]] = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        # the count must be exact: the last announced frame decodes and nothing follows it
        if not _advance(cap, pos, expect_total - 1, seek_gap):
            return None
        last = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0  # the last frame's time: the duration, also at a variable rate
        if cap.grab():
            return None
        if fps and not (np.all(np.isfinite(stamps)) and np.all(np.diff(stamps) >= 0) and stamps.max() > 0):
            stamps, last = indices / fps, (expect_total - 1) / fps  # the container gave no usable timestamps
        duration = last + 1 / fps if fps else last
        return Clip(frames, indices.astype(np.int64), stamps, float(fps), expect_total, float(duration),
                    repeated=expect_total < len(indices))
    finally:
        cap.release()


def _advance(cap: cv2.VideoCapture, pos: int, target: int, seek_gap: int | None) -> bool:
    """Make `target` the current frame, given that the next grab returns frame `pos`; False if the file disagrees.

    Grabs through short gaps; seeks across long ones and checks that the decoder landed on `target`.
    """
    if target < pos:
        return target == pos - 1  # already there (the check at the end, right after the last sample)
    if seek_gap is not None and target - pos > seek_gap:
        cap.set(cv2.CAP_PROP_POS_FRAMES, target)
        return cap.grab() and round(cap.get(cv2.CAP_PROP_POS_FRAMES)) == target + 1
    for _ in range(target - pos + 1):
        if not cap.grab():
            return False
    return True


def _to_rgb(frame: np.ndarray, out: np.ndarray) -> None:
    """Write OpenCV's BGR (or grayscale) frame into `out`, uint8 (H, W, 3), as RGB."""
    cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB if frame.ndim == 2 else cv2.COLOR_BGR2RGB, dst=out)
