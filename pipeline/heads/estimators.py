"""Heads shaped like scikit-learn estimators (Head; the linear and zero-shot heads): fit, predict, save, rebuild."""
from __future__ import annotations

import os
from dataclasses import asdict, replace
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from pipeline.extract.cache import KEY_ATTRS, RANDOM_WEIGHTS
from pipeline.heads.calibration import Calibration, CalibrationConfig, fit_calibration, softmax, sure_threshold
from pipeline.errors import DataError, HeadError
from pipeline.heads.head_files import HEAD_SCHEMA, HeadMeta, write_head_file
from pipeline.heads.training import (LOGIT_SCALE, TEMPORAL_POOLINGS, LinearConfig, LinearModule, frame_mask,
                                     in_memory, masked_time_mean, mean_pool, module_logits, train_linear)

__all__ = ["HEAD_SCHEMA", "HeadMeta"]  # (re-exported: their home is pipeline.heads.head_files)
# What a head does not need to share with the cache or encoder it is used with, of the cache's key: the encoder's
# id (the fingerprint is its identity, and the same weights may sit in another directory), precision and device (a
# head trained on GPU features serves on the CPU; bench/README.md gives the difference), the cache's storage dtype
# (float16 storage rounds what the encoder computed) and the batch size of stage one.
IGNORED_KEYS = ("encoder_model", "precision", "device_type", "dtype", "batch_size")
MATCH_KEYS = tuple(k for k in KEY_ATTRS if k not in IGNORED_KEYS)
# Recorded beside them, not matched: how the features were computed, so pipeline.tools.predict can do the same.
# random_weights: a CLIP built by `python -m pipeline.embed.encoder` (its numbers mean nothing;
# pipeline/extract/cache.py).
# encoder_family: clip or siglip (pipeline.embed.hub.FAMILIES; the fingerprint already tells them apart).
RECORDED_KEYS = (*IGNORED_KEYS, RANDOM_WEIGHTS, "encoder_family")
# LinearHead.refit trains tasks together while their stacked float32 features stay within this (the five folds of
# a 240,000-video cache would otherwise be 2 GiB at once; the demo's are 0.5 MiB)
BATCHED_BYTES = 256 * 2 ** 20
NOT_FINITE = ("the embeddings hold numbers that are not finite (NaN or infinity), or so large that the head's scores "
              "overflow: re-encode them (dvc repro extract)")


class NotFittedError(ValueError, AttributeError):
    """A head used before fit (or load_head): as scikit-learn's."""


def features_of(attrs: dict) -> dict:
    """The cache attributes (or an encoder's describe() plus num_frames and sampling) a head records: every
    MATCH_KEYS (KeyError without one) and the RECORDED_KEYS present."""
    return {**{k: attrs[k] for k in RECORDED_KEYS if k in attrs}, **{k: attrs[k] for k in MATCH_KEYS}}


class Head:
    """What every head shares: fitted (fit or load_head), it has `meta_` (HeadMeta) and answers predict_proba. Its
    class tells the head-file door (pipeline.heads.head_files) what a file of its kind holds (poolings,
    optional_state, state_shapes, check_weights) and rebuilds the fitted head from a checked file's tensors and
    metadata (from_state(meta, state)); a trained kind's class refits itself for evaluate (refit). The registry of
    these classes: pipeline.heads.kinds."""

    kind: ClassVar[str]
    pooling = "mean"  # the heads that see the mean frame also take pooled features (V, D)
    poolings: ClassVar[tuple[str, ...]] = ("mean",)  # those its file may name
    optional_state: ClassVar[tuple[str, ...]] = ()  # tensors a file saved by an older version may lack
    index_state: ClassVar[tuple[str, ...]] = ()  # tensors of whole numbers (checked by state_shapes), not weights

    @classmethod
    def state_shapes(cls, at: str, meta: HeadMeta, state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
        """{name: shape} of the tensors a file of its kind holds, from its checked metadata; HeadError naming `at`."""
        raise NotImplementedError

    @classmethod
    def check_weights(cls, at: str, meta: HeadMeta, state: dict[str, torch.Tensor]) -> None:
        """HeadError naming `at` for values no head of its kind holds, past the door's checks (none by default)."""

    def _load_module(self, module: nn.Module, state: dict[str, torch.Tensor], meta: HeadMeta) -> Head:
        module.load_state_dict(state)  # its shapes were checked: it fits
        self.module_, self.meta_ = module.eval(), meta
        return self

    def _fitted(self) -> HeadMeta:
        if not hasattr(self, "meta_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(...) or load_head(path)")
        return self.meta_

    @property
    def classes_(self) -> list[str]:
        return list(self._fitted().class_names)

    @property
    def calibration_(self) -> Calibration | None:
        return self._fitted().calibration

    @property
    def temperature_(self) -> float:
        return self.calibration_.temperature if self.calibration_ else 1.0

    @property
    def not_sure_below_(self) -> float:
        """Calibrated top probability under which the answer is "not sure": the calibration's fraction of the way
        from chance to certainty for this head's classes (uncalibrated, as a zero-shot head made in the app from
        typed actions: CalibrationConfig's default)."""
        fraction = (self.calibration_.not_sure_below_chance_to_certain if self.calibration_
                    else CalibrationConfig.not_sure_below_chance_to_certain)
        return sure_threshold(float(fraction), len(self.classes_))

    def logits(self, embeddings) -> np.ndarray:
        """Frame embeddings float32 (V, F, D) (an array or Embeddings left in the cache file), or for a head that
        pools by the mean their mean-pooled features (V, D) -> scores float32 (V, C) whose softmax is the
        uncalibrated probability. HeadError for another shape; DataError (NOT_FINITE) for embeddings with NaN or
        infinity, or scores that overflow."""
        meta = self._fitted()
        dim, pooled = meta.features["embedding_dim"], self.pooling == "mean"
        if embeddings.shape[-1] != dim or embeddings.ndim != 3 and not (pooled and embeddings.ndim == 2):
            raise HeadError(f"expected embeddings (videos, frames, {dim})"
                            + (f" or pooled (videos, {dim})" if pooled else "") + f", got {embeddings.shape}")
        x = mean_pool(embeddings) if pooled and embeddings.ndim == 3 else embeddings
        if in_memory(x) and not np.isfinite(x).all():  # (rows left in a file: their scores are checked)
            raise DataError(NOT_FINITE)
        scores = self._scores(x)
        if not np.isfinite(scores).all():  # so that no NaN or infinity reaches an answer, a metric or JSON
            raise DataError(NOT_FINITE)
        return scores

    def _scores(self, x) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, embeddings, calibrated: bool = True) -> np.ndarray:
        """Embeddings (as for logits) -> class probabilities float32 (V, C), divided by the temperature fitted on
        the validation part (temperature_) unless calibrated=False."""
        return softmax(self.logits(embeddings) / (self.temperature_ if calibrated else 1.0))

    def predict(self, embeddings) -> np.ndarray:
        """Embeddings (as for logits) -> int classes (V,): indices into classes_."""
        return self.logits(embeddings).argmax(axis=1)

    def calibrate(self, val_embeddings, val_labels: np.ndarray, not_sure_below: float,
                  train_labels: np.ndarray | None = None) -> Head:
        """Fit calibration_ on the validation part (pipeline.heads.calibration.fit_calibration; train_labels: the data
        counts of training, None for a head trained on none) and return the head."""
        cal = fit_calibration(self.logits(val_embeddings), val_labels, not_sure_below, train_labels)
        self.meta_ = replace(self._fitted(), calibration=cal)
        return self

    def use_calibration(self, calibration: Calibration | None) -> Head:
        """The head with a calibration fitted elsewhere (the app's zero-shot head over typed actions takes the saved
        zero-shot head's), returned."""
        self.meta_ = replace(self._fitted(), calibration=calibration)
        return self

    def check_compatible(self, attrs: dict, class_names: list[str] | None = None, what: str = "cache",
                         source: str | os.PathLike | None = None) -> None:
        """HeadError naming the first difference between the head's features and a cache's (or an encoder's)
        attributes in MATCH_KEYS, or between their classes; `source`, the head's file, opens the message."""
        meta, at = self._fitted(), f"{source}: " if source is not None else ""
        for key in MATCH_KEYS:
            if key in attrs and meta.features.get(key) != attrs[key]:
                raise HeadError(f"{at}the {meta.kind} head was trained with {key}={meta.features.get(key)!r} but "
                                f"the {what} has {attrs[key]!r}: retrain the head (dvc repro)")
        if class_names is not None and list(class_names) != list(meta.class_names):
            raise HeadError(f"{at}the head's classes {meta.class_names} differ from the {what}'s "
                            f"{list(class_names)}")

    def save(self, path: str | os.PathLike) -> None:
        """Write the head where load_head reads it back: a .pt of {"state_dict": tensors, "meta": plain types},
        loadable with weights_only=True (pipeline.heads.head_files.write_head_file: checked first, HeadError for
        a head that would not load, a non-finite weight included; never half-written)."""
        write_head_file(path, self._state(), self._fitted(), asdict(self._fitted()), type(self))

    def _state(self) -> dict[str, torch.Tensor]:
        """The tensors the head is saved as (a torch head: its module's state dict)."""
        return self.module_.state_dict()


class LinearHead(Head):
    """Pooling over time (cfg.head: mean, attention or conv) and one linear layer, trained with Adam
    (pipeline.heads.training). text_init (C, D): start from the zero-shot answer (mean pooling; see train_linear).
    Fitted: module_ (the LinearModule with the best validation loss), final_ (the last epoch's), best_epoch_,
    history_ (a dict per epoch: train_loss, and with a validation set val_loss and val_accuracy)."""

    kind = "linear"
    poolings = TEMPORAL_POOLINGS

    def __init__(self, cfg: LinearConfig | None = None, text_init: np.ndarray | None = None):
        self.cfg = cfg or LinearConfig()
        self.text_init = text_init
        self.pooling = self.cfg.head

    def fit(self, x, y: np.ndarray, class_names: list[str], features: dict, x_val=None,
            y_val: np.ndarray | None = None) -> LinearHead:
        """Train on frames float32 (N, F, D) (an array or Embeddings; for mean pooling, pooled (N, D) too) and int
        labels (N,); with x_val, y_val, keep the epoch of the lowest validation loss."""
        trained = train_linear([(x, y)], len(class_names), self.cfg, self.text_init, x_val, y_val)[0]
        self.module_, self.final_, self.best_epoch_, self.history_ = (trained.best, trained.final,
                                                                      trained.best_epoch, trained.history)
        self.meta_ = HeadMeta(self.kind, list(class_names), features_of(features), self.cfg.head, trained.best_epoch)
        return self

    def final_head(self) -> LinearHead:
        """The same head at its last epoch (uncalibrated)."""
        head = LinearHead(self.cfg, self.text_init)
        head.module_ = self.final_
        head.meta_ = replace(self._fitted(), epoch=len(self.history_), calibration=None)
        return head

    def _scores(self, x) -> np.ndarray:
        return module_logits(self.module_, x).numpy()

    @classmethod
    def state_shapes(cls, at: str, meta: HeadMeta, state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
        """Its LinearModule's state dict, the module built on torch's meta device (nothing allocated)."""
        with torch.device("meta"):
            module = cls._module(meta)
        return {k: tuple(v.shape) for k, v in module.state_dict().items()}

    @classmethod
    def from_state(cls, meta: HeadMeta, state: dict[str, torch.Tensor]) -> LinearHead:
        return cls(LinearConfig(head=meta.pooling))._load_module(cls._module(meta), state, meta)

    @staticmethod
    def _module(meta: HeadMeta) -> LinearModule:
        return LinearModule(int(meta.features["embedding_dim"]), len(meta.class_names), meta.pooling,
                            int(meta.features["num_frames"]))

    @classmethod
    def refit(cls, tasks: list[tuple], num_classes: int, cfg: LinearConfig, text_init=None) -> list[np.ndarray]:
        """Frames (N, F, D) (or pooled (N, D) for mean pooling), each final state kept (no validation part in a fold),
        the tasks trained together (train_linear) in groups whose stacked features stay within BATCHED_BYTES."""
        groups, size = [[]], 0  # tasks trained together, their stacked features within BATCHED_BYTES
        for task in tasks:
            rows = len(task[0]) * task[0].shape[-1] * 4 * (task[0].shape[1] if cfg.head != "mean"
                                                          and task[0].ndim == 3 else 1)
            if groups[-1] and size + rows > BATCHED_BYTES:
                groups.append([])
                size = 0
            groups[-1].append(task)
            size += rows
        preds = []
        for group in groups:
            trained = train_linear([(xt, yt) for xt, yt, _ in group], num_classes, cfg, text_init)
            for (_, _, xs), t in zip(group, trained):
                x = mean_pool(xs) if cfg.head == "mean" and xs.ndim == 3 else xs
                preds.append(module_logits(t.final, x).argmax(1).numpy())
        return preds


class ZeroShotModule(nn.Module):
    """Mean pooling over time, unit length, cosine to each class's text embedding, scored the checkpoint's way:
    (B, F, D) or pooled (B, D) -> logits (B, C) = scale * cos + bias (CLIP: softmax over these), or their
    log-sigmoid when `sigmoid` is 1 (SigLIP: each class's own sigmoid probability; their softmax is that
    probability normalised over the classes). Buffers only: `text` (C, D), `scale`, `bias`, `sigmoid` (); nothing is
    trained."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.register_buffer("text", torch.zeros(num_classes, dim))
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("bias", torch.tensor(0.0))
        self.register_buffer("sigmoid", torch.tensor(0.0))

    def forward(self, x: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() == 3:
            x = masked_time_mean(x, frame_mask(x, counts))  # (B, F, D) -> (B, D), over each video's own frames
        z = self.scale * (x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)) @ self.text.T + self.bias
        return nn.functional.logsigmoid(z) if bool(self.sigmoid) else z


class ZeroShotHead(Head):
    """Videos scored by the cosine of their mean frame embedding to each class's text embedding, the way the
    checkpoint's family scores (nothing learned from videos; pipeline.heads.zeroshot makes the text side). Fitted:
    module_ (ZeroShotModule)."""

    kind = "zeroshot"
    optional_state = ("bias", "sigmoid")  # a zero-shot head saved before SigLIP: CLIP's scoring, no bias

    def __init__(self, templates: tuple[str, ...] = ()):
        self.templates = templates

    def fit(self, text_emb: np.ndarray, class_names: list[str], features: dict, scale: float = LOGIT_SCALE,
            bias: float = 0.0, sigmoid: bool = False) -> ZeroShotHead:
        """From unit-length text embeddings float32 (C, D), one per class, for features made as `features` say;
        scale, bias, sigmoid: the checkpoint's scoring (ZeroShotModule; the defaults: CLIP's published one)."""
        self.module_ = ZeroShotModule(text_emb.shape[1], len(class_names))
        self.module_.text.copy_(torch.from_numpy(text_emb))
        self.module_.scale.fill_(scale)
        self.module_.bias.fill_(bias)
        self.module_.sigmoid.fill_(float(sigmoid))
        self.module_.eval()
        self.meta_ = HeadMeta(self.kind, list(class_names), features_of(features),
                              templates=list(self.templates))
        return self

    @property
    def text_(self) -> np.ndarray:
        """The class text embeddings, float32 (C, D)."""
        self._fitted()
        return self.module_.text.numpy()

    def _scores(self, x) -> np.ndarray:
        return module_logits(self.module_, x).numpy()

    @classmethod
    def state_shapes(cls, at: str, meta: HeadMeta, state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
        return {"text": (len(meta.class_names), int(meta.features["embedding_dim"])), "scale": (), "bias": (),
                "sigmoid": ()}

    @classmethod
    def from_state(cls, meta: HeadMeta, state: dict[str, torch.Tensor]) -> ZeroShotHead:
        module = ZeroShotModule(meta.features["embedding_dim"], len(meta.class_names))
        state = {"bias": torch.tensor(0.0), "sigmoid": torch.tensor(0.0), **state}  # optional_state: CLIP's scoring
        return cls(tuple(meta.templates or ()))._load_module(module, state, meta)
