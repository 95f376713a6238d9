"""Stage one of an older checkout against this one, on the same clips, one process per run, alternating.

    git worktree add /tmp/old 8d993e0      # the code before the decode layer (OpenCV in a thread)
    python bench/old_vs_new.py /tmp/old [--rounds 2]

Uses bench/stage_one.py's clips (6 x 10 s 720p, 2 x 30 s 720p, 2 x 10 s 1080p; run it once first) and its full
ViT-B/32 architecture with random weights (the real model's speed), on the CPU, batch 16, 16 frames. Each run
does a warm-up stage one (imports, page cache, the decode workers' server), then times one on a fresh cache.
Prints seconds per run: the old checkout, this one with 1 worker and with 2.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
CODE = """
import shutil, time
from pathlib import Path
from pipeline.extract.runner import ExtractConfig, extract_features
videos = Path({videos!r})
files = sorted(videos.glob('720p_10s/720p_10s_[0-5].mp4')) + sorted(videos.glob('720p_30s/*.mp4')) \\
    + sorted(videos.glob('1080p_10s/*.mp4'))
root, cache = Path({out!r}) / 'old_vs_new_data', Path({out!r}) / 'old_vs_new_cache' / 'f.h5'
shutil.rmtree(root, ignore_errors=True)
for f in files:
    (root / f.parent.name).mkdir(parents=True, exist_ok=True)
    (root / f.parent.name / f.name).symlink_to(f)
cfg = ExtractConfig(root=str(root), cache_path=str(cache), model={model!r}, num_frames=16, batch_size=16,
                    device='cpu', **({{'workers': {workers}}} if {workers} >= 0 else {{}}))
extract_features(cfg, progress=False)
shutil.rmtree(cache.parent)
t = time.perf_counter()
summary = extract_features(cfg, progress=False)
assert summary.encoded == len(files) == 10, summary
print(round(time.perf_counter() - t, 2))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", help="a checkout of the older code")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    runs = {}
    for _ in range(args.rounds):
        for name, repo, workers in (("old", args.old, -1), ("1 worker", str(ROOT), 1), ("2 workers", str(ROOT), 2)):
            code = CODE.format(repo=repo, videos=str(OUT / "videos"), out=str(OUT), workers=workers,
                               model=str(OUT / "vit-b-32-random"))
            # the checkout's own packages: python -c imports from its folder (cwd) first, PYTHONPATH says so too
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, check=True,
                                 env={**os.environ, "PYTHONPATH": repo})
            runs.setdefault(name, []).append(float(out.stdout.split()[-1]))
            print(f"{name:<10} {runs[name][-1]:6.2f} s", flush=True)
    print("; ".join(f"{k}: best {min(v):.2f} s, mean {sum(v) / len(v):.2f} s" for k, v in runs.items()))


if __name__ == "__main__":
    main()
