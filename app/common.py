"""What the app's pages share: process-wide caches (encoder, heads, decode pool, feature cache, launch folder), a
frame strip."""
from __future__ import annotations

import atexit

import cv2
import streamlit as st

from pipeline.heads import load_head
from pipeline.inspector import load
from pipeline.predict import encoder_for
from pipeline.workers import DecodePool, PoolConfig
from pipeline.zeroshot import text_embeddings


@st.cache_resource(show_spinner=False)
def launch_record() -> dict:
    """One dict per process, shared by every session: {"from": folder} once the app, launched outside a project,
    has moved into its own (the working folder is the process's; streamlit_app.py)."""
    return {}


@st.cache_resource(show_spinner="Loading the CLIP encoder…")
def cached_encoder(model_id: str, preprocess: str, backend: str, quantize: str):
    """The encoder, loaded once per process (on CUDA when present, unless onnxruntime) and shared by every session."""
    return encoder_for({"encoder_model": model_id, "preprocess": preprocess, "backend": backend,
                        "quantize": quantize})


@st.cache_resource(show_spinner=False)
def cached_pool() -> DecodePool:
    """One decode worker for the whole process, shared by every session and page, closed when the process exits."""
    pool = DecodePool(PoolConfig(workers=1))
    atexit.register(pool.close)
    return pool


@st.cache_resource(show_spinner=False)
def cached_head(path: str, mtime_ns: int):
    """A trained head, loaded once per file version (mtime_ns in the key: retraining reloads it)."""
    return load_head(path)


@st.cache_resource(show_spinner="Encoding the actions with CLIP's text tower…")
def cached_text_embeddings(model_id: str, actions: tuple[str, ...]):
    """Text embeddings (C, D) of a list of actions, computed once per model and list."""
    return text_embeddings(model_id, list(actions))


@st.cache_resource(show_spinner="Reading the feature cache…")
def cached_cache(path: str, mtime_ns: int):
    """(cache, split parts or None), read once per file version (a new cache from stage one is picked up)."""
    return load(path)


def frame_strip(frames, captions: list[str], columns: int = 8) -> None:
    """Thumbnails of RGB frames uint8 (F, H, W, 3) in rows of `columns`, each with its caption."""
    for start in range(0, len(frames), columns):
        for col, i in zip(st.columns(columns), range(start, min(start + columns, len(frames)))):
            h, w = frames[i].shape[:2]
            thumb = cv2.resize(frames[i], (160, max(1, round(160 * h / w))), interpolation=cv2.INTER_AREA)
            col.image(thumb, caption=captions[i])
