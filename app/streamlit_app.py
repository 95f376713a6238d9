"""Streamlit app entry point: `streamlit run app/streamlit_app.py` from the project folder.

`streamlit run` puts only app/ on the path: the project's packages come from its install (`pip install -e .`).
"""
import os
from pathlib import Path

import streamlit as st

from pipeline.paths import PARAMS
from pipeline.threads import set_threads

ROOT = Path(__file__).resolve().parents[1]  # the project this app belongs to


def main() -> None:
    """The app: the project's folder, then the Predict, Live, Embeddings and Search pages."""
    from app.common import launch_record  # the pages' caches, encoder and heads: not for a decode worker
    from pipeline.heads.kinds import HEADS

    set_threads("app")

    st.set_page_config(page_title="clip-har", layout="wide")
    # The pages find heads, params.yaml and a local encoder relative to the current folder, as dvc does. Launched from a
    # folder that is not a project (neither params.yaml nor a head), the app moves into its own project and says so.
    # The working folder belongs to the process, shared by every browser session: the sessions after the first start
    # in the project already, and learn where the app was launched from through launch_record().
    if not any(Path(p).is_file() for p in (PARAMS, *(k.file for k in HEADS.values()))) and (ROOT / PARAMS).is_file():
        launch_record()["from"] = os.getcwd()
        os.chdir(ROOT)
    if "from" in launch_record() and Path.cwd() == ROOT:
        st.warning(f"Launched from `{launch_record()['from']}`, which is not a project folder (no {PARAMS}, no head): "
                   f"using this app's project, `{ROOT}`.")
    st.navigation([st.Page("predict_page.py", title="Predict", icon=":material/movie:", default=True),
                   st.Page("live_page.py", title="Live", icon=":material/videocam:"),
                   st.Page("embeddings_page.py", title="Embeddings", icon=":material/scatter_plot:"),
                   st.Page("search_page.py", title="Search", icon=":material/search:")]).run()


# Streamlit runs this file as __main__; each decode worker of the app re-runs it as __mp_main__ (multiprocessing
# does, to unpickle what the main module defines): there it must draw nothing (10 "missing ScriptRunContext!"
# warnings at the first Predict and at shutdown) and import no model
if __name__ == "__main__":
    main()
