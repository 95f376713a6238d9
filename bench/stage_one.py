"""Stage one measured side by side: encoder alone, decoding alone, the whole stage, and a seed-style baseline.

    python bench/stage_one.py [--skip-memory]
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
sys.path.insert(0, str(ROOT))
from pipeline.encoder import build_random_clip, embed_frames, load_encoder, preprocess_frames  # noqa: E402
from pipeline.extract import ExtractConfig, extract_features  # noqa: E402
from pipeline.video import read_frames, sample_indices  # noqa: E402

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
        build_random_clip(path, full_size=True)
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


def stage_one(files: list[Path], model: Path, quantize: str = "none", device: str = "cpu") -> float:
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
                        batch_size=BATCH if device == "cpu" else "auto", device=device, quantize=quantize)
    seconds, summary = timed(extract_features, cfg, False)
    assert summary.encoded == len(files) and not summary.skipped, summary
    return seconds


def encoder_rate(encoder, batch: int, rounds: int = 3) -> float:
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        encoder.model(pixel_values=x)  # warm-up
        t = time.perf_counter()
        for _ in range(rounds):
            encoder.model(pixel_values=x)
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
    code = (f"import json, shutil, sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from pipeline.extract import ExtractConfig, extract_features\n"
            f"shutil.rmtree({str(root / 'cache')!r}, ignore_errors=True)\n"
            f"extract_features(ExtractConfig(root={str(root)!r}, cache_path={str(root / 'cache' / 'f.h5')!r}, "
            f"model={str(model)!r}, device='cpu'), progress=False)\n"
            f"print(json.dumps({PEAK_RSS}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def _make_one(args) -> None:
    make_clip(*args)


def gpu_dataset(n: int) -> list[Path]:
    """n 10 s 1280x720 clips (generated in parallel on every core the first time)."""
    from multiprocessing import Pool
    files = [VIDEOS / "gpu_720p_10s" / f"c{i % 8}" / f"v{i:03d}.mp4" for i in range(n)]
    todo = [(f, (1280, 720), 10, 1000 + i) for i, f in enumerate(files) if not f.exists()]
    if todo:
        with Pool() as pool:
            pool.map(_make_one, todo)
    return files


def gpu(n_videos: int) -> None:
    """Stage one on a CUDA machine: encoder-only at each precision and batch size, decode-only with the workers,
    stage one end to end, and its ratio to min(encoder bound, decode bound)."""
    from pipeline.encoder import AUTO_PRECISION, PRECISIONS
    from pipeline.video import FrameSpec
    from pipeline.workers import DecodePool, PoolConfig, ReadConfig, auto_workers

    assert torch.cuda.is_available(), "--device cuda needs a CUDA GPU"
    files, model = gpu_dataset(n_videos), full_size_clip()
    cores = auto_workers()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {cores} cores; {len(files)} clips of 10 s "
          "1280x720 H.264; full ViT-B/32 architecture, random weights (the real model's speed)")

    # 1. encoder only: uint8 crops in host memory -> embeddings on the host (pinned copies, normalised on the GPU)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (2048, 224, 224, 3), dtype=np.uint8)
    rates: dict[str, dict[int, float]] = {}
    for precision in PRECISIONS:
        enc = load_encoder(str(model), "cuda", precision=precision)
        rates[precision] = {}
        for batch in (64, 128, 256, 512):
            embed_frames(crops[:batch * 2], enc, batch)  # warm-up (and cuDNN / cuBLAS choices)
            torch.cuda.synchronize()
            t = time.perf_counter()
            embed_frames(crops, enc, batch)
            rates[precision][batch] = len(crops) / (time.perf_counter() - t)
        print(f"1. encoder only {precision}: " + ", ".join(f"batch {b}: {r:.0f}" for b, r in rates[precision].items())
              + " images/s")
        del enc
    # precision against fp32, on real frames: raw cosine, and cosine after removing the mean embedding (with random
    # weights every image maps near one direction, so raw cosine hides the error)
    frames = np.concatenate([read_frames(f, FRAMES, spec=FrameSpec(224, 224, 224)).frames for f in files[:16]])
    out = {p: embed_frames(frames, load_encoder(str(model), "cuda", precision=p), 256) for p in PRECISIONS}
    cpu = embed_frames(frames, load_encoder(str(model), "cpu"), 16)

    def cosines(a, b):
        def cos(x, y):
            return np.sum(x * y, 1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
        mean = out["fp32"].mean(0)
        return cos(a, b).min(), cos(a - mean, b - mean).min()

    for p in ("fp16", "bf16"):
        raw, centred = cosines(out[p], out["fp32"])
        print(f"   {p} against CUDA fp32 ({len(frames)} frames): min cosine {raw:.6f}, centred {centred:.6f}")
    raw, centred = cosines(out["fp32"], cpu)
    print(f"   CUDA fp32 against CPU fp32: min cosine {raw:.6f}, centred {centred:.6f}")
    auto = AUTO_PRECISION["cuda"]
    enc_rate = max(rates[auto].values())
    print(f"   default on CUDA: {auto}, best batch {max(rates[auto], key=rates[auto].get)}")

    # 2. decode only, through the workers (started and warmed first: the start-up is measured on its own)
    t = time.perf_counter()
    with DecodePool(PoolConfig(workers=1)) as pool:
        list(pool.map([str(files[0])], ReadConfig(FRAMES, FrameSpec(224, 224, 224))))
    print(f"2. decode workers' first start in this process (the forkserver imports torch once): "
          f"{time.perf_counter() - t:.2f} s to the first video")
    decode_rate = {}
    for workers in sorted({cores // 2, cores - 1, cores}):
        with DecodePool(PoolConfig(workers=workers)) as pool:
            cfg = ReadConfig(FRAMES, FrameSpec(224, 224, 224))
            list(pool.map([str(f) for f in files[:2 * workers]], cfg))  # warm-up: every worker started
            t = time.perf_counter()
            results = list(pool.map([str(f) for f in files], cfg))
            decode_rate[workers] = len(files) / (time.perf_counter() - t)
            assert all(not isinstance(r, str) for r in results), [r for r in results if isinstance(r, str)]
        print(f"   decode only, {workers} workers: {decode_rate[workers]:.1f} videos/s")

    # 3. stage one end to end (defaults: workers auto, batch auto, precision auto), fresh cache; a third of the
    # videos and all of them, alternating: the difference is the steady rate, without the fixed costs (loading
    # the encoder, starting the workers, writing the cache)
    third = files[: len(files) // 3]
    small, full = [], []
    for _ in range(2):
        small.append(stage_one(third, model, device="cuda"))
        full.append(stage_one(files, model, device="cuda"))
    stage = len(files) / min(full)
    steady = (len(files) - len(third)) / (min(full) - min(small))
    bound = min(enc_rate / FRAMES, max(decode_rate.values()))
    print(f"3. stage one end to end: {len(files)} videos in {', '.join(f'{t:.2f}' for t in full)} s "
          f"({stage:.1f} videos/s, {stage * FRAMES:.0f} frames/s); {len(third)} videos in "
          f"{', '.join(f'{t:.2f}' for t in small)} s; steady rate {steady:.1f} videos/s")
    print(f"   bound: min(encoder {enc_rate / FRAMES:.0f} videos/s, decode {max(decode_rate.values()):.1f} videos/s) "
          f"= {bound:.1f} videos/s; stage one's steady rate is {steady / bound:.2f} of it (target >= 0.8), "
          f"end to end with its fixed costs {stage / bound:.2f}")
    # 4. GPU decoding (NVDEC through PyAV's h264_cuvid), one file after another, against the software decoder
    nvdec = {}
    for name in ("h264", "h264_cuvid", "h264", "h264_cuvid"):
        try:
            frames, seconds = decode_all(files[:8], name)
            nvdec.setdefault(name, []).append(frames / seconds)
        except Exception as e:  # no NVDEC in this build or on this machine
            print(f"4. {name}: {type(e).__name__}: {e}")
            break
    print("4. decoding every frame of 8 clips, one process: " + "; ".join(
        f"{k} {', '.join(f'{r:.0f}' for r in v)} frames/s" for k, v in nvdec.items()))
    print(json.dumps({"encoder_img_s": rates, "decode_videos_s": decode_rate, "stage_s": full, "third_s": small,
                      "decode_all_frames_s": nvdec}, default=float))


def decode_all(files: list[Path], codec: str) -> tuple[int, float]:
    """(frames, seconds) decoding every frame of `files` with the named FFmpeg decoder (default threading)."""
    import av
    t, n = time.perf_counter(), 0
    for f in files:
        with av.open(str(f)) as container:
            stream = container.streams.video[0]
            ctx = av.codec.CodecContext.create(codec, "r")
            ctx.extradata = stream.codec_context.extradata
            for packet in container.demux(stream):
                n += len(ctx.decode(packet))
    return n, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--videos", type=int, default=96, help="clips for --device cuda")
    args = parser.parse_args()
    if args.device == "cuda":
        gpu(args.videos)
        return
    if args.memory_only:
        m10, m100 = memory(full_size_clip(), 10), memory(full_size_clip(), 100)
        print(f"5. peak memory (VmHWM, fresh process): 10 videos {m10:.0f} MiB, 100 videos {m100:.0f} MiB "
              f"({m100 / m10:.2f}x)")
        return
    files, model = dataset(), full_size_clip()
    long_clip = VIDEOS / "720p_300s" / "long.mp4"
    if not long_clip.exists():
        make_clip(long_clip, (1280, 720), 300, seed=99)
    fp32 = load_encoder(str(model), "cpu")
    int8 = load_encoder(str(model), "cpu", quantize="int8")
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
    t_int8 = stage_one(files, model, "int8")
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

    # int8 against fp32: cosine of the embeddings on the same frames
    clip = read_frames(files[0], FRAMES)
    pixels = preprocess_frames(clip.frames, fp32)
    a, b = embed_frames(pixels, fp32, BATCH), embed_frames(pixels, int8, BATCH)
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print(f"   int8 image_embeds cosine to fp32 on 16 frames: min {cos.min():.5f}, mean {cos.mean():.5f}")

    # 5. peak memory against the number of videos
    if not args.skip_memory:
        m10, m100 = memory(model, 10), memory(model, 100)
        print(f"\n5. peak memory (VmHWM, fresh process): 10 videos {m10:.0f} MiB, 100 videos {m100:.0f} MiB "
              f"({m100 / m10:.2f}x)")
    print(json.dumps({"encoder_img_s": rates, "int8_img_s": rate_int8, "stage_s": t_stage, "seed_s": t_seed,
                      "int8_stage_s": t_int8}, default=float))


if __name__ == "__main__":
    main()
