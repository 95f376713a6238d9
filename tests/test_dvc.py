"""End to end: the README's commands, the real `dvc repro` and `dvc exp run`, in a temporary copy of the repository."""
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.extract.cache import RANDOM_ENCODER_NOTE, read_cache
from pipeline.data.demo import CLASSES
from pipeline.heads.evaluate import DETAIL_METRICS, SUMMARY_METRICS
from pipeline.heads.kinds import load_head
from pipeline.paths import HEAD_FILES
from tests.browser import chromium_page, need_chromium, streamlit_server, too_wide
from tests.conftest import committed_file, committed_params

pytestmark = pytest.mark.slow  # the real dvc, several minutes: deselect with -m "not slow"
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "tests" / "out" / "first_hour"  # the first hour's screenshots (git ignores tests/out/)


def run(*cmd, cwd, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}"
    return result


def sh(*cmd, cwd):
    result = run(*cmd, cwd=cwd)
    return result.stdout + result.stderr


def dvc(*args, cwd):
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd)


def copy_repo(repo: Path) -> dict:
    """The repository's tracked files copied to `repo` (a new git repository), params.yaml as committed (a user's
    `dvc exp run -S` in the checkout changes nothing here) with a small demo (5 clips per class, 4 frames); returns
    the params."""
    for name in sh("git", "ls-files", "--cached", cwd=ROOT).split():
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    params = yaml.safe_load(committed_file("params.yaml"))
    params["demo"]["clips_per_class"] = 5
    params["extract"]["num_frames"] = 4
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    sh("git", "init", "-q", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy", cwd=repo)
    return params


@pytest.fixture(scope="module")
def demo_repo(tmp_path_factory):
    """(repo, params, output): a copy of the repository after the README's quick start and offline demo on a small
    demo dataset (5 clips per class, 4 frames), shared by the tests that need no other data. Offline, `dvc repro`
    stops at stage one with the sentence that names the next two commands; the test runs those."""
    repo = tmp_path_factory.mktemp("dvc") / "repo"
    copy_repo(repo)
    hub = tmp_path_factory.mktemp("hf")  # an empty Hugging Face cache: the real weights are never found
    offline = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, capture_output=True, text=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hub)})
    first = offline.stdout + offline.stderr
    assert offline.returncode != 0 and "Running stage 'extract'" in first, first
    assert "python -m pipeline.embed.encoder --tiny models/tiny-clip" in first, first
    assert "dvc exp run -S encoder.model=models/tiny-clip" in first and "Traceback" not in first, first
    sh(sys.executable, "-m", "pipeline.embed.encoder", "--tiny", "models/tiny-clip", cwd=repo)
    out = dvc("exp", "run", "-S", "encoder.model=models/tiny-clip", cwd=repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["encoder"]["model"] == "models/tiny-clip"
    return repo, params, first + out


@pytest.fixture(scope="module")
def plots_page(demo_repo, tmp_path_factory) -> Path:
    """`dvc plots show`'s page (index.html) for the trained demo, written once for the tests that read it."""
    out = tmp_path_factory.mktemp("plots")
    dvc("plots", "show", "-o", str(out), cwd=demo_repo[0])
    return out / "index.html"


def plot_specs(page_file: Path) -> list[dict]:
    """The Vega-Lite spec of each chart on a `dvc plots show` page."""
    return [json.loads(m) for m in re.findall(r"var spec = (\{.*\});", page_file.read_text())]


def test_dvc_pipeline_end_to_end(demo_repo, plots_page):
    repo, params, out = demo_repo
    for stage in ("demo", "extract", "split", "train", "baseline", "zeroshot", "evaluate"):
        assert f"Running stage '{stage}'" in out
    assert "35 encoded, 0 reused, 0 skipped" in out
    assert "linear" in out and "logreg" in out and "zeroshot" in out and "(7 test videos)" in out  # the table
    assert "test accuracy by training videos per class: 1: zeroshot" in out and "; 3: zeroshot" in out
    cache = read_cache(repo / "cache" / "features.h5")
    assert cache.class_names == list(CLASSES) and len(cache) == 35 and cache.embeddings.shape == (35, 4, 32)
    assert {p.rsplit(".", 1)[1] for p in cache.paths} == {"mp4", "mkv", "webm"}

    # heads, metrics and plots where the README says
    linear = load_head(repo / "models" / "linear.pt")
    assert linear.meta_.features["encoder_fingerprint"] == cache.attrs["encoder_fingerprint"]
    assert load_head(repo / "models" / "logreg.pt").classes_ == list(CLASSES)
    assert (repo / "models" / "linear_final.pt").is_file()
    assert load_head(repo / "models" / "zeroshot.pt").classes_ == list(CLASSES)
    # the numbers DVC tabulates, numbers only; the random encoder's note, the protocol and the rest beside them
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert list(summary) == list(SUMMARY_METRICS) and all(set(v) == set(HEAD_FILES) for v in summary.values())
    assert all(isinstance(n, float | int) for v in summary.values() for n in v.values()), summary
    details = json.loads((repo / "metrics" / "details.json").read_text())
    assert details["warning"] == RANDOM_ENCODER_NOTE and details["test_videos"] == 7
    assert details["protocol"] == "random split: test 0.15, val 0.15, seed 0"
    assert set(DETAIL_METRICS) | {"cv_folds", "best_epoch"} <= set(details) and details["cv_folds"]["linear"] == 5
    assert RANDOM_ENCODER_NOTE in out  # evaluate's table says so
    per_class = json.loads((repo / "dvclive" / "evaluate" / "per_class.json").read_text())
    assert set(per_class["linear"]) == set(CLASSES) and set(per_class["linear"]["walking"]) == {
        "precision", "recall", "f1", "support"}
    for plot in ("train/plots/metrics/train/loss.tsv", "train/plots/metrics/val/accuracy.tsv",
                 *(f"evaluate/plots/custom/{h}_confusion.json" for h in HEAD_FILES)):
        assert (repo / "dvclive" / plot).stat().st_size > 0, plot
    assert not list((repo / "dvclive").rglob("*.png"))  # each chart once, drawn by dvc plots (no PNG of it)
    curve = json.loads((repo / "dvclive" / "evaluate" / "plots" / "custom" / "data_efficiency.json").read_text())
    assert sorted({r["videos_per_class"] for r in curve}) == [1, 2, 3] and len(curve) == 12
    assert {r["head"] for r in curve} == {"zeroshot", "linear_from_zeroshot", "linear", "logreg"}
    shown = dvc("metrics", "show", cwd=repo).splitlines()  # one row: a column per headline metric and head
    assert len(shown) == 2 and set(shown[0].split()) == {"Path", *(f"{m}.{h}" for m in SUMMARY_METRICS
                                                                   for h in HEAD_FILES)}, shown
    assert max(map(len, shown)) <= 120, shown  # no wrap in a 120-column terminal
    # `dvc plots show`: every class on both axes of each confusion matrix, a colour per head in the data efficiency
    specs = {s["title"]["text"]: s for s in plot_specs(plots_page)}
    confusion = [s for title, s in specs.items() if "confusion" in title]
    assert len(confusion) == 3 and all({v["predicted"] for v in s["data"]["values"]} == set(CLASSES) ==
                                       {v["actual"] for v in s["data"]["values"]} for s in confusion)
    # the page says what the terminal says: the random encoder's warning above the charts, the protocol beside it
    notice = plot_specs(plots_page)[0]
    assert notice["title"]["text"] == "About these numbers" and notice["mark"]["type"] == "text", notice
    texts = [v["text"] for v in notice["data"]["values"]]
    assert texts[0] == texts[-1] == f"*** {RANDOM_ENCODER_NOTE} ***", texts
    assert f"test part: {details['protocol']}" in texts, texts
    efficiency = next(s for title, s in specs.items() if title.startswith("Data efficiency"))
    assert efficiency["encoding"]["color"]["field"] == "head"
    assert len({v["head"] for v in efficiency["data"]["values"]}) == 4

    out = dvc("repro", cwd=repo)
    assert "Running stage" not in out and "Data and pipelines are up to date" in out  # everything up to date

    # the README's baseline commit (experiments are compared with it), then an experiment on the head re-runs only
    # the head stages
    sh("git", "add", "params.yaml", "dvc.lock", "metrics", "dvclive", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "demo baseline", cwd=repo)
    out = dvc("exp", "run", "-S", "train.lr=0.001", cwd=repo)
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
    for stage in ("demo", "extract", "split", "baseline", "zeroshot"):
        assert f"Running stage '{stage}'" not in out
    # the README's comparison: the learning rate and every head's accuracy side by side, within 120 columns (no
    # terminal here: DVC writes the table at its full width, as its pager shows it, so nothing is cut to "…")
    table = dvc("exp", "show", "--drop", ".*", "--keep", "Experiment|train.lr|accuracy", cwd=repo)
    lines = table.splitlines()
    assert lines[1].split() == ["Experiment", *(f"accuracy.{h}" for h in HEAD_FILES), "train.lr"], table
    assert max(map(len, lines)) <= 120 and "…" not in table, table
    rows = [line.split() for line in lines[3:] if line.strip(" ─")]  # the workspace (the experiment's results),
    assert [r[-1] for r in rows] == ["0.001", "0.0001", "0.001"], table  # the baseline, the experiment
    name = re.search(r"\[(\S+)\]", table).group(1)
    diff = dvc("exp", "diff", "HEAD", name, cwd=repo)  # what changed between the baseline and the experiment
    assert "train.lr" in diff and "Change" in diff, diff

    # a changed extract param re-runs stage one; the persisted cache makes it reuse every embedding (shard_size is
    # not in the cache key; batch_size is: another batch shape may round differently)
    params["extract"]["shard_size"] = 8
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    out = dvc("repro", "extract", cwd=repo)
    assert "Running stage 'demo'" not in out and "0 encoded, 35 reused, 0 skipped" in out


def test_a_failed_split_keeps_the_previous_split_and_says_params_yaml_holds_the_failed_setting(demo_repo, tmp_path):
    """cache/split.csv is a persisted output written by rename: a split that fails leaves it (DVC deleted it before
    a stage ran), the error says params.yaml holds the settings that failed; a split that succeeds replaces it and
    DVC tracks the new one (`dvc status split`: the stage and its output up to date)."""
    repo = tmp_path / "repo"
    shutil.copytree(demo_repo[0], repo, symlinks=True)  # the shared demo stays as it was
    split = repo / "cache" / "split.csv"
    before = split.read_text()
    failed = subprocess.run([sys.executable, "-m", "dvc", "exp", "run", "-S", "split.test=0.9"], cwd=repo,
                            capture_output=True, text=True)
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "split: error: split fractions must be in [0, 1)" in said, said
    assert "params.yaml still holds the settings that failed" in said and "git checkout params.yaml" in said, said
    assert "Traceback" not in said and split.read_text() == before  # the message is true: the split is kept
    assert yaml.safe_load((repo / "params.yaml").read_text())["split"]["test"] == 0.9  # as the message says
    sh("git", "checkout", "params.yaml", cwd=repo)  # the way back the message gives
    # a split that succeeds replaces the persisted file (the split stage alone: the heads after it are another test's)
    dvc("exp", "run", "-S", "split.seed=1", "split", cwd=repo)
    status = dvc("status", "split", cwd=repo)
    assert split.read_text() != before and "split.csv" not in status and "up to date" in status, status


def test_the_readme_commands_on_the_trained_demo(demo_repo, capsys):
    """The README's predict and inspect commands on the trained demo, as `python -m` (the console scripts
    clip-har-predict and clip-har-inspect are the same commands: tests/test_readme.py); the inspector's in this
    process."""
    repo, params, _ = demo_repo
    walking = sorted(p.name for p in (repo / "data" / "demo" / "walking").iterdir())
    assert "walking_003.mkv" in walking  # the clip the README names (the demo is seeded)
    # the two predict commands run beside each other and beside the inspector's (each is mostly start-up)
    folder = started(sys.executable, "-m", "pipeline.tools.predict", "data/demo/walking", cwd=repo)
    one = started(sys.executable, "-m", "pipeline.tools.predict", "data/demo/walking/walking_003.mkv", "--head", "logreg",
                  "--segments", "2", "1", "--json", cwd=repo)
    summary = inspector("-m", "pipeline.tools.inspector", cwd=repo, capsys=capsys)
    assert "35 videos, 7 classes" in summary and RANDOM_ENCODER_NOTE in summary, summary
    out = inspector("-m", "pipeline.tools.inspector", "--video", "walking/walking_003.mkv", cwd=repo, capsys=capsys)
    assert "walking" in out, out
    out = inspector("-m", "pipeline.tools.inspector", "--neighbors", "walking/walking_003.mkv", "-k", "5", cwd=repo,
                    capsys=capsys)
    assert sum(line[:1].isdigit() for line in out.splitlines()) == 5, out  # similarity, class, path
    inspector("-m", "pipeline.tools.inspector", "--plot", "map.png", cwd=repo, capsys=capsys)
    assert (repo / "map.png").stat().st_size > 0
    (repo / "map.png").unlink()
    out = inspector("-m", "pipeline.tools.inspector", "--outliers", cwd=repo, capsys=capsys)
    assert out.strip(), out

    lines = finished(folder).splitlines()
    assert lines[0].split("\t") == ["path", "answer", "class", "probability"]
    assert sorted(line.split("\t")[0].rsplit("/", 1)[-1] for line in lines[1:]) == walking
    answers = json.loads(finished(one))
    assert len(answers) == 1 and set(answers[0]["probabilities"]) == set(CLASSES), answers
    assert answers[0]["segments"] and "segments_error" not in answers[0], answers  # the windows' answers


def started(*cmd, cwd) -> subprocess.Popen:
    """A command started in `cwd` with its output piped; `finished` waits for it."""
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen) -> str:
    """The stdout of a command from `started`, once it has ended with status 0."""
    out, err = proc.communicate()
    assert proc.returncode == 0, f"{' '.join(map(str, proc.args))} failed:\n{out}\n{err}"
    return out


def inspector(*argv: str, cwd: Path, capsys) -> str:
    """`python -m pipeline.tools.inspector ARGS` (argv: "-m", "pipeline.tools.inspector", ARGS) run in this process, in `cwd`:
    that module's `__main__` block is `raise SystemExit(pipeline.tools.cli.inspect())`, and a new interpreter for each
    command would import numpy, scikit-learn and h5py again (seconds each on the 2-core machine)."""
    from pipeline.tools.cli import inspect

    assert argv[:2] == ("-m", "pipeline.tools.inspector")
    here = os.getcwd()
    os.chdir(cwd)
    try:
        code = inspect(list(argv[2:]))
    finally:
        os.chdir(here)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_first_hour_in_the_browser(demo_repo, plots_page):
    """The README's first hour in Chromium, the network blocked: `dvc plots show`'s page draws each chart once with
    its data, every class on both axes of each confusion matrix; the app on the demo with the trained heads plays a
    demo clip beside the answer, predicts, keeps the answer on a head switch; its Embeddings page keeps every table
    and chart inside its block. Screenshots in tests/out/first_hour/."""
    need_chromium()
    repo, params, _ = demo_repo
    check_plots_page(plots_page, SHOTS)
    clip = sorted((repo / "data" / "demo" / "walking").iterdir())[0]  # mp4, mkv or webm
    walk_the_app(repo, clip, params["extract"]["num_frames"], SHOTS)


def check_plots_page(page_file: Path, shots: Path) -> None:
    """Each chart of dvc.yaml's `plots:` once, with data, drawn without network; every image loaded; the notice
    (the random encoder's warning and the protocol, a text chart) first."""
    specs = plot_specs(page_file)
    titles = [s["title"]["text"] for s in specs]
    assert len(titles) == len(set(titles)) == 7 and titles[0] == "About these numbers", titles
    for spec in specs[1:]:
        encoding = spec.get("encoding") or spec["spec"]["encoding"]
        values = spec["data"]["values"]
        assert values and all(encoding["x"]["field"] in v for v in values), spec["title"]  # no empty "vs step"
        if "confusion" in spec["title"]["text"]:  # predicted across, actual down (as scikit-learn draws it)
            assert (encoding["x"]["field"], encoding["y"]["field"]) == ("predicted", "actual")
            # every class on both axes, predicted or not, so that the diagonal lines up
            assert {v["predicted"] for v in values} == {v["actual"] for v in values} == set(CLASSES), spec["title"]
            assert {"name": "showValues", "value": True}.items() <= spec["params"][0].items()  # counts in the cells
    with chromium_page() as page:
        outside, errors = [], []
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else (
            outside.append(route.request.url), route.abort()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.as_uri())
        page.wait_for_function(f"document.querySelectorAll('.vega-embed svg.marks, .vega-embed canvas').length"
                               f" == {len(specs)}")
        sizes = page.evaluate("""[...document.querySelectorAll('.vega-embed svg.marks, .vega-embed canvas')].map(
            c => [c.getBoundingClientRect().width, c.getBoundingClientRect().height,
                  c.querySelectorAll('path, rect, line').length])""")
        images = page.evaluate("document.images.length")
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "1-dvc-plots.png"), full_page=True)
    assert not errors and not outside, (errors, outside)
    (notice_w, notice_h, _), charts = sizes[0], sizes[1:]  # the notice is text: its lines, no marks to count
    assert notice_w > 100 and notice_h > 50, sizes
    assert all(w > 100 and h > 100 and marks > 10 for w, h, marks in charts), sizes
    assert images == 0  # no PNG repeating a chart


def done(page, frames: int) -> None:
    """Wait for the app's run to end and its answer to be drawn: the bars and every sampled frame."""
    from playwright.sync_api import expect

    expect(page.locator("[data-testid=stApp][data-test-script-state=notRunning]")).to_have_count(1)
    expect(page.locator("[data-testid=stVegaLiteChart]").get_by_role("img").first).to_be_visible()
    expect(page.locator("[data-testid=stImage] img")).to_have_count(frames)
    page.wait_for_function("[...document.querySelectorAll('[data-testid=stImage] img')].every(i => i.complete)")


def walk_the_app(repo: Path, clip: Path, frames: int, shots: Path) -> None:
    """Upload a demo clip to the app in the repository, predict, switch head, open the Embeddings page: screenshots
    at each step."""
    from playwright.sync_api import expect

    with streamlit_server(repo) as url, chromium_page() as page:
        outside = []
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url) else (
            outside.append(route.request.url), route.abort()))
        page.goto(url)
        expect(page.get_by_text("What is the person doing?")).to_be_visible()
        page.screenshot(path=str(shots / "2-app.png"))
        page.locator("input[type=file]").set_input_files(str(clip))
        # the demo clip plays: the player has its first frame
        page.wait_for_function("(() => { const v = document.querySelector('video'); return v && (v.readyState >= 2"
                               " || v.error); })()")
        assert page.evaluate("(() => { const v = document.querySelector('video'); return !v.error && "
                             "v.videoWidth > 0; })()")
        page.get_by_role("button", name="Predict").click()
        expect(page.get_by_text("Answer of the linear head", exact=True)).to_be_visible()
        done(page, frames)
        answer = page.locator("h2").filter(has_not_text="What is the person doing?").first
        expect(answer).to_be_visible()
        box, height = answer.bounding_box(), page.viewport_size["height"]
        assert box["y"] + box["height"] < height, "the answer is below the fold"
        page.screenshot(path=str(shots / "3-answer.png"))
        first = answer.inner_text()
        page.get_by_text("logistic regression", exact=True).click()
        expect(page.get_by_text("press Predict for the logistic regression's")).to_be_visible()
        expect(answer).to_have_text(first)  # the linear head's answer stays, and says whose it is
        page.screenshot(path=str(shots / "4-head-switched.png"))
        page.get_by_role("button", name="Predict").click()
        expect(page.get_by_text("Answer of the logistic regression", exact=True)).to_be_visible()
        done(page, frames)
        expect(page.get_by_text("press Predict for the logistic regression's")).to_have_count(0)
        expect(page.locator("h2").filter(has_not_text="What is the person doing?")).to_have_count(1)
        page.screenshot(path=str(shots / "5-logreg-answer.png"), full_page=True)
        page.get_by_text("zero-shot", exact=True).click()
        actions = page.locator("textarea")
        expect(actions).to_have_value(re.compile("walking_while_using_phone"))
        expect(page.get_by_text("press Predict for the zero-shot's")).to_be_visible()
        assert actions.evaluate("t => t.scrollHeight <= t.clientHeight")  # every action in view, no scrolling
        page.screenshot(path=str(shots / "6-zero-shot.png"))
        page.get_by_role("link", name="Embeddings").click()  # the cache's page: every table inside its block
        expect(page.get_by_role("heading", name="Embeddings")).to_be_visible()
        expect(page.locator("[data-testid=stApp][data-test-script-state=notRunning]")).to_have_count(1)
        expect(page.locator("[data-testid=stImage] img").first).to_be_visible()  # the frames, drawn last
        assert too_wide(page) == [], too_wide(page)
        page.screenshot(path=str(shots / "7-embeddings.png"), full_page=True)
    # the page's favicon (the Predict page's material icon) is Google's: a tab without its icon, nothing else
    assert [u for u in outside if "fonts.gstatic.com/s/i/" not in u] == [], outside


def test_the_stages_with_an_annotation_file(demo_repo, tiny_clip, tmp_path, monkeypatch, capsys, keep_threads):
    """The demo videos named by an annotation CSV in annotations/ (one also as a segment), its split column as the
    official split: the stages from extract to evaluate, called in this process in a project folder of their own
    (dvc's part, running them, is the tests' above), quote the protocol beside the accuracies."""
    import stages.baseline
    import stages.evaluate
    import stages.extract
    import stages.split
    import stages.train
    import stages.zeroshot

    demo = tmp_path / "data" / "demo"
    shutil.copytree(demo_repo[0] / "data" / "demo", demo)
    files = sorted(p.relative_to(demo).as_posix() for p in demo.rglob("*.*"))
    rows = [f"{f},{f.split('/')[0]},,,{Path(f).stem},{'test' if f.split('_')[-1][:3] in ('000', '001') else 'train'}"
            for f in files]
    rows.append(f"{files[-1]},{files[-1].split('/')[0]},0,1,{Path(files[-1]).stem},train")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "demo.csv").write_text("path,label,start,end,group,split\n" + "\n".join(rows) + "\n")
    params = committed_params(data={"annotations": "annotations/demo.csv"}, encoder={"model": tiny_clip},
                              extract={"num_frames": 4}, split={"method": "lists"}, train={"epochs": 5},
                              evaluate={"folds": 0, "shots": []})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    for stage in (stages.extract, stages.split, stages.train, stages.baseline, stages.zeroshot, stages.evaluate):
        stage.main()
    out = capsys.readouterr().out
    assert "36 encoded, 0 reused, 0 skipped" in out and "(14 test videos)" in out
    assert ("test part: official lists (the annotations' split column); val 0.15 of train by the annotations' group "
            "column, seed 0") in out  # the grouping the split used, named
    cache = read_cache(tmp_path / "cache" / "features.h5")
    ids = cache.clip_ids().tolist()
    assert f"{files[-1]}#t=0,1" in ids and files[-1] in ids
    split = {row["path"]: row for row in csv.DictReader((tmp_path / "cache" / "split.csv").open())}
    assert set(split) == set(ids) and split[f"{files[-1]}#t=0,1"]["group"] == split[files[-1]]["group"]
    assert sorted(p for p, r in split.items() if r["part"] == "test") == sorted(r.split(",")[0] for r in rows
                                                                               if r.endswith(",test"))
    details = json.loads((tmp_path / "metrics" / "details.json").read_text())
    assert details["protocol"].startswith("official lists") and "cv_folds" not in details
