"""The app's Live page: the browser's camera through WebRTC, answered every second by the live engine."""
from __future__ import annotations

import time
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from app.common import (ACTIONS_LABEL, cached_encoder, cached_head, cached_text_embeddings, calibration_caption,
                        class_text, sampling_text, show_answer, shown_name, typed_actions)
from app.live_feed import HISTORY_S, LiveFeed, ice_servers
from pipeline.decode.sampling import Sampling
from pipeline.decode.video import DecodeLimits
from pipeline.errors import ConfigError, UserError
from pipeline.extract.cache import open_cache, random_encoder_note
from pipeline.extract.runner import ExtractConfig
from pipeline.heads.zeroshot import zeroshot_head
from pipeline.live.engine import LiveConfig, LiveEngine
from pipeline.heads.kinds import FROM_TEXT, HEADS, TRAINED
from pipeline.paths import CACHE_PATH, PARAMS
from pipeline.tools.predict import NOT_SURE, make_predictor
from pipeline.extract.project import project_extract_config

# the camera as most laptops give it, at a rate the app can receive on 2 cores (the engine embeds a few of them)
CAMERA = {"video": {"width": {"ideal": 640}, "height": {"ideal": 480}, "frameRate": {"ideal": 15}}, "audio": False}
WAIT_S = 0.5  # the page's wait for the next answer
REDRAW_S = 5.0  # the page redraws at least this often while the camera is on


def main() -> None:
    st.title("Live: what is the person doing?")
    st.caption("Your camera, answered every second by the same encoder and head as Predict. The video goes only "
               "to this app's server.")
    trained = {kind: Path(HEADS[kind].file) for kind in TRAINED if Path(HEADS[kind].file).is_file()}
    kind = st.radio("Head", [*trained, FROM_TEXT], format_func=lambda kind: HEADS[kind].label, horizontal=True,
                    key="live_head")
    try:
        servers = ice_servers()
    except ConfigError as e:
        st.error(shown_name(e))
        st.stop()
    try:
        head, features, key = chosen_head(kind, trained)
    except UserError as e:
        st.error(f"Cannot use the {HEADS[kind].label}: {shown_name(e)}")
        st.stop()
    # a head file is untrusted: every string from it shown literally (shown_name), as on Predict
    st.caption(f"{HEADS[kind].label} · encoder {shown_name(features['encoder_model'])} · "
               f"{shown_name(sampling_text(features, 'answer'))} · classes: "
               f"{', '.join(shown_name(class_text(c)) for c in head.classes_)}")
    saved = Path(HEADS[kind].file)
    calibrated_on = None if HEADS[kind].trained or not saved.is_file() else \
        cached_head(str(saved), saved.stat().st_mtime_ns).classes_
    st.caption(shown_name(calibration_caption(head.calibration_, head.classes_, calibrated_on)))
    if random_encoder_note(features):
        st.warning(random_encoder_note(features))
    try:
        with st.spinner("Loading the CLIP encoder (the first time only: it can take a while)…"):
            predictor = make_predictor(head, cached_encoder(features["encoder_model"], features["preprocess"],
                                                            features["backend"], features["quantize"]), None)
    except UserError as e:  # a head made for another encoder or sampling
        st.error(f"Cannot use the {HEADS[kind].label}: {shown_name(e)}")
        st.stop()
    feed = st.session_state.setdefault("live_feed", LiveFeed())
    config = LiveConfig(limits=project_limits())
    feed.use(key, lambda on_answer: LiveEngine(predictor, config, on_answer, name="the camera").start())
    camera, answer_box = st.columns([2, 3], gap="large")  # the camera beside its answer, both in view
    with camera:
        ctx = webrtc_streamer(key="live-camera", mode=WebRtcMode.SENDRECV, video_frame_callback=feed.on_frame,
                              on_video_ended=feed.stop, rtc_configuration={"iceServers": servers},
                              media_stream_constraints=CAMERA)
    with answer_box:
        error_slot, answer_slot, speed_slot, top_slot = st.empty(), st.empty(), st.empty(), st.empty()
    strip_slot = st.empty()

    def draw() -> None:
        if feed.error or feed.engine_error():
            error_slot.error(shown_name(feed.error or f"The live engine stopped: {feed.engine_error()}"))
        if feed.latest is None:
            answer_slot.info("Press START and allow the camera: the first answer comes after the first frames."
                             if not ctx.state.playing else "Waiting for the first answer…")
            return
        draw_answer(answer_slot, feed.latest)
        speed_slot.caption(speed_text(feed.latest))
        top_slot.altair_chart(top_chart(feed.latest), width="stretch")
        strip_slot.altair_chart(strip_chart(list(feed.history)), width="stretch")

    draw()
    if not ctx.state.playing:
        feed.stop()
        return
    drawn = time.monotonic()
    while ctx.state.playing:  # a rerun (a click, Stop) ends this run of the page, and with it the loop
        # drawn at each answer, and every REDRAW_S without one: a drawing is where Streamlit ends the run of a
        # session that has gone (a closed tab), so the loop never outlives its browser
        if feed.next_answer(WAIT_S) is not None or time.monotonic() - drawn > REDRAW_S:
            draw()
            drawn = time.monotonic()


def chosen_head(kind: str, trained: dict[str, Path]):
    """(head, its features, a key that changes with it) for the choice: a trained head file, or zero-shot over
    the actions typed (made from the encoder's text tower, calibrated as the project's zero-shot head when there
    is one). ConfigError/HeadError when it cannot be used."""
    if HEADS[kind].trained:
        path = trained[kind]
        head = cached_head(str(path), path.stat().st_mtime_ns)
        return head, head.meta_.features, (kind, path.stat().st_mtime_ns)
    saved, calibration = Path(HEADS[kind].file), None
    if saved.is_file():
        made = cached_head(str(saved), saved.stat().st_mtime_ns)
        features, default, calibration = dict(made.meta_.features), made.classes_, made.calibration_
    elif (cfg := project_config()) is not None:
        features = {"encoder_model": cfg.model, **cfg.sampling().attrs(), "preprocess": cfg.preprocess,
                    "backend": cfg.backend, "quantize": cfg.quantize}
        default = cache_classes()
    else:
        raise ConfigError(f"run the app from the project folder (no {saved} and no {PARAMS} here)")
    text = st.text_area(ACTIONS_LABEL, value="\n".join(default), key="live_actions")
    actions = typed_actions(text)  # ConfigError: fewer than two
    encoder = cached_encoder(features["encoder_model"], features["preprocess"], features["backend"],
                             features["quantize"])
    attrs = {**encoder.describe(), **Sampling.from_attrs(features).attrs()}
    head = zeroshot_head(cached_text_embeddings(features["encoder_model"], tuple(actions)), actions,
                         attrs).use_calibration(calibration)
    return head, {**features, **attrs}, (kind, tuple(actions), str(features))


def cache_classes() -> list[str]:
    """The classes of the project's feature cache (its metadata only), the actions zero-shot starts from; [] when
    there is no readable cache yet."""
    try:
        return open_cache(CACHE_PATH).class_names if Path(CACHE_PATH).is_file() else []
    except (UserError, OSError):
        return []


def project_config() -> ExtractConfig | None:
    """Stage one's settings from the project's params.yaml, as the stage reads them; None without one, ConfigError
    when it cannot be used."""
    return project_extract_config()


def project_limits() -> DecodeLimits:
    """Stage one's frame size limits from params.yaml (extract.max_pixels ...), or the defaults without one."""
    try:
        cfg = project_config()
    except (UserError, OSError):  # a params.yaml being edited: the defaults
        cfg = None
    return cfg.limits() if cfg is not None else DecodeLimits()


def draw_answer(slot, answer) -> None:
    """The current answer large, as Predict says it: the class and its calibrated probability, or "not sure" with
    the best guess and the threshold this head needs."""
    with slot.container():
        show_answer(answer)


def speed_text(answer) -> str:
    """The small print: stream time, latency, frames embedded per second, frames pooled and dropped."""
    return (f"at {answer.time:.1f} s · latency {answer.latency_ms:.0f} ms · {answer.embed_fps:.1f} frames embedded "
            f"per second · {answer.frames} frames in this answer · {answer.dropped} dropped (the encoder was busy)")


def top_chart(answer) -> alt.Chart:
    """The top classes as horizontal bars, highest on top, the axis in % like the text."""
    table = pd.DataFrame({"action": [class_text(c) for c, _ in answer.top],
                          "probability": [p for _, p in answer.top]})
    return alt.Chart(table, height=alt.Step(26)).mark_bar().encode(
        x=alt.X("probability:Q", title="probability", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        y=alt.Y("action:N", title=None, sort="-x", axis=alt.Axis(labelLimit=0)),
        tooltip=["action", alt.Tooltip("probability:Q", format=".1%")])


def strip_chart(history) -> alt.Chart:
    """The last HISTORY_S seconds of answers as a strip: each answer a block from the answer before it to its own
    stream time, coloured by the best guess, pale where not sure (as Predict's timeline)."""
    times = [h.time for h in history]
    starts = [max(t - 1.0, p) for t, p in zip(times, [times[0] - 1.0, *times[:-1]])] if times else []
    table = pd.DataFrame({"start": starts, "seconds": times, "best guess": [class_text(h.best) for h in history],
                          "answer": [class_text(h.best) if h.sure else NOT_SURE for h in history],
                          "certainty": ["sure" if h.sure else "not sure" for h in history],
                          "probability": [h.probability for h in history]})
    end = max(max(times, default=0.0), HISTORY_S)
    table["lane"] = ""  # one row of blocks (a bar chart without y draws nothing in Streamlit)
    return alt.Chart(table, height=alt.Step(32)).mark_bar(stroke="white", clip=True).encode(
        y=alt.Y("lane:N", axis=None),
        x=alt.X("start:Q", title=f"stream time (s): the last {HISTORY_S:.0f} s of answers",
                scale=alt.Scale(domain=[end - HISTORY_S, end])), x2="seconds",
        color=alt.Color("best guess:N", legend=alt.Legend(orient="right", title="best guess")),
        opacity=alt.Opacity("certainty:N", legend=None, scale=alt.Scale(domain=["sure", "not sure"],
                                                                      range=[1.0, 0.35])),
        tooltip=["seconds", "answer", "best guess", alt.Tooltip("probability:Q", format=".1%")])

# Streamlit runs a page as __main__; a decode worker started while it runs re-runs the file as __mp_main__
# (multiprocessing does): there it must draw nothing and load nothing
if __name__ == "__main__":
    main()
