"""The Predict page's answer drawn: the top action, every class's probability, the sampled frames, the timeline.

Altair charts, each class in its colour on the Embeddings page; the page (predict_page.py) calls them."""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app.common import class_text, frame_strip, show_answer
from pipeline.tools.inspector import class_colours
from pipeline.tools.predict import NOT_SURE

TIMELINE_PX = 32  # the height of the timeline's band
TIMELINE_MIN_PX = 600  # the narrowest the timeline is drawn (the page's column at a small window): labels fit this
LEGEND_COLUMNS = 3
CHAR_PX = 7  # the width of one character of the timeline's 12-pixel labels, at most (a-z, space, ?)
UNSURE_GREY = "#b0b0b0"


def show_prediction(prediction) -> None:
    """The top action in large type and every class's probability, highest first; "not sure" with the best guess."""
    show_answer(prediction)
    show_probabilities(prediction.class_names, prediction.probabilities)


def show_probabilities(class_names: list[str], probabilities) -> None:
    """Horizontal bars, highest probability on top, full class names, the axis in % like the text."""
    table = pd.DataFrame({"action": [class_text(n) for n in class_names], "probability": probabilities})
    st.altair_chart(alt.Chart(table).mark_bar().encode(
        x=alt.X("probability:Q", title="probability", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        y=alt.Y("action:N", title=None, sort="-x", axis=alt.Axis(labelLimit=0)),
        tooltip=["action", alt.Tooltip("probability:Q", format=".1%")]), width="stretch")


def show_frames(prediction) -> None:
    """The sampled frames, each with its time and its own top class."""
    st.markdown("#### Sampled frames")
    per_frame, names = prediction.frame_probabilities, prediction.class_names
    tops, top = [int(p.argmax()) for p in per_frame], int(prediction.probabilities.argmax())
    # a frame whose own guess differs from the video's answer is marked, and the caption says why they may differ
    captions = [f"{t:.2f} s · {class_text(names[c])} {p.max():.0%}" + (" ≠" if c != top else "")
                for t, p, c in zip(prediction.clip.timestamps, per_frame, tops)]
    frame_strip(prediction.clip.frames, captions)
    differ = sum(c != top for c in tops)
    st.caption(f"Under each frame, the time and what the head makes of that frame alone; the answer above reads all "
               f"{len(tops)} frames together, so a single frame may say otherwise"
               + (f" (≠: {differ} of the {len(tops)} here)." if differ else "."))


def timeline_spans(segments, stride: float) -> list[tuple[float, float]]:
    """Each window's share of one time line, [start, end) seconds: the windows overlap (a window every `stride`
    seconds), so each is drawn where its centre is the nearest, from the midpoint with the window before to the
    midpoint with the window after (the first from its start, the last to its end). Beside a window that could not
    be read (more than a stride between two starts), half a stride each side of the centre: the gap shows."""
    centres = [(s.start + s.end) / 2 for s in segments]
    spans = []
    for i, s in enumerate(segments):
        start, end = s.start, s.end
        if i > 0:
            near = s.start - segments[i - 1].start <= stride * (1 + 1e-6)
            start = (centres[i - 1] + centres[i]) / 2 if near else centres[i] - stride / 2
        if i < len(segments) - 1:
            near = segments[i + 1].start - s.start <= stride * (1 + 1e-6)
            end = (centres[i] + centres[i + 1]) / 2 if near else centres[i] + stride / 2
        spans.append((max(start, s.start), min(end, s.end)))
    return spans


def answer_colours(classes: list[str]) -> tuple[list[str], list[str]]:
    """(domain, range) of the one colour scale of the timeline, bars and legend alike: each class as class_text
    writes it, in its colour on the Embeddings page (class_colours, by its index in the head), and "not sure" grey."""
    return [*(class_text(c) for c in classes), NOT_SURE], [*class_colours(len(classes)), UNSURE_GREY]


def show_timeline(timeline) -> None:
    """One time line: each window's answer as a bar over the span where it is the nearest window (timeline_spans),
    coloured by its answer ("not sure" grey, its best guess in words with a ?); a word label over each run of one
    answer where the run is wide enough for it, every window's details on hover."""
    st.markdown("#### Timeline")
    segments = timeline.segments
    spans = timeline_spans(segments, timeline.stride)
    classes = list(segments[0].class_names)
    table = pd.DataFrame({"from": [a for a, _ in spans], "to": [b for _, b in spans],
                          "answer": [class_text(s.label) if s.sure else NOT_SURE for s in segments],
                          "best guess": [class_text(s.top_class) for s in segments],
                          "probability": [s.top_probability for s in segments],
                          "window": [f"{s.start:.1f}-{s.end:.1f} s" for s in segments], "lane": 0})
    domain, colours = answer_colours(classes)
    shown = [d for d in domain if d in set(table["answer"])]  # the legend: the answers on this time line only
    # the legend in rows of LEGEND_COLUMNS that fit the narrowest chart (a longer name is cut there, whole on hover)
    colour = alt.Color("answer:N", title="answer", scale=alt.Scale(
        domain=shown, range=[colours[domain.index(d)] for d in shown]), legend=alt.Legend(
            orient="bottom", columns=LEGEND_COLUMNS, labelLimit=TIMELINE_MIN_PX // LEGEND_COLUMNS - 40))
    x = alt.X("from:Q", title="seconds", scale=alt.Scale(domain=[spans[0][0], spans[-1][1]], nice=False))
    bars = alt.Chart(table).mark_bar(stroke="white", strokeWidth=1).encode(
        x=x, x2="to", y=alt.Y("lane:O", axis=None), color=colour,
        tooltip=["window", "answer", "best guess", alt.Tooltip("probability", format=".1%")])
    layers = [bars]
    runs = answer_runs(table, spans[-1][1] - spans[0][0])
    if len(runs):
        layers.append(alt.Chart(runs).mark_text(fontSize=12, color="#1a1a1a").encode(
            x=alt.X("middle:Q"), y=alt.Y("lane:O", axis=None), text="text"))
    st.altair_chart(alt.layer(*layers).properties(height=alt.Step(TIMELINE_PX)), width="stretch")
    unsure = int((table["answer"] == NOT_SURE).sum())
    st.caption(f"{len(segments)} windows of {timeline.window:.3g} s every {timeline.stride:.3g} s, each drawn where "
               "it is the nearest window (hover a bar for the window it read)"
               + (f"; {unsure} not sure: grey, with the best guess and a ?" if unsure else "")
               + (f". {timeline.note}" if timeline.note else "")
               + (f". {timeline.missing} window{'s' * (timeline.missing > 1)} held no readable frame (gaps)"
                  if timeline.missing else "") + ".")


def answer_runs(table: pd.DataFrame, seconds: float) -> pd.DataFrame:
    """The label of each run of windows with one answer (and best guess): its middle and its words, for the runs
    wide enough for them on a chart TIMELINE_MIN_PX wide (a narrower run is named by its colour and on hover)."""
    key = table["answer"] + "|" + table["best guess"]
    run = (key != key.shift()).cumsum()
    rows = []
    for _, r in table.groupby(run, sort=False):
        unsure = r["answer"].iloc[0] == NOT_SURE
        text = r["best guess"].iloc[0] + ("?" if unsure else "")
        width = (r["to"].iloc[-1] - r["from"].iloc[0]) / seconds * TIMELINE_MIN_PX
        if width >= CHAR_PX * len(text) + 8:
            rows.append({"middle": (r["from"].iloc[0] + r["to"].iloc[-1]) / 2, "text": text, "lane": 0})
    return pd.DataFrame(rows)
