"""The reader role: decode workers that isolate crashes, hangs and memory hogs, in stage one, predict and the app."""
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from pipeline.extract.cache import ROW_FIELDS, read_cache
from pipeline.errors import Unusable, VideoError
from pipeline.extract.runner import ExtractConfig, extract_features
from pipeline.paths import HEAD_FILES
from pipeline.tools.predict import load_predictor, predict_video
from pipeline.decode.frames import FrameSpec
from pipeline.decode.workers import DecodePool, Loaded, PoolConfig, ReadConfig
from tests.test_app import plain
from tests.conftest import APP_RUN_S, write_video
from tests.faults import broken_install_decode, faulty_decode, modules_decode

TIMEOUT = 5.0  # seconds a test video may take: tiny videos decode in milliseconds; a hang is cut at this
READ = ReadConfig(4, FrameSpec(224, 224, 224))


@pytest.fixture
def faulty_folder(tmp_path) -> Path:
    """Two classes of good videos, plus a video that crashes its decoder, one that hangs it and one that eats memory."""
    root = tmp_path / "data"
    for i in range(6):
        write_video(root / f"c{i % 2}" / f"v{i}.mp4", 12 + i, seed=i)
    shutil.copy(root / "c0" / "v0.mp4", root / "c0" / "crash.mp4")
    shutil.copy(root / "c1" / "v1.mp4", root / "c1" / "hang.mp4")
    write_video(root / "c1" / "hog.mp4", 9, seed=9)
    return root


def test_results_come_back_in_order_and_equal_in_process_decoding(faulty_folder):
    files = sorted(str(f) for f in faulty_folder.rglob("v*.mp4"))
    with DecodePool(PoolConfig(workers=0)) as pool:
        alone = list(pool.map(files, READ))
    with DecodePool(PoolConfig(workers=2)) as pool:
        pooled = list(pool.map(files, READ))
    assert all(isinstance(r, Loaded) for r in alone + pooled)
    for a, b in zip(alone, pooled):
        assert a.digest == b.digest and (a.size, a.mtime_ns) == (b.size, b.mtime_ns)
        np.testing.assert_array_equal(a.clip.frames, b.clip.frames)  # uint8 (4, 224, 224, 3), resized and cropped
        assert a.clip.frames.shape == (4, 224, 224, 3) and a.clip.frames.dtype == np.uint8


def test_a_crash_a_hang_and_a_memory_hog_cost_only_their_video(faulty_folder):
    names = ["c0/v0.mp4", "c0/crash.mp4", "c1/hang.mp4", "c1/v1.mp4", "c1/hog.mp4", "c0/v2.mp4"]
    with DecodePool(PoolConfig(workers=2, timeout_s=TIMEOUT, memory_mb=512), decode=faulty_decode) as pool:
        out = dict(zip(names, pool.map([str(faulty_folder / n) for n in names], READ)))
        again = pool.read(str(faulty_folder / "c0/v4.mp4"), READ)  # the pool still works: workers were replaced
    assert out["c0/crash.mp4"] == Unusable(str(faulty_folder / "c0/crash.mp4"), "decoder crashed (signal 11, SIGSEGV)")
    assert out["c1/hang.mp4"].reason == f"timed out after {TIMEOUT:g} s (extract.video_timeout_s)"
    assert out["c1/hog.mp4"].reason == "ran out of memory while decoding (extract.worker_memory_mb)"
    assert str(out["c1/hog.mp4"]).startswith(str(faulty_folder / "c1/hog.mp4") + ": ran out of memory")
    assert all(isinstance(out[n], Loaded) for n in ("c0/v0.mp4", "c1/v1.mp4", "c0/v2.mp4"))
    assert isinstance(again, Loaded)


def test_results_are_typed_from_the_exception_never_its_text(tmp_path):
    bad, gone = tmp_path / "bad.mp4", tmp_path / "gone.mp4"
    bad.write_text("not a video\n" * 10)
    with DecodePool(PoolConfig(workers=1)) as pool:
        out, missing = pool.map([str(bad), str(gone)], READ)
        with pytest.raises(VideoError) as err:
            pool.read(str(bad), READ)
    assert out.file == str(bad) and out.reason.startswith("not a readable video") and str(bad) not in out.reason
    assert (err.value.file, err.value.reason) == (out.file, out.reason) and str(err.value) == str(out)
    assert missing == Unusable(str(gone), "cannot be read (No such file or directory)")  # an OSError, by its fields
    with DecodePool(PoolConfig(workers=0), decode=broken_install_decode) as pool:
        with pytest.raises(RuntimeError, match="the decode workers cannot run: ImportError"):
            list(pool.map([str(bad)], READ))  # a broken installation stops the run: it would skip every video


def test_a_bug_in_a_reader_skips_its_video_as_an_internal_error_with_its_traceback(faulty_folder):
    """An exception no reader expects is not the video's fault: the video is skipped (the run goes on), typed as an
    InternalError so that it is counted apart, with the worker's traceback kept for the bug report."""
    from pipeline.errors import InternalError
    shutil.copy(faulty_folder / "c0" / "v0.mp4", faulty_folder / "c0" / "bug.mp4")
    files = [str(faulty_folder / "c0" / n) for n in ("bug.mp4", "v2.mp4")]
    for workers in (0, 1):
        with DecodePool(PoolConfig(workers=workers, timeout_s=TIMEOUT), decode=faulty_decode) as pool:
            bug, good = pool.map(files, READ)
        assert isinstance(good, Loaded) and bug.kind is InternalError, (workers, bug)
        assert bug.reason.startswith("internal error, a bug in clip-har rather than the video (KeyError")
        assert "faults.py" in bug.detail and "KeyError: 'a key the code forgot'" in bug.detail, bug.detail


def test_a_worker_imports_the_reader_and_not_its_callers(tmp_path, monkeypatch):
    # multiprocessing re-runs the parent's main script in each worker: under pytest, after an AppTest, that is the
    # app's script (Streamlit puts it in sys.modules["__main__"]); the reader's own imports are what is checked here
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    with DecodePool(PoolConfig(workers=1), decode=modules_decode) as pool:
        modules = next(pool.map([str(tmp_path / "any.mp4")], READ))
    assert "pipeline.decode.workers" in modules and "pipeline.decode.video" in modules
    # (the embedder, pipeline.embed.encoder, is there where stage one's pool started the workers' forkserver: it
    # preloads it for the workers that embed)
    assert not {"pipeline.extract.runner", "pipeline.extract.engines", "stages"} & set(modules), modules


def run(root, cache, tiny_clip, **kw):
    cfg = ExtractConfig(root=str(root), cache_path=str(cache), model=tiny_clip, num_frames=4, batch_size=8,
                        device="cpu", video_timeout_s=TIMEOUT, **kw)
    return extract_features(cfg, progress=False, decode=faulty_decode)


def test_stage_one_skips_what_kills_its_decoder_and_the_cache_does_not_depend_on_the_workers(faulty_folder,
                                                                                          tmp_path, tiny_clip):
    shutil.copy(faulty_folder / "c0" / "v0.mp4", faulty_folder / "c0" / "bug.mp4")  # a bug in the reader
    summary = run(faulty_folder, tmp_path / "w2.h5", tiny_clip, workers=2)
    reasons = dict(summary.skipped)
    assert set(reasons) == {"c0/crash.mp4", "c1/hang.mp4", "c1/hog.mp4", "c0/bug.mp4"} and summary.encoded == 6
    assert reasons["c0/crash.mp4"] == "c0/crash.mp4: decoder crashed (signal 11, SIGSEGV)"
    assert reasons["c1/hang.mp4"].startswith("c1/hang.mp4: timed out after")
    # the bug is counted apart, with its traceback on the terminal, and never remembered as the file's failure
    assert [name for name, _ in summary.internal] == ["c0/bug.mp4"] and "c0/bug.mp4" not in summary.skipped_stat
    assert "1 of the skipped hit an internal error" in str(summary) and "KeyError" in str(summary).splitlines()[-1]
    assert read_cache(tmp_path / "w2.h5").skipped_kind["c0/bug.mp4"] == "InternalError"
    for name in ("crash.mp4", "hang.mp4", "hog.mp4", "bug.mp4"):  # without them, in this process: the same cache
        next(faulty_folder.rglob(name)).unlink()
    run(faulty_folder, tmp_path / "w0.h5", tiny_clip, workers=0)
    a, b = read_cache(tmp_path / "w2.h5"), read_cache(tmp_path / "w0.h5")
    for name in ROW_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.attrs == b.attrs and len(a) == 6 and a.attrs["decoder"].startswith("pyav-")


def test_on_the_cpu_the_workers_embed_and_the_stage_never_loads_the_encoder(dataset, tmp_path, tiny_clip,
                                                                          monkeypatch):
    from pipeline.embed.encoder import EncoderConfig

    def refuse(*args, **kwargs):
        raise AssertionError("the stage's process loaded the encoder")

    with monkeypatch.context() as m:  # (the workers import the encoder afresh: the patch is this process's only)
        m.setattr(EncoderConfig, "load", refuse)
        summary = extract_features(ExtractConfig(root=str(dataset), cache_path=str(tmp_path / "w2.h5"),
                                                 model=tiny_clip, num_frames=4, device="cpu", workers=2),
                                   progress=False)
    extract_features(ExtractConfig(root=str(dataset), cache_path=str(tmp_path / "w0.h5"), model=tiny_clip,
                                   num_frames=4, device="cpu", workers=0), progress=False)
    a, b = read_cache(tmp_path / "w2.h5"), read_cache(tmp_path / "w0.h5")
    assert summary.encoded == len(a) > 0 and a.attrs == b.attrs  # a worker said what the encoder is
    np.testing.assert_array_equal(a.embeddings, b.embeddings)  # one thread, in a worker or in this process


def test_pipeline_predict_reports_a_crashed_decoder_and_goes_on(project, faulty_folder):
    with DecodePool(PoolConfig(workers=1, timeout_s=TIMEOUT), decode=faulty_decode) as pool:
        predictor = load_predictor(project / HEAD_FILES["linear"], pool, device="cpu")
        with pytest.raises(ValueError, match=r"crash.mp4: decoder crashed \(signal 11, SIGSEGV\)"):
            predict_video(faulty_folder / "c0/crash.mp4", predictor)
        with pytest.raises(ValueError, match="timed out after"):
            predict_video(faulty_folder / "c1/hang.mp4", predictor)
        assert predict_video(project / "data/walking/walking_0.mp4", predictor).probabilities.shape == (3,)


@pytest.mark.parametrize("content", [b"crash!", b"hang!!"])
def test_an_upload_that_kills_its_decoder_is_an_error_and_the_app_keeps_working(project, monkeypatch, tmp_path,
                                                                                content):
    import app.common
    monkeypatch.chdir(project)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with DecodePool(PoolConfig(workers=1, timeout_s=TIMEOUT), decode=faulty_decode) as pool:
        monkeypatch.setattr(app.common, "cached_pool", lambda: pool)  # the app's shared worker, with the faulty decoder
        at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"),
                               default_timeout=APP_RUN_S)
        at.run()
        good = (project / "data/walking/walking_0.mp4").read_bytes()
        at.get("file_uploader")[0].upload("evil.mp4", content + good, "video/mp4")
        at.run()
        at.button[0].click().run()
        assert not at.exception, at.exception
        reason = "decoder crashed (signal 11, SIGSEGV)" if content == b"crash!" else "timed out after"
        shown = plain(at.error[0].value) if at.error else ""  # the page escapes text from files (app.common.shown_name)
        assert len(at.error) == 1 and reason in shown and "evil.mp4" in shown
        at.get("file_uploader")[0].upload("ok.mp4", good, "video/mp4")
        at.run()
        at.button[0].click().run()
        assert not at.exception and not at.error
    assert list(tmp_path.iterdir()) == []  # no temporary upload left behind
