"""What the real-browser tests share: `streamlit run` of the app on a free port, and headless Chromium.

Chromium is Debian's package, driven by Playwright (no browser download).
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

# Every wait is on an event (a text, a role, a count), with a bound far above a loaded machine's time: the app
# loads the encoder before it shows the uploader, which took over 5 s on 2 cores shared with other work.
WAIT_MS = 120_000
ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "streamlit_app.py"
OUT = ROOT / "tests" / "out"  # git-ignored: the screenshots people look at
CHROMIUM = shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(project, **env):
    """`streamlit run` of the app in the project folder, on a free port; yields its URL. The checkout under test is
    first on the server's path (installed or not: `streamlit run` itself puts only app/ there)."""
    port = free_port()
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    # the server's output goes to a file: a pipe nobody reads fills up and then blocks a chatty server
    log = tempfile.NamedTemporaryFile("w+", prefix="streamlit-", suffix=".log")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port), "--server.address",
         "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=project, stdout=log, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": path, **env})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + WAIT_MS / 1000  # a generous bound: the wait ends when the server answers
    while True:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=1)
            break
        except OSError:
            assert proc.poll() is None, Path(log.name).read_text()
            if time.time() > deadline:
                proc.kill()
                raise AssertionError(f"streamlit did not answer in {WAIT_MS / 1000:.0f} s: "
                                     f"{Path(log.name).read_text()}")
            time.sleep(0.2)
    try:
        yield url
    except BaseException:  # the test failed inside: what the server said goes with the failure (pytest shows it)
        print(f"--- the streamlit server's output ({log.name}) ---\n{Path(log.name).read_text()[-6000:]}")
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a loaded machine: stop it for good rather than fail the test
            proc.kill()
            proc.wait()
        log.close()


@contextmanager
def chromium_page():
    from playwright.sync_api import expect, sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.set_default_timeout(WAIT_MS)  # clicks and uploads wait for their element this long
            expect.set_options(timeout=WAIT_MS)  # and so does every expect(...) (5 s by default)
            with telling(page, "page"):
                yield page
        finally:
            browser.close()


@contextmanager
def telling(page, name: str):
    """On a failure in the body, what the page showed goes with it: its text (printed, pytest shows it) and a
    screenshot, tests/out/<name>-failed.png."""
    try:
        yield page
    except BaseException:
        try:
            OUT.mkdir(exist_ok=True)
            page.screenshot(path=str(OUT / f"{name}-failed.png"), full_page=True)
            print(f"--- the page's text at the failure (screenshot: {OUT / f'{name}-failed.png'}) ---\n"
                  f"{page.inner_text('body', timeout=10_000)[-6000:]}")
        except Exception as e:  # the browser itself is gone: the failure above is what matters  # noqa: BLE001
            print(f"--- the page could not be read at the failure: {e}")
        raise


def need_chromium(module: bool = False) -> None:
    """Skip the calling test (or module) where Debian's chromium is missing, except on CI, which installs it
    (.ci/run): there, a missing browser fails."""
    if CHROMIUM is None and not os.environ.get("CI"):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=module)


def too_wide(page) -> list[str]:
    """The tables and charts of the page wider than the block that holds them (cut off at the right): a chart or
    table past its block's edge, or a dataframe whose grid scrolls sideways (glide's scroller wider inside than out;
    the dataframe's own overlay of buttons sticks out of it by design and is not measured)."""
    return page.evaluate("""[...document.querySelectorAll(
        '[data-testid=stDataFrame], [data-testid=stTable], [data-testid=stVegaLiteChart]')].filter(el => {
            const box = el.getBoundingClientRect(), outer = el.parentElement.getBoundingClientRect();
            const grid = el.querySelector('.dvn-scroller'), inner = grid || el;
            return inner.scrollWidth > inner.clientWidth + 1 || box.right > outer.right + 1; })
        .map(el => el.getAttribute('data-testid'))""")


def screenshot(page, path) -> None:
    """The whole page in one PNG: Streamlit scrolls inside its main block, not the document, so the window is made
    as tall as that block first (and put back after), once the page has settled (before and after)."""
    size = page.viewport_size
    settled(page)
    height = page.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], height)})
    settled(page)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    settled(page)  # and the page laid out again at its own size (two frames) before anything else looks at it
    page.evaluate("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def settled(page) -> None:
    """Wait until the script has run, every chart has drawn its marks and every image has loaded (Streamlit shows
    placeholders until then)."""
    page.wait_for_function("""document.querySelector('[data-testid=stApp]')?.dataset.testScriptState === 'notRunning'
        && !document.querySelector('[data-testid=stSkeleton], [data-testid=stSkeletonElement]')
        && [...document.querySelectorAll('[data-testid=stVegaLiteChart]')].every(el => el.querySelector('svg .role-mark'))
        && [...document.querySelectorAll('[data-testid=stImage] img')].every(img => img.complete && img.naturalWidth)""")


def overlapping(page) -> list[str]:
    """What a person would call drawn over itself, chart by chart, in the rendered Vega scene (SVG): two texts whose
    boxes cross (labels, axis labels, legend entries; rotated labels compared as drawn, not by their upright
    boxes), two bars or cells of one mark crossing by more than a pixel, and a category's axis label Vega hid for want
    of room (labelOverlap: opacity 0; a number axis thins its ticks by design). Each as "chart N: what"."""
    return page.evaluate("""(() => {
        const quad = el => { const b = el.getBBox(), m = el.getScreenCTM();  // the box as drawn: 4 corners on screen
            return [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height], [b.x, b.y + b.height]]
                .map(([x, y]) => [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f]); };
        const apart = (p, q, gap) => [p, q].some(poly => poly.some((a, i) => {  // separating axis: convex quads
            const b = poly[(i + 1) % poly.length], n = [a[1] - b[1], b[0] - a[0]], len = Math.hypot(...n) || 1;
            const proj = r => r.map(([x, y]) => (x * n[0] + y * n[1]) / len);
            return Math.max(...proj(p)) - gap <= Math.min(...proj(q)) || Math.max(...proj(q)) - gap <= Math.min(...proj(p)); }));
        const found = [];
        document.querySelectorAll('[data-testid=stVegaLiteChart] svg.marks').forEach((svg, n) => {
            const shown = el => el.getAttribute('opacity') !== '0' && el.textContent.trim() && el.getBBox().width > 0;
            const texts = [...svg.querySelectorAll('text')].filter(shown);
            texts.forEach((a, i) => texts.slice(i + 1).forEach(b => {
                if (!apart(quad(a), quad(b), 0.5)) found.push(`chart ${n}: text "${a.textContent}" over "${b.textContent}"`); }));
            svg.querySelectorAll('.role-axis[aria-label*=discrete] .role-axis-label text').forEach(t => {
                if (t.getAttribute('opacity') === '0') found.push(`chart ${n}: axis label "${t.textContent}" hidden`); });
            svg.querySelectorAll('g.mark-rect.role-mark').forEach(g => {
                const rects = [...g.querySelectorAll(':scope > path')].map(quad);
                rects.forEach((a, i) => rects.slice(i + 1).forEach((b, j) => {
                    if (!apart(a, b, 1)) found.push(`chart ${n}: bars ${i} and ${i + j + 1} of one mark overlap`); })); });
        });
        return found; })()""")


def axis_labels(page, chart: int) -> list[list[str]]:
    """The labels each axis of the page's chart number `chart` shows (those Vega hid for want of room left out)."""
    return page.evaluate("""n => [...document.querySelectorAll('[data-testid=stVegaLiteChart] svg.marks')[n]
        .querySelectorAll('.role-axis')].map(axis => [...axis.querySelectorAll('.role-axis-label text')]
        .filter(t => t.getAttribute('opacity') !== '0').map(t => t.textContent))""", chart)


def cut_texts(page) -> list[str]:
    """The texts of the page's charts cut short for want of room: those Vega shortened (ending in "…": an axis title
    longer than its axis, a label past its labelLimit), and as "past the edge: <text>" those reaching past their
    chart's edge by more than 3 pixels (clipped there: a legend wider than its chart)."""
    return page.evaluate("""[...document.querySelectorAll('[data-testid=stVegaLiteChart] svg.marks')].flatMap(svg => {
        const edge = svg.getBoundingClientRect();
        return [...svg.querySelectorAll('text')].filter(t => t.textContent.trim() && t.getAttribute('opacity') !== '0')
            .flatMap(t => { const box = t.getBoundingClientRect();
                const past = box.left < edge.left - 3 || box.right > edge.right + 3 || box.top < edge.top - 3
                    || box.bottom > edge.bottom + 3;  // 3: a rotated title's line box passes the edge by 2.4
                return [...(t.textContent.endsWith('…') ? [t.textContent] : []),
                        ...(past ? ['past the edge: ' + t.textContent] : [])]; }); })""")
