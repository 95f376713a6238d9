"""The door of every head file: read with weights_only=True (nothing in it can run code), checked in full (keys,
types, shapes, finite numbers, sane sizes) before anything is built from it, and written only when it would pass."""
from __future__ import annotations

import math
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.errors import HeadError, printable
from pipeline.extract.cache import KEY_ATTRS
from pipeline.heads.calibration import Calibration
from pipeline.paths import HEAD_FILES
# the same bounds as params.yaml's extract.num_frames, batch_size and zeroshot.templates
from pipeline.settings import MAX_BATCH, MAX_FRAMES, MAX_TEMPLATES

if TYPE_CHECKING:  # (pipeline.heads.kinds imports the estimators, which import this module)
    from pipeline.heads.estimators import Head
    from pipeline.heads.kinds import HeadKind

HEAD_SCHEMA = 4  # the layout of a saved head's metadata (4: the HeadMeta record); otherwise: retrain it
HEAD_SUFFIX = ".pt"  # every head: {"state_dict": {name: tensor}, "meta": HeadMeta as plain types}
# Sizes no head this project writes comes near; a file claiming more is refused before anything is allocated for it
# (a 4.7 KB attention head claiming 5e7 frames would otherwise make LinearModule allocate 3.4 GB).
MAX_HEAD_BYTES = 2 ** 30  # a ViT-L zero-shot head over 100,000 classes is 0.3 GiB
MAX_CLASSES = 100_000
MAX_EMBEDDING_DIM = 16_384
# The two below are the bounds params.yaml's extract.num_frames and extract.batch_size are checked against (pipeline
# settings): a head made from an accepted cache always loads.
MAX_TEXT = 65_536  # characters of any string a head carries (a class name, a prompt, a cache attribute)
# The cache attributes a head must carry to be used (predict rebuilds the encoder from them), and the strings
# among them.
REQUIRED_FEATURES = tuple(k for k in KEY_ATTRS if k not in ("precision", "device_type", "dtype", "batch_size"))
STRING_FEATURES = ("encoder_model", "encoder_fingerprint", "sampling", "preprocess", "backend", "quantize")
OLD_LOGREG = (f"a logistic-regression head saved with joblib (pickle) by an older version: this code never opens "
              f"pickles (they can run code); retrain it with `dvc repro baseline` (or `python -m stages.baseline`), "
              f"which writes {HEAD_FILES['logreg']}")


@dataclass
class HeadMeta:
    """What a saved head carries so that it can be used alone: its kind and classes, the cache attributes its
    features were made with (`features`: pipeline.heads.estimators.MATCH_KEYS and RECORDED_KEYS, the cache's
    names), its pooling, and what training (the epoch kept) and calibration learned. Saved as plain types
    (weights_only=True loads it)."""

    kind: str
    class_names: list[str]
    features: dict
    pooling: str = "mean"
    epoch: int | None = None
    templates: list[str] | None = None  # a zero-shot head's prompts
    calibration: Calibration | None = None
    schema_version: int = HEAD_SCHEMA

    @classmethod
    def from_saved(cls, path: Path, saved: object, kinds: Mapping[str, HeadKind]) -> HeadMeta:
        """The record from its saved form, checked (of one of `kinds`, then check_meta); HeadError naming the file
        otherwise."""
        at = printable(path)
        version = saved.get("schema_version") if isinstance(saved, dict) else None
        if version != HEAD_SCHEMA or set(saved) - {f.name for f in fields(cls)}:
            raise HeadError(f"{at}: head format version {printable(version)[:80]}, this code reads {HEAD_SCHEMA}: "
                            f"{retrain(kinds)}")
        missing = [name for name in ("kind", "class_names", "features") if name not in saved]
        if missing:
            raise HeadError(f"{at}: not a usable head: its metadata has no {missing[0]!r}")
        calibration = saved.get("calibration")
        if calibration is not None and (not isinstance(calibration, dict)
                                        or set(calibration) - {f.name for f in fields(Calibration)}):
            raise HeadError(f"{at}: not a usable head: its calibration is not a record of this code's")
        meta = cls(**{**saved, "calibration": Calibration(**calibration) if calibration is not None else None})
        if not isinstance(meta.kind, str) or meta.kind not in kinds:  # (a list from the file is no key)
            raise HeadError(f"{at}: not a usable head: unknown kind {printable(repr(meta.kind))[:80]} (this code reads "
                            f"{', '.join(kinds)})")
        check_meta(at, meta, kinds[meta.kind].estimator)
        return meta


def retrain(kinds: Mapping[str, HeadKind]) -> str:
    """The advice for a head file this code cannot use: its kinds' stages, run again."""
    return f"retrain it (dvc repro {' '.join(kind.stage for kind in kinds.values())})"


def _whole(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _text(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT


def _bounded(at: str, what: str, value: object, low: int, high: int) -> None:
    if not _whole(value) or not low <= value <= high:
        raise HeadError(f"{at}: not a usable head: {what} must be a whole number from {low} to {high:,}, "
                        f"got {printable(repr(value))[:80]}")


def check_meta(at: str, meta: HeadMeta, estimator: type[Head]) -> None:
    """HeadError (`at`: the file, printable) for metadata no head of `estimator`'s kind has (the class of meta.kind,
    pipeline.heads.kinds): another kind, a pooling it does not name, class names that are not a list of distinct
    strings, features without a key predict needs, a size beyond MAX_*, a calibration with a non-finite or
    out-of-range number."""
    def bad(what: str) -> HeadError:
        return HeadError(f"{at}: not a usable head: {what}")
    if meta.kind != estimator.kind:
        raise bad(f"kind {printable(repr(meta.kind))[:80]} is not a {estimator.__name__}'s ({estimator.kind!r})")
    names = meta.class_names
    if not isinstance(names, list) or not all(_text(n) for n in names):
        raise bad(f"class names must be a list of strings (of at most {MAX_TEXT:,} characters)")
    if not 1 <= len(names) <= MAX_CLASSES or len(set(names)) != len(names):
        raise bad(f"it needs 1 to {MAX_CLASSES:,} distinct class names, got {len(names):,}"
                  + (" with repeats" if len(set(names)) != len(names) else ""))
    if meta.pooling not in estimator.poolings:
        raise bad(f"unknown pooling {printable(repr(meta.pooling))[:80]} for a {meta.kind} head")
    features = meta.features
    if not isinstance(features, dict) or not all(isinstance(k, str) for k in features):
        raise bad("its features must be a record of the cache's attributes")
    missing = [k for k in REQUIRED_FEATURES if k not in features]
    if missing:
        raise bad(f"its features have no {missing[0]!r} (the cache attribute predict rebuilds the encoder from)")
    for key, value in features.items():
        if key in STRING_FEATURES and not _text(value) or not (value is None or _text(value) or _real(value)
                                                               or isinstance(value, (bool, np.bool_))):
            raise bad(f"its feature {printable(key)[:80]!r} must be "
                      + ("a string" if key in STRING_FEATURES else "a plain value"))
        if _real(value) and not math.isfinite(value):
            raise bad(f"its feature {printable(key)[:80]!r} is not a finite number")
    _bounded(at, "embedding_dim", features["embedding_dim"], 1, MAX_EMBEDDING_DIM)
    _bounded(at, "num_frames", features["num_frames"], 1, MAX_FRAMES)
    if features.get("batch_size") is not None:
        _bounded(at, "batch_size", features["batch_size"], 1, MAX_BATCH)
    if meta.epoch is not None:
        _bounded(at, "epoch", meta.epoch, 0, 10 ** 9)
    if meta.templates is not None and (not isinstance(meta.templates, list) or len(meta.templates) > MAX_TEMPLATES
                                       or not all(_text(t) for t in meta.templates)):
        raise bad(f"its templates must be a list of at most {MAX_TEMPLATES:,} strings")
    if meta.calibration is not None:
        _check_calibration(bad, meta.calibration)


def _check_calibration(bad, c: Calibration) -> None:
    if not _real(c.temperature) or not math.isfinite(c.temperature) or c.temperature <= 0:
        raise bad(f"its calibration temperature must be a finite number above 0, got {printable(repr(c.temperature))}")
    fraction = c.not_sure_below_chance_to_certain
    if not _real(fraction) or not 0 <= fraction <= 1:
        raise bad(f"its \"not sure\" fraction must be from 0 to 1, got {printable(repr(fraction))}")
    if not isinstance(c.temperature_note, str) or len(c.temperature_note) > MAX_TEXT:
        raise bad("its calibration note must be a string")
    for name in ("train_videos", "train_min_per_class", "val_videos", "val_min_per_class"):
        if not _whole(getattr(c, name)) or getattr(c, name) < 0:
            raise bad(f"its calibration's {name} must be a whole number of at least 0")


def _finite(tensor: torch.Tensor) -> bool:
    """Whether every number of a floating tensor is finite. numpy's check: with torch.isfinite, load_head of a
    400-class attention head took about 3 times as long as without any check (2-core machine, 2026-12-07)."""
    if tensor.dtype not in (torch.float16, torch.float32, torch.float64):
        tensor = tensor.float()  # bfloat16 and the like, which numpy has not
    return bool(np.isfinite(tensor.numpy()).all())


def check_state(at: str, meta: HeadMeta, state: object, estimator: type[Head]) -> None:
    """HeadError unless `state` holds exactly the tensors of estimator.state_shapes (less any of its optional_state:
    a zero-shot head saved before SigLIP lacks bias and sigmoid), floating and finite (but its index_state, which its
    state_shapes checks: logistic regression's classes, distinct increasing indices into the class names), and
    passes the kind's own check_weights (logistic regression: its scaler's scale above 0)."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise HeadError(f"{at}: not a usable head: its weights must be a record of tensors")
    expected = estimator.state_shapes(at, meta, state)
    missing = sorted(set(expected) - set(state) - set(estimator.optional_state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise HeadError(f"{at}: not a usable head: its weights " + (f"lack {missing[0]!r}" if missing else
                                                                     f"hold an unknown {printable(extra[0])[:80]!r}")
                        + f" for a {meta.kind} head")
    for key, tensor in state.items():
        if tuple(tensor.shape) != expected[key]:
            raise HeadError(f"{at}: not a usable head: {key} has shape {tuple(tensor.shape)}, its metadata "
                            f"({len(meta.class_names)} classes, embedding_dim {meta.features['embedding_dim']}, "
                            f"{meta.features['num_frames']} frames) needs {expected[key]}")
        if key not in estimator.index_state and (not tensor.is_floating_point() or not _finite(tensor)):
            raise HeadError(f"{at}: not a usable head: {key} holds " + ("numbers that are not finite (NaN or "
                            "infinity)" if tensor.is_floating_point() else f"{tensor.dtype}, not floating point"))
    estimator.check_weights(at, meta, state)


def read_head_file(path: str | os.PathLike, kinds: Mapping[str, HeadKind]) -> tuple[dict, HeadMeta]:
    """A head file's tensors {name: tensor} and its checked metadata, of one of `kinds` (pipeline.heads.kinds.HEADS,
    whose estimators say what a file of their kind holds); HeadError naming the file when it is missing, a .joblib of
    an older version, too large, not a head this project wrote (a pickle of objects other than plain tensors and
    types: never run), damaged, of another kind, or fails a check of check_meta or check_state."""
    path = Path(path)
    at = printable(path)
    if not path.is_file() and path.with_suffix(".joblib").is_file():  # a project trained by an older version
        raise HeadError(f"no trained head at {printable(repr(str(path)))}; {printable(path.with_suffix('.joblib'))} "
                        f"beside it is {OLD_LOGREG}")
    if not path.is_file():
        raise HeadError(f"no trained head at {printable(repr(str(path)))}: run `dvc repro` to train one")
    if path.suffix == ".joblib":
        raise HeadError(f"{at}: {OLD_LOGREG}")
    if path.suffix != HEAD_SUFFIX:
        raise HeadError(f"{at}: unknown head file type (expected {HEAD_SUFFIX})")
    if path.stat().st_size > MAX_HEAD_BYTES:
        raise HeadError(f"{at}: not a usable head: {path.stat().st_size:,} bytes, more than any head this project "
                        f"writes ({MAX_HEAD_BYTES:,})")
    try:  # a damaged file fails in as many ways as the zip reader has: each is the same to the user
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # objects other than tensors and plain types: torch refused them, nothing ran
        raise HeadError(f"{at}: not a head this project wrote (a head file holds only tensors and plain values); "
                        f"{retrain(kinds)}") from None
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HeadError(f"{at}: not a usable head checkpoint (damaged: {printable(first)[:200]})") from None
    if not isinstance(saved, dict) or set(saved) != {"state_dict", "meta"}:
        raise HeadError(f"{at}: not a head this project wrote (expected its weights and metadata); {retrain(kinds)}")
    meta = HeadMeta.from_saved(path, saved["meta"], kinds)
    check_state(at, meta, saved["state_dict"], kinds[meta.kind].estimator)
    return saved["state_dict"], meta


def write_head_file(path: str | os.PathLike, state: dict, meta: HeadMeta, saved_meta: dict,
                    estimator: type[Head]) -> None:
    """Write a head of `estimator`'s kind (tensors `state`, metadata saved as the plain `saved_meta`) to path: checked
    as read_head_file checks it first (HeadError: nothing is written, the file there is kept), then through a
    temporary file beside it, renamed over it (never half-written)."""
    path = Path(path)
    at = printable(path)
    if path.suffix != HEAD_SUFFIX:
        raise HeadError(f"{at}: a head is saved as {HEAD_SUFFIX}")
    check_meta(at, meta, estimator)
    check_state(at, meta, state, estimator)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save({"state_dict": state, "meta": saved_meta}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
