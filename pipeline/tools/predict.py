"""Predict the action in a video with a trained head and the full encoder, exactly as stage one encodes it.

The app's path and `clip-har-predict`'s (its command line is in pipeline.tools.cli). The caller owns the decode workers
(a DecodePool, passed in): the command opens one and closes it, the app keeps one per process.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from pipeline.embed.encoder import AUTO_BATCH_SIZE, Encoder, auto_batch_size, embed_frames, load_encoder
from pipeline.embed.hub import may_download
from pipeline.errors import ConfigError, EmptySegment, HeadError, UserError, VideoError, printable
from pipeline.heads.estimators import Head, HeadMeta
from pipeline.heads.kinds import load_head
from pipeline.decode.sampling import Sampling
from pipeline.decode.video import Clip, DecodeLimits
from pipeline.decode.workers import DecodePool, ReadConfig


NOT_SURE = "not sure"


@dataclass
class Predictor:
    """A head with the encoder it was trained on; batch_size as in stage one (see stage_one_batch_size), so the
    embeddings match the cache.

    pool: the decode workers every video goes through (the caller's: opened and closed by it), with limits.
    """

    head: Head
    encoder: Encoder
    batch_size: int
    pool: DecodePool
    limits: DecodeLimits = field(default_factory=DecodeLimits)

    def read(self, file: str | os.PathLike, segment: tuple[float, float] | None = None,
             num_frames: int | None = None):
        """The sampled frames of a video (uint8 crops (F, S, S, 3)), decoded in a worker, sampled as the head's cache
        was (its features' num_frames and sampling: by frame rate, F is the video's own); num_frames: that many
        evenly instead; segment: sample only the frames whose timestamps lie in [start, end) seconds. VideoError
        naming `file` as the caller gave it when unusable."""
        sampling = Sampling.from_attrs(self.head.meta_.features)  # as the head's cache was sampled
        cfg = ReadConfig(num_frames or sampling.num_frames, self.encoder.frame_spec(), self.limits, segment=segment,
                         fps=0.0 if num_frames else sampling.fps)
        try:  # the worker was started elsewhere: a relative path would be resolved there
            return self.pool.read(os.path.abspath(file), cfg).clip
        except VideoError as e:  # of its own kind (EmptySegment: a window without frames)
            raise type(e)(file, e.reason) from None


def answer_text(label: str | None) -> str:
    """An answer as people and parsers read it: NOT_SURE for the abstention (label None); a class, escaped (see
    printable) and quoted when its name reads "not sure" itself, so that the two never look alike."""
    if label is None:
        return NOT_SURE
    shown = printable(label)
    return f'"{shown}"' if " ".join(shown.replace("_", " ").split()).casefold() == NOT_SURE else shown


class _Answered:
    """The answer of class probabilities (C,): the top class when sure (its probability at least not_sure_below),
    else the abstention. Typed: `sure` and `label` (None for the abstention); `answer` is its display text."""

    class_names: list[str]
    probabilities: np.ndarray
    not_sure_below: float

    @property
    def top_class(self) -> str:
        return self.class_names[int(self.probabilities.argmax())]

    @property
    def top_probability(self) -> float:
        return float(self.probabilities.max())

    @property
    def sure(self) -> bool:
        """Whether the (calibrated) top probability reaches the head's threshold."""
        return self.top_probability >= self.not_sure_below

    @property
    def label(self) -> str | None:
        """The top class when sure, None for the abstention (whatever the classes are called)."""
        return self.top_class if self.sure else None

    @property
    def answer(self) -> str:
        """answer_text(label): "not sure" for the abstention only; a class called so is quoted."""
        return answer_text(self.label)


@dataclass
class Prediction(_Answered):
    """What the head says about one video.

    probabilities float32 (C,); frame_probabilities float32 (F, C), each sampled frame alone;
    embeddings float32 (F, D); clip: the sampled frames (uint8 RGB), indices and timestamps.
    """

    class_names: list[str]
    probabilities: np.ndarray
    frame_probabilities: np.ndarray
    embeddings: np.ndarray
    clip: Clip
    not_sure_below: float = 0.0


def stage_one_batch_size(features: dict, encoder: Encoder) -> int:
    """Frames per forward pass for a head's predictions: extract.batch_size as stage one used it for the head's
    features (HeadMeta.features "batch_size"), since a matrix multiply of another shape may round differently.

    Only on the device type the cache was made on: elsewhere the embeddings differ anyway, and a GPU's batch of
    256 would make a CPU pad 16 frames to 256; there, and for a head that does not record it, batch_size auto for
    the device and the head's frames per video (auto_batch_size).
    """
    if features.get("batch_size") and features.get("device_type") == encoder.device.type:
        return int(features["batch_size"])
    return auto_batch_size(encoder.device.type, int(features.get("num_frames") or AUTO_BATCH_SIZE["cpu"]))


def make_predictor(head: Head, encoder: Encoder, pool: DecodePool, batch_size: int | None = None,
                   limits: DecodeLimits | None = None) -> Predictor:
    """Pair a head with an encoder and the caller's decode pool (batch_size: stage_one_batch_size unless given;
    limits: the defaults unless given); HeadError when the head was trained with another encoder or sampling."""
    features = head.meta_.features
    try:
        Sampling.from_attrs(features)
    except UserError as e:
        raise HeadError(f"the head was trained on {e}") from None
    head.check_compatible(encoder.describe(), what="encoder")
    batch_size = batch_size or stage_one_batch_size(features, encoder)
    return Predictor(head, encoder, batch_size, pool, limits or DecodeLimits())


def load_predictor(head_path: str | os.PathLike, pool: DecodePool, device: str = "auto") -> Predictor:
    """Load a head and the encoder its metadata names (hub id or directory), with the same preprocessing, backend
    and quantisation (the onnxruntime backend on the CPU whatever `device` says), decoding through `pool`."""
    head = load_head(head_path)
    return make_predictor(head, encoder_for(head.meta_, device), pool)


def encoder_for(meta: HeadMeta | dict, device: str = "auto") -> Encoder:
    """The encoder a head's metadata (or a cache's attributes) names: model, preprocessing, backend, quantisation."""
    attrs = meta.features if isinstance(meta, HeadMeta) else meta
    backend, model = attrs["backend"], attrs["encoder_model"]
    return load_encoder(model, "cpu" if backend == "onnxruntime" else device, attrs["preprocess"], attrs["quantize"],
                        backend=backend, download=may_download(model))  # an artifact's model: from disk only


def predict_video(file: str | os.PathLike, predictor: Predictor,
                  on_step: Callable[[str], None] | None = None) -> Prediction:
    """Decode, sample, preprocess and encode a video exactly as stage one does, then apply the head.

    on_step("decoding" | "encoding" | "classifying") is called as each step starts (for progress displays).
    Raises VideoError naming the file when it cannot be decoded.
    """
    step = on_step or (lambda name: None)
    head, encoder = predictor.head, predictor.encoder
    step("decoding")
    clip = predictor.read(file)
    step("encoding")
    embeddings = embed_frames(clip.frames, encoder, predictor.batch_size)  # (F, D)
    step("classifying")
    probabilities = head.predict_proba(embeddings[None])[0]
    frame_probabilities = head.predict_proba(embeddings[:, None, :])  # each frame as a one-frame video
    return Prediction(head.classes_, probabilities, frame_probabilities, embeddings, clip, head.not_sure_below_)


@dataclass
class Segment(_Answered):
    """The head's view of one time window: [start, end) in seconds, probabilities float32 (C,)."""

    start: float
    end: float
    class_names: list[str]
    probabilities: np.ndarray
    not_sure_below: float = 0.0


def timeline_windows(duration: float, window: float, stride: float) -> list[tuple[float, float]]:
    """Windows [start, end) of `window` seconds every `stride` seconds covering [0, duration] exactly: the first
    starts at 0, the last ends at `duration` (one window when the video is shorter than `window`)."""
    if window <= 0 or not 0 < stride <= window:
        raise ConfigError(f"timeline windows need 0 < stride <= window, got window={window}, stride={stride}")
    if duration <= window:
        return [(0.0, float(duration))]
    starts = np.arange(0.0, duration - window, stride).tolist() + [duration - window]
    return [(float(s), float(s) + window) for s in starts]


def timeline_plan(duration: float, window: float, stride: float, max_windows: int) -> tuple[float, float]:
    """(window, stride) for timeline_windows: those asked for when they make at most max_windows windows, else the
    stride widened until they do (and the window with it when the stride would pass it: no gaps)."""
    if len(timeline_windows(duration, window, stride)) <= max_windows:
        return window, stride
    wider = (duration - window) / max(max_windows - 1, 1) * (1 + 1e-9)  # 1e-9: float steps stay under the cap
    if wider <= window:
        return window, wider
    even = duration / max_windows * (1 + 1e-9)
    return even, even


@dataclass
class Timeline:
    """predict_segments' answer: the windows' Segments (in time order), the window and stride used (widened from
    those asked for when they would have made more than max_windows: then `note` says so), and the windows left
    out because they could not be read (`missing`: no frame in them, or damage)."""

    segments: list[Segment]
    window: float
    stride: float
    note: str = ""
    missing: int = 0


def predict_segments(file: str | os.PathLike, predictor: Predictor, window: float = 4.0, stride: float = 2.0,
                     max_windows: int = 200, on_window: Callable[[int, int], None] | None = None) -> Timeline:
    """The head's answer over sliding windows by time (the frames' timestamps, not frame count / fps, so variable
    frame rates are placed right): each window sampled (num_frames evenly over the frames in it), decoded,
    encoded and classified like a whole video. Decodes one window at a time, so memory stays that of one video.

    At most max_windows windows: a longer video gets a wider stride (see timeline_plan and Timeline.note).
    on_window(done, total) reports progress. VideoError when the video cannot be read at all, or no window can.
    """
    head, encoder = predictor.head, predictor.encoder
    duration = predictor.read(file, num_frames=1).duration  # seconds, from the timestamps
    used_window, used_stride = timeline_plan(duration, window, stride, max_windows)
    windows = timeline_windows(duration, used_window, used_stride)
    note = "" if (used_window, used_stride) == (window, stride) else (
        f"windows of {used_window:.3g} s every {used_stride:.3g} s instead of {window:g} s every {stride:g} s: "
        f"the video is {duration:.1f} s long and the timeline has at most {max_windows} windows")
    segments, missing = [], 0
    for done, (start, end) in enumerate(windows):
        last = done == len(windows) - 1  # the last window takes the last frame too (its time is `duration`'s end)
        try:
            frames = predictor.read(file, segment=(start, math.inf if last else end)).frames
        except EmptySegment:  # a window with no frame in it (a sparse or damaged video): the timeline has a gap
            missing += 1
        else:
            emb = embed_frames(frames, encoder, predictor.batch_size)  # (F, D)
            segments.append(Segment(start, end, head.classes_, head.predict_proba(emb[None])[0],
                                    head.not_sure_below_))
        if on_window:
            on_window(done + 1, len(windows))
    if not segments:
        raise VideoError(file, f"none of the {len(windows)} timeline windows could be read")
    return Timeline(segments, used_window, used_stride, note, missing)


UPLOAD = "the uploaded file"  # how errors name an upload (its temporary file's name means nothing to the user)


@contextmanager
def temporary_upload(data: bytes) -> Iterator[str]:
    """An uploaded file's bytes in a temporary file, removed on leaving, also after an error.

    The temporary name owes nothing to the upload's name; a VideoError raised inside names UPLOAD, not the path.
    """
    if not data:
        raise VideoError(UPLOAD, "empty file")
    fd, tmp = tempfile.mkstemp(prefix="clip-har-", suffix=".upload")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield tmp
    except VideoError as e:
        raise VideoError(UPLOAD, e.reason) from None
    finally:
        os.unlink(tmp)


def predict_bytes(data: bytes, predictor: Predictor, on_step: Callable[[str], None] | None = None) -> Prediction:
    """predict_video on an uploaded file's bytes (see temporary_upload)."""
    with temporary_upload(data) as tmp:
        return predict_video(tmp, predictor, on_step)


if __name__ == "__main__":  # python -m pipeline.tools.predict: the command line lives in pipeline.tools.cli
    from pipeline.tools.cli import predict
    sys.exit(predict())
