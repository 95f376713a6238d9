"""Reliability: the bad-input corpus through stage one, faults (SIGKILL, full disk, a second writer), and abuse."""
import errno
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import pipeline.extract.cache
import pipeline.extract.runner
import pipeline.decode.video
from pipeline.errors import CacheError, ConfigError, UserError
from pipeline.extract.cache import ROW_FIELDS, read_cache
from pipeline.extract.runner import ExtractConfig, extract_features
from pipeline.heads.kinds import load_head
from pipeline.paths import HEAD_FILES
from pipeline.tools.predict import load_predictor, predict_bytes
from pipeline.decode.workers import DecodePool, PoolConfig
from pipeline.decode.video import TIMESTAMPS, DecodeLimits, read_frames, sample_indices
from tests.conftest import committed_file, committed_params
from tests.corpus import CASES, DAMAGED_FRAMES, EDIT_SHOWN, ONE_KEY_FRAMES, VFR_PTS_MS, build_corpus
from tests.faults import faulty_decode

ROOT = Path(__file__).resolve().parents[1]


def run(root, cache, tiny_clip, decode=None, **kw):
    cfg = ExtractConfig(root=str(root), cache_path=str(cache), model=tiny_clip, num_frames=8, batch_size=8,
                        device="cpu", **kw)
    return extract_features(cfg, progress=False, **({"decode": decode} if decode else {}))


KILLS = 5  # SIGKILLs at random moments: two during start-up and decoding, three once parts are written


def same(a, b) -> bool:
    return all(np.array_equal(x := getattr(a, n), getattr(b, n), equal_nan=x.dtype.kind == "f")  # NaN: a whole file
               for n in ROW_FIELDS) and (
        a.class_names, a.skipped, a.attrs) == (b.class_names, b.skipped, b.attrs)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def corpus_cache(corpus, tiny_clip, tmp_path_factory):
    """Stage one over the corpus, with two decode workers. As root, permission bits do not stop reads: the locked
    file and folder are made to fail the way they fail for every other user (PermissionError on open or listing),
    the file inside the workers (tests.faults.faulty_decode), the folder in the walk."""
    out = tmp_path_factory.mktemp("corpus_cache") / "f.h5"
    real_scandir = os.scandir

    def scandir(path="."):
        if os.geteuid() == 0 and isinstance(path, (str, os.PathLike)) and os.fspath(path).endswith("locked_dir"):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "scandir", scandir)
        summary = run(corpus, out, tiny_clip, workers=2, decode=faulty_decode)
    return summary, read_cache(out)


def test_corpus_has_at_least_30_kinds():
    assert len(CASES) >= 30 and len({c.kind for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.readme_path for c in CASES])
def test_each_input_gets_its_documented_outcome(corpus_cache, case):
    summary, cache = corpus_cache
    reasons = dict(summary.skipped)
    assert dict(cache.skipped) == reasons  # the cache keeps them
    shown = case.readme_path.rstrip("/")  # as the cache can store it: valid UTF-8, no trailing slash
    encoded = case.path in set(cache.paths)
    if case.outcome == "encoded":
        assert encoded and case.path not in reasons
    elif case.outcome == "skipped":
        assert not encoded and reasons[shown].startswith(shown + ":")
    else:
        assert not encoded and not any(p.startswith(case.path) for p in reasons)
        assert not any(p.startswith(case.path) for p in cache.paths)


def test_odd_inputs_are_encoded_correctly(corpus, corpus_cache):
    _, cache = corpus_cache
    row = {p: i for i, p in enumerate(cache.paths)}
    reasons = dict(cache.skipped)
    assert cache.repeated[row["odd/one_frame.mp4"]] and cache.frame_count[row["odd/one_frame.mp4"]] == 1
    assert cache.repeated[row["odd/five_frames.mp4"]] and not cache.repeated[row["codecs/h264.mp4"]]
    assert 10 < cache.frame_count[row["odd/cut.avi"]] < 60 and 10 < cache.frame_count[row["odd/cut.mkv"]] < 80
    assert cache.frame_count[row["codecs/vp9.webm"]] == 30 and cache.frame_count[row["containers/h264.ts"]] == 60
    assert cache.frame_count[row["odd/long.mp4"]] == 12_000
    v = row["odd/vfr.mkv"]  # real stream times, not index / fps
    np.testing.assert_allclose(cache.timestamps[v], np.array(VFR_PTS_MS)[cache.frame_indices[v]] / 1000)
    assert cache.duration[v] == pytest.approx(VFR_PTS_MS[-1] / 1000 + 1 / 25)
    # classes: first-level folders holding a video file, usable or not (not special/: no regular file there)
    assert cache.class_names == ["bad", "bombs", "codecs", "containers", "damaged", "interlaced", "lonely", "names",
                                 "odd", "playlists", "rotation", "scene:1", "walk"]
    assert "Permission denied" in reasons["bad/locked.mp4"] and "Permission denied" in reasons["locked_dir"]
    # damage is counted, and the frame count does not shrink; sound files have no decode errors
    d = row["damaged/one_byte.mp4"]
    assert cache.frame_count[d] == DAMAGED_FRAMES and cache.decode_errors[d] >= 1
    assert cache.decode_errors[[i for p, i in row.items() if not p.startswith(("damaged/", "odd/cut"))]].sum() == 0
    assert cache.frame_count[row["codecs/av1.mkv"]] == 20
    # interlaced material gives real frames, as bright as the progressive video of the same levels
    for name in ("interlaced/h264_tff.mp4", "interlaced/mpeg2.mpg"):
        clip = read_frames(corpus / name, 4)
        assert clip.frames.mean() > 40 and len({f.tobytes() for f in clip.frames}) == 4, name
    assert "pixel limit" in reasons["bombs/huge.mp4"] and "16000x16000" in reasons["bombs/huge.mp4"]
    assert "aspect-ratio limit" in reasons["bombs/sliver.mkv"]
    assert "playlist" in reasons["playlists/loop.mp4"] and "playlist" in reasons["playlists/ref.mp4"]
    for name in ("special/pipe.mp4", "special/dev.mp4"):
        assert "not a regular file" in reasons[name]
    assert "broken symbolic link" in reasons["special/broken.mp4"]
    assert "not valid UTF-8" in reasons[r"names/bad\xff.mp4"]
    assert not any(p.startswith("walk/loop") for p in [*cache.paths, *reasons])  # the cycle is walked once
    for deg, shape in ((90, (64, 32)), (180, (32, 64)), (270, (64, 32))):
        frames = read_frames(corpus / f"rotation/r{deg}.mp4", 2).frames
        assert frames.shape[1:3] == shape


def test_a_frame_lost_to_damage_is_stood_in_for_by_the_next_and_counted(corpus):
    clip = read_frames(corpus / "damaged/one_byte.mp4", DAMAGED_FRAMES)  # every frame a sample
    steps = np.diff(clip.timestamps)
    assert clip.frame_count == DAMAGED_FRAMES and clip.decode_errors == 2  # the rejected packet, the stand-in
    assert (steps >= 0).all() and (steps == 0).sum() == 1  # one sample took its neighbour's frame, in order
    lost = int(np.flatnonzero(steps == 0)[0])
    np.testing.assert_array_equal(clip.frames[lost], clip.frames[lost + 1])


def test_the_docs_document_every_case():
    text = (ROOT / "docs" / "reliability.md").read_text()
    rows = re.findall(r"^\| (.+?) \| `(.+?)` \| (encoded|skipped|ignored) \|", text, flags=re.M)
    assert rows == [(c.kind, c.readme_path, c.outcome) for c in CASES]


def test_a_long_video_is_sampled_with_bounded_work(corpus, monkeypatch):
    long = corpus / "odd" / "long.mp4"  # 12,000 frames, a keyframe every 25
    decoded = []
    real = pipeline.decode.video._frames

    def counting(*args):
        for frame in real(*args):
            decoded.append(1)
            yield frame

    monkeypatch.setattr(pipeline.decode.video, "_frames", counting)
    seeking = read_frames(long, 16)
    assert len(decoded) < 1000  # 16 samples, each from the keyframe before it, not 12,000 frames
    decoded.clear()
    in_order = read_frames(long, 16, seek_gap=None)
    assert len(decoded) > 11_000  # every frame up to the last sample
    np.testing.assert_array_equal(seeking.frames, in_order.frames)  # seeking lands on the same frames
    np.testing.assert_array_equal(seeking.indices, sample_indices(12_000, 16))
    np.testing.assert_allclose(seeking.timestamps, in_order.timestamps)


def _counting(monkeypatch) -> dict[str, int]:
    """Counts of the frames pipeline.decode.video decodes and the seeks it makes, from now on."""
    counts = {"decoded": 0, "seeks": 0}
    real_frames, real_seek = pipeline.decode.video._frames, pipeline.decode.video._seek

    def frames(*args):
        for frame in real_frames(*args):
            counts["decoded"] += 1
            yield frame

    def seek(*args):
        counts["seeks"] += 1
        real_seek(*args)

    monkeypatch.setattr(pipeline.decode.video, "_frames", frames)
    monkeypatch.setattr(pipeline.decode.video, "_seek", seek)
    return counts


@pytest.mark.parametrize("keyframes_known", [True, False])
def test_one_keyframe_for_a_long_clip_is_read_in_order_once(corpus, monkeypatch, keyframes_known):
    """8 samples 375 frames apart: seeking to each would go back to frame 0 and decode 12,000 frames."""
    if not keyframes_known:  # as if the container flagged no keyframe: the seek that lands behind stops seeking
        real_scan = pipeline.decode.video._scan
        monkeypatch.setattr(pipeline.decode.video, "_scan", lambda stream: replace(real_scan(stream), keyframes=None))
    counts = _counting(monkeypatch)
    clip = read_frames(corpus / "odd/one_keyframe.mp4", 8)
    last = int(sample_indices(ONE_KEY_FRAMES, 8)[-1])
    assert counts["seeks"] == (0 if keyframes_known else 1)
    assert counts["decoded"] <= last + 1 + (0 if keyframes_known else int(sample_indices(ONE_KEY_FRAMES, 8)[0]) + 1)
    assert clip.frame_count == ONE_KEY_FRAMES and len({f.tobytes() for f in clip.frames}) == 8


def test_which_frames_a_player_shows_are_sampled(corpus, corpus_cache):
    _, cache = corpus_cache
    reasons = dict(cache.skipped)
    cut = read_frames(corpus / "odd/edit_list.mp4", 8)  # the edit list's 63 cut-off frames are never samples
    assert cut.frame_count == EDIT_SHOWN and cut.duration == pytest.approx(EDIT_SHOWN / 25)
    assert len({f.tobytes() for f in cut.frames}) == 8 and cut.decode_errors == 0
    assert read_frames(corpus / "odd/two_tracks.mp4", 2).frames.shape[1:3] == (64, 96)  # not the thumbnail
    for name in ("odd/equal_pts.mkv", "odd/shuffled_pts.mkv", "odd/annexb.mp4"):
        clip = read_frames(corpus / name, 8)
        assert clip.timing.startswith("frame order: "), name
        np.testing.assert_allclose(clip.timestamps, clip.indices / 25)
        grey = clip.frames[:, -1, -1, 0].astype(int)
        assert (np.diff(grey) > 0).all(), name  # 8 distinct frames, in the order they were made
    assert read_frames(corpus / "odd/vfr.mkv", 8).timing == TIMESTAMPS
    assert "no video stream (only a cover picture)" in reasons["bad/cover.mp4"] == reasons["bad/cover.mkv"].replace(
        ".mkv", ".mp4")
    assert "codec is unknown to FFmpeg" in reasons["bad/unknown_codec.mkv"]
    assert "a still AVIF image, not a video" in reasons["bad/avif.mp4"]
    for name, kind in (("gif", "GIF"), ("webp", "WebP"), ("apng", "APNG")):
        assert f"an animated image ({kind}), not a video" in reasons[f"bad/{name}.mp4"]
    assert "the video data is in another file (an external data reference)" in reasons["bad/dref.mp4"]


def test_a_video_with_most_packets_damaged_is_refused_over_max_damaged(corpus, corpus_cache):
    _, cache = corpus_cache
    file = corpus / "damaged/every_packet.mp4"
    clip = read_frames(file, 8, limits=DecodeLimits(max_damaged=1.0))
    assert clip.packets == 75 and 0.5 < clip.damaged / clip.packets <= 1
    assert dict(cache.skipped)["damaged/every_packet.mp4"] == (
        f"damaged/every_packet.mp4: damaged: {clip.damaged} of 75 packets failed to decode (extract.max_damaged: 0.5)")
    one = read_frames(corpus / "damaged/one_byte.mp4", 8)
    assert 0 < one.damaged <= one.decode_errors and one.packets > 400  # a little damage: encoded, and counted


@pytest.mark.slow  # 13 stage-one runs, 6 of them in subprocesses
def test_sigkill_at_5_random_moments(tmp_path, tiny_clip):
    from tests.corpus import _write_av
    root = tmp_path / "data"
    for i in range(16):  # ultrafast: half the encoding time; decoding them is a small part of a run either way
        _write_av(root / f"c{i % 4}" / f"v{i:02d}.mp4", "libx264", 150 + i, size=(320, 240),
                  options={"preset": "ultrafast"})
    hidden = tmp_path / "later"
    for i in range(8, 16):  # the first run sees 8 videos; the killed runs add 8 more
        (hidden / f"c{i % 4}").mkdir(parents=True, exist_ok=True)
        os.rename(root / f"c{i % 4}" / f"v{i:02d}.mp4", hidden / f"c{i % 4}" / f"v{i:02d}.mp4")
    cache_file = tmp_path / "cache" / "f.h5"
    # the runs in this process decode in it (workers=0: no pool to start, the same rows); the killed runs, in
    # subprocesses, with their decode workers
    run(root, cache_file, tiny_clip, shard_size=1, workers=0)
    before = read_cache(cache_file)
    shutil.copy2(cache_file, tmp_path / "before.h5")
    for i in range(8, 16):
        os.rename(hidden / f"c{i % 4}" / f"v{i:02d}.mp4", root / f"c{i % 4}" / f"v{i:02d}.mp4")
    run(root, tmp_path / "ref" / "f.h5", tiny_clip, shard_size=1, workers=0)
    reference = read_cache(tmp_path / "ref" / "f.h5")
    code = ("from pipeline.extract.runner import ExtractConfig, extract_features\n"
            f"extract_features(ExtractConfig(root={str(root)!r}, cache_path={str(cache_file)!r}, model={tiny_clip!r},"
            " num_frames=8, batch_size=8, device='cpu', shard_size=1), progress=False)\n")

    def start():
        shutil.copy2(tmp_path / "before.h5", cache_file)  # every kill starts from the same previous cache
        shutil.rmtree(cache_file.with_name("f.h5.parts"), ignore_errors=True)
        return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)

    t0, first_part = time.perf_counter(), None
    proc = start()  # one uninterrupted run, timed: when the work starts (first part written) and ends
    while proc.poll() is None:
        if first_part is None and list(cache_file.parent.glob("f.h5.parts/part-*.h5")):
            first_part = time.perf_counter() - t0
        time.sleep(0.005)
    assert proc.returncode == 0 and first_part is not None
    rng = np.random.default_rng(20)
    outcomes = []
    parts = cache_file.parent / "f.h5.parts"
    # kills spread over the work: one in four during start-up and decoding (before any part), the others once
    # 1 to 7 of the 8 parts are written (waiting on the files, not on the clock), up to the final join
    for i in range(KILLS):
        proc = start()
        if i % 4 == 0:
            time.sleep(rng.uniform(0.3, 0.9) * first_part)
        else:
            wanted = int(rng.integers(1, 8))
            while len(list(parts.glob("part-*.h5"))) < wanted and proc.poll() is None:
                time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        code_ = proc.wait()  # wait until the killed process is gone before the next run
        after = read_cache(cache_file)  # opens and is whole: the previous cache, or the finished new one
        assert same(after, before) or same(after, reference)  # killed after the final rename: the new one
        leftovers = {p.name for p in cache_file.parent.iterdir()} - {"f.h5", "f.h5.lock", "f.h5.parts", "f.h5.tmp",
                                                                      "f.skipped.tsv", "f.skipped.tsv.tmp"}
        assert not leftovers
        resumed = run(root, cache_file, tiny_clip, shard_size=1, workers=0)
        assert same(read_cache(cache_file), reference)  # bit for bit the uninterrupted result
        assert {p.name for p in cache_file.parent.iterdir()} <= {"f.h5", "f.h5.lock", "f.skipped.tsv"}
        outcomes.append((code_, resumed.encoded))
    killed = [o for o in outcomes if o[0] == -signal.SIGKILL]
    print(f"SIGKILL: {len(killed)} of {KILLS} runs killed mid-way, all resumed to the reference cache; "
          f"videos encoded by the resumes: {[enc for _, enc in outcomes]}")
    assert len(killed) >= 4, outcomes  # nearly every kill lands inside the run
    assert sum(enc < 8 for _, enc in killed) >= 2, outcomes  # kills that left finished parts, reused on resume


def test_a_full_disk_is_a_clear_error_and_the_previous_cache_survives(dataset, tmp_path, tiny_clip, monkeypatch):
    cache_file = tmp_path / "f.h5"
    run(dataset, cache_file, tiny_clip)
    before = read_cache(cache_file)
    from tests.conftest import write_video
    write_video(dataset / "sitting" / "new.avi", 30, seed=42)
    real_file = h5py.File
    for failing in ("part-", "f.h5.tmp"):
        def file(name, mode="r", *a, _failing=failing, **kw):
            # the part's temporary file is part-<hex>.h5.tmp, the cache's f.h5.tmp: never confuse the two
            if "w" in mode and Path(name).name.startswith(_failing):
                raise OSError(errno.ENOSPC, "No space left on device", str(name))
            return real_file(name, mode, *a, **kw)

        monkeypatch.setattr(pipeline.extract.cache.h5py, "File", file)
        with pytest.raises(CacheError, match=r"^the disk holding '.*' is full .* the previous cache is unchanged$"):
            run(dataset, cache_file, tiny_clip)
        monkeypatch.setattr(pipeline.extract.cache.h5py, "File", real_file)
        assert same(read_cache(cache_file), before)
        assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("f.h5.parts/*.tmp"))
    summary = run(dataset, cache_file, tiny_clip)  # with space again, it just works, and keeps the work done:
    assert (summary.encoded, summary.reused) == (0, 8)  # the new video's part was written before the disk filled
    assert "sitting/new.avi" in read_cache(cache_file).paths


def test_the_stage_reports_a_write_failure_in_one_line(tmp_path, monkeypatch, capsys):
    import stages.extract

    def fail(cfg):
        raise OSError(errno.ENOSPC, "No space left on device", "cache/features.h5.tmp")

    monkeypatch.setattr("pipeline.extract.runner.extract_features", fail)  # the stage imports it when it runs
    (tmp_path / "params.yaml").write_text(committed_file("params.yaml"))  # the committed settings, not the user's
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit,
                       match=r"^extract: error: \[Errno 28\] No space left on device: 'cache/features.h5.tmp'$"):
        stages.extract.main()


def test_a_stage_shows_a_user_error_in_one_line_and_a_bug_with_its_traceback():
    from pipeline.errors import DataError, UserError
    from stages import stage

    @stage("extract")
    def users_data():
        raise DataError("data root 'nowhere' is not a directory")

    with pytest.raises(SystemExit, match=r"^extract: error: data root 'nowhere' is not a directory$"):
        users_data()

    @stage("extract")
    def a_bug():
        np.zeros(2).reshape(3)  # numpy's own ValueError: a bug, not the user's

    with pytest.raises(ValueError, match="cannot reshape") as err:
        a_bug()
    assert not isinstance(err.value, UserError) and any(entry.name == "a_bug" for entry in err.traceback)


def test_a_second_writer_process_is_refused(tmp_path, tiny_clip):
    from tests.corpus import _write_av
    root = tmp_path / "data"
    for i in range(12):
        _write_av(root / f"c{i % 3}" / f"v{i:02d}.mp4", "libx264", 40 + i, size=(160, 120))  # distinct bytes
    cache_file = tmp_path / "f.h5"
    # the first writer: a real stage-one run in another process, slowed to half a second a video (decoding
    # sleeps first) so that the second one surely starts while it works
    code = ("import time\nimport pipeline.extract.runner as e\nimport pipeline.decode.workers as w\n"
            "real = w.read_frames\n"
            "w.read_frames = lambda *a, **k: (time.sleep(0.5), real(*a, **k))[1]\n"
            f"e.extract_features(e.ExtractConfig(root={str(root)!r}, cache_path={str(cache_file)!r}, "
            f"model={tiny_clip!r}, num_frames=8, batch_size=8, device='cpu', shard_size=1, workers=0), "
            "progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        deadline = time.time() + 120
        while not list(tmp_path.glob("f.h5.parts/part-*.h5")) and time.time() < deadline:
            assert proc.poll() is None, "the first run ended before writing a part"
            time.sleep(0.01)
        with pytest.raises(ValueError, match="another stage-one run is writing"):
            run(root, cache_file, tiny_clip)
    finally:
        proc.wait(timeout=300)
    assert proc.returncode == 0 and len(read_cache(cache_file)) == 12  # the first run was not disturbed


@pytest.mark.parametrize("damage", ["corrupt", "older schema", "other encoder"])
def test_a_bad_previous_cache_is_rebuilt(dataset, tmp_path, tiny_clip, damage):
    cache_file = tmp_path / "f.h5"
    run(dataset, cache_file, tiny_clip)
    reference = read_cache(cache_file)
    if damage == "corrupt":
        cache_file.write_bytes(cache_file.read_bytes()[:500])
    else:
        with h5py.File(cache_file, "a") as f:
            key = "schema_version" if damage == "older schema" else "encoder_fingerprint"
            f.attrs[key] = 0 if damage == "older schema" else "another"
    summary = run(dataset, cache_file, tiny_clip)
    assert (summary.encoded, summary.reused) == (7, 0) and same(read_cache(cache_file), reference)
    assert "everything re-encoded" in summary.note and "everything re-encoded" in str(summary)


def test_a_head_of_an_older_format_is_one_clear_error(project, tmp_path):
    saved = torch.load(project / HEAD_FILES["linear"], weights_only=True)
    saved["meta"]["schema_version"] = 0
    torch.save(saved, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="old.pt: head format version 0.*retrain"):
        load_head(tmp_path / "old.pt")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/clip-har-pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_payload_in_a_checkpoint_is_never_run(tmp_path):
    Path("/tmp/clip-har-pwned").unlink(missing_ok=True)
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": _Payload(), "meta": {}}, f)
    torch.save({"state_dict": {"w": _Payload()}, "meta": {"schema_version": 1}}, tmp_path / "evil2.pt")
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(ValueError, match="not a head this project wrote"):
            load_head(tmp_path / name)
    assert not Path("/tmp/clip-har-pwned").exists()


def test_8_concurrent_predictions_equal_sequential_ones(project):
    files = sorted((project / "data").rglob("*.mp4"))[:8]
    datas = [f.read_bytes() for f in files]
    with DecodePool(PoolConfig(workers=1)) as workers:  # one decode worker for every thread, as in the app
        predictor = load_predictor(project / HEAD_FILES["linear"], workers, device="cpu")
        sequential = [predict_bytes(d, predictor) for d in datas]
        with ThreadPoolExecutor(8) as pool:
            concurrent = list(pool.map(lambda d: predict_bytes(d, predictor), datas))
    for s, c in zip(sequential, concurrent):
        np.testing.assert_array_equal(s.embeddings, c.embeddings)
        np.testing.assert_array_equal(s.probabilities, c.probabilities)


class _MarkerPayload:
    """Unpickling this writes a marker file: the proof that a pickle ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "ran"))


@pytest.mark.parametrize("how", ["pickled weights", "remote code"])
def test_a_hostile_model_folder_never_runs_code(how, tiny_clip, tmp_path):
    """A model folder from someone else (encoder.model): weights as a pickle (pytorch_model.bin instead of
    safetensors) or a config asking for its own code (auto_map + a .py file) is refused or loaded without running
    anything: the marker the payload would write never appears (docs/security.md)."""
    from pipeline.embed.encoder import load_encoder
    folder, marker = tmp_path / "model", tmp_path / "ran"
    shutil.copytree(tiny_clip, folder)
    if how == "pickled weights":
        (folder / "model.safetensors").unlink()
        with open(folder / "pytorch_model.bin", "wb") as f:
            pickle.dump({"vision_model.embeddings.class_embedding": _MarkerPayload(str(marker))}, f)
    else:
        config = json.loads((folder / "config.json").read_text())
        config["auto_map"] = {"AutoModel": "evil.Model", "AutoConfig": "evil.Config"}
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n")
    try:
        load_encoder(str(folder))
    except UserError:
        pass  # refused in one line: as good as loaded safely
    assert not marker.exists(), f"{how}: the model folder ran code"


@pytest.mark.parametrize("file, key, value", [("config.json", "num_hidden_layers", 100_000),
                                              ("config.json", "hidden_size", 10**9),
                                              ("config.json", "image_size", "224"),
                                              ("preprocessor_config.json", "crop_size", {"height": 100_000,
                                                                                         "width": 100_000}),
                                              ("preprocessor_config.json", "size", {"shortest_edge": 0})])
def test_a_model_folder_that_sizes_the_work_is_refused_before_any_is_done(file, key, value, tiny_clip, tmp_path):
    """A model folder's config is untrusted: 100,000 layers (minutes to build, no output) or a 100,000-pixel frame
    (a 240 GB allocation per clip) is one ConfigError naming the setting, before the model is built."""
    from pipeline.embed.encoder import load_encoder
    folder = tmp_path / "model"
    shutil.copytree(tiny_clip, folder)
    config = json.loads((folder / file).read_text())
    if file == "config.json":
        config["vision_config"][key] = value
    else:
        config[key] = value
    (folder / file).write_text(json.dumps(config))
    expected = {"preprocessor_config.json": "each side must be a whole number", "config.json": key}[file]
    with pytest.raises(UserError, match=expected if not isinstance(value, str) else "of the wrong type"):
        load_encoder(str(folder))  # (were the model built first, this would take minutes: it is refused before)


def test_a_model_named_by_a_shared_file_is_never_downloaded(tmp_path, monkeypatch):
    """A head's or a cache's encoder_model is a file's word, not the user's: the hub is asked only for the model the
    user's own params.yaml names (hub.may_download); any other id not on disk is one ConfigError, and the hub is
    never contacted (its probe is replaced by one that records the call)."""
    import yaml

    import pipeline.embed.hub as hub
    from pipeline.tools.predict import encoder_for
    monkeypatch.chdir(tmp_path)
    assert not hub.may_download("someone/else")  # no params.yaml here: nothing is the user's choice
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(committed_params(encoder={"model": "mine/clip"})))
    assert hub.may_download("mine/clip") and not hub.may_download("someone/else")
    asked = []
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: asked.append(a) or True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # and should the check fail, transformers itself stays offline
    with pytest.raises(ConfigError, match="never downloaded"):
        encoder_for({"encoder_model": "someone/else", "preprocess": "fast", "backend": "torch", "quantize": "none"})
    assert asked == []


@pytest.mark.parametrize("recorded", ['[]', '"x"', '{"size": {}, "resample": [1], "do_resize": true}',
                                      '{"size": [1], "resample": 3}', '{"size": {"shortest_edge": 99999}}'])
def test_a_crafted_preprocessing_record_is_one_line_not_a_traceback(recorded):
    """A cache's preprocess_config (a file's word) that is not the mapping an image processor writes is one
    UserError where the frames would be drawn (the Embeddings page, clip-har-inspect --video), never a TypeError."""
    from types import SimpleNamespace

    from pipeline.tools.inspector import frame_spec
    with pytest.raises(UserError):
        frame_spec(SimpleNamespace(attrs={"preprocess_config": recorded, "preprocess": "fast"}))


@pytest.mark.parametrize("how", ["size mismatch", "lying header", "linked to /dev/zero", "linked to /etc/passwd"])
def test_a_damaged_or_lying_model_folder_is_one_line(how, tiny_clip, tmp_path):
    """Weights of the wrong shape, a safetensors header that lies about its size, weights that are a link to a
    device or to another file: one UserError naming the folder, never a traceback (issue 34, item 8)."""
    from safetensors.torch import load_file, save_file

    from pipeline.embed.encoder import load_encoder
    folder = tmp_path / "model"
    shutil.copytree(tiny_clip, folder)
    weights = folder / "model.safetensors"
    if how == "size mismatch":
        tensors = load_file(weights)
        name = next(k for k in tensors if k.endswith("visual_projection.weight"))
        tensors[name] = torch.zeros(tensors[name].shape[0] + 3, tensors[name].shape[1])
        save_file(tensors, weights, metadata={"format": "pt"})
    elif how == "lying header":
        data = bytearray(weights.read_bytes())
        data[:8] = (len(data) * 4).to_bytes(8, "little")  # a header longer than the file
        weights.write_bytes(bytes(data))
    else:
        weights.unlink()
        weights.symlink_to(how.split(" to ")[1])
    with pytest.raises(UserError) as refused:
        load_encoder(str(folder))
    assert "\n" not in str(refused.value)
