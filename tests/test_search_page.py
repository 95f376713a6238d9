"""The app's Search page: a text query, "more like this", the player at the moment (AppTest), a stale index refused,
and one look in a real browser (screenshot)."""
import shutil

import pytest
import yaml
from streamlit.testing.v1 import AppTest

from pipeline.extract.cache import RANDOM_ENCODER_NOTE
from pipeline.paths import CACHE_PATH, SEARCH_INDEX
from pipeline.tools.search_cli import main as search_cli
from tests.apptest_helpers import app_at_page
from tests.conftest import committed_params


@pytest.fixture
def indexed(project, tmp_path):
    """A copy of the project with params.yaml (data.root its videos) and the search index built."""
    shutil.copytree(project, tmp_path / "p")
    (tmp_path / "p" / "params.yaml").write_text(yaml.safe_dump(committed_params(data={"root": "data"})))
    assert search_cli(["--build-index", "--cache", str(tmp_path / "p" / CACHE_PATH)]) == 0
    return tmp_path / "p"


def search_page() -> AppTest:
    return app_at_page("search_page.py")


def test_search_page_text_more_like_this_and_play(indexed, monkeypatch):
    monkeypatch.chdir(indexed)
    at = search_page()
    assert at.title[0].value == "Search the videos"
    assert RANDOM_ENCODER_NOTE in [w.value for w in at.warning]  # the tiny CLIP is random
    at.text_input(key="search_text").set_value("someone walking")
    at.number_input[0].set_value(4)
    at.button[0].click().run()  # the form's Search button
    assert not at.exception, at.exception
    assert any("clips in" in m.value and "someone walking" in m.value for m in at.markdown)
    assert len(at.get("image")) == 4  # each result's matching frame, decoded from its file under the data root
    first = next(c.value for c in at.caption if c.value.endswith(".mp4"))
    like = [b for b in at.button if b.label == "More like this"]
    assert len(like) == 4
    like[0].click().run()
    assert not at.exception, at.exception
    said = next(m.value for m in at.markdown if "clips in" in m.value)
    assert said.startswith("Like **") and first.replace("\\", "") not in [
        c.value.replace("\\", "") for c in at.caption if c.value.endswith(".mp4")]  # the query clip is left out
    next(b for b in at.button if b.label == "Play").click().run()
    assert not at.exception, at.exception
    assert len(at.get("video")) == 1 and any(m.value.startswith("**Playing") for m in at.markdown)


def test_search_page_refuses_a_stale_index_with_the_command(indexed, monkeypatch):
    from pipeline.extract.cache import read_cache, write_cache

    cache = read_cache(indexed / CACHE_PATH)
    write_cache(indexed / CACHE_PATH, cache.take(list(range(len(cache) - 1))))
    monkeypatch.chdir(indexed)
    at = search_page()
    assert any("another version of the cache" in e.value and "dvc repro index" in e.value for e in at.error)
    (indexed / SEARCH_INDEX).unlink()
    at = search_page()
    assert any("no search index" in e.value for e in at.error)


@pytest.mark.slow
def test_search_page_in_a_real_browser(indexed, tmp_path):
    from playwright.sync_api import expect

    from tests.browser import chromium_page, need_chromium, streamlit_server, too_wide

    need_chromium()
    with streamlit_server(indexed) as url, chromium_page() as page:
        page.goto(url + "/search_page")
        page.get_by_label("Describe the moment").fill("someone clapping")
        page.get_by_role("button", name="Search").click()
        expect(page.get_by_text("clips in")).to_be_visible()
        expect(page.locator("[data-testid=stApp][data-test-script-state=notRunning]")).to_have_count(1)
        expect(page.locator("[data-testid=stImage] img")).to_have_count(9)  # 9 clips, each its matching frame
        page.wait_for_function("[...document.querySelectorAll('[data-testid=stImage] img')].every(i => i.complete "
                               "&& i.naturalWidth > 0)")
        expect(page.get_by_text(RANDOM_ENCODER_NOTE)).to_be_visible()
        assert too_wide(page) == []
        shot = tmp_path / "search.png"
        page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
