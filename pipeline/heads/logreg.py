"""The logistic-regression baseline (scikit-learn) as a head: fitted on mean-pooled features, saved as plain arrays."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.errors import ConfigError, DataError, HeadError, number
from pipeline.heads.estimators import NOT_FINITE, Head, features_of
from pipeline.heads.head_files import HeadMeta
from pipeline.heads.training import mean_pool


@dataclass
class LogRegConfig:
    """Settings of the logistic-regression baseline (params.yaml: baseline.*)."""

    C: float = 1.0
    max_iter: int = 1000

    def __post_init__(self) -> None:  # ConfigError naming the setting (not scikit-learn's InvalidParameterError)
        self.C, self.max_iter = number(self.C, float, "baseline.C", 1e-12), number(self.max_iter, int,
                                                                                    "baseline.max_iter", 1)
        if not math.isfinite(self.C):
            raise ConfigError(f"baseline.C must be a finite number, got {self.C}")


class LogRegHead(Head):
    """Standardised mean-pooled features, then multinomial logistic regression (scikit-learn). Fitted: model_ (the
    sklearn pipeline). Saved as plain arrays (_state, in the dtypes fitted, so the rebuilt model's probabilities are
    the same numbers) and rebuilt on load (from_state); never pickled."""

    kind = "logreg"
    index_state = ("classes",)  # indices into the class names

    def __init__(self, cfg: LogRegConfig | None = None):
        self.cfg = cfg or LogRegConfig()

    def fit(self, x: np.ndarray, y: np.ndarray, class_names: list[str] | None = None,
            features: dict | None = None) -> LogRegHead:
        """Train on frames float32 (N, F, D) or pooled features (N, D) and int labels (N,). (scikit-learn is
        imported here: the train stage never needs it, and it takes a second to import.) Without class_names and
        features (a refit that only predicts), the head has no metadata to save."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        pooled = mean_pool(x) if x.ndim == 3 else x
        self.model_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.cfg.C, max_iter=self.cfg.max_iter))
        self.model_.fit(pooled, y)
        names = class_names if class_names is not None else [str(c) for c in range(int(y.max()) + 1)]
        self.meta_ = HeadMeta(self.kind, list(names), features_of(features) if features else {})
        return self

    def _scores(self, x) -> np.ndarray:
        """Log-probabilities (V, C), whose softmax is the model's probability; a class the model never saw (no
        training video) gets a probability of 1e-12, so the columns are always the head's classes."""
        proba = np.full((len(x), len(self.classes_)), 1e-12)
        proba[:, self.model_.classes_] = np.clip(self.model_.predict_proba(x), 1e-12, None)
        return np.log(proba).astype(np.float32)

    def predict(self, embeddings) -> np.ndarray:
        """As Head.predict, through the model's own predict (its labels also when a class had no video)."""
        self._fitted()
        x = mean_pool(embeddings) if embeddings.ndim == 3 else embeddings
        if not np.isfinite(x).all():
            raise DataError(NOT_FINITE)
        return self.model_.predict(x)

    def _state(self) -> dict[str, torch.Tensor]:
        """coef (1 or K, D), intercept (1 or K,), classes int64 (K,), scaler_mean and scaler_scale (D,), each in
        the float dtype scikit-learn fitted it in."""
        scaler, model = self.model_[0], self.model_[-1]
        arrays = {"coef": model.coef_, "intercept": model.intercept_, "scaler_mean": scaler.mean_,
                  "scaler_scale": scaler.scale_}
        state = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}  # their own dtypes: the same sums
        return {**state, "classes": torch.from_numpy(np.asarray(model.classes_, np.int64))}

    @classmethod
    def state_shapes(cls, at: str, meta: HeadMeta, state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
        """_state's arrays for K = its `classes` (checked here: increasing indices into the class names, at least 2):
        coef (1 if K == 2 else K, D) and so on."""
        classes = state.get("classes")
        if classes is None or classes.dim() != 1 or classes.dtype != torch.int64:
            raise HeadError(f"{at}: not a usable head: its model's classes must be a list of class indices")
        c, dim = classes.numpy(), int(meta.features["embedding_dim"])
        if not 2 <= len(c) <= len(meta.class_names) or np.any(np.diff(c) <= 0) or c[0] < 0 \
                or c[-1] >= len(meta.class_names):
            raise HeadError(f"{at}: not a usable head: its model's classes are not increasing indices into its "
                            f"{len(meta.class_names)} class names")
        rows = 1 if len(c) == 2 else len(c)
        return {"coef": (rows, dim), "intercept": (rows,), "classes": (len(c),), "scaler_mean": (dim,),
                "scaler_scale": (dim,)}

    @classmethod
    def check_weights(cls, at: str, meta: HeadMeta, state: dict[str, torch.Tensor]) -> None:
        if not bool((state["scaler_scale"] > 0).all()):
            raise HeadError(f"{at}: not a usable head: its scaler's scale must be above 0")

    @classmethod
    def from_state(cls, meta: HeadMeta, state: dict[str, torch.Tensor]) -> LogRegHead:
        """The sklearn pipeline rebuilt from _state's arrays (checked by pipeline.heads.head_files.check_state)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        head = cls()
        scaler, model = StandardScaler(), LogisticRegression(C=head.cfg.C, max_iter=head.cfg.max_iter)
        scaler.mean_, scaler.scale_ = state["scaler_mean"].numpy(), state["scaler_scale"].numpy()
        scaler.var_, scaler.n_features_in_, scaler.n_samples_seen_ = scaler.scale_ ** 2, len(scaler.mean_), 0
        model.coef_, model.intercept_ = state["coef"].numpy(), state["intercept"].numpy()
        model.classes_, model.n_features_in_ = state["classes"].numpy(), len(scaler.mean_)
        head.model_, head.meta_ = make_pipeline(scaler, model), meta
        return head

    @classmethod
    def refit(cls, tasks: list[tuple], num_classes: int, cfg: LogRegConfig, text_init=None) -> list[np.ndarray]:
        """Pooled features (N, D) (or frames), one task at a time."""
        return [cls(cfg).fit(xt, yt).predict(xs) for xt, yt, xs in tasks]
