"""The stratified, seeded split and its CSV."""
import numpy as np
import pytest

from pipeline.split import read_split, split_videos, write_split

NAMES = ["a", "b", "c"]


def labels_of(counts):
    return np.repeat(np.arange(len(counts)), counts)


def test_split_is_stratified_and_deterministic():
    labels = labels_of([20, 20, 40])
    parts = split_videos(labels, NAMES, 0.15, 0.15, seed=0)
    assert parts.shape == (80,)
    for c, n in enumerate([20, 20, 40]):
        mine = parts[labels == c]
        assert (mine == "test").sum() == round(n * 0.15) and (mine == "val").sum() == round(n * 0.15)
        assert (mine == "train").sum() == n - 2 * round(n * 0.15)
    np.testing.assert_array_equal(parts, split_videos(labels, NAMES, 0.15, 0.15, seed=0))
    assert not np.array_equal(parts, split_videos(labels, NAMES, 0.15, 0.15, seed=1))


def test_small_classes_get_at_least_one_video_per_part():
    parts = split_videos(labels_of([3, 4, 10]), NAMES, 0.15, 0.15, seed=0)
    for c in range(3):
        mine = parts[labels_of([3, 4, 10]) == c]
        assert {"train", "val", "test"} <= set(mine)


def test_classes_too_small_are_named():
    with pytest.raises(ValueError, match=r"too small.*a \(2\).*c \(1\)"):
        split_videos(labels_of([2, 5, 1]), NAMES, 0.15, 0.15, seed=0)
    parts = split_videos(labels_of([2, 5, 1]), NAMES, 0.0, 0.0, seed=0)  # no held-out parts: nothing to split
    assert set(parts) == {"train"}


@pytest.mark.parametrize("val,test", [(-0.1, 0.1), (0.5, 0.5), (1.0, 0.0)])
def test_bad_fractions_are_rejected(val, test):
    with pytest.raises(ValueError, match="fractions"):
        split_videos(labels_of([5, 5, 5]), NAMES, val, test, seed=0)


def test_csv_round_trip_and_stale_split(tmp_path):
    labels = labels_of([5, 5, 5])
    paths = np.array([f"{NAMES[y]}/v{i}.mp4" for i, y in enumerate(labels)], object)
    parts = split_videos(labels, NAMES, 0.2, 0.2, seed=0)
    write_split(tmp_path / "split.csv", paths, labels, NAMES, parts)
    assert (tmp_path / "split.csv").read_text().splitlines()[0] == "path,label,part,group"
    np.testing.assert_array_equal(read_split(tmp_path / "split.csv", paths[::-1]), parts[::-1])
    with pytest.raises(ValueError, match="older than the cache"):
        read_split(tmp_path / "split.csv", np.append(paths, "a/new.mp4"))
    with pytest.raises(ValueError, match="no split"):
        read_split(tmp_path / "none.csv", paths)
