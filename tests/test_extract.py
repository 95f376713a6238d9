"""Stage one end to end on small videos: skipping, incremental re-runs, the lock, and SIGKILL then resume."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from pipeline.cache import ROW_FIELDS, read_cache
from pipeline.encoder import embed_frames, load_encoder, preprocess_frames
from pipeline.extract import ExtractConfig, extract_features
from pipeline.video import read_frames
from tests.conftest import write_video

ROOT = Path(__file__).resolve().parents[1]


def run(root, cache, tiny_clip, **kw):
    cfg = ExtractConfig(root=str(root), cache_path=str(cache), model=tiny_clip, num_frames=kw.pop("num_frames", 8),
                        batch_size=kw.pop("batch_size", 8), device="cpu", **kw)
    return extract_features(cfg, progress=False)


def assert_same_cache(a, b):
    for name in ROW_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.class_names == b.class_names and a.skipped == b.skipped and a.attrs == b.attrs


def test_cache_rows_equal_encoding_each_video_alone(dataset, tmp_path, tiny_clip):
    summary = run(dataset, tmp_path / "f.h5", tiny_clip)
    assert (summary.encoded, summary.reused, summary.skipped) == (7, 0, [])
    cache = read_cache(tmp_path / "f.h5")
    assert cache.class_names == ["clapping", "sitting", "walking"]
    assert cache.labels.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert cache.embeddings.shape == (7, 8, 32) and cache.attrs["num_frames"] == 8
    assert cache.attrs["encoder_model"] == tiny_clip and cache.attrs["sampling"] == "uniform-centers"
    encoder = load_encoder(tiny_clip, device="cpu")
    for i, path in enumerate(cache.paths):
        clip = read_frames(dataset / path, 8)
        alone = embed_frames(preprocess_frames(clip.frames, encoder), encoder, batch_size=8)
        np.testing.assert_array_equal(cache.embeddings[i], alone, err_msg=path)  # batching across videos is exact
        np.testing.assert_array_equal(cache.frame_indices[i], clip.indices)
        assert cache.frame_count[i] == clip.frame_count and cache.repeated[i] == clip.repeated
    assert cache.repeated.tolist() == [False] * 7 and len(set(cache.content_hash)) == 7


def test_bad_files_are_skipped_with_reasons_and_the_run_goes_on(dataset, tmp_path, tiny_clip):
    (dataset / "sitting" / "zero.mp4").write_bytes(b"")
    (dataset / "sitting" / "text.mp4").write_text("hello, I am not a video\n" * 20)
    cut = write_video(dataset / "walking" / "cut.mp4", 60)
    cut.write_bytes(cut.read_bytes()[:1500])
    summary = run(dataset, tmp_path / "f.h5", tiny_clip)
    assert summary.encoded == 7
    reasons = dict(summary.skipped)
    assert set(reasons) == {"sitting/text.mp4", "sitting/zero.mp4", "walking/cut.mp4"}
    for path, reason in reasons.items():
        assert reason.startswith(path + ":") and str(dataset) not in reason  # names the file, relative to the root
    assert "skipped sitting/zero.mp4" in str(summary)
    cache = read_cache(tmp_path / "f.h5")
    assert cache.skipped == summary.skipped and len(cache) == 7 and "sitting/zero.mp4" not in cache.paths


def test_rerun_encodes_only_what_changed(dataset, tmp_path, tiny_clip, monkeypatch):
    cache_file = tmp_path / "f.h5"
    run(dataset, cache_file, tiny_clip)
    first = read_cache(cache_file)
    again = run(dataset, cache_file, tiny_clip)
    assert (again.encoded, again.reused) == (0, 7)
    assert_same_cache(read_cache(cache_file), first)

    write_video(dataset / "sitting" / "new.avi", 20, seed=11)  # add
    write_video(dataset / "walking" / "f.mp4", 15, seed=12)  # change
    (dataset / "clapping" / "b.avi").unlink()  # remove
    os.rename(dataset / "clapping" / "a.mp4", dataset / "clapping" / "renamed.mp4")  # same bytes, new name
    with monkeypatch.context() as m:  # the join in blocks of 2 rows: ends where the one-block fresh run below does
        m.setattr("pipeline.extract.BLOCK_ROWS", 2)
        m.setattr("pipeline.cache.BLOCK_ROWS", 2)
        summary = run(dataset, cache_file, tiny_clip)
    assert (summary.encoded, summary.reused) == (2, 5)
    cache = read_cache(cache_file)
    assert cache.paths.tolist() == ["clapping/renamed.mp4", "clapping/sub/c.mkv", "sitting/d.webm", "sitting/e.MOV",
                                    "sitting/new.avi", "walking/f.mp4", "walking/g.avi"]
    old = {p: i for i, p in enumerate(first.paths)}
    np.testing.assert_array_equal(cache.embeddings[0], first.embeddings[old["clapping/a.mp4"]])
    assert cache.frame_count[5] == 15 and cache.content_hash[5] != first.content_hash[old["walking/f.mp4"]]
    assert not (tmp_path / "f.h5.parts").exists()

    # the same cache from scratch: an incremental run ends where a fresh one does
    assert_same_cache(cache, read_cache(_fresh(dataset, tmp_path, tiny_clip)))


def _fresh(dataset, tmp_path, tiny_clip, **kw) -> Path:
    out = tmp_path / "fresh" / "f.h5"
    run(dataset, out, tiny_clip, **kw)
    return out


def test_float16_storage_is_the_float32_cache_rounded(dataset, tmp_path, tiny_clip):
    full = read_cache(_fresh(dataset, tmp_path, tiny_clip))
    run(dataset, tmp_path / "h.h5", tiny_clip, dtype="float16")
    half = read_cache(tmp_path / "h.h5")
    assert half.attrs["dtype"] == "float16" and half.embeddings.dtype == np.float32
    np.testing.assert_array_equal(half.embeddings, full.embeddings.astype(np.float16).astype(np.float32))
    summary = run(dataset, tmp_path / "h.h5", tiny_clip, dtype="float32")  # the storage is part of the key
    assert summary.encoded == 7 and "other dtype" in summary.note
    with pytest.raises(ValueError, match="extract.dtype must be one of"):
        run(dataset, tmp_path / "x.h5", tiny_clip, dtype="int8")


def test_other_sampling_re_encodes_everything(dataset, tmp_path, tiny_clip):
    run(dataset, tmp_path / "f.h5", tiny_clip)
    summary = run(dataset, tmp_path / "f.h5", tiny_clip, num_frames=4)
    assert (summary.encoded, summary.reused) == (7, 0)
    assert read_cache(tmp_path / "f.h5").embeddings.shape == (7, 4, 32)


def test_a_second_writer_is_refused(dataset, tmp_path, tiny_clip):
    with FileLock(str(tmp_path / "f.h5") + ".lock"):
        with pytest.raises(ValueError, match="another stage-one run is writing"):
            run(dataset, tmp_path / "f.h5", tiny_clip)
    assert not (tmp_path / "f.h5").exists()


def test_no_usable_video_is_a_clear_error(tmp_path, tiny_clip):
    (tmp_path / "data" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no videos under"):
        run(tmp_path / "data", tmp_path / "f.h5", tiny_clip)
    (tmp_path / "data" / "a" / "x.mp4").write_bytes(b"junk")
    with pytest.raises(ValueError, match="(?s)none of the 1 videos.*a/x.mp4"):
        run(tmp_path / "data", tmp_path / "f.h5", tiny_clip)


def test_sigkill_mid_run_keeps_the_old_cache_and_resume_matches_an_uninterrupted_run(tmp_path, tiny_clip):
    root = tmp_path / "data"
    for i in range(40):
        write_video(root / f"class{i % 4}" / f"v{i:02d}.avi", 150, size=(320, 240), seed=i)
    cache_file = tmp_path / "f.h5"
    run(root, cache_file, tiny_clip, shard_size=1)
    before = read_cache(cache_file)
    for i in range(40, 80):  # new videos for the run that is killed
        write_video(root / f"class{i % 4}" / f"v{i:02d}.avi", 150, size=(320, 240), seed=i)
    code = (f"from pipeline.extract import ExtractConfig, extract_features\n"
            f"extract_features(ExtractConfig(root={str(root)!r}, cache_path={str(cache_file)!r}, "
            f"model={tiny_clip!r}, num_frames=8, batch_size=8, device='cpu', shard_size=1), progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    parts = tmp_path / "f.h5.parts"
    deadline = time.time() + 120
    while len(list(parts.glob("part-*.h5"))) < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert_same_cache(read_cache(cache_file), before)  # a reader during the run gets the last complete cache
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert_same_cache(read_cache(cache_file), before)  # the previous cache is intact and still the cache
    summary = run(root, cache_file, tiny_clip, shard_size=1)
    assert summary.reused >= 40 + 5 and summary.encoded + summary.reused == 80
    assert_same_cache(read_cache(cache_file), read_cache(_fresh(root, tmp_path, tiny_clip, shard_size=1)))


def test_the_part_writer_writes_a_part_every_shard_size_videos(tmp_path):
    from pipeline.cache import empty_cache
    from pipeline.extract import PartWriter, _Item
    from pipeline.video import Clip, VideoFile

    template = empty_cache(2, 3, {"encoder_model": "m"}, ["a", "b"])
    writer = PartWriter(tmp_path / "parts", template, shard_size=2)
    items = []
    for i in range(5):
        clip = Clip(None, np.array([0, 1]), np.array([0.0, 0.04]), 25.0, 2, 0.08, False, decode_errors=i % 2)
        items.append(_Item(VideoFile(f"{'ab'[i % 2]}/v{i}.mp4", "ab"[i % 2], tmp_path / f"v{i}.mp4"), 10 + i, i,
                           f"{i:064x}", clip))
        writer.add(items[-1], np.full((2, 3), i, np.float32))
        assert len(list((tmp_path / "parts").glob("part-*.h5"))) == (i + 1) // 2  # a part as each pair completes
    writer.flush()  # the last, short part
    parts = sorted((read_cache(p) for p in (tmp_path / "parts").glob("part-*.h5")), key=lambda c: c.paths[0])
    assert [len(p) for p in parts] == [2, 2, 1] and len(writer.parts) == 3
    rows = [(p.paths[j], p.labels[j], p.embeddings[j, 0, 0], p.decode_errors[j], p.content_hash[j])
            for p in parts for j in range(len(p))]
    assert rows == [(f"{'ab'[i % 2]}/v{i}.mp4", i % 2, i, i % 2, f"{i:064x}") for i in range(5)]
    assert all(it.clip is None for it in items)  # handed over to the parts: nothing kept in memory
    writer.flush()
    assert len(list((tmp_path / "parts").glob("part-*.h5"))) == 3  # nothing waiting: no empty part


def test_a_cache_path_that_is_a_folder_or_a_missing_root_fails_before_any_work(dataset, tmp_path, tiny_clip):
    (tmp_path / "f.h5").mkdir()
    with pytest.raises(ValueError, match="is a directory: set it to a file path"):
        run(dataset, tmp_path / "f.h5", tiny_clip)
    assert {p.name for p in tmp_path.iterdir()} == {"data", "f.h5"}  # nothing beside it: no lock, parts or .tmp
    with pytest.raises(ValueError, match="is not a directory"):
        run(tmp_path / "nowhere", tmp_path / "g.h5", tiny_clip)
    assert not (tmp_path / "g.h5").exists() and not (tmp_path / "g.h5.lock").exists()
