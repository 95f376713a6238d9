"""The Streamlit app (run app/streamlit_app.py): a Predict page and an Embeddings page over the pipeline."""
