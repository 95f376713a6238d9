"""The evaluate stage's cautions: a test part too small to measure on, and near-duplicates across the split, each
with a fix that works on that data."""
import dataclasses

import numpy as np
import pytest

from pipeline.errors import DataError
from pipeline.extract.cache import empty_cache
from pipeline.heads.evaluate import (LEAK_COSINE, MIN_TEST_VIDEOS, leakage_note, small_test_note, unit_rows,
                                     usable_folds)
from pipeline.heads.split import SplitConfig, make_split, split_videos

CLASSES = ["clapping", "sitting", "walking"]


def demo_like_cache(cut: bool = True, group: list[str] | None = None):
    """3 classes of 3 clips named as the demo names them (walking_001.mp4), random frame embeddings (V, 4, 16);
    with `cut`, walking_001_cut.mp4: a clip cut from walking_001 (its frames, slightly changed)."""
    rng = np.random.default_rng(0)
    paths = [f"{c}/{c}_{i:03d}.mp4" for c in CLASSES for i in range(3)]
    frames = rng.normal(size=(len(paths), 4, 16)).astype(np.float32)
    labels = np.repeat(np.arange(3), 3)
    if cut:
        paths.append("walking/walking_001_cut.mp4")
        frames = np.concatenate([frames, frames[7:8] + 1e-4 * rng.normal(size=(1, 4, 16)).astype(np.float32)])
        labels = np.append(labels, 2)
    n = len(paths)
    cache = empty_cache(4, 16, {}, CLASSES)
    return dataclasses.replace(cache, embeddings=frames, paths=np.array(paths, object), labels=labels,
                               content_hash=np.array(paths, object), segment=np.full((n, 2), np.nan),
                               group=np.array(group or [""] * n, object), annotated_part=np.array([""] * n, object))


def note_for(cache, parts):
    return leakage_note(unit_rows(cache.embeddings.mean(axis=1)), cache.row_keys(), parts, cache.clip_ids())


def test_a_clip_cut_from_another_across_the_split_is_said_with_a_fix_that_works():
    cache = demo_like_cache()
    means = unit_rows(cache.embeddings.mean(axis=1))
    assert float(means[7] @ means[9]) >= LEAK_COSINE  # the cut clip is a near-duplicate of its source
    crossing = [s for s in range(20) if (p := make_split(cache, SplitConfig(seed=s)).parts)[7] != p[9]]
    split = make_split(cache, SplitConfig(seed=crossing[0]))  # a random split that puts them apart
    note = note_for(cache, split.parts)
    assert note.startswith("1 pair of near-duplicate clips") and "walking/walking_001.mp4" in note, note
    assert "walking/walking_001_cut.mp4" in note and "split.method group" in note and "`group` column" in note
    # what the user tried: file-name stems make one group per class here, too few to split
    with pytest.raises(DataError, match="too few groups"):
        make_split(cache, SplitConfig(method="group", group_by="stem"))
    # the fix the note gives: the pair in one group (the annotations' group column, every other clip its own)
    fixed = demo_like_cache(group=[""] * 7 + ["walking_001", "", "walking_001"])
    for seed in range(20):
        parts = make_split(fixed, SplitConfig(method="group", seed=seed)).parts
        assert parts[7] == parts[9] and note_for(fixed, parts) == ""
    assert note_for(demo_like_cache(cut=False), split.parts[:9]) == ""  # distinct clips: nothing to say


def test_a_test_part_with_few_videos_of_a_class_is_said_with_a_fix_that_works():
    cache = demo_like_cache(cut=False)
    parts = make_split(cache, SplitConfig()).parts  # 3 clips a class: 1 test video each
    note = small_test_note(cache.labels, parts, CLASSES, 0.15)
    assert note.startswith(f"the test part has fewer than {MIN_TEST_VIDEOS} videos of 3 of 3 classes (clapping 1, "
                           "sitting 1, walking 1)"), note
    assert "34 of a class give it 5 test videos at split.test 0.15" in note and "cross-validated" in note, note
    assert usable_folds(cache.labels, CLASSES, 5)[0] == 3  # the cross-validated accuracy it points to is there
    big = np.repeat(np.arange(3), 34)  # the videos it asks for: 5 test videos a class, no note
    assert small_test_note(big, split_videos(big, CLASSES, 0.15, 0.15, 0), CLASSES, 0.15) == ""
