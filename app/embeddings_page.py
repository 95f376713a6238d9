"""The app's Embeddings page: what is in the feature cache, how the classes separate, and which videos are odd."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app.common import cached_cache, cached_pool, frame_strip, project_data_root, shown_name
from pipeline.extract.cache import random_encoder_note
from pipeline.errors import DataError, UserError, VideoError, printable
from pipeline.decode.frames import FrameSpec
from pipeline.tools.inspector import (AXES, GROUPING_HINT, LEGEND_CLASSES, TABLEAU10, class_centroids, class_colours,
                                find_outliers, frame_report, frame_spec, group_leakage, nearest_classes,
                                nearest_neighbors, project_2d, row_of, source_file, split_file, summarize, video_means)
from pipeline.paths import CACHE_PATH, PARAMS
from pipeline.heads.split_file import read_split
from pipeline.tools.inspect_text import frames_text
from pipeline.decode.workers import ReadConfig

MAP_POINTS = 5000  # videos drawn on the map, or listed to choose from, at most: the browser's limit, not the data's
HEATMAP_CLASSES = 30  # up to this many classes the centroid similarities are a C x C heat map; beyond, a table
LINE_CLASSES = 10  # beyond LEGEND_CLASSES, the frame-to-class chart draws this many classes (the nearest on average)
# Column widths (pixels): each table's add up to at most TABLE_W, the page's column at a 1280-pixel window with the
# sidebar open (wide layout); a path column is as wide as its longest path within that (text_widths).
TABLE_W, CLASS_W, NUMBER_W, FLAG_W = 800, 150, 90, 70
CUT_HELP = "double-click a cell to read it whole"
TEXT_PX, CELL_PAD = 7.5, 24  # a table's text: the width of one character at most (Source Sans 14 px), the padding
MAP_PX = 640  # the map's width; its height follows the points' spread (equal axes), within MAP_MIN_PX..MAP_PX
MAP_MIN_PX = 240
LINES_PX, AXIS_PX, LEGEND_ROW_PX, LEGEND_COLUMNS = 240, 60, 22, 3  # the frame-to-class chart's parts
LEGEND_SYMBOL_PX = 40  # a legend entry's symbol and the gap after it
HEAT_PX, HEAT_CELL_MIN, HEAT_CELL_MAX, HEAT_LABEL_PX = 540, 20, 60, 240  # the heat map's matrix, cells, names


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


@st.cache_data(show_spinner=False)
def centroid_tables(path: str, mtime_ns: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The centroid similarities as (long C x C table for the heat map, or empty beyond HEATMAP_CLASSES; each
    class's three nearest classes), once per cache version: memory O(C x 3) beyond the heat map's size."""
    cache = cached_cache(path, mtime_ns)[0]
    centroids = class_centroids(cache, means_of(path, mtime_ns))
    names = [printable(n) for n in cache.class_names]
    heat = pd.DataFrame()
    if len(names) <= HEATMAP_CLASSES:
        sim = centroids @ centroids.T  # (C, C), C <= HEATMAP_CLASSES
        heat = pd.DataFrame({"class": np.repeat(names, len(names)), "other": np.tile(names, len(names)),
                             "cosine": sim.ravel().round(3)})
    idx, sims = nearest_classes(centroids, 3)
    nearest = pd.DataFrame({"class": names, "nearest classes (cosine)": [
        " · ".join(f"{names[j]} {s:.3f}" for j, s in zip(row, row_sims)) for row, row_sims in zip(idx, sims)]})
    return heat, nearest


@st.cache_data(show_spinner="Decoding the sampled frames…", max_entries=32)
def sampled_frames(source: str, size: int, mtime_ns: int, num_frames: int, spec: tuple, segment) -> np.ndarray:
    """The frames the encoder saw, uint8 (F, H, W, 3), decoded in the app's worker once per file version."""
    cfg = ReadConfig(num_frames, FrameSpec(*spec), segment=segment)
    return cached_pool().read(source, cfg).clip.frames


def main() -> None:
    st.title("Embeddings")
    path = Path(CACHE_PATH).absolute()  # the process's caches below are shared by every project it has seen
    if not path.is_file():
        st.info(f"No feature cache yet at `{CACHE_PATH}`. Build it from the project folder with `dvc repro extract`.")
        st.stop()
    split = split_file(path)
    # the version the caches below are keyed by: the newer of the cache's and the split's (a new split, same cache)
    mtime = max(path.stat().st_mtime_ns, split.stat().st_mtime_ns if split.is_file() else 0)
    try:
        cache, parts = cached_cache(str(path), mtime)
        means_of(str(path), mtime)  # every embedding read once (and kept): a row that is not finite is refused here
    except (UserError, OSError) as e:  # a damaged or crafted cache (refused at the door), a stale split, the disk
        st.error(shown_name(e))
        st.stop()
    summary = summarize(cache, path, parts)
    if random_encoder_note(cache.attrs):
        st.warning(random_encoder_note(cache.attrs))
    cols = st.columns(4)
    cols[0].metric("videos", summary["videos"])
    cols[1].metric("classes", len(summary["classes"]))
    cols[2].metric("frames per video", frames_text(summary))
    cols[3].metric("skipped", len(summary["skipped"]))
    # every value from the cache shown literally (shown_name): a cache's attribute is not Markdown to render
    st.caption(f"encoder {shown_name(summary['encoder']['model'])} (fingerprint "
               f"{shown_name(summary['encoder']['fingerprint'])}) · embedding dim {summary['embedding_dim']} · "
               f"sampling {shown_name(summary['sampling'])} · preprocessing {shown_name(summary['preprocess'])} · "
               f"schema {shown_name(summary['schema_version'])}")
    if summary["skipped"]:
        with st.expander(f"Skipped videos ({len(summary['skipped']):,})"):
            table(pd.DataFrame({"path": [printable(k["path"]) for k in summary["skipped"]],
                                "reason": [printable(k["reason"]) for k in summary["skipped"]]}),
                  paths=("path",), reason=480)

    st.subheader("Map of the videos")
    method = st.radio("Projection", ["pca", "tsne"], format_func=str.upper, horizontal=True)
    coords = projection(str(path), mtime, method)
    names = [printable(n) for n in cache.class_names]
    points = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "path": [printable(p) for p in cache.clip_ids()],
                           "class": np.asarray(names, object)[cache.labels],
                           "part": parts if parts is not None else "-"})
    if len(points) > MAP_POINTS:
        points = points.sample(MAP_POINTS, random_state=0)
        st.caption(f"{MAP_POINTS:,} of the {len(cache):,} videos drawn, chosen at random.")
    # one unit is as long across as up (a round cluster looks round), the chart sized to the points' spread
    (x_dom, y_dom), (width, height) = equal_axes(points["x"].to_numpy(), points["y"].to_numpy())
    st.altair_chart(alt.Chart(points).mark_circle(size=60).encode(
        x=alt.X("x", title=AXES[method][0], scale=alt.Scale(domain=x_dom, nice=False, zero=False)),
        y=alt.Y("y", title=AXES[method][1], scale=alt.Scale(domain=y_dom, nice=False, zero=False)),
        color=class_colour(names, class_colours(len(names)), MAP_PX), tooltip=["path", "class", "part"]).interactive()
        .properties(width=width, height=height), width="content")
    if len(names) > LEGEND_CLASSES:
        st.caption(f"{len(names):,} classes: colours repeat beyond {LEGEND_CLASSES}; hover a point for its class.")

    st.subheader("One video")
    if len(cache) <= MAP_POINTS:
        ids = list(cache.clip_ids())
        chosen = st.selectbox("Video", ids, format_func=printable)
    else:  # a list of every path would be megabytes in the browser: the path is typed instead
        chosen = st.text_input("Video (its path under the data root)", value=str(cache.paths[0])).strip()
        if chosen not in set(cache.clip_ids()) | set(cache.paths):
            st.warning(f"No video {shown_name(chosen)} in the cache.")
            st.stop()
    frames = show_video(cache, chosen, means_of(str(path), mtime))

    st.subheader("How similar the class centroids are (cosine)")
    heat, nearest = centroid_tables(str(path), mtime)
    if len(heat):
        # square cells, each class named on both axes (none dropped for room), long names cut on the axes only
        cell = min(HEAT_CELL_MAX, max(HEAT_CELL_MIN, HEAT_PX // len(names)))
        axis = {"labelOverlap": False, "labelLimit": HEAT_LABEL_PX, "labelFontSize": 12}
        st.altair_chart(alt.Chart(heat).mark_rect().encode(
            x=alt.X("other", sort=names, title=None, axis=alt.Axis(labelAngle=-60, **axis)),
            y=alt.Y("class", sort=names, title=None, axis=alt.Axis(**axis)),
            color=alt.Color("cosine", scale=alt.Scale(scheme="blues"), title="cosine"),
            tooltip=["class", "other", "cosine"]).properties(width=alt.Step(cell), height=alt.Step(cell)),
            width="content")
    else:
        st.caption(f"{len(names):,} classes: each class's three nearest, not the {len(names):,} x {len(names):,} "
                   "matrix.")
        table(nearest, **{"class": 200, "nearest classes (cosine)": 560})

    st.subheader("Odd videos")
    show_outliers(outliers(str(path), mtime), parts is not None)
    frames()  # last: the rest of the page is on screen while the frames decode


def table(frame: pd.DataFrame, paths: tuple[str, ...] = (), **widths: int) -> None:
    """A dataframe as wide as its container, each named column that many pixels (numbers shown to 3 places); the
    columns named in `paths` as wide as their longest text within the room left (text_widths). A path cut short
    for want of room is said, with how to read it whole."""
    sized, cut = text_widths(frame, paths, widths)
    widths |= sized
    config = {c: (st.column_config.NumberColumn(c, width=widths.get(c, NUMBER_W), format="%.3f")
                  if pd.api.types.is_float_dtype(frame[c]) else
                  st.column_config.Column(c, width=widths.get(c, FLAG_W), help=CUT_HELP if c in cut else None))
              for c in frame.columns}
    st.dataframe(frame, hide_index=True, width="stretch", column_config=config)
    if cut:
        st.caption(f"Some paths are too long for the table: {CUT_HELP}.")


def text_widths(frame: pd.DataFrame, paths: tuple[str, ...], widths: dict[str, int]) -> tuple[dict[str, int],
                                                                                                 list[str]]:
    """({column: pixels}, the columns cut short) for the `paths` columns: each its longest text (or header) whole,
    TEXT_PX a character; where they would not all fit in TABLE_W beside the other columns (widths, or the
    defaults), the room left shared out, the narrower columns whole first."""
    others = sum(widths.get(c, NUMBER_W if pd.api.types.is_float_dtype(frame[c]) else FLAG_W)
                 for c in frame.columns if c not in paths)
    need = {c: int(max([len(c), *frame[c].astype(str).str.len()]) * TEXT_PX + CELL_PAD) for c in paths}
    room, out = TABLE_W - others, {}
    for i, c in enumerate(sorted(need, key=need.get)):  # narrowest first: each takes at most its share of the rest
        out[c] = max(FLAG_W, min(need[c], room // (len(need) - i)))
        room -= out[c]
    return out, [c for c in paths if out[c] < need[c]]


def equal_axes(x: np.ndarray, y: np.ndarray) -> tuple[tuple[list[float], list[float]], tuple[int, int]]:
    """((x domain, y domain), (width, height) in pixels) for a scatter of x, y float (V,) with one unit as long on
    both axes: MAP_PX wide, as tall as the points' spread asks (within MAP_MIN_PX..MAP_PX), a domain widened around
    its points where the height is clamped."""
    spans = [float(np.ptp(v)) * 1.1 if len(v) else 0.0 for v in (x, y)]  # a 5% margin each side
    xs, ys = (s or max(spans) or 1.0 for s in spans)
    height = int(np.clip(MAP_PX * ys / xs, MAP_MIN_PX, MAP_PX))
    unit = max(xs / MAP_PX, ys / height)  # data units per pixel, the same on both axes
    mid_x, mid_y = (float(v.min() + v.max()) / 2 if len(v) else 0.0 for v in (x, y))
    return (([mid_x - unit * MAP_PX / 2, mid_x + unit * MAP_PX / 2], [mid_y - unit * height / 2,
                                                                      mid_y + unit * height / 2]), (MAP_PX, height))


def class_colour(names: list[str], colours: list[str], chart_px: int = TABLE_W) -> alt.Color:
    """Colour by class, names[i] in colours[i], every class in the legend, in LEGEND_COLUMNS columns that fit a chart
    chart_px wide (a name longer than its column is cut there: the points' tooltips name it whole); beyond
    LEGEND_CLASSES no legend and the palette repeats (a C-long domain would cost altair seconds to validate)."""
    if len(names) > LEGEND_CLASSES:
        return alt.Color("class:N", scale=alt.Scale(range=colours[:LEGEND_CLASSES]), legend=None)
    return alt.Color("class:N", scale=alt.Scale(domain=names, range=colours), legend=alt.Legend(
        orient="bottom", columns=LEGEND_COLUMNS, labelLimit=legend_label_px(chart_px), symbolLimit=0, title="class"))


def legend_label_px(chart_px: int) -> int:
    """The longest a legend's class name may be drawn, in pixels, for LEGEND_COLUMNS columns in a chart that wide
    (each column also holds a symbol and a gap)."""
    return chart_px // LEGEND_COLUMNS - LEGEND_SYMBOL_PX


def show_video(cache, chosen: str, means: np.ndarray) -> Callable[[], None]:
    """The chosen video's neighbours and frame similarities, and a place for its sampled frames (from its source
    file, when there); returns what fills that place, for the caller to run once the rest of the page is drawn:
    decoding starts the app's worker (seconds on a first view) and the page need not wait for it."""
    v = row_of(cache, chosen)
    root, source, refused = project_data_root(), None, ""
    try:  # read only under the project's own data root: the cache's data_root and paths are what it says
        source = source_file(root, cache.paths[v]) if root else None
    except DataError as e:
        refused = str(e)
    rows = frame_report(cache, chosen, means)
    slot = st.container()

    def draw_frames() -> None:
        stat = source.stat()
        if (stat.st_size, stat.st_mtime_ns) != (cache.file_size[v], cache.mtime_ns[v]):
            st.warning(f"{shown_name(source)} changed since it was cached: the frames below may not be the cached ones")
        try:
            # decoded in the app's worker, as the encoder saw them (its crops, e.g. 224 x 224: small to send back)
            segment = None if np.isnan(cache.segment[v, 0]) else tuple(cache.segment[v].tolist())
            spec = frame_spec(cache)
            frames = sampled_frames(str(source), stat.st_size, stat.st_mtime_ns, cache.embeddings.shape[1],
                                    dataclasses.astuple(spec), segment)
            frame_strip(frames, [f"frame {r['frame']} · {r['time']:.2f} s" for r in rows])
        except VideoError as e:  # the video cannot be decoded now: the embeddings are still shown
            st.error(f"{shown_name(e.file)}: {shown_name(e.reason)}")
        except UserError as e:  # the cache does not record its preprocessing (CacheError)
            st.error(shown_name(e))

    def fill() -> None:
        with slot:
            if source is not None and source.is_file():
                draw_frames()
            elif refused:
                st.caption(f"Frames not shown ({shown_name(refused)}): embeddings only.")
            else:
                st.caption(f"The source file is not here ({shown_name(source or 'no data.root in ' + PARAMS)}): "
                           "embeddings only.")

    st.markdown("**Nearest videos** (cosine of mean embeddings)")
    near = nearest_neighbors(cache, chosen, 5, means)
    table(pd.DataFrame({"path": [printable(r["path"]) for r in near], "class": [printable(r["class"]) for r in near],
                        "similarity": [r["similarity"] for r in near]}), paths=("path",), **{"class": 200})
    st.markdown("**Frame-to-class similarity over time**")
    names = [printable(n) for n in cache.class_names]
    cos = np.array([[r["cos_class"][n] for n in cache.class_names] for r in rows])  # (F, C)
    shown, colours = list(range(len(names))), class_colours(len(names))
    if len(names) > LEGEND_CLASSES:  # the nearest classes on average, and the video's own
        own = int(cache.labels[v])
        shown = [c for c in np.argsort(-cos.mean(axis=0), kind="stable") if c != own][:LINE_CLASSES - 1] + [own]
        colours = list(TABLEAU10[:len(shown)])
        st.caption(f"The {len(shown)} classes nearest this video on average (its own, "
                   f"{shown_name(names[own])}, included) of {len(names):,}.")
    lines = pd.DataFrame({"time (s)": np.repeat([r["time"] for r in rows], len(shown)),
                          "class": np.tile(np.asarray(names, object)[shown], len(rows)),
                          "cosine": cos[:, shown].ravel()})
    shown_names = [names[c] for c in shown]
    # the chart's height holds its legend too (LEGEND_COLUMNS names a row): the lines keep LINES_PX
    legend_rows = -(-len(shown_names) // LEGEND_COLUMNS) if len(shown_names) <= LEGEND_CLASSES else 0
    st.altair_chart(alt.Chart(lines).mark_line(point=True).encode(
        x="time (s):Q", y=alt.Y("cosine:Q", title="cosine to the class centroid"),
        color=class_colour(shown_names, colours), tooltip=["class", "time (s)", "cosine"])
        .properties(height=LINES_PX + AXIS_PX + LEGEND_ROW_PX * (legend_rows + 1)), width="stretch")
    return fill


def show_outliers(odd: dict, has_split: bool) -> None:
    """The likely mislabelled videos, the near-duplicates (how many passed, the first few), and leakage by group."""
    found, mislabelled = odd["mislabelled_found"], odd["mislabelled"]
    st.markdown(f"**Likely mislabelled** (nearer another class's centroid than their own): {found:,}"
                + (f", the {len(mislabelled):,} most suspicious listed" if len(mislabelled) < found else ""))
    if mislabelled:
        table(pd.DataFrame({"path": [printable(m["path"]) for m in mislabelled],
                            "class": [printable(m["class"]) for m in mislabelled],
                            "own similarity": [m["own_similarity"] for m in mislabelled],
                            "nearer class": [printable(m["nearer_class"]) for m in mislabelled],
                            "nearer similarity": [m["nearer_similarity"] for m in mislabelled]}),
              paths=("path",), **{"class": CLASS_W, "nearer class": CLASS_W, "own similarity": 100,
                           "nearer similarity": 100})
    near, dupes = odd["near_duplicates_found"], odd["near_duplicates"]
    across = near["across_parts"] or 0
    st.markdown(f"**Near-duplicates**: {near['pairs']:,}"
                + (f", of which **{across:,} across split parts (leakage)**" if has_split
                   else " (no split yet: run `dvc repro split` to check leakage)")
                + (f"; the first {len(dupes):,} listed" + (" (those across parts first)" if has_split else "")
                   if near["capped"] else ""))
    if dupes:
        table(pd.DataFrame({"a": [printable(d["a"]) for d in dupes], "b": [printable(d["b"]) for d in dupes],
                            "similarity": [d["similarity"] for d in dupes],
                            "same bytes": [d["same_bytes"] for d in dupes],
                            "parts": [" / ".join(d["parts"]) if d["parts"] else "-" for d in dupes],
                            "leak": [d["leak"] for d in dupes]}), paths=("a", "b"), parts=100, leak=60,
              **{"same bytes": 80})
    if across:
        st.info(f"{across:,} near-duplicate pair{'s' if across != 1 else ''} in different split parts: "
                f"{GROUPING_HINT}.")
    if "groups_error" in odd:
        st.warning(shown_name(odd["groups_error"]))
    elif "groups" in odd:  # leakage by group (a source video cut into clips, a person, a recording session)
        straddling, pairs = odd["groups"]["straddling"], odd["groups"]["near_duplicate_groups"]
        st.markdown(f"**Groups in more than one split part (leakage)**: {len(straddling)}; **group pairs across "
                    f"parts holding near-duplicates**: {len(pairs)}")
        if straddling:
            table(pd.DataFrame([{"group": printable(r["group"]), **r["parts"]} for r in straddling]), paths=("group",))
        if pairs:
            table(pd.DataFrame({"a": [printable(r["a"]) for r in pairs], "b": [printable(r["b"]) for r in pairs],
                                "parts": [" / ".join(r["parts"]) for r in pairs], "pairs": [r["pairs"] for r in pairs],
                                "max similarity": [r["max_similarity"] for r in pairs]}),
                  paths=("a", "b"), parts=100, **{"max similarity": 100})


# Streamlit runs a page as __main__; a decode worker started while it runs re-runs the file as __mp_main__
# (multiprocessing does): there it must draw nothing and load nothing
if __name__ == "__main__":
    main()
