"""Stage one measured side by side: encoder alone, decoding alone, the whole stage, and a seed-style baseline.

    python bench/stage_one.py [--skip-memory] [--rounds 3]
    python bench/stage_one.py --backends-only [--rounds 3]     # section 6 only: the CPU encoder's backends
    python bench/stage_one.py --device cuda [--videos 96]


Encoder: the full ViT-B/32 vision architecture (CLIPConfig() defaults) with random weights: the real model's
speed (its weights cannot be downloaded here). Videos: generated once into bench/out/videos/ with PyAV's libx264
(veryfast): 6 clips of 10 s at 1280x720, 2 of 30 s at 720p, 2 of 10 s at 1920x1080, and one of 5 min at 720p
for the seek comparison, all 25 fps. Every figure below comes from this one run, steps alternating where they
are compared (the machines drift by up to 30% between processes).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
from pipeline.embed.encoder import embed_frames, load_encoder  # noqa: E402
from pipeline.extract.runner import ExtractConfig, extract_features  # noqa: E402
from pipeline.embed.tiny_clip import build_tiny_clip  # noqa: E402
from pipeline.decode.video import read_frames, sample_indices  # noqa: E402

OUT = ROOT / "bench" / "out"
VIDEOS = OUT / "videos"
SETS = [("720p_10s", 6, (1280, 720), 10), ("720p_30s", 2, (1280, 720), 30), ("1080p_10s", 2, (1920, 1080), 10)]
FRAMES, BATCH = 16, 16


def make_clip(path: Path, size: tuple[int, int], seconds: int, seed: int) -> None:
    """Scrolling textured background with a moving disc: enough detail for a realistic H.264 bitrate."""
    import av
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    base = cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(seconds * 25):
            img = np.roll(base, 6 * i, axis=1)
            cv2.circle(img, ((80 + 9 * i) % w, h // 2), h // 8, (255, 255, 255), -1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.rename(path)


def dataset() -> list[Path]:
    files = []
    for name, count, size, seconds in SETS:
        for i in range(count):
            f = VIDEOS / name / f"{name}_{i}.mp4"
            if not f.exists():
                make_clip(f, size, seconds, seed=hash((name, i)) % 2**32)
            files.append(f)
    return files


def full_size_clip() -> Path:
    """A ViT-B/32 CLIP with random weights, saved once like a downloaded one (about 600 MB)."""
    path = OUT / "vit-b-32-random"
    if not (path / "config.json").exists():
        build_tiny_clip(path, full_size=True)
    return path


def grab_retrieve(file: Path, num_frames: int = FRAMES) -> np.ndarray:
    """Plain OpenCV: grab() every frame up to the last sample, retrieve() the sampled ones (the reference decode)."""
    cap = cv2.VideoCapture(str(file))
    wanted = sample_indices(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), num_frames)
    frames = []
    for i in range(int(wanted[-1]) + 1):
        cap.grab()
        if i in wanted:
            frames.append(cap.retrieve()[1])
    cap.release()
    return np.stack(frames)


def seed_style(files: list[Path], encoder) -> None:
    """The naive pipeline: read every frame, keep 16 evenly spaced, CLIPImageProcessor (PIL) per frame, one forward
    per video, nothing overlapped."""
    for file in files:
        cap = cv2.VideoCapture(str(file))
        all_frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            all_frames.append(frame)
        cap.release()
        keep = [cv2.cvtColor(all_frames[i], cv2.COLOR_BGR2RGB) for i in sample_indices(len(all_frames), FRAMES)]
        pixels = torch.cat([encoder.processor(images=[f], return_tensors="pt")["pixel_values"] for f in keep])
        with torch.inference_mode():
            encoder.model(pixel_values=pixels)


def timed(fn, *args):
    t = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t, result


def stage_one(files: list[Path], model: Path, quantize: str = "none", device: str = "cpu",
              backend: str = "torch") -> float:
    """Seconds for stage one from scratch on `files` (linked into a fresh data folder), cache written.

    On CUDA with the defaults (workers, batch size and precision auto), as `dvc repro` runs it there."""
    root = OUT / "stage_one_data"
    shutil.rmtree(root, ignore_errors=True)
    for f in files:
        (root / f.parent.name).mkdir(parents=True, exist_ok=True)
        (root / f.parent.name / f.name).symlink_to(f)
    cache = OUT / "stage_one_cache" / "features.h5"
    shutil.rmtree(cache.parent, ignore_errors=True)
    cfg = ExtractConfig(root=str(root), cache_path=str(cache), model=str(model), num_frames=FRAMES,
                        batch_size=BATCH if device == "cpu" else "auto", device=device, quantize=quantize,
                        backend=backend)
    seconds, summary = timed(extract_features, cfg, False)
    assert summary.encoded == len(files) and not summary.skipped, summary
    return seconds


def encoder_rate(encoder, batch: int, rounds: int = 3) -> float:
    x = torch.randn(batch * rounds, 3, 224, 224)
    embed_frames(x[:batch], encoder, batch)  # warm-up
    t = time.perf_counter()
    embed_frames(x, encoder, batch)
    return batch * rounds / (time.perf_counter() - t)


# The child's own peak: VmHWM starts afresh at exec, unlike ru_maxrss, which a child inherits from its parent.
PEAK_RSS = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"


def memory(model: Path, n: int) -> float:
    """Peak RSS (MiB) of a fresh process running stage one on n small clips (2 s, 320x240)."""
    root = OUT / f"memory_{n}"
    for i in range(n):
        f = root / f"c{i % 4}" / f"v{i:03d}.mp4"
        if not f.exists():
            make_clip(f, (320, 240), 2, seed=i)
    code = ("import json, shutil, sys\n"
            "from pipeline.extract.runner import ExtractConfig, extract_features\n"
            f"shutil.rmtree({str(root / 'cache')!r}, ignore_errors=True)\n"
            f"extract_features(ExtractConfig(root={str(root)!r}, cache_path={str(root / 'cache' / 'f.h5')!r}, "
            f"model={str(model)!r}, device='cpu'), progress=False)\n"
            f"print(json.dumps({PEAK_RSS}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--videos", type=int, default=96, help="clips for --device cuda")
    parser.add_argument("--backends-only", action="store_true", help="only section 6: the CPU backends")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of section 6's encoder-only figures")
    args = parser.parse_args()
    if args.device == "cuda":
        from stage_one_gpu import gpu  # run as a file from bench/: the GPU section, a module of its own

        gpu(args.videos)
        return
    if args.memory_only:
        m10, m100 = memory(full_size_clip(), 10), memory(full_size_clip(), 100)
        print(f"5. peak memory (VmHWM, fresh process): 10 videos {m10:.0f} MiB, 100 videos {m100:.0f} MiB "
              f"({m100 / m10:.2f}x)")
        return
    files, model = dataset(), full_size_clip()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f} "
          "at the start (the machine is shared)")
    from stage_one_backends import backends_section  # run as a file from bench/: section 6, a module of its own

    if args.backends_only:
        print(json.dumps(backends_section(files, model, args.rounds), default=float))
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
        return
    long_clip = VIDEOS / "720p_300s" / "long.mp4"
    if not long_clip.exists():
        make_clip(long_clip, (1280, 720), 300, seed=99)
    fp32 = load_encoder(str(model), "cpu", backend="torch")  # its model runs the old pipeline (auto: ONNX Runtime)
    int8 = load_encoder(str(model), "cpu", quantize="int8", backend="onnxruntime")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OpenCV {cv2.__version__}; "
          f"{len(files)} clips: " + ", ".join(f"{c} x {n}" for n, c, _, _ in SETS))

    # 1. encoder alone, on ready tensors
    rates = {b: encoder_rate(fp32, b) for b in (8, 16, 32)}
    rate_int8 = encoder_rate(int8, BATCH)
    print("\n1. encoder only (images/s, ready tensors): " + ", ".join(f"batch {b}: {r:.1f}" for b, r in rates.items())
          + f"; int8 at batch {BATCH}: {rate_int8:.1f} ({rate_int8 / rates[BATCH]:.2f}x fp32)")

    # 2. decode only: ours against plain grab/retrieve, alternating per video
    ours, plain = {}, {}
    for f in files:
        plain[f] = timed(grab_retrieve, f)[0]
        ours[f] = timed(read_frames, f, FRAMES)[0]
    print("\n2. decode only (s per video, 16 sampled frames)")
    for name, *_ in SETS:
        sel = [f for f in files if f.parent.name == name]
        print(f"   {name:<10} read_frames {statistics.mean(ours[f] for f in sel):.3f}   "
              f"grab/retrieve {statistics.mean(plain[f] for f in sel):.3f}")
    seq_long = timed(read_frames, long_clip, FRAMES, None)[0]
    seek_long = timed(read_frames, long_clip, FRAMES)[0]
    plain_long = timed(grab_retrieve, long_clip)[0]
    print(f"   5 min 720p: read_frames {seek_long:.2f} s (seeks across its 469-frame gaps), in order only "
          f"{seq_long:.2f} s, grab/retrieve {plain_long:.2f} s")

    # 3 and 4: stage one and the seed-style baseline, alternating
    decode_sum = sum(ours.values())
    encode_sum = len(files) * FRAMES / rates[BATCH]
    t_stage = [stage_one(files, model)]
    t_seed = [timed(seed_style, files, fp32)[0]]
    t_stage.append(stage_one(files, model))
    t_seed.append(timed(seed_style, files, fp32)[0])
    t_int8 = stage_one(files, model, "int8", backend="onnxruntime")
    stage, seed = min(t_stage), min(t_seed)
    n = len(files)
    print(f"\n3. stage one end to end ({n} videos, fresh cache): {stage:.2f} s = {n / stage:.2f} videos/s, "
          f"{n * FRAMES / stage:.1f} frames/s (best of {len(t_stage)}: {', '.join(f'{t:.2f}' for t in t_stage)})")
    print(f"   per video {stage / n:.3f} s against decode-only {decode_sum / n:.3f} + encode-only "
          f"{encode_sum / n:.3f} = {(decode_sum + encode_sum) / n:.3f} s: overhead "
          f"{stage / (decode_sum + encode_sum):.3f}x (target <= 1.10)")
    print(f"4. seed-style baseline: {seed:.2f} s (best of {len(t_seed)}); stage one is {seed / stage:.2f}x faster "
          "(target >= 1.25)")
    print(f"   int8 stage one: {t_int8:.2f} s = {seed / t_int8:.2f}x the baseline (target >= 1.7), "
          f"{stage / t_int8:.2f}x fp32 stage one")

    # 5. peak memory against the number of videos
    if not args.skip_memory:
        m10, m100 = memory(model, 10), memory(model, 100)
        print(f"\n5. peak memory (VmHWM, fresh process): 10 videos {m10:.0f} MiB, 100 videos {m100:.0f} MiB "
              f"({m100 / m10:.2f}x)")
    section6 = backends_section(files, model, args.rounds)
    print(json.dumps({"encoder_img_s": rates, "int8_img_s": rate_int8, "stage_s": t_stage, "seed_s": t_seed,
                      "int8_stage_s": t_int8, "backends": section6}, default=float))


if __name__ == "__main__":
    main()
