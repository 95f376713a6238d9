"""Which frames of a clip are read: a fixed number evenly spaced, or a number per second of video (Sampling)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import UserError, printable

SAMPLING = "uniform-centers"  # index i of n frames: floor((i + 0.5) * n / num_frames); named in the cache
FPS_SAMPLING = "fps-centers"  # frames at rate r: the centres of round(duration * r) equal spans (fps_indices)


@dataclass(frozen=True)
class Sampling:
    """How a clip's frames are chosen. fps 0: num_frames evenly spaced (SAMPLING, sample_indices). fps > 0: `fps`
    frames per second of the clip, at least 1 and at most num_frames (extract.max_frames: a longer clip gets
    num_frames spread evenly over it; fps_indices), so clips get different numbers of frames and a cache pads them
    to num_frames. The cache records it (attrs(), among its key) and a head its features; predict and the app
    rebuild it from those (from_attrs) and sample the same way."""

    num_frames: int = 16
    fps: float = 0.0

    @property
    def name(self) -> str:
        """The cache's "sampling" attribute: SAMPLING, or FPS_SAMPLING and the rate (`fps-centers:1`)."""
        return f"{FPS_SAMPLING}:{self.fps:g}" if self.fps else SAMPLING

    def attrs(self) -> dict:
        """What a cache's attrs (and a head's features) say of it: num_frames (F, the most a clip gets) and sampling
        (name)."""
        return {"num_frames": self.num_frames, "sampling": self.name}

    @property
    def text(self) -> str:
        """How people read it: "16 frames per video", or "1 frame a second, at most 64"."""
        return self.text_per("video")

    def text_per(self, unit: str) -> str:
        """As text, for each `unit` sampled ("16 frames per answer" where the live page samples each answer)."""
        if self.fps:
            return f"{self.fps:g} frame{'' if self.fps == 1 else 's'} a second, at most {self.num_frames}"
        return f"{self.num_frames} frames per {unit}"

    @classmethod
    def from_attrs(cls, attrs: dict) -> Sampling:
        """The sampling a cache's attrs or a head's features record; UserError for a sampling this code does not
        make, or a num_frames that is not a number."""
        name = str(attrs.get("sampling"))
        try:
            frames = int(attrs["num_frames"])
        except (KeyError, TypeError, ValueError):  # none, or not a number: a crafted or damaged file's attributes
            raise UserError(f"num_frames {printable(attrs.get('num_frames'))!r} is not a number of frames") from None
        if name == SAMPLING:
            return cls(frames)
        kind, _, rate = name.partition(":")
        try:
            fps = float(rate) if kind == FPS_SAMPLING else 0.0
        except ValueError:
            fps = 0.0
        if not (0 < fps < float("inf")):
            raise UserError(f"{name!r} sampling: this code samples {SAMPLING!r} or {FPS_SAMPLING}:<frames per "
                            "second>")
        return cls(frames, fps)


def fps_indices(seconds: np.ndarray, fps: float, max_frames: int) -> np.ndarray:
    """Frames at `fps` per second of a clip whose frames are shown at `seconds` (float64 (N,), sorted, from the
    clip's start): n = round(duration * fps) clamped to 1..max_frames, and for each of n equal spans of the duration
    the frame shown at its centre (the last starting at or before it), int64 (n,) sorted. duration: the last
    frame's time plus the mean frame interval (one frame: that frame). A clip of 2 s at 1 fps gets 2 frames,
    at 0.5 s and 1.5 s."""
    if len(seconds) == 1:
        return np.zeros(1, np.int64)
    last = float(seconds[-1])
    duration = last + last / (len(seconds) - 1)
    n = int(min(max(round(duration * fps), 1), max_frames))
    centres = (np.arange(n) + 0.5) * duration / n
    return np.clip(np.searchsorted(seconds, centres, side="right") - 1, 0, len(seconds) - 1).astype(np.int64)


def sample_indices(frame_count: int, num_frames: int) -> np.ndarray:
    """Evenly spaced frame indices, int64 (num_frames,): the centre of each of num_frames equal segments.

    A video shorter than num_frames gets repeated indices, in order.
    """
    if frame_count < 1 or num_frames < 1:
        raise ValueError(f"cannot sample {num_frames} frames from {frame_count}")
    return ((np.arange(num_frames) + 0.5) * frame_count / num_frames).astype(np.int64)
