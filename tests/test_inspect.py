"""The cache inspector on hand-built caches whose answers are known (the Embeddings page: test_embeddings_page)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.extract.cache import KEY_ATTRS, SCHEMA_VERSION, empty_cache, write_cache
from pipeline.tools.cli import inspect
from pipeline.errors import ConfigError, printable
from pipeline.tools.inspector import (NEAR_DUPLICATE, find_outliers, frame_report, group_leakage, nearest_neighbors,
                                      summarize)
from pipeline.heads.neardup import similar_pairs
from pipeline.heads.split_file import PARTS, write_split

ROOT = Path(__file__).resolve().parents[1]
ATTRS = {"encoder_model": "tiny", "encoder_fingerprint": "f00d", "embedding_dim": 4, "num_frames": 2,
         "sampling": "uniform-centers", "preprocess": "fast", "preprocess_config": "{}",
         "backend": "torch", "quantize": "none",
         "data_root": "data"}


def hand_cache(tmp_path, means, labels, names=("a", "b"), hashes=None, skipped=()):
    """A cache whose video v has both frames equal to means[v] (float32 (V, D), D = 4 unless given otherwise),
    written to tmp_path/f.h5."""
    means = np.asarray(means, np.float32)
    n = len(means)
    cache = empty_cache(2, means.shape[1], {**ATTRS, "embedding_dim": means.shape[1]}, list(names))
    cache.embeddings = np.repeat(means[:, None, :], 2, axis=1)
    cache.frame_indices = np.tile([3, 9], (n, 1))
    cache.timestamps = np.tile([0.12, 0.36], (n, 1))
    cache.labels = np.asarray(labels, np.int64)
    cache.paths = np.array([f"{names[y]}/v{i}.mp4" for i, y in enumerate(labels)], object)
    cache.content_hash = np.array(hashes or [f"{i:064x}" for i in range(n)], object)
    cache.fps, cache.frame_count = np.full(n, 25.0), np.full(n, 12)
    cache.duration, cache.repeated = np.linspace(1.0, 2.0, n), np.array([i == 0 for i in range(n)])
    cache.file_size, cache.mtime_ns = np.full(n, 100), np.zeros(n, np.int64)
    cache.decode_errors = np.array([3 if i == n - 1 else 0 for i in range(n)], np.int64)
    cache.skipped = list(skipped)
    cache.segment, cache.group, cache.annotated_part = np.full((n, 2), np.nan), np.full(n, "", object), np.full(
        n, "", object)
    cache.sampled = np.full(n, 2)
    write_cache(tmp_path / "f.h5", cache)
    from pipeline.extract.cache import read_cache
    return read_cache(tmp_path / "f.h5")


E = np.eye(4)


def test_summary_json_is_exact(tmp_path, capsys):
    cache = hand_cache(tmp_path, [E[0], E[0], E[1]], [0, 0, 1], skipped=[("b/bad.mp4", "b/bad.mp4: no frames")])
    assert inspect([str(tmp_path / "f.h5"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got == {
        "path": str(tmp_path / "f.h5"), "size_bytes": (tmp_path / "f.h5").stat().st_size,
        "schema_version": SCHEMA_VERSION,
        "videos": 3, "classes": {"a": {"videos": 2}, "b": {"videos": 1}}, "frames_per_video": 2,
        "frames_sampled": {"min": 2.0, "median": 2.0, "max": 2.0}, "embedding_dim": 4, "videos_with_repeated_frames": 1,
        "damaged": [{"path": "b/v2.mp4", "decode_errors": 3}],
        "duration_seconds": {"min": 1.0, "median": 1.5, "max": 2.0},
        "encoder": {"model": "tiny", "fingerprint": "f00d", "precision": None, "device_type": None,
                    "backend": "torch", "quantize": "none"},
        "sampling": "uniform-centers", "decoder": None, "preprocess": "fast",
        "data_root": "data", "split": False, "skipped": [{"path": "b/bad.mp4", "reason": "b/bad.mp4: no frames"}],
        "key": {k: {**ATTRS, "dtype": "float32"}.get(k) for k in KEY_ATTRS}}  # every key field, None where unset
    assert summarize(cache, tmp_path / "f.h5") == got


def test_summary_text_with_split_counts(tmp_path, capsys):
    cache = hand_cache(tmp_path, [E[0]] * 3 + [E[1]] * 3, [0, 0, 0, 1, 1, 1])
    parts = np.array(["train", "val", "test", "train", "val", "test"], object)
    write_split(tmp_path / "split.csv", cache.paths, cache.labels, cache.class_names, parts)
    assert inspect([str(tmp_path / "f.h5")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{tmp_path / 'f.h5'}: 6 videos, 2 classes, " \
                       f"{(tmp_path / 'f.h5').stat().st_size / 2**20:.1f} MiB, schema {SCHEMA_VERSION}"
    assert lines[1] == "encoder: tiny (fingerprint f00d, None on None, torch, quantize none); decoder None"
    assert "a" + " " * 4 + "      3      1      1      1" in lines  # the class column as wide as its longest name
    assert lines[-3:] == ["damaged (encoded from the frames that decoded): 1", "  b/v5.mp4: 3 decode errors",
                          "skipped: 0"]


def test_frame_report(tmp_path):
    cache = hand_cache(tmp_path, [[3, 4, 0, 0], E[1]], [0, 1])
    rows = frame_report(cache, "a/v0.mp4")
    assert [r["frame"] for r in rows] == [3, 9] and [r["time"] for r in rows] == [0.12, 0.36]
    assert rows[0]["norm"] == pytest.approx(5.0) and rows[0]["cos_previous"] is None
    assert rows[1]["cos_previous"] == pytest.approx(1.0)
    assert rows[0]["cos_class"] == {"a": pytest.approx(1.0), "b": pytest.approx(0.8)}
    with pytest.raises(ConfigError, match="not in the cache.*did you mean a/v0.mp4"):
        frame_report(cache, "elsewhere/v0.mp4")


def test_neighbors_in_known_order(tmp_path, capsys):
    means = [E[0], E[0] + 0.1 * E[1], E[1], -E[0], E[0] + 0.5 * E[2]]
    cache = hand_cache(tmp_path, means, [0, 0, 1, 1, 0])
    got = nearest_neighbors(cache, "a/v0.mp4", k=3)
    assert [g["path"] for g in got] == ["a/v1.mp4", "a/v4.mp4", "b/v2.mp4"]
    assert got[0]["similarity"] == pytest.approx(1 / np.sqrt(1.01)) and got[2]["similarity"] == pytest.approx(0)
    assert inspect([str(tmp_path / "f.h5"), "--neighbors", "a/v0.mp4", "-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].endswith("a/v1.mp4") and " a " in out[0]


def test_outliers_find_the_mislabelled_video_and_the_leak(tmp_path, capsys):
    # class a around e0, class b around e1; v3 is labelled a but looks like b; v5 duplicates v4 in another part
    means = [E[0], E[0] + 0.3 * E[2], E[0] - 0.3 * E[2], E[1], E[1] + 0.3 * E[3], E[1] + 0.3 * E[3]]
    labels = [0, 0, 0, 0, 1, 1]
    cache = hand_cache(tmp_path, means, labels)
    parts = np.array(["train", "train", "val", "test", "train", "test"], object)
    got = find_outliers(cache, parts)
    assert [m["path"] for m in got["mislabelled"]] == ["a/v3.mp4"]
    assert got["mislabelled"][0]["nearer_class"] == "b"
    pairs = [(d["a"], d["b"], d["leak"]) for d in got["near_duplicates"]]
    assert pairs == [("b/v4.mp4", "b/v5.mp4", True)]
    assert find_outliers(cache)["near_duplicates"][0]["leak"] is False  # no split: nothing to leak across
    write_split(tmp_path / "split.csv", cache.paths, cache.labels, cache.class_names, parts)
    assert inspect([str(tmp_path / "f.h5"), "--outliers"]) == 0
    out = capsys.readouterr().out
    assert "a/v3.mp4 [a]" in out and "1 across split parts (leakage)" in out and "LEAK" in out


def test_leakage_by_group_straddling_groups_and_near_duplicate_groups(tmp_path, capsys):
    """Group g1 has clips in train and test; groups g2 (train) and g3 (test) hold a near-duplicate pair."""
    means = [E[0], E[0] + 0.3 * E[2], E[0] - 0.3 * E[2], E[1], E[1] + 0.3 * E[3], E[1] + 0.3 * E[3]]
    cache = hand_cache(tmp_path, means, [0, 0, 0, 1, 1, 1])
    parts = np.array(["train", "test", "val", "train", "train", "test"], object)
    groups = np.array(["g1", "g1", "g4", "g5", "g2", "g3"], object)
    got = group_leakage(cache, parts, groups, find_outliers(cache, parts)["near_duplicates"])
    assert got["straddling"] == [{"group": "g1", "parts": {"train": 1, "test": 1}}]
    assert [(r["a"], r["b"], r["parts"], r["pairs"]) for r in got["near_duplicate_groups"]] == [
        ("g2", "g3", ["train", "test"], 1)]
    write_split(tmp_path / "split.csv", cache.clip_ids(), cache.labels, cache.class_names, parts, groups)
    assert inspect([str(tmp_path / "f.h5"), "--outliers"]) == 0
    out = capsys.readouterr().out
    assert "groups in more than one split part (leakage): 1\n  g1: train 1, test 1" in out
    assert "g2 (train) ~ g3 (test): 1 pair, max" in out


def test_same_bytes_count_as_duplicates_whatever_the_embeddings(tmp_path):
    cache = hand_cache(tmp_path, [E[0], E[1], E[2]], [0, 1, 1], hashes=["x" * 64, "y" * 64, "x" * 64])
    dupes = find_outliers(cache)["near_duplicates"]
    assert [(d["a"], d["b"], d["same_bytes"]) for d in dupes] == [("a/v0.mp4", "b/v2.mp4", True)]


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_plot_is_written_with_named_axes_and_every_class(tmp_path, method, capsys, monkeypatch):
    from matplotlib.figure import Figure
    drawn, savefig = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (drawn.append(fig.axes[0]), savefig(fig, *a, **k)))
    rng = np.random.default_rng(0)
    hand_cache(tmp_path, rng.normal(size=(12, 4)), [0] * 4 + [1] * 4 + [2] * 4, names=("a", "b", "c" * 40))
    png = tmp_path / "map.png"
    assert inspect([str(tmp_path / "f.h5"), "--plot", str(png), "--method", method]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and f"({method.upper()} of 12 videos)" in capsys.readouterr().out
    ax = drawn[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == {"pca": ("principal component 1", "principal component 2"),
                                                  "tsne": ("t-SNE 1", "t-SNE 2")}[method]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a (4)", "b (4)", "c" * 40 + " (4)"]


def test_missing_empty_and_corrupt_caches_are_one_clear_error(tmp_path, capsys):
    assert inspect([str(tmp_path / "none.h5")]) == 1
    assert "no feature cache" in capsys.readouterr().err
    (tmp_path / "empty.h5").write_bytes(b"")
    assert inspect([str(tmp_path / "empty.h5")]) == 1
    assert "empty.h5: not a readable feature cache" in capsys.readouterr().err
    (tmp_path / "junk.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    assert inspect([str(tmp_path / "junk.h5"), "--json"]) == 1
    assert "junk.h5: not a readable feature cache" in capsys.readouterr().err


def test_near_duplicate_search_finds_what_all_pairs_find(monkeypatch):
    monkeypatch.setattr("pipeline.heads.neardup.TILE", 64)  # many tiles, diagonal and off-diagonal
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    means = unit(rng.normal(size=(300, 96)))  # more dimensions than the screen keeps: the screen prunes
    for i in range(40):  # planted pairs at cosines from about 0.95 to 0.999, both sides of the threshold
        means[150 + i] = unit(means[i] + rng.uniform(0.04, 0.3) * unit(rng.normal(size=96)))
    means = means.astype(np.float32)
    full = means @ means.T
    a, b = np.nonzero(np.triu(full, 1) >= NEAR_DUPLICATE)
    found = similar_pairs(means, NEAR_DUPLICATE, 1000)
    got = found.pairs
    assert sorted((i, j) for i, j, _ in got) == sorted(zip(a.tolist(), b.tolist())) and 5 < len(got) < 40
    assert found.passed == len(got) and [s for *_, s in got] == sorted([s for *_, s in got], reverse=True)
    np.testing.assert_allclose([s for *_, s in got], [full[i, j] for i, j, _ in got], rtol=1e-5)


def random_encoder_cache(tmp_path, names=("a", "b")):
    """hand_cache's cache, as made by a random CLIP built by the project (attrs say so)."""
    from pipeline.extract.cache import RANDOM_WEIGHTS, read_cache
    hand_cache(tmp_path, [E[0], E[0], E[1]], [0, 0, 1], names=names)
    cache = read_cache(tmp_path / "f.h5")
    cache.attrs[RANDOM_WEIGHTS] = True
    write_cache(tmp_path / "f.h5", cache)
    return str(tmp_path / "f.h5")


@pytest.mark.parametrize("args", [[], ["--outliers"], ["--video", "a/v0.mp4"], ["--neighbors", "a/v0.mp4"]])
def test_every_inspector_output_of_a_random_encoder_says_so(tmp_path, capsys, args):
    from pipeline.extract.cache import RANDOM_ENCODER_NOTE
    path = random_encoder_cache(tmp_path)
    assert inspect([path, *args]) == 0
    out = capsys.readouterr().out.splitlines()
    assert RANDOM_ENCODER_NOTE in out[0] and RANDOM_ENCODER_NOTE in out[-1]
    assert inspect([path, *args, "--json"]) == 0
    out, err = capsys.readouterr()
    assert RANDOM_ENCODER_NOTE in out or RANDOM_ENCODER_NOTE in err
    hand_cache(tmp_path, [E[0], E[0], E[1]], [0, 0, 1])  # a real encoder's cache: no note
    assert inspect([path, *args]) == 0 and "random encoder" not in capsys.readouterr().out


def test_video_report_shows_whole_class_names_within_100_columns(tmp_path, capsys):
    names = ("walking_while_reading_book", "walking_while_using_phone", "meeting_and_splitting", "standing_still")
    cache = hand_cache(tmp_path, [E[0], E[0], E[1], E[2], E[3]], [0, 0, 1, 2, 3], names=names)
    cache.embeddings = np.repeat(cache.embeddings[:, :1], 16, axis=1)  # 16 frames: wider than one block
    cache.sampled = np.full(5, 16)  # every one the video's own
    cache.frame_indices, cache.timestamps = np.tile(np.arange(16) * 3, (5, 1)), np.tile(np.arange(16) / 8, (5, 1))
    cache.attrs["num_frames"] = 16  # what the door checks against the embeddings' shape
    write_cache(tmp_path / "f.h5", cache)
    assert inspect([str(tmp_path / "f.h5"), "--video", f"{names[0]}/v0.mp4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 100
    assert lines[1].split()[-2:] == ["1.0000", names[0]]  # frame 0, its nearest centroid
    rows = [line.split() for line in lines if line.split()[:1] == [names[1]]]
    assert len(rows) == 2 and len(rows[0]) + len(rows[1]) - 2 == 16  # whole name, every frame, in two blocks
    heads = [line.split() for line in lines if line.startswith("class ")]
    assert [int(f) for h in heads for f in h[1:]] == list(range(0, 48, 3))


def test_the_frames_shown_are_those_the_cache_recorded(tmp_path):
    """frame_spec reads the resize and crop from the cache's own record of its preprocessing, not a fixed size."""
    from pipeline.extract.cache import read_cache
    from pipeline.errors import CacheError
    from pipeline.tools.inspector import frame_spec
    from pipeline.decode.frames import FrameSpec

    cache = hand_cache(tmp_path, [E[0], E[1]], [0, 1])
    with pytest.raises(CacheError, match="does not record the preprocessing"):
        frame_spec(cache)  # hand_cache records "{}"
    cache.attrs.update(preprocess="processor", preprocess_config=json.dumps(
        {"size": {"shortest_edge": 256}, "crop_size": {"height": 240, "width": 200}, "resample": 3, "do_resize": True,
         "do_center_crop": True, "do_rescale": True, "do_normalize": True}))
    write_cache(tmp_path / "f.h5", cache)
    assert frame_spec(read_cache(tmp_path / "f.h5")) == FrameSpec(256, 240, 200, "processor")


def test_python_m_pipeline_inspector_is_the_same_command(tmp_path):
    """`python -m pipeline.tools.inspector` runs clip-har-inspect's command line (tools.cli), status included."""
    hand_cache(tmp_path, [E[0], E[1]], [0, 1])
    root = ROOT
    run = subprocess.run([sys.executable, "-m", "pipeline.tools.inspector", str(tmp_path / "f.h5"), "--json"], cwd=root,
                         capture_output=True, text=True)
    assert run.returncode == 0 and json.loads(run.stdout)["videos"] == 2, run.stderr
    run = subprocess.run([sys.executable, "-m", "pipeline.tools.inspector", str(tmp_path / "none.h5")], cwd=root,
                         capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.startswith("error: no feature cache")


def test_outliers_keep_the_top_pairs_and_say_how_many_passed(tmp_path, capsys):
    """40 near-identical videos: 780 pairs pass; --top 5 lists 5 (the across-part ones first), counts all 780, and
    points to the grouping that needs no regex."""
    rng = np.random.default_rng(0)
    means = E[0] + 1e-3 * rng.normal(size=(40, 4))
    cache = hand_cache(tmp_path, means, [0] * 20 + [1] * 20)
    parts = np.array(["train"] * 39 + ["test"], object)  # the last video's 39 pairs leak
    got = find_outliers(cache, parts, top=5)
    assert got["near_duplicates_found"] == {"pairs": 780, "across_parts": 39, "top": 5, "capped": True}
    assert len(got["near_duplicates"]) == 5 and all(d["leak"] for d in got["near_duplicates"])
    write_split(tmp_path / "split.csv", cache.paths, cache.labels, cache.class_names, parts)
    assert inspect([str(tmp_path / "f.h5"), "--outliers", "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert "near-duplicates (cosine >= 0.98 or same bytes): 780 pairs, 39 across split parts (leakage)" in out
    assert "only the first 5 pairs listed (--top 5)" in out and out.count(" LEAK ") == 5
    assert "39 near-duplicate pairs sit in different split parts: if clips were cut from one recording" in out
    assert "split.group_by=stem" in out
    assert inspect([str(tmp_path / "f.h5"), "--outliers", "--top", "-1"]) == 1


def test_the_pair_search_memory_is_bounded_by_its_tiles_not_the_pairs(monkeypatch):
    """Every pair passes: the search's peak memory (tracemalloc sees numpy's) stays the same from 600 to 1,200
    videos (180,000 to 720,000 pairs), far under what keeping the pairs would take."""
    import tracemalloc

    monkeypatch.setattr("pipeline.heads.neardup.TILE", 128)
    monkeypatch.setattr("pipeline.heads.neardup.PAIRS", 4096)
    rng = np.random.default_rng(0)
    peaks = []
    for n in (600, 1200):
        means = np.float32(E[0]) + np.float32(1e-4) * rng.normal(size=(n, 4)).astype(np.float32)
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        tracemalloc.start()
        found = similar_pairs(means, NEAR_DUPLICATE, 50)
        peaks.append(tracemalloc.get_traced_memory()[1] - n * 4 * 4 * 4)  # less what scales with V x D
        tracemalloc.stop()
        assert found.passed == n * (n - 1) // 2 and len(found.pairs) == 50
    assert peaks[1] < 1.25 * peaks[0] and peaks[1] < 720_000 * 8 / 4, peaks  # all pairs' indices: 11.5 MB


def test_skipped_lists_every_video_with_its_reason_names_escaped(tmp_path, capsys):
    skipped = [(f"b/bad{i}.mp4", "no decodable video frames") for i in range(12)] + [
        ("b/\x1b[2Jevil\t\n.mp4", "moov atom not found")]
    hand_cache(tmp_path, [E[0], E[1]], [0, 1], skipped=skipped)
    assert inspect([str(tmp_path / "f.h5")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[lines.index("skipped: 13") + 1:] == [f"  b/bad{i}.mp4: no decodable video frames" for i in range(10)] \
        + ["  ... and 3 more (--skipped lists them all)"]
    assert inspect([str(tmp_path / "f.h5"), "--skipped"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 13 and lines[-1] == "b/\\x1b[2Jevil\\t\\n.mp4: moov atom not found"
    assert inspect([str(tmp_path / "f.h5"), "--skipped", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[-1] == {"path": skipped[-1][0], "reason": "moov atom not found"}


def test_names_that_could_forge_output_are_escaped(tmp_path, capsys):
    cache = hand_cache(tmp_path, [E[0], E[0] + 1e-3 * E[1], E[1]], [0, 0, 1])
    cache.paths[1] = "a/\x1b]0;title\x07\u202eevil\n.mp4"
    write_cache(tmp_path / "f.h5", cache)
    for args in (["--neighbors", "a/v0.mp4"], ["--outliers"]):
        assert inspect([str(tmp_path / "f.h5"), *args]) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\u202e" not in out and "a/\\x1b]0;title\\x07\\u202eevil\\n.mp4" in out


HOSTILE_ATTRS = {"encoder_fingerprint": "\x1b]0;pwned\x07f00d", "precision": "\x1b[2J\x1b[Hfp32",
                 "device_type": "\x1b[31mERROR: disk wiped\x1b[0m", "backend": "\x1b[8mhidden",
                 "quantize": "none\nforged",
                 "sampling": "\runiform\x1b[K", "preprocess": "fast\u202eevil", "decoder": "pyav\x9b2J",
                 "encoder_model": "tiny\x1b[1A", "data_root": "data\r\nline"}


def test_cache_attributes_that_could_move_the_terminal_are_escaped(tmp_path, capsys):
    """Every string of the cache that the summary prints (fingerprint, precision, device, backend, quantize,
    sampling, preprocess, decoder, data root...) goes through printable: no escape sequence, no extra line; the
    JSON output carries them exactly, escaped by JSON itself (ASCII only)."""
    cache = hand_cache(tmp_path, [E[0], E[1]], [0, 1])
    assert inspect([str(tmp_path / "f.h5")]) == 0
    clean = capsys.readouterr().out.splitlines()
    cache.attrs.update(HOSTILE_ATTRS)
    write_cache(tmp_path / "f.h5", cache)
    assert inspect([str(tmp_path / "f.h5")]) == 0
    out = capsys.readouterr().out
    assert all(ch.isprintable() for line in out.splitlines() for ch in line), repr(out)
    assert "\r" not in out and len(out.splitlines()) == len(clean)
    for value in HOSTILE_ATTRS.values():
        assert printable(value) in out
    assert inspect([str(tmp_path / "f.h5"), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.isascii() and all(ch.isprintable() or ch == "\n" for ch in out)
    got = json.loads(out)
    assert (got["encoder"]["fingerprint"], got["sampling"], got["data_root"]) == tuple(
        HOSTILE_ATTRS[k] for k in ("encoder_fingerprint", "sampling", "data_root"))


def test_a_path_not_in_the_cache_names_the_nearest(tmp_path, capsys):
    hand_cache(tmp_path, [E[0], E[0], E[1]], [0, 0, 1])
    assert inspect([str(tmp_path / "f.h5"), "--video", "a/v1.avi"]) == 1
    assert "a/v1.avi is not in the cache (paths are relative to the data root; did you mean a/v1.mp4" in \
        capsys.readouterr().err
    assert inspect([str(tmp_path / "f.h5"), "--video", "zzzzzzzzzzzzzzzzzzzzzzzz"]) == 1
    assert capsys.readouterr().err.strip().endswith("is not in the cache (paths are relative to the data root)")


def test_centroid_neighbours_and_class_counts_for_many_classes(tmp_path):
    """nearest_classes equals the full matrix's ranking; summarize's per-part counts at 300 classes are exact."""
    from pipeline.tools.inspector import class_centroids, nearest_classes
    rng = np.random.default_rng(0)
    cent = rng.normal(size=(300, 4)).astype(np.float32)
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    idx, sims = nearest_classes(cent, 3)
    full = cent @ cent.T
    np.fill_diagonal(full, -np.inf)
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1)[:, :3])
    np.testing.assert_allclose(sims, np.take_along_axis(full, idx, axis=1), rtol=1e-6)
    assert nearest_classes(cent[:1], 3)[0].shape == (1, 0)
    labels = np.arange(600) % 300
    cache = hand_cache(tmp_path, cent[labels], labels, names=[f"c{i}" for i in range(300)])
    parts = np.array(["train", "val", "test", "unused", "train"] * 120, object)
    got = summarize(cache, tmp_path / "f.h5", parts)["classes"]
    assert got == {f"c{c}": {"videos": 2, **{p: int(np.sum((labels == c) & (parts == p))) for p in PARTS}}
                   for c in range(300)}
    assert got["c3"] == {"videos": 2, "train": 0, "val": 0, "test": 0}  # both unused
    np.testing.assert_allclose(class_centroids(cache), cent, atol=1e-6)


def test_class_colours_are_distinct_for_up_to_20_classes():
    """Every pair of colours at least 15 apart in CIELAB (Delta E 1976) for 2..20 classes."""
    from pipeline.tools.inspector import class_colours

    def lab(hexes):
        rgb = np.array([[int(h[i:i + 2], 16) / 255 for i in (1, 3, 5)] for h in hexes])
        rgb = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
        xyz = rgb @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
        f = np.cbrt(xyz / [0.9505, 1.0, 1.089])
        return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)

    for n in range(2, 21):
        pts = lab(class_colours(n))
        d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
        assert d[np.triu_indices(n, 1)].min() >= 15, n
