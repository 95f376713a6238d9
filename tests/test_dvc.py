"""End to end: the real `dvc repro` (demo + extract) in a temporary copy of the repository, with the tiny encoder."""
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.cache import read_cache
from pipeline.demo import CLASSES

ROOT = Path(__file__).resolve().parents[1]


def sh(*cmd, cwd):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def test_dvc_repro_builds_the_cache_and_a_second_repro_does_nothing(tmp_path, tiny_clip):
    repo = tmp_path / "repo"
    files = sh("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=ROOT).split()
    for name in files:
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["demo"]["clips_per_class"] = 2
    params["encoder"]["model"] = tiny_clip
    params["extract"]["num_frames"] = 4
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    sh("git", "init", "-q", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy", cwd=repo)

    out = sh(sys.executable, "-m", "dvc", "repro", cwd=repo)
    assert "Running stage 'demo'" in out and "Running stage 'extract'" in out
    assert "14 encoded, 0 reused, 0 skipped" in out
    cache = read_cache(repo / "cache" / "features.h5")
    assert cache.class_names == list(CLASSES) and len(cache) == 14 and cache.embeddings.shape == (14, 4, 32)
    assert {p.split("/")[1].rsplit(".", 1)[1] for p in cache.paths} >= {"mp4", "avi"}

    out = sh(sys.executable, "-m", "dvc", "repro", cwd=repo)
    assert "Running stage" not in out  # everything up to date
    assert "Data and pipelines are up to date" in sh(sys.executable, "-m", "dvc", "status", cwd=repo)

    # a changed extract param re-runs the stage; the persisted cache makes it reuse every embedding
    params["extract"]["batch_size"] = 8
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    out = sh(sys.executable, "-m", "dvc", "repro", cwd=repo)
    assert "Running stage 'demo'" not in out and "0 encoded, 14 reused, 0 skipped" in out
