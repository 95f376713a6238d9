"""The Streamlit app, headless through AppTest: no head yet, upload and predict, a bad upload."""
import dataclasses
import json
import re
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest


from app.common import JOINER
from pipeline.extract.cache import RANDOM_ENCODER_NOTE
from pipeline.errors import ConfigError
from pipeline.heads.calibration import Calibration
from pipeline.paths import HEAD_FILES
from pipeline.tools.predict import load_predictor, predict_video
from pipeline.decode.workers import DecodePool, PoolConfig
from tests.conftest import APP, APP_RUN_S, committed_params, write_video



@pytest.fixture(scope="module")
def pool():
    with DecodePool(PoolConfig(workers=1)) as pool:
        yield pool


def plain(markdown: str) -> str:
    """Markdown as a page shows it, for text the app escaped (app.common.shown_name): its backslashes and invisible
    word joiners taken off."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace(JOINER, "")


def run_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=APP_RUN_S)
    at.run()
    assert not at.exception, at.exception
    return at


def predict_upload(at: AppTest, video: bytes) -> AppTest:
    """Upload `video` as clip.mp4 and press Predict: the app after its answer."""
    at.get("file_uploader")[0].upload("clip.mp4", video, "video/mp4")
    at.run()
    return at.button[0].click().run()


def test_without_a_trained_head_the_page_says_which_command_to_run(tmp_path, monkeypatch):
    import yaml
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(committed_params(  # a project with no head, no videos yet
        data={"root": "data"}, encoder={"model": "models/tiny-clip"}, extract={"num_frames": 4})))
    monkeypatch.chdir(tmp_path)
    at = run_app()
    assert "No trained head yet" in at.info[0].value and "dvc repro" in at.info[0].value
    assert str(tmp_path) in at.info[0].value  # the folder it looked in
    assert not at.warning and len(at.get("file_uploader")) == 0


def test_launched_from_another_folder_the_app_uses_its_own_project_and_says_so(tmp_path, monkeypatch):
    import shutil

    import yaml
    # the app's own project is a copy made here (params.yaml as committed, no head): never the checkout's working
    # tree, whose heads, cache and params.yaml are the user's
    project = tmp_path / "project"
    shutil.copytree(Path(APP).parent, project / "app", ignore=shutil.ignore_patterns("__pycache__"))
    (project / "params.yaml").write_text(yaml.safe_dump(committed_params(encoder={"model": "models/tiny-clip"})))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # not a project: no params.yaml
    app = str(project / "app" / "streamlit_app.py")
    at = AppTest.from_file(app, default_timeout=APP_RUN_S).run()
    assert not at.exception, at.exception
    assert Path.cwd() == project  # heads and params.yaml are now found (monkeypatch restores the folder)
    assert str(tmp_path / "elsewhere") in at.warning[0].value
    assert f"using this app's project, `{project}`" in at.warning[0].value
    again = AppTest.from_file(app, default_timeout=APP_RUN_S).run()  # another session: it starts in the project already
    assert [w.value for w in again.warning][:1] == [at.warning[0].value]


def test_the_uploader_takes_every_extension_stage_one_reads(project, monkeypatch):
    from pipeline.data.discover import VIDEO_EXTENSIONS
    monkeypatch.chdir(project)
    at = run_app()
    assert set(VIDEO_EXTENSIONS) <= set(at.get("file_uploader")[0].proto.type)  # Streamlit adds .mpeg and such


def test_upload_and_predict_shows_the_same_answer_as_pipeline_predict(project, pool, monkeypatch, tmp_path):
    monkeypatch.chdir(project)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    at = run_app()
    assert [r.value for r in at.radio] == ["linear"]  # both heads found; the linear one is chosen first
    assert [w.value for w in at.warning] == [RANDOM_ENCODER_NOTE]  # the project's tiny CLIP is random
    assert "uncalibrated (T = 1)" in [plain(c.value) for c in at.caption]  # the fixture's heads were not calibrated
    assert "up to " in at.get("file_uploader")[0].label and " MB)" in at.get("file_uploader")[0].label
    video = project / "data" / "walking" / "walking_2.mp4"
    at.get("file_uploader")[0].upload("../../etc/passwd.mp4", video.read_bytes(), "video/mp4")  # name is never used
    at.run()
    at.button[0].click().run()
    assert not at.exception, at.exception
    expected = predict_video(video, load_predictor(HEAD_FILES["linear"], pool, device="cpu"))
    headings = [m.value for m in at.markdown]
    if expected.answer == expected.top_class:  # sure, under the cut-off relative to chance (the same either way)
        assert f"## {expected.top_class.replace('_', ' ')}" in headings
        assert f"**{expected.top_probability:.1%}** probability" in headings
    else:
        assert "## not sure" in headings and any(f"at {expected.top_probability:.1%}" in h for h in headings)
    assert sum(len(col.get("image")) for col in at.columns) == 4  # one thumbnail per sampled frame
    # each frame's own guess may differ from the video's answer: the caption under them says why
    assert any("the answer above reads all 4 frames together" in c.value for c in at.caption)
    # the upload's whole name is shown (the uploader shortens it), literally: it is never a path
    assert any(plain(c.value).startswith("**../../etc/passwd.mp4** · ") for c in at.caption)
    assert list(tmp_path.iterdir()) == []  # the temporary upload is gone
    # the fixture's clips are MPEG-4 part 2 (OpenCV's mp4v), which Chromium does not play: an H.264 preview
    assert any("cannot play this video's codec (mpeg4)" in c.value for c in at.caption)


def test_switching_to_logistic_regression(project, monkeypatch):
    monkeypatch.chdir(project)
    at = run_app()
    at.radio[0].set_value("logreg").run()
    assert not at.exception
    assert "logistic regression" in at.caption[0].value


def test_after_a_head_switch_the_answer_stays_and_says_whose_it_is(project, monkeypatch):
    monkeypatch.chdir(project)
    at = run_app()
    predict_upload(at, (project / "data/walking/walking_0.mp4").read_bytes())
    answer = [m.value for m in at.markdown if m.value.startswith("## ")]
    assert len(answer) == 1 and not at.info
    at.radio[0].set_value("logreg").run()
    assert not at.exception, at.exception
    assert [m.value for m in at.markdown if m.value.startswith("## ")] == answer  # the linear head's, kept
    assert "linear head's: press Predict for the logistic regression's" in at.info[0].value
    at.button[0].click().run()
    assert not at.info and len([m for m in at.markdown if m.value.startswith("## ")]) == 1


def test_bars_are_sorted_by_probability_with_full_names_and_a_percent_axis(project, monkeypatch):
    monkeypatch.chdir(project)
    at = run_app()
    predict_upload(at, (project / "data/walking/walking_0.mp4").read_bytes())
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    assert spec["encoding"]["y"]["sort"] == "-x" and spec["encoding"]["y"]["axis"]["labelLimit"] == 0
    assert spec["encoding"]["x"]["axis"]["format"] == "%"


@pytest.mark.parametrize("content", [b"", b"definitely not a video" * 50])
def test_a_bad_upload_is_an_error_and_the_app_keeps_working(project, monkeypatch, tmp_path, content):
    monkeypatch.chdir(project)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    at = run_app()
    at.get("file_uploader")[0].upload("holiday.mp4", content, "video/mp4")
    at.run()
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert at.error and plain(at.error[0].value).startswith("holiday.mp4: ")
    assert list(tmp_path.iterdir()) == []
    good = (project / "data" / "sitting" / "sitting_0.mp4").read_bytes()
    at.get("file_uploader")[0].upload("ok.mp4", good, "video/mp4")
    at.run()
    at.button[0].click().run()
    assert not at.error and any(m.value.startswith("## ") for m in at.markdown)


def test_zero_shot_works_before_any_training_with_the_actions_typed(project, tiny_clip, tmp_path, monkeypatch):
    import shutil

    import yaml
    shutil.copytree(project / "data", tmp_path / "data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(committed_params(
        data={"root": "data"}, encoder={"model": tiny_clip}, extract={"num_frames": 4})))
    monkeypatch.chdir(tmp_path)  # a project with videos and params, but no cache and no head yet
    at = run_app()
    assert "No trained head yet" in at.info[0].value and [r.value for r in at.radio] == ["zeroshot"]
    assert at.text_area[0].value == "clapping\nsitting\nwalking"  # the class folders under data.root
    video = (tmp_path / "data" / "sitting" / "sitting_1.mp4").read_bytes()
    predict_upload(at, video)
    assert not at.exception, at.exception
    shown = [m.value for m in at.markdown]  # an answer, or (a random encoder's flat scores) "not sure" and its guess
    assert any(m in ("## clapping", "## sitting", "## walking") for m in shown) or (
        "## not sure" in shown and any(re.match(r"best guess \*\*(clapping|sitting|walking)\*\* at", m) for m in shown)), shown
    at.text_area[0].set_value("jumping jacks\nplaying the violin\n\njumping jacks").run()
    at.button[0].click().run()
    assert not at.exception and "classes: jumping jacks, playing the violin" in at.caption[0].value
    assert any(m.value in ("## jumping jacks", "## playing the violin") for m in at.markdown)
    at.text_area[0].set_value("walking, jumping,talking\ncrying").run()  # typed on one line, as people do
    assert not at.exception and "classes: walking, jumping, talking, crying" in plain(at.caption[0].value)
    at.text_area[0].set_value("walking").run()  # one action would always be the answer
    assert [plain(e.value) for e in at.error] == [
        "Cannot use the zero-shot: type at least two actions, one per line or separated by commas"]


def test_typed_actions_split_on_commas_and_lines_and_need_two():
    from app.common import typed_actions
    assert typed_actions("walking, jumping, talking, crying") == ["walking", "jumping", "talking", "crying"]
    assert typed_actions(" a\n\nb ,a,\n c ") == ["a", "b", "c"]
    for text in ("", "walking", " walking ,\n walking"):
        with pytest.raises(ConfigError, match="at least two actions"):
            typed_actions(text)


def test_zero_shot_over_other_actions_does_not_claim_their_calibration():
    from app.common import calibration_caption
    calibration = Calibration(temperature=2.0, train_videos=0, val_videos=40, val_min_per_class=5)
    assert "calibrated on 40" in calibration_caption(calibration, ["a", "b"], ["b", "a"])  # the project's classes
    other = calibration_caption(calibration, ["jumping", "crying"], ["a", "b"])
    assert "calibrated on" not in other and "never on videos of these actions" in other


def test_an_unsure_head_says_not_sure(project, tmp_path, monkeypatch):
    import shutil

    import torch
    shutil.copytree(project, tmp_path / "p")
    saved = torch.load(tmp_path / "p" / HEAD_FILES["linear"], weights_only=True)
    saved["meta"]["calibration"] = asdict(Calibration(1e6, not_sure_below_chance_to_certain=0.99))  # ~uniform
    torch.save(saved, tmp_path / "p" / HEAD_FILES["linear"])
    monkeypatch.chdir(tmp_path / "p")
    at = run_app()
    at.toggle[0].set_value(True).run()
    predict_upload(at, (project / "data/walking/walking_0.mp4").read_bytes())
    assert not at.exception and "## not sure" in [m.value for m in at.markdown]
    assert any(m.value.startswith("best guess **") for m in at.markdown)
    # an all-"not sure" timeline: grey bars (as in its legend), each run named by its best guess with a ?
    bars, words = timeline_layers(at)
    assert (bars["answer"] == "not sure").all() and words["text"].str.endswith("?").all()
    assert any("not sure: grey, with the best guess and a ?" in c.value for c in at.caption)


def timeline_layers(at: AppTest):
    """The timeline chart's bars and labels (DataFrames), its colour scale checked on the way: one scale for bars
    and legend, each answer in its class's colour (as on the Embeddings page), "not sure" grey."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    from app.predict_charts import UNSURE_GREY
    from pipeline.tools.inspector import class_colours
    chart = at.get("vega_lite_chart")[1].proto
    spec = json.loads(chart.spec)
    colour = spec["layer"][0]["encoding"]["color"]
    assert colour["field"] == "answer" and "color" not in spec["layer"][1]["encoding"]  # the labels: plain text
    palette = dict(zip(["clapping", "sitting", "walking", "not sure"], [*class_colours(3), UNSURE_GREY]))
    assert dict(zip(colour["scale"]["domain"], colour["scale"]["range"])) == {
        a: palette[a] for a in colour["scale"]["domain"]}
    data = {d.name: convert_arrow_bytes_to_pandas_df(d.data.data) for d in chart.datasets}
    bars, words = (data[layer["data"]["name"]] for layer in spec["layer"])
    assert set(bars["answer"]) == set(colour["scale"]["domain"])  # the legend names what the bars show, only that
    return bars, words


def test_timeline_for_an_upload(project, monkeypatch, tmp_path):
    """A 9 s video: windows of 4 s every 2 s (the last one shifted to end at 9 s) drawn as one time line, each
    window over its own span: no two overlap, no gap, 0 to the end; the toggle outlives a new upload."""
    monkeypatch.chdir(project)
    at = run_app()
    at.toggle[0].set_value(True).run()
    predict_upload(at, write_video(tmp_path / "long.mp4", 25 * 9, seed=3).read_bytes())
    assert not at.exception, at.exception
    assert "#### Timeline" in [m.value for m in at.markdown] and len(at.get("vega_lite_chart")) == 2  # bars, timeline
    bars, words = timeline_layers(at)
    assert len(bars) == 4 and bars["window"].tolist() == ["0.0-4.0 s", "2.0-6.0 s", "4.0-8.0 s", "5.0-9.0 s"]
    spans = list(zip(bars["from"], bars["to"]))
    assert spans[0][0] == 0 and abs(spans[-1][1] - 9) < 0.1 and all(a < b for a, b in spans)
    assert all(end == start for (_, end), (start, _) in zip(spans, spans[1:]))  # touching: no overlap, no gap
    assert len(words) >= 1 and words["middle"].between(0, 9).all()
    at.get("file_uploader")[0].clear().run()  # another upload: the toggle keeps its state
    at.get("file_uploader")[0].upload("b.mp4", (project / "data/walking/walking_0.mp4").read_bytes(), "video/mp4")
    at.run()
    assert at.toggle[0].value is True


def test_timeline_spans_tile_the_video_and_leave_unread_windows_as_gaps():
    from app.predict_charts import answer_runs, timeline_spans
    from pipeline.tools.predict import Segment

    def seg(start, end):
        return Segment(start, end, ["a", "b"], np.array([0.9, 0.1], np.float32), 0.6)
    # windows of 4 s every 2 s over 11 s; the one at 4-8 s could not be read
    spans = timeline_spans([seg(0, 4), seg(2, 6), seg(6, 10), seg(7, 11)], stride=2.0)
    assert spans == [(0, 3.0), (3.0, 5.0), (7.0, 8.5), (8.5, 11)]  # a gap where the unread window was nearest
    assert timeline_spans([seg(0, 1.2)], stride=2.0) == [(0, 1.2)]  # a short video: one window, the whole video
    answers = ["a", "a", "a long answer", "a"]
    table = pd.DataFrame({"from": [0, 3, 5, 5.2], "to": [3, 5, 5.2, 11], "answer": answers, "best guess": answers})
    runs = answer_runs(table, 11)
    # a label per run of one answer, in its middle, where the run is wide enough for it on a narrow chart (not the
    # 0.2 s one: its words would spill over its neighbours)
    assert runs["text"].tolist() == ["a", "a"] and runs["middle"].tolist() == [2.5, 8.1]


def test_zero_shot_mode_takes_actions_and_calibration_from_the_trained_zero_shot_head(project, tiny_clip, pool,
                                                                                       tmp_path, monkeypatch):
    import shutil

    from pipeline.heads.zeroshot import text_embeddings, zeroshot_head
    shutil.copytree(project, tmp_path / "p")
    encoder = load_predictor(project / HEAD_FILES["linear"], pool, device="cpu").encoder
    actions = ["not sure", "jumping"]  # a class called "not sure" is told apart from the abstention
    head = zeroshot_head(text_embeddings(tiny_clip, actions), actions,
                         {**encoder.describe(), "num_frames": 4, "sampling": "uniform-centers"})
    head.use_calibration(Calibration(temperature=50.0, not_sure_below_chance_to_certain=0.99))
    head.save(tmp_path / "p" / HEAD_FILES["zeroshot"])
    monkeypatch.chdir(tmp_path / "p")
    at = run_app()
    at.radio[0].set_value("zeroshot").run()
    assert at.text_area[0].value == "not sure\njumping" and 'classes: "not sure", jumping' in plain(at.caption[0].value)
    assert [w.value for w in at.warning] == [RANDOM_ENCODER_NOTE]  # the caveat of every head, zero-shot's too
    predict_upload(at, (project / "data/walking/walking_0.mp4").read_bytes())
    assert not at.exception and "## not sure" in [m.value for m in at.markdown]  # its threshold came along
    guess = [plain(m.value) for m in at.markdown if m.value.startswith("best guess")]
    assert len(guess) == 1 and guess[0].startswith(('best guess **"not sure"** at', "best guess **jumping** at"))


def test_an_upload_the_browser_cannot_play_gets_an_h264_preview(project, monkeypatch):
    import io

    import av
    import numpy as np
    hevc = io.BytesIO()
    with av.open(hevc, "w", format="mp4") as out:  # 1 s of HEVC, which Chromium has no decoder for
        stream = out.add_stream("libx265", rate=25, options={"x265-params": "log-level=none"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(25):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 9 * i, np.uint8), format="rgb24")))
        out.mux(stream.encode())
    monkeypatch.chdir(project)
    at = run_app()
    at.get("file_uploader")[0].upload("phone.mov", hevc.getvalue(), "video/quicktime")
    at.run()
    assert not at.exception, at.exception
    [note] = [c.value for c in at.caption if "cannot play" in c.value]
    assert note.startswith("Your browser cannot play this video's codec (hevc): the preview is its first 1.0 s")
    assert len(at.get("video")) == 1 and not at.error


def gated_decode(file, cfg, hash_bytes=False, gate="", digest=""):
    """The app's decode job, except that reading the frames of the upload whose SHA-256 is `digest` first waits
    until the test opens and closes the FIFO `gate`: the worker is held by an event, not a time."""
    import hashlib

    from pipeline.decode.preview import decode_or_preview
    from pipeline.decode.workers import ReadConfig
    if isinstance(cfg, ReadConfig) and hashlib.sha256(Path(file).read_bytes()).hexdigest() == digest:
        with open(gate, "rb") as f:
            f.read()
    return decode_or_preview(file, cfg, hash_bytes)


def test_a_session_never_waits_behind_another_sessions_upload(project, tmp_path, monkeypatch):
    import functools
    import hashlib
    import os
    import threading

    import app.common
    slow = (project / "data/walking/walking_0.mp4").read_bytes()
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    decode = functools.partial(gated_decode, gate=str(gate), digest=hashlib.sha256(slow).hexdigest())
    monkeypatch.chdir(project)
    with DecodePool(PoolConfig(workers=2), decode=decode) as pool:
        shared = app.common.SharedWorkers(pool, 2)
        monkeypatch.setattr(app.common, "cached_pool", lambda *args: shared)
        first = run_app()
        first.get("file_uploader")[0].upload("slow.mp4", slow, "video/mp4")
        first.run()

        def press_predict():
            try:
                first.button[0].click().run()
            finally:  # had it never reached the gate, this lets the test's open below return: no hang
                os.close(os.open(gate, os.O_RDONLY | os.O_NONBLOCK))

        waiting = threading.Thread(target=press_predict)
        waiting.start()
        with open(gate, "wb"):  # returns once the first session's decode holds its worker at the gate
            second = predict_upload(run_app(), (project / "data/sitting/sitting_0.mp4").read_bytes())
            assert not second.exception and any(m.value.startswith("## ") for m in second.markdown)
            assert waiting.is_alive()  # the first upload is still being decoded
            with shared.take():  # now every worker is taken: a third session hears so at once
                third = predict_upload(run_app(), (project / "data/sitting/sitting_1.mp4").read_bytes())
            assert [w.value for w in third.warning][-1].startswith("the app is busy: its 2 decode workers")
        waiting.join()  # the gate closed: the first session answers too
        assert not first.exception and any(m.value.startswith("## ") for m in first.markdown)


MARKDOWN = "![pixel](http://203.0.113.7/pixel.png) [a link](http://203.0.113.7/) www.example.com :red[x] $x$"


def test_a_heads_strings_are_shown_literally(project, monkeypatch):
    """A head whose encoder, frame count and class names hold Markdown (an image and a link to an address the file
    chose, an autolink, Streamlit's colour and LaTeX) has them shown as text on the Predict page: every Markdown
    character escaped, the words as written."""
    from app import common
    from pipeline.heads.kinds import load_head

    def crafted(path):
        head, names = load_head(path), [MARKDOWN, *load_head(path).classes_[1:]]
        head.meta_ = dataclasses.replace(head.meta_, class_names=names, features={
            **head.meta_.features, "encoder_model": MARKDOWN, "num_frames": MARKDOWN})
        return head
    monkeypatch.setattr(common, "load_head", crafted)
    common.cached_head.clear()
    monkeypatch.chdir(project)
    try:
        at = run_app()
    finally:
        common.cached_head.clear()  # the crafted head stays in this test, failed or not
    caption = at.caption[0].value
    assert plain(caption).count(MARKDOWN) == 3 and "](" not in caption and "![" not in caption
    assert "www.example" not in caption and ":red[" not in caption and "$x$" not in caption


def test_the_heads_caption_says_how_its_cache_sampled():
    """The Predict and Live pages' caption: "16 frames per video" (per answer on Live) for a fixed count, the rate
    and its bound for a cache sampled by frame rate, and the recorded count for a sampling this code does not make
    (predict says why)."""
    from app.common import sampling_text

    assert sampling_text({"num_frames": 16, "sampling": "uniform-centers"}) == "16 frames per video"
    assert sampling_text({"num_frames": 16, "sampling": "uniform-centers"}, "answer") == "16 frames per answer"
    assert sampling_text({"num_frames": 64, "sampling": "fps-centers:1"}) == "1 frame a second, at most 64"
    assert sampling_text({"num_frames": 64, "sampling": "fps-centers:1"}, "answer") == "1 frame a second, at most 64"
    assert sampling_text({"num_frames": 32, "sampling": "fps-centers:2.5"}) == "2.5 frames a second, at most 32"
    assert sampling_text({"num_frames": 8, "sampling": "made-up"}) == "8 frames per video"
    assert sampling_text({"num_frames": 8, "sampling": "made-up"}, "answer") == "8 frames per answer"
