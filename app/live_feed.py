"""The Live page's camera feed: WebRTC frames into the live engine, its answers out to the page, ICE servers."""
from __future__ import annotations

import collections
import json
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.errors import ConfigError, UserError, printable

# The ICE servers (STUN/TURN) the browser and the app may use, as JSON: none unless the user sets them, so that no
# packet leaves the machine by default (streamlit-webrtc would otherwise ask Google's STUN server, and fetch TURN
# credentials when HF_TOKEN or TWILIO_* is set). docs/app.md, "Live page".
ICE_SERVERS_ENV = "CLIP_HAR_ICE_SERVERS"
ICE_SCHEMES = ("stun:", "turn:", "turns:")
ANSWERS_WAITING = 16  # answers the page has not drawn yet: the oldest goes when it falls behind
HISTORY_S = 30.0  # seconds of answers the page's strip shows
# aiortc's frame.time is the RTP timestamp: a 32-bit 90 kHz clock that starts at a random value and wraps every 13.3 h
RTP_WRAP_S = 2**32 / 90_000


def ice_servers(environ: dict | None = None) -> list[dict]:
    """RTCIceServer dicts from CLIP_HAR_ICE_SERVERS (a JSON list of {"urls": str | [str], "username"?,
    "credential"?}); [] when unset. ConfigError saying what is wrong with a value that is set."""
    text = (os.environ if environ is None else environ).get(ICE_SERVERS_ENV, "").strip()
    if not text:
        return []
    try:
        servers = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{ICE_SERVERS_ENV} is not JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(servers, list) or not all(isinstance(s, dict) for s in servers):
        raise ConfigError(f'{ICE_SERVERS_ENV} must be a JSON list of objects like {{"urls": "turn:host:3478", '
                          '"username": "...", "credential": "..."}')
    for server in servers:
        urls = server.get("urls")
        urls = [urls] if isinstance(urls, str) else urls
        if not urls or not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ConfigError(f"{ICE_SERVERS_ENV}: every server needs \"urls\": a URL or a list of URLs")
        for url in urls:
            if not url.startswith(ICE_SCHEMES):
                raise ConfigError(f"{ICE_SERVERS_ENV}: {printable(url)!r} is not a stun:, turn: or turns: URL")
        unknown = set(server) - {"urls", "username", "credential"}
        if unknown:
            raise ConfigError(f"{ICE_SERVERS_ENV}: unknown keys {sorted(map(printable, unknown))} "
                              "(urls, username, credential)")
    return servers


@dataclass(frozen=True)
class Shown:
    """One answer as the page keeps it for its strip: stream time (s), the best guess, its probability, sure."""

    time: float
    best: str
    probability: float
    sure: bool


class LiveFeed:
    """One browser session's live recognition, shared by the page's reruns (kept in st.session_state) and the
    WebRTC thread that calls on_frame.

    The page sets the engine's maker with use() at every rerun (a new head closes the running engine); the first
    frame of a stream makes the engine, each frame is pushed into it (the engine caps the rate and drops what it
    cannot embed), its answers wait in a bounded queue for the page (st.* fails in these threads), and an error
    from the user's stream (a frame over the size limits) is kept for the page to show.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._make: Callable | None = None
        self._key: object = None
        self.engine = None
        self._last_t: float | None = None
        self._t0: float | None = None
        self.answers: queue.Queue = queue.Queue(ANSWERS_WAITING)
        self.history: collections.deque[Shown] = collections.deque()  # the page's: HISTORY_S of answers
        self.latest = None  # the newest LiveAnswer drawn
        self.error: str | None = None

    def use(self, key: object, make: Callable[[Callable], object]) -> None:
        """The engine maker for the head chosen: make(on_answer) -> a started LiveEngine. A key other than the last
        one (another head, other actions) closes the running engine: the next frame starts the new one."""
        with self._lock:
            self._make = make
            if key != self._key:
                self._key = key
                self._close_engine()

    def stop(self) -> None:
        """The stream ended (Stop): close the engine; the answers shown stay until the next start."""
        with self._lock:
            self._close_engine()
            self._last_t = None

    def _close_engine(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.close(drain=False)

    def on_frame(self, frame):
        """streamlit-webrtc's video frame callback (its own thread): the av.VideoFrame into the engine, returned
        unchanged (the page shows the camera as the app receives it)."""
        try:
            self.push(frame.to_ndarray(format="rgb24"), frame.time)
        except UserError as e:
            self.error = str(e)  # the page shows it; the stream goes on being shown
        return frame

    def push(self, rgb, t: float | None) -> None:
        """One frame, RGB uint8 (H, W, 3), at stream time t (s; None: the time it arrived). A time earlier than
        the last one's starts a new stream (a restart): new engine, new strip."""
        with self._lock:
            if self._make is None:
                return
            if t is None:  # no timestamp from the sender: the arrival time, from the stream's first frame
                t = time.monotonic()
            # stream time from the stream's first frame, whatever the sender's clock started at, across its wrap
            self._t0 = t if self._t0 is None or self._last_t is None else self._t0
            t = (t - self._t0) % RTP_WRAP_S
            if self._last_t is not None and t < self._last_t:
                self._close_engine()
            if self.engine is None:
                self.error = None
                self.engine = self._make(self._answered)
            self._last_t = t
            engine = self.engine
        engine.push(rgb, t)

    def _answered(self, answer) -> None:
        """The engine's on_answer (its encoder thread): queued for the page, the oldest dropped when it lags."""
        while True:
            try:
                self.answers.put_nowait(answer)
                return
            except queue.Full:
                try:
                    self.answers.get_nowait()
                except queue.Empty:
                    pass

    def next_answer(self, timeout: float):
        """The next answer for the page (kept in history and latest), or None after `timeout` seconds."""
        try:
            answer = self.answers.get(timeout=timeout)
        except queue.Empty:
            return None
        if self.history and answer.time < self.history[-1].time:
            self.history.clear()  # a new stream
        self.history.append(Shown(answer.time, answer.top_class, answer.top_probability, answer.sure))
        while self.history and self.history[0].time < answer.time - HISTORY_S:
            self.history.popleft()
        self.latest = answer
        return answer

    def engine_error(self) -> str | None:
        """Why the engine's encoder stopped (a bug: its traceback is in the log), or None."""
        engine = self.engine
        failed = getattr(engine, "error", None)
        return None if failed is None else f"{type(failed).__name__}: {failed}"
