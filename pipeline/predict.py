"""Predict the action in a video with a trained head and the full encoder, exactly as stage one encodes it.

The app's path and `clip-har-predict`'s (its command line is in pipeline.cli). The caller owns the decode workers
(a DecodePool, passed in): the command opens one and closes it, the app keeps one per process.
"""
from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from pipeline.encoder import AUTO_BATCH_SIZE, Encoder, embed_frames, load_encoder
from pipeline.errors import ConfigError, HeadError, VideoError
from pipeline.heads import Head, HeadMeta, load_head
from pipeline.video import SAMPLING, Clip, DecodeLimits
from pipeline.workers import DecodePool, ReadConfig


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

    def read(self, file: str | os.PathLike, window: tuple[int, int] | None = None, num_frames: int | None = None):
        """The sampled frames of a video (uint8 crops (F, S, S, 3)), decoded in a worker; VideoError naming `file`
        as the caller gave it when unusable."""
        cfg = ReadConfig(num_frames or self.head.meta_.features["num_frames"], self.encoder.frame_spec(),
                         self.limits, window)
        try:  # the worker was started elsewhere: a relative path would be resolved there
            return self.pool.read(os.path.abspath(file), cfg).clip
        except VideoError as e:
            raise VideoError(file, e.reason) from None


class _Answered:
    """The answer of class probabilities (C,): top class and probability, or "not sure" under not_sure_below."""

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
    def answer(self) -> str:
        """The top class, or "not sure" when its (calibrated) probability is under the head's threshold."""
        return self.top_class if self.top_probability >= self.not_sure_below else NOT_SURE


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
    256 would make a CPU pad 16 frames to 256; there, and for a head that does not record it, the device's
    AUTO_BATCH_SIZE.
    """
    if features.get("batch_size") and features.get("device_type") == encoder.device.type:
        return int(features["batch_size"])
    return AUTO_BATCH_SIZE[encoder.device.type]


def make_predictor(head: Head, encoder: Encoder, pool: DecodePool, batch_size: int | None = None) -> Predictor:
    """Pair a head with an encoder and the caller's decode pool (batch_size: stage_one_batch_size unless given);
    HeadError when the head was trained with another encoder or sampling."""
    features = head.meta_.features
    if features["sampling"] != SAMPLING:
        raise HeadError(f"the head was trained on {features['sampling']!r} sampling, this code samples {SAMPLING!r}")
    head.check_compatible(encoder.describe(), what="encoder")
    return Predictor(head, encoder, batch_size or stage_one_batch_size(features, encoder), pool)


def load_predictor(head_path: str | os.PathLike, pool: DecodePool, device: str = "auto") -> Predictor:
    """Load a head and the encoder its metadata names (hub id or directory), with the same preprocessing, backend
    and quantisation (the onnxruntime backend on the CPU whatever `device` says), decoding through `pool`."""
    head = load_head(head_path)
    return make_predictor(head, encoder_for(head.meta_, device), pool)


def encoder_for(meta: HeadMeta | dict, device: str = "auto") -> Encoder:
    """The encoder a head's metadata (or a cache's attributes) names: model, preprocessing, backend, quantisation."""
    attrs = meta.features if isinstance(meta, HeadMeta) else meta
    backend = attrs["backend"]
    return load_encoder(attrs["encoder_model"], "cpu" if backend == "onnxruntime" else device, attrs["preprocess"],
                        attrs["quantize"], backend=backend)


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


def predict_segments(file: str | os.PathLike, predictor: Predictor, window: float = 4.0, stride: float = 2.0,
                     max_windows: int = 200, on_window: Callable[[int, int], None] | None = None) -> list[Segment]:
    """The head's answer over sliding windows: each window sampled (num_frames evenly over its frames), decoded,
    encoded and classified like a whole video. Decodes one window at a time, so memory stays that of one video.

    on_window(done, total) reports progress. VideoError when the video has no frame rate or needs more than
    max_windows windows (choose a larger stride).
    """
    head, encoder = predictor.head, predictor.encoder
    probe = predictor.read(file, num_frames=1)
    if not probe.fps:
        raise VideoError(file, "no frame rate, so no time windows")
    windows = timeline_windows(probe.frame_count / probe.fps, window, stride)
    if len(windows) > max_windows:
        raise VideoError(file, f"{len(windows)} windows of {window} s every {stride} s; at most {max_windows}: "
                         "use a larger stride")
    segments = []
    for done, (start, end) in enumerate(windows):
        lo = min(int(np.ceil(start * probe.fps)), probe.frame_count - 1)
        hi = max(min(int(np.ceil(end * probe.fps)), probe.frame_count), lo + 1)
        emb = embed_frames(predictor.read(file, window=(lo, hi)).frames, encoder, predictor.batch_size)
        segments.append(Segment(start, end, head.classes_, head.predict_proba(emb[None])[0],
                                head.not_sure_below_))
        if on_window:
            on_window(done + 1, len(windows))
    return segments


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


if __name__ == "__main__":  # python -m pipeline.predict: the command line lives in pipeline.cli
    from pipeline.cli import predict
    sys.exit(predict())
