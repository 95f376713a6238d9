"""The demo dataset: seven classes, deterministic, varied in size, fps and container."""
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.demo import CLASSES, DemoConfig, make_demo_dataset
from pipeline.data.discover import discover_videos
from pipeline.decode.video import read_frames


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, list[Path]]:
    """Three clips per class, seed 0, rendered once for this module's tests (rendering is most of their time)."""
    root = tmp_path_factory.mktemp("demo")
    return root, make_demo_dataset(DemoConfig(out_dir=str(root), clips_per_class=3, seed=0), progress=False)


def test_demo_dataset_is_deterministic_and_varied(demo, tmp_path):
    root, files = demo
    videos, classes, _ = discover_videos(root)
    assert classes == list(CLASSES) and len(videos) == len(files) == 21
    assert {f.suffix for f in files} == {".mp4", ".mkv", ".webm"}  # H.264, H.264, VP9 (test_browser plays them)
    sizes, rates = set(), set()
    for f in files:
        clip = read_frames(f, 4)
        assert 2.0 <= clip.duration <= 4.0
        sizes.add(clip.frames.shape[1:3])
        rates.add(clip.fps)
    assert len(sizes) >= 3 and len(rates) >= 2
    # each clip is drawn from (seed, class, clip) alone: rendered again (one per class, in every container), the
    # same bytes; another seed, other clips
    again = make_demo_dataset(DemoConfig(out_dir=str(tmp_path / "b"), clips_per_class=1, seed=0), progress=False)
    first = [f for f in files if f.stem.endswith("_000")]
    assert {f.suffix for f in again} == {".mp4", ".mkv", ".webm"}
    for f, g in zip(first, again):
        assert f.relative_to(root) == g.relative_to(tmp_path / "b") and f.read_bytes() == g.read_bytes()
    other = make_demo_dataset(DemoConfig(out_dir=str(tmp_path / "c"), clips_per_class=1, seed=1), progress=False)
    assert any(read_frames(f, 1).frames.shape != read_frames(g, 1).frames.shape
               or not np.array_equal(read_frames(f, 1).frames, read_frames(g, 1).frames)
               for f, g in zip(first, other))


def test_figures_move_in_walking_and_hold_still_when_standing(demo):
    root, _ = demo

    def motion(cls):
        clips = [read_frames(f, 8).frames.astype(float) for f in sorted((root / cls).iterdir())]
        return np.mean([np.abs(np.diff(c, axis=0)).mean() for c in clips])

    assert motion("walking") > motion("standing_still")
