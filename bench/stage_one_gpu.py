"""Stage one on a CUDA machine (`python bench/stage_one.py --device cuda [--videos 96]`): the encoder alone at each
precision and batch size, the decode workers alone, stage one end to end against min(encoder, decode), and NVDEC
against the software decoder. bench/stage_one.py's CPU sections share its clips, model and stage run."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from stage_one import FRAMES, VIDEOS, full_size_clip, make_clip, stage_one  # run as a file from bench/
from stage_one_backends import closeness

from pipeline.decode.video import read_frames
from pipeline.embed.encoder import embed_frames, load_encoder


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
    from pipeline.embed.encoder import AUTO_PRECISION, PRECISIONS
    from pipeline.errors import Unusable
    from pipeline.decode.frames import FrameSpec
    from pipeline.decode.workers import DecodePool, PoolConfig, ReadConfig
    from pipeline.threads import cores as machine_cores

    assert torch.cuda.is_available(), "--device cuda needs a CUDA GPU"
    files, model = gpu_dataset(n_videos), full_size_clip()
    cores = machine_cores()
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
    print(f"   CUDA fp32 against the CPU's fp32 (backend auto: ONNX Runtime): min cosine {raw:.6f}, "
          f"centred {centred:.6f}")
    # the same measures as the CPU backends' (section 6): centred cosine, nearest neighbours, heads' answers
    close = closeness({p: load_encoder(str(model), "cuda", precision=p) for p in PRECISIONS}, reference="fp32")
    close.pop("_accuracy")
    for p, c in close.items():
        print(f"   {p} on the demo data: centred cosine min {c['centred_cos_min']:.4f}; same nearest video "
              f"{c['nn_video']:.2f}, frame {c['nn_frame']:.2f}; same prediction logreg {c['logreg_agree']:.2f}, "
              f"linear {c['linear_agree']:.2f} (per frame {c['linear_frame_agree']:.2f})")
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
            assert not [r for r in results if isinstance(r, Unusable)], [r for r in results if isinstance(r, Unusable)]
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
