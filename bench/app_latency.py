"""Upload-to-answer time of the app on a 10 s 720p clip, next to decode + encode alone, measured in one run.

    python bench/app_latency.py [--rounds 3]

The encoder is the full ViT-B/32 architecture (CLIPConfig() defaults) with random weights: the real model's speed,
as its weights cannot be downloaded here. The clip is MPEG-4 part 2 (OpenCV's mp4v; OpenCV here has no H.264
encoder), 1280x720, 25 fps, 10 s. A and B alternate within each round (the machines drift by up to 30% between
processes). Target: upload-to-answer <= 1.25 x (decode the 16 frames + encode them).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.encoder import build_random_clip, embed_frames, load_encoder, preprocess_frames  # noqa: E402
from pipeline.heads import HEAD_FILES, LinearHead, head_metadata, save_linear  # noqa: E402
from pipeline.predict import load_predictor, predict_bytes  # noqa: E402
from pipeline.video import SAMPLING, read_frames  # noqa: E402

OUT = ROOT / "bench" / "out"
CLASSES = ["clapping", "meeting_and_splitting", "sitting", "standing_still", "walking",
           "walking_while_reading_book", "walking_while_using_phone"]


def full_size_clip() -> Path:
    """A ViT-B/32 CLIP with random weights, saved once like a downloaded one (about 600 MB)."""
    path = OUT / "vit-b-32-random"
    if not (path / "config.json").exists():
        build_random_clip(path, full_size=True)
    return path


def hd_video(seconds: int = 10, fps: int = 25) -> Path:
    """A moving-pattern 1280x720 clip (mp4v), written once."""
    path = OUT / f"clip_{seconds}s_720p.mp4"
    if not path.exists():
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (1280, 720))
        rng = np.random.default_rng(0)
        base = cv2.resize(rng.integers(0, 256, (90, 160, 3), dtype=np.uint8), (1280, 720))
        for i in range(seconds * fps):
            frame = np.roll(base, 8 * i, axis=1)
            cv2.circle(frame, (100 + 4 * i % 1100, 360), 60, (255, 255, 255), -1)
            writer.write(frame)
        writer.release()
    return path


def project_dir(model: Path) -> Path:
    """A project folder with a linear head (random weights) trained 'on' the full-size encoder."""
    project = OUT / "app_project"
    encoder = load_encoder(str(model), "cpu")
    attrs = {**encoder.describe(), "num_frames": 16, "sampling": SAMPLING}
    head = LinearHead(encoder.dim, len(CLASSES))
    save_linear(project / HEAD_FILES["linear"], head.state_dict(), head_metadata(attrs, CLASSES, "linear"))
    return project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    model, video = full_size_clip(), hd_video()
    project = project_dir(model)
    os.chdir(project)
    predictor = load_predictor(HEAD_FILES["linear"], device="cpu")
    encoder = predictor.encoder
    data = video.read_bytes()

    from streamlit.testing.v1 import AppTest
    app = AppTest.from_file(str(ROOT / "app" / "streamlit_app.py"), default_timeout=300)
    app.run()  # loads the encoder into the app's cache, as a running server would have
    predict_bytes(data, predictor)  # warm-up: first forward passes are slower

    times = {k: [] for k in ("decode", "preprocess", "encode", "predict_bytes", "app")}
    for _ in range(args.rounds):
        t = time.perf_counter()
        clip = read_frames(video, 16)
        times["decode"].append(time.perf_counter() - t)
        t = time.perf_counter()
        pixels = preprocess_frames(clip.frames, encoder)
        times["preprocess"].append(time.perf_counter() - t)
        t = time.perf_counter()
        embed_frames(pixels, encoder, 16)
        times["encode"].append(time.perf_counter() - t)
        t = time.perf_counter()
        predict_bytes(data, predictor)
        times["predict_bytes"].append(time.perf_counter() - t)
        app.file_uploader[0].upload("clip.mp4", data, "video/mp4")
        app.run()
        t = time.perf_counter()
        app.button[0].click().run()  # the script run that answers: write, decode, encode, classify, render
        times["app"].append(time.perf_counter() - t)
        assert not app.exception and not app.error, (app.exception, app.error)

    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["decode"] + med["encode"]
    print(f"clip: {video.name} ({len(data) / 2**20:.1f} MiB), 16 frames, ViT-B/32 random weights, CPU, "
          f"{torch.get_num_threads()} threads; medians of {args.rounds} alternating rounds")
    print(f"decode 16 frames (read_frames)       {med['decode']:6.2f} s")
    print(f"preprocess (fast)                    {med['preprocess']:6.2f} s")
    print(f"encode 16 frames (embed_frames)      {med['encode']:6.2f} s")
    print(f"decode + encode                      {base:6.2f} s   (the reference)")
    print(f"predict_bytes (upload path)          {med['predict_bytes']:6.2f} s   {med['predict_bytes'] / base:.2f}x")
    print(f"app: Predict click to rendered page  {med['app']:6.2f} s   {med['app'] / base:.2f}x   target <= 1.25x")


if __name__ == "__main__":
    main()
