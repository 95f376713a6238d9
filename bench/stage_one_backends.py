"""Section 6 of bench/stage_one.py, the CPU encoder's backends (`python bench/stage_one.py --backends-only`): each
backend's rate by batch, its closeness to torch fp32 (centred cosine, nearest neighbours, the heads' answers), the
fp32 matrix-product ceiling, and stage one end to end per backend."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from stage_one import OUT, stage_one  # run as a file from bench/

from pipeline.decode.video import read_frames
from pipeline.embed.encoder import embed_frames, load_encoder, preprocess_frames


# The encoders compared: name -> (backend, quantize); "torch int8" is torch's deprecated quantize_dynamic, kept
# here only, for comparison, while torch still has it (the product's int8 is ONNX Runtime's).
BACKENDS = {"torch fp32": ("torch", "none"), "ORT fp32": ("onnxruntime", "none"), "ORT int8": ("onnxruntime", "int8"),
            "torch int8": ("torch", "int8")}


def load_backend(model: Path, name: str):
    backend, quantize = BACKENDS[name]
    if name == "torch int8":
        import warnings
        enc = load_encoder(str(model), "cpu", backend="torch")
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
    enc = load_encoder(str(model), "cpu", backend="torch")  # the model itself (auto is ONNX Runtime on the CPU)
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
