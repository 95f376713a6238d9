"""The registry of head kinds (pipeline.heads.kinds) is the one list: no module switches on a kind's name or lists
kinds itself, and a kind added to the registry alone is read, rebuilt and refitted."""
import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import paths
from pipeline.errors import HeadError
from pipeline.heads.head_files import retrain
from pipeline.heads.estimators import ZeroShotHead
from pipeline.heads.logreg import LogRegConfig, LogRegHead
from pipeline.heads.kinds import FROM_TEXT, HEADS, TRAINED, HeadKind, load_head

ROOT = Path(__file__).resolve().parent.parent
HOMES = {ROOT / "pipeline" / "heads" / "kinds.py", ROOT / "pipeline" / "paths.py"}  # where kinds are listed
ATTRS = {"encoder_model": "tiny", "encoder_fingerprint": "abc", "embedding_dim": 8, "num_frames": 4,
         "sampling": "uniform-centers", "preprocess": "fast", "preprocess_config": "{}", "backend": "torch",
         "quantize": "none", "decoder": "pyav-test", "batch_size": 16}


def kind_switches(tree: ast.AST, names: set[str]) -> list[str]:
    """What in a module's syntax tree names kinds outside the registry: a comparison with a kind's name (`kind ==
    "zeroshot"`, `name in ("linear", "logreg")`), a literal list, tuple, set or dict holding two or more of them, and
    paths.HEAD_FILES read otherwise than for one named kind (iterated, its keys or values listed)."""
    found, subscripted = [], {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Subscript)}

    def named(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and node.value in names

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(named(n) or isinstance(n, (ast.Tuple, ast.List, ast.Set))
                                                 and any(named(e) for e in n.elts)
                                                 for n in [node.left, *node.comparators]):
            found.append(f"line {node.lineno}: a comparison with a kind's name")
        elements = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else \
            node.keys if isinstance(node, ast.Dict) else []
        if sum(named(e) for e in elements) >= 2:
            found.append(f"line {node.lineno}: a literal list of kinds")
        if (isinstance(node, ast.Name) and node.id == "HEAD_FILES" or isinstance(node, ast.Attribute)
                and node.attr == "HEAD_FILES") and id(node) not in subscripted and not isinstance(node.ctx, ast.Store):
            found.append(f"line {node.lineno}: HEAD_FILES read whole")
    return found


def test_no_module_but_the_registry_switches_on_or_lists_kinds():
    """pipeline/, stages/ and app/ read kinds from HEADS (a stage may name its own kind, as HEADS[...] or an
    estimator's `kind`); kinds.py and paths.py (the files, which dvc.yaml reads too) are the only lists."""
    files = [f for folder in ("pipeline", "stages", "app") for f in sorted((ROOT / folder).rglob("*.py"))
             if f not in HOMES]
    found = {str(f.relative_to(ROOT)): s for f in files if (s := kind_switches(ast.parse(f.read_text()), set(HEADS)))}
    assert not found, f"kinds switched on or listed outside pipeline/heads/kinds.py: {found}"


@pytest.mark.parametrize("source, says", [
    ('if meta.kind == "logreg":\n    pass\n', "comparison"),
    ('if kind != "zeroshot":\n    pass\n', "comparison"),
    ('ok = name in ("linear", "other")\n', "comparison"),
    ('options = [*trained, "zeroshot", "linear"]\n', "literal list"),
    ('configs = {"linear": 1, "logreg": 2}\n', "literal list"),
    ("choices = sorted(HEAD_FILES)\n", "HEAD_FILES read whole"),
    ("for name, path in HEAD_FILES.items():\n    pass\n", "HEAD_FILES read whole"),
    ("for name in paths.HEAD_FILES:\n    pass\n", "HEAD_FILES read whole"),
    ("files = list(pipeline.paths.HEAD_FILES.values())\n", "HEAD_FILES read whole"),
])
def test_the_check_sees_each_way_of_switching_on_kinds(source, says):
    """The lines the registry replaced (stages/evaluate.py, head_files.py, the app, the command line) are each found."""
    found = kind_switches(ast.parse(source), set(HEADS))
    assert found and says in found[0], found


def test_the_check_passes_what_reads_the_registry():
    source = ('BEST = HEADS[LinearHead.kind].file\nfile = HEAD_FILES[self.name]\n@stage("zeroshot")\ndef main(): pass\n'
              'kind = "linear"\nparser.add_argument("--head", choices=sorted(HEADS), default="linear")\n'
              'other = paths.HEAD_FILES["linear"]\n')
    assert kind_switches(ast.parse(source), set(HEADS)) == []


def test_the_registry_holds_every_head_file_and_names_its_estimators():
    assert set(HEADS) == set(paths.HEAD_FILES) and TRAINED == ("linear", "logreg") and FROM_TEXT == "zeroshot"
    for name, kind in HEADS.items():
        assert kind.estimator.kind == name and kind.file == paths.HEAD_FILES[name]
        assert kind.trained == (name in TRAINED)


class TextHead(ZeroShotHead):
    """A kind that exists only in this test: a zero-shot head under another name."""

    kind = "text"


@pytest.fixture
def text_head(tmp_path) -> Path:
    """A TextHead saved to tmp_path/text.pt (over 3 classes of 8-d embeddings)."""
    head = TextHead(("a {}",)).fit(np.eye(3, 8, dtype=np.float32), ["a", "b", "c"], ATTRS)
    head.save(tmp_path / "text.pt")
    return tmp_path / "text.pt"


def test_a_kind_outside_the_registry_is_refused_naming_the_file(text_head):
    with pytest.raises(HeadError, match="unknown kind 'text' \\(this code reads linear, logreg, zeroshot\\)") as e:
        load_head(text_head)
    assert str(text_head) in str(e.value) and "\n" not in str(e.value)


def test_a_kind_added_to_the_registry_alone_is_loaded_and_refitted(text_head, monkeypatch):
    """One entry (and its file in paths.HEAD_FILES) is all load_head, the door and evaluate's refits need."""
    monkeypatch.setitem(paths.HEAD_FILES, "text", str(text_head))
    monkeypatch.setitem(HEADS, "text", HeadKind("text", "text head", TextHead, "text"))
    head = load_head(HEADS["text"].file)
    assert type(head) is TextHead and head.classes_ == ["a", "b", "c"] and head.templates == ("a {}",)
    x = np.eye(3, 8, dtype=np.float32)[[0, 1, 2, 1]]
    refit = HEADS["text"].refit(None, 3, head)  # untrained: the saved head answers each task
    assert [p.tolist() for p in refit([(x, None, x), (x[:2], None, x[:2])])] == [[0, 1, 2, 1], [0, 1]]
    saved = torch.load(text_head, weights_only=True)
    saved["meta"]["kind"] = "svm"
    torch.save(saved, text_head.with_name("svm.pt"))
    with pytest.raises(HeadError, match="unknown kind 'svm' \\(this code reads linear, logreg, zeroshot, text\\)"):
        load_head(text_head.with_name("svm.pt"))
    assert "dvc repro train baseline zeroshot text" in retrain(HEADS)


def test_a_trained_kind_refits_with_its_own_estimator():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    x = (rng.normal(size=(30, 8)) + np.eye(3, 8)[y] * 4).astype(np.float32)
    kind = HeadKind("other", "another", LogRegHead, "baseline", LogRegConfig)
    [pred] = kind.refit(LogRegConfig(), 3)([(x, y, x)])
    np.testing.assert_array_equal(pred, LogRegHead(LogRegConfig()).fit(x, y).predict(x))
