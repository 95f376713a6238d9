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
from pipeline.embed.encoder import embed_frames, load_encoder, preprocess_frames  # noqa: E402
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


# The encoders compared: name -> (backend, quantize); "torch int8" is torch's deprecated quantize_dynamic, kept
# here only, for comparison, while torch still has it (the product's int8 is ONNX Runtime's).
BACKENDS = {"torch fp32": ("torch", "none"), "ORT fp32": ("onnxruntime", "none"), "ORT int8": ("onnxruntime", "int8"),
            "torch int8": ("torch", "int8")}


def load_backend(model: Path, name: str):
    backend, quantize = BACKENDS[name]
    if name == "torch int8":
        import warnings
        enc = load_encoder(str(model), "cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch deprecates the API
            enc.model = torch.ao.quantization.quantize_dynamic(enc.model, {torch.nn.Linear}, dtype=torch.qint8)
        enc.quantize = "int8"
        return enc
    return load_encoder(str(model), "cpu", quantize=quantize, backend=backend)


def backend_rates(encoders: dict, batches=(1, 16, 64), rounds: int = 3) -> dict:
    """Encoder-only images/s per backend and batch: embed_frames on ready pixel values, backends alternating within
    each round; {name: {batch: [rate per round]}}."""
    x = torch.randn(64, 3, 224, 224)
    images = {1: 8, 16: 32, 64: 64}  # per measurement: a few seconds each
    for enc in encoders.values():
        embed_frames(x[:16], enc, 16)  # warm-up
    rates = {name: {b: [] for b in batches} for name in encoders}
    for _ in range(rounds):
        for b in batches:
            for name, enc in encoders.items():
                t = time.perf_counter()
                embed_frames(x[:images[b]], enc, b)
                rates[name][b].append(images[b] / (time.perf_counter() - t))
    return rates


def closeness(encoders: dict, reference: str = "torch fp32", clips_per_class: int = 6, num_frames: int = 4) -> dict:
    """How close each encoder's embeddings are to the reference's on the demo data (stick figures, 7 classes).

    Per frame: raw cosine and cosine after subtracting the reference's mean embedding (random weights map every
    image near one direction, so raw cosine flatters). Per video (mean of its frames, centred): whether its nearest
    other video is the same. Heads: a logistic regression and the linear head trained on the reference's features of
    half the videos; the share of the other half's predictions (per video, and per frame for the linear head) that
    stay the same with each encoder's features.
    """
    from pipeline.data.demo import DemoConfig, make_demo_dataset
    from pipeline.heads.logreg import LogRegHead
    from pipeline.heads.training import LinearConfig, module_logits, train_linear
    root = OUT / "demo"
    if not root.is_dir():
        make_demo_dataset(DemoConfig(str(root), clips_per_class, 0), progress=False)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    labels = np.array([sorted({f.parent.name for f in files}).index(f.parent.name) for f in files])
    frames = [read_frames(f, num_frames).frames for f in files]
    emb = {name: np.stack([embed_frames(preprocess_frames(fr, enc), enc, num_frames) for fr in frames])
           for name, enc in encoders.items()}  # (V, F, D)
    ref = emb[reference]
    mean = ref.reshape(-1, ref.shape[-1]).mean(0)

    def cos(a, b):
        return np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

    def nearest(v):  # (V, D) -> index of each row's nearest other row by cosine, centred
        u = (v - mean) / np.linalg.norm(v - mean, axis=1, keepdims=True)
        sim = u @ u.T
        np.fill_diagonal(sim, -np.inf)
        return sim.argmax(1)

    train, test = np.arange(len(files)) % 2 == 0, np.arange(len(files)) % 2 == 1
    logreg = LogRegHead().fit(ref[train].mean(1), labels[train])
    linear = train_linear([(ref[train], labels[train])], int(labels.max()) + 1,
                          LinearConfig(epochs=200, lr=1e-3))[0].final  # the module after its last epoch

    def linear_pred(x):
        return module_logits(linear, x).argmax(1).numpy()

    out = {}
    for name, e in emb.items():
        raw, centred = cos(e, ref).ravel(), cos(e - mean, ref - mean).ravel()
        out[name] = {"raw_cos_min": raw.min(), "centred_cos_min": centred.min(), "centred_cos_mean": centred.mean(),
                     "nn_video": np.mean(nearest(e.mean(1)) == nearest(ref.mean(1))),
                     "nn_frame": np.mean(nearest(e.reshape(-1, e.shape[-1])) == nearest(ref.reshape(-1, e.shape[-1]))),
                     "logreg_agree": np.mean(logreg.predict(e[test].mean(1)) == logreg.predict(ref[test].mean(1))),
                     "linear_agree": np.mean(linear_pred(e[test]) == linear_pred(ref[test])),
                     "linear_frame_agree": np.mean(linear_pred(e[test].reshape(-1, 1, e.shape[-1]))
                                                   == linear_pred(ref[test].reshape(-1, 1, e.shape[-1])))}
    out["_accuracy"] = {"logreg": np.mean(logreg.predict(ref[test].mean(1)) == labels[test]),
                        "linear": np.mean(linear_pred(ref[test]) == labels[test]), "videos": len(files),
                        "frames": len(files) * num_frames}
    return out


def fp32_ceiling(model: Path, reps: int = 20) -> dict:
    """How fast fp32 can go here at all: the encoder's FLOPs per image (torch's FlopCounterMode, 224x224) and the
    best rate of this machine's fp32 matrix multiply, torch's and ONNX Runtime's (MatMul), on the encoder's largest
    product at batch 16 (the MLP: 16 x 50 tokens x 768 @ 768 x 3072), best of `reps` timings of 10 products.
    Images/s ceiling = best GFLOP/s / GFLOP per image: no fp32 backend can beat it by much (attention, layer norms
    and GELU run slower than a large product)."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper
    from torch.utils.flop_counter import FlopCounterMode
    enc = load_encoder(str(model), "cpu")
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        enc.model(pixel_values=torch.zeros(1, 3, 224, 224))
    per_image = counter.get_total_flops()
    m, k, n = 16 * 50, enc.model.config.hidden_size, enc.model.config.intermediate_size
    a, b = torch.randn(m, k), torch.randn(k, n)
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "W"], ["Y"])], "gemm",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])],
                              [numpy_helper.from_array(b.numpy(), "W")])
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(helper.make_model(graph).SerializeToString(), opts,
                                           providers=["CPUExecutionProvider"])
    x = a.numpy()
    products = {"torch": lambda: a @ b, "ORT": lambda: session.run(None, {"A": x})}
    best = {name: 0.0 for name in products}
    for _ in range(reps):  # alternating, best of reps: the machine's speed, not its load
        for name, product in products.items():
            t = time.perf_counter()
            for _ in range(10):
                product()
            best[name] = max(best[name], 10 * 2 * m * k * n / (time.perf_counter() - t))
    return {"gflop_per_image": per_image / 1e9, "gemm_gflops": {k: v / 1e9 for k, v in best.items()},
            "images_per_s": max(best.values()) / per_image}


def backends_section(files: list[Path], model: Path, rounds: int) -> dict:
    """Section 6: every backend, encoder only, its closeness to torch fp32, and stage one end to end."""
    ceiling = fp32_ceiling(model)
    encoders = {name: load_backend(model, name) for name in BACKENDS}
    rates = backend_rates(encoders, rounds=rounds)
    print(f"\n6. encoder only by backend (images/s, ready tensors, median of {rounds} alternating rounds; ratio to "
          "torch fp32 in the same round, median)")
    for name, by_batch in rates.items():
        cells = []
        for b, r in by_batch.items():
            ratio = statistics.median(x / y for x, y in zip(r, rates["torch fp32"][b]))
            cells.append(f"batch {b}: {statistics.median(r):.1f} ({ratio:.2f}x)")
        print(f"   {name:<11} " + ", ".join(cells))
    print(f"   fp32 ceiling: {ceiling['gflop_per_image']:.2f} GFLOP per image; best fp32 matrix product (16 x 50 x "
          f"768 @ 768 x 3072) torch {ceiling['gemm_gflops']['torch']:.0f}, ORT {ceiling['gemm_gflops']['ORT']:.0f} "
          f"GFLOP/s: at most {ceiling['images_per_s']:.1f} images/s in fp32. At batch 16: " + ", ".join(
              f"{name} {statistics.median(rates[name][16]) / ceiling['images_per_s']:.0%}"
              for name in ("torch fp32", "ORT fp32")) + " of it")
    close = closeness(encoders)
    acc = close.pop("_accuracy")
    print(f"   against torch fp32 on the demo data ({acc['videos']} videos, {acc['frames']} frames; heads trained on "
          f"half, torch fp32 features: accuracy logreg {acc['logreg']:.2f}, linear {acc['linear']:.2f}):")
    for name, c in close.items():
        print(f"   {name:<11} cosine min {c['raw_cos_min']:.6f}; centred min {c['centred_cos_min']:.4f}, mean "
              f"{c['centred_cos_mean']:.4f}; same nearest video {c['nn_video']:.2f}, frame {c['nn_frame']:.2f}; "
              f"same prediction logreg {c['logreg_agree']:.2f}, linear {c['linear_agree']:.2f} (per frame "
              f"{c['linear_frame_agree']:.2f})")
    del encoders
    e2e = {name: [] for name in BACKENDS if name != "torch int8"}
    for _ in range(2):
        for name in e2e:
            backend, quantize = BACKENDS[name]
            e2e[name].append(stage_one(files, model, quantize, backend=backend))
    speedup = {name: statistics.median(a / b for a, b in zip(e2e["torch fp32"], ts)) for name, ts in e2e.items()}
    print(f"   stage one end to end ({len(files)} videos, fresh cache, 2 alternating rounds): " + "; ".join(
        f"{name} {', '.join(f'{t:.2f}' for t in ts)} s ({speedup[name]:.2f}x)" for name, ts in e2e.items()))
    return {"rates": rates, "ceiling": ceiling, "closeness": close, "accuracy": acc, "stage_s": e2e}


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
    from pipeline.decode.workers import DecodePool, PoolConfig, ReadConfig, auto_workers

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
    if args.backends_only:
        print(json.dumps(backends_section(files, model, args.rounds), default=float))
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
        return
    long_clip = VIDEOS / "720p_300s" / "long.mp4"
    if not long_clip.exists():
        make_clip(long_clip, (1280, 720), 300, seed=99)
    fp32 = load_encoder(str(model), "cpu")
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

    # int8 against fp32: section 6 (centred cosine, neighbours, heads' predictions)

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
