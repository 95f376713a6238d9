"""The app's Search page: find the moments in the cached videos that match a text, a cached clip or an upload."""
from __future__ import annotations

import dataclasses
import mimetypes
from pathlib import Path

import numpy as np
import streamlit as st

from app.common import Busy, cached_encoder, cached_pool, held_worker, project_data_root, shown_name
from pipeline.data.discover import VIDEO_EXTENSIONS
from pipeline.errors import DataError, UserError, VideoError
from pipeline.extract.cache import random_encoder_note
from pipeline.paths import CACHE_PATH
from pipeline.tools.inspector import frame_spec, source_file, split_file
from pipeline.tools.predict import temporary_upload
from pipeline.tools.search import SPLIT_PARTS, cached_query, encode_video, file_query, open_searcher, text_vector
from pipeline.tools.search_index import index_path

COLUMNS = 4  # results per row of the grid
ANY = "any"
PLAY_LIMIT = 200 << 20  # bytes: a cached video larger than this is not sent to the browser to play


@st.cache_resource(show_spinner="Opening the search index…", max_entries=2)
def cached_searcher(path: str, versions: tuple):
    """The cache and its checked index (pipeline.tools.search.open_searcher), once per version of the cache, the
    index and the split (`versions`: their mtimes), shared by every session; the last two versions kept (0.5 GiB
    each at 240,000 clips)."""
    return open_searcher(path)


@st.cache_resource(show_spinner="Embedding the text with the encoder's text tower…", max_entries=256)
def cached_text(model_id: str, text: str) -> np.ndarray:
    """A query text's unit vector (D,), once per model and text."""
    return text_vector(model_id, text)


@st.cache_data(show_spinner=False, max_entries=256)
def best_frame(source: str, size: int, mtime_ns: int, num_frames: int, spec: tuple, segment, frame: int) -> np.ndarray:
    """The frame `frame` of the F the cache sampled from a video, uint8 (H, W, 3), decoded in the app's decode
    workers (the Embeddings page's read: the same sampling and crop), once per file version."""
    from app.embeddings_page import sampled_frames

    return sampled_frames(source, size, mtime_ns, num_frames, spec, segment)[frame]


def versions(path: Path) -> tuple:
    """The mtimes of the cache, its index and its split (0 when missing): a new one of any opens them again."""
    return tuple(p.stat().st_mtime_ns if p.is_file() else 0 for p in (path, index_path(path), split_file(path)))


def main() -> None:
    st.title("Search the videos")
    path = Path(CACHE_PATH).absolute()
    if not path.is_file():
        st.info(f"No feature cache yet at `{CACHE_PATH}`. Build it from the project folder with `dvc repro extract`, "
                "then the index with `dvc repro index`.")
        st.stop()
    try:
        searcher = cached_searcher(str(path), versions(path))
    except (UserError, OSError) as e:  # no index, a stale one (with the command that rebuilds it), a damaged one
        st.error(shown_name(e))
        st.stop()
    cache = searcher.cache
    if random_encoder_note(cache.attrs):
        st.warning(random_encoder_note(cache.attrs))
    index = searcher.index
    st.caption(f"{len(cache):,} clips · encoder {shown_name(cache.attrs.get('encoder_model'))} · "
               + ("exact search" if index.exact else f"approximate search (faiss IVF, {index.nprobe} of "
                                                     f"{index.ivf.nlist:,} lists)"))
    with st.form("search"):
        text = st.text_input("Describe the moment", placeholder="someone falls down", key="search_text")
        left, middle, right = st.columns(3)
        k = left.number_input("Results", 1, 100, 12)
        names = [ANY, *cache.class_names] if len(cache.class_names) <= 1000 else [ANY]
        class_name = middle.selectbox("Class", names, format_func=lambda c: c if c == ANY else shown_name(c))
        parts = [ANY, *SPLIT_PARTS] if searcher.parts is not None else [ANY]
        split = right.selectbox("Split part", parts)
        if st.form_submit_button("Search", type="primary") and text.strip():
            st.session_state["search_query"] = ("text", text.strip())
    upload = st.file_uploader("…or upload a video to find clips like it",
                              type=[e[1:] for e in VIDEO_EXTENSIONS], key="search_upload")
    if upload is not None and st.session_state.get("search_upload_id") != upload.file_id:
        st.session_state["search_upload_id"] = upload.file_id
        st.session_state["search_query"] = ("upload", upload.file_id)
    query = st.session_state.get("search_query")
    if query is None:
        return
    try:
        vector, excluded, said = query_vector(searcher, query, upload)
        allowed = searcher.allowed(None if class_name == ANY else class_name, None if split == ANY else split)
        found = searcher.search(vector, int(k), allowed, excluded)
    except Busy as e:
        st.info(shown_name(e))
        return
    except VideoError as e:
        st.error(f"{shown_name(e.file)}: {shown_name(e.reason)}")
        return
    except (UserError, OSError) as e:
        st.error(shown_name(e))
        return
    st.markdown(f"{said}: {len(found.hits)} clips in {found.took_ms:.0f} ms")
    show_player(searcher)
    show_grid(searcher, found.hits)


def query_vector(searcher, query: tuple, upload) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(unit vector (D,), excluded bool (V,) or None, the query in words) for the session's query."""
    kind, value = query
    cache = searcher.cache
    if kind == "text":
        return cached_text(cache.attrs["encoder_model"], value), None, f"**{shown_name(value)}**"
    if kind == "like":
        return *cached_query(searcher, value), f"Like **{shown_name(value)}**"
    if upload is None or upload.file_id != value:
        raise DataError("the uploaded video is gone: upload it again")
    kept = st.session_state.get("search_upload_vector")
    if kept is None or kept[0] != value:
        a = cache.attrs
        with st.spinner("Decoding and encoding the upload as stage one would…"):
            encoder = cached_encoder(a["encoder_model"], a["preprocess"], a["backend"], a["quantize"])
            with held_worker(cached_pool()) as pool, temporary_upload(upload.getvalue()) as tmp:
                video = encode_video(tmp, cache, encoder, pool)
        kept = (value, *file_query(searcher, video))
        st.session_state["search_upload_vector"] = kept
    return kept[1], kept[2], "Like **the uploaded video**"


def show_grid(searcher, hits) -> None:
    """Each hit: the matching frame, its class, score and moment, and buttons to play it or search like it."""
    for start in range(0, len(hits), COLUMNS):
        for col, (rank, hit) in zip(st.columns(COLUMNS), enumerate(hits[start:start + COLUMNS], start + 1)):
            with col:
                thumbnail(searcher, hit)
                st.markdown(f"**{rank}. {shown_name(hit.label)}** · score {hit.score:.3f} · at {hit.time:.1f} s")
                st.caption(shown_name(hit.path))
                play, like = st.columns(2)
                if play.button("Play", key=f"play{hit.row}", icon=":material/play_arrow:"):
                    st.session_state["search_play"] = (hit.row, hit.time)
                    st.rerun()
                if like.button("More like this", key=f"like{hit.row}"):
                    st.session_state["search_query"] = ("like", hit.path)
                    st.rerun()


def source_of(searcher, row: int) -> Path | None:
    """The video file of a cached row under the project's own data root, or None (no root, outside it, gone)."""
    root = project_data_root()
    if root is None:
        return None
    try:  # never a path from elsewhere: the cached path, checked to stay under the project's data root
        file = source_file(root, str(searcher.cache.paths[row]))
    except DataError:
        return None
    return file if file.is_file() else None


def thumbnail(searcher, hit) -> None:
    """The hit's best frame, decoded on demand, or a line saying why not."""
    cache = searcher.cache
    file = source_of(searcher, hit.row)
    if file is None:
        st.caption("no frame: the video is not under this project's data root")
        return
    segment = None if np.isnan(cache.segment[hit.row, 0]) else tuple(cache.segment[hit.row].tolist())
    try:
        stat = file.stat()
        frame = best_frame(str(file), stat.st_size, stat.st_mtime_ns, int(cache.embeddings.shape[1]),
                           dataclasses.astuple(frame_spec(cache)), segment, hit.frame)
    except Busy:
        st.caption("no frame yet: the app's decode workers are busy")
        return
    except (UserError, OSError) as e:  # the video cannot be decoded now; the cache records no preprocessing
        st.caption(f"no frame: {shown_name(getattr(e, 'reason', e))}")
        return
    st.image(frame, width="stretch")


def show_player(searcher) -> None:
    """The clip chosen with Play, starting at its moment."""
    chosen = st.session_state.get("search_play")
    if chosen is None or chosen[0] >= len(searcher.cache):
        return
    row, moment = chosen
    file = source_of(searcher, row)
    st.markdown(f"**Playing {shown_name(searcher.cache.paths[row])}** from {moment:.1f} s")
    if file is None:
        st.caption("The video is not under this project's data root: nothing to play.")
    elif file.stat().st_size > PLAY_LIMIT:
        st.caption(f"The video is larger than {PLAY_LIMIT >> 20} MB: not sent to the browser.")
    else:  # the file itself, served by Streamlit with its type; the browser starts at the moment
        kind = mimetypes.guess_type(file.name)[0] or "video/mp4"
        st.video(str(file), format=kind, start_time=int(moment))


# Streamlit runs a page as __main__; a decode worker started while it runs re-runs the file as __mp_main__
if __name__ == "__main__":
    main()
