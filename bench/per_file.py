"""Stage one's cost per tiny clip (issue 28): where the time goes, and this code against an older checkout.

    python bench/per_file.py [--clips 2000] [--rounds 2] [--baseline DIR] [--links 5000]
    python bench/per_file.py --marginal [--rounds 2]
    python bench/per_file.py --encoder [--rounds 2]

Clips: `--clips` H.264 clips of 4 frames at 32x32 (a few KB each, written once under bench/out/per_file/), in four class
folders; the tiny random CLIP, 4 frames per clip, batch_size auto, `workers: 2` (auto on 2 cores). Each variant is a
fresh process (extract_features on a new cache, then a re-run that reuses everything), the variants alternated round by
round, each importing stages.extract first as `python -m stages.extract` does (its OpenMP setting; the workers' server
then starts with the first pool, not first thing as the stage starts it). Variants: this checkout as it is and, with
--baseline DIR (a checkout of older code, for example `git worktree add DIR <commit>`), that code. Then one profiled run
of this checkout splits the time by role (discovery, hashing, the engine's start, waiting on the workers, which decode
and, on the CPU, embed; the encoder in this process, part files and the cache's join, the summary), and `--links` hard
links of one clip count the decodes (one expected). Every figure is printed with the machine's load average: the machine
is shared, so compare the ratios of one run.

--marginal: stage one's marginal throughput on decode-heavy clips (10 s of 1280x720 H.264 from bench/stage_one.py's
make_clip, 16 frames each, the tiny CLIP: decoding is nearly all the work), as issue 28 measured it: a fresh
process on 12 and on 24 clips, `workers: 0` and `workers: 2`, alternated; the marginal time of the 12 more clips is
the difference of the medians, and the ratio is workers 0's over workers 2's.

--encoder: one forward pass of the tiny CLIP on 16 frames (mean of 20, after one), torch on 2 threads and on 1,
OpenMP's idle threads spinning (the default) or sleeping (OMP_WAIT_POLICY=PASSIVE), a fresh process each,
alternated: what spinning threads cost when other processes want the cores.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "per_file"
MODEL = OUT / "tiny-clip"
SMALL = 4  # clips in the run that measures the fixed costs

ENCODER = """
import time
import numpy as np
import torch
from pipeline.embed.encoder import embed_frames, load_encoder
torch.set_num_threads({threads})  # before the load, as the product does (an onnxruntime session takes it there)
encoder = load_encoder({model!r}, device="cpu", backend="torch")  # torch's OpenMP threads (auto: ONNX Runtime)
frames = np.random.default_rng(0).integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
embed_frames(frames, encoder, 16)
t = time.perf_counter()
for _ in range(20):
    embed_frames(frames, encoder, 16)
print((time.perf_counter() - t) / 20)
"""

RUN = """
import time
import stages.extract  # as `python -m stages.extract` starts (its OpenMP setting, where the code has one)
from pipeline.extract.runner import ExtractConfig, extract_features
if __name__ == "__main__":
    cfg = ExtractConfig(root={root!r}, cache_path={cache!r}, model={model!r}, num_frames={num_frames},
                        batch_size="auto", device="cpu", workers={workers})
    t = time.perf_counter()
    s = extract_features(cfg, progress=False)
    times = [time.perf_counter() - t]
    assert s.encoded == {n} and not s.skipped, str(s)
    if {rerun}:  # again, with everything reused
        t = time.perf_counter()
        s = extract_features(cfg, progress=False)
        assert s.reused == {n}, str(s)
        times.append(time.perf_counter() - t)
    print(*times)
"""


def tiny_clips(n: int) -> Path:
    """n clips of 4 frames, 32x32, H.264 (ultrafast), under OUT/clips/c<k>/; written once."""
    import av
    root = OUT / f"clips{n}"
    if (root / "done").exists():
        return root
    for i in range(n):
        path = root / f"c{i % 4}" / f"v{i:05d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(i)
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
            stream.width = stream.height = 32
            stream.pix_fmt = "yuv420p"
            for _ in range(4):
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
    (root / "done").touch()
    return root


def model() -> Path:
    from pipeline.embed.tiny_clip import build_tiny_clip
    if not (MODEL / "config.json").exists():
        build_tiny_clip(MODEL)
    return MODEL


def one_run(code_dir: Path, root: Path, n: int) -> tuple[float, float]:
    """(seconds for a fresh cache, seconds for the re-run reusing everything) in a fresh process."""
    cache = OUT / "cache" / "features.h5"
    shutil.rmtree(cache.parent, ignore_errors=True)
    code = RUN.format(root=str(root), cache=str(cache), model=str(model()), n=n, num_frames=4, workers=2, rerun=True)
    out = subprocess.run([sys.executable, "-c", code], cwd=code_dir, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(code_dir)})
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    first, again = (float(x) for x in out.stdout.split()[-2:])
    return first, again


def profile(root: Path, n: int) -> None:
    """One run of this checkout under cProfile: seconds per role, and ms per clip."""
    import cProfile
    import pstats

    from pipeline.extract.runner import ExtractConfig, extract_features

    cache = OUT / "cache" / "features.h5"
    shutil.rmtree(cache.parent, ignore_errors=True)
    cfg = ExtractConfig(root=str(root), cache_path=str(cache), model=str(model()), num_frames=4, device="cpu",
                        workers=2)
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    extract_features(cfg, progress=False)
    prof.disable()
    total = time.perf_counter() - t
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    roles = {"discovery": ("discover.py", "discover_videos"), "hashing": ("hashing.py", "hash_videos"),
             "engine start (encoder load, pool start)": ("runner.py", "open_engine"),
             "waiting on the workers (decoding; embedding on the CPU)": ("workers.py", "_result"),
             "encoder in this process": ("encoder.py", "embed_frames"), "part files": ("writer.py", "flush"),
             "the cache's join": ("writer.py", "assemble_cache"), "summary list": ("writer.py", "write_skipped_list")}
    print(f"\nwhere the time goes (one run of this checkout, {n} clips, {total:.1f} s, load {os.getloadavg()[0]:.1f}):")
    for role, (file, name) in roles.items():
        ct = sum(v[3] for k, v in stats.items() if k[0].endswith(file) and k[2] == name)
        print(f"  {role:45s} {ct:6.2f} s  {1000 * ct / n:6.2f} ms/clip")


def links(n: int) -> None:
    """n hard links of one clip: decodes counted (the decode hook), not timed."""
    from pipeline.extract.runner import ExtractConfig, extract_features
    from pipeline.decode.workers import load_video

    root = OUT / "links"
    shutil.rmtree(root, ignore_errors=True)
    first = next(tiny_clips(4).rglob("*.mp4"))
    (root / "a").mkdir(parents=True)
    for i in range(n):
        os.link(first, root / "a" / f"l{i:05d}.mp4")
    calls = []

    def counting(file, cfg, hash_bytes=True):
        calls.append(file)
        return load_video(file, cfg, hash_bytes)

    cache = OUT / "links_cache" / "features.h5"
    shutil.rmtree(cache.parent, ignore_errors=True)
    t = time.perf_counter()
    s = extract_features(ExtractConfig(root=str(root), cache_path=str(cache), model=str(model()), num_frames=4,
                                       batch_size=16, device="cpu", workers=0), progress=False, decode=counting)
    print(f"\n{n} hard links of one clip: {len(calls)} decoded, {s.encoded} encoded, {s.reused} reused, "
          f"{time.perf_counter() - t:.1f} s (workers 0, load {os.getloadavg()[0]:.1f})")


def marginal(rounds: int) -> None:
    """Stage one on 12 and 24 decode-heavy clips, workers 0 and 2 (and 2 with a one-thread encoder), alternated."""
    from bound import clip_files, linked, python  # run as a file from bench/: bench/bound.py's clips

    roots = linked(clip_files(), OUT)
    variants = {"workers 0": 0, "workers 2": 2}
    times = {(v, n): [] for v in variants for n in roots}
    print(f"stage one on 12 and 24 clips of 10 s 1280x720, tiny CLIP, 16 frames; {os.cpu_count()} cores, shared")
    for r in range(rounds):
        for n in roots:
            for name, workers in variants.items():
                cache = OUT / "cache" / "features.h5"
                shutil.rmtree(cache.parent, ignore_errors=True)
                code = RUN.format(root=str(roots[n]), cache=str(cache), model=str(model()), n=n, num_frames=16,
                                  workers=workers, rerun=False)
                load = os.getloadavg()[0]
                times[(name, n)].append(float(python(code).split()[-1]))
                print(f"  round {r + 1} {n} clips {name:32s} {times[(name, n)][-1]:6.1f} s (load {load:.1f})",
                      flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    extra = {v: med[(v, 24)] - med[(v, 12)] for v in variants}
    print("\nmarginal seconds for 12 more clips (difference of medians):")
    for v in variants:
        print(f"  {v:32s} {extra[v]:6.1f} s  throughput {extra['workers 0'] / extra[v]:.2f}x workers 0's")


def encoder_passes(rounds: int) -> None:
    """ms per 16-frame pass of the tiny CLIP: 2 or 1 threads, OpenMP threads spinning or sleeping, alternated."""
    variants = [(policy, threads) for threads in (2, 1) for policy in ("default", "PASSIVE")]
    times = {v: [] for v in variants}
    for r in range(rounds):
        for policy, threads in variants:
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if policy == "PASSIVE":
                env["OMP_WAIT_POLICY"] = "PASSIVE"
            load = os.getloadavg()[0]
            out = subprocess.run([sys.executable, "-c", ENCODER.format(model=str(model()), threads=threads)],
                                 cwd=ROOT, capture_output=True, text=True, check=True,
                                 env={**env, "PYTHONPATH": str(ROOT)})
            times[(policy, threads)].append(1000 * float(out.stdout.split()[-1]))
            print(f"  round {r + 1} OpenMP wait {policy:8s} {threads} threads {times[(policy, threads)][-1]:7.1f} "
                  f"ms/pass (load {load:.1f})", flush=True)
    for threads in (2, 1):
        spin, sleep = (statistics.median(times[(p, threads)]) for p in ("default", "PASSIVE"))
        print(f"  {threads} threads: spinning {spin:.1f} ms, sleeping {sleep:.1f} ms: {spin / sleep:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", type=Path, help="a checkout of older code to compare with")
    parser.add_argument("--links", type=int, default=5000)
    parser.add_argument("--marginal", action="store_true", help="workers 0 against 2 on decode-heavy clips")
    parser.add_argument("--encoder", action="store_true", help="the encoder's pass, OpenMP spinning or not")
    args = parser.parse_args()
    if args.encoder:
        encoder_passes(args.rounds)
        return
    if args.marginal:
        marginal(args.rounds)
        return
    root, small = tiny_clips(args.clips), tiny_clips(SMALL)
    variants = {"this checkout": ROOT}
    if args.baseline:
        variants["baseline " + str(args.baseline)] = args.baseline.resolve()
    sizes = (SMALL, args.clips)
    times: dict[tuple[str, int], list[tuple[float, float]]] = {(k, n): [] for k in variants for n in sizes}
    print(f"{args.clips} and {SMALL} tiny clips (4 frames, 32x32), tiny CLIP, workers 2, batch_size auto; machine: "
          f"{os.cpu_count()} cores, shared")
    for r in range(args.rounds):
        for name, code_dir in variants.items():
            for n, clips in ((SMALL, small), (args.clips, root)):
                load = os.getloadavg()[0]
                times[(name, n)].append(one_run(code_dir, clips, n))
                first, again = times[(name, n)][-1]
                print(f"  round {r + 1} {name:40s} {n:5d} clips {first:6.1f} s ({1000 * first / n:6.1f} ms/clip), "
                      f"re-run {again:5.1f} s (load {load:.1f})", flush=True)
    med = {k: statistics.median(f for f, _ in v) for k, v in times.items()}
    per_clip = {k: 1000 * (med[(k, args.clips)] - med[(k, SMALL)]) / (args.clips - SMALL) for k in variants}
    ref = next((k for k in variants if k.startswith("baseline")), None)
    print(f"\nmedians: per clip (the {args.clips - SMALL} clips more: fixed costs, such as loading the encoder and "
          f"starting the workers, taken out), fixed cost ({SMALL} clips), ms per clip overall ({args.clips} clips), "
          "re-run reusing everything:")
    for k in variants:
        overall = med[(ref, args.clips)] / med[(k, args.clips)] if ref else 0.0
        ratio = (f"; {per_clip[ref] / per_clip[k]:.2f}x fewer ms per clip, {overall:.2f}x overall, than the "
                 "baseline") if ref and k != ref else ""
        print(f"  {k:40s} {per_clip[k]:5.2f} ms/clip; fixed {med[(k, SMALL)]:4.1f} s; overall "
              f"{1000 * med[(k, args.clips)] / args.clips:5.2f} ms/clip; re-run "
              f"{statistics.median(a for _, a in times[(k, args.clips)]):4.1f} s{ratio}")
    profile(root, args.clips)
    links(args.links)


if __name__ == "__main__":
    main()
