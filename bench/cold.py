"""Why the first `dvc repro extract` of a new project costs about twice the third (issue 39, item 2).

    python bench/cold.py [--runs 3] [--pairs 2] [--backend torch]

A clean clone of this checkout's HEAD (its commits, not uncommitted changes; as a user gets it: no __pycache__, no DVC
state), the 12 clips of bench/bound.py (10 s at 1280x720) copied into it as data.root, the full ViT-B/32 architecture
with random weights, 16 frames, the other settings the defaults; a new ONNX export folder (CLIP_HAR_ONNX_DIR), as on a
machine that never ran stage one. Then `dvc repro extract` `--runs` times, the cache removed before each (so every run
encodes all 12 clips); then `--pairs` pairs of runs with the page cache dropped first (`/proc/sys/vm/drop_caches`, root
only: skipped otherwise) and not, alternated. Printed per run: the whole command's wall time, the stage's own time (the
summary's "in X s": extract_features, from the settings read to the cache written; Python's start and the imports taken
out), and whether the run made the ONNX export (the rest of a first run's extra, such as reading from disk, shows
against the runs with the page cache dropped). --backend: extract.backend (default auto: ONNX Runtime on the CPU, whose
export the first run makes; torch makes none, as the code the issue measured).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from bound import FRAMES, MORE, clip_files  # run as a file from bench/: bench/bound.py's clips
from stage_one import full_size_clip  # and its ViT-B/32 with random weights

from pipeline.threads import cores

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "cold"
SUMMARY = re.compile(r"(\d+) encoded, \d+ reused, \d+ skipped.* in ([\d.]+) s")


def project(backend: str) -> tuple[Path, dict]:
    """A fresh clone with the clips and the model (copied, not linked), and the environment to run it in."""

    shutil.rmtree(OUT, ignore_errors=True)
    repo = OUT / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    for f in clip_files()[:MORE]:
        (repo / "videos" / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, repo / "videos" / f.parent.name / f.name)
    shutil.copytree(full_size_clip(), OUT / "model")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["root"], params["encoder"]["model"] = "videos", str(OUT / "model")
    params["extract"]["num_frames"], params["extract"]["backend"] = FRAMES, backend
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "CLIP_HAR_ONNX_DIR": str(OUT / "onnx"), "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # dvc runs `python` from this venv
    return repo, env


def drop_caches() -> bool:
    """Empty the page cache (root only); whether it was."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def run(repo: Path, env: dict, label: str) -> None:
    """One `dvc repro extract` on a removed cache: its wall time and the stage's own, printed."""
    shutil.rmtree(repo / "cache", ignore_errors=True)
    exports = len(list((OUT / "onnx").rglob("*.onnx")))
    load = os.getloadavg()[0]
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "dvc", "repro", "extract"], check=False, cwd=repo, env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - started
    found = SUMMARY.search(out.stdout)
    if out.returncode or not found or int(found.group(1)) != MORE:
        raise SystemExit(f"dvc repro failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    made = len(list((OUT / "onnx").rglob("*.onnx"))) - exports
    print(f"  {label:34s} dvc repro {wall:6.2f} s, the stage's own {float(found.group(2)):6.2f} s"
          f"{', the ONNX export made' if made else ''} (load {load:.1f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime"))
    args = parser.parse_args()
    repo, env = project(args.backend)
    print(f"a clean clone, {MORE} clips of 10 s 1280x720, full ViT-B/32 (random weights), {FRAMES} frames, backend "
          f"{args.backend}; {cores()} cores")
    for i in range(args.runs):
        run(repo, env, f"run {i + 1} of the new project")
    for i in range(args.pairs):
        if drop_caches():
            run(repo, env, f"pair {i + 1}: page cache dropped")
        else:
            print("  the page cache cannot be dropped here (not root): no cold pairs")
            return
        run(repo, env, f"pair {i + 1}: page cache warm")


if __name__ == "__main__":
    main()
