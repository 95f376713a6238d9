"""The app's Embeddings page on the demo: first view and rerun, this checkout (B) against another commit's (A).

    python bench/embeddings_page.py [--project DIR] [--before COMMIT] [--rounds 3]

The project is the demo (7 classes x 20 clips, tiny random CLIP, 8 frames), built once under bench/out/ (or DIR).
Each measurement is a fresh process under Streamlit's AppTest: the Predict page (the app's default) runs first,
untimed; then the Embeddings page's first view (cold caches: averaging, projection, outliers, decoding the chosen
video's frames in the app's worker) and a rerun are timed. A is `git archive COMMIT pipeline app` (default: the
checkout's main branch), B this checkout; they alternate within each round (the machine drifts between processes).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "embeddings_page"

MEASURE = """
import json, os, sys, time
from streamlit.testing.v1 import AppTest
os.chdir(sys.argv[1])
at = AppTest.from_file(sys.argv[2], default_timeout=600)
at.run()
t = time.perf_counter(); at.switch_page("embeddings_page.py").run(); first = time.perf_counter() - t
assert not at.exception, at.exception
t = time.perf_counter(); at.run(); rerun = time.perf_counter() - t
print(json.dumps({"first": first, "rerun": rerun}))
"""


def build_project(project: Path) -> None:
    """The demo dataset, the tiny CLIP and stage one's cache in `project` (skipped when the cache is there)."""
    from pipeline.data.demo import DemoConfig, make_demo_dataset
    from pipeline.extract.runner import ExtractConfig, extract_features
    from pipeline.paths import CACHE_PATH, DEMO_DIR, PARAMS, TINY_CLIP
    from pipeline.embed.tiny_clip import build_tiny_clip

    if (project / CACHE_PATH).is_file():
        return
    project.mkdir(parents=True, exist_ok=True)
    (project / PARAMS).write_bytes((ROOT / PARAMS).read_bytes())
    model = build_tiny_clip(str(project / TINY_CLIP))
    make_demo_dataset(DemoConfig(out_dir=str(project / DEMO_DIR)), progress=False)
    extract_features(ExtractConfig(root=str(project / DEMO_DIR), cache_path=str(project / CACHE_PATH),
                                   model=str(model), num_frames=8, device="cpu"), progress=False)


def export(commit: str, into: Path) -> Path:
    """pipeline/ and app/ as they were at `commit`, under `into`."""
    data = subprocess.run(["git", "archive", commit, "pipeline", "app"], cwd=ROOT, check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(code_root: Path, project: Path) -> dict:
    """{first, rerun} seconds of one fresh process running the app under code_root (started there: `python -c`
    puts the working folder first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    run = subprocess.run([sys.executable, "-c", MEASURE, str(project), str(code_root / "app" / "streamlit_app.py")],
                         env=env, cwd=code_root, capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=OUT / "demo")
    parser.add_argument("--before", default="main", help="the commit A is (default: main)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    build_project(args.project)
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        before = export(args.before, Path(tmp))
        runs: dict[str, list[dict]] = {"A": [], "B": []}
        for r in range(args.rounds):
            for name, code in (("A", before), ("B", ROOT)) if r % 2 == 0 else (("B", ROOT), ("A", before)):
                started = time.perf_counter()
                runs[name].append(measure(code, args.project))
                print(f"round {r + 1} {name}: {runs[name][-1]} ({time.perf_counter() - started:.0f} s in all)",
                      flush=True)
    for key in ("first", "rerun"):
        a, b = (statistics.median(x[key] for x in runs[n]) for n in ("A", "B"))
        print(f"{key}: A {a:.2f} s, B {b:.2f} s (medians of {args.rounds}); B/A = {b / a:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
