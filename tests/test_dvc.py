"""End to end: the real `dvc repro` and `dvc exp run` in a temporary copy of the repository, with the tiny encoder."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cache import read_cache
from pipeline.demo import CLASSES
from pipeline.heads import load_head

pytestmark = pytest.mark.slow  # the real dvc, several minutes: deselect with -m "not slow"
ROOT = Path(__file__).resolve().parents[1]
HEAD_METRICS = {"accuracy", "ci95_low", "ci95_high", "macro_f1", "cv_mean", "cv_std", "ece", "ece_uncalibrated",
                "temperature"}


def sh(*cmd, cwd):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def dvc(*args, cwd):
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd)


@pytest.fixture(scope="module")
def demo_repo(tmp_path_factory, tiny_clip):
    """(repo, params, output of the first `dvc repro`): a copy of the repository after `dvc repro` on a small demo
    dataset (5 clips per class, 4 frames) with the tiny encoder. The tests of this module share it."""
    repo = tmp_path_factory.mktemp("dvc") / "repo"
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

    return repo, params, dvc("repro", cwd=repo)


def test_dvc_pipeline_end_to_end(demo_repo, tmp_path):
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
    assert load_head(repo / "models" / "linear.pt").meta["encoder_fingerprint"] == cache.attrs["encoder_fingerprint"]
    assert load_head(repo / "models" / "logreg.joblib").class_names == list(CLASSES)
    assert (repo / "models" / "linear_final.pt").is_file()
    metrics = json.loads((repo / "dvclive" / "evaluate" / "metrics.json").read_text())
    assert set(metrics) == {"linear", "logreg", "zeroshot", "cv_folds"} and metrics["cv_folds"] == 5
    assert all(set(metrics[h]) == HEAD_METRICS for h in ("linear", "logreg", "zeroshot"))
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
    shown = dvc("metrics", "show", "--json", cwd=repo)
    assert "linear" in shown and "logreg" in shown
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
    assert "train.lr" in table and "0.001" in table and "linear.accuracy" in table and "attention" in table

    # a changed extract param re-runs stage one; the persisted cache makes it reuse every embedding
    params["extract"]["batch_size"] = 8
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    out = dvc("repro", "extract", cwd=repo)
    assert "Running stage 'demo'" not in out and "0 encoded, 35 reused, 0 skipped" in out
