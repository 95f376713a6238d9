"""Training the linear head: its torch module (pooling over time, one linear layer) and the one Adam loop that fits
one or K of them at once (the folds of cross-validation, the subsets of the data-efficiency curve)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.optim.adam import adam

from pipeline.errors import ConfigError, DataError, number
from pipeline.extract.embeddings import masked_mean
from pipeline.settings import MAX_LR, TEMPORAL_POOLINGS

LOGIT_SCALE = 100.0  # CLIP's learned temperature (exp(logit_scale), which training clamps at 100)
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults


@dataclass
class LinearConfig:
    """Training settings of the linear head (params.yaml: train.*)."""

    lr: float = 1e-4
    epochs: int = 200
    batch_size: int = 32
    weight_decay: float = 0.0
    seed: int = 0
    head: str = "mean"  # temporal pooling: mean | attention | conv (see LinearModule)

    def __post_init__(self) -> None:  # ConfigError naming a setting that cannot train (not a traceback from torch)
        self.lr, self.weight_decay = number(self.lr, float, "train.lr", 0), number(self.weight_decay, float,
                                                                                   "train.weight_decay", 0)
        self.epochs, self.batch_size = number(self.epochs, int, "train.epochs", 0), number(self.batch_size, int,
                                                                                           "train.batch_size", 1)
        self.seed = number(self.seed, int, "train.seed")
        for name in ("lr", "weight_decay"):  # NaN passes every comparison, and inf trains a head of NaN
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"train.{name} must be a finite number, got {getattr(self, name)}")
        if self.lr > MAX_LR:
            raise ConfigError(f"train.lr must be at most {MAX_LR:g}, got {self.lr:g}")


def mean_pool(embeddings: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """Frame embeddings float32 (V, F, D) -> one feature per video, float32 (V, D): the mean over each video's own
    frames, the first counts[v] (int (V,); None: all F). Embeddings left in a cache file
    (pipeline.extract.cache.Embeddings) are averaged a block of videos at a time, over the frame counts they carry
    (a cache sampled by frame rate pads its rows)."""
    if in_memory(embeddings):
        return masked_mean(embeddings, counts)
    return embeddings.mean(axis=1, dtype=np.float32)


def frame_counts(x) -> np.ndarray | None:
    """int64 (V,): how many of each row's F frames are its own, for frames x left in a cache sampled by frame rate
    (Embeddings.counts); None where every row has all F (an array, or a cache sampled by num_frames)."""
    return getattr(x, "counts", None)


def frame_mask(x: torch.Tensor, counts: torch.Tensor | np.ndarray | None) -> torch.Tensor | None:
    """bool (B, F): which frames of x (B, F, D) are the videos' own, or None when all are (counts None)."""
    if counts is None or x.dim() != 3:
        return None
    return torch.arange(x.shape[1]) < torch.as_tensor(counts)[:, None]


def masked_time_mean(x: torch.Tensor, mask: torch.Tensor | None, dim: int = 1) -> torch.Tensor:
    """The mean of x over its time axis `dim` (1: (B, F, D); 2: (B, H, F)), over the frames `mask` (B, F) keeps."""
    if mask is None:
        return x.mean(dim=dim)
    weights = mask.to(x.dtype).unsqueeze(-1 if dim == 1 else 1)  # (B, F, 1) or (B, 1, F)
    return (x * weights).sum(dim=dim) / weights.sum(dim=dim).clamp_min(1)


class LinearModule(nn.Module):
    """Pooling over time, standardisation, one linear layer: frames (B, F, D) -> logits (B, C).

    pooling "mean": the mean frame (order-blind; pooled input (B, D) is accepted too). "attention": frames plus a
    learned position embedding (num_frames, D), weighted by a learned softmax over time. "conv": a 1-D convolution
    over time (kernel 3, `hidden` channels, ReLU), then the mean. num_frames: F, the frames of a clip (the cache's
    num_frames, which every caller passes: the head knows nothing of the sampling). The standardisation (buffers
    `mean` and `std`, (D,), fixed from the training features) makes the learning rate independent of the encoder's
    embedding scale, as StandardScaler does for the logistic-regression baseline.
    """

    def __init__(self, dim: int, num_classes: int, pooling: str, num_frames: int, hidden: int = 128):
        super().__init__()
        if pooling not in TEMPORAL_POOLINGS:
            raise ConfigError(f"train.head must be one of {TEMPORAL_POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        if pooling == "attention":
            self.position = nn.Parameter(torch.zeros(num_frames, dim))
            self.score = nn.Linear(dim, 1)
        if pooling == "conv":
            self.conv = nn.Conv1d(dim, hidden, kernel_size=3, padding=1)
        self.fc = nn.Linear(hidden if pooling == "conv" else dim, num_classes)

    def forward(self, x: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
        """counts int (B,): each video's own frames, the first of its F (a cache sampled by frame rate pads the
        rest; none of them counts); None: all F."""
        mask = frame_mask(x, counts)
        if self.pooling == "mean":
            return self.fc(((masked_time_mean(x, mask) if x.dim() == 3 else x) - self.mean) / self.std)
        z = (x - self.mean) / self.std  # (B, F, D)
        if self.pooling == "attention":
            z = z + self.position[: z.shape[1]]
            scores = self.score(z).squeeze(-1)  # (B, F)
            weights = torch.softmax(scores if mask is None else scores.masked_fill(~mask, -torch.inf), dim=1)
            return self.fc((weights.unsqueeze(-1) * z).sum(dim=1))
        if mask is not None:  # padding as the convolution's own zero padding: each video's outputs as if alone
            z = z * mask.unsqueeze(-1)
        return self.fc(masked_time_mean(torch.relu(self.conv(z.transpose(1, 2))), mask, dim=2))  # (B, H, F) -> (B, H)


def in_memory(x) -> bool:
    """Whether frames x are an array, rather than rows left in a file read as they are needed (Embeddings)."""
    return isinstance(x, np.ndarray)


@torch.no_grad()
def module_logits(module: nn.Module, x) -> torch.Tensor:
    """module on all of x: at once for an array, a block of rows at a time for Embeddings (memory stays flat)."""
    if in_memory(x):
        return module(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
    return torch.cat([module(torch.from_numpy(block), x.block_counts(start, len(block)))
                      for start, block in x.blocks()])


def _rows(x, rows: torch.Tensor) -> tuple[torch.Tensor, np.ndarray | None]:
    """Rows of x, a tensor or Embeddings (read from the file), as a float32 tensor, and their frame counts (None:
    all F)."""
    if isinstance(x, torch.Tensor):
        return x[rows], None
    counts = frame_counts(x)
    return torch.from_numpy(np.asarray(x[rows.numpy()])), None if counts is None else counts[rows.numpy()]


def _frame_stats(x) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (D,) over every frame of x (N, F, D) that is a video's own (not padding); a
    block at a time for Embeddings."""
    if in_memory(x):
        frames = x.reshape(-1, x.shape[-1])
        return frames.mean(axis=0), frames.std(axis=0)
    total, squares, n = 0.0, 0.0, 0
    for start, block in x.blocks():
        counts = x.block_counts(start, len(block))
        own = block if counts is None else block[np.arange(block.shape[1]) < counts[:, None]][None]
        frames = own.reshape(-1, own.shape[-1]).astype(np.float64)
        total, squares, n = total + frames.sum(axis=0), squares + (frames ** 2).sum(axis=0), n + len(frames)
    mean = total / n
    return mean.astype(np.float32), np.sqrt(np.maximum(squares / n - mean ** 2, 0)).astype(np.float32)


@dataclass
class Trained:
    """One trained LinearModule: the state with the best validation loss, the final one, per-epoch history."""

    best: LinearModule
    final: LinearModule
    best_epoch: int
    history: list[dict] = field(default_factory=list)


def train_linear(tasks: list[tuple[np.ndarray, np.ndarray]], num_classes: int, cfg: LinearConfig,
                 text_init: np.ndarray | None = None, x_val=None, y_val: np.ndarray | None = None) -> list[Trained]:
    """Train one LinearModule (pooling cfg.head) per task with Adam and cross-entropy, all K in one loop.

    tasks: (frames float32 (N_k, F, D), or for mean pooling pooled features (N_k, D); int labels (N_k,)). Frames may
    be Embeddings left in the cache file (mini-batches are read as needed). Each head is what it would be trained
    alone: the same initial weights (seeded by cfg.seed), its own standardisation, its own shuffle (a generator
    seeded by cfg.seed), mini-batches of cfg.batch_size, and torch's Adam (torch.optim.adam.adam, the function
    torch.optim.Adam.step calls, without the class: its first use imports torch._dynamo, a second) stepping each
    head only at its own batches, so a head with fewer batches keeps its own step count and moments. Mean pooling
    runs the K heads as one batched matmul with the cross-entropy's gradient written out (_mean_step); attention
    and conv through autograd.

    x_val, y_val (one task only): history gets val_loss and val_accuracy and `best` is the lowest val_loss's state;
    without them, best is final. text_init (C, D), unit-length class text embeddings, starts a mean-pooling head
    as the zero-shot head: no standardisation but a division by the typical feature length, and weights = CLIP's
    temperature x the text embeddings, so that training begins from the zero-shot answer.
    """
    assert x_val is None or len(tasks) == 1, "a validation set is for one task at a time"
    if cfg.head not in TEMPORAL_POOLINGS:
        raise ConfigError(f"train.head must be one of {TEMPORAL_POOLINGS}, got {cfg.head!r}")
    mean = cfg.head == "mean"
    for x, _ in tasks:
        if not mean and x.ndim != 3:
            raise ConfigError(f"the {cfg.head} head needs frame embeddings (N, F, D), got {x.shape}")
    if text_init is not None and not mean:
        raise ConfigError("a zero-shot start needs mean pooling")
    # the mean head sees only the mean frame: pool once, F times less data
    xs = [mean_pool(x) if mean and x.ndim == 3 else x for x, _ in tasks]
    frames = tasks[0][0].shape[1] if tasks[0][0].ndim == 3 else 1
    torch.manual_seed(cfg.seed)
    start = LinearModule(xs[0].shape[-1], num_classes, cfg.head, frames).state_dict()
    modules = [_standardised(LinearModule(xs[0].shape[-1], num_classes, cfg.head, frames), start, x, text_init)
               for x in xs]
    k, size, dim = len(tasks), cfg.batch_size, xs[0].shape[-1]
    lengths = [len(x) for x in xs]
    ys = [torch.from_numpy(y.astype(np.int64)) for _, y in tasks]
    steps = [-(-n // size) for n in lengths]  # each head's batches per epoch
    active = [[i for i in range(k) if s < steps[i]] for s in range(max(steps))]  # the heads with a batch at step s
    if mean:
        # one parameter per head, weight and bias (C, D + 1), over standardised features with a constant 1 appended,
        # zero-padded to (K * N_max, D + 1): head i's rows from i * N_max
        longest = max(lengths)
        z = torch.zeros(k * longest, dim + 1)
        y_all = torch.zeros(k * longest, dtype=torch.int64)
        for i, (x, module) in enumerate(zip(xs, modules)):
            rows = slice(i * longest, i * longest + lengths[i])
            z[rows, :dim] = (torch.from_numpy(np.asarray(x, np.float32)) - module.mean) / module.std
            z[rows, dim] = 1.0
            y_all[rows] = ys[i]
        wb = torch.stack([torch.cat([m.fc.weight, m.fc.bias[:, None]], dim=1) for m in modules]).detach()
        params = [[wb[i]] for i in range(k)]  # (C, D + 1) views of wb (K, C, D + 1): Adam steps each head alone
        slots = torch.arange(len(active) * size)
        mask = (slots < torch.tensor(lengths)[:, None]).float().view(k, -1, size).transpose(0, 1)  # (S, K, B)
        counts = mask.sum(dim=2)  # (S, K): each head's batch size at step s (0: no batch)
        scale = (mask / counts.clamp_min(1)[..., None])[..., None]  # (S, K, B, 1): each head's mean over its batch
    else:
        inputs = [torch.from_numpy(np.ascontiguousarray(x, np.float32)) if in_memory(x) else x for x in xs]
        params = [list(m.parameters()) for m in modules]
    moments = [[(torch.zeros_like(p), torch.zeros_like(p), torch.tensor(0.0)) for p in ps] for ps in params]
    all_params = [p for ps in params for p in ps]
    # what Adam steps at step s of every epoch: the parameters of the heads with a batch, their moments and counts
    state = [tuple(list(x) for x in zip(*[(p, *m) for i in heads for p, m in zip(params[i], moments[i])]))
             for heads in active]
    gens = [torch.Generator().manual_seed(cfg.seed) for _ in tasks]
    has_val = x_val is not None and len(x_val) > 0
    if has_val:
        val = mean_pool(x_val) if mean and x_val.ndim == 3 else x_val
        yv = torch.from_numpy(y_val.astype(np.int64))
    best_loss, best, best_epoch, histories = float("inf"), None, 0, [[] for _ in tasks]
    for epoch in range(1, cfg.epochs + 1):
        perms = [torch.randperm(n, generator=g) for n, g in zip(lengths, gens)]  # each head's own shuffle
        totals = torch.zeros(k)
        if mean:  # the rows of every step, head by head: head i's shuffled rows fill slots [0, n_i) of (S, B)
            index = torch.zeros(k, len(slots), dtype=torch.int64)
            for i, perm in enumerate(perms):
                index[i, :lengths[i]] = perm + i * longest
            index = index.view(k, -1, size).transpose(0, 1)  # (S, K, B)
        else:
            batches = [perm.split(size) for perm in perms]
            for m in modules:
                m.train()
        for s, heads in enumerate(active):
            if mean:
                losses, grads = _mean_step(wb, z[index[s]], y_all[index[s]], mask[s], scale[s], heads)
                sizes = counts[s]
            else:
                losses = torch.stack([nn.functional.cross_entropy(modules[i](*_rows(inputs[i], batches[i][s])),
                                                                  ys[i][batches[i][s]]) if i in heads
                                      else torch.zeros(()) for i in range(k)])
                sizes = torch.tensor([len(batches[i][s]) if i in heads else 0 for i in range(k)])
                losses.sum().backward()  # each head's parameters get the gradient of its own loss only
                grads = [p.grad for i in heads for p in params[i]]
            ps, avgs, squares, counters = state[s]
            with torch.no_grad():  # the heads without a batch at this step are not passed: Adam leaves them as is
                adam(ps, grads, avgs, squares, [], counters, foreach=True, amsgrad=False, beta1=ADAM_BETAS[0],
                     beta2=ADAM_BETAS[1], lr=cfg.lr, weight_decay=cfg.weight_decay, eps=ADAM_EPS, maximize=False)
            for p in all_params:
                p.grad = None
            totals += losses.detach() * sizes
        if not torch.isfinite(totals).all():
            _diverged(cfg, epoch, z if mean else None)
        for i, total in enumerate(totals.tolist()):
            histories[i].append({"epoch": epoch, "train_loss": total / lengths[i]})
        if has_val:
            if mean:
                _write_back(modules[:1], params[:1], dim)
            modules[0].eval()
            logits = module_logits(modules[0], val)
            row = histories[0][-1]
            row["val_loss"] = nn.functional.cross_entropy(logits, yv).item()
            row["val_accuracy"] = (logits.argmax(1) == yv).float().mean().item()
            if row["val_loss"] < best_loss:
                best_loss, best_epoch = row["val_loss"], epoch
                best = {key: v.clone() for key, v in modules[0].state_dict().items()}
    if mean:
        _write_back(modules, params, dim)
    if not all(torch.isfinite(p).all() for m in modules for p in m.parameters()):  # the last step's update
        _diverged(cfg, cfg.epochs, z if mean else None)
    results = []
    for i, module in enumerate(modules):
        module.eval()
        if best is None or i > 0:
            results.append(Trained(module, module, cfg.epochs, histories[i]))
        else:
            kept = LinearModule(dim, num_classes, cfg.head, frames)
            kept.load_state_dict(best)
            results.append(Trained(kept.eval(), module, best_epoch, histories[i]))
    return results


def _diverged(cfg: LinearConfig, epoch: int, inputs: torch.Tensor | None) -> None:
    """Training went non-finite at `epoch`: DataError when the (in-memory) inputs hold NaN or infinity, otherwise
    ConfigError naming the settings that made it diverge. Nothing non-finite is returned, so none is saved."""
    if inputs is not None and not torch.isfinite(inputs).all():
        raise DataError("the training features hold numbers that are not finite (NaN or infinity): re-encode the "
                        "cache (dvc repro extract)")
    raise ConfigError(f"training diverged at epoch {epoch}: the loss or the weights became NaN or infinite with "
                      f"train.lr {cfg.lr:g} and train.weight_decay {cfg.weight_decay:g}; lower train.lr")


@torch.no_grad()
def _mean_step(wb: torch.Tensor, z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, scale: torch.Tensor,
               heads: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The mean-pooling heads' step: each head's mean cross-entropy on its batch, float32 (K,), and the gradients
    (C, D + 1) of the heads with a batch. The K heads' logits are one batched matmul of their weights wb
    (K, C, D + 1) with their batches z (K, B, D + 1) (labels y (K, B), padding masked out: mask (K, B), scale the
    mask over each batch's size), and the cross-entropy's gradient is written out (softmax minus one-hot: what
    autograd computes, without building its graph at each of the thousands of steps)."""
    log_p = torch.log_softmax(torch.bmm(z, wb.transpose(1, 2)), dim=2)  # (K, B, C)
    losses = -(log_p.gather(2, y[..., None])[..., 0] * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)
    d_logits = log_p.exp_().scatter_add_(2, y[..., None], torch.full_like(log_p[..., :1], -1.0)).mul_(scale)
    grad = torch.bmm(d_logits.transpose(1, 2), z)  # (K, C, D + 1)
    return losses, [grad[i] for i in heads]


def _write_back(modules: list[LinearModule], params: list[list[torch.Tensor]], dim: int) -> None:
    """Each mean-pooling head's trained (C, D + 1) parameter into its module's fc.weight and fc.bias."""
    with torch.no_grad():
        for module, (wb,) in zip(modules, params):
            module.fc.weight.copy_(wb[:, :dim])
            module.fc.bias.copy_(wb[:, dim])


def _standardised(module: LinearModule, start: dict, x, text_init: np.ndarray | None) -> LinearModule:
    """module with the initial weights `start` and the standardisation of training inputs x (pooled (N, D) for
    mean pooling, frames otherwise), or the zero-shot start (text_init: see train_linear)."""
    module.load_state_dict(start)
    mean, std = (x.mean(axis=0), x.std(axis=0)) if module.pooling == "mean" else _frame_stats(x)
    module.mean.copy_(torch.from_numpy(np.asarray(mean, np.float32)))
    module.std.copy_(torch.from_numpy(np.asarray(std + 1e-6, np.float32)))
    if text_init is not None:
        module.mean.zero_()
        module.std.fill_(float(np.linalg.norm(x, axis=1).mean()))  # x / |x| on average: the zero-shot cosine
        with torch.no_grad():
            module.fc.weight.copy_(torch.from_numpy(LOGIT_SCALE * text_init))
            module.fc.bias.zero_()
    return module
