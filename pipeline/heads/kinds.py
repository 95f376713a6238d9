"""The registry of head kinds, one entry each (its estimator, file, label, stage and how evaluate refits it), and
load_head: the stages, predict, the app, evaluate and the head-file door read kinds here and nowhere else."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.heads.estimators import Head, LinearHead, ZeroShotHead
from pipeline.heads.head_files import read_head_file
from pipeline.heads.logreg import LogRegConfig, LogRegHead
from pipeline.heads.training import LinearConfig
from pipeline.paths import HEAD_FILES


@dataclass(frozen=True)
class HeadKind:
    """One kind of head. name: the key of paths.HEAD_FILES (its file), `--head`, the metrics' columns and a head
    file's `kind`; label: how the app and messages call it; estimator: its class (pipeline.heads.estimators: what its
    file holds, how it is rebuilt from one and refitted); stage: its DVC stage, which writes its file; config: a
    trained kind's settings, params.yaml's section of the stage's name (None: made from text alone, never fitted on
    the cache's videos); from_text: evaluate's data-efficiency curve also shows it started from the class text
    embeddings of each untrained kind (`<name>_from_<that kind>`; docs/heads.md)."""

    name: str
    label: str
    estimator: type[Head]
    stage: str
    config: type | None = None
    from_text: bool = False

    @property
    def file(self) -> str:
        return HEAD_FILES[self.name]

    @property
    def trained(self) -> bool:
        """Fitted on the cache's videos by its own stage (False: made from text alone)."""
        return self.config is not None

    def refit(self, cfg, num_classes: int, head: Head | None = None,
              text_init: np.ndarray | None = None) -> Callable[[list[tuple]], list[np.ndarray]]:
        """How evaluate refits this kind on each fold or subset: tasks [(x_train, y_train, x_test), ...] -> int
        predictions (M_k,) per task. A trained kind: fresh estimators fitted with cfg (its stage's config; text_init
        (C, D): started from class text embeddings); an untrained one: `head`, the saved one, answering each x_test
        (nothing to fit: the same text embeddings score every fold)."""
        if not self.trained:
            return lambda tasks: [head.predict(xs) for _, _, xs in tasks]
        return lambda tasks: self.estimator.refit(tasks, num_classes, cfg, text_init)


HEADS = {kind.name: kind for kind in (
    HeadKind("linear", "linear head", LinearHead, "train", LinearConfig, from_text=True),
    HeadKind("logreg", "logistic regression", LogRegHead, "baseline", LogRegConfig),
    HeadKind("zeroshot", "zero-shot", ZeroShotHead, "zeroshot"),
)}
TRAINED = tuple(name for name, kind in HEADS.items() if kind.trained)
# the kind made from text alone: the app also makes one from the actions a user types (pipeline.heads.zeroshot)
(FROM_TEXT,) = (name for name, kind in HEADS.items() if not kind.trained)
assert set(HEADS) == set(HEAD_FILES), "every head file has its kind here"
assert all(kind.estimator.kind == name for name, kind in HEADS.items()), "a head file's kind names its estimator"


def load_head(path: str | os.PathLike) -> Head:
    """A head saved by Head.save (a .pt, loaded with weights_only=True), rebuilt by its kind's estimator
    (from_state) once pipeline.heads.head_files.read_head_file has checked its tensors and metadata: HeadError naming
    the file when it is missing, an old .joblib, damaged, not a head this project wrote, of a kind not in HEADS, of
    another format version, or inconsistent."""
    state, meta = read_head_file(path, HEADS)
    return HEADS[meta.kind].estimator.from_state(meta, state)


def fit_predict_many(tasks: list[tuple[np.ndarray, np.ndarray, np.ndarray]], num_classes: int, cfg,
                     text_init: np.ndarray | None = None) -> list[np.ndarray]:
    """The refit (its estimator's: LinearHead.refit, LogRegHead.refit) of the trained kind whose config cfg is, for
    callers that hold a config alone (bench/, the tests; the evaluate stage goes through HeadKind.refit): tasks
    [(x_train, y_train, x_test), ...] -> int predictions (M_k,) per task."""
    (kind,) = (k for k in HEADS.values() if k.config is not None and isinstance(cfg, k.config))
    return kind.estimator.refit(tasks, num_classes, cfg, text_init)
