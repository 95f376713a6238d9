"""Memory and time against the number of videos: stage one adding one video, stage two, the inspector.

    python bench/scale.py [--sizes 10000 60000 240000] [--keep] [--steps extract ...]

For each size N: a synthetic cache of N videos x 16 frames x 512 (400 classes, each video its class's centre plus
noise; one video in 1,000 a near-copy of the one before, to be found by --outliers) written by the writer stage one
uses (pipeline.extract.cache.write_cache_blocks), with N tiny distinct files under data/ whose (path, size, mtime) match
the cache's rows, so stage one reuses them without decoding; then one real video (320x240, 4 s, H.264) is added.
Encoder: the full ViT-B/32 architecture with random weights (its weights cannot be downloaded here). Each measured
step runs in its own process; its peak RSS is that process's ru_maxrss, from os.wait4 (it includes the step's own
children: stage one's decode workers; building runs in a process of its own too, as a child's ru_maxrss starts
from its parent's). Outputs go to bench/out/scale/ (a project folder per size); the caches are
deleted at the end unless --keep.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "bench" / "out" / "scale"
FRAMES, DIM, CLASSES = 16, 512, 400
DUPLICATE_EVERY = 1000  # video i (i % 1000 == 999) is a near-copy of video i - 1
# stage two's settings for the benchmark: training long enough to measure a steady state, not to converge
STAGE_TWO = {"train": {"epochs": 2}, "baseline": {"max_iter": 20}}
TEMPORAL = {"head": "conv", "epochs": 1}  # the temporal head's run: mini-batches read from the file
ZEROSHOT_SIZES = (10_000, 240_000)  # its text tower takes minutes whatever the size: measured at the ends only
TEMPORAL_SIZES = (10_000,)  # compute-bound, 0.1-0.3 s a mini-batch here: 5,250 of them an epoch at 240,000


def build(n: int, project: Path, model: Path) -> int:
    """The synthetic cache at project/cache/features.h5 and its N tiny files under project/data; returns the number
    of near-copies planted."""
    import numpy as np
    import yaml

    from pipeline.extract.cache import BLOCK_ROWS, Cache, empty_cache, write_cache_blocks
    from pipeline.embed.encoder import load_encoder
    from pipeline.decode.video import SAMPLING

    data = project / "data"
    classes = [f"class_{c:03d}" for c in range(CLASSES)]
    labels = np.arange(n) % CLASSES
    paths, hashes, sizes, mtimes = [], [], [], []
    for i, label in enumerate(labels):  # one file per video: its bytes, size and mtime are the cache row's
        rel = f"{classes[label]}/v{i:06d}.mp4"
        content = f"synthetic video {i}\n".encode()
        file = data / rel
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content)
        st = file.stat()
        paths.append(rel)
        hashes.append(hashlib.sha256(content).hexdigest())
        sizes.append(st.st_size)
        mtimes.append(st.st_mtime_ns)
    order = np.argsort(paths)  # rows in path order, as stage one writes them
    encoder = load_encoder(str(model), "cpu", "fast", "none", "auto")
    attrs = {**encoder.describe(), "num_frames": FRAMES, "sampling": SAMPLING, "batch_size": 16,
             "data_root": str(data), "dtype": "float32", "versions": "{}"}
    template = empty_cache(FRAMES, DIM, attrs, classes)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((CLASSES, DIM), dtype=np.float32)
    planted = []

    def blocks():
        for start in range(0, n, BLOCK_ROWS):
            rows = order[start:start + BLOCK_ROWS]
            k = len(rows)
            video = centres[labels[rows]] + 0.8 * rng.standard_normal((k, DIM), dtype=np.float32)
            emb = video[:, None, :] + 0.5 * rng.standard_normal((k, FRAMES, DIM), dtype=np.float32)
            copies = np.flatnonzero(rows % DUPLICATE_EVERY == DUPLICATE_EVERY - 1)
            copies = copies[copies > 0]  # a copy of the row before it in the cache (same class: path order)
            planted.append(len(copies))
            emb[copies] = emb[copies - 1] + 0.01 * rng.standard_normal((len(copies), FRAMES, DIM), dtype=np.float32)
            yield Cache(
                embeddings=emb, frame_indices=np.tile(np.arange(FRAMES) * 15 + 7, (k, 1)),
                timestamps=np.tile((np.arange(FRAMES) * 15 + 7) / 25.0, (k, 1)), labels=labels[rows],
                paths=np.array([paths[r] for r in rows], object), content_hash=np.array([hashes[r] for r in rows],
                                                                                       object),
                fps=np.full(k, 25.0), frame_count=np.full(k, 240), duration=np.full(k, 9.6),
                repeated=np.zeros(k, bool), decode_errors=np.zeros(k, np.int64),
                file_size=np.array([sizes[r] for r in rows], np.int64),
                mtime_ns=np.array([mtimes[r] for r in rows], np.int64), class_names=classes, attrs=attrs)

    write_cache_blocks(project / "cache" / "features.h5", template, n, blocks())
    params = yaml.safe_load(open(ROOT / "params.yaml"))
    for section, values in STAGE_TWO.items():
        params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    return sum(planted)


def real_video() -> Path:
    """One real clip, made once: 320x240, 4 s at 25 fps, H.264."""
    from bench.stage_one import make_clip

    path = OUT / "real.mp4"
    if not path.exists():
        make_clip(path, (320, 240), 4, seed=1)
    return path


def measure(cmd: list[str], cwd: Path, log: Path) -> dict:
    """Run cmd in its own process: wall seconds, peak RSS (GiB, the process and its children) and exit status."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started, load = time.perf_counter(), os.getloadavg()[0]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 1), "peak_gib": round(usage.ru_maxrss / 2**20, 2), "ok": proc.returncode == 0,
            "load": round(load, 1)}


def extract_cmd(project: Path, model: Path) -> list[str]:
    code = ("import sys; from pipeline.extract.runner import ExtractConfig, extract_features; "
            f"print(extract_features(ExtractConfig(root='data', model={str(model)!r}, device='cpu'), progress=False))")
    return [sys.executable, "-c", code]


def prepare(n: int) -> None:
    """In a process of its own: the model (once), the project folder for n videos, the real video; prints the
    number of near-copies planted."""
    from bench.stage_one import full_size_clip

    project = OUT / f"n{n}"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    planted = build(n, project, full_size_clip())
    shutil.copy(real_video(), project / "data" / "class_000" / "zz_real.mp4")
    print(planted)


# The app's Embeddings page in Streamlit's AppTest, in the project folder: map, one video, centroids, odd videos.
APP_PAGE = f"""
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(ROOT / "app" / "streamlit_app.py")!r}, default_timeout=1800)
at.run()
at.switch_page("embeddings_page.py").run()
assert not at.exception, at.exception
print([m.value for m in at.metric][:3], len(at.dataframe), "tables")
"""


def run_size(n: int, only: list[str] | None = None) -> dict:
    project, py = OUT / f"n{n}", sys.executable
    started = time.perf_counter()
    built = subprocess.run([py, __file__, "--prepare", str(n)], check=True, capture_output=True, text=True)
    planted = int(built.stdout.split()[-1])
    model = OUT.parent / "vit-b-32-random"  # bench/stage_one.full_size_clip's folder
    result = {"videos": n, "build_s": round(time.perf_counter() - started, 1),
              "cache_gib": round((project / "cache" / "features.h5").stat().st_size / 2**30, 2),
              "load_before": os.getloadavg()[0]}
    logs = project / "logs"
    logs.mkdir()
    inspect = [py, "-m", "pipeline.tools.inspector", "cache/features.h5"]
    steps = [  # (name, log file, command)
        ("stage one (+1 video)", "extract", extract_cmd(project, model)),
        ("split", "split", [py, "-m", "stages.split"]),
        ("train (linear, mean)", "train", [py, "-m", "stages.train"]),
        ("baseline (logreg)", "baseline", [py, "-m", "stages.baseline"]),
        ("zeroshot", "zeroshot", [py, "-m", "stages.zeroshot"]),
        ("train (linear, conv, 1 epoch)", "conv", [py, "-m", "stages.train"]),
        ("inspect summary", "summary", inspect),
        ("inspect --neighbors", "neighbors", inspect + ["--neighbors", "class_000/v000000.mp4", "-k", "5"]),
        ("inspect --video", "video", inspect + ["--video", "class_000/v000000.mp4"]),
        ("inspect --outliers", "outliers", inspect + ["--outliers", "--json"]),
        ("inspect --plot (PCA)", "plot", inspect + ["--plot", "map.png"]),
        ("app: Embeddings page", "app", [py, "-c", APP_PAGE]),
    ]
    for name, log, cmd in steps:
        if log == "zeroshot" and n not in ZEROSHOT_SIZES or log == "conv" and n not in TEMPORAL_SIZES:
            continue
        if only and log not in only:
            continue
        if log == "conv":
            import yaml
            params = yaml.safe_load((project / "params.yaml").read_text())
            params["train"].update(TEMPORAL)
            (project / "params.yaml").write_text(yaml.safe_dump(params))
        result[name] = measure(cmd, project, logs / f"{log}.log")
        print(n, name, result[name], flush=True)
    if (logs / "extract.log").exists():
        result["stage one summary"] = (logs / "extract.log").read_text().strip().splitlines()[-1:]
    if (logs / "outliers.log").exists():
        outliers = json.loads((logs / "outliers.log").read_text())
        result["near-duplicates found"] = outliers["near_duplicates_found"]["pairs"]
        result["near-duplicates planted"] = planted
        result["mislabelled"] = len(outliers["mislabelled"])
    result["load_after"] = os.getloadavg()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 60_000, 240_000])
    parser.add_argument("--keep", action="store_true", help="keep the synthetic caches and files")
    parser.add_argument("--steps", nargs="+", help="only these steps, by log name (extract, split, train, baseline, "
                        "zeroshot, conv, summary, neighbors, video, outliers, plot, app)")
    parser.add_argument("--prepare", type=int, help=argparse.SUPPRESS)  # the build step, run as a child
    args = parser.parse_args()
    if args.prepare:
        return prepare(args.prepare)
    saved = OUT / "results.json"  # one entry per size, the latest run of each
    results = json.loads(saved.read_text()) if saved.exists() else []
    for n in args.sizes:
        results = [r for r in results if r["videos"] != n] + [run_size(n, args.steps)]
        saved.write_text(json.dumps(sorted(results, key=lambda r: r["videos"]), indent=2))
        if not args.keep:
            shutil.rmtree(OUT / f"n{n}" / "cache", ignore_errors=True)
            shutil.rmtree(OUT / f"n{n}" / "data", ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
