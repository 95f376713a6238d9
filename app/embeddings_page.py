"""The app's Embeddings page: what is in the feature cache, how the classes separate, and which videos are odd."""
from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app.common import cached_cache, cached_pool, frame_strip
from pipeline.cache import random_encoder_note
from pipeline.errors import DataError, UserError
from pipeline.inspector import (class_centroids, find_outliers, frame_report, frame_spec, group_leakage,
                                nearest_neighbors, project_2d, row_of, split_file, summarize, video_means)
from pipeline.paths import CACHE_PATH
from pipeline.split import read_split
from pipeline.workers import ReadConfig

MAP_POINTS = 5000  # videos drawn on the map, or listed to choose from, at most: the browser's limit, not the data's


@st.cache_resource(show_spinner="Averaging each video's frames…")
def means_of(path: str, mtime_ns: int) -> np.ndarray:
    """Unit mean embedding of every video (V, D), one pass over the file per cache version, shared, not copied."""
    return video_means(cached_cache(path, mtime_ns)[0])


@st.cache_data(show_spinner="Projecting…")
def projection(path: str, mtime_ns: int, method: str) -> np.ndarray:
    """2-D coordinates of every video (cached per cache version and method)."""
    return project_2d(cached_cache(path, mtime_ns)[0], method, means=means_of(path, mtime_ns))


@st.cache_resource(show_spinner="Looking for odd videos…")
def outliers(path: str, mtime_ns: int) -> dict:
    """find_outliers, and group_leakage under "groups" when the split has groups of several clips (or, under
    "groups_error", why they cannot be read), once per cache version."""
    cache, parts = cached_cache(path, mtime_ns)
    odd = find_outliers(cache, parts, means=means_of(path, mtime_ns))
    if parts is not None:
        try:
            groups = read_split(split_file(path), cache.clip_ids(), "group")
        except DataError as e:  # a split file older than groups: said on the page, the rest shown
            odd["groups_error"] = str(e)
            return odd
        if len(set(groups)) < len(groups):  # else every clip is its own group: nothing more to say
            odd["groups"] = group_leakage(cache, parts, groups, odd["near_duplicates"])
    return odd


def main() -> None:
    st.title("Embeddings")
    path = Path(CACHE_PATH)
    if not path.is_file():
        st.info(f"No feature cache yet at `{CACHE_PATH}`. Build it from the project folder with `dvc repro extract`.")
        st.stop()
    mtime = path.stat().st_mtime_ns
    try:
        cache, parts = cached_cache(str(path), mtime)
    except (UserError, OSError) as e:  # a damaged cache, a stale split, the disk
        st.error(str(e))
        st.stop()
    summary = summarize(cache, path, parts)
    if random_encoder_note(cache.attrs):
        st.warning(random_encoder_note(cache.attrs))
    cols = st.columns(4)
    cols[0].metric("videos", summary["videos"])
    cols[1].metric("classes", len(summary["classes"]))
    cols[2].metric("frames per video", summary["frames_per_video"])
    cols[3].metric("skipped", len(summary["skipped"]))
    st.caption(f"encoder `{summary['encoder']['model']}` (fingerprint {summary['encoder']['fingerprint']}) · "
               f"embedding dim {summary['embedding_dim']} · sampling {summary['sampling']} · "
               f"preprocessing {summary['preprocess']} · schema {summary['schema_version']}")
    if summary["skipped"]:
        with st.expander(f"Skipped videos ({len(summary['skipped'])})"):
            st.dataframe(pd.DataFrame(summary["skipped"]), hide_index=True)

    st.subheader("Map of the videos")
    method = st.radio("Projection", ["pca", "tsne"], format_func=str.upper, horizontal=True)
    coords = projection(str(path), mtime, method)
    table = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "path": cache.clip_ids(),
                          "class": np.asarray(cache.class_names, object)[cache.labels],
                          "part": parts if parts is not None else "-"})
    if len(table) > MAP_POINTS:
        table = table.sample(MAP_POINTS, random_state=0)
        st.caption(f"{MAP_POINTS:,} of the {len(cache):,} videos drawn, chosen at random.")
    st.altair_chart(alt.Chart(table).mark_circle(size=60).encode(
        x=alt.X("x", axis=None), y=alt.Y("y", axis=None), color="class",
        tooltip=["path", "class", "part"]).interactive(), width="stretch")

    st.subheader("One video")
    if len(cache) <= MAP_POINTS:
        chosen = st.selectbox("Video", list(cache.clip_ids()))
    else:  # a list of every path would be megabytes in the browser: the path is typed instead
        chosen = st.text_input("Video (its path under the data root)", value=str(cache.paths[0])).strip()
        if chosen not in set(cache.clip_ids()) | set(cache.paths):
            st.warning(f"No video {chosen!r} in the cache.")
            st.stop()
    show_video(cache, chosen, means_of(str(path), mtime))

    st.subheader("How similar the class centroids are (cosine)")
    centroids = class_centroids(cache, means_of(str(path), mtime))
    sim = pd.DataFrame(centroids @ centroids.T, index=cache.class_names, columns=cache.class_names)
    st.dataframe(sim.style.format("{:.3f}").background_gradient(cmap="Blues", axis=None))

    st.subheader("Odd videos")
    odd = outliers(str(path), mtime)
    st.markdown(f"**Likely mislabelled** (nearer another class's centroid than their own): "
                f"{len(odd['mislabelled'])}")
    if odd["mislabelled"]:
        st.dataframe(pd.DataFrame(odd["mislabelled"]), hide_index=True)
    leaks = [d for d in odd["near_duplicates"] if d["leak"]]
    st.markdown(f"**Near-duplicates**: {len(odd['near_duplicates'])}"
                + (f", of which **{len(leaks)} across split parts (leakage)**" if parts is not None
                   else " (no split yet: run `dvc repro split` to check leakage)"))
    if odd["near_duplicates"]:
        st.dataframe(pd.DataFrame(odd["near_duplicates"]), hide_index=True)
    if "groups_error" in odd:
        st.warning(odd["groups_error"])
    elif "groups" in odd:  # leakage by group (a source video cut into clips, a person, a recording session)
        straddling, pairs = odd["groups"]["straddling"], odd["groups"]["near_duplicate_groups"]
        st.markdown(f"**Groups in more than one split part (leakage)**: {len(straddling)}; **group pairs across "
                    f"parts holding near-duplicates**: {len(pairs)}")
        if straddling:
            st.dataframe(pd.DataFrame([{"group": r["group"], **r["parts"]} for r in straddling]), hide_index=True)
        if pairs:
            st.dataframe(pd.DataFrame(pairs), hide_index=True)


def show_video(cache, chosen: str, means: np.ndarray) -> None:
    """The chosen video's sampled frames (from its source file, when there), neighbours and frame similarities."""
    v = row_of(cache, chosen)
    root = cache.attrs.get("data_root")
    source = Path(root) / cache.paths[v] if root else None
    rows = frame_report(cache, chosen, means)
    if source is not None and source.is_file():
        stat = source.stat()
        if (stat.st_size, stat.st_mtime_ns) != (cache.file_size[v], cache.mtime_ns[v]):
            st.warning(f"{source} changed since it was cached: the frames below may not be the cached ones")
        try:
            # decoded in the app's worker, as the encoder saw them (its crops, e.g. 224 x 224: small to send back)
            segment = None if np.isnan(cache.segment[v, 0]) else tuple(cache.segment[v].tolist())
            cfg = ReadConfig(cache.embeddings.shape[1], frame_spec(cache), segment=segment)
            clip = cached_pool().read(str(source), cfg).clip
            frame_strip(clip.frames, [f"frame {r['frame']} · {r['time']:.2f} s" for r in rows])
        except UserError as e:  # the video cannot be decoded now (VideoError): the embeddings are still shown
            st.error(str(e))
    else:
        st.caption(f"The source file is not here ({source or 'no data root recorded'}): embeddings only.")
    left, right = st.columns(2)
    with left:
        st.markdown("**Nearest videos** (cosine of mean embeddings)")
        st.dataframe(pd.DataFrame(nearest_neighbors(cache, chosen, 5, means)), hide_index=True)
    with right:
        st.markdown("**Frame-to-class similarity over time**")
        over_time = pd.DataFrame([r["cos_class"] for r in rows], index=[r["time"] for r in rows])
        over_time.index.name = "time (s)"
        st.line_chart(over_time)


main()
