"""Predict the action in videos with a trained head and the full encoder: the app's path, also a batch command.

    python -m pipeline.predict PATH... [--head linear|logreg|zeroshot] [--json] [--threshold F]
                                       [--segments WINDOW STRIDE] [--device auto|cpu|cuda] [-v]

PATH is a video or a folder (searched recursively). Prints a header line, then one tab-separated line per video:
path, answer (the top class, or "not sure" under the head's cut-off), top class, probability (or a JSON list).
Heads on a random encoder (python -m pipeline.encoder) say so on stderr and in each JSON entry ("warning").
stderr is quiet (no progress bars, no FFmpeg warnings) unless -v is given. A file that fails, for
any reason, is one error line on stderr (and an "error" entry in the JSON) and the others are still predicted; the
exit status is 1 when any file failed. --segments adds one indented line per sliding window (start-end seconds,
answer, top class, probability); when the windows cannot be made (too many of them) the whole-video answer is
still printed, the reason goes to stderr (and "segments_error"), and the exit status is 1.

The library functions come first; the command's main and its formatters last. The caller owns the decode workers
(a DecodePool, passed in): the command opens one and closes it, the app keeps one per process.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.cache import random_encoder_note
from pipeline.calibration import sure_threshold
from pipeline.encoder import AUTO_BATCH_SIZE, Encoder, embed_frames, load_encoder
from pipeline.errors import ConfigError, HeadError, UserError, VideoError
from pipeline.heads import Head, HeadMeta, load_head
from pipeline.paths import HEAD_FILES
from pipeline.threads import set_threads
from pipeline.discover import find_video_files
from pipeline.video import SAMPLING, Clip, DecodeLimits
from pipeline.workers import DecodePool, PoolConfig, ReadConfig


NOT_SURE = "not sure"
TSV_HEADER = ("path", "answer", "class", "probability")  # the columns of the text output, printed first


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


def main(argv: list[str] | None = None) -> int:
    """The batch command (see the module's docstring): its exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="video files or folders")
    parser.add_argument("--head", choices=sorted(HEAD_FILES), default="linear")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of lines")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--segments", nargs=2, type=float, metavar=("WINDOW", "STRIDE"),
                        help="also answer for sliding windows of WINDOW seconds every STRIDE seconds")
    parser.add_argument("--threshold", type=float, metavar="F",
                        help='answer "not sure" when the top probability is under F of the way from chance to '
                             "certainty (default: the head's, calibration.not_sure_below_chance_to_certain)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="let the libraries speak on stderr (a first download's progress bars, PyAV's FFmpeg "
                             "warnings in this process; the decode workers stay quiet and report failures as error "
                             "lines)")
    args = parser.parse_args(argv)
    quiet_libraries(args.verbose)
    set_threads("app")
    try:  # the head and its encoder first: without them no decode worker is started
        head = load_head(HEAD_FILES[args.head])
        encoder = encoder_for(head.meta_, args.device)
    except (UserError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with DecodePool(PoolConfig(workers=1)) as pool:
        try:
            predictor = make_predictor(head, encoder, pool)
        except HeadError as e:  # made for another encoder or sampling
            print(f"error: {e}", file=sys.stderr)
            return 2
        return _predict_all(args, predictor)


def _predict_all(args: argparse.Namespace, predictor: Predictor) -> int:
    """Every file the paths name through predictor, printed as lines or JSON; 1 when any failed."""
    warning = random_encoder_note(predictor.head.meta_.features)
    if warning:
        print(f"note: {warning}", file=sys.stderr)
    if not args.json:
        print("\t".join(TSV_HEADER), flush=True)
    files, results, failed = [], [], 0
    for p in args.paths:
        found = find_video_files(p) if Path(p).is_dir() else None
        files += found.files if found else [Path(p)]
        for problem, reason in found.problems if found else []:
            failed += 1
            print(f"error: {problem}: {reason}", file=sys.stderr)
            results.append({"path": _printable(problem), "error": reason})
    for file in files:
        shown = _printable(file)  # a name that is not UTF-8 still prints
        try:  # any failure of one file is that file's error line; the others are still predicted
            pred = predict_video(file, predictor)
        except Exception as e:  # noqa: BLE001 (batch work: skip and record; not BaseException: Ctrl-C still stops)
            failed += 1
            results.append({"path": shown, "error": _report(e, shown)})
            continue
        segments, segments_error = [], None
        if args.segments:
            try:  # the whole-video answer stands even when the windows cannot be made
                segments = predict_segments(file, predictor, *args.segments)
            except Exception as e:  # noqa: BLE001
                failed += 1
                segments_error = _report(e, shown, "timeline: ")
        if args.threshold is not None:
            for p in [pred, *segments]:
                p.not_sure_below = sure_threshold(args.threshold, len(p.class_names))
        results.append({"path": shown, "answer": pred.answer, "class": pred.top_class,
                        "probability": pred.top_probability,
                        "probabilities": dict(zip(pred.class_names, pred.probabilities.tolist()))})
        if warning:
            results[-1]["warning"] = warning
        if segments:
            results[-1]["segments"] = [{"start": s.start, "end": s.end, "answer": s.answer, "class": s.top_class,
                                        "probability": s.top_probability} for s in segments]
        if segments_error:
            results[-1]["segments_error"] = segments_error
        if not args.json:
            print(f"{shown}\t{pred.answer}\t{pred.top_class}\t{pred.top_probability:.3f}", flush=True)
            for s in segments:
                print(f"  {s.start:7.2f}-{s.end:7.2f} s\t{s.answer}\t{s.top_class}\t{s.top_probability:.3f}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


def quiet_libraries(verbose: bool = False) -> None:
    """Quiet: no Hugging Face progress bar (a first download's; loading from disk never shows one: hub.py) and no
    FFmpeg log lines ("moov atom not found") from this process; the decode workers start from a clean process
    (forkserver), where PyAV logs nothing. A file that fails still gets its error line. verbose: the download's
    bars, and FFmpeg's warnings from this process through Python logging."""
    import av.logging
    from transformers.utils import logging as hf_logging

    if verbose:
        hf_logging.enable_progress_bar()
        av.logging.set_level(av.logging.WARNING)
    else:
        hf_logging.disable_progress_bar()
        av.logging.set_level(None)


def _printable(file: str | os.PathLike) -> str:
    """A file name as it can print (bytes that are not UTF-8 as backslash escapes)."""
    return os.fsencode(file).decode("utf-8", "backslashreplace")


def _reason(e: BaseException) -> str:
    """Why one file failed, without the file: a VideoError's reason, an OSError's strerror, another UserError's
    message; any other exception (a MemoryError, a RuntimeError) named by its type as well."""
    if isinstance(e, VideoError):
        return e.reason
    if isinstance(e, OSError):
        return e.strerror or str(e)
    if isinstance(e, UserError):
        return str(e)
    return f"{type(e).__name__}: {e}".rstrip(": ")


def _report(e: BaseException, shown: str, what: str = "") -> str:
    """`<shown>: <what><reason>` on stderr after "error: ", and returned for the JSON."""
    message = f"{shown}: {what}{_reason(e)}"
    print(f"error: {message}", file=sys.stderr)
    return message


if __name__ == "__main__":
    sys.exit(main())
