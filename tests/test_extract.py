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

from pipeline.extract.cache import ROW_FIELDS, read_cache
from pipeline.embed.encoder import embed_frames, load_encoder, preprocess_frames
from pipeline.errors import ConfigError, VideoError
from pipeline.extract.runner import ExtractConfig, extract_features
from pipeline.decode.video import read_frames
from pipeline.decode.workers import ReadConfig
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
    assert cache.attrs["backend"] == "onnxruntime"  # extract.backend auto on the CPU, recorded as resolved
    encoder = load_encoder(tiny_clip, device="cpu")
    for i, path in enumerate(cache.paths):
        clip = read_frames(dataset / path, 8)
        alone = embed_frames(preprocess_frames(clip.frames, encoder), encoder, batch_size=8)
        np.testing.assert_array_equal(cache.embeddings[i], alone, err_msg=path)  # batching across videos is exact
        np.testing.assert_array_equal(cache.frame_indices[i], clip.indices)
        assert cache.frame_count[i] == clip.frame_count and cache.repeated[i] == clip.repeated
    assert cache.repeated.tolist() == [False] * 7 and len(set(cache.content_hash)) == 7


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_onnxruntime_cache_rows_equal_each_video_alone_and_a_resumed_run_equals_an_uninterrupted_one(
        dataset, tmp_path, tiny_clip, onnx_dir, monkeypatch, quantize):
    from pipeline.extract.writer import PartWriter
    ort = dict(backend="onnxruntime", quantize=quantize, shard_size=1, batch_size=3)  # passes across videos
    flush, written = PartWriter.flush, []

    def killed_after_three_parts(self):
        if len(written) == 3:
            raise KeyboardInterrupt  # the run stops here, as a kill would: three parts on disk, no cache
        written.append(1)
        flush(self)

    monkeypatch.setattr(PartWriter, "flush", killed_after_three_parts)
    with pytest.raises(KeyboardInterrupt):
        run(dataset, tmp_path / "f.h5", tiny_clip, **ort)
    monkeypatch.setattr(PartWriter, "flush", flush)
    assert len(list((tmp_path / "f.h5.parts").glob("part-*.h5"))) == 3 and not (tmp_path / "f.h5").exists()
    summary = run(dataset, tmp_path / "f.h5", tiny_clip, **ort)
    assert (summary.encoded, summary.reused) == (4, 3)
    cache = read_cache(tmp_path / "f.h5")
    assert (cache.attrs["backend"], cache.attrs["quantize"]) == ("onnxruntime", quantize)
    assert_same_cache(cache, read_cache(_fresh(dataset, tmp_path, tiny_clip, **ort)))
    encoder = load_encoder(tiny_clip, device="cpu", backend="onnxruntime", quantize=quantize)
    for i, path in enumerate(cache.paths):
        alone = embed_frames(preprocess_frames(read_frames(dataset / path, 8).frames, encoder), encoder, batch_size=3)
        np.testing.assert_array_equal(cache.embeddings[i], alone, err_msg=path)
    torch_run = run(dataset, tmp_path / "f.h5", tiny_clip, shard_size=1, backend="torch")
    assert torch_run.encoded == 7 and "backend" in torch_run.note  # another backend: another cache
    kept = run(dataset, tmp_path / "f.h5", tiny_clip, shard_size=1)  # auto extends a torch cache with torch
    assert (kept.encoded, kept.reused, read_cache(tmp_path / "f.h5").attrs["backend"]) == (0, 7, "torch")


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
    assert cache.skipped_kind == summary.skipped_kind == dict.fromkeys(reasons, "VideoError")  # Unusable.kind kept


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
        m.setattr("pipeline.extract.writer.BLOCK_ROWS", 2)
        m.setattr("pipeline.extract.cache.BLOCK_ROWS", 2)
        m.setattr("pipeline.extract.embeddings.BLOCK_ROWS", 2)
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


def test_rehash_finds_a_file_replaced_with_its_size_and_mtime_kept(dataset, tmp_path, tiny_clip):
    run(dataset, tmp_path / "f.h5", tiny_clip)
    video = dataset / "clapping" / "a.mp4"
    st = video.stat()
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0xFF  # other bytes, same size, then the old mtime back (as cp -p or rsync -a do)
    video.write_bytes(bytes(data))
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns))
    summary = run(dataset, tmp_path / "f.h5", tiny_clip)
    assert (summary.encoded, summary.reused) == (0, 7)  # the shortcut trusts (path, size, mtime)
    old = read_cache(tmp_path / "f.h5")
    summary = run(dataset, tmp_path / "f.h5", tiny_clip, rehash=True)
    assert summary.reused == 6 and summary.encoded + len(summary.skipped) == 1  # read again: new content
    cache = read_cache(tmp_path / "f.h5")
    assert "clapping/a.mp4" not in cache.paths or (
        cache.content_hash[list(cache.paths).index("clapping/a.mp4")] != old.content_hash[0])
    assert run(dataset, tmp_path / "f.h5", tiny_clip, rehash=True).encoded == 0  # nothing else changed


def test_a_failed_video_is_not_read_again_until_it_changes(dataset, tmp_path, tiny_clip):
    from pipeline.decode.workers import load_video

    bad = dataset / "sitting" / "bad.mp4"
    bad.write_text("not a video\n" * 100)
    reads = []

    def counting(file, cfg, hash_bytes=True):
        reads.append(Path(file).name)
        return load_video(file, cfg, hash_bytes)

    def again(**kw):
        reads.clear()
        cfg = ExtractConfig(root=str(dataset), cache_path=str(tmp_path / "f.h5"), model=tiny_clip, num_frames=8,
                            batch_size=8, device="cpu", workers=0, **kw)
        return extract_features(cfg, progress=False, decode=counting)

    first = again()
    assert [p for p, _ in first.skipped] == ["sitting/bad.mp4"] and "bad.mp4" in reads
    assert read_cache(tmp_path / "f.h5").skipped_stat == {"sitting/bad.mp4": (bad.stat().st_size,
                                                                               bad.stat().st_mtime_ns)}
    second = again()
    assert reads == [] and second.skipped == first.skipped and second.remembered == 1  # not read, same reason
    assert second.skipped_kind == first.skipped_kind == {"sitting/bad.mp4": "VideoError"}  # and the same kind
    assert "1 skipped (1 unchanged since they failed: not read again; extract.rehash: true retries them)" in str(
        second)
    assert again(rehash=True).remembered == 0 and reads == ["bad.mp4"]  # rehash retries it
    assert again(video_timeout_s=30).remembered == 0 and reads == ["bad.mp4"]  # other limits: retried
    assert again(video_timeout_s=30).remembered == 1 and reads == []
    os.utime(bad, ns=(bad.stat().st_atime_ns, bad.stat().st_mtime_ns + 10**9))  # touched: read again
    assert again(video_timeout_s=30).remembered == 0 and reads == ["bad.mp4"]


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


def test_another_batch_size_re_encodes_everything(dataset, tmp_path, tiny_clip):
    """batch_size is in the cache's key (a forward pass of another shape may round differently): rows made with
    another batch size are not mixed with this one's."""
    run(dataset, tmp_path / "f.h5", tiny_clip, batch_size=8)
    summary = run(dataset, tmp_path / "f.h5", tiny_clip, batch_size=4)
    assert (summary.encoded, summary.reused) == (7, 0) and "other batch_size" in summary.note
    assert read_cache(tmp_path / "f.h5").attrs["batch_size"] == 4
    assert run(dataset, tmp_path / "f.h5", tiny_clip, batch_size=4).reused == 7


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


@pytest.mark.slow  # a stage-one run in a subprocess, killed
def test_sigkill_mid_run_keeps_the_old_cache_and_resume_matches_an_uninterrupted_run(tmp_path, tiny_clip):
    root = tmp_path / "data"
    for i in range(16):
        write_video(root / f"class{i % 4}" / f"v{i:02d}.avi", 150, size=(320, 240), seed=i)
    cache_file = tmp_path / "f.h5"
    run(root, cache_file, tiny_clip, shard_size=1)
    before = read_cache(cache_file)
    for i in range(16, 40):  # new videos for the run that is killed
        write_video(root / f"class{i % 4}" / f"v{i:02d}.avi", 150, size=(320, 240), seed=i)
    code = (f"from pipeline.extract.runner import ExtractConfig, extract_features\n"
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
    assert summary.reused >= 16 + 5 and summary.encoded + summary.reused == 40
    assert_same_cache(read_cache(cache_file), read_cache(_fresh(root, tmp_path, tiny_clip, shard_size=1)))


def test_the_part_writer_writes_a_part_every_shard_size_videos(tmp_path):
    from pipeline.extract.cache import empty_cache
    from pipeline.data.discover import VideoFile
    from pipeline.decode.video import Clip
    from pipeline.extract.writer import PartWriter, VideoRow

    template = empty_cache(2, 3, {"encoder_model": "m"}, ["a", "b"])
    writer = PartWriter(tmp_path / "parts", template, shard_size=2)
    items = []
    for i in range(5):
        clip = Clip(None, np.array([0, 1]), np.array([0.0, 0.04]), 25.0, 2, 0.08, False, decode_errors=i % 2)
        items.append(VideoRow(VideoFile(f"{'ab'[i % 2]}/v{i}.mp4", "ab"[i % 2], tmp_path / f"v{i}.mp4"), 10 + i,
                              i, f"{i:064x}", clip))
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
    with pytest.raises(ValueError, match="is a folder: remove the folder"):
        run(dataset, tmp_path / "f.h5", tiny_clip)
    assert {p.name for p in tmp_path.iterdir()} == {"data", "f.h5"}  # nothing beside it: no lock, parts or .tmp
    with pytest.raises(ValueError, match="is not a directory"):
        run(tmp_path / "nowhere", tmp_path / "g.h5", tiny_clip)
    assert not (tmp_path / "g.h5").exists() and not (tmp_path / "g.h5.lock").exists()


def test_the_local_engine_never_imports_ray(dataset, tmp_path, tiny_clip):
    code = (f"import sys\nfrom pipeline.extract.runner import ExtractConfig, extract_features\n"
            f"extract_features(ExtractConfig(root={str(dataset)!r}, cache_path={str(tmp_path / 'f.h5')!r}, "
            f"model={tiny_clip!r}, num_frames=4, batch_size=8, device='cpu', workers=0), progress=False)\n"
            f"assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray imported'\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_an_unknown_engine_or_a_setting_that_is_no_number_is_a_clear_error(dataset, tmp_path, tiny_clip):
    with pytest.raises(ConfigError, match="extract.engine must be one of"):
        run(dataset, tmp_path / "f.h5", tiny_clip, engine="spark")
    with pytest.raises(ConfigError, match="extract.workers must be a number, got 'many'"):
        run(dataset, tmp_path / "f.h5", tiny_clip, workers="many")
    with pytest.raises(ConfigError, match="extract.batch_size must be auto or a positive whole number, got 0"):
        run(dataset, tmp_path / "f.h5", tiny_clip, batch_size=0)


def test_the_config_hands_out_the_encoder_pool_and_limits_with_their_own_defaults():
    from pipeline.embed.encoder import EncoderConfig
    from pipeline.decode.video import DecodeLimits
    from pipeline.decode.workers import PoolConfig

    cfg = ExtractConfig(root="data", workers=3)
    assert cfg.encoder() == EncoderConfig(cfg.model)
    assert cfg.pool() == PoolConfig(workers=3) and cfg.limits() == DecodeLimits()


def counting_decode(calls: list):
    from pipeline.decode.workers import load_video

    def decode(file, cfg, hash_bytes=True):
        calls.append(Path(file).name)
        return load_video(file, cfg, hash_bytes)
    return decode


def test_a_file_renamed_over_while_it_is_read_is_stored_with_the_hash_of_the_bytes_decoded(dataset, tmp_path,
                                                                                          tiny_clip, monkeypatch):
    import hashlib

    import pipeline.decode.workers
    from pipeline.decode.workers import CHANGED, load_video

    a = dataset / "clapping" / "a.mp4"  # 30 frames
    copy = dataset / "clapping" / "a_copy.mp4"
    copy.write_bytes(a.read_bytes())
    other = write_video(tmp_path / "other.mp4", 17, seed=9)
    real, renamed = pipeline.decode.workers.read_frames, []

    def rename_over_first(file, *args, **kw):  # as rsync does, between the hash (done) and the decode
        if Path(file) == a and not renamed:
            renamed.append(1)
            os.replace(other, a)
        return real(file, *args, **kw)

    monkeypatch.setattr(pipeline.decode.workers, "read_frames", rename_over_first)
    summary = run(dataset, tmp_path / "f.h5", tiny_clip, workers=0)
    assert renamed and summary.encoded == 8 and not summary.skipped
    cache = read_cache(tmp_path / "f.h5")
    row = {p: i for i, p in enumerate(cache.paths)}
    # each row's hash is of the bytes its frames came from: a.mp4 read again (the new bytes), its copy decoded itself
    assert cache.content_hash[row["clapping/a.mp4"]] == hashlib.sha256(a.read_bytes()).hexdigest()
    assert cache.frame_count[row["clapping/a.mp4"]] == 17
    assert cache.content_hash[row["clapping/a_copy.mp4"]] == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert cache.frame_count[row["clapping/a_copy.mp4"]] == 30

    def always_renamed(file, *args, **kw):
        os.replace(write_video(tmp_path / "x.mp4", 5), file)
        return real(file, *args, **kw)

    monkeypatch.setattr(pipeline.decode.workers, "read_frames", always_renamed)
    with pytest.raises(VideoError) as err:
        load_video(str(copy), ReadConfig(4, None))
    assert err.value.reason == CHANGED


def test_a_row_holding_other_bytes_frames_is_repaired_not_reused(dataset, tmp_path, tiny_clip):
    """A cache made before issue 26: a.mp4's row and its copy's share a hash, but hold another file's embeddings."""
    import h5py

    a, copy = dataset / "clapping" / "a.mp4", dataset / "clapping" / "a_copy.mp4"
    copy.write_bytes(a.read_bytes())
    run(dataset, tmp_path / "f.h5", tiny_clip, workers=0)
    good = read_cache(tmp_path / "f.h5")
    with h5py.File(tmp_path / "f.h5", "r+") as f:  # poisoned: the rows of that hash hold zeros
        for i, h in enumerate(f["content_hash"].asstr()[()]):
            if h == good.content_hash[0]:
                f["embeddings"][i] = 0
    write_video(a, 17, seed=9)  # and a.mp4 renamed over since (new bytes, new stat): its row's key is not true
    calls = []
    summary = extract_features(ExtractConfig(root=str(dataset), cache_path=str(tmp_path / "f.h5"), model=tiny_clip,
                                             num_frames=8, batch_size=8, device="cpu", workers=0),
                               progress=False, decode=counting_decode(calls))
    assert sorted(calls) == ["a.mp4", "a_copy.mp4"] and summary.encoded == 2  # the copy is not reused: re-encoded
    cache = read_cache(tmp_path / "f.h5")
    np.testing.assert_array_equal(cache.embeddings[1], good.embeddings[1])  # a_copy.mp4, as first encoded


def test_hard_links_and_renames_of_one_clip_are_hashed_and_decoded_once(tmp_path, tiny_clip):
    root = tmp_path / "data"
    first = write_video(root / "a" / "v0000.mp4", 12)
    for i in range(1, 300):
        os.link(first, root / "a" / f"v{i:04d}.mp4")
    write_video(root / "b" / "w.mp4", 10, seed=1)
    calls = []

    def again():
        calls.clear()
        return extract_features(ExtractConfig(root=str(root), cache_path=str(tmp_path / "f.h5"), model=tiny_clip,
                                              num_frames=4, batch_size=8, device="cpu", workers=0),
                                progress=False, decode=counting_decode(calls))

    summary = again()
    assert sorted(calls) == ["v0000.mp4", "w.mp4"] and (summary.encoded, summary.reused) == (2, 299)
    os.rename(root / "b" / "w.mp4", root / "b" / "renamed.mp4")
    (root / "b" / "copy.mp4").write_bytes(first.read_bytes())
    summary = again()
    assert calls == [] and (summary.encoded, summary.reused) == (0, 302)  # known content: hashed, not decoded


def test_hashing_has_its_own_bound_and_a_timed_out_hash_is_remembered_under_its_limit(dataset, tmp_path, tiny_clip,
                                                                                      monkeypatch):
    import itertools
    from types import SimpleNamespace

    import pipeline.decode.hashing
    import pipeline.decode.workers

    # hashing's clock advances 1 ms per look (each 256 KiB read), whatever the machine's speed: the clips hash
    # within 0.5 s of it, the hole (400,000 reads) does not
    ticks = itertools.count()
    monkeypatch.setattr(pipeline.decode.hashing, "time", SimpleNamespace(monotonic=lambda: next(ticks) / 1000))
    sparse = write_video(dataset / "sitting" / "sparse.mp4", 75)  # a 3 s clip with a 100 GiB hole after it
    os.truncate(sparse, sparse.stat().st_size + 100 * 2**30)
    hashed = []
    real = pipeline.decode.hashing.content_hash
    for module in (pipeline.decode.hashing, pipeline.decode.workers):  # before decoding, and after it (the decoder's)
        monkeypatch.setattr(module, "content_hash", lambda f, h=None: hashed.append(f) or real(f, h))
    summary = run(dataset, tmp_path / "f.h5", tiny_clip, workers=0, hash_timeout_s=0.5)
    assert dict(summary.skipped) == {
        "sitting/sparse.mp4": "sitting/sparse.mp4: hashing took longer than 0.5 s (extract.hash_timeout_s)"}
    # each file once before decoding (the 8 clips; the bounded hash), and each decoded one once more through the
    # decoder's handle after decoding (7: what ties the hash to the bytes decoded)
    assert len(hashed) == 8 + 7 and sorted(hashed[8:]) == sorted(set(hashed) - {str(sparse)})
    again = run(dataset, tmp_path / "f.h5", tiny_clip, workers=0, hash_timeout_s=0.5)
    assert again.remembered == 1 and len(again.skipped) == 1  # remembered as any failure: not hashed again
    longer = run(dataset, tmp_path / "f.h5", tiny_clip, workers=0, hash_timeout_s=0.6)
    assert longer.remembered == 0 and len(longer.skipped) == 1  # another bound: tried again


def test_the_summary_escapes_names_counts_reasons_and_lists_every_skip_beside_the_cache(dataset, tmp_path,
                                                                                        tiny_clip):
    from pipeline.extract.runner import SHOWN_SKIPS, skipped_list_path
    from pipeline.paths import CACHE_PATH, SKIPPED_LIST

    for i in range(12):
        (dataset / "sitting" / f"bad{i:02d}.mp4").write_text("not a video\n")
    (dataset / "sitting" / "0evil\x1b[2J\n\tx.mp4").write_text("not a video\n")
    summary = run(dataset, tmp_path / "f.h5", tiny_clip, workers=0)
    text = str(summary)
    assert "\x1b" not in text and "\t" not in text and "0evil\\x1b[2J\\n\\tx.mp4" in text
    lines = text.splitlines()
    assert "  skipped, by reason: 13 not a readable video (FFmpeg: Invalid data found when processing input)" in lines
    assert sum(line.startswith("  skipped sitting/") for line in lines) == SHOWN_SKIPS
    assert not any("bad00.mp4: sitting/bad00.mp4" in line for line in lines)  # the name once per line
    listed = skipped_list_path(tmp_path / "f.h5")
    assert lines[-1] == f"  ... and 3 more: {listed} lists them all"
    rows = listed.read_text().splitlines()
    assert rows[0] == "clip\treason" and len(rows) == 14 and all(r.count("\t") == 1 for r in rows)
    assert str(skipped_list_path(CACHE_PATH)) == SKIPPED_LIST


def test_a_worker_running_the_main_script_again_stops_with_the_reason(monkeypatch, capfd):
    import multiprocessing
    import types

    from pipeline.extract.runner import _refuse_worker_rerun

    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    _refuse_worker_rerun()  # the main process: nothing
    monkeypatch.setitem(sys.modules, "__mp_main__", types.SimpleNamespace(__file__="train.py"))
    monkeypatch.setattr(multiprocessing.current_process(), "name", "ForkServerProcess-1")
    _refuse_worker_rerun()
    assert exits == [2] and capfd.readouterr().err == (
        'error: train.py calls extract_features at its top level, and every decode worker runs that script again '
        'as it starts: put the call under `if __name__ == "__main__":`\n')


def test_the_summary_counts_damaged_videos_and_the_limit_reaches_the_decoder():
    from pipeline.extract.runner import ExtractSummary

    assert "  2 videos had packets that failed to decode" in str(ExtractSummary("f.h5", encoded=3, damaged=2))
    assert ExtractConfig(root="data", max_damaged=0.1).limits().max_damaged == 0.1


def test_a_cache_sampled_by_frame_rate_holds_each_clips_own_frames_padded_and_says_so(tmp_path, tiny_clip):
    """extract.fps 1: a 2 s clip gets 2 frames, a 5 s one 5 capped to extract.max_frames 4 (one line says so); rows
    are padded to max_frames (zero embeddings, index -1, time NaN) and `sampled` counts each one's own; the sampling
    is in the cache's key (another rate re-encodes); the embeddings are those of the frames read alone."""
    write_video(tmp_path / "data" / "a" / "two.mp4", 20, fps=10.0)
    write_video(tmp_path / "data" / "b" / "five.mp4", 50, fps=10.0, seed=1)
    summary = run(tmp_path / "data", tmp_path / "f.h5", tiny_clip, fps=1, max_frames=4, workers=0)
    assert "1 clips are longer than 4 frames at 1 a second: each got 4 frames spread over it (extract.max_frames)" \
        in str(summary)
    cache = read_cache(tmp_path / "f.h5")
    assert cache.attrs["sampling"] == "fps-centers:1" and cache.attrs["num_frames"] == 4
    assert cache.sampled.tolist() == [2, 4] and cache.embeddings.shape[:2] == (2, 4)
    from pipeline.tools.inspect_text import frames_text  # what the inspector and the Embeddings page say of it
    from pipeline.tools.inspector import summarize
    assert frames_text(summarize(cache, tmp_path / "f.h5")) == "2 to 4 (median 3)"
    assert cache.frame_indices[0].tolist() == [5, 15, -1, -1] and np.isnan(cache.timestamps[0, 2:]).all()
    np.testing.assert_allclose(cache.timestamps[0, :2], [0.5, 1.5])
    assert (cache.embeddings[0, 2:] == 0).all() and (cache.frame_mask() == [[1, 1, 0, 0], [1, 1, 1, 1]]).all()
    encoder = load_encoder(tiny_clip, device="cpu")
    clip = read_frames(tmp_path / "data" / "a" / "two.mp4", 4, fps=1.0)
    alone = embed_frames(preprocess_frames(clip.frames, encoder), encoder, batch_size=8)
    np.testing.assert_allclose(cache.embeddings[0, :2], alone, atol=1e-5)
    assert run(tmp_path / "data", tmp_path / "f.h5", tiny_clip, fps=1, max_frames=4, workers=0).reused == 2
    # a head trained on it records the sampling, and clip-har-predict's path samples each video the same way
    from pipeline.decode.workers import DecodePool, PoolConfig
    from pipeline.extract.cache import open_cache
    from pipeline.heads.estimators import LinearConfig, LinearHead
    from pipeline.tools.predict import load_predictor, predict_video
    lazy = open_cache(tmp_path / "f.h5")
    head = LinearHead(LinearConfig(epochs=2, head="attention")).fit(lazy.embeddings, lazy.labels, lazy.class_names,
                                                                  lazy.attrs)
    head.save(tmp_path / "head.pt")
    with DecodePool(PoolConfig(workers=1)) as pool:
        pred = predict_video(tmp_path / "data" / "b" / "five.mp4", load_predictor(tmp_path / "head.pt", pool, "cpu"))
    np.testing.assert_array_equal(pred.clip.indices, cache.frame_indices[1])
    np.testing.assert_allclose(pred.embeddings, cache.embeddings[1], atol=1e-6)
    np.testing.assert_allclose(pred.probabilities, head.predict_proba(lazy.embeddings[[1]])[0], atol=1e-5)
    again = run(tmp_path / "data", tmp_path / "f.h5", tiny_clip, fps=2, max_frames=4, workers=0)
    assert again.encoded == 2 and "sampling" in again.note
    with pytest.raises(ConfigError, match="extract.fps needs extract.engine: local"):
        ExtractConfig(root=".", fps=1, engine="ray")
