"""The project's facts agree with each other: pins cover the imports, dvc.yaml's deps are the stages' imports and
params, and each shared fact is defined once."""
import ast
import os
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml

from tests.conftest import committed_file, committed_params

ROOT = Path(__file__).resolve().parents[1]
LOCAL = {"pipeline", "stages", "app", "tests", "bench"}


def imported_modules(path: Path, when_imported: bool = False) -> set[str]:
    """Every module a file imports (absolute names, also inside functions). when_imported: only what importing the
    module runs, leaving out `if TYPE_CHECKING:` (annotations only) and `if __name__ == "__main__":` (the file run as
    a program, as another module: `python -m pipeline.tools.inspector` hands over to pipeline.tools.cli)."""
    tree = ast.parse(path.read_text())
    hidden = {id(n) for node in ast.walk(tree) if when_imported and isinstance(node, ast.If)
              and ("TYPE_CHECKING" in ast.unparse(node.test) or ast.unparse(node.test) == "__name__ == '__main__'")
              for n in ast.walk(node)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # `from pipeline import x` imports x
    return names


def test_every_package_the_code_imports_is_pinned():
    """requirements.txt, and the optional requirements-*.txt (Ray), pin every package imported by the code."""
    lines = [line for f in sorted(ROOT.glob("requirements*.txt")) for line in f.read_text().splitlines()
             if line and not line.startswith("#")]
    pinned = {re.split(r"[=<>\[\s]", line)[0].lower().replace("_", "-") for line in lines}
    assert all("==" in line for line in lines), "every requirement is pinned with =="
    dists = packages_distributions()
    files = [p for d in LOCAL for p in (ROOT / d).rglob("*.py")]
    tops = {name.split(".")[0] for f in files for name in imported_modules(f)}
    siblings = {p.stem for p in (ROOT / "bench").glob("*.py")}  # a bench script imports another beside it
    third_party = tops - set(sys.stdlib_module_names) - LOCAL - siblings - {"__future__"}
    missing = {top: dists.get(top) for top in third_party
               if not {d.lower().replace("_", "-") for d in dists.get(top, [top])} & pinned}
    assert not missing, f"imported but not pinned in requirements.txt: {missing}"


def _local_file(module: str) -> Path | None:
    """The file of a pipeline/ or stages/ module (a package's __init__.py), or None for anything else."""
    if module.split(".")[0] not in ("pipeline", "stages"):
        return None
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else (
        path / "__init__.py" if (path / "__init__.py").is_file() else None)


def code_used(script: Path) -> set[str]:
    """The project files a stage script runs: itself, its package, and what it imports within pipeline/ and
    stages/, transitively. pipeline/__init__.py is empty and left out."""
    assert (ROOT / "pipeline" / "__init__.py").read_text() == ""
    seen, todo = set(), [script, ROOT / "stages" / "__init__.py"]
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        todo += [f for m in imported_modules(file, when_imported=True) if (f := _local_file(m)) is not None]
    return {str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f) for f in seen} - {"pipeline/__init__.py"}


def params_read(script: Path) -> set[str]:
    """The params.yaml keys a stage script reads: params["a"] passed on whole gives "a", params["a"]["b"] "a.b"
    (params: the name bound to read_params(), or read_params() itself); params[kind.stage], a section named by the
    registry of head kinds (the evaluate stage's refits), gives the stages of its trained kinds."""
    from pipeline.heads.kinds import HEADS

    tree = ast.parse(script.read_text())
    parent = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Attribute) and node.slice.attr == "stage" \
                and isinstance(node.value, ast.Name) and node.value.id == "params":
            keys |= {kind.stage for kind in HEADS.values() if kind.trained}
        if not isinstance(node, ast.Subscript) or (isinstance(parent.get(node), ast.Subscript)
                                                   and parent[node].value is node):
            continue  # not the outermost subscript of a chain
        chain, inner = [], node
        while isinstance(inner, ast.Subscript) and isinstance(inner.slice, ast.Constant):
            chain.insert(0, inner.slice.value)
            inner = inner.value
        rooted = (isinstance(inner, ast.Name) and inner.id == "params") or (
            isinstance(inner, ast.Call) and getattr(inner.func, "id", None) == "read_params")
        if rooted and chain:
            keys.add(".".join(chain))
    return keys


def test_each_dvc_stage_depends_on_exactly_the_code_and_params_it_uses():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = committed_params()
    assert set(stages) == {p.stem for p in (ROOT / "stages").glob("*.py")} - {"__init__"}
    for name, spec in stages.items():
        assert spec["cmd"] == f"python -m stages.{name}"
        script = ROOT / "stages" / f"{name}.py"
        declared = {d for d in spec["deps"] if d.endswith(".py")}
        assert declared == code_used(script), f"{name}: dvc.yaml deps differ from the imports"
        read, listed = params_read(script), set(spec.get("params", []))
        for key in listed:  # each listed key is read: a whole section, or all of its keys one by one
            covered = {r for r in read if r == key or r.startswith(key + ".")}
            assert covered, f"{name}: dvc.yaml lists params {key!r}, which the stage does not read"
            if key not in covered:
                assert covered == {f"{key}.{k}" for k in params[key]}, (
                    f"{name}: reads only {sorted(covered)} of {key!r}: list those in dvc.yaml")
        for key in read:
            assert any(key == k or key.startswith(k + ".") for k in listed), f"{name}: reads {key!r}, not in dvc.yaml"
            section, _, sub = key.partition(".")
            assert section in params and (not sub or sub in params[section]), f"{name}: {key!r} not in params.yaml"


def test_the_derivation_sees_what_a_stage_uses(tmp_path):
    script = tmp_path / "fake.py"
    script.write_text("from pipeline.heads.plots import StageLive\nfrom stages import read_params\n"
                      "def main():\n    params = read_params()\n    f(params['train'], params['split']['seed'])\n"
                      "    g(read_params()['demo'])\n")
    settings = {"pipeline/settings.py", "pipeline/data/discover.py", "pipeline/embed/choices.py",  # and its choices
                "pipeline/extract/choices.py"}
    assert code_used(script) == {"stages/__init__.py", "pipeline/heads/plots.py", "pipeline/errors.py",
                                 "pipeline/paths.py", *settings, str(script)}
    assert params_read(script) == {"train", "split.seed", "demo"}
    # heads -> cache
    assert code_used(ROOT / "stages" / "train.py") >= {"pipeline/heads/estimators.py", "pipeline/extract/cache.py"}


def test_params_yaml_is_written_as_dvc_writes_it(tmp_path):
    """`dvc exp run -S key=value` writes params.yaml back through DVC's own override path (Hydra, then ruamel: an
    empty string as '', a list in block style, comments kept): written that way already, an experiment's
    params.yaml differs from the commit by the changed key alone."""
    from dvc.utils.hydra import apply_overrides

    def changed(text: str, override: str) -> list[str]:
        (tmp_path / "params.yaml").write_text(text)
        apply_overrides(tmp_path / "params.yaml", [override])
        after = (tmp_path / "params.yaml").read_text().splitlines()
        return [line for line in after if line not in text.splitlines()]

    assert changed(committed_file("params.yaml"), "train.lr=0.001") == ["  lr: 0.001"]
    assert changed('a: ""\nb: [1, 2]\nc: 1\n', "c=2") == ["a: ''", "b:", "- 1", "- 2", "c: 2"]  # the check can fail


def test_shared_facts_are_written_once():
    """Each path the stages write, CLIP's logit scale, the video extensions and the cache's key are written in one
    file only; dvc.yaml takes every path from pipeline/paths.py (`vars`), never as a literal of its own."""
    from pipeline import paths

    values = [v for k, v in vars(paths).items() if k.isupper()]
    values = [v for value in values for v in (value.values() if isinstance(value, dict) else [value])]
    code = {p: p.read_text() for d in ("pipeline", "stages", "app") for p in (ROOT / d).rglob("*.py")}
    files = [f'"{v}"' for v in values if "/" in v or "." in v]  # a bare folder name ("metrics") is also a key
    for literal in files + ["100.0", '".mp4"', '"encoder_fingerprint", "embedding_dim"']:
        where = [str(p.relative_to(ROOT)) for p, text in code.items() if literal in text]
        assert len(where) == 1, f"{literal} written in {where}"
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert dvc_yaml["vars"] == ["pipeline/paths.py"]
    named = [next(iter(e)) if isinstance(e, dict) else e for spec in dvc_yaml["stages"].values()
             for key in ("deps", "outs", "metrics") for e in spec.get(key, [])]  # every path a stage names
    for plot in dvc_yaml["plots"]:
        name, spec = next(iter(plot.items()))
        named += [name, *(spec["y"] if isinstance(spec.get("y"), dict) else [])]
    for value in values:
        assert not [n for n in named if n == value or n.startswith(value + "/")], f"dvc.yaml writes {value!r}"
    assert "${TRAIN_LIVE}/plots/metrics/train/loss.tsv" in named  # the check reads the plots' files too
    outs = {o if isinstance(o, str) else next(iter(o)) for s in dvc_yaml["stages"].values() for o in s.get("outs", [])}
    assert {"${CACHE_PATH}", "${SPLIT_PATH}", "${HEAD_FILES.linear}"} <= outs


def test_dvc_plots_page_needs_no_network():
    """.dvc/config points `dvc plots show` at the committed page template, which carries Vega inline (the default
    page loads it from a CDN: offline every chart was blank) and is what pipeline.heads.plots writes today."""
    import configparser

    from pipeline.heads.plots import OFFLINE_TEMPLATE, offline_page_template
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    assert (ROOT / ".dvc" / config["plots"]["html_template"]).resolve() == (ROOT / OFFLINE_TEMPLATE).resolve()
    page = (ROOT / OFFLINE_TEMPLATE).read_text()
    assert "{plot_divs}" in page and "{scripts}" not in page and "<script src=" not in page
    assert page == offline_page_template(), "regenerate it: see docs/heads.md, 'Evaluation'"


def test_stage_live_writes_what_dvclive_writes_without_opening_the_repository(tmp_path):
    """StageLive (the stages' DVCLive logger) writes the same files as Live for the same logs, and skips Live's look
    at the repository (it imported DVC's repository code and opened it: 0.4 to 0.5 s a stage). A DVCLive upgrade
    that renames the skipped method fails here rather than quietly costing the time again."""
    from dvclive import Live

    assert {"_init_dvc", "_init_studio"} <= set(vars(Live))
    script = """
import sys
from pathlib import Path
from dvclive import Live
from pipeline.heads.plots import StageLive
kind, out = sys.argv[1], sys.argv[2]
with (StageLive if kind == "stage" else Live)(out, dvcyaml=None, save_dvc_exp=False) as live:
    live.log_params({"lr": 0.1})
    for step in range(3):
        live.step = step
        live.log_metric("train/loss", 1.0 / (step + 1))
    live.log_sklearn_plot("confusion_matrix", ["a", "b", "a"], ["a", "a", "b"], name="h/confusion_matrix.json")
    live.log_plot("curve", [{"x": 1, "y": 0.5}, {"x": 2, "y": 0.7}], x="x", y="y", template="linear")
print("dvc.repo" in sys.modules)
"""
    (tmp_path / "repo").mkdir()
    for git in (["init", "-q"], ["-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-q",
                                 "--allow-empty", "-m", "start"]):
        subprocess.run(["git", *git], cwd=tmp_path / "repo", check=True)
    written, opened = {}, {}
    for kind in ("stage", "live"):
        result = subprocess.run([sys.executable, "-c", script, kind, kind], cwd=tmp_path / "repo", text=True,
                                capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert result.returncode == 0, result.stderr
        opened[kind] = result.stdout.split()[-1]
        root = tmp_path / "repo" / kind
        written[kind] = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert opened == {"stage": "False", "live": "True"}
    assert written["stage"] == written["live"] and "plots/metrics/train/loss.tsv" in written["stage"]


def test_the_confusion_template_is_dvcs_summing_the_cells_counts_with_the_counts_shown():
    """dvc.yaml's confusion matrices use .dvc/plots/confusion_counts.json: DVC's own confusion template (this DVC's,
    so an upgrade that changes it fails here) summing the "count" of each cell the evaluate stage writes (every
    (actual, predicted) pair, zeros included: every class on both axes) rather than counting rows, with its
    showValues checkbox ticked, so the cells show their counts. The data-efficiency chart colours by head."""
    import json

    spec = json.loads(subprocess.run([sys.executable, "-m", "dvc", "plots", "templates", "confusion"], cwd=ROOT,
                                     capture_output=True, text=True, check=True).stdout)
    spec["params"] = [{**p, "value": True} if p["name"] == "showValues" else p for p in spec["params"]]
    assert spec["spec"]["transform"][0]["aggregate"] == [{"op": "count", "as": "xy_count"}]
    spec["spec"]["transform"][0]["aggregate"] = [{"op": "sum", "field": "count", "as": "xy_count"}]
    assert json.loads((ROOT / ".dvc" / "plots" / "confusion_counts.json").read_text()) == spec
    plots = [next(iter(p.values())) for p in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
             if isinstance(p, dict)]
    assert [p["template"] for p in plots if "confusion" in str(p)] == ["confusion_counts"] * 3
    by_head = json.loads((ROOT / ".dvc" / "plots" / "by_head.json").read_text())
    assert by_head["encoding"]["color"]["field"] == "head" and by_head["encoding"]["strokeDash"]["field"] == "rev"


def working_tree_reads(path: Path, tracked: set[str]) -> list[str]:
    """Where a test file joins the checkout's folder (ROOT) with params.yaml or a path the stages write (cache/,
    models/, metrics/, dvclive/, data/: the first parts of pipeline/paths.py's paths), by literal or by
    pipeline.paths's name: `ROOT / "params.yaml"`, `ROOT / CACHE_PATH`. A committed file under them
    (cache/README.md) is code, not state."""
    from pipeline import paths

    names = {k for k, v in vars(paths).items() if k.isupper() and k != "ANNOTATIONS_DIR"}
    values = [getattr(paths, k) for k in names]
    tops = {v.split("/")[0] for value in values for v in (value.values() if isinstance(value, dict) else [value])}
    tree = ast.parse(path.read_text())
    parent = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.left, ast.Name)
                and node.left.id == "ROOT"):
            continue
        right = node.right
        named = right.value if isinstance(right, ast.Subscript) else right
        if isinstance(named, ast.Name) and named.id in names:
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(right, ast.Constant) and isinstance(right.value, str) and right.value.split("/")[0] in tops:
            parts, outer = [right.value], node  # ROOT / "cache" / "README.md": the whole literal path
            while isinstance(parent.get(outer), ast.BinOp) and isinstance(parent[outer].right, ast.Constant):
                outer = parent[outer]
                parts.append(str(outer.right.value))
            whole = "/".join(parts)
            if whole == paths.PARAMS or whole not in tracked:
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(outer)}")
    return found


def test_no_test_reads_the_working_tree(tmp_path):
    """Tests never depend on the user's working tree (a `dvc exp run -S` edits params.yaml in place, a `dvc repro`
    leaves a cache and heads): each builds what it needs in tmp_path or reads the committed params through git
    (conftest's committed_params). The check itself finds each way of writing such a read."""
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split())
    bad = tmp_path / "test_bad.py"
    bad.write_text("from pipeline.paths import CACHE_PATH, HEAD_FILES\n"
                   "a = ROOT / 'params.yaml'\nb = ROOT / CACHE_PATH\nc = ROOT / HEAD_FILES['linear']\n"
                   "d = ROOT / 'models' / 'linear.pt'\ne = ROOT / 'cache' / 'README.md'\nf = tmp / 'params.yaml'\n")
    assert [line.split(": ", 1)[1] for line in working_tree_reads(bad, {"cache/README.md"})] == [
        "ROOT / 'params.yaml'", "ROOT / CACHE_PATH", "ROOT / HEAD_FILES['linear']", "ROOT / 'models' / 'linear.pt'"]
    found = [line for test in sorted((ROOT / "tests").glob("*.py")) for line in working_tree_reads(test, tracked)]
    assert not found, "tests reading the working tree (build it in tmp_path, or read it through git): " + str(found)


@pytest.mark.slow  # ten processes importing torch: about 20 s on a quiet 2-core machine
def test_every_command_answers_help_without_side_effects(tmp_path):
    """Each stage script and each pipeline module with a command line, run as a file from another folder
    (`python stages/split.py --help`), prints its usage, exits 0 and writes nothing. `python -m` differs only in
    how the packages are found, which the stages' own runs (dvc repro) cover."""
    commands = [p for p in sorted(ROOT.glob("stages/*.py")) + sorted(ROOT.glob("pipeline/**/*.py"))
                if re.search(r'^if __name__ == "__main__":', p.read_text(), re.M)]  # a guard, not a message about one
    assert len(commands) >= 10
    procs = {p: subprocess.Popen([sys.executable, str(p), "--help"], cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for p in commands}
    for p, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.startswith("usage:"), f"{p.relative_to(ROOT)}: {err[-2000:]}"
    assert list(tmp_path.iterdir()) == []


def _package_imports() -> dict[str, set[str]]:
    """{module: the pipeline modules importing it imports} (imported_modules with when_imported)."""
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in (ROOT / "pipeline").rglob("*.py")
               if p.stem != "__init__"}
    return {name: {m for m in imported_modules(path, when_imported=True) if m in modules and m != name}
            for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of the graph (its modules in order, the first repeated at the end), or []."""
    state, stack = {}, []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_package_has_no_import_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check itself finds one
    assert _cycle({"a": {"b"}, "b": set()}) == []
    cycle = _cycle(_package_imports())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_every_module_states_its_role_and_stays_short():
    """A newcomer names each module's role from its first line: a one-line docstring on every module; and no
    module grows past about 400 lines."""
    for path in sorted([*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("stages/*.py"), *ROOT.glob("app/*.py")]):
        if path.name == "__init__.py" and not path.read_text().strip():
            continue
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and doc.splitlines()[0].strip(), f"{path.relative_to(ROOT)}: no module docstring"
        lines = len(path.read_text().splitlines())
        assert lines <= 420, f"{path.relative_to(ROOT)}: {lines} lines"


def test_no_result_is_routed_by_its_text():
    """Results and errors are typed: no code asks whether a result is a str, or what a message starts with, and
    nothing edits sys.path to find the project's packages (it installs: pyproject.toml)."""
    patterns = {r"isinstance\((out|result|r|first|res), str\)": "a result routed by isinstance(..., str)",
                r"str\(e\)\.(startswith|replace)|text\.startswith\(f\"\{file\}": "a message routed or edited",
                r"sys\.path\.(insert|append)|sys\.path\[0\] =": "sys.path edited"}
    for path in sorted([*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("stages/*.py"), *ROOT.glob("app/*.py"),
                        *ROOT.glob("bench/*.py")]):
        text = path.read_text()
        for pattern, what in patterns.items():
            assert not re.search(pattern, text), f"{path.relative_to(ROOT)}: {what}"


def test_printable_escapes_what_would_move_a_terminal_or_split_a_row():
    from pipeline.errors import printable
    assert printable("run\x1b]0;pwned\x07\x1b[2J.mp4") == "run\\x1b]0;pwned\\x07\\x1b[2J.mp4"
    assert printable("a\tb\nc\r.mp4") == "a\\tb\\nc\\r.mp4"
    assert printable(os.fsdecode(b"bad\xff.mp4")) == "bad\\xff.mp4"
    assert printable("evil\u202e4pm.exe") == "evil\\u202e4pm.exe"
    assert printable("plain name é 動作.mp4") == "plain name é 動作.mp4"
