"""What the app's pages share: process-wide caches (encoder, heads, decode workers, feature cache, launch folder),
a frame strip, and names as a page shows them."""
from __future__ import annotations

import atexit
import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from pathlib import Path

import cv2
import streamlit as st

from pipeline.errors import ConfigError, UserError, printable
from pipeline.heads.calibration import describe_data
from pipeline.heads.kinds import FROM_TEXT, HEADS, load_head
from pipeline.tools.inspector import load
from pipeline.tools.predict import NOT_SURE, answer_text, encoder_for
from pipeline.decode.preview import decode_or_preview
from pipeline.decode.sampling import Sampling
from pipeline.decode.workers import DecodePool, PoolConfig, auto_workers
from pipeline.embed.hub import may_download
from pipeline.heads.zeroshot import project_templates, text_embeddings
from pipeline.paths import PARAMS
from pipeline.settings import load_params

# Decode workers of the app's server process, shared by its sessions: one per core, at least 2 (an upload that
# takes a worker for its whole timeout leaves another for everyone else), at most 4 (each may take
# extract.worker_memory_mb).
APP_WORKERS = min(4, max(2, auto_workers()))


class Busy(UserError):
    """Every decode worker of the app is reading another session's upload: try again in a moment."""


class SharedWorkers:
    """The app's decode workers, shared by every session. A session takes one whole worker for one job (a
    preview, or a prediction with its timeline) or hears at once that all are taken (Busy): it never waits in a
    queue behind another session's upload. `read` takes one for a single read (the Embeddings page)."""

    def __init__(self, pool: DecodePool, workers: int):
        self.pool, self.workers = pool, workers
        self._free = threading.BoundedSemaphore(workers)  # one per worker: a job taken is a worker free for it

    @contextmanager
    def take(self) -> Iterator[DecodePool]:
        """The pool, with one of its workers set aside for the caller until it leaves; Busy when none is free."""
        if not self._free.acquire(blocking=False):
            raise Busy(f"the app is busy: its {self.workers} decode workers are all reading other uploads; "
                       "try again in a moment")
        try:
            yield self.pool
        finally:
            self._free.release()

    def read(self, file: str, cfg, hash_bytes: bool = False):
        """DecodePool.read in a worker taken for it (Busy when none is free)."""
        with self.take() as pool:
            return pool.read(file, cfg, hash_bytes)


def held_worker(pool) -> SharedWorkers | nullcontext:
    """`with held_worker(cached_pool(...)) as pool:` a worker for one job: SharedWorkers.take, or any other pool
    (a DecodePool a test puts in its place) as it is."""
    return pool.take() if isinstance(pool, SharedWorkers) else nullcontext(pool)


@st.cache_resource(show_spinner=False)
def launch_record() -> dict:
    """One dict per process, shared by every session: {"from": folder} once the app, launched outside a project,
    has moved into its own (the working folder is the process's; streamlit_app.py)."""
    return {}


_LOADS_LOCK = threading.Lock()  # one load per encoder, whichever sessions ask at once


@st.cache_resource(show_spinner=False)
def _encoder_loads() -> dict:
    """This process's encoder loads, running or done: (model, preprocess, backend, quantize) -> Future."""
    return {}


def start_encoder_load(model_id: str, preprocess: str, backend: str, quantize: str) -> Future:
    """Start loading the encoder in a background thread, once per process and settings (again after a load that
    failed), and return its Future: a page starts it as it opens, so that Predict finds it loaded. The thread only
    loads (no Streamlit call, so it needs no session's ScriptRunContext); a failure is kept in the Future and
    raised on the page that waits for it (cached_encoder)."""
    key = (model_id, preprocess, backend, quantize)
    with _LOADS_LOCK:
        loads = _encoder_loads()
        load = loads.get(key)
        if load is None or (load.done() and load.exception() is not None):
            load = loads[key] = Future()
            threading.Thread(target=_load, args=(load, key), name="encoder-load", daemon=True).start()
    return load


def _load(future: Future, key: tuple[str, str, str, str]) -> None:
    model_id, preprocess, backend, quantize = key
    try:
        future.set_result(encoder_for({"encoder_model": model_id, "preprocess": preprocess, "backend": backend,
                                       "quantize": quantize}))
    except BaseException as e:  # noqa: BLE001  (handed over: the page waiting on the Future raises it, never lost)
        future.set_exception(e)


def cached_encoder(model_id: str, preprocess: str, backend: str, quantize: str):
    """The encoder, loaded once per process (on CUDA when present, unless onnxruntime) and shared by every session:
    waits for the load start_encoder_load began (or begins it), raising its error here."""
    return start_encoder_load(model_id, preprocess, backend, quantize).result()


@st.cache_resource(show_spinner=False)
def cached_pool(timeout_s: float = PoolConfig.timeout_s, memory_mb: int = PoolConfig.memory_mb) -> SharedWorkers:
    """The app's decode workers (APP_WORKERS, with stage one's time and memory limits per video: the project's
    extract.video_timeout_s and worker_memory_mb), shared by every session and page, closed at exit."""
    pool = DecodePool(PoolConfig(APP_WORKERS, timeout_s, memory_mb), decode=decode_or_preview)
    atexit.register(pool.close)
    return SharedWorkers(pool, APP_WORKERS)


@st.cache_resource(show_spinner=False)
def cached_head(path: str, mtime_ns: int):
    """A trained head, loaded once per file version (mtime_ns in the key: retraining reloads it)."""
    return load_head(path)


def cached_text_embeddings(model_id: str, actions: tuple[str, ...], templates: tuple[str, ...] | None = None):
    """The actions' ClassText (text embeddings float32 (C, D), the scoring, the templates), made with `templates` or
    else the project's (project_templates: its zero-shot head's, else params.yaml's), so that zero-shot over typed
    actions prompts as the saved head did; computed once per model, list and templates (the text tower itself
    is loaded once per process: pipeline.heads.zeroshot.text_tower)."""
    return _text_embeddings(model_id, tuple(actions), tuple(templates) if templates is not None else app_templates())


@st.cache_resource(show_spinner="Encoding the actions with the encoder's text tower…")
def _text_embeddings(model_id: str, actions: tuple[str, ...], templates: tuple[str, ...]):
    """cached_text_embeddings' work, once per model, list and templates (a model named by a head: from disk only)."""
    return text_embeddings(model_id, list(actions), templates, download=may_download(model_id))


def app_templates() -> tuple[str, ...]:
    """project_templates, the project's zero-shot head read through cached_head (once per file version)."""
    saved = Path(HEADS[FROM_TEXT].file)
    return project_templates(cached_head(str(saved), saved.stat().st_mtime_ns) if saved.is_file() else None)


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
            col.image(thumb, caption=shown_name(captions[i]))  # a caption is Markdown: its class name taken literally


# Every ASCII punctuation character, each of which CommonMark lets a backslash take literally: what makes Markdown
# of text (links, images, code, emphasis, HTML, entities `&...;`) and Streamlit's own `:red[...]`, `:material/...:`
# and `$...$`.
_MARKDOWN = re.compile(r"([!-/:-@\[-`{-~])")
# GitHub's autolinks (`http://x`, `www.x.y`, `a@b.c`, `mailto:`) are found in the text after its escapes are
# undone: an invisible WORD JOINER after each `:` and `@` and inside `www.` breaks them, the text reading the same.
_AUTOLINK = re.compile(r"([:@]|(?i:www)(?=\.))")
JOINER = "\u2060"


def shown_name(name: object) -> str:
    """Any text from a file (a file or class name, a cache's or head's attribute, an error quoting them) as a page
    shows it in Markdown: escaped (pipeline.errors.printable), and every punctuation character taken literally, so
    that it can neither forge a line nor become a link (autolinks too), an image, code or a heading."""
    return _MARKDOWN.sub(r"\\\1", _AUTOLINK.sub(r"\1" + JOINER, printable(name)))


def project_data_root() -> Path | None:
    """The data root the project's own settings name (params.yaml's data.root, resolved in the project folder), or
    None where there is no params.yaml or it cannot be read: the only place the app reads a cached video from (a
    cache's own data_root attribute is what the cache says, never a place to read)."""
    if not Path(PARAMS).is_file():
        return None
    try:
        return Path(load_params()["data"]["root"]).resolve()
    except (UserError, OSError, KeyError):  # a params.yaml being edited: the page says there is no root
        return None


ACTIONS_LABEL = "Actions, one per line or separated by commas (edit them freely)"


def typed_actions(text: str) -> list[str]:
    """The actions a user typed for zero-shot, one per line or separated by commas, each once in the order typed.
    ConfigError for fewer than two: zero-shot chooses among them, and one action would always be the answer."""
    actions = list(dict.fromkeys(a.strip() for a in re.split(r"[,\n]", text) if a.strip()))
    if len(actions) < 2:
        raise ConfigError("type at least two actions, one per line or separated by commas")
    return actions


def calibration_caption(calibration, classes: list[str], calibrated_on: list[str] | None = None) -> str:
    """How much data a head was trained and calibrated on (describe_data); for zero-shot over actions other than
    those its calibration was fitted on (calibrated_on, the project's classes), a line saying so instead."""
    if calibration is not None and calibrated_on is not None and set(classes) != set(calibrated_on):
        return ("zero-shot over the actions typed: its temperature was fitted on the project's classes, never on "
                "videos of these actions (a best guess)")
    return describe_data(calibration)


def sampling_text(features: dict, unit: str = "video") -> str:
    """How the head's cache sampled each video, said of each `unit` (Sampling.text_per: a video on Predict, an answer
    on Live), or its recorded num_frames when this code does not make that sampling (predict then says why)."""
    try:
        return Sampling.from_attrs(features).text_per(unit)
    except UserError:
        return f"{features.get('num_frames')} frames per {unit}"


def class_text(class_name: str) -> str:
    """A class name as people read it: escaped (printable), underscores as spaces (so that it wraps between
    words), and quoted when it reads "not sure", which only the abstention says unquoted (answer_text)."""
    return answer_text(printable(class_name).replace("_", " "))


def show_answer(answer) -> None:
    """An answer (a Prediction, or a live answer) as the pages say it: the class in large type and its calibrated
    probability, or "not sure" with the best guess and the threshold this head needs."""
    if answer.sure:
        st.markdown(f"## {shown_name(class_text(answer.top_class))}")
        st.markdown(f"**{answer.top_probability:.1%}** probability")
    else:
        st.markdown(f"## {NOT_SURE}")
        st.markdown(f"best guess **{shown_name(class_text(answer.top_class))}** at {answer.top_probability:.1%}, "
                    f"under the {answer.not_sure_below:.0%} this head needs to be sure with "
                    f"{len(answer.class_names)} classes")
