"""Heads on mean-pooled frame embeddings: a linear classifier (PyTorch) and a logistic-regression baseline (sklearn)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import torch
from torch import nn

from pipeline.cache import KEY_ATTRS, RANDOM_WEIGHTS

POOLING = "mean"
HEAD_SCHEMA = 3  # the layout of a saved head's metadata (3: "not sure" relative to chance, data counts, the
# temperature's note); otherwise: retrain it
# Where the stages write the heads and the app and pipeline.predict look for them (relative to the project root).
HEAD_FILES = {"linear": "models/linear.pt", "logreg": "models/logreg.joblib", "zeroshot": "models/zeroshot.pt"}
# What a head must share with the cache or encoder it is used with: the cache's key (pipeline/cache.py) except
# the encoder's id (the fingerprint is its identity, and the same weights may sit in another directory),
# precision and device (a head trained on GPU features serves on the CPU; bench/README.md gives the difference),
# and the cache's storage dtype (float16 storage rounds what the encoder computed; the encoder has no dtype).
MATCH_KEYS = tuple(k for k in KEY_ATTRS if k not in ("encoder_model", "precision", "device_type", "dtype"))
# Recorded beside them, not matched: how the features were computed, so pipeline.predict can do the same.
# random_weights: a CLIP built by `python -m pipeline.encoder` (its numbers mean nothing; pipeline/cache.py).
RECORDED_KEYS = ("encoder_model", "batch_size", "precision", "device_type", "dtype", RANDOM_WEIGHTS)
LOGIT_SCALE = 100.0  # CLIP's learned temperature (exp(logit_scale), which training clamps at 100)


@dataclass
class CalibrationConfig:
    """The "not sure" cut-off (params.yaml: calibration.*): a fraction of the way from chance (1/C) to certainty
    (1), so that it means the same with 2 classes as with 100 (sure_threshold). A head's metadata stores it under
    NOT_SURE_KEY, and the probability it asks is worked out for the head's classes when it answers."""

    not_sure_below_chance_to_certain: float = 0.3


NOT_SURE_KEY = "not_sure_below_chance_to_certain"  # the CalibrationConfig field, as stored in a head's metadata
# The temperature is fitted only with at least this many validation videos in every class: with fewer, one wrong
# or right video moves it to its bound (1 to 3 per class gave T = e^5 on the demo). Fewer: T = 1, and a note says so.
MIN_CALIBRATION_PER_CLASS = 5
LOG_T_BOUND = 5.0  # the fit searches log T in [-LOG_T_BOUND, LOG_T_BOUND]; an optimum on the bound is refused


def mean_pool(embeddings: np.ndarray) -> np.ndarray:
    """Frame embeddings float32 (V, F, D) -> one feature per video, float32 (V, D): the mean over frames.
    Embeddings left in a cache file (pipeline.cache.Embeddings) are averaged a block of videos at a time."""
    return embeddings.mean(axis=1, dtype=np.float32)


def _in_memory(x) -> bool:
    """Whether frames x are an array, rather than rows left in a file read as they are needed (Embeddings)."""
    return isinstance(x, np.ndarray)


def _batch(x, rows: torch.Tensor) -> torch.Tensor:
    """Rows of x, a tensor or Embeddings (read from the file), as a float32 tensor."""
    if isinstance(x, torch.Tensor):
        return x[rows]
    return torch.from_numpy(np.asarray(x[rows.numpy()]))


def _frame_stats(x) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (D,) over every frame of x (N, F, D); a block at a time for Embeddings."""
    if _in_memory(x):
        frames = x.reshape(-1, x.shape[-1])
        return frames.mean(axis=0), frames.std(axis=0)
    total, squares, n = 0.0, 0.0, 0
    for _, block in x.blocks():
        frames = block.reshape(-1, block.shape[-1]).astype(np.float64)
        total, squares, n = total + frames.sum(axis=0), squares + (frames ** 2).sum(axis=0), n + len(frames)
    mean = total / n
    return mean.astype(np.float32), np.sqrt(np.maximum(squares / n - mean ** 2, 0)).astype(np.float32)


@torch.no_grad()
def _logits(model: nn.Module, x) -> torch.Tensor:
    """model on all of x: at once for an array, a block of rows at a time for Embeddings (memory stays flat)."""
    if _in_memory(x):
        return model(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
    return torch.cat([model(torch.from_numpy(block)) for _, block in x.blocks()])


def head_metadata(attrs: dict, class_names: list[str], kind: str, pooling: str = POOLING) -> dict:
    """What a saved head carries so it can be used alone: class names, encoder, sampling, preprocessing, pooling."""
    return {"head": kind, "schema_version": HEAD_SCHEMA, "class_names": list(class_names), "pooling": pooling,
            **{k: attrs[k] for k in RECORDED_KEYS if k in attrs}, **{k: attrs[k] for k in MATCH_KEYS}}


def check_compatible(meta: dict, attrs: dict, class_names: list[str] | None = None, what: str = "cache") -> None:
    """ValueError naming the first difference between a head's metadata and a cache's (or encoder's) attributes."""
    for key in MATCH_KEYS:
        if key in attrs and meta.get(key) != attrs[key]:
            raise ValueError(f"the {meta.get('head', '?')} head was trained with {key}={meta.get(key)!r} but the "
                             f"{what} has {attrs[key]!r}: retrain the head (dvc repro)")
    if class_names is not None and list(class_names) != list(meta["class_names"]):
        raise ValueError(f"the head's classes {meta['class_names']} differ from the {what}'s {list(class_names)}")


TEMPORAL_POOLINGS = ("mean", "attention", "conv")


class LinearHead(nn.Module):
    """Pooling over time, standardisation, one linear layer: frames (B, F, D) -> logits (B, C).

    pooling "mean": the mean frame (order-blind; pooled input (B, D) is accepted too). "attention": frames plus a
    learned position embedding, weighted by a learned softmax over time. "conv": a 1-D convolution over time
    (kernel 3, `hidden` channels, ReLU), then the mean. The standardisation (buffers `mean` and `std`, (D,), fixed
    from the training features) makes the learning rate independent of the encoder's embedding scale, as
    StandardScaler does for the logistic-regression baseline.
    """

    def __init__(self, dim: int, num_classes: int, pooling: str = "mean", num_frames: int = 16, hidden: int = 128):
        super().__init__()
        if pooling not in TEMPORAL_POOLINGS:
            raise ValueError(f"train.head must be one of {TEMPORAL_POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        if pooling == "attention":
            self.position = nn.Parameter(torch.zeros(num_frames, dim))
            self.score = nn.Linear(dim, 1)
        if pooling == "conv":
            self.conv = nn.Conv1d(dim, hidden, kernel_size=3, padding=1)
        self.fc = nn.Linear(hidden if pooling == "conv" else dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling == "mean":
            return self.fc(((x.mean(dim=1) if x.dim() == 3 else x) - self.mean) / self.std)
        z = (x - self.mean) / self.std  # (B, F, D)
        if self.pooling == "attention":
            z = z + self.position[: z.shape[1]]
            weights = torch.softmax(self.score(z).squeeze(-1), dim=1)  # (B, F)
            return self.fc((weights.unsqueeze(-1) * z).sum(dim=1))
        return self.fc(torch.relu(self.conv(z.transpose(1, 2))).mean(dim=2))  # (B, D, F) -> (B, H, F) -> (B, H)


class ZeroShotHead(nn.Module):
    """Mean pooling over time, unit length, cosine to each class's text embedding times a fixed temperature:
    (B, F, D) or pooled (B, D) -> logits (B, C). Buffers only: `text` (C, D) and `scale` (); nothing is trained."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.register_buffer("text", torch.zeros(num_classes, dim))
        self.register_buffer("scale", torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.mean(dim=1)  # (B, F, D) -> (B, D)
        return self.scale * (x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)) @ self.text.T


@dataclass
class LinearConfig:
    """Training settings of the linear head (params.yaml: train.*)."""

    lr: float = 1e-4
    epochs: int = 200
    batch_size: int = 32
    weight_decay: float = 0.0
    seed: int = 0
    head: str = "mean"  # temporal pooling: mean | attention | conv (see LinearHead)


@dataclass
class LinearResult:
    """A trained linear head: the state with the best validation loss, the final one, and per-epoch history."""

    best_state: dict
    final_state: dict
    best_epoch: int
    history: list[dict] = field(default_factory=list)


def train_linear_head(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None,
                      num_classes: int, cfg: LinearConfig, text_init: np.ndarray | None = None) -> LinearResult:
    """Train LinearHead (pooling cfg.head) with Adam and cross-entropy on frame embeddings float32 (N, F, D)
    (or, for mean pooling, pooled features (N, D)) and int labels (N,). Frames may be Embeddings left in the cache
    file: mini-batches are then read from it as they are needed.

    history: one dict per epoch with train_loss and, given a validation set, val_loss and val_accuracy. Without
    one, the best state is the final state. text_init (C, D), unit-length class text embeddings, starts a mean
    pooling head as the zero-shot head: no standardisation but a division by the typical feature length, and
    weights = CLIP's temperature x the text embeddings, so that training begins from the zero-shot answer.

    Mean pooling trains through train_mean_heads (the same Adam, computed here, and no torch.optim start-up: its
    first use imports torch._dynamo, seconds); attention and conv through torch.optim.Adam.
    """
    if cfg.head == "mean":
        return train_mean_heads([(x_train, y_train)], num_classes, cfg, text_init, x_val, y_val)[0]
    return _train_torch_optim(x_train, y_train, x_val, y_val, num_classes, cfg, text_init)


def _train_torch_optim(x_train, y_train, x_val, y_val, num_classes: int, cfg: LinearConfig,
                       text_init: np.ndarray | None = None) -> LinearResult:
    """train_linear_head's loop with torch.optim.Adam, one model, any pooling (the reference for mean pooling)."""

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.head != "mean" and x_train.ndim != 3:
        raise ValueError(f"the {cfg.head} head needs frame embeddings (N, F, D), got {x_train.shape}")
    model = _new_linear(x_train, num_classes, cfg)
    if cfg.head == "mean" and x_train.ndim == 3:  # the head sees only the mean frame: pool once, F times less data
        x_train = mean_pool(x_train)
        x_val = mean_pool(x_val) if x_val is not None else None
    # standardise what the linear layer sees: pooled features (N, D) for mean pooling, single frames otherwise
    mean, std = (x_train.mean(axis=0), x_train.std(axis=0)) if cfg.head == "mean" else _frame_stats(x_train)
    model.mean.copy_(torch.from_numpy(mean))
    model.std.copy_(torch.from_numpy(std + 1e-6))
    if text_init is not None:
        if cfg.head != "mean":
            raise ValueError("a zero-shot start needs mean pooling")
        model.mean.zero_()
        model.std.fill_(float(np.linalg.norm(x_train, axis=1).mean()))  # x / |x| on average: the zero-shot cosine
        with torch.no_grad():
            model.fc.weight.copy_(torch.from_numpy(LOGIT_SCALE * text_init))
            model.fc.bias.zero_()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    xt = torch.from_numpy(np.ascontiguousarray(x_train, np.float32)) if _in_memory(x_train) else x_train
    yt = torch.from_numpy(y_train.astype(np.int64))
    has_val = x_val is not None and len(x_val) > 0
    if has_val:
        yv = torch.from_numpy(y_val.astype(np.int64))
    best_loss, best_state, best_epoch, history = float("inf"), None, 0, []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(yt), generator=gen).split(cfg.batch_size):
            optimizer.zero_grad()
            loss = loss_fn(model(_batch(xt, idx)), yt[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        row = {"epoch": epoch, "train_loss": total / len(yt)}
        if has_val:
            model.eval()
            with torch.no_grad():
                logits = _logits(model, x_val)
                row["val_loss"] = loss_fn(logits, yv).item()
                row["val_accuracy"] = (logits.argmax(1) == yv).float().mean().item()
            if row["val_loss"] < best_loss:
                best_loss, best_epoch = row["val_loss"], epoch
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
        history.append(row)
    final_state = {k: v.clone() for k, v in model.state_dict().items()}
    if best_state is None:
        best_state, best_epoch = final_state, cfg.epochs
    return LinearResult(best_state, final_state, best_epoch, history)


ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, which train_mean_heads computes too
# fit_predict_many trains tasks together while their stacked float32 features stay within this (the five folds of
# a 240,000-video cache would otherwise be 2 GiB at once; the demo's are 0.5 MiB)
BATCHED_BYTES = 256 * 2 ** 20


def train_mean_heads(tasks: list[tuple[np.ndarray, np.ndarray]], num_classes: int, cfg: LinearConfig,
                     text_init: np.ndarray | None = None, x_val: np.ndarray | None = None,
                     y_val: np.ndarray | None = None) -> list[LinearResult]:
    """Train one mean-pooling LinearHead per task (features float32 (N_k, D) or frames (N_k, F, D), int labels
    (N_k,)) at once: the K heads' weights stacked (K, C, D) and every step a batched matrix multiply, so K refits
    (the folds of cross-validation, the subsets of the data-efficiency curve) cost about what one does.

    Each head is exactly what train_linear_head computes alone, up to float rounding: the same initial weights
    (seeded by cfg.seed), its own standardisation, its own shuffle (a generator seeded by cfg.seed), mini-batches
    of cfg.batch_size, and Adam (torch.optim.Adam's update with L2 weight decay, ADAM_BETAS, ADAM_EPS) stepping
    each head only on its own batches; the cross-entropy's gradient is written out (softmax minus one-hot), so no
    autograd graph is built at each step. A validation set (one task only) gives history and the best state as in
    train_linear_head; without one, history has train_loss and the best state is the final state.
    """
    if x_val is not None and len(tasks) != 1:
        raise ValueError("a validation set is for one task at a time")
    torch.manual_seed(cfg.seed)
    init = LinearHead(tasks[0][0].shape[-1], num_classes)  # the initial weights every head starts from
    xs = [np.asarray(mean_pool(x) if x.ndim == 3 else x, np.float32) for x, _ in tasks]
    k, dim, size = len(tasks), xs[0].shape[1], cfg.batch_size
    lengths = [len(x) for x in xs]
    means = torch.stack([torch.from_numpy(x.mean(axis=0)) for x in xs])  # (K, D)
    stds = torch.stack([torch.from_numpy(x.std(axis=0) + 1e-6) for x in xs])
    weight = init.fc.weight.detach().repeat(k, 1, 1)  # (K, C, D)
    bias = init.fc.bias.detach().repeat(k, 1)  # (K, C)
    if text_init is not None:
        means.zero_()
        stds = torch.stack([torch.full((dim,), float(np.linalg.norm(x, axis=1).mean())) for x in xs])
        weight = torch.from_numpy(LOGIT_SCALE * text_init).float().repeat(k, 1, 1)
        bias.zero_()
    # weight and bias as one parameter (K, C, D + 1) over features with a constant 1 appended: one Adam update
    longest = max(lengths)
    z = torch.zeros(k, longest, dim + 1)  # (K, N_max, D + 1): each task's standardised features, zero-padded
    y = torch.zeros(k, longest, dtype=torch.int64)
    for i, (x, (_, labels)) in enumerate(zip(xs, tasks)):
        z[i, :lengths[i], :dim] = (torch.from_numpy(x) - means[i]) / stds[i]
        z[i, :lengths[i], dim] = 1.0
        y[i, :lengths[i]] = torch.from_numpy(labels.astype(np.int64))
    wb = torch.cat([weight, bias[..., None]], dim=2)  # (K, C, D + 1)
    m, v = torch.zeros_like(wb), torch.zeros_like(wb)  # Adam's moments
    # every epoch has the same layout: head i's shuffled rows fill slots [0, n_i) of (S, B), batch s is row s
    # (randperm(n).split(B), the batches of the torch.optim loop, _train_torch_optim); empty slots are masked out
    n = torch.tensor(lengths)
    per_epoch = -(-n // size)  # (K,): each head's steps per epoch
    slots = torch.arange(int(per_epoch.max()) * size)
    mask = (slots < n[:, None]).float().view(k, -1, size).transpose(0, 1)  # (S, K, B)
    counts = mask.sum(dim=2)  # (S, K)
    scale = (mask / counts.clamp_min(1)[..., None])[..., None]  # (S, K, B, 1): each head's mean over its batch
    active = (counts > 0)[..., None, None]  # (S, K, 1, 1): the heads that have a batch at step s
    everyone = active.flatten(1).all(dim=1).tolist()  # steps where every head steps: no masking
    gens = [torch.Generator().manual_seed(cfg.seed) for _ in tasks]
    has_val = x_val is not None and len(x_val) > 0
    if has_val:
        pooled_val = np.asarray(mean_pool(x_val) if x_val.ndim == 3 else x_val, np.float32)
        zv = (torch.from_numpy(pooled_val) - means[0]) / stds[0]
        yv = torch.from_numpy(y_val.astype(np.int64))
    best_loss, best, best_epoch, histories = float("inf"), None, 0, [[] for _ in tasks]
    (beta1, beta2), lr, decay = ADAM_BETAS, cfg.lr, cfg.weight_decay
    z, y = z.flatten(0, 1), y.flatten(0, 1)  # (K * N_max, D + 1), (K * N_max,): head i's rows from i * N_max
    for epoch in range(1, cfg.epochs + 1):
        index = torch.zeros(k, len(slots), dtype=torch.int64)
        for i, g in enumerate(gens):
            index[i, :lengths[i]] = torch.randperm(lengths[i], generator=g) + i * longest
        index = index.view(k, -1, size).transpose(0, 1).flatten(1)  # (S, K * B): the rows of step s, head by head
        # Adam's step count of each head at each step of this epoch, and the bias corrections it gives
        t = ((epoch - 1) * per_epoch + torch.arange(1, len(mask) + 1)[:, None]).clamp_max(epoch * per_epoch)
        step_size = (lr / (1 - beta1 ** t.double())).float()[..., None, None]  # (S, K, 1, 1)
        root2 = (1 - beta2 ** t.double()).sqrt().float()[..., None, None]
        totals = torch.zeros(k)
        for s in range(len(mask)):
            zb, yb = z.index_select(0, index[s]).view(k, size, dim + 1), y[index[s]].view(k, size)
            log_p = torch.log_softmax(torch.bmm(zb, wb.transpose(1, 2)), dim=2)  # (K, B, C)
            totals -= (log_p.gather(2, yb[..., None])[..., 0] * mask[s]).sum(dim=1)  # cross-entropy, summed
            # the gradient of each head's mean cross-entropy, written out (softmax - one-hot): no autograd graph
            d_logits = log_p.exp_().scatter_add_(2, yb[..., None], torch.full((k, size, 1), -1.0)).mul_(scale[s])
            grad = torch.bmm(d_logits.transpose(1, 2), zb)  # (K, C, D + 1)
            if decay:
                grad += decay * wb
            if everyone[s]:  # torch.optim.Adam's update, with each head's own step count
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                wb -= step_size[s] * m / (v.sqrt() / root2[s] + ADAM_EPS)
            else:  # the heads without a batch keep their weights and moments
                on = active[s]
                m.copy_(torch.where(on, beta1 * m + (1 - beta1) * grad, m))
                v.copy_(torch.where(on, beta2 * v + (1 - beta2) * grad * grad, v))
                wb -= torch.where(on, step_size[s] * m / (v.sqrt() / root2[s] + ADAM_EPS), 0.0)
        for i in range(k):
            histories[i].append({"epoch": epoch, "train_loss": float(totals[i]) / lengths[i]})
        if has_val:
            with torch.no_grad():
                val_logits = zv @ wb[0, :, :dim].T + wb[0, :, dim]
                row = histories[0][-1]
                row["val_loss"] = nn.functional.cross_entropy(val_logits, yv).item()
                row["val_accuracy"] = (val_logits.argmax(1) == yv).float().mean().item()
            if row["val_loss"] < best_loss:
                best_loss, best_epoch, best = row["val_loss"], epoch, wb[0].clone()
    weight, bias = wb[:, :, :dim], wb[:, :, dim]

    def state(i: int, w: torch.Tensor, b: torch.Tensor) -> dict:
        return {"mean": means[i].clone(), "std": stds[i].clone(), "fc.weight": w.detach().clone(),
                "fc.bias": b.detach().clone()}

    results = []
    for i in range(k):
        final = state(i, weight[i], bias[i])
        if best is None:
            results.append(LinearResult(final, final, cfg.epochs, histories[i]))
        else:
            results.append(LinearResult(state(i, best[:, :dim], best[:, dim]), final, best_epoch, histories[i]))
    return results


def _new_linear(x: np.ndarray, num_classes: int, cfg: LinearConfig) -> LinearHead:
    """An untrained LinearHead sized for inputs like x: (N, F, D) frames or (N, D) pooled features."""
    return LinearHead(x.shape[-1], num_classes, cfg.head, x.shape[1] if x.ndim == 3 else 1)


@dataclass
class LogRegConfig:
    """Settings of the logistic-regression baseline (params.yaml: baseline.*)."""

    C: float = 1.0
    max_iter: int = 1000


def fit_logreg(x_train: np.ndarray, y_train: np.ndarray, cfg: LogRegConfig):
    """Standardise pooled features float32 (N, D), then multinomial logistic regression: the fitted sklearn pipeline.
    (scikit-learn is imported here: the train stage never needs it, and it takes a second to import.)"""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.C, max_iter=cfg.max_iter))
    return model.fit(x_train, y_train)


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, num_classes: int,
                cfg: LinearConfig | LogRegConfig, text_init: np.ndarray | None = None) -> np.ndarray:
    """Fit a fresh head (linear or logistic regression, by the type of cfg) and predict int classes (M,) for
    x_test: the refit step of cross-validation. Logistic regression takes pooled features (N, D); the linear head
    frame embeddings (N, F, D) (or pooled ones for mean pooling) and keeps its final state, as there is no
    validation part inside a fold. text_init: see train_linear_head."""
    if isinstance(cfg, LogRegConfig):
        return fit_logreg(x_train, y_train, cfg).predict(x_test)
    model = _new_linear(x_train, num_classes, cfg)
    model.load_state_dict(train_linear_head(x_train, y_train, None, None, num_classes, cfg, text_init).final_state)
    return _logits(model, x_test).argmax(1).numpy()


def fit_predict_many(tasks: list[tuple[np.ndarray, np.ndarray, np.ndarray]], num_classes: int,
                     cfg: LinearConfig | LogRegConfig, text_init: np.ndarray | None = None) -> list[np.ndarray]:
    """fit_predict on each (x_train, y_train, x_test) task: int predictions (M_k,) per task. A mean-pooling linear
    head trains all tasks at once (train_mean_heads: the same heads, one batched loop); the others one by one."""
    if not isinstance(cfg, LinearConfig) or cfg.head != "mean":
        return [fit_predict(xt, yt, xs, num_classes, cfg, text_init) for xt, yt, xs in tasks]
    groups, size = [[]], 0  # tasks trained together, their stacked features within BATCHED_BYTES
    for task in tasks:
        rows = len(task[0]) * task[0].shape[-1] * 4
        if groups[-1] and size + rows > BATCHED_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(task)
        size += rows
    results = [r for group in groups
               for r in train_mean_heads([(xt, yt) for xt, yt, _ in group], num_classes, cfg, text_init)]
    model = _new_linear(tasks[0][0], num_classes, cfg)
    preds = []
    for (_, _, xs), result in zip(tasks, results):
        model.load_state_dict(result.final_state)
        preds.append(_logits(model.eval(), mean_pool(xs) if xs.ndim == 3 else xs).argmax(1).numpy())
    return preds


@dataclass
class Head:
    """A head ready to predict: `kind` is "linear", "logreg" or "zeroshot"; `meta` is what it was made with."""

    kind: str
    meta: dict
    model: object

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def not_sure_below(self) -> float:
        """Calibrated top probability under which the answer is "not sure": meta[NOT_SURE_KEY] of the way from
        chance to certainty for this head's number of classes (sure_threshold; no key, as for a zero-shot head made
        in the app from typed actions: CalibrationConfig's default)."""
        fraction = self.meta.get(NOT_SURE_KEY, CalibrationConfig.not_sure_below_chance_to_certain)
        return sure_threshold(float(fraction), len(self.class_names))

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """Frame embeddings float32 (V, F, D) (an array or Embeddings left in the cache file), or for a head that
        pools by the mean (logistic regression, zero-shot, linear with mean pooling) their mean-pooled features
        (V, D) -> scores float32 (V, C) whose softmax is the uncalibrated probability (log-probabilities for
        logistic regression)."""
        dim, pooled = self.meta["embedding_dim"], self.meta["pooling"] == POOLING
        if embeddings.shape[-1] != dim or embeddings.ndim != 3 and not (pooled and embeddings.ndim == 2):
            raise ValueError(f"expected embeddings (videos, frames, {dim})"
                             + (f" or pooled (videos, {dim})" if pooled else "") + f", got {embeddings.shape}")
        if pooled and embeddings.ndim == 3:
            embeddings = mean_pool(embeddings)  # (V, D): what these heads see
        if self.kind == "logreg":
            return np.log(np.clip(self.model.predict_proba(embeddings), 1e-12, None)).astype(np.float32)
        return _logits(self.model, embeddings).numpy()

    def predict_proba(self, embeddings: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """Frame embeddings float32 (V, F, D) (or pooled (V, D), as for logits) -> class probabilities float32
        (V, C), divided by the temperature fitted on the validation part (meta["temperature"]) unless
        calibrated=False."""
        temperature = float(self.meta.get("temperature", 1.0)) if calibrated else 1.0
        return softmax(self.logits(embeddings) / temperature)


def torch_head(state: dict, meta: dict) -> Head:
    """A linear or zero-shot Head (meta["head"]) rebuilt from its state dict and metadata."""
    if meta["head"] == "zeroshot":
        model = ZeroShotHead(meta["embedding_dim"], len(meta["class_names"]))
    else:
        model = LinearHead(meta["embedding_dim"], len(meta["class_names"]), meta["pooling"], meta["num_frames"])
    model.load_state_dict(state)
    return Head(meta["head"], meta, model.eval())


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of scores (N, C), float32."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def sure_threshold(fraction: float, num_classes: int) -> float:
    """The top probability an answer needs, `fraction` of the way from chance (1/C) to certainty: with 0.3, 0.65
    for 2 classes, 0.4 for 7, 0.31 for 100 (a fixed probability would be a coin flip's for 2 classes and out of
    reach for many)."""
    chance = 1.0 / max(num_classes, 1)
    return chance + fraction * (1.0 - chance)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> tuple[float, str]:
    """The temperature T > 0 minimising the cross-entropy of softmax(logits / T) on held-out labels (N,), and ""; or
    (1.0, why) when the data cannot tell it: fewer than MIN_CALIBRATION_PER_CLASS videos in a class (of the
    logits' C), every video right (the optimum is T -> 0), or an optimum on the search bound."""
    counts = np.bincount(labels, minlength=logits.shape[1])
    if len(labels) == 0 or counts.min() < MIN_CALIBRATION_PER_CLASS:
        return 1.0, (f"temperature not fitted: {int(counts.min()) if len(counts) else 0} validation videos in the "
                     f"smallest class, it needs {MIN_CALIBRATION_PER_CLASS} per class; T = 1 (uncalibrated)")
    if np.all(logits.argmax(axis=1) == labels):  # the cross-entropy falls all the way to T -> 0
        return 1.0, ("temperature not fitted: every validation video is right, so they cannot tell how sure the "
                     "head should be; T = 1 (uncalibrated)")
    from scipy.optimize import minimize_scalar  # (here: a second's import, not needed when the fit is refused)

    z = logits.astype(np.float64)

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        s = s - s.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(s).sum(axis=1)) - s[np.arange(len(labels)), labels]))

    log_t = float(minimize_scalar(nll, bounds=(-LOG_T_BOUND, LOG_T_BOUND), method="bounded").x)
    if abs(log_t) > LOG_T_BOUND - 0.01:
        why = "nearly every validation video right" if log_t < 0 else "the head no better than chance on them"
        return 1.0, (f"temperature not fitted: the fit ran to its bound T = {np.exp(log_t):.3g} ({why}); "
                     "T = 1 (uncalibrated)")
    return float(np.exp(log_t)), ""


def data_counts(train_labels: np.ndarray, val_labels: np.ndarray, num_classes: int) -> dict:
    """How much data a head learned from and was calibrated on, for its metadata: videos, and the fewest in a
    class, of the training and validation parts (int labels (N,) each; a zero-shot head trains on none)."""
    def fewest(y: np.ndarray) -> int:
        return int(np.bincount(y, minlength=num_classes).min()) if num_classes else 0
    return {"train_videos": int(len(train_labels)), "train_min_per_class": fewest(train_labels),
            "val_videos": int(len(val_labels)), "val_min_per_class": fewest(val_labels)}


def calibrate(head: Head, val_embeddings: np.ndarray, val_labels: np.ndarray, not_sure_below: float,
              train_labels: np.ndarray | None = None) -> Head:
    """Record in the head's metadata the temperature fitted on the validation part (fit_temperature: 1.0 with
    `temperature_note` saying why when the data cannot tell it), the "not sure" cut-off (NOT_SURE_KEY: a fraction
    of the way from chance to certainty) and the data counts (data_counts; train_labels None: no training)."""
    temperature, note = fit_temperature(head.logits(val_embeddings), val_labels)
    train = np.zeros(0, np.int64) if train_labels is None else train_labels
    head.meta.update(temperature=temperature, temperature_note=note, **{NOT_SURE_KEY: float(not_sure_below)},
                     **data_counts(train, val_labels, len(head.class_names)))
    return head


def describe_data(meta: dict) -> str:
    """One line on how much data a head was trained and calibrated on (for the app and pipeline.predict)."""
    if "val_videos" not in meta:
        return "uncalibrated (T = 1)"
    trained = (f"trained on {meta['train_videos']} videos (at least {meta['train_min_per_class']} per class)"
               if meta["train_videos"] else "not trained (text only)")
    calibration = (f"temperature {meta['temperature']:.3g}" if not meta.get("temperature_note")
                   else "temperature not fitted (T = 1)")
    return (f"{trained}; calibrated on {meta['val_videos']} validation videos (at least "
            f"{meta['val_min_per_class']} per class): {calibration}")


def save_linear(path: str | os.PathLike, state: dict, meta: dict) -> None:
    """Save a torch head (linear or zero-shot: meta["head"] says which) as {"state_dict", "meta"}: plain tensors and
    strings, loadable with weights_only=True."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "meta": meta}, path)


def save_logreg(path: str | os.PathLike, model, meta: dict) -> None:
    """Save the logistic-regression pipeline with its metadata (joblib: load only files this project wrote)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    joblib.dump({"model": model, "meta": meta}, path)


def load_head(path: str | os.PathLike) -> Head:
    """Load a head saved by save_linear (.pt: linear or zero-shot, with weights_only=True) or save_logreg (.joblib)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no trained head at {str(path)!r}: run `dvc repro` to train one")
    try:
        if path.suffix == ".pt":
            saved = torch.load(path, map_location="cpu", weights_only=True)
            return torch_head(saved["state_dict"], _check_schema(path, saved["meta"]))
        if path.suffix == ".joblib":
            saved = joblib.load(path)
            return Head("logreg", _check_schema(path, saved["meta"]), saved["model"])
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a usable head checkpoint ({e})") from None
    except Exception as e:  # any way a damaged or foreign file fails to load is the same error to the user
        raise ValueError(f"{path}: not a usable head checkpoint ({e})") from None
    raise ValueError(f"{path}: unknown head file type (expected .pt or .joblib)")


def _check_schema(path: Path, meta: dict) -> dict:
    """The metadata, or ValueError when the head was saved in another layout than this code reads."""
    if not isinstance(meta, dict) or meta.get("schema_version") != HEAD_SCHEMA:
        version = meta.get("schema_version") if isinstance(meta, dict) else None
        raise ValueError(f"{path}: head format version {version}, this code reads {HEAD_SCHEMA}: retrain it "
                         "(dvc repro train baseline)")
    return meta
