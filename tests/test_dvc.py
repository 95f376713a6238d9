"""End to end: the real `dvc repro` and `dvc exp run` in a temporary copy of the repository, with the tiny encoder."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cache import read_cache
from pipeline.cache import RANDOM_ENCODER_NOTE
from pipeline.demo import CLASSES
from pipeline.evaluate import HEAD_METRICS
from pipeline.heads import load_head

pytestmark = pytest.mark.slow  # the real dvc, several minutes: deselect with -m "not slow"
ROOT = Path(__file__).resolve().parents[1]


def sh(*cmd, cwd):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def dvc(*args, cwd):
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd)


def copy_repo(repo: Path, tiny_clip: str) -> dict:
    """The repository's tracked files copied to `repo` (a new git repository), with a small demo and the tiny CLIP
    in params.yaml; returns the params."""
    for name in sh("git", "ls-files", "--cached", cwd=ROOT).split():
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["demo"]["clips_per_class"] = 5
    params["encoder"]["model"] = tiny_clip
    params["extract"]["num_frames"] = 4
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    sh("git", "init", "-q", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy", cwd=repo)
    return params


def test_dvc_pipeline_end_to_end(tmp_path, tiny_clip):
    repo = tmp_path / "repo"
    params = copy_repo(repo, tiny_clip)

    out = dvc("repro", cwd=repo)
    for stage in ("demo", "extract", "split", "train", "baseline", "zeroshot", "evaluate"):
        assert f"Running stage '{stage}'" in out
    assert "35 encoded, 0 reused, 0 skipped" in out
    assert "linear" in out and "logreg" in out and "zeroshot" in out and "(7 test videos)" in out  # the table
    assert "test accuracy by training videos per class: 1: zeroshot" in out and "; 3: zeroshot" in out
    cache = read_cache(repo / "cache" / "features.h5")
    assert cache.class_names == list(CLASSES) and len(cache) == 35 and cache.embeddings.shape == (35, 4, 32)
    assert {p.rsplit(".", 1)[1] for p in cache.paths} == {"mp4", "mkv", "webm"}

    # heads, metrics and plots where the README says
    assert load_head(repo / "models" / "linear.pt").meta["encoder_fingerprint"] == cache.attrs["encoder_fingerprint"]
    assert load_head(repo / "models" / "logreg.joblib").class_names == list(CLASSES)
    assert (repo / "models" / "linear_final.pt").is_file()
    for key in (*HEAD_METRICS, "cv_folds"):  # one file per metric, {head: value}, with the random encoder's note
        metric = json.loads((repo / "metrics" / f"{key}.json").read_text())
        assert metric == {**metric, "warning": RANDOM_ENCODER_NOTE} and {"linear", "logreg", "zeroshot"} <= set(metric)
        assert metric["protocol"] == "random split: test 0.15, val 0.15, seed 0"
    assert json.loads((repo / "metrics" / "cv_folds.json").read_text())["linear"] == 5
    assert RANDOM_ENCODER_NOTE in out  # evaluate's table says so
    assert load_head(repo / "models" / "zeroshot.pt").class_names == list(CLASSES)
    per_class = json.loads((repo / "dvclive" / "evaluate" / "per_class.json").read_text())
    assert set(per_class["linear"]) == set(CLASSES) and set(per_class["linear"]["walking"]) == {
        "precision", "recall", "f1", "support"}
    for png in ("train/plots/images/training_curves.png", "evaluate/plots/images/linear_confusion.png",
                "evaluate/plots/images/logreg_confusion.png", "evaluate/plots/images/zeroshot_confusion.png",
                "evaluate/plots/images/data_efficiency.png"):
        assert (repo / "dvclive" / png).read_bytes()[:4] == b"\x89PNG"
    curve = json.loads((repo / "dvclive" / "evaluate" / "plots" / "custom" / "data_efficiency.json").read_text())
    assert [r["videos_per_class"] for r in curve] == [1, 2, 3]
    assert set(curve[0]) == {"videos_per_class", "zeroshot", "zeroshot_init", "linear", "logreg"}
    shown = dvc("metrics", "show", cwd=repo).splitlines()  # a row per metric, a column per head
    assert shown[0].split()[:4] == ["Path", "linear", "logreg", "warning"] and len(shown) == len(HEAD_METRICS) + 3
    plots = dvc("plots", "show", "-o", str(tmp_path / "plots"), cwd=repo)
    assert (tmp_path / "plots" / "index.html").is_file(), plots

    out = dvc("repro", cwd=repo)
    assert "Running stage" not in out  # everything up to date
    assert "Data and pipelines are up to date" in dvc("status", cwd=repo)

    # an experiment on the head re-runs only the head stages
    out = dvc("exp", "run", "-S", "train.lr=0.001", cwd=repo)
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
    for stage in ("demo", "extract", "split", "baseline", "zeroshot"):
        assert f"Running stage '{stage}'" not in out
    out = dvc("exp", "run", "-S", "train.head=attention", cwd=repo)  # a temporal head, same comparison
    assert "Running stage 'train'" in out and "attention pooling" in out and "Running stage 'extract'" not in out
    table = dvc("exp", "show", "--csv", cwd=repo)
    assert "train.lr" in table and "0.001" in table and "metrics/accuracy.json:linear" in table and "attention" in table

    # a changed extract param re-runs stage one; the persisted cache makes it reuse every embedding
    params["extract"]["batch_size"] = 8
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    out = dvc("repro", "extract", cwd=repo)
    assert "Running stage 'demo'" not in out and "0 encoded, 35 reused, 0 skipped" in out


def test_dvc_pipeline_with_an_annotation_file(tmp_path, tiny_clip):
    """The demo videos named by an annotation CSV in annotations/ (one also as a segment), its split column as the
    official split: `dvc repro` through evaluate, which quotes the protocol beside the accuracies."""
    repo = tmp_path / "repo"
    params = copy_repo(repo, tiny_clip)
    dvc("repro", "demo", cwd=repo)
    files = sorted(p.relative_to(repo / "data" / "demo").as_posix() for p in (repo / "data" / "demo").rglob("*.*"))
    rows = [f"{f},{f.split('/')[0]},,,{Path(f).stem},{'test' if f.split('_')[-1][:3] in ('000', '001') else 'train'}"
            for f in files]
    rows.append(f"{files[-1]},{files[-1].split('/')[0]},0,1,{Path(files[-1]).stem},train")
    (repo / "annotations" / "demo.csv").write_text("path,label,start,end,group,split\n" + "\n".join(rows) + "\n")
    params["data"]["annotations"] = "annotations/demo.csv"
    params["split"]["method"] = "lists"
    params["train"]["epochs"] = 5
    params["evaluate"].update(folds=0, shots=[])
    (repo / "params.yaml").write_text(yaml.safe_dump(params))

    out = dvc("repro", cwd=repo)
    assert "36 encoded, 0 reused, 0 skipped" in out and "(14 test videos)" in out
    assert "test part: official lists (the annotations' split column); val 0.15 of train by group, seed 0" in out
    cache = read_cache(repo / "cache" / "features.h5")
    ids = cache.clip_ids().tolist()
    assert f"{files[-1]}#t=0,1" in ids and files[-1] in ids
    split = {row["path"]: row for row in csv.DictReader((repo / "cache" / "split.csv").open())}
    assert set(split) == set(ids) and split[f"{files[-1]}#t=0,1"]["group"] == split[files[-1]]["group"]
    assert sorted(p for p, r in split.items() if r["part"] == "test") == sorted(r.split(",")[0] for r in rows
                                                                               if r.endswith(",test"))
    accuracy = json.loads((repo / "metrics" / "accuracy.json").read_text())
    assert accuracy["protocol"].startswith("official lists") and "linear" in accuracy
