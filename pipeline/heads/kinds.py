"""The kinds of head, one entry each: its file, what people call it, whether it is trained on the cache's videos."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.paths import HEAD_FILES


@dataclass(frozen=True)
class HeadKind:
    """One kind of head: name (the key of HEAD_FILES, `--head`, the metrics' columns), label (how the app and
    messages call it), trained (fitted on the cache's videos by its own stage; False: made from text alone)."""

    name: str
    label: str
    trained: bool

    @property
    def file(self) -> str:
        return HEAD_FILES[self.name]


HEADS = {kind.name: kind for kind in (HeadKind("linear", "linear head", True),
                                      HeadKind("logreg", "logistic regression", True),
                                      HeadKind("zeroshot", "zero-shot", False))}
TRAINED = tuple(name for name, kind in HEADS.items() if kind.trained)
assert set(HEADS) == set(HEAD_FILES), "every head file has its kind here"
