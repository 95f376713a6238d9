"""The app under Streamlit's AppTest, opened at one page: the helper the page tests share."""
from streamlit.testing.v1 import AppTest

from tests.conftest import APP, APP_RUN_S


def app_at_page(page: str) -> AppTest:
    """The whole app (its navigation) run once on its default page, Predict, then switched to `page` (a file under
    app/, "search_page.py") and run: no exception raised on either."""
    at = AppTest.from_file(APP, default_timeout=APP_RUN_S)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at
