"""The app's Predict page: upload a video and see what the person in it is doing (the full encoder, live)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from app.common import (ACTIONS_LABEL, Busy, cached_encoder, cached_head, cached_pool, cached_text_embeddings,
                        calibration_caption, class_text, held_worker, sampling_text, shown_name, start_encoder_load,
                        typed_actions)
from app.predict_charts import show_frames, show_prediction, show_timeline
from pipeline.extract.cache import open_cache, random_encoder_note
from pipeline.data.discover import VIDEO_EXTENSIONS
from pipeline.errors import ConfigError, HeadError, UserError, VideoError
from pipeline.extract.runner import ExtractConfig, dataset
from pipeline.heads.kinds import FROM_TEXT, HEADS, TRAINED
from pipeline.paths import CACHE_PATH, PARAMS
from pipeline.tools.predict import make_predictor, predict_segments, predict_video, temporary_upload
from pipeline.decode.preview import Preview, PreviewConfig
from pipeline.decode.sampling import Sampling
from pipeline.decode.video import DecodeLimits
from pipeline.heads.zeroshot import zeroshot_head
from pipeline.extract.project import project_extract_config

UPLOAD_TYPES = [e[1:] for e in VIDEO_EXTENSIONS]  # the same videos as stage one takes
TEXT_LINE_PX = 26  # the height of one line in Streamlit's text area
WINDOW, STRIDE = 4.0, 2.0  # seconds: the timeline's sliding windows (widened for long videos: predict_segments)
STEP_LABELS = {"loading": "Loading the CLIP encoder (the first time only: it can take a while)…",
               "decoding": "Decoding the sampled frames…", "encoding": "Encoding them with CLIP…",
               "classifying": "Classifying…"}


@dataclass
class Choice:
    """The head the page will predict with: a trained head, or for zero-shot the encoder settings, the actions
    typed and the calibration (the head itself is made at Predict, when the encoder loads)."""

    kind: str
    features: dict  # the encoder and sampling (HeadMeta.features; for zero-shot without a saved head, what it knows)
    classes: list[str]
    head: object = None
    calibration: object = None
    calibrated_on: list[str] | None = None  # the classes the calibration was fitted on, where they may differ


def main() -> None:
    st.title("What is the person doing?")
    # run from the project folder, like dvc: heads and a local encoder directory are found relative to it
    trained = {kind: Path(HEADS[kind].file) for kind in TRAINED if Path(HEADS[kind].file).is_file()}
    if not trained:
        st.info(f"No trained head yet in `{Path.cwd()}`: train one there with `dvc repro` "
                f"(it writes {' and '.join(k.file for k in HEADS.values())}). Meanwhile, zero-shot works from the "
                "names of the actions alone.")
    kind = st.radio("Head", [*trained, FROM_TEXT], format_func=lambda kind: HEADS[kind].label, horizontal=True)
    settings = project_settings()
    # stage one's time and memory limits per video (extract.video_timeout_s, worker_memory_mb), as the messages say
    pool = cached_pool(settings.pool().timeout_s, settings.pool().memory_mb) if settings else cached_pool()
    limits = settings.limits() if settings else DecodeLimits()
    try:
        if not HEADS[kind].trained:
            choice = zero_shot_choice(settings)
        else:
            head = cached_head(str(trained[kind]), trained[kind].stat().st_mtime_ns)
            choice = Choice(kind, head.meta_.features, head.classes_, head, head.calibration_)
    except UserError as e:
        st.error(f"Cannot use the {HEADS[kind].label}: {shown_name(e)}")
        st.stop()
    features = choice.features
    # loaded in the background from now, so that the first Predict finds it ready; a failure shows at Predict
    start_encoder_load(features["encoder_model"], features["preprocess"], features["backend"], features["quantize"])
    # every value from the head's file shown literally (shown_name): a head's metadata is not Markdown to render
    st.caption(f"{HEADS[kind].label} · encoder {shown_name(features['encoder_model'])} · "
               f"{shown_name(sampling_text(features))} · classes: "
               f"{', '.join(shown_name(class_text(c)) for c in choice.classes)}")
    # how much data the head was trained and calibrated on
    st.caption(shown_name(calibration_caption(choice.calibration, choice.classes, choice.calibrated_on)))
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
    with preview:
        # the whole name (the uploader shortens a long one), shown literally: it is the sender's, never a path here
        size = f"{upload.size / 2**20:.1f} MB" if upload.size >= 2**20 else f"{upload.size / 2**10:.0f} KB"
        st.caption(f"**{shown_name(upload.name)}** · {size}")
        show_preview(upload, pool, limits)
    with answer:
        if st.button("Predict", type="primary"):
            result = run_prediction(upload, choice, pool, limits, timeline)
            if result is None:
                return
            st.session_state["result"] = {"file_id": upload.file_id, "head": kind, **result}
        shown = st.session_state.get("result")
        if shown is None or shown["file_id"] != upload.file_id:
            return
        # kept after a head switch (or new zero-shot actions), and said to be the other head's
        if shown["head"] != kind:
            st.info(f"The answer below is the {HEADS[shown['head']].label}'s: press Predict for the "
                    f"{HEADS[kind].label}'s.")
        elif list(shown["prediction"].class_names) != choice.classes:
            st.info("The answer below is for the previous actions: press Predict for these.")
        st.caption(f"Answer of the {HEADS[shown['head']].label}")
        if shown["note"] and not random_encoder_note(features):  # known once the encoder has loaded
            st.warning(shown["note"])
        show_prediction(shown["prediction"])
    show_frames(shown["prediction"])
    if shown["timeline_error"]:
        st.warning(f"No timeline: {shown_name(shown['timeline_error'])} (the answer above is the whole video's).")
    if shown["timeline"]:
        show_timeline(shown["timeline"])


def project_settings() -> ExtractConfig | None:
    """Stage one's settings from the project's params.yaml (the decode limits and, for zero-shot, the encoder and
    the data), or None where there is no params.yaml or it cannot be read (then the defaults)."""
    try:
        return project_extract_config()
    except (UserError, OSError):  # a params.yaml being edited: zero-shot says so, the rest use defaults
        return None


def show_preview(upload, pool, limits: DecodeLimits) -> None:
    """A player the browser can play: the upload itself, or where its codec is one Chromium does not play (HEVC,
    MPEG-4 part 2, MJPEG...) a short H.264 copy of its first seconds, made in a decode worker, and a line saying so.
    Worked out once per upload (kept in the session)."""
    kept = st.session_state.get("preview")
    if kept is None or kept[0] != upload.file_id:
        try:
            with held_worker(pool) as held, temporary_upload(upload.getvalue()) as tmp:
                kept = (upload.file_id, held.read(tmp, PreviewConfig(limits=limits)))
        except Busy:
            st.video(upload)
            st.caption("Not yet checked whether your browser plays this video: the app is busy.")
            return
        except (UserError, OSError) as e:  # shown again, with the file's name, when Predict reads it
            kept = (upload.file_id, e)
        st.session_state["preview"] = kept
    found = kept[1]
    if not isinstance(found, Preview):
        st.caption(f"No preview: {shown_name(getattr(found, 'reason', found))}")
    elif found.playable:
        st.video(upload)
    elif found.data:
        st.video(found.data, format="video/mp4")
        st.caption(f"Your browser cannot play this video's codec ({shown_name(found.codec)}): the preview is its first "
                   f"{found.seconds:.1f} s re-encoded as H.264. Predict reads the original.")
    else:
        st.caption(f"Your browser cannot play this video's codec ({shown_name(found.codec)}), and this FFmpeg has no "
                   "H.264 encoder for a preview: the sampled frames appear below after Predict.")


def build_predictor(choice: Choice, pool, limits: DecodeLimits):
    """The Predictor for the choice: the encoder loaded (once per process), the zero-shot head made from the typed
    actions; HeadError when the head was made with another encoder."""
    f = choice.features
    encoder = cached_encoder(f["encoder_model"], f["preprocess"], f["backend"], f["quantize"])
    head = choice.head
    if not HEADS[choice.kind].trained and head is None:
        attrs = {**encoder.describe(), **Sampling.from_attrs(f).attrs()}
        head = zeroshot_head(cached_text_embeddings(f["encoder_model"], tuple(choice.classes)), choice.classes,
                             attrs).use_calibration(choice.calibration)
    predictor = make_predictor(head, encoder, pool)
    predictor.limits = limits
    return predictor


def run_prediction(upload, choice: Choice, pool, limits: DecodeLimits, timeline: bool) -> dict | None:
    """{"prediction", "timeline", "timeline_error", "note"} for the uploaded video, with a progress bar over every
    step (the encoder's first load too); None after showing the error. One decode worker is held for the whole
    job, or the page says at once that the app is busy."""
    # a progress bar rather than st.status, which sleeps 50 ms on entry and exit to let the browser catch up
    bar = st.progress(0.0, text=STEP_LABELS["loading"])
    steps = list(STEP_LABELS)

    def on_step(step: str) -> None:
        bar.progress(steps.index(step) / len(steps), text=STEP_LABELS[step])

    result = {"timeline": None, "timeline_error": None}
    try:
        with held_worker(pool) as held:
            predictor = build_predictor(choice, held, limits)
            result["note"] = random_encoder_note(predictor.head.meta_.features)
            with temporary_upload(upload.getvalue()) as tmp:
                result["prediction"] = predict_video(tmp, predictor, on_step)
                if timeline:
                    try:  # the whole video's answer stands without it
                        result["timeline"] = predict_segments(
                            tmp, predictor, WINDOW, STRIDE, on_window=lambda done, total: bar.progress(
                                done / total, text=f"Timeline: window {done} of {total}…"))
                    except VideoError as e:
                        result["timeline_error"] = e.reason
    except Busy as e:
        st.warning(f"{e}.")
        return None
    except HeadError as e:  # made for another encoder or sampling than this code's
        st.error(f"Cannot use the {HEADS[choice.kind].label}: {shown_name(e)}")
        return None
    except VideoError as e:  # it names "the uploaded file": here, the upload's own name
        st.error(f"{shown_name(upload.name)}: {shown_name(e.reason)}")
        return None
    except (UserError, OSError) as e:
        st.error(f"{shown_name(upload.name)}: {shown_name(e)}")
        return None
    finally:
        bar.empty()
    return result


def zero_shot_choice(settings: ExtractConfig | None) -> Choice:
    """Zero-shot over the actions the user types, with the encoder and sampling of the project.

    Settings, calibration and the starting list of actions come from the zero-shot head of `dvc repro` when
    there is one, else from params.yaml and the class folders under data.root (uncalibrated: the default "not
    sure" threshold still applies). ConfigError when neither is there.
    """
    saved, calibration = Path(HEADS[FROM_TEXT].file), None
    if saved.is_file():
        made = cached_head(str(saved), saved.stat().st_mtime_ns)
        features, default = dict(made.meta_.features), made.classes_
        # its temperature, fitted on the project's validation videos, is the best guess for other actions too
        calibration = made.calibration_
    elif settings is not None:  # the settings and classes stage one would use (read as the stages read them)
        features = {"encoder_model": settings.model, **settings.sampling().attrs(),
                    "preprocess": settings.preprocess, "backend": settings.backend, "quantize": settings.quantize}
        default = project_classes(settings)
    elif Path(PARAMS).is_file():  # unreadable (project_settings): say why
        project_extract_config()  # raises the ConfigError that says what is wrong with it
        raise ConfigError(f"{PARAMS} cannot be read")
    else:
        raise ConfigError(f"run the app from the project folder (no {saved} and no {PARAMS} here)")
    # tall enough to show every action (Streamlit's default shows about three lines)
    text = st.text_area(ACTIONS_LABEL, value="\n".join(default), height=max(68, TEXT_LINE_PX * len(default) + 20))
    actions = typed_actions(text)  # ConfigError: fewer than two
    return Choice(FROM_TEXT, features, actions, calibration=calibration,
                  calibrated_on=list(default) if calibration is not None else None)


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


# Streamlit runs a page as __main__; a decode worker started while it runs re-runs the file as __mp_main__
# (multiprocessing does): there it must draw nothing and load nothing
if __name__ == "__main__":
    main()
