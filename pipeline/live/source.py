"""Live sources: a camera device, a network stream or a file played at its own speed, decoded in a limited worker.

A network URL is opened only here, through `clip-har-predict --live` (an explicit choice: files never open URLs),
and only for the protocols in PROTOCOLS, each limited to the FFmpeg protocols it needs underneath (UNDERNEATH: no
file:, concat:, subfile:, data:, pipe:), with the demuxers of files and of live streams only (no playlist: hls,
dash, concat). Decoding runs in a worker process with the decode workers' memory limit (pipeline.decode.workers),
and a watchdog: a worker that delivers nothing for stall_s (a stream that stopped, a decoder that hangs) is ended,
reconnected to at most `reconnects` times for a network stream, then reported. A crash of the worker ends the
session with a message, never the caller.
"""
from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import queue
import re
import resource
import signal
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import av
import numpy as np

from pipeline.decode.sniff import video_stream
from pipeline.decode.container import CONTAINERS, DecodeLimits, check_size, checked_stream, open_regular, open_stream
from pipeline.decode.video import to_rgb
from pipeline.decode.workers import PoolConfig
from pipeline.errors import VideoError, printable

PROTOCOLS = ("rtsp", "rtmp", "srt", "udp", "http", "https")
# The FFmpeg protocols each may open underneath (its protocol_whitelist): a redirect or a nested URL to anything
# else (file:, concat:, subfile:, data:, pipe:, another host's https: from http:) fails to open.
UNDERNEATH = {"rtsp": "rtsp,rtp,udp,tcp", "rtmp": "rtmp,tcp", "srt": "srt", "udp": "udp", "http": "http,tcp",
              "https": "https,tls,tcp"}
# The demuxers a network stream may use: the file containers and the live ones; never a playlist (hls, dash, concat,
# sdp) that points elsewhere.
STREAM_FORMATS = (*CONTAINERS, "rtsp", "mjpeg", "mpjpeg")
CAMERA_FORMAT = "v4l2"  # FFmpeg's Video4Linux2 input: /dev/video0
QUEUED = 2  # decoded frames waiting for the caller: the newest go when the caller is slower (counted as dropped)
BAD_IN_A_ROW = 200  # packets in a row that fail to decode before the stream is called garbage
MAX_NOTES = 5  # frame-size changes reported (a hostile stream could change size at every frame)
BACK_S = 0.5  # timestamps going back by more than this are a discontinuity (smaller: late frames, skipped)
GRACE_S = 5.0  # beyond stall_s, before the watchdog ends a worker that FFmpeg's own read timeout did not stop
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


class StreamError(VideoError):
    """A live source that cannot be opened or stopped working: refused, unreachable, silent, hostile."""


class StreamLost(StreamError):
    """A network stream that could not be reached, or stopped sending: worth a reconnection."""


@dataclass(frozen=True)
class Source:
    """What --live was given: kind "file" (a path, never opened as a URL), "device" (/dev/...: a camera through
    v4l2) or "network" (a URL of one of PROTOCOLS); `name` says it in messages (a URL's password left out)."""

    kind: str
    target: str

    @property
    def name(self) -> str:
        return printable(self.target) if self.kind != "network" else redacted(self.target)

    @property
    def scheme(self) -> str:
        return self.target.split(":", 1)[0].lower() if self.kind == "network" else ""


SECRET_KEYS = re.compile(r"(?i)^(pass(word)?|pwd|token|key|secret|auth|signature|sig)$")  # query keys masked


def redacted(text: str) -> str:
    """A URL (or what was meant as one) for messages: its user:password@ left out, and query values that look like
    credentials (?password=, &token=, ...) shown as ***, printable."""
    text = re.sub(r"^([a-zA-Z][\w+.-]*:)(?!//)[^@/]*@", r"\1", text)  # rtsp:user:pass@host, written without //
    parts = urlsplit(text)
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(f"{k}=***" if SECRET_KEYS.match(k) else (f"{k}={v}" if sep else k)
                     for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item))
    return printable(parts._replace(netloc=netloc, query=query).geturl())


def parse_source(text: str) -> Source:
    """The Source `text` names; StreamError for a URL whose protocol is not in PROTOCOLS (concat:, file:, ...)."""
    m = _SCHEME.match(text)
    if m:
        scheme = m.group(1).lower()
        if scheme not in PROTOCOLS:
            raise StreamError(redacted(text), f"--live opens {', '.join(p + '://' for p in PROTOCOLS)} streams, a "
                              f"camera "
                              f"(/dev/video0) or a file; not {printable(scheme)}: (a file whose name holds a colon: "
                              f"write it as ./NAME)")
        if not text[len(scheme) + 1:].startswith("//") or not urlsplit(text).hostname:
            raise StreamError(redacted(text), f"a {scheme} URL needs a host: {scheme}://HOST[:PORT][/PATH]")
        return Source("network", text)
    if text.startswith("/dev/"):
        return Source("device", text)
    return Source("file", text)


DEFAULT_RATE = 4.0  # frames embedded per second at most: ViT-B/32 on 2 CPU cores keeps up (bench/live.py)


@dataclass(frozen=True)
class SourceConfig:
    """rate: frames a second passed on at most (the engine's; the worker converts no others); stall_s: a source
    that delivers nothing this long is ended; reconnects: tries to open a network stream again after it stalled or
    dropped; memory_mb: what the decoding worker may add to its imports; limits: the largest frame accepted."""

    rate: float = DEFAULT_RATE
    stall_s: float = 10.0
    reconnects: int = 3
    memory_mb: int = PoolConfig.memory_mb  # the decode workers' (extract.worker_memory_mb in a project)
    limits: DecodeLimits = field(default_factory=DecodeLimits)


@dataclass(frozen=True)
class SourceEnd:
    """How a source ended: kind "end" (a file played to its end), "stopped" (asked to) or "failed" (reason says why,
    without the source's name); frames passed on; dropped (the caller was slower than the source); lost: a network
    stream that could not be reached or went silent (worth a reconnection)."""

    kind: str
    reason: str = ""
    frames: int = 0
    dropped: int = 0
    lost: bool = False


def run_source(source: Source, config: SourceConfig, push: Callable[[np.ndarray, float], object],
               stop: threading.Event, on_note: Callable[[str], None] = lambda text: None) -> SourceEnd:
    """Decode `source` in a worker, calling push(frame RGB uint8 (H, W, 3), stream time s) for each frame passed
    on, until it ends, fails (after the reconnects a network stream gets) or `stop` is set. on_note(text): what the
    caller should tell the user (a frame-size change, a reconnection)."""
    frames = dropped = tries = 0
    offset = 0.0  # stream time carried over a reconnection: answers go on from where they were
    while True:
        end, last = _run_worker(source, config, push, stop, on_note, offset)
        frames, dropped = frames + end.frames, dropped + end.dropped
        again = source.kind == "network" and (end.lost or end.kind == "end") and not stop.is_set()
        if again and tries < config.reconnects:
            tries += 1
            on_note(f"{source.name}: {end.reason or 'the stream ended'}; reconnecting ({tries} of "
                    f"{config.reconnects})")
            offset = last + 1.0 / config.rate if last is not None else offset
            continue
        reason = end.reason + (f" (after {tries} reconnection{'s' * (tries != 1)})" if tries else "")
        return SourceEnd(end.kind, reason, frames, dropped, end.lost)


def _run_worker(source, config, push, stop, on_note, offset) -> tuple[SourceEnd, float | None]:
    """One worker's life: (how it ended, its last stream time + offset or None)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])  # a no-op once the server runs
    out, quit_, progress = ctx.Queue(QUEUED), ctx.Event(), ctx.Value("d", time.monotonic(), lock=False)
    worker = ctx.Process(target=_decode, args=(source, config, out, quit_, progress), daemon=True,
                         name="clip-har-live-decoder")
    worker.start()
    frames, dropped, last, end = 0, 0, None, None
    try:
        while end is None:
            if stop.is_set():
                end = SourceEnd("stopped")
                break
            try:
                msg = out.get(timeout=0.1 if worker.is_alive() else 1.0)  # a last message may still be on its way
            except queue.Empty:
                if not worker.is_alive():
                    end = SourceEnd("failed", _crash_reason(worker.exitcode))
                elif time.monotonic() - progress.value > config.stall_s + GRACE_S:
                    end = SourceEnd("failed", f"nothing arrived for {config.stall_s:g} s (the decoder hung or the "
                                    "stream stopped)", lost=True)
                continue
            if msg[0] == "frame":
                _, t, rgb, dropped = msg
                last = offset + t
                frames += 1
                push(rgb, last)
            elif msg[0] == "note":
                on_note(f"{source.name}: {msg[1]}")
            else:  # ("end", kind, reason, lost, dropped)
                _, kind, reason, lost, dropped = msg
                end = SourceEnd(kind, reason, lost=lost)
    finally:
        quit_.set()
        worker.join(1.0)
        if worker.is_alive():
            worker.kill()
            worker.join()
        out.cancel_join_thread()
        out.close()
    return SourceEnd(end.kind, end.reason, frames, dropped, end.lost), last


def _crash_reason(code: int | None) -> str:
    if code is not None and code < 0:  # real-time signals (35-64) have no name in Python
        name = signal.Signals(-code).name if -code in {s.value for s in signal.Signals} else "a real-time signal"
        return f"the decoder crashed (signal {-code}, {name})"
    return f"the decoder crashed (exit status {code})"


def _decode(source: Source, config: SourceConfig, out, quit_, progress) -> None:
    """The worker: open the source, pass frames on (the rate's first of each tick, as RGB), report how it ended."""
    _limit_worker(config.memory_mb)
    dropped = [0]
    try:
        container, stream = _open(source, config)
        with container:
            _frames(source, config, container, stream, out, quit_, progress, dropped)
    except VideoError as e:  # StreamLost among them: worth a reconnection
        out.put(("end", "failed", e.reason, isinstance(e, StreamLost), dropped[0]))
    except MemoryError:
        out.put(("end", "failed", f"the decoder ran out of memory ({config.memory_mb} MiB)", False, dropped[0]))
    except av.FFmpegError as e:  # reading failed: a network stream lost (ExitError: FFmpeg's read timeout)
        why = f"nothing arrived for {config.stall_s:g} s" if isinstance(e, av.error.ExitError) else \
            f"reading failed (FFmpeg: {e.strerror or e})"
        out.put(("end", "failed", why, source.kind == "network", dropped[0]))
    else:
        out.put(("end", "end", "", False, dropped[0]))


def _limit_worker(memory_mb: int) -> None:
    """As the decode workers start (pipeline.decode.workers._worker_init), without their torch: Ctrl-C is the
    parent's, the worker dies with it, and its address space may grow by memory_mb beyond its imports. Its priority
    stays the parent's: a live decoder keeps pace with the stream, not below the encoder."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    with open("/proc/self/status") as f:
        mapped = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (mapped + memory_mb * 2**20,) * 2)


def _open(source: Source, config: SourceConfig):
    """(container, video stream) of the source, checked against the limits; StreamError when it cannot be opened."""
    limits, wait = config.limits, (config.stall_s, config.stall_s)
    try:
        if source.kind == "file":  # through an open descriptor, as stage one reads files: no path reaches FFmpeg
            return open_stream(open_regular(source.target), source.name, limits)
        if source.kind == "device":
            if not stat.S_ISCHR(os.stat(source.target).st_mode):
                raise StreamError(source.name, "not a camera device (a character device such as /dev/video0)")
            container = av.open(source.target, format=CAMERA_FORMAT, timeout=wait)
        else:
            container = av.open(source.target, timeout=wait, metadata_errors="replace", options={
                "protocol_whitelist": UNDERNEATH[source.scheme], "format_whitelist": ",".join(STREAM_FORMATS),
                "max_pixels": str(limits.max_pixels)})
    except OSError as e:  # a file or device that is missing, busy, or not a camera
        what = " as a camera" if source.kind == "device" else ""
        raise StreamError(source.name, f"cannot be opened{what} ({e.strerror or type(e).__name__})") from None
    except av.error.ExitError:  # FFmpeg's open timeout
        raise StreamLost(source.name, f"nothing arrived for {config.stall_s:g} s") from None
    except av.FFmpegError as e:
        error = StreamLost if source.kind == "network" else StreamError
        raise error(source.name, f"cannot be opened (FFmpeg: {e.strerror or e})") from None
    try:
        return container, checked_stream(video_stream(container, source.name), source.name, limits)
    except BaseException:
        container.close()
        raise


def _frames(source, config, container, stream, out, quit_, progress, dropped) -> None:
    """Decode the stream, passing on the first frame of each 1 / rate tick of stream time as ("frame", t, rgb,
    dropped); a file is paced at its own speed. Stream time is the frames' timestamps from the first, carried on
    over a jump back of more than BACK_S or ahead of more than stall_s. VideoError for a frame over the limits,
    garbage."""
    start, t0, size, last_tick, bad, notes, last_t = time.monotonic(), None, None, -math.inf, 0, 0, None
    for packet in container.demux(stream):
        if quit_.is_set():
            return
        progress.value = time.monotonic()
        try:
            decoded = stream.decode(packet)
        except av.error.InvalidDataError:
            bad += 1
            if bad >= BAD_IN_A_ROW:
                raise StreamError(source.name, f"{bad} packets in a row failed to decode: the stream sends "
                                  "damaged data or garbage") from None
            continue
        bad = 0 if decoded else bad
        for frame in decoded:
            check_size(source.name, frame.width, frame.height, config.limits)
            if size is not None and size != (frame.width, frame.height) and notes < MAX_NOTES:
                notes += 1
                out.put(("note", f"the frame size changed from {size[0]}x{size[1]} to {frame.width}x{frame.height}"
                         " mid-stream; frames are resized to the encoder's input as before"))
            size = frame.width, frame.height
            now = frame.time if frame.time is not None else time.monotonic() - start
            t0 = now if t0 is None else t0
            t = now - t0
            if last_t is not None and not last_t - BACK_S <= t <= last_t + config.stall_s:
                # a discontinuity (a sender restarted, timestamps wrapped): stream time goes on from the last frame
                t0, t = now - last_t - 1.0 / config.rate, last_t + 1.0 / config.rate
            last_t = max(t, last_t if last_t is not None else t)
            if source.kind == "file":  # at its own speed
                ahead = start + t - time.monotonic()
                if ahead > 0 and quit_.wait(ahead):
                    return
            tick = math.floor(t * config.rate + 1e-6)
            if tick <= last_tick:
                continue
            last_tick = tick
            try:
                out.put_nowait(("frame", t, to_rgb(frame), dropped[0]))
            except queue.Full:
                dropped[0] += 1
            progress.value = time.monotonic()
