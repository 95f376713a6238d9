"""Real-browser tests: headless Chromium (Debian's package, driven by Playwright) against `streamlit run`."""
import functools
import http.server
import os
import shutil
import threading
import urllib.parse

import pytest

from pipeline.data.demo import DemoConfig, make_demo_dataset
from pipeline.extract.cache import read_cache, write_cache
from pipeline.paths import HEAD_FILES
from pipeline.tools.predict import load_predictor, predict_video
from pipeline.decode.workers import DecodePool, PoolConfig
from tests.browser import (ROOT, axis_labels, chromium_page, cut_texts, need_chromium, overlapping, screenshot,
                           settled, streamlit_server, too_wide)
from tests.conftest import write_video

pytestmark = pytest.mark.slow  # a browser and `streamlit run`: deselect with -m "not slow"
need_chromium(module=True)


SHOTS = ROOT / "tests" / "out" / "browser"  # the pages as a person sees them (git ignores tests/out/)
LONG_NAME = "a_rather_long_file_name_as_phones_write_them_2026-12-07_at_the_park_walking_and_then_sitting.mp4"
ELSEWHERE = "203.0.113.7"  # an address a crafted artifact names (TEST-NET-3: the route below stops any request)
MARKDOWN = (f"![pixel](http://{ELSEWHERE}/pixel.png) [a link](http://{ELSEWHERE}/) <img src=//{ELSEWHERE}/x.png> "
            "www.example.com")


@pytest.fixture
def server(project, tmp_path):
    """The app on a copy of the project whose cache holds Markdown in its attributes and a class name (the Predict
    page does not read the cache; the Embeddings page shows them)."""
    shutil.copytree(project, tmp_path / "p")
    cache = read_cache(tmp_path / "p" / "cache" / "features.h5")
    cache.attrs.update({k: MARKDOWN for k in ("encoder_model", "encoder_fingerprint", "sampling", "preprocess")})
    cache.class_names[0] = MARKDOWN
    write_cache(tmp_path / "p" / "cache" / "features.h5", cache)
    with streamlit_server(tmp_path / "p") as url:
        yield url


def test_upload_predict_in_a_real_browser(server, project, tmp_path):
    """A 9 s clip with a long name, with the timeline: the answer, the frames, the timeline, and every page looked at
    as a person would (nothing over anything, nothing cut, nothing wider than the page; screenshots in SHOTS)."""
    from playwright.sync_api import expect

    video = write_video(tmp_path / LONG_NAME, 25 * 9, seed=3)  # 4 windows of 4 s every 2 s, the last one shifted
    with DecodePool(PoolConfig(workers=1)) as pool:
        expected = predict_video(video, load_predictor(project / HEAD_FILES["linear"], pool, device="cpu"))
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium_page() as page:
        page.goto(server)
        expect(page.get_by_text("What is the person doing?")).to_be_visible()
        expect(page.get_by_text("up to 256 MB")).to_be_visible()  # app/.streamlit/config.toml's, wherever it starts
        # the upload first, on a page whose script has ended: a file chosen while the rerun of a click was starting
        # was lost once in CI (the uploader showed no file for 120 s); the switch's rerun then keeps the upload
        settled(page)
        page.locator("input[type=file]").set_input_files(str(video))
        expect(page.get_by_text(LONG_NAME, exact=True)).to_be_visible()  # whole, though the uploader shortens it
        page.get_by_text("Also a timeline").click()
        expect(page.get_by_role("switch", name="Also a timeline")).to_be_checked()
        settled(page)
        page.get_by_role("button", name="Predict").click()
        answer = expected.top_class.replace("_", " ") if expected.sure else "not sure"
        expect(page.get_by_role("heading", name=answer, exact=True)).to_be_visible()
        expect(page.get_by_text(f"{expected.top_probability:.1%}").first).to_be_visible()
        expect(page.get_by_text("Sampled frames")).to_be_visible()
        expect(page.locator("[data-testid=stImage]")).to_have_count(4)  # one per sampled frame
        expect(page.get_by_text("the answer above reads all 4 frames together")).to_be_visible()
        expect(page.get_by_text("Timeline", exact=True)).to_be_visible()
        expect(page.locator("[data-testid=stVegaLiteChart]")).to_have_count(2)  # the probabilities, the timeline
        # the fixture's clips are MPEG-4 part 2, which Chromium does not play: the player shows an H.264 preview
        expect(page.get_by_text("cannot play this video's codec (mpeg4)")).to_be_visible()
        assert playing(page) == [True]
        screenshot(page, SHOTS / "predict.png")
        assert (too_wide(page), overlapping(page), cut_texts(page)) == ([], [], [])
        page.locator("input[type=file]").set_input_files(str(hevc_clip(tmp_path / "phone.mp4")))  # HEVC, as phones
        expect(page.get_by_text("cannot play this video's codec (hevc)")).to_be_visible()
        assert playing(page) == [True]
        screenshot(page, SHOTS / "hevc.png")
        markdown_stays_text(page, server)
        looks_right(page)
        other_pages_look_right(page)
    print(f"screenshots in {SHOTS}")


def looks_right(page) -> None:
    """The Embeddings page as a person sees it: nothing wider than the page, nothing drawn over anything, every class
    named on both axes of the heat map (its third chart), and no text cut short but the fixture's 150-character
    class name on the heat map's axes (whole on hover)."""
    screenshot(page, SHOTS / "embeddings.png")
    assert (too_wide(page), overlapping(page)) == ([], [])
    assert [len(names) for names in axis_labels(page, 2)] == [3, 3]
    assert {t[:8] for t in cut_texts(page)} <= {MARKDOWN[:8]}


def other_pages_look_right(page) -> None:
    """Every other page of the sidebar (one added later too) looked at likewise, a screenshot each; the Live page
    has its own browser test, with a camera (tests/test_live_page.py)."""
    from playwright.sync_api import expect

    links = page.evaluate("[...document.querySelectorAll('[data-testid=stSidebarNav] a')].map(a => a.href)")
    seen = {"", "live_page", "embeddings_page"}  # Predict (the app's root), Live, Embeddings
    names = [urllib.parse.urlparse(link).path.strip("/") for link in links]
    assert seen <= set(names), links
    for link, name in zip(links, names):
        if name in seen:
            continue
        page.goto(link)
        expect(page.locator("h1").first).to_be_visible()
        screenshot(page, SHOTS / f"{name}.png")
        assert (too_wide(page), overlapping(page), cut_texts(page)) == ([], [], []), name


def markdown_stays_text(page, server: str) -> None:
    """The Embeddings page of a cache whose attributes and a class name hold Markdown (an image and a link to an
    address the file chose, an autolink): no request leaves for another address, no link or image to it appears,
    and the text is shown as written."""
    from playwright.sync_api import expect

    elsewhere = []

    def only_the_app(route):
        if route.request.url.startswith(server):
            route.continue_()
        else:  # recorded and stopped here: not one packet leaves
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_app)
    page.goto(server + "/embeddings_page")
    expect(page.get_by_text("Odd videos")).to_be_visible()
    expect(page.get_by_text("(fingerprint ![pixel](http", exact=False).first).to_be_visible()  # as written
    links = page.evaluate("""[...document.querySelectorAll('a[href], img[src]')].map(e => e.href || e.src)
        .filter(u => u.includes('203.0.113.7') || u.includes('example.com'))""")
    # (Streamlit itself asks fonts.gstatic.com for the navigation's Material icons: stopped here too, not the file's)
    assert ([u for u in elsewhere if ELSEWHERE in u or "example.com" in u], links) == ([], []), elsewhere


def hevc_clip(path):
    """A 2 s HEVC clip in mp4 (libx265 through PyAV), which Chromium has no decoder for."""
    import av
    import numpy as np
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx265", rate=25, options={"x265-params": "log-level=none"})
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(50):
            frame = np.zeros((120, 160, 3), np.uint8)
            frame[:, 3 * i:3 * i + 20] = 255  # a bar moving across
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def playing(page) -> list[bool]:
    """For each <video> of the page, once each has its first frame or has failed: whether it shows a picture."""
    page.wait_for_function("[...document.querySelectorAll('video')].every(v => v.readyState >= 2 || v.error)")
    return page.evaluate("[...document.querySelectorAll('video')].map(v => !v.error && v.videoWidth > 0)")


def test_an_upload_over_the_size_limit_is_refused(project, tmp_path):
    from playwright.sync_api import expect

    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(2 * 2**20))
    with streamlit_server(project, STREAMLIT_SERVER_MAX_UPLOAD_SIZE="1") as url, chromium_page() as page:
        page.goto(url)
        expect(page.get_by_text("up to 1 MB")).to_be_visible()  # the page states the limit in force
        page.locator("input[type=file]").set_input_files(str(big))
        expect(page.get_by_text("File must be 1.0MB or smaller.")).to_be_visible()
        expect(page.get_by_role("button", name="Predict")).to_have_count(0)  # nothing reaches the server


def test_the_demo_clips_play_in_the_browser(tmp_path):
    """Every container and codec of the demo dataset decodes in Chromium's <video> (MPEG-4 part 2 and MJPEG did
    not: the app showed a black player)."""
    files = make_demo_dataset(DemoConfig(out_dir=str(tmp_path), clips_per_class=3), progress=False)
    assert {f.suffix for f in files} == {".mp4", ".mkv", ".webm"}
    (tmp_path / "index.html").write_text("<html><body></body></html>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with chromium_page() as page:
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
            page.evaluate("""srcs => srcs.forEach(src => { const v = document.createElement('video');
                v.muted = true; v.preload = 'auto'; v.src = src; document.body.appendChild(v); })""",
                          ["/" + f.relative_to(tmp_path).as_posix() for f in files])
            # each video either has its first frame (readyState >= 2) or has failed: wait for that, then judge
            page.wait_for_function("[...document.querySelectorAll('video')].every(v => v.readyState >= 2 || v.error)")
            states = page.evaluate("""[...document.querySelectorAll('video')].map(v =>
                [v.getAttribute('src'), v.error ? v.error.message : 'ok', v.videoWidth])""")
    finally:
        server.shutdown()
    assert [s for s in states if s[1] != "ok" or s[2] == 0] == []
