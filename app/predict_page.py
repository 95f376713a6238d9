"""The app's Predict page: upload a video and see what the person in it is doing (the full encoder, live)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app.common import cached_encoder, cached_head, frame_strip
from pipeline.heads import HEAD_FILES
from pipeline.predict import make_predictor, predict_bytes

UPLOAD_TYPES = ["mp4", "avi", "mov", "mkv", "webm"]
HEAD_LABELS = {"linear": "linear head", "logreg": "logistic regression"}
STEP_LABELS = {"decoding": "Decoding the sampled frames…", "encoding": "Encoding them with CLIP…",
               "classifying": "Classifying…"}


def main() -> None:
    st.title("What is the person doing?")
    # run from the project folder, like dvc: heads and a local encoder directory are found relative to it
    heads = {kind: Path(path) for kind, path in HEAD_FILES.items() if Path(path).is_file()}
    if not heads:
        st.info("No trained head yet. Train one from the project folder with `dvc repro` "
                f"(it writes {' and '.join(HEAD_FILES.values())}), then reload this page.")
        st.stop()
    kind = st.radio("Head", list(heads), format_func=HEAD_LABELS.get, horizontal=True) if len(heads) > 1 \
        else next(iter(heads))
    try:
        head = cached_head(str(heads[kind]), heads[kind].stat().st_mtime_ns)
        encoder = cached_encoder(head.meta["encoder_model"], head.meta["preprocess"], head.meta["quantize"])
        predictor = make_predictor(head, encoder)
    except ValueError as e:
        st.error(f"Cannot use the {HEAD_LABELS[kind]}: {e}")
        st.stop()
    st.caption(f"{HEAD_LABELS[kind]} · encoder `{head.meta['encoder_model']}` · "
               f"{head.meta['num_frames']} frames per video · classes: {', '.join(head.class_names)}")

    limit = st.get_option("server.maxUploadSize")
    upload = st.file_uploader(f"Upload a video ({', '.join(UPLOAD_TYPES)}; up to {limit} MB)", type=UPLOAD_TYPES)
    if upload is None:
        return
    st.video(upload)
    if not st.button("Predict", type="primary"):
        return
    # a progress bar rather than st.status, which sleeps 50 ms on entry and exit to let the browser catch up
    bar = st.progress(0.0, text="Starting…")
    steps = list(STEP_LABELS)

    def on_step(step: str) -> None:
        bar.progress(steps.index(step) / len(steps), text=STEP_LABELS[step])

    try:
        prediction = predict_bytes(upload.getvalue(), predictor, on_step=on_step)
    except ValueError as e:
        st.error(f"{upload.name}: {e}")
        return
    finally:
        bar.empty()
    show_prediction(prediction)


def show_prediction(prediction) -> None:
    """The top action in large type, all class probabilities, and the sampled frames with their own top class."""
    st.markdown(f"## {prediction.top_class.replace('_', ' ')}")
    st.markdown(f"**{prediction.top_probability:.1%}** probability")
    st.bar_chart(pd.DataFrame({"probability": prediction.probabilities}, index=prediction.class_names),
                 horizontal=True)
    st.markdown("#### Sampled frames")
    per_frame, names = prediction.frame_probabilities, prediction.class_names
    captions = [f"{t:.2f} s · {names[int(p.argmax())]} {p.max():.0%}" for t, p in
                zip(prediction.clip.timestamps, per_frame)]
    frame_strip(prediction.clip.frames, captions)


main()
