"""The app's Predict page: upload a video and see what the person in it is doing (the full encoder, live)."""
from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app.common import cached_encoder, cached_head, cached_pool, cached_text_embeddings, frame_strip
from pipeline.cache import open_cache, random_encoder_note
from pipeline.calibration import describe_data
from pipeline.discover import VIDEO_EXTENSIONS
from pipeline.errors import ConfigError, UserError, VideoError
from pipeline.extract import ExtractConfig, dataset
from pipeline.paths import CACHE_PATH, HEAD_FILES, PARAMS
from pipeline.predict import NOT_SURE, make_predictor, predict_segments, predict_video, temporary_upload
from pipeline.video import SAMPLING
from pipeline.zeroshot import zeroshot_head
from stages import read_params
from stages.extract import extract_config

UPLOAD_TYPES = [e[1:] for e in VIDEO_EXTENSIONS]  # the same videos as stage one takes
HEAD_LABELS = {"linear": "linear head", "logreg": "logistic regression", "zeroshot": "zero-shot"}
TEXT_LINE_PX = 26  # the height of one line in Streamlit's text area
WINDOW, STRIDE = 4.0, 2.0  # seconds: the timeline's sliding windows
STEP_LABELS = {"decoding": "Decoding the sampled frames…", "encoding": "Encoding them with CLIP…",
               "classifying": "Classifying…"}


def main() -> None:
    st.title("What is the person doing?")
    # run from the project folder, like dvc: heads and a local encoder directory are found relative to it
    trained = {kind: Path(HEAD_FILES[kind]) for kind in ("linear", "logreg") if Path(HEAD_FILES[kind]).is_file()}
    if not trained:
        st.info(f"No trained head yet in `{Path.cwd()}`: train one there with `dvc repro` "
                f"(it writes {' and '.join(HEAD_FILES.values())}). Meanwhile, zero-shot works from the names of "
                "the actions alone.")
    kind = st.radio("Head", [*trained, "zeroshot"], format_func=HEAD_LABELS.get, horizontal=True)
    try:
        if kind == "zeroshot":
            predictor = zero_shot_predictor()
        else:
            head = cached_head(str(trained[kind]), trained[kind].stat().st_mtime_ns)
            features = head.meta_.features
            encoder = cached_encoder(features["encoder_model"], features["preprocess"], features["backend"],
                                     features["quantize"])
            predictor = make_predictor(head, encoder, cached_pool())
    except UserError as e:
        st.error(f"Cannot use the {HEAD_LABELS[kind]}: {e}")
        st.stop()
    head = predictor.head
    features = head.meta_.features
    st.caption(f"{HEAD_LABELS[kind]} · encoder `{features['encoder_model']}` · {features['num_frames']} frames per "
               f"video · classes: {', '.join(head.classes_)}")
    st.caption(describe_data(head.calibration_))  # how much data the head was trained and calibrated on
    if random_encoder_note(features):
        st.warning(random_encoder_note(features))

    limit = st.get_option("server.maxUploadSize")
    # above the uploader, with a key: the choice survives a new upload
    timeline = st.toggle(f"Also a timeline: windows of {WINDOW:g} s every {STRIDE:g} s (for long videos)",
                         key="timeline")
    upload = st.file_uploader(f"Upload a video ({', '.join(UPLOAD_TYPES)}; up to {limit} MB)", type=UPLOAD_TYPES)
    if upload is None:
        return
    preview, answer = st.columns([2, 3], gap="large")  # a small player beside the answer, which stays in view
    preview.video(upload)
    with answer:
        if st.button("Predict", type="primary"):
            result = run_prediction(upload, predictor, timeline)
            if result is None:
                return
            st.session_state["result"] = {"file_id": upload.file_id, "head": kind, **result}
        shown = st.session_state.get("result")
        if shown is None or shown["file_id"] != upload.file_id:
            return
        # kept after a head switch (or new zero-shot actions), and said to be the other head's
        if shown["head"] != kind:
            st.info(f"The answer below is the {HEAD_LABELS[shown['head']]}'s: press Predict for the "
                    f"{HEAD_LABELS[kind]}'s.")
        elif list(shown["prediction"].class_names) != head.classes_:
            st.info("The answer below is for the previous actions: press Predict for these.")
        st.caption(f"Answer of the {HEAD_LABELS[shown['head']]}")
        show_prediction(shown["prediction"])
    show_frames(shown["prediction"])
    if shown["segments"]:
        show_timeline(shown["segments"])


def run_prediction(upload, predictor, timeline: bool) -> dict | None:
    """{"prediction", "segments"} for the uploaded video, with a progress bar; None after showing the error."""
    # a progress bar rather than st.status, which sleeps 50 ms on entry and exit to let the browser catch up
    bar = st.progress(0.0, text="Starting…")
    steps = list(STEP_LABELS)

    def on_step(step: str) -> None:
        bar.progress(steps.index(step) / len(steps), text=STEP_LABELS[step])

    segments = []
    try:
        with temporary_upload(upload.getvalue()) as tmp:
            prediction = predict_video(tmp, predictor, on_step)
            if timeline:
                segments = predict_segments(tmp, predictor, WINDOW, STRIDE, on_window=lambda done, total: bar.progress(
                    done / total, text=f"Timeline: window {done} of {total}…"))
    except VideoError as e:  # it names "the uploaded file": here, the upload's own name
        st.error(f"{upload.name}: {e.reason}")
        return None
    except (UserError, OSError) as e:
        st.error(f"{upload.name}: {e}")
        return None
    finally:
        bar.empty()
    return {"prediction": prediction, "segments": segments}


def show_timeline(segments) -> None:
    """The answer of each window as a bar over its time span, coloured by answer; hover shows the probability."""
    st.markdown("#### Timeline")
    table = pd.DataFrame({"start": [s.start for s in segments], "end": [s.end for s in segments],
                          "answer": [s.answer for s in segments],
                          "probability": [s.top_probability for s in segments],
                          "window": [f"{s.start:.1f}-{s.end:.1f} s" for s in segments]})
    table["row"] = np.arange(len(table)) % 2  # alternate rows so that overlapping windows stay visible
    st.altair_chart(alt.Chart(table).mark_bar().encode(
        x=alt.X("start", title="seconds"), x2="end", y=alt.Y("row:O", axis=None), color="answer",
        tooltip=["window", "answer", alt.Tooltip("probability", format=".1%")]), width="stretch")


def zero_shot_predictor():
    """A zero-shot head over the actions the user types, with the encoder and sampling of the project.

    Settings, calibration and the starting list of actions come from the zero-shot head of `dvc repro` when
    there is one, else from params.yaml and the class folders under data.root (uncalibrated). ConfigError when
    neither is there.
    """
    saved, calibration = Path(HEAD_FILES["zeroshot"]), None
    if saved.is_file():
        made = cached_head(str(saved), saved.stat().st_mtime_ns)
        features = made.meta_.features
        model, frames, preprocess = features["encoder_model"], features["num_frames"], features["preprocess"]
        backend, quantize = features["backend"], features["quantize"]
        default = made.classes_
        # its temperature, fitted on the project's validation videos, is the best guess for other actions too
        calibration = made.calibration_
    elif Path(PARAMS).is_file():  # the settings and classes stage one would use (read as the stages read them)
        cfg = extract_config(read_params())
        model, frames, preprocess, backend, quantize = (cfg.model, cfg.num_frames, cfg.preprocess, cfg.backend,
                                                        cfg.quantize)
        default = project_classes(cfg)
    else:
        raise ConfigError(f"run the app from the project folder (no {HEAD_FILES['zeroshot']} and no {PARAMS} here)")
    # tall enough to show every action (Streamlit's default shows about three lines)
    text = st.text_area("Actions, one per line (edit them freely)", value="\n".join(default),
                        height=max(68, TEXT_LINE_PX * len(default) + 20))
    actions = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    if not actions:
        raise ConfigError("type at least one action")
    encoder = cached_encoder(model, preprocess, backend, quantize)
    attrs = {**encoder.describe(), "num_frames": frames, "sampling": SAMPLING}
    head = zeroshot_head(cached_text_embeddings(model, tuple(actions)), actions, attrs).use_calibration(calibration)
    return make_predictor(head, encoder, cached_pool())


def project_classes(cfg: ExtractConfig) -> list[str]:
    """The project's class names: the cache's when stage one has run, else those stage one would find (the class
    folders, or the labels of data.annotations and data.classes); [] when the data cannot be read yet. Worked out
    once per data setting and cache version, not at every rerun of the page (discovery walks the whole dataset)."""
    cache = Path(CACHE_PATH).resolve()
    absolute = [str(Path(f).resolve()) if f else "" for f in (cfg.root, cfg.annotations, cfg.classes)]
    return _project_classes(*absolute, str(cache), cache.stat().st_mtime_ns if cache.is_file() else 0)


@st.cache_data(show_spinner="Listing the project's classes…")
def _project_classes(root: str, annotations: str, classes: str, cache: str, cache_mtime_ns: int) -> list[str]:
    """project_classes on absolute paths (the cache's key: the same names in another folder are other data)."""
    if cache_mtime_ns:
        try:
            return open_cache(cache).class_names  # its metadata only: the embeddings stay in the file
        except (UserError, OSError):
            pass  # a cache being rebuilt: the data's own classes
    try:
        return dataset(ExtractConfig(root=root, annotations=annotations, classes=classes))[1]
    except (UserError, OSError):
        return []


def label(class_name: str) -> str:
    """A class name as people read it: underscores become spaces (so that it wraps between words)."""
    return class_name.replace("_", " ")


def show_prediction(prediction) -> None:
    """The top action in large type and every class's probability, highest first."""
    if prediction.answer == prediction.top_class:
        st.markdown(f"## {label(prediction.top_class)}")
        st.markdown(f"**{prediction.top_probability:.1%}** probability")
    else:
        st.markdown(f"## {NOT_SURE}")
        st.markdown(f"best guess **{label(prediction.top_class)}** at {prediction.top_probability:.1%}, "
                    f"under the {prediction.not_sure_below:.0%} this head needs to be sure with "
                    f"{len(prediction.class_names)} classes")
    show_probabilities(prediction.class_names, prediction.probabilities)


def show_probabilities(class_names: list[str], probabilities) -> None:
    """Horizontal bars, highest probability on top, full class names, the axis in % like the text."""
    table = pd.DataFrame({"action": [label(n) for n in class_names], "probability": probabilities})
    st.altair_chart(alt.Chart(table).mark_bar().encode(
        x=alt.X("probability:Q", title="probability", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        y=alt.Y("action:N", title=None, sort="-x", axis=alt.Axis(labelLimit=0)),
        tooltip=["action", alt.Tooltip("probability:Q", format=".1%")]), width="stretch")


def show_frames(prediction) -> None:
    """The sampled frames, each with its time and its own top class."""
    st.markdown("#### Sampled frames")
    per_frame, names = prediction.frame_probabilities, prediction.class_names
    captions = [f"{t:.2f} s · {label(names[int(p.argmax())])} {p.max():.0%}" for t, p in
                zip(prediction.clip.timestamps, per_frame)]
    frame_strip(prediction.clip.frames, captions)


main()
