"""The README: every command in its code blocks is run by a test, it stays a newcomer's page, and its links resolve."""
import ast
import os
import re
import shlex
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 250  # the "a screen or two" (about 150-250 lines); the reference lives in docs/
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md",
         ROOT / "annotations" / "README.md", ROOT / "cache" / "README.md"]

# The console scripts (pyproject.toml's [project.scripts]) and the `python -m` command each one is: a test that runs
# the module runs the command (test_the_package_installs_with_its_commands checks that they are the same).
SCRIPTS = {
    "clip-har-predict": ("python", "-m", "pipeline.tools.predict"),
    "clip-har-inspect": ("python", "-m", "pipeline.tools.inspector"),
    "clip-har-tiny-clip": ("python", "-m", "pipeline.embed.encoder"),
}

# Every command of the README's code blocks -> the chain of functions that runs it: a test (or a fixture a test
# uses), then each function the previous one calls, down to the one whose source holds the command.
DVC_REPO = ("tests/test_dvc.py::demo_repo",)
END_TO_END = ("tests/test_dvc.py::test_dvc_pipeline_end_to_end",)
ON_THE_DEMO = ("tests/test_dvc.py::test_the_readme_commands_on_the_trained_demo",)
INSTALLS = ("tests/test_readme.py::test_the_package_installs_with_its_commands",)
COVERED = {
    "pip install -e .": INSTALLS,
    "dvc repro": DVC_REPO,
    "python -m pipeline.embed.encoder --tiny models/tiny-clip": DVC_REPO,
    "dvc exp run -S encoder.model=models/tiny-clip": DVC_REPO,
    "streamlit run app/streamlit_app.py": ("tests/test_dvc.py::test_first_hour_in_the_browser",
                                           "tests/test_dvc.py::walk_the_app", "tests/browser.py::streamlit_server"),
    "clip-har-predict data/demo/walking": ON_THE_DEMO,
    "clip-har-predict data/demo/walking/walking_003.mkv --head logreg --segments 2 1 --json": ON_THE_DEMO,
    "clip-har-inspect": ON_THE_DEMO,
    "clip-har-inspect --video walking/walking_003.mkv": ON_THE_DEMO,
    "clip-har-inspect --neighbors walking/walking_003.mkv -k 5": ON_THE_DEMO,
    "clip-har-inspect --plot map.png": ON_THE_DEMO,
    "clip-har-inspect --outliers": ON_THE_DEMO,
    "git add params.yaml dvc.lock metrics dvclive": END_TO_END,
    'git commit -m "demo baseline"': END_TO_END,
    "dvc exp run -S train.lr=0.001": END_TO_END,
    "dvc exp show --drop '.*' --keep 'Experiment|train.lr|accuracy'": END_TO_END,
    "dvc exp diff <exp-a> <exp-b>": END_TO_END,
    "dvc metrics show": END_TO_END,
    "dvc plots show": ("tests/test_dvc.py::plots_page",),
    "python -m pytest -q tests": ("tests/test_readme.py::test_ci_runs_the_readme_test_command",),
    'python -m pytest -q tests -m "not slow"': ("tests/test_readme.py::test_the_quick_part_is_a_valid_selection",),
}


def fences(text: str) -> list[tuple[str, list[str]]]:
    """The fenced code blocks of a markdown text: [(language, lines)]."""
    blocks, language, lines = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if language is None:
                language, lines = line[3:].strip(), []
            else:
                blocks.append((language, lines))
                language = None
        elif language is not None:
            lines.append(line)
    assert language is None, "a code block is not closed"
    return blocks


def commands(text: str) -> list[str]:
    """Every command in a markdown text's code blocks: each line of a `bash` block (continued lines joined, comments
    dropped, `a && b` as two commands) and each `$ ` line of any other block."""
    found = []
    for language, lines in fences(text):
        joined = "\n".join(lines).replace("\\\n", " ")
        for line in joined.splitlines():
            if language != "bash":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            line = re.sub(r"(^|\s+)#\s.*$", "", line).strip()
            found += [" ".join(part.split()) for part in line.split(" && ") if part.strip()]
    return found


def test_commands_are_read_from_the_code_blocks():
    text = ("```bash\npip install x  # a comment\na \\\n  --b && c -m 'd e'\n```\n"
            "```text\n$ dvc metrics show\nPath  linear\n```\n")
    assert commands(text) == ["pip install x", "a --b", "c -m 'd e'", "dvc metrics show"]


def test_every_readme_command_is_run_by_a_test():
    shown = commands(README.read_text())
    assert len(shown) == len(set(shown)), "a command shown twice"
    assert [c for c in shown if c not in COVERED] == [], "README commands that no test runs: add them to COVERED"
    assert [c for c in COVERED if c not in shown] == [], "COVERED lists commands the README no longer shows"


def function_source(ref: str) -> tuple[ast.Module, ast.FunctionDef]:
    """The module and function that `path::name` names."""
    path, name = ref.split("::")
    module = ast.parse((ROOT / path).read_text())
    found = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert found, f"{ref}: no such function"
    return module, found[0]


def literals(module: ast.Module, function: ast.FunctionDef) -> list[str]:
    """The strings a function uses, in source order: its string constants, and those of the module-level constants
    it names (`APP = ROOT / "app" / "streamlit_app.py"`)."""
    constants = {}
    for node in module.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    strings = [n for n in ast.walk(node.value)
                               if isinstance(n, ast.Constant) and isinstance(n.value, str)]
                    constants[target.id] = [n.value for n in sorted(strings, key=lambda n: (n.lineno, n.col_offset))]
    found = []
    for node in ast.walk(function):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append(((node.lineno, node.col_offset), [node.value]))
        elif isinstance(node, ast.Name) and node.id in constants:
            found.append(((node.lineno, node.col_offset), constants[node.id]))
    return [s for _, strings in sorted(found, key=lambda f: f[0]) for s in strings]


def calls(function: ast.FunctionDef) -> set[str]:
    return {n.func.id for n in ast.walk(function) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def runs(command: str, module: ast.Module, function: ast.FunctionDef) -> bool:
    """Whether a function's source holds the command: the command whole in one string, or its words among the
    strings it uses, in order (`<placeholder>` words stand for any value; a path may be split into its parts; the
    program may be a function it calls, as test_dvc's `dvc(...)`; `python` is the test's own interpreter)."""
    strings = literals(module, function)
    if any(command in s for s in strings):
        return True
    words = shlex.split(command)
    if words[0] in SCRIPTS:
        words = [*SCRIPTS[words[0]], *words[1:]]
    if words[0] == "python":
        words = words[1:]
    elif words[0] in calls(function):
        words = words[1:]
    words = [w for w in words if not re.fullmatch(r"<[^>]+>", w)]
    at = 0
    for word in words:
        pieces = word.split("/")  # a path may be written as its parts: ROOT / "app" / "streamlit_app.py"
        while at < len(strings):
            if strings[at] == word:
                at += 1
                break
            if len(pieces) > 1 and strings[at:at + len(pieces)] == pieces:
                at += len(pieces)
                break
            at += 1
        else:
            return False
    return True


@pytest.mark.parametrize("command", sorted(COVERED))
def test_the_test_named_for_a_command_runs_it(command):
    chain = COVERED[command]
    module, function = function_source(chain[0])
    if not function.name.startswith("test_"):  # a fixture: some test of its file must use it
        tests = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
        assert any(function.name in [a.arg for a in t.args.args] for t in tests), f"{chain[0]}: no test uses it"
    for ref in chain[1:]:
        name = ref.split("::")[1]
        assert name in calls(function), f"{function.name} does not call {name}"
        module, function = function_source(ref)
    assert runs(command, module, function), f"{chain[-1]} does not run `{command}`"


def test_the_command_check_finds_a_missing_word():
    module = ast.parse('def t():\n    dvc("exp", "run", "-S", "train.lr=0.001")\n')
    function = module.body[0]
    assert runs("dvc exp run -S train.lr=0.001", module, function)
    assert runs("dvc exp run <name>", module, function)
    assert not runs("dvc exp run -S train.lr=0.01", module, function)
    assert not runs("dvc exp show", module, function)


def test_the_readme_fits_on_a_screen_or_two():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines: move the reference to docs/"


def test_every_code_block_says_what_it_holds():
    """`bash` for commands (each run by a test), `text` for output and pictures: no command hides in a bare block."""
    for page in PAGES:
        for language, lines in fences(page.read_text()):
            assert language in ("bash", "text"), f"{page.relative_to(ROOT)}: a ```{language} block: {lines[:1]}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_resolve():
    """Every relative link of the README, the docs and the other READMEs names a file that exists, and a heading in it
    when it has an anchor."""
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            assert file.exists(), f"{page.relative_to(ROOT)}: {target}: no such file"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)
                assert anchor in {slug(h) for h in headings}, f"{page.relative_to(ROOT)}: {target}: no such heading"


def test_the_docs_pages_are_linked_from_the_readme():
    text = README.read_text()
    assert [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"(docs/{p.name})" not in text] == []


def test_ci_runs_the_readme_test_command():
    """`.ci/run` ends by running exactly the README's test command."""
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci[-1] == "python -m pytest -q tests"
    assert "python -m pytest -q tests" in commands(README.read_text())


@pytest.mark.slow  # a pytest collecting two files: a few seconds
def test_the_quick_part_is_a_valid_selection():
    """The README's quick command's selection (`-m "not slow"`), on a file of slow tests and one of both kinds: it
    keeps the quick tests and leaves the slow ones out (collected, not run: running the suite is CI's job)."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q",
                             *(str(Path("tests") / name) for name in ("test_dvc.py", "test_readme.py")),
                             "-m", "not slow", "--collect-only", "-p", "no:cacheprovider", "-n", "0"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    quick, slow = re.search(r"(\d+)/\d+ tests collected \((\d+) deselected\)", summary).groups()
    assert int(quick) > 0 and int(slow) > 0, summary
    assert "tests/test_dvc.py" not in result.stdout  # every test there is slow


def tracked_copy(dest: Path) -> Path:
    """The repository's tracked files copied to dest (an install must not write into the working tree)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, names.split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def usage(text: str) -> str:
    """A command's --help with its program name taken out (argparse prints the name it was started by, and wraps the
    usage lines to fit it)."""
    return " ".join(re.sub(r"usage: \S+", "usage:", text).split())


@pytest.mark.slow  # a virtual environment and an editable install: about half a minute
def test_the_package_installs_with_its_commands(tmp_path):
    """The README's `pip install -e .` and `pip install -e ".[ray]"`, offline, into a throwaway environment that sees
    the installed dependencies (nothing downloaded: --no-deps); then each console script answers `--help`, from
    another folder, as its `python -m` command does."""
    source = tracked_copy(tmp_path / "clip-har")
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    # The new environment sees this one's packages (setuptools and pip included), whether this one is a venv or the
    # system python: --system-site-packages would show the base interpreter's instead, whose setuptools may be old.
    inner = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    Path(inner, "outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONPATH": ""}
    for target in (".", ".[ray]"):
        result = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                                 "-e", target], cwd=source, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "does not provide the extra" not in result.stdout + result.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for script, (_, _, module) in SCRIPTS.items():
        installed = subprocess.run([str(env_dir / "bin" / script), "--help"], cwd=elsewhere, env=env,
                                   capture_output=True, text=True)
        assert installed.returncode == 0, f"{script}: {installed.stderr[-3000:]}"
        by_module = subprocess.run([str(python), "-m", module, "--help"], cwd=elsewhere, env=env,
                                   capture_output=True, text=True)
        assert by_module.returncode == 0, f"python -m {module}: {by_module.stderr[-3000:]}"
        assert usage(installed.stdout) == usage(by_module.stdout), script
    assert list(elsewhere.iterdir()) == []  # --help writes nothing
