"""An untrusted video's file and container opened: a regular file, hashed, video demuxers only, the stream in limits.

What one video may cost (DecodeLimits) is checked here against the header, before any frame is decoded, and by
pipeline.decode.video against every frame it decodes."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
from dataclasses import dataclass
from typing import BinaryIO

import av

from pipeline.errors import VideoError
from pipeline.decode.sniff import refuse_non_video, video_stream

# The demuxers FFmpeg may use: video containers only. No playlists (concat, hls), no images, no protocols.
CONTAINERS = ("mov", "mp4", "matroska", "webm", "avi", "mpeg", "mpegts", "mpegvideo", "m4v", "flv", "asf", "ogg",
              "mxf", "dv", "ivf", "nut", "h264", "hevc")


@dataclass(frozen=True)
class DecodeLimits:
    """What one untrusted video may cost before it is refused (stage one's extract.max_* params).

    max_pixels: width x height of a frame (default 8K UHD, 7680 x 4320), checked against the header before any
    decoding and against every decoded frame. max_aspect: long side / short side; resizing the short side to the
    encoder's size would otherwise make a 1 x 16000 frame into gigabytes. max_damaged: the fraction of a video's
    packets that may fail to decode before the video is refused as damaged.
    """

    max_pixels: int = 7680 * 4320
    max_aspect: float = 16.0
    max_damaged: float = 0.5


def open_regular(file: str | os.PathLike):
    """The file opened for binary reading, or VideoError if it is not a regular file.

    Opened without blocking, so a FIFO named like a video cannot hang the caller; checked on the open descriptor.
    """
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENXIO:  # a FIFO (or socket) with nobody at the other end
            raise VideoError(file, "not a regular file (a FIFO, socket or device)") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise VideoError(file, "not a regular file (a FIFO, socket or device)")
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return os.fdopen(fd, "rb")


def content_hash(file: str | os.PathLike, handle: BinaryIO | None = None) -> str:
    """Hex SHA-256 of the file's bytes: the key under which a video's embeddings are reused. handle: the file
    already open (from open_regular), hashed from its first byte and left open; else the file is opened here."""
    if handle is not None:
        handle.seek(0)
        return hashlib.file_digest(handle, "sha256").hexdigest()
    with open_regular(file) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def open_stream(fh, file, limits: DecodeLimits = DecodeLimits()):
    """(container, stream) of an open file as the decoder reads it: sniffed first (no image, no playlist), the
    stream the decoder picks (sniff.video_stream) checked against the limits. The caller closes the container."""
    refuse_non_video(file, fh)
    container = open_container(fh, file, limits)
    try:
        return container, checked_stream(video_stream(container, file), file, limits)
    except BaseException:
        container.close()
        raise


def open_container(fh, file, limits: DecodeLimits):
    """The open file as a PyAV container from its first byte."""
    fh.seek(0)
    try:
        # video containers only; max_pixels also bounds FFmpeg's own probing, which decodes a first frame
        return av.open(fh, metadata_errors="replace", options={
            "format_whitelist": ",".join(CONTAINERS), "max_pixels": str(limits.max_pixels)})
    except av.FFmpegError as e:
        raise VideoError(file, f"not a readable video ({_ffmpeg_reason(e)})") from None


def checked_stream(stream, file, limits: DecodeLimits):
    """The stream, its frame size checked against the limits and its decoder set to one thread."""
    check_size(file, stream.codec_context.width, stream.codec_context.height, limits)
    stream.codec_context.thread_count = 1  # the decode workers are the parallelism; one thread is cheapest
    return stream


def _ffmpeg_reason(e: av.FFmpegError) -> str:
    return f"FFmpeg: {e.strerror}" if getattr(e, "strerror", None) else f"FFmpeg: {e}"


def check_size(file, width: int, height: int, limits: DecodeLimits) -> None:
    """VideoError when a frame of width x height is over the limits (or has no size)."""
    if width < 1 or height < 1:
        raise VideoError(file, f"the video stream has no frame size ({width}x{height})")
    if width * height > limits.max_pixels:
        raise VideoError(file, f"frames of {width}x{height} exceed the pixel limit "
                         f"({limits.max_pixels:,} pixels; extract.max_pixels)")
    if max(width, height) / min(width, height) > limits.max_aspect:
        raise VideoError(file, f"frames of {width}x{height} exceed the aspect-ratio limit "
                         f"({limits.max_aspect:g}:1; extract.max_aspect)")
