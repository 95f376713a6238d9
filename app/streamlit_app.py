"""Streamlit app entry point: `streamlit run app/streamlit_app.py` from the project folder."""
import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `streamlit run` puts only app/ on the path
from pipeline.threads import set_threads  # noqa: E402

set_threads("app")

st.set_page_config(page_title="clip-har", layout="wide")
st.navigation([st.Page("predict_page.py", title="Predict", icon=":material/movie:", default=True),
               st.Page("embeddings_page.py", title="Embeddings", icon=":material/scatter_plot:")]).run()
