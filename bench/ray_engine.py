"""Stage one's Ray engine against the local engine on one machine: what Ray costs when there is no cluster.

    unshare -n sh -c 'ip link set lo up && python bench/ray_engine.py [--videos 12] [--rounds 2]'

Run inside a network namespace with only loopback (the script checks): Ray binds the machine's interface address
otherwise. Videos: 10 s 1280x720 H.264 clips (bench/workers.py's set), 16 frames each, batch 16, the full ViT-B/32
architecture with random weights (the real model's speed; its weights cannot be downloaded here). Each round times,
in this order: the local engine; the Ray engine starting its own Ray (extract.ray_address: "", as `dvc repro`
runs it); the Ray engine on a Ray already running (the steady cost, without start-up). Every run starts from an
empty cache. Figures are printed with their ratio to the local engine of the same round.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from stage_one import BATCH, FRAMES, OUT, full_size_clip  # noqa: E402
from workers import clips_720p  # noqa: E402
from pipeline.extract.runner import ExtractConfig, extract_features  # noqa: E402


def run(files: list[Path], model: Path, **kw) -> float:
    """Seconds for stage one from scratch on `files` (linked into a fresh data folder), cache written."""
    root, cache = OUT / "ray_data", OUT / "ray_cache" / "features.h5"
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(cache.parent, ignore_errors=True)
    for i, f in enumerate(files):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        (root / f"c{i % 2}" / f.name).symlink_to(f)
    cfg = ExtractConfig(root=str(root), cache_path=str(cache), model=str(model), num_frames=FRAMES,
                        batch_size=BATCH, device="cpu", **kw)
    t = time.perf_counter()
    summary = extract_features(cfg, progress=False)
    seconds = time.perf_counter() - t
    assert summary.encoded == len(files) and not summary.skipped, summary
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.splitlines()
    if [line.split(":")[1].strip() for line in links] != ["lo"]:
        sys.exit("run this inside a network namespace with only loopback (see the docstring): Ray would listen "
                 "on this machine's network interfaces")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray

    files, model = clips_720p(args.videos), full_size_clip()
    print(f"{len(files)} videos x {FRAMES} frames, 1280x720 10 s H.264, full ViT-B/32 (random weights), "
          f"batch {BATCH}, {os.cpu_count()} cores")
    run(files[:2], model)  # warm: page cache, imports, the forkserver
    for r in range(args.rounds):
        local = run(files, model)
        started = run(files, model, engine="ray")  # starts and stops its own Ray
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            steady = run(files, model, engine="ray")
        finally:
            ray.shutdown()
        print(f"round {r + 1}: local {local:.1f} s ({len(files) / local:.2f} videos/s) | ray, own start-up "
              f"{started:.1f} s ({started / local:.2f}x) | ray already running {steady:.1f} s "
              f"({steady / local:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
