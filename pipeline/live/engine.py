"""The live engine: frames pushed as they arrive, embedded at a capped rate (latest frame wins), answered every S s.

One engine serves `clip-har-predict --live` and the app's Live page. Frames are RGB uint8 (H, W, 3) with a stream
timestamp in seconds. A frame passes the rate cap when it is the first in its tick of 1 / rate seconds of stream time
(at most `rate` a second, on a grid, so answer times fall on frames); it then waits in a one-frame slot for the encoder
thread, and a newer frame replaces it there (the older is dropped and counted): nothing queues. The encoder thread
preprocesses and embeds each frame once (the same resize, crop and forward pass as stage one: pipeline.embed.encoder)
into a rolling buffer of (timestamp, embedding); when the newest embedded frame crosses an answer time (every `every`
seconds of stream time), the buffer's frames inside the window are sampled as stage one sampled the head's cache
(evenly, sample_indices; or by frame rate over the window's span, fps_indices), the head runs on them, and a LiveAnswer
is given, averaged over the last `average` answers as mmaction2's --average-size. Answers go to `on_answer` (called in
the encoder thread) and to a bounded queue read by get().
"""
from __future__ import annotations

import collections
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.decode.frames import resize_crop
from pipeline.decode.container import DecodeLimits, check_size
from pipeline.decode.sampling import Sampling, fps_indices, sample_indices
from pipeline.embed.encoder import embed_frames
from pipeline.errors import ConfigError, UserError, number
from pipeline.live.source import DEFAULT_RATE
from pipeline.tools.predict import Predictor, _Answered

DEFAULT_EVERY = 1.0  # seconds of stream time between answers
# The default window holds the head's frames at the default rate (16 frames: 4 s), kept within the span of a short
# action clip (UCF101's and HMDB51's are mostly 2 to 8 s), which is what the heads were trained on.
WINDOW_SPAN = (2.0, 8.0)
ANSWERS_KEPT = 64  # answers waiting for get(): the oldest goes when nobody reads them
TOP = 3  # classes a LiveAnswer lists
SPEED_SPAN = 5.0  # wall seconds over which "frames embedded per second" is measured
JSON_KEYS = ("time", "answer", "probability", "sure", "latency_ms")  # what --json prints, exactly


def default_window(num_frames: int, rate: float) -> float:
    """Seconds an answer looks at when not set: the head's num_frames at `rate`, within WINDOW_SPAN."""
    return min(max(num_frames / rate, WINDOW_SPAN[0]), WINDOW_SPAN[1])


@dataclass(frozen=True)
class LiveConfig:
    """rate: frames embedded per second at most (stream time); every: seconds of stream time between answers;
    window: seconds of video each answer looks at (None: default_window for the head); average: answers whose
    probabilities are averaged (1: none); limits: the largest frame accepted (as for files)."""

    rate: float = DEFAULT_RATE
    every: float = DEFAULT_EVERY
    window: float | None = None
    average: int = 1
    limits: DecodeLimits = field(default_factory=DecodeLimits)

    def checked(self) -> LiveConfig:
        """Itself, or ConfigError naming the setting that is out of range."""
        number(self.rate, float, "rate", 0.01)
        number(self.every, float, "every", 0.01)
        number(self.average, int, "average", 1)
        if self.window is not None:
            number(self.window, float, "window", 0.01)
        if not all(math.isfinite(v) for v in (self.rate, self.every, self.window or 1.0)):
            raise ConfigError("rate, every and window must be finite numbers")
        return self


@dataclass
class LiveAnswer(_Answered):
    """One answer: at stream time `time` (s, the newest frame's), probabilities float32 (C,) of the frames in the
    window (averaged over the last `average` answers), `frames` embedded frames pooled, latency_ms from the newest
    frame's arrival (push) to this answer, frames embedded per wall second lately, frames dropped so far (the
    encoder could not keep up). `label`/`sure`/`answer` as for a Prediction (None / False: "not sure")."""

    time: float
    class_names: list[str]
    probabilities: np.ndarray
    not_sure_below: float
    latency_ms: float
    frames: int
    embed_fps: float
    dropped: int

    @property
    def top(self) -> list[tuple[str, float]]:
        """The TOP most probable classes, most probable first: [(class, probability)]."""
        order = np.argsort(-self.probabilities, kind="stable")[:TOP]
        return [(self.class_names[i], float(self.probabilities[i])) for i in order]

    def as_json(self) -> dict:
        """The JSON line's object: exactly JSON_KEYS (answer None when not sure)."""
        return {"time": round(self.time, 3), "answer": self.label, "probability": self.top_probability,
                "sure": self.sure, "latency_ms": round(self.latency_ms, 1)}


@dataclass
class LiveStats:
    """Counts since the engine started: frames pushed, passed the rate cap (accepted), embedded, dropped (replaced
    in the slot before the encoder took them), answers given; latencies_ms of the answers (the last 10,000)."""

    pushed: int = 0
    accepted: int = 0
    embedded: int = 0
    dropped: int = 0
    answers: int = 0
    latencies_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=10_000))

    def latency_percentile(self, q: float) -> float | None:
        """The q-th percentile (0-100) of the answers' latency in ms; None before any answer."""
        return float(np.percentile(list(self.latencies_ms), q)) if self.latencies_ms else None


class LiveEngine:
    """Frames in (push, from any thread), answers out (get, or on_answer). Use as a context manager, or start() and
    close(). predictor: the head and the encoder it was trained with (pipeline.tools.predict.make_predictor); its
    decode pool is not used."""

    def __init__(self, predictor: Predictor, config: LiveConfig = LiveConfig(),
                 on_answer: Callable[[LiveAnswer], None] | None = None, name: str = "the live stream"):
        self.config = config.checked()
        self.predictor, self.on_answer, self.name = predictor, on_answer, name
        self.sampling = Sampling.from_attrs(predictor.head.meta_.features)  # as the head's cache was sampled
        self.num_frames = self.sampling.num_frames
        self.window = config.window or default_window(self.num_frames, config.rate)
        self.stats = LiveStats()
        self._spec = predictor.encoder.frame_spec()
        # rolling buffer: (stream time, embedding float32 (D,)); frames older than the window go
        self._buffer: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._recent: collections.deque = collections.deque(maxlen=max(config.average, 1))  # probabilities (C,)
        self._done: collections.deque[float] = collections.deque()  # wall times of recent embeddings
        self._answers: queue.Queue[LiveAnswer] = queue.Queue(ANSWERS_KEPT)
        self._slot: tuple[np.ndarray, float, float] | None = None  # (frame, stream time, arrival) waiting
        self._cond = threading.Condition()
        self._last_tick = -math.inf
        self._next_answer: float | None = None
        self._closing = False
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # what stopped the encoder thread, if anything did

    def __enter__(self) -> LiveEngine:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> LiveEngine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="live-encoder", daemon=True)
            self._thread.start()
        return self

    def push(self, frame: np.ndarray, t: float) -> bool:
        """Offer a frame, RGB uint8 (H, W, 3), at stream time t (s). True when it passed the rate cap (the first in
        its tick of 1 / rate s): it waits for the encoder, replacing a frame still waiting there (dropped).
        VideoError (naming the engine's source) for a frame over the limits; ValueError for one that is not uint8
        (H, W, 3)."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"live frames are uint8 (H, W, 3) RGB, got {frame.dtype} {frame.shape}")
        check_size(self.name, frame.shape[1], frame.shape[0], self.config.limits)
        arrival = time.monotonic()
        with self._cond:
            self.stats.pushed += 1
            tick = math.floor(t * self.config.rate + 1e-6)  # the 1 / rate slot of stream time the frame is in
            if tick <= self._last_tick:
                return False
            self._last_tick = tick
            self.stats.accepted += 1
            if self._slot is not None:
                self.stats.dropped += 1
            self._slot = (frame, float(t), arrival)
            self._cond.notify()
        return True

    def get(self, timeout: float | None = None) -> LiveAnswer | None:
        """The next answer, waiting at most `timeout` seconds (None: until one comes); None when none came."""
        try:
            return self._answers.get(timeout=timeout)
        except queue.Empty:
            return None

    def idle(self) -> bool:
        """Whether no frame waits for the encoder and none is being embedded."""
        with self._cond:
            return self._slot is None and not self._busy

    def buffer(self) -> tuple[np.ndarray, np.ndarray]:
        """The rolling buffer: stream times float64 (N,) and embeddings float32 (N, D), oldest first."""
        with self._cond:
            items = list(self._buffer)
        dim = self.predictor.encoder.dim
        return (np.array([t for t, _ in items], np.float64),
                np.stack([e for _, e in items]) if items else np.zeros((0, dim), np.float32))

    def close(self, drain: bool = True) -> None:
        """Stop the encoder thread: after embedding (and answering for) the frame waiting, when drain."""
        with self._cond:
            if not drain:
                self._slot = None
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    _busy = False

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while self._slot is None and not self._closing:
                        self._cond.wait()
                    if self._slot is None:
                        return
                    (frame, t, arrival), self._slot, self._busy = self._slot, None, True
                try:
                    self._embed(frame, t, arrival)
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
        except UserError as e:  # a frame or head the data refuses (DataError, VideoError): the caller says it in a line
            self.error = e
        except BaseException as e:  # a bug: kept for the caller too (close() returns; `error` says why), and shown
            self.error = e
            raise

    def _embed(self, frame: np.ndarray, t: float, arrival: float) -> None:
        """Embed one frame into the buffer and answer when t crosses the next answer time."""
        crop = resize_crop(frame, self._spec)[None]  # (1, S, S, 3) uint8, as the decode workers make it
        emb = embed_frames(crop, self.predictor.encoder, 1)[0]  # (D,) float32
        now = time.monotonic()
        with self._cond:
            self._buffer.append((t, emb))
            while self._buffer and self._buffer[0][0] <= t - self.window - 1.0 / self.config.rate:
                self._buffer.popleft()
            self.stats.embedded += 1
            self._done.append(now)
            while self._done and self._done[0] < now - SPEED_SPAN:
                self._done.popleft()
        if self._next_answer is None:
            self._next_answer = t  # the first frame is answered at once
        if t + 1e-9 >= self._next_answer:
            self._answer(t, arrival)
            self._next_answer = (math.floor(t / self.config.every + 1e-9) + 1) * self.config.every

    def _sample(self, times: np.ndarray) -> np.ndarray:
        """Which of the window's frames (stream times float64 (n,), oldest first) the head pools, int64 (F,): as
        its cache was sampled: num_frames evenly, or `fps` a second of the window's span (at most num_frames, so F
        varies as it did between the cache's clips)."""
        if self.sampling.fps:
            return fps_indices(times - times[0], self.sampling.fps, self.num_frames)
        return sample_indices(len(times), self.num_frames)

    def _answer(self, t: float, arrival: float) -> None:
        times, embeddings = self.buffer()
        inside = np.flatnonzero(times > t - self.window)  # (n,) the frames of the window, oldest first
        picked = embeddings[inside[self._sample(times[inside])]]  # (F, D)
        head = self.predictor.head
        probs = head.predict_proba(picked[None])[0]  # (C,)
        self._recent.append(probs)
        mean = np.mean(np.stack(self._recent), axis=0).astype(np.float32)
        latency = (time.monotonic() - arrival) * 1000
        span = max(min(SPEED_SPAN, time.monotonic() - self._done[0]), 1e-3) if len(self._done) > 1 else 0
        answer = LiveAnswer(t, head.classes_, mean, head.not_sure_below_, latency, len(inside),
                            (len(self._done) - 1) / span if span else 0.0, self.stats.dropped)
        with self._cond:
            self.stats.answers += 1
            self.stats.latencies_ms.append(latency)
        if self._answers.full():
            try:
                self._answers.get_nowait()  # nobody reads them: the oldest goes
            except queue.Empty:
                pass
        self._answers.put_nowait(answer)
        if self.on_answer is not None:
            self.on_answer(answer)

