"""The demo dataset: seven classes, deterministic, varied in size, fps and container."""
from pathlib import Path

import numpy as np

from pipeline.demo import CLASSES, DemoConfig, make_demo_dataset
from pipeline.discover import discover_videos
from pipeline.video import read_frames


def test_demo_dataset_is_deterministic_and_varied(tmp_path):
    files = make_demo_dataset(DemoConfig(out_dir=str(tmp_path / "a"), clips_per_class=3, seed=0), progress=False)
    again = make_demo_dataset(DemoConfig(out_dir=str(tmp_path / "b"), clips_per_class=3, seed=0), progress=False)
    videos, classes, _ = discover_videos(tmp_path / "a")
    assert classes == list(CLASSES) and len(videos) == len(files) == 21
    assert {Path(f).suffix for f in files} == {".mp4", ".mkv", ".webm"}  # H.264, H.264, VP9 (test_browser plays them)
    sizes, rates = set(), set()
    for f, g in zip(files, again):
        assert f.relative_to(tmp_path / "a") == g.relative_to(tmp_path / "b")
        clip, clip_again = read_frames(f, 4), read_frames(g, 4)
        np.testing.assert_array_equal(clip.frames, clip_again.frames)  # same seed, same pixels
        assert 2.0 <= clip.duration <= 4.0
        sizes.add(clip.frames.shape[1:3])
        rates.add(clip.fps)
    assert len(sizes) >= 3 and len(rates) >= 2
    other = make_demo_dataset(DemoConfig(out_dir=str(tmp_path / "c"), clips_per_class=3, seed=1), progress=False)
    assert any(read_frames(f, 1).frames.shape != read_frames(g, 1).frames.shape
               or not np.array_equal(read_frames(f, 1).frames, read_frames(g, 1).frames)
               for f, g in zip(files, other))


def test_figures_move_in_walking_and_hold_still_when_standing(tmp_path):
    make_demo_dataset(DemoConfig(out_dir=str(tmp_path), clips_per_class=2), progress=False)

    def motion(cls):
        clips = [read_frames(f, 8).frames.astype(float) for f in sorted((tmp_path / cls).iterdir())]
        return np.mean([np.abs(np.diff(c, axis=0)).mean() for c in clips])

    assert motion("walking") > motion("standing_still")
