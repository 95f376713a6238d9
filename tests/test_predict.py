"""The prediction path: parity with the cache, uploads through temporary files, and the batch command."""
import json
import tempfile
from fractions import Fraction

import numpy as np
import pytest

from pipeline.extract.cache import read_cache
from pipeline.errors import ConfigError, HeadError, VideoError
from pipeline.heads.kinds import load_head
from pipeline.paths import HEAD_FILES
from pipeline.tools.cli import predict as main
from pipeline.tools.predict import load_predictor, predict_bytes, predict_video
from pipeline.decode.workers import DecodePool, PoolConfig


@pytest.fixture(scope="module")
def pool():
    with DecodePool(PoolConfig(workers=1)) as pool:  # the caller's pool, closed after the module's tests
        yield pool


@pytest.fixture(scope="module")
def predictor(project, pool):
    return load_predictor(project / HEAD_FILES["linear"], pool, device="cpu")


def test_prediction_embeddings_equal_the_cache(project, predictor):
    cache = read_cache(project / "cache" / "features.h5")
    for i, path in enumerate(cache.paths):
        pred = predict_video(project / "data" / path, predictor)
        np.testing.assert_allclose(pred.embeddings, cache.embeddings[i], rtol=0, atol=1e-6, err_msg=path)
        np.testing.assert_array_equal(pred.clip.indices, cache.frame_indices[i])
        expected = predictor.head.predict_proba(cache.embeddings[i:i + 1])[0]
        np.testing.assert_allclose(pred.probabilities, expected, atol=1e-6)
        assert pred.top_class == cache.class_names[int(expected.argmax())]


def test_prediction_has_per_frame_probabilities_and_reports_steps(project, predictor):
    steps = []
    pred = predict_video(project / "data" / "sitting" / "sitting_0.mp4", predictor, on_step=steps.append)
    assert steps == ["decoding", "encoding", "classifying"]
    assert pred.probabilities.shape == (3,) and pred.frame_probabilities.shape == (4, 3)
    np.testing.assert_allclose(pred.frame_probabilities.sum(1), 1, atol=1e-5)
    assert pred.clip.frames.shape[0] == 4 and 0 <= pred.top_probability <= 1


def test_predict_bytes_removes_its_temporary_file_also_after_an_error(project, predictor, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    data = (project / "data" / "walking" / "walking_1.mp4").read_bytes()
    pred = predict_bytes(data, predictor)
    assert pred.top_class == predict_video(project / "data" / "walking" / "walking_1.mp4", predictor).top_class
    with pytest.raises(VideoError, match="the uploaded file: not a readable video") as err:
        predict_bytes(b"this is text, not a video", predictor)
    assert str(tmp_path) not in str(err.value) and err.value.file == "the uploaded file"
    with pytest.raises(VideoError, match="empty"):
        predict_bytes(b"", predictor)
    assert list(tmp_path.iterdir()) == []


def test_a_head_with_another_encoder_is_refused(project, pool, tmp_path):
    from pipeline.embed.encoder import load_encoder
    from pipeline.embed.tiny_clip import build_tiny_clip
    from pipeline.tools.predict import make_predictor
    other = load_encoder(str(build_tiny_clip(tmp_path / "other", seed=3)), device="cpu")
    with pytest.raises(HeadError, match="encoder_fingerprint"):
        make_predictor(load_head(project / HEAD_FILES["linear"]), other, pool)


def test_batch_command_lines_json_and_errors(project, predictor, pool, capsys, monkeypatch):
    monkeypatch.chdir(project)
    (project / "junk").mkdir(exist_ok=True)
    (project / "junk" / "broken.mp4").write_bytes(b"nope")
    code = main(["data/sitting", "junk/broken.mp4", "data/walking/walking_0.mp4", "--head", "logreg"])
    out, err = capsys.readouterr()
    header, *lines = [line.split("\t") for line in out.splitlines()]
    assert header == ["path", "answer", "class", "probability"]
    assert code == 1 and [line[0] for line in lines] == ["data/sitting/sitting_0.mp4", "data/sitting/sitting_1.mp4",
                                                         "data/sitting/sitting_2.mp4", "data/walking/walking_0.mp4"]
    assert "broken.mp4" in err and "not a readable video" in err
    logreg = load_predictor(HEAD_FILES["logreg"], pool, device="cpu")
    expected = predict_video("data/walking/walking_0.mp4", logreg)
    assert lines[-1][1:3] == [expected.answer, expected.top_class]
    assert float(lines[-1][3]) == pytest.approx(expected.top_probability, abs=1e-3)
    assert main(["data/clapping/clapping_0.mp4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result[0]["path"] == "data/clapping/clapping_0.mp4" and set(result[0]["probabilities"]) == {
        "clapping", "sitting", "walking"}
    assert result[0]["class"] == predict_video("data/clapping/clapping_0.mp4", predictor).top_class


def test_batch_command_without_a_head_says_what_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["x.mp4"]) == 2
    assert "dvc repro" in capsys.readouterr().err


def test_under_the_threshold_the_answer_is_not_sure(project, predictor, capsys, monkeypatch):
    video = project / "data" / "walking" / "walking_0.mp4"
    pred = predict_video(video, predictor)
    pred.not_sure_below = 1.01  # no probability reaches it
    assert pred.answer == "not sure" and pred.top_class in pred.class_names
    pred.not_sure_below = 0.0
    assert pred.answer == pred.top_class
    monkeypatch.chdir(project)
    assert main(["data/walking/walking_0.mp4", "--threshold", "0.9999", "--json"]) == 0  # a random head: never
    result = json.loads(capsys.readouterr().out)[0]
    assert result["answer"] is None and result["sure"] is False and result["class"] == pred.top_class
    for bad in ("1.01", "nan", "-0.5"):  # "never sure", "never anything", "always sure": refused, not obeyed
        with pytest.raises(SystemExit):
            main(["data/walking/walking_0.mp4", "--threshold", bad])
        assert "--threshold must be from 0 to under 1" in capsys.readouterr().err


def test_the_abstention_is_typed_and_a_class_called_not_sure_is_quoted():
    from pipeline.tools.predict import Segment, answer_text
    sure = Segment(0.0, 1.0, ["not sure", "walking"], np.array([0.9, 0.1]), not_sure_below=0.65)
    assert (sure.sure, sure.label, sure.answer) == (True, "not sure", '"not sure"')  # the class, quoted
    unsure = Segment(0.0, 1.0, ["not sure", "walking"], np.array([0.6, 0.4]), not_sure_below=0.65)
    assert (unsure.sure, unsure.label, unsure.answer, unsure.top_class) == (False, None, "not sure", "not sure")
    assert answer_text("Not_Sure ") == '"Not_Sure "' and answer_text("walk\tx") == "walk\\tx"


def test_a_name_that_would_forge_a_row_is_one_escaped_row_and_a_folder_without_a_video_fails(project, tmp_path,
                                                                                             capsys, monkeypatch):
    forged = tmp_path / "in" / "a\tnot sure\t0.999\nb\x1b[2J.mp4"
    forged.parent.mkdir()
    forged.write_bytes((project / "data/walking/walking_0.mp4").read_bytes())
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no video here")
    monkeypatch.chdir(project)
    assert main([str(forged.parent), str(tmp_path / "empty")]) == 1  # the folder without a video fails
    out, err = capsys.readouterr()
    header, *rows = out.splitlines()
    assert len(rows) == 1 and rows[0].split("\t")[0] == str(forged.parent) + "/a\\tnot sure\\t0.999\\nb\\x1b[2J.mp4"
    assert len(rows[0].split("\t")) == 4
    assert f"error: {tmp_path / 'empty'}: no video in this folder" in err
    assert main([str(tmp_path / "empty"), "--json"]) == 1  # nothing to predict: no decode worker started
    assert json.loads(capsys.readouterr().out)[0]["error"].startswith("no video in this folder")


@pytest.mark.parametrize("duration,window,stride", [(10.0, 4.0, 2.0), (9.3, 4.0, 2.0), (3.0, 4.0, 2.0),
                                                    (12.0, 4.0, 4.0), (7.77, 2.5, 1.0)])
def test_timeline_windows_cover_the_video_exactly(duration, window, stride):
    from pipeline.tools.predict import timeline_windows
    windows = timeline_windows(duration, window, stride)
    assert windows[0][0] == 0.0 and windows[-1][1] == pytest.approx(duration)
    assert all(b[0] <= a[1] for a, b in zip(windows, windows[1:]))  # no gap between neighbours
    assert all(a[0] < b[0] for a, b in zip(windows, windows[1:]))  # moving forward
    assert all(e - s == pytest.approx(min(window, duration)) for s, e in windows)
    with pytest.raises(ConfigError, match="stride"):
        timeline_windows(duration, window, window * 2)


def test_segments_are_whole_video_predictions_of_their_windows(project, predictor, capsys, monkeypatch):
    from pipeline.tools.predict import predict_segments
    video = project / "data" / "walking" / "walking_2.mp4"  # 30 frames at 25 fps: 1.2 s
    whole = predict_video(video, predictor)
    one = predict_segments(video, predictor, window=5.0, stride=5.0).segments  # one window: the whole video
    assert [(s.start, s.end) for s in one] == [(0.0, pytest.approx(1.2))]
    np.testing.assert_allclose(one[0].probabilities, whole.probabilities, atol=1e-6)
    done = []
    many = predict_segments(video, predictor, window=0.4, stride=0.2, on_window=lambda d, t: done.append((d, t)))
    assert len(many.segments) == 5 and many.segments[-1].end == pytest.approx(1.2) and done[-1] == (5, 5)
    assert all(s.probabilities.shape == (3,) and s.answer in [*s.class_names, "not sure"] for s in many.segments)
    assert (many.window, many.stride, many.note, many.missing) == (0.4, 0.2, "", 0)
    capped = predict_segments(video, predictor, window=0.04, stride=0.04, max_windows=3)  # 30 asked: widened
    assert len(capped.segments) == 3 and capped.stride == capped.window > 0.04 and "at most 3" in capped.note
    assert capped.segments[-1].end == pytest.approx(1.2)
    monkeypatch.chdir(project)
    assert main(["data/walking/walking_2.mp4", "--segments", "0.4", "0.2"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]  # after the header
    assert len(lines) == 6 and lines[1].startswith("     0.00-   0.40 s\t")
    assert lines[-1].startswith("     0.80-   1.20 s")


def test_the_encoder_is_the_one_the_head_names_backend_and_quantisation_included(tiny_clip, onnx_dir):
    from pipeline.heads.estimators import ZeroShotHead
    from pipeline.tools.predict import encoder_for
    meta = {"encoder_model": tiny_clip, "preprocess": "fast", "backend": "onnxruntime", "quantize": "int8"}
    encoder = encoder_for(meta, device="auto")
    assert (encoder.backend, encoder.quantize, encoder.device.type) == ("onnxruntime", "int8", "cpu")
    torch_features = {**encoder.describe(), "backend": "torch", "quantize": "none", "num_frames": 4,
                      "sampling": "uniform-centers"}
    head = ZeroShotHead().fit(np.eye(2, encoder.dim, dtype=np.float32), ["a", "b"], torch_features)
    with pytest.raises(HeadError, match="backend='torch'"):  # a head trained on torch features refuses this one
        head.check_compatible(encoder.describe(), what="encoder")


def test_any_failure_of_one_file_is_its_error_line_and_the_others_are_predicted(project, capsys, monkeypatch):
    import pipeline.tools.predict

    real = pipeline.tools.predict.predict_video

    def flaky(file, predictor, on_step=None):
        if "sitting_1" in str(file):
            raise MemoryError()
        if "walking_0" in str(file):
            raise RuntimeError("cuDNN exploded")
        return real(file, predictor, on_step)

    monkeypatch.setattr(pipeline.tools.predict, "predict_video", flaky)
    monkeypatch.chdir(project)
    code = main(["data/sitting", "data/walking/walking_0.mp4", "data/clapping/clapping_0.mp4", "--json"])
    out, err = capsys.readouterr()
    result = {r["path"]: r for r in json.loads(out)}  # the JSON is printed whole
    assert code == 1 and len(result) == 5
    assert result["data/sitting/sitting_1.mp4"]["error"] == "data/sitting/sitting_1.mp4: MemoryError"
    assert result["data/walking/walking_0.mp4"]["error"] == (
        "data/walking/walking_0.mp4: RuntimeError: cuDNN exploded")
    assert all("class" in result[p] for p in ("data/sitting/sitting_0.mp4", "data/sitting/sitting_2.mp4",
                                              "data/clapping/clapping_0.mp4"))
    assert [line for line in err.splitlines() if line.startswith("error")] == [
        "error: data/sitting/sitting_1.mp4: MemoryError",
        "error: data/walking/walking_0.mp4: RuntimeError: cuDNN exploded"]


def test_too_many_windows_widen_the_stride_and_no_timeline_keeps_the_whole_video_answer(project, capsys,
                                                                                     monkeypatch):
    import pipeline.tools.predict
    monkeypatch.chdir(project)
    video = "data/walking/walking_2.mp4"
    real = pipeline.tools.predict.predict_segments
    # the widening itself: test_segments_are_whole_video_predictions_of_their_windows; here, what the command says
    monkeypatch.setattr(pipeline.tools.predict, "predict_segments", lambda *a, **k: real(*a, **{**k, "max_windows": 2}))
    assert main([video, "--segments", "0.4", "0.2", "--json"]) == 0
    out, err = capsys.readouterr()
    [result] = json.loads(out)
    assert len(result["segments"]) == 2 and "at most 2 windows" in result["segments_note"]
    assert f"note: {video}: timeline: windows of 0.6 s every 0.6 s instead of 0.4 s every 0.2 s" in err

    def no_timeline(file, *args, **kwargs):
        raise VideoError(file, "none of the 3 timeline windows could be read")

    monkeypatch.setattr(pipeline.tools.predict, "predict_segments", no_timeline)
    assert main([video, "--segments", "4", "2"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[1].startswith(f"{video}\t") and len(out.splitlines()) == 2  # the answer, no windows
    assert f"error: {video}: timeline: none of the 3 timeline windows could be read" in err


@pytest.mark.parametrize("duration,window,stride", [(402.5, 4.0, 2.0), (59040.0, 4.0, 2.0), (10.0, 4.0, 2.0)])
def test_the_timeline_plan_caps_the_windows_and_still_covers_the_video(duration, window, stride):
    from pipeline.tools.predict import timeline_plan, timeline_windows
    used_window, used_stride = timeline_plan(duration, window, stride, max_windows=200)
    windows = timeline_windows(duration, used_window, used_stride)
    assert len(windows) <= 200 and windows[0][0] == 0.0 and windows[-1][1] == pytest.approx(duration)
    assert all(b[0] <= a[1] + 1e-6 for a, b in zip(windows, windows[1:]))  # no gap
    assert (used_window, used_stride) == (window, stride) if duration == 10.0 else len(windows) == 200


def test_the_timeline_goes_by_the_frames_timestamps_not_frame_count_over_fps(predictor, tmp_path):
    """A variable-frame-rate clip: 50 frames in its first 2 s, then one frame every 0.5 s up to 11 s (68 frames;
    68 / 25 fps would say 2.7 s)."""
    import av

    from pipeline.tools.predict import predict_segments
    times = [i / 25 for i in range(50)] + [2.0 + 0.5 * k for k in range(19)]
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 + 3 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    timeline = predict_segments(path, predictor, window=4.0, stride=2.0)
    assert timeline.segments[-1].end == pytest.approx(11.0, abs=0.5) and len(timeline.segments) == 5


def test_predictions_use_the_batch_size_stage_one_used(project, tiny_clip, pool, tmp_path):
    from pipeline.embed.encoder import AUTO_BATCH_SIZE
    from pipeline.extract.runner import ExtractConfig, extract_features
    from pipeline.heads.estimators import mean_pool
    from pipeline.heads.logreg import LogRegHead
    from pipeline.tools.predict import stage_one_batch_size

    cache_file = tmp_path / "features.h5"  # 8 frames per pass: two 4-frame videos share each pass
    extract_features(ExtractConfig(root=str(project / "data"), cache_path=str(cache_file), model=tiny_clip,
                                   num_frames=4, batch_size=8, device="cpu", workers=0), progress=False)
    cache = read_cache(cache_file)
    head = LogRegHead().fit(mean_pool(cache.embeddings), cache.labels, cache.class_names, cache.attrs)
    meta = head.meta_.features
    assert meta["batch_size"] == cache.attrs["batch_size"] == 8
    head.save(tmp_path / "h.pt")
    predictor = load_predictor(tmp_path / "h.pt", pool, device="cpu")
    assert predictor.batch_size == 8
    for i, path in enumerate(cache.paths):
        np.testing.assert_array_equal(predict_video(project / "data" / path, predictor).embeddings,
                                      cache.embeddings[i], err_msg=path)
    # made on another device type, or not recorded: batch_size auto on this device for the head's 4 frames
    assert stage_one_batch_size({**meta, "device_type": "cuda"}, predictor.encoder) == 4
    assert stage_one_batch_size({k: v for k, v in meta.items() if k != "batch_size"}, predictor.encoder) == 4
    assert stage_one_batch_size({"num_frames": 16}, predictor.encoder) == AUTO_BATCH_SIZE["cpu"]


def test_stderr_is_quiet_but_for_the_random_encoder_note(project, capsys, monkeypatch):
    """No weight-loading bar, no library chatter: stderr holds the random encoder's note (the project's tiny CLIP
    is random) and the JSON carries it for each video."""
    from pipeline.extract.cache import RANDOM_ENCODER_NOTE
    monkeypatch.chdir(project)
    assert main(["data/walking/walking_0.mp4"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[1:] == [f"note: {RANDOM_ENCODER_NOTE}"] and out.startswith("path\tanswer\t")
    assert err.startswith("loading the encoder ")  # what the first seconds are spent on
    assert main(["data/walking/walking_0.mp4", "--json", "--head", "logreg"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["warning"] == RANDOM_ENCODER_NOTE and err.splitlines()[1:] == [
        f"note: {RANDOM_ENCODER_NOTE}"]


def test_a_window_that_fails_for_another_reason_than_no_frames_ends_the_timeline_at_once():
    """Only an empty window (EmptySegment) is a gap; a timeout or a crash in one window is the video's, and ends the
    timeline there (the whole-video answer stands: the callers keep it) instead of costing every other window."""
    from types import SimpleNamespace

    from pipeline.errors import EmptySegment
    from pipeline.tools.predict import predict_segments

    class Reader:
        head, encoder, batch_size = None, None, 16  # never reached: no window decodes

        def __init__(self, error):
            self.error, self.reads = error, 0

        def read(self, file, segment=None, num_frames=None):
            if segment is None:
                return SimpleNamespace(duration=20.0)
            self.reads += 1
            raise self.error

    stuck = Reader(VideoError("up.mp4", "timed out after 60 s"))
    with pytest.raises(VideoError, match="timed out after 60 s"):
        predict_segments("up.mp4", stuck, 4.0, 2.0)
    assert stuck.reads == 1
    sparse = Reader(EmptySegment("up.mp4", "the segment holds no frame"))
    with pytest.raises(VideoError, match="none of the 9 timeline windows could be read"):
        predict_segments("up.mp4", sparse, 4.0, 2.0)
    assert sparse.reads == 9
