"""The project's facts agree with each other: pins cover the imports, dvc.yaml's deps are the stages' imports and
params, dataclass defaults equal params.yaml, and each shared fact is defined once."""
import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LOCAL = {"pipeline", "stages", "app", "tests", "bench"}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (absolute names, also inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # `from pipeline import x` imports x
    return names


def test_every_package_the_code_imports_is_pinned():
    pinned = {re.split(r"[=<>\s]", line)[0].lower().replace("_", "-")
              for line in (ROOT / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")}
    assert all("==" in line for line in (ROOT / "requirements.txt").read_text().splitlines()
               if line and not line.startswith("#")), "every requirement is pinned with =="
    dists = packages_distributions()
    files = [p for d in LOCAL for p in (ROOT / d).rglob("*.py")]
    tops = {name.split(".")[0] for f in files for name in imported_modules(f)}
    third_party = tops - set(sys.stdlib_module_names) - LOCAL - {"__future__"}
    missing = {top: dists.get(top) for top in third_party
               if not {d.lower().replace("_", "-") for d in dists.get(top, [top])} & pinned}
    assert not missing, f"imported but not pinned in requirements.txt: {missing}"
