"""Predict the action in videos with a trained head and the full encoder: the app's path, also a batch command.

    python -m pipeline.predict PATH... [--head linear|logreg|zeroshot] [--json] [--threshold P]
                                       [--device auto|cpu|cuda]

PATH is a video or a folder (searched recursively). Prints one line per video: path, answer (the top class, or
"not sure" under the head's calibrated threshold), top class, probability (or a JSON list). Unreadable files are
reported on stderr and the others still predicted; the exit status is 1 when any file failed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.encoder import Encoder, embed_frames, load_encoder, preprocess_frames
from pipeline.heads import HEAD_FILES, Head, check_compatible, load_head
from pipeline.video import SAMPLING, Clip, find_video_files, read_frames


NOT_SURE = "not sure"


@dataclass
class Predictor:
    """A head with the encoder it was trained on; batch_size as in stage one, so the embeddings match the cache."""

    head: Head
    encoder: Encoder
    batch_size: int = 16


@dataclass
class Prediction:
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


def make_predictor(head: Head, encoder: Encoder, batch_size: int = 16) -> Predictor:
    """Pair a head with an encoder; ValueError when the head was trained with another encoder or sampling."""
    if head.meta["sampling"] != SAMPLING:
        raise ValueError(f"the head was trained on {head.meta['sampling']!r} sampling, this code samples {SAMPLING!r}")
    check_compatible(head.meta, encoder.describe(), what="encoder")
    return Predictor(head, encoder, batch_size)


def load_predictor(head_path: str | os.PathLike, device: str = "auto") -> Predictor:
    """Load a head and the encoder its metadata names (hub id or directory), with the same preprocessing."""
    head = load_head(head_path)
    quantize = head.meta["quantize"]
    encoder = load_encoder(head.meta["encoder_model"], "cpu" if quantize == "int8" else device,
                           head.meta["preprocess"], quantize)
    return make_predictor(head, encoder)


def predict_video(file: str | os.PathLike, predictor: Predictor,
                  on_step: Callable[[str], None] | None = None) -> Prediction:
    """Decode, sample, preprocess and encode a video exactly as stage one does, then apply the head.

    on_step("decoding" | "encoding" | "classifying") is called as each step starts (for progress displays).
    Raises ValueError naming the file when it cannot be decoded.
    """
    step = on_step or (lambda name: None)
    head, encoder = predictor.head, predictor.encoder
    step("decoding")
    clip = read_frames(file, head.meta["num_frames"])
    step("encoding")
    embeddings = embed_frames(preprocess_frames(clip.frames, encoder), encoder, predictor.batch_size)  # (F, D)
    step("classifying")
    probabilities = head.predict_proba(embeddings[None])[0]
    frame_probabilities = head.predict_proba(embeddings[:, None, :])  # each frame as a one-frame video
    return Prediction(head.class_names, probabilities, frame_probabilities, embeddings, clip, head.not_sure_below)


def predict_bytes(data: bytes, predictor: Predictor, on_step: Callable[[str], None] | None = None) -> Prediction:
    """predict_video on an uploaded file's bytes, through a temporary file that is always removed.

    The temporary name owes nothing to the upload's name; errors speak of "the uploaded file", not of the path.
    """
    if not data:
        raise ValueError("the uploaded file is empty")
    fd, tmp = tempfile.mkstemp(prefix="clip-har-", suffix=".upload")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return predict_video(tmp, predictor, on_step)
    except ValueError as e:
        raise ValueError(str(e).replace(tmp, "the uploaded file")) from None
    finally:
        os.unlink(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="video files or folders")
    parser.add_argument("--head", choices=sorted(HEAD_FILES), default="linear")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of lines")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threshold", type=float, metavar="P",
                        help='answer "not sure" under this top probability (default: the head\'s, from training)')
    args = parser.parse_args(argv)
    try:
        predictor = load_predictor(HEAD_FILES[args.head], args.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = [f for p in args.paths for f in (find_video_files(p) if Path(p).is_dir() else [Path(p)])]
    results, failed = [], 0
    for file in files:
        try:
            pred = predict_video(file, predictor)
            if args.threshold is not None:
                pred.not_sure_below = args.threshold
        except (ValueError, OSError) as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
            results.append({"path": str(file), "error": str(e)})
            continue
        results.append({"path": str(file), "answer": pred.answer, "class": pred.top_class,
                        "probability": pred.top_probability,
                        "probabilities": dict(zip(pred.class_names, pred.probabilities.tolist()))})
        if not args.json:
            print(f"{file}\t{pred.answer}\t{pred.top_class}\t{pred.top_probability:.3f}", flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
