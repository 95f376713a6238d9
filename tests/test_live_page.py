"""The Live page: its feed (frames pushed directly, no browser), its ICE settings, AppTest, and headless Chromium
with a fake camera over WebRTC inside a network namespace the test makes (no packet reaches a real interface)."""
from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app.live_feed import HISTORY_S, ICE_SERVERS_ENV, LiveFeed, ice_servers
from pipeline.errors import ConfigError
from pipeline.live.engine import LiveConfig, LiveEngine
from pipeline.paths import HEAD_FILES
from pipeline.tools.predict import load_predictor
from tests.browser import CHROMIUM, OUT, WAIT_MS, need_chromium, streamlit_server, telling
from tests.conftest import APP_RUN_S, committed_params
from tests.netns import network_namespace

ROOT = Path(__file__).resolve().parents[1]
NS_ADDRESS = "10.231.0.1/24"  # private, on a veth pair that exists only inside the test's namespace
FAKE_CAMERA = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
               "--disable-features=WebRtcHideLocalIpsWithMdns"]


@pytest.fixture(scope="module")
def predictor(project):
    return load_predictor(project / HEAD_FILES["linear"], None, device="cpu")


def frames(n: int, fps: float = 10.0, start: float = 0.0):
    """n RGB frames uint8 (48, 64, 3) with their stream times, a grey level changing frame to frame."""
    for i in range(n):
        yield np.full((48, 64, 3), (20 + 7 * i) % 250, np.uint8), start + i / fps


def make(predictor, config=LiveConfig(rate=10.0)):
    return lambda on_answer: LiveEngine(predictor, config, on_answer, name="the camera").start()


def test_the_feed_answers_each_second_of_stream_time_and_keeps_30_s(predictor):
    feed = LiveFeed()
    feed.use("linear", make(predictor))
    answers = []
    for rgb, t in frames(200, fps=5.0):  # 40 s at 5 fps, each embedded before the next (no frame dropped)
        feed.push(rgb, t)
        while not feed.engine.idle():  # the engine queues the answer before it is idle
            time.sleep(0.001)
        while (answer := feed.next_answer(0)) is not None:  # the page reads them as they come
            answers.append(answer)
    assert [round(a.time) for a in answers] == list(range(40))  # one per second of stream time, the first at once
    assert feed.latest is answers[-1] and feed.latest.class_names == predictor.head.classes_
    assert [h.time for h in feed.history] == [a.time for a in answers if a.time >= answers[-1].time - HISTORY_S]
    assert feed.engine_error() is None and feed.error is None and feed.engine.stats.dropped == 0
    feed.stop()
    assert feed.engine is None


def test_a_restart_or_another_head_starts_a_new_engine(predictor):
    feed = LiveFeed()
    feed.use("linear", make(predictor))
    for rgb, t in frames(5):
        feed.push(rgb, t)
    first = feed.engine
    feed.use("linear", make(predictor))  # a rerun of the page with the same head: the same engine
    assert feed.engine is first
    for rgb, t in frames(3, start=0.0):  # the stream's time went back: Stop then Start in the browser
        feed.push(rgb, t)
    assert feed.engine is not first and first._closing
    second = feed.engine
    feed.use("logreg", make(predictor))  # another head: closed now, the next frame makes the new one
    assert feed.engine is None and second._closing
    feed.stop()


def test_a_frame_over_the_size_limits_is_said_and_the_feed_goes_on(predictor):
    from pipeline.decode.video import DecodeLimits

    class Frame:  # what on_frame reads of an av.VideoFrame
        def __init__(self, rgb, t):
            self.rgb, self.time = rgb, t

        def to_ndarray(self, format):
            assert format == "rgb24"
            return self.rgb

    feed = LiveFeed()
    feed.use("linear", make(predictor, LiveConfig(limits=DecodeLimits(max_pixels=64 * 48))))
    big = Frame(np.zeros((480, 640, 3), np.uint8), 0.0)
    assert feed.on_frame(big) is big  # the video goes on being shown
    assert "the camera" in feed.error and "640x480" in feed.error
    small = Frame(np.zeros((48, 64, 3), np.uint8), 1.0)
    feed.on_frame(small)
    assert feed.engine.stats.accepted == 1
    feed.stop()


def test_ice_servers_are_none_unless_set_and_checked_when_set():
    assert ice_servers({}) == [] and ice_servers({ICE_SERVERS_ENV: " "}) == []
    turn = [{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"}]
    import json
    assert ice_servers({ICE_SERVERS_ENV: json.dumps(turn)}) == turn
    for bad, said in [("{", "not JSON"), ('{"urls": "turn:x"}', "JSON list"), ('[{"urls": "http://x"}]', "http"),
                      ('[{"url": "turn:x"}]', "needs \"urls\""), ('[{"urls": "turn:x", "pass": 1}]', "unknown")]:
        with pytest.raises(ConfigError, match=re.escape(said)):
            ice_servers({ICE_SERVERS_ENV: bad})


def plain(markdown: str) -> str:
    """Text the page escaped (app.common.shown_name) as it reads: no backslashes, no invisible word joiners."""
    return markdown.replace("\\", "").replace("\u2060", "")


def test_zero_shot_on_the_live_page(project, tiny_clip, tmp_path, monkeypatch):
    """Zero-shot with the project's params.yaml: the cache's classes offered as actions, edited freely."""
    import shutil

    import streamlit_webrtc
    import yaml
    calls = []
    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", lambda **kwargs: calls.append(kwargs) or SimpleNamespace(
        state=SimpleNamespace(playing=False)))
    shutil.copytree(project / "cache", tmp_path / "cache")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(committed_params(
        data={"root": "data"}, encoder={"model": tiny_clip}, extract={"num_frames": 4})))
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(ROOT / "app" / "live_page.py"), default_timeout=APP_RUN_S).run()
    assert at.radio[0].value == "zeroshot" and not at.exception, at.exception  # no trained head here
    assert at.text_area[0].value == "clapping\nsitting\nwalking"
    at.text_area[0].set_value("waving\njumping\nwaving").run()
    assert "zero-shot" in at.caption[1].value and "classes: waving, jumping" in plain(at.caption[1].value)
    assert "random encoder" in at.warning[0].value  # the tiny CLIP has random weights
    assert not at.error and len(calls) == 2


def test_the_page_without_a_browser(project, monkeypatch):
    """AppTest runs the page with the WebRTC component replaced (AppTest's runtime has no session manager for
    it): the head's line, the start prompt, and what the page asks of the component: no ICE server."""
    import streamlit_webrtc
    calls = []

    def component(**kwargs):
        calls.append(kwargs)
        return SimpleNamespace(state=SimpleNamespace(playing=False))

    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", component)
    monkeypatch.chdir(project)
    monkeypatch.delenv(ICE_SERVERS_ENV, raising=False)
    at = AppTest.from_file(str(ROOT / "app" / "live_page.py"), default_timeout=APP_RUN_S).run()
    assert not at.exception, at.exception
    assert calls[-1]["rtc_configuration"] == {"iceServers": []}  # no STUN/TURN: nothing leaves the machine
    assert calls[-1]["media_stream_constraints"]["audio"] is False and calls[-1]["video_frame_callback"]
    assert at.title[0].value == "Live: what is the person doing?"
    assert [o for o in at.radio[0].options] == ["linear head", "logistic regression", "zero-shot"]
    assert "linear head" in at.caption[1].value and "clapping, sitting, walking" in plain(at.caption[1].value)
    assert re.search(r"\b\d+ frames per answer\b", plain(at.caption[1].value)), at.caption[1].value
    assert "Press START" in at.info[0].value
    at.radio[0].set_value("zeroshot").run()  # the fixture has no params.yaml and no zero-shot head: said so
    assert "Cannot use the zero-shot: run the app from the project folder" in plain(at.error[0].value)
    monkeypatch.setenv(ICE_SERVERS_ENV, '[{"urls": "http://example.org"}]')
    at = AppTest.from_file(str(ROOT / "app" / "live_page.py"), default_timeout=APP_RUN_S).run()
    assert f"{ICE_SERVERS_ENV}: 'http://example.org' is not a stun:" in plain(at.error[0].value)
    assert not at.exception and not calls[1:]  # no camera without the servers asked for


def private_network():
    """The body (and every process it starts) in a new network namespace: `lo` up, and a veth pair holding a
    private address (aioice never offers 127.0.0.1; this kernel may have no `dummy` driver), which exists only
    inside the namespace. Nothing in it reaches the machine's real interfaces. Then back to the old namespace.
    IPv6 is off in it: otherwise the links' IPv6 addresses come and go (duplicate address detection) while the page
    loads, and Chromium drops every request of the page with net::ERR_NETWORK_CHANGED (a blank page, seen on a
    kernel 6.18 machine); a kernel without IPv6 has none to turn off (sysctl -e)."""
    return network_namespace(["sysctl -eqw net.ipv6.conf.all.disable_ipv6=1",  # every link, and those made after
                              "ip link set lo up", "ip link add clip0 type veth peer name clip1",
                              f"ip addr add {NS_ADDRESS} dev clip0", "ip link set clip0 up", "ip link set clip1 up"],
                             ["clip0", "clip1", "lo"], "the WebRTC test isolates the app and the browser in a "
                             "network namespace")


def camera_clip(path: Path, seconds: float = 4.0, fps: int = 15) -> Path:
    """A y4m clip for Chromium's fake camera (it loops it): 320x240, a bright bar moving across a dark field."""
    import av
    with av.open(str(path), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(int(seconds * fps)):
            rgb = np.full((240, 320, 3), 30, np.uint8)
            x = (8 * i) % 300
            rgb[40:200, x:x + 20] = (240, 200, 60)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return path


@pytest.mark.slow
def test_the_live_page_answers_the_browsers_camera(project, tmp_path):
    from playwright.sync_api import expect, sync_playwright
    need_chromium()
    clip = camera_clip(tmp_path / "camera.y4m")
    classes = ["clapping", "sitting", "walking", "not sure"]
    env = {ICE_SERVERS_ENV: "", "HF_TOKEN": "", "TWILIO_ACCOUNT_SID": "", "TWILIO_AUTH_TOKEN": ""}
    with private_network(), streamlit_server(project, **env) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            *FAKE_CAMERA, f"--use-file-for-fake-video-capture={clip}"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(WAIT_MS)
            expect.set_options(timeout=WAIT_MS)
            with telling(page, "live_page"):  # a failure shows the page's text and a screenshot
                page.goto(url + "/live_page")
                expect(page.get_by_text("Press START")).to_be_visible()
                page.frame_locator("iframe[title*=webrtc]").get_by_role("button", name="START").click()
                heading = page.get_by_role("heading", name=re.compile("^(" + "|".join(classes) + ")$"))
                expect(heading).to_be_visible()  # the first answer
                small = page.get_by_text(re.compile(r"^at \d+\.\d s · latency \d+ ms"))
                first = small.inner_text()
                # the answer updates: a later stream time (the fake camera loops its clip)
                expect(small).not_to_have_text(first)
                later = small.inner_text()
                expect(page.get_by_text(re.compile(r"^\d+\.\d% probability$|^best guess .+ at \d"))).to_be_visible()
                expect(page.locator("[data-testid=stVegaLiteChart]")).to_have_count(2)  # top 3, the last 30 s
                expect(small).to_have_text(re.compile(r"^at ([3-9]|\d\d+)\.\d s"))  # a few answers in the strip
                charts = page.locator("[data-testid=stVegaLiteChart]")
                expect(charts.nth(1).get_by_role("img")).to_be_visible()
                OUT.mkdir(exist_ok=True)
                page.screenshot(path=str(OUT / "live_page.png"), full_page=True)  # for people to look at (playing)
                camera = page.frame_locator("iframe[title*=webrtc]")
                camera.get_by_role("button", name="STOP").click()
                expect(camera.get_by_role("button", name="START")).to_be_visible()
                # stopped, the page keeps the last answer and its charts: the top 3, the last 30 s
                expect(charts).to_have_count(2)
                expect(charts.nth(0).get_by_role("img")).to_be_visible()
                expect(charts.nth(1).get_by_role("img")).to_be_visible()
                expect(heading).to_be_visible()
                page.screenshot(path=str(OUT / "live_page_stopped.png"), full_page=True)
        finally:
            browser.close()
    t0, t1 = (float(re.match(r"at (\d+\.\d) s", s).group(1)) for s in (first, later))
    assert t1 > t0, (first, later)
    assert (OUT / "live_page.png").read_bytes()[:4] == (OUT / "live_page_stopped.png").read_bytes()[:4] == b"\x89PNG"
    print(f"screenshots: {OUT / 'live_page.png'}, {OUT / 'live_page_stopped.png'}")
