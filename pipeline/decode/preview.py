"""What a browser can play of an upload: the codec decision, and a short H.264 transcode where it cannot.

Runs in a decode worker (decode_or_preview is the app's pool's job: a PreviewConfig makes a preview, a ReadConfig
reads frames as stage one does), so a hostile upload costs a worker, within the pool's time and memory limits.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import av

from pipeline.errors import VideoError
from pipeline.decode.container import DecodeLimits, open_regular, open_stream
from pipeline.decode.workers import load_video

# What Chromium's <video> plays (it has no HEVC, MPEG-4 part 2, MJPEG, ... decoder): these codecs in the ISO
# (mp4/mov) and Matroska (mkv/webm) demuxers, as FFmpeg names both.
PLAYABLE_CODECS = frozenset({"h264", "vp8", "vp9", "av1"})
PLAYABLE_CONTAINERS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})
PREVIEW_CODEC = "libx264"


@dataclass(frozen=True)
class PreviewConfig:
    """How much of an upload a preview may hold: its first `seconds`, at most `max_frames` frames at `fps` at most,
    scaled to `height` pixels at most, and `max_bytes` of H.264 at most (it stops there)."""

    seconds: float = 10.0
    max_frames: int = 250
    fps: float = 25.0
    height: int = 360
    max_bytes: int = 8 * 2**20
    limits: DecodeLimits = DecodeLimits()


@dataclass(frozen=True)
class Preview:
    """An upload as the browser will see it: `playable` as it is (then data is None), else `data`, an H.264 mp4 of
    its first `seconds` (None when this FFmpeg has no H.264 encoder). codec and container: FFmpeg's names."""

    playable: bool
    codec: str
    container: str
    data: bytes | None = None
    seconds: float = 0.0


def browser_plays(container: str, codec: str) -> bool:
    """Whether Chromium's <video> plays this codec in this demuxer (FFmpeg's names, as in Preview)."""
    return container in PLAYABLE_CONTAINERS and codec in PLAYABLE_CODECS


def make_preview(file: str, cfg: PreviewConfig = PreviewConfig()) -> Preview:
    """The Preview of a video file: probed, and transcoded (its first seconds, see PreviewConfig) when the browser
    cannot play it. VideoError naming `file` when it cannot be read."""
    with open_regular(file) as fh:
        container, stream = open_stream(fh, file, cfg.limits)  # the stream Predict reads, sniffed and checked alike
        with container:
            codec, kind = stream.codec_context.name, container.format.name
            if browser_plays(kind, codec):
                return Preview(True, codec, kind)
            if PREVIEW_CODEC not in av.codecs_available:
                return Preview(False, codec, kind)
            data, seconds = _transcode(container, stream, file, cfg)
            return Preview(False, codec, kind, data, seconds)


def _transcode(container, stream, file: str, cfg: PreviewConfig) -> tuple[bytes, float]:
    """(H.264 mp4 bytes, seconds shown) of the stream's first cfg.seconds, frames scaled to cfg.height at most."""
    out_buf = io.BytesIO()
    shown, first = 0.0, None
    with av.open(out_buf, "w", format="mp4") as out:  # moov last: the browser is given the whole file
        video = None
        rate = Fraction(cfg.fps).limit_denominator(1000)
        count = 0
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                first = frame.time if first is None else first
                t = frame.time - first
                if t >= cfg.seconds or count >= cfg.max_frames or out_buf.tell() > cfg.max_bytes:
                    break
                if t < count / cfg.fps:  # keep at most cfg.fps frames a second
                    continue
                if video is None:
                    scale = min(1.0, cfg.height / frame.height)
                    w, h = (max(2, int(round(d * scale / 2)) * 2) for d in (frame.width, frame.height))
                    video = out.add_stream(PREVIEW_CODEC, rate=rate, options={"preset": "veryfast", "crf": "28",
                                                                                "threads": "1"})
                    video.width, video.height, video.pix_fmt = w, h, "yuv420p"  # 4:2:0: what browsers decode
                image = frame.reformat(width=video.width, height=video.height, format="yuv420p", threads=1)
                image.pts, image.time_base = count, 1 / rate  # Fraction
                out.mux(video.encode(image))
                count, shown = count + 1, t
        except av.FFmpegError as e:  # a damaged file: the preview holds what decoded before the damage
            if video is None:
                raise VideoError(file, f"no frame decodes for a preview (FFmpeg: {e.strerror or type(e).__name__})"
                                 ) from None
        if video is None:
            raise VideoError(file, "no decodable video frames")
        out.mux(video.encode())
    return out_buf.getvalue(), shown + 1 / cfg.fps


def decode_or_preview(file: str, cfg, hash_bytes: bool = False):
    """The app's decode-worker job (DecodePool's `decode`): make_preview for a PreviewConfig, else load_video."""
    if isinstance(cfg, PreviewConfig):
        return make_preview(file, cfg)
    return load_video(file, cfg, hash_bytes)

