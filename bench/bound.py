"""Stage one against the machine's bound (issue 39): the marginal time of 12 more clips, default settings.

    python bench/bound.py [--rounds 3] [--baseline DIR]

Clips: 24 H.264 clips of 10 s at 1280x720 (bench/stage_one.py's make_clip, shared with bench/per_file.py
--marginal), 16 frames each; the encoder is the full ViT-B/32 architecture with random weights (the real model's
speed; the real weights cannot be downloaded here). Stage one runs with the default settings (backend, workers,
device and batch size auto), a fresh process per run as `python -m stages.extract` starts, on 12 and on 24 clips,
alternated; the marginal time of the 12 more clips is the difference of the medians (start-up and the encoder's
load taken out).

The bound for those 12 clips is (decode core-seconds + encode core-seconds) / cores:
- decode: the CPU time (time.process_time, one process, one thread per library as in a worker) of what a worker
  does to each of the 12 clips before the encoder sees it (the workers' load_video: hash, decode, resize, crop);
- encode: 12 x 16 frames at the rate of the fastest exact backend (torch and ONNX Runtime, fp32; the stage's
  auto picks ONNX Runtime on the CPU), measured on ready uint8 frames in passes of the stage's batch size, on 1 and
  on 2 threads; a pass on T threads costs T core-seconds per second, and the cheapest counts (the strictest
  bound).
Printed: both parts, the bound, each run's time with the machine's load average, and the ratio bound / marginal
(issue 39's target: at least 0.8). --baseline DIR: the stage runs of an older checkout too, alternated (one that
starts its workers' server first, stages.extract.start_forkserver, as every run here does).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from stage_one import full_size_clip  # run as a file from bench/: its ViT-B/32 with random weights

from pipeline.threads import cores

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "bound"
CLIPS = ROOT / "bench" / "out" / "per_file" / "720p_10s"  # clip_files(): shared with per_file --marginal, cold.py
FRAMES = 16
MORE = 12  # the clips whose marginal time is measured

DECODE = """
import os, time
from pipeline.threads import WORKER_THREADS, set_torch_threads
os.environ["OMP_NUM_THREADS"] = str(WORKER_THREADS)  # as a decode worker (pipeline.decode.workers._worker_init)
set_torch_threads(WORKER_THREADS)
from pipeline.embed.encoder import EncoderConfig
from pipeline.embed.recorded import load
from pipeline.decode.workers import ReadConfig, load_video
encoder, _ = load(EncoderConfig(model={model!r}), "cpu")
cfg = ReadConfig({frames}, encoder.frame_spec())
load_video({warm!r}, cfg, True)  # the first call's imports and caches, not counted
cpu = []
for f in {files!r}:
    t = time.process_time()
    loaded = load_video(f, cfg, True)
    cpu.append(time.process_time() - t)
    assert loaded.clip.frames.shape[0] == {frames}, loaded.clip.frames.shape
print(*cpu)
"""

ENCODE = """
import time
import numpy as np
import torch
torch.set_num_threads({threads})
from pipeline.embed.encoder import EncoderConfig, embed_frames
from pipeline.embed.recorded import load
encoder, batch = load(EncoderConfig(model={model!r}, backend={backend!r}), "cpu")
frames = np.random.default_rng(0).integers(0, 256, ({images}, 224, 224, 3), dtype=np.uint8)
embed_frames(frames[:batch], encoder, batch)
t = time.perf_counter()
embed_frames(frames, encoder, batch)
print(encoder.backend, encoder.precision, batch, time.perf_counter() - t)
"""

STAGE = """
import time
import stages.extract  # as `python -m stages.extract` starts: its OpenMP setting, then the workers' server first
from stages.extract import start_forkserver, worker_modules
if __name__ == "__main__":
    start_forkserver(worker_modules({model!r}, "auto"))
    from pipeline.extract.runner import ExtractConfig, extract_features

    cfg = ExtractConfig(root={root!r}, cache_path={cache!r}, model={model!r}, num_frames={frames})
    t = time.perf_counter()
    s = extract_features(cfg, progress=False)
    assert s.encoded == {n} and not s.skipped, str(s)
    print(time.perf_counter() - t)
"""


def python(code: str, checkout: Path = ROOT) -> str:
    """Run `code` in a fresh interpreter with `checkout` importable; its standard output."""
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=checkout, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(checkout)})
    if out.returncode:
        raise SystemExit(f"{checkout}: failed:\n{out.stderr[-3000:]}")
    return out.stdout


def clip_files() -> list[Path]:
    """The 24 clips, in two class folders (made once; bench/per_file.py --marginal and bench/cold.py use them too)."""
    from stage_one import make_clip  # run as a file from bench/

    files = [CLIPS / f"c{i % 2}" / f"v{i:02d}.mp4" for i in range(2 * MORE)]
    for i, f in enumerate(files):
        if not f.exists():
            make_clip(f, (1280, 720), 10, seed=2000 + i)
    return files


def linked(files: list[Path], into: Path) -> dict[int, Path]:
    """Data roots of the first 12 and of all 24 clips, made anew under `into` as hard links: {clips: folder}."""
    roots = {}
    for n in (MORE, 2 * MORE):
        roots[n] = into / f"clips_{n}"
        shutil.rmtree(roots[n], ignore_errors=True)
        for f in files[:n]:
            (roots[n] / f.parent.name).mkdir(parents=True, exist_ok=True)
            os.link(f, roots[n] / f.parent.name / f.name)  # hard: data.follow_links refuses links out of root
    return roots


def bound(files: list[Path], model: Path, rounds: int) -> tuple[float, float]:
    """Decode and encode core-seconds of the 12 more clips (medians of `rounds`; encode: the cheapest backend and
    thread count)."""
    decode, encode = [], {(b, t): [] for b in ("torch", "onnxruntime") for t in (1, 2)}
    for r in range(rounds):
        cpu = [float(x) for x in python(DECODE.format(model=str(model), frames=FRAMES, warm=str(files[0]),
                                                      files=[str(f) for f in files[MORE:]])).split()]
        decode.append(sum(cpu))
        print(f"  round {r + 1} decode: {sum(cpu):5.2f} CPU-s for {MORE} clips ({min(cpu):.3f} to {max(cpu):.3f} "
              f"a clip; load {os.getloadavg()[0]:.1f})", flush=True)
        for (asked, threads), spent in encode.items():
            backend, precision, batch, wall = python(ENCODE.format(model=str(model), threads=threads,
                                                                   backend=asked, images=MORE * FRAMES)).split()
            spent.append(threads * float(wall))
            print(f"  round {r + 1} encode: {backend} {precision}, batch {batch}, {threads} thread(s): "
                  f"{MORE * FRAMES / float(wall):5.1f} images/s, {threads * float(wall):5.2f} core-s for "
                  f"{MORE * FRAMES} images (load {os.getloadavg()[0]:.1f})", flush=True)
    return statistics.median(decode), min(statistics.median(v) for v in encode.values())


def stage_runs(rounds: int, checkouts: dict[str, Path], roots: dict[int, Path], model: Path) -> dict[str, float]:
    """Marginal seconds of the 12 more clips per checkout (difference of medians of fresh runs, alternated)."""
    times = {(name, n): [] for name in checkouts for n in (MORE, 2 * MORE)}
    for r in range(rounds):
        for n in (MORE, 2 * MORE):
            for name, checkout in checkouts.items():
                cache = OUT / "cache" / "features.h5"
                shutil.rmtree(cache.parent, ignore_errors=True)
                load = os.getloadavg()[0]
                code = STAGE.format(root=str(roots[n]), cache=str(cache), model=str(model), frames=FRAMES, n=n)
                times[(name, n)].append(float(python(code, checkout).split()[-1]))
                print(f"  round {r + 1} {name:24s} {n} clips {times[(name, n)][-1]:6.2f} s (load {load:.1f})",
                      flush=True)
    return {name: statistics.median(times[(name, 2 * MORE)]) - statistics.median(times[(name, MORE)])
            for name in checkouts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="a checkout of older code, its stage runs alternated")
    args = parser.parse_args()
    n_cores = cores()
    files, model = clip_files(), full_size_clip()
    roots = linked(files, OUT)
    print(f"{2 * MORE} clips of 10 s 1280x720, {FRAMES} frames, full ViT-B/32 (random weights); {n_cores} cores, "
          f"{os.uname().nodename}; the load average is printed with each run")
    checkouts = {"this checkout": ROOT}
    if args.baseline:
        checkouts[f"baseline {args.baseline.name}"] = args.baseline.resolve()
    # the ONNX export and the encoder's record, made once, not counted
    python(STAGE.format(root=str(roots[MORE]), cache=str(OUT / "cache" / "warm.h5"), model=str(model),
                        frames=FRAMES, n=MORE))
    marginal = stage_runs(args.rounds, checkouts, roots, model)
    decode, encode = bound(files, model, args.rounds)
    limit = (decode + encode) / n_cores
    print(f"\nbound for {MORE} more clips: ({decode:.2f} decode + {encode:.2f} encode core-s) / {n_cores} cores = "
          f"{limit:.2f} s")
    for name, seconds in marginal.items():
        print(f"  {name:24s} marginal {seconds:6.2f} s for {MORE} clips: {limit / seconds:.2f} of the bound "
              f"(target >= 0.8)")


if __name__ == "__main__":
    main()
