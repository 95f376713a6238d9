"""Streamlit app: upload a video and see what the person in it is doing (full encoder, live, on the trained head)."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import pandas as pd
import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `streamlit run` puts only app/ on the path
from pipeline.encoder import load_encoder  # noqa: E402
from pipeline.heads import HEAD_FILES, load_head  # noqa: E402
from pipeline.predict import make_predictor, predict_bytes  # noqa: E402

UPLOAD_TYPES = ["mp4", "avi", "mov", "mkv", "webm"]
HEAD_LABELS = {"linear": "linear head", "logreg": "logistic regression"}
STEP_LABELS = {"decoding": "Decoding the sampled frames…", "encoding": "Encoding them with CLIP…",
               "classifying": "Classifying…"}


@st.cache_resource(show_spinner="Loading the CLIP encoder…")
def cached_encoder(model_id: str, preprocess: str):
    """The encoder, loaded once per process (on CUDA when present) and shared by every session."""
    return load_encoder(model_id, "auto", preprocess)


@st.cache_resource(show_spinner=False)
def cached_head(path: str, mtime_ns: int):
    """A trained head, loaded once per file version (mtime_ns in the key: retraining reloads it)."""
    return load_head(path)


def main() -> None:
    st.set_page_config(page_title="clip-har", layout="wide")
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
        predictor = make_predictor(head, cached_encoder(head.meta["encoder_model"], head.meta["preprocess"]))
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
    with st.status("Working…", expanded=False) as status:
        try:
            prediction = predict_bytes(upload.getvalue(), predictor,
                                       on_step=lambda step: status.update(label=STEP_LABELS[step]))
        except ValueError as e:
            status.update(label="Could not read this video", state="error")
            st.error(f"{upload.name}: {e}")
            return
        status.update(label="Done", state="complete")
    show_prediction(prediction)


def show_prediction(prediction) -> None:
    """The top action in large type, all class probabilities, and the sampled frames with their own top class."""
    st.markdown(f"## {prediction.top_class.replace('_', ' ')}")
    st.markdown(f"**{prediction.top_probability:.1%}** probability")
    st.bar_chart(pd.DataFrame({"probability": prediction.probabilities}, index=prediction.class_names),
                 horizontal=True)
    st.markdown("#### Sampled frames")
    clip, per_frame = prediction.clip, prediction.frame_probabilities
    columns = 8
    for start in range(0, len(clip.frames), columns):
        for col, i in zip(st.columns(columns), range(start, min(start + columns, len(clip.frames)))):
            frame = clip.frames[i]
            thumb = cv2.resize(frame, (160, max(1, round(160 * frame.shape[0] / frame.shape[1]))),
                               interpolation=cv2.INTER_AREA)
            top = int(per_frame[i].argmax())
            col.image(thumb, caption=f"{clip.timestamps[i]:.2f} s · {prediction.class_names[top]} "
                                     f"{per_frame[i, top]:.0%}")


main()
