"""Live recognition, sustained: frames embedded per second, answer latency p50 / p95, and memory over a long run.

    python bench/live.py                                   # tiny CLIP and ViT-B/32, torch and onnxruntime, 60 s each
    python bench/live.py --models b32 --seconds 30         # a loaded machine: shorter
    python bench/live.py --models b32 --backends onnxruntime --seconds 600   # the memory run (10 minutes)

Each session is `clip-har-predict --live` without the printing: a 1280x720 H.264 clip (25 fps, made once with
Debian's ffmpeg) played at its own speed through the live source (decoded in its worker, every frame), the engine at
4 embedded frames a second with an answer every second, a 16-frame linear head (random weights) on the encoder:
the tiny random CLIP, or the full ViT-B/32 architecture with random weights (bench/app_latency.py's; real weights
cannot be downloaded here), run by torch fp32 or the onnxruntime backend, threads as the app's policy
(pipeline/threads.py). RSS of this process and of the decoding worker is sampled every second; growth is the last
sample against the one at 10% of the run (after the warm-up). Targets (2 cores, ViT-B/32): an answer every second,
latency p95 <= 500 ms at 4 embedded frames/s; <= 50 MiB growth over 10 minutes.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as clip-har-predict --live (pipeline/live/command.py)

import numpy as np  # noqa: E402

from app_latency import full_size_clip  # noqa: E402  (run as a script: bench/ is on sys.path)

from pipeline.decode.video import SAMPLING  # noqa: E402
from pipeline.embed.tiny_clip import build_tiny_clip  # noqa: E402
from pipeline.heads.estimators import LinearHead  # noqa: E402
from pipeline.heads.training import LinearConfig  # noqa: E402
from pipeline.live.engine import LiveConfig, LiveEngine  # noqa: E402
from pipeline.live.source import SourceConfig, parse_source, run_source  # noqa: E402
from pipeline.threads import set_threads  # noqa: E402
from pipeline.tools.predict import encoder_for, make_predictor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "live"
CLASSES = ["clapping", "sitting", "standing_still", "walking", "waving"]


def clip(seconds: int) -> Path:
    """A 1280x720 H.264 clip of `seconds` (a moving test pattern, keyframe every 2 s), written once."""
    path = OUT / f"clip_{seconds}s_720p.mp4"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size=1280x720:rate=25:duration={seconds}", "-c:v", "libx264", "-preset",
                        "ultrafast", "-g", "50", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def predictor(model: str, backend: str):
    """A 16-frame linear head with random weights on the model, run by `backend`, with its encoder."""
    folder = full_size_clip() if model == "b32" else OUT / "tiny-clip"
    if model == "tiny" and not (folder / "config.json").exists():
        build_tiny_clip(folder)
    from pipeline.embed.encoder import load_encoder
    encoder = load_encoder(str(folder), "cpu", backend=backend)
    attrs = {**encoder.describe(), "num_frames": 16, "sampling": SAMPLING}
    x = np.random.default_rng(0).normal(size=(len(CLASSES), encoder.dim)).astype(np.float32)
    head = LinearHead(LinearConfig(epochs=0)).fit(x, np.arange(len(CLASSES)), CLASSES, attrs)
    return make_predictor(head, encoder_for(attrs, "cpu"), None)


def rss_mib() -> float:
    """Resident memory of this process and its children (the decoding worker), MiB, from /proc."""
    pids = [os.getpid()]
    for task in Path("/proc/self/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:  # a worker that just ended
            continue
        total += next(int(line.split()[1]) for line in text.splitlines() if line.startswith("VmRSS:"))
    return total / 1024


def session(pred, video: Path, seconds: float) -> dict:
    """One live session of `seconds` on the clip: the figures."""
    stop, ended, samples = threading.Event(), [], []
    config = LiveConfig(rate=4, every=1)
    with LiveEngine(pred, config) as engine:
        reader = threading.Thread(target=lambda: ended.append(run_source(
            parse_source(str(video)), SourceConfig(rate=config.rate), engine.push, stop)))
        start = time.monotonic()
        reader.start()
        while (elapsed := time.monotonic() - start) < seconds and reader.is_alive():
            samples.append((elapsed, rss_mib()))
            stop.wait(1.0)
        stop.set()
        reader.join()
        wall = time.monotonic() - start
    s = engine.stats
    steady = [m for t, m in samples if t >= 0.1 * wall] or [samples[-1][1]]
    return {"wall": wall, "answers": s.answers, "embedded": s.embedded, "dropped": s.dropped + ended[0].dropped,
            "p50": s.latency_percentile(50), "p95": s.latency_percentile(95), "rss0": steady[0],
            "rss1": steady[-1], "rss_max": max(steady), "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=("tiny", "b32"), default=["tiny", "b32"])
    parser.add_argument("--backends", nargs="+", choices=("torch", "onnxruntime"), default=["torch", "onnxruntime"])
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    threads = set_threads("app")
    video = clip(args.seconds + 10)
    print(f"{os.cpu_count()} CPUs, {threads} threads, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"a {args.seconds} s session each: 720p H.264 25 fps played live, 4 embedded frames/s, an answer every s")
    print(f"{'model':6} {'backend':12} {'answers/s':>9} {'embedded/s':>10} {'dropped':>7} {'p50 ms':>7} "
          f"{'p95 ms':>7} {'RSS MiB':>8} {'growth':>7} {'max':>6} {'load':>5}")
    for model in args.models:
        for backend in args.backends:
            pred = predictor(model, backend)
            f = session(pred, video, args.seconds)
            print(f"{model:6} {backend:12} {f['answers'] / f['wall']:9.2f} {f['embedded'] / f['wall']:10.2f} "
                  f"{f['dropped']:7d} {f['p50']:7.0f} {f['p95']:7.0f} {f['rss0']:8.0f} "
                  f"{f['rss1'] - f['rss0']:+7.1f} {f['rss_max'] - f['rss0']:+6.1f} {f['load']:5.1f}", flush=True)


if __name__ == "__main__":
    main()
