"""Upload-to-answer time of the app on a 10 s 720p clip, next to decode + encode alone, measured in one run.

    python bench/app_latency.py [--rounds 3]

The encoder is the full ViT-B/32 architecture (CLIPConfig() defaults) with random weights: the real model's speed,
as its weights cannot be downloaded here. The clip is MPEG-4 part 2 (OpenCV's mp4v; OpenCV here has no H.264
encoder), 1280x720, 25 fps, 10 s. A and B alternate within each round (the machines drift by up to 30% between
processes). Targets: upload-to-answer <= 1.25 x (decode the 16 frames + encode them); the app with the
onnxruntime backend and the thread policy (pipeline/threads.py) <= 0.85 x the app before them (torch, every core).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from pipeline.embed.encoder import embed_frames, load_encoder, preprocess_frames
from pipeline.embed.tiny_clip import build_tiny_clip
from pipeline.heads.estimators import LinearHead
from pipeline.paths import HEAD_FILES
from pipeline.tools.predict import load_predictor, predict_bytes
from pipeline.threads import THREADS, cores as usable_cores
from pipeline.heads.training import LinearConfig
from pipeline.decode.video import SAMPLING, read_frames
from pipeline.decode.workers import DecodePool, PoolConfig

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "bench" / "out"
APP_THREADS = THREADS["app"] or usable_cores()  # the policy, as committed
CLASSES = ["clapping", "meeting_and_splitting", "sitting", "standing_still", "walking",
           "walking_while_reading_book", "walking_while_using_phone"]


def full_size_clip() -> Path:
    """A ViT-B/32 CLIP with random weights, saved once like a downloaded one (about 600 MB)."""
    path = OUT / "vit-b-32-random"
    if not (path / "config.json").exists():
        build_tiny_clip(path, full_size=True)
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


def project_dir(model: Path, backend: str, mtime_ns: int) -> Path:
    """A project folder with a linear head (random weights) trained 'on' the full-size encoder run by `backend`;
    its file's mtime is set to mtime_ns, so the app's head cache (keyed by path and mtime) tells the two apart."""
    project = OUT / f"app_project_{backend}"
    encoder = load_encoder(str(model), "cpu", backend=backend)
    attrs = {**encoder.describe(), "num_frames": 16, "sampling": SAMPLING}
    x = np.random.default_rng(0).normal(size=(len(CLASSES), encoder.dim)).astype(np.float32)
    LinearHead(LinearConfig(epochs=0)).fit(x, np.arange(len(CLASSES)), CLASSES, attrs).save(  # random weights
        project / HEAD_FILES["linear"])
    os.utime(project / HEAD_FILES["linear"], ns=(mtime_ns, mtime_ns))
    return project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    model, video = full_size_clip(), hd_video()
    cores = usable_cores()
    projects = {b: project_dir(model, b, 10**18 + i) for i, b in enumerate(("torch", "onnxruntime"))}
    # the encoder with each thread count: torch's is set per call; an onnxruntime session's when it is made
    predictors, pool = {}, DecodePool(PoolConfig(workers=1))  # one worker, as the app's (app/common.py)
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        predictors[("torch", threads)] = load_predictor(projects["torch"] / HEAD_FILES["linear"], pool, device="cpu")
        predictors[("onnxruntime", threads)] = load_predictor(projects["onnxruntime"] / HEAD_FILES["linear"], pool)
    data = video.read_bytes()

    from streamlit.testing.v1 import AppTest
    apps = {}
    for backend, project in projects.items():
        os.chdir(project)
        THREADS["app"] = cores if backend == "torch" else APP_THREADS  # torch: as the app ran before the policy
        apps[backend] = AppTest.from_file(str(ROOT / "app" / "streamlit_app.py"), default_timeout=300)
        apps[backend].run()  # loads the encoder into the app's cache, as a running server would have
    for (backend, threads), predictor in predictors.items():  # warm-up: first forward passes are slower
        torch.set_num_threads(threads)
        predict_bytes(data, predictor)

    times = {k: [] for k in ("decode", "preprocess", "encode")}
    times |= {f"predict_bytes {b} {t}": [] for b, t in predictors} | {f"app {b}": [] for b in apps}
    for _ in range(args.rounds):
        torch.set_num_threads(cores)
        encoder = predictors[("torch", cores)].encoder
        t = time.perf_counter()
        clip = read_frames(video, 16)
        times["decode"].append(time.perf_counter() - t)
        t = time.perf_counter()
        pixels = preprocess_frames(clip.frames, encoder)
        times["preprocess"].append(time.perf_counter() - t)
        t = time.perf_counter()
        embed_frames(pixels, encoder, 16)
        times["encode"].append(time.perf_counter() - t)
        for (backend, threads), predictor in predictors.items():
            torch.set_num_threads(threads)
            t = time.perf_counter()
            predict_bytes(data, predictor)
            times[f"predict_bytes {backend} {threads}"].append(time.perf_counter() - t)
        for backend, app in apps.items():
            os.chdir(projects[backend])
            THREADS["app"] = cores if backend == "torch" else APP_THREADS
            app.file_uploader[0].upload("clip.mp4", data, "video/mp4")
            app.run()
            t = time.perf_counter()
            app.button[0].click().run()  # the script run that answers: write, decode, encode, classify, render
            times[f"app {backend}"].append(time.perf_counter() - t)
            assert not app.exception and not app.error, (app.exception, app.error)

    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["decode"] + med["encode"]
    print(f"clip: {video.name} ({len(data) / 2**20:.1f} MiB), 16 frames, ViT-B/32 random weights, CPU, {cores} cores, "
          f"load average {os.getloadavg()[0]:.1f} (shared machine); medians of {args.rounds} alternating rounds")
    print(f"decode 16 frames (read_frames)       {med['decode']:6.2f} s")
    print(f"preprocess (fast)                    {med['preprocess']:6.2f} s")
    print(f"encode 16 frames (embed_frames)      {med['encode']:6.2f} s   (torch, {cores} threads)")
    print(f"decode + encode                      {base:6.2f} s   (the reference)")
    for (backend, threads) in predictors:
        k = f"predict_bytes {backend} {threads}"
        print(f"predict_bytes {backend:<11} {threads} thr  {med[k]:6.2f} s   {med[k] / base:.2f}x")
    today = med["app torch"]
    print(f"app, torch fp32, {cores} threads (before)  {today:6.2f} s   {today / base:.2f}x   target <= 1.25x")
    ratio = statistics.median(a / b for a, b in zip(times["app onnxruntime"], times["app torch"]))
    print(f"app, ORT fp32, {APP_THREADS} thread(s) (now)  {med['app onnxruntime']:6.2f} s   "
          f"{ratio:.2f}x the torch app (median of per-round ratios)   target <= 0.85x")
    pool.close()


if __name__ == "__main__":
    main()
