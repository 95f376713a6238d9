"""Decoding one untrusted video (PyAV): frame indices sampled evenly, and only those frames decoded."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import BinaryIO
from dataclasses import dataclass

import av
import numpy as np

from pipeline.errors import ConfigError, VideoError

SAMPLING = "uniform-centers"  # index i of n frames: floor((i + 0.5) * n / num_frames); named in the cache
DECODER = f"pyav-{av.__version__}"  # named in the cache: another decoder (or FFmpeg build) gives other pixels
# Gaps between samples longer than this many frames are crossed by seeking instead of decoding every frame:
# seeking decodes from the keyframe before the target, and x264's default keyframe interval is 250 frames.
SEEK_GAP = 300
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


@dataclass(frozen=True)
class FrameSpec:
    """How decoded frames become the encoder's input, uint8 (crop_h, crop_w, 3), as the encoder's image processor
    makes it. keep_aspect (CLIP): shortest side resized to `short`, then centre-cropped to crop_h x crop_w; not
    keep_aspect (SigLIP): resized straight to crop_h x crop_w, aspect ratio not kept, no crop (`short` unused).
    resample: "bicubic" or "bilinear", with antialiasing (torch for backend "fast", PIL for "processor", as the
    transformers image processors run it)."""

    short: int
    crop_h: int
    crop_w: int
    backend: str = "fast"
    resample: str = "bicubic"
    keep_aspect: bool = True

    @classmethod
    def from_pixels(cls, pixels: dict, backend: str = "fast") -> FrameSpec:
        """The spec of an image processor's pixel settings (its to_dict(), or a cache's preprocess_config parsed):
        size {"shortest_edge"} with a centre crop (CLIP), or size {"height", "width"} without one (SigLIP).
        ConfigError for a setting this preprocessing does not implement; KeyError when a setting is missing."""
        size, resample = pixels["size"] or {}, RESAMPLE.get(pixels["resample"])
        if resample is None:
            raise ConfigError(f"preprocessing implements bicubic and bilinear resampling, the image processor asks "
                              f"for {pixels['resample']!r}")
        if not (pixels["do_resize"] and pixels["do_rescale"] and pixels["do_normalize"]):
            raise ConfigError("preprocessing implements processors that resize, rescale and normalise; this one "
                              f"has do_resize={pixels['do_resize']}, do_rescale={pixels['do_rescale']}, "
                              f"do_normalize={pixels['do_normalize']}")
        if "shortest_edge" in size and pixels.get("do_center_crop"):
            crop = pixels["crop_size"]
            return cls(size["shortest_edge"], crop["height"], crop["width"], backend, resample)
        if "height" in size and not pixels.get("do_center_crop"):
            return cls(min(size["height"], size["width"]), size["height"], size["width"], backend, resample, False)
        raise ConfigError(f"preprocessing implements a shortest-edge resize with a centre crop (CLIP) or a resize "
                          f"to height x width without one (SigLIP); the image processor asks for size={size} with "
                          f"do_center_crop={pixels.get('do_center_crop')}")


# PIL's resampling codes as the image processors record them -> the filter's name (torch's mode, PIL's filter)
RESAMPLE = {3: "bicubic", 2: "bilinear"}


@dataclass
class Clip:
    """The sampled frames of one video and where they came from.

    frames: uint8 (num_frames, H, W, 3), RGB, upright (rotation metadata applied); (num_frames, crop_h, crop_w, 3)
    when read through a FrameSpec.
    indices: int64 (num_frames,) frame numbers; timestamps: float64 (num_frames,) seconds from the first frame.
    repeated: True when the video has fewer frames than num_frames, so some frames appear twice.
    decode_errors: packets the decoder rejected or concealed, and samples that had to take a neighbouring frame
    because theirs never decoded: 0 for a sound file.
    """

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    fps: float
    frame_count: int
    duration: float
    repeated: bool
    decode_errors: int = 0


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


def sample_indices(frame_count: int, num_frames: int) -> np.ndarray:
    """Evenly spaced frame indices, int64 (num_frames,): the centre of each of num_frames equal segments.

    A video shorter than num_frames gets repeated indices, in order.
    """
    if frame_count < 1 or num_frames < 1:
        raise ValueError(f"cannot sample {num_frames} frames from {frame_count}")
    return ((np.arange(num_frames) + 0.5) * frame_count / num_frames).astype(np.int64)


def read_frames(file: str | os.PathLike, num_frames: int, seek_gap: int | None = SEEK_GAP,
                sampler: Callable[[int], np.ndarray] | None = None, limits: DecodeLimits = DecodeLimits(),
                spec: FrameSpec | None = None, segment: tuple[float, float] | None = None,
                handle: BinaryIO | None = None) -> Clip:
    """Decode the num_frames sampled frames of a video, never holding more than those and one other in memory.

    sampler(frame_count) -> sorted int64 indices replaces the even sampling over the whole video (the timeline
    samples each window this way). spec: resize and crop each frame as it is decoded (see FrameSpec). segment:
    (start, end) seconds from the first frame: the frames are sampled evenly among those whose timestamps lie in
    [start, end) only (a trimmed clip of a longer video); VideoError when no frame does.

    The file is read through an open descriptor, never by name: FFmpeg sees no path, no protocol, and may use
    video containers only (CONTAINERS), so a playlist cannot make it read another file. A first pass reads the
    packets alone (no decoding): their count is the frame count and their timestamps place the samples exactly.
    Frames are then decoded in order, and a gap longer than seek_gap frames is crossed by seeking to the keyframe
    before the sample, so the work is bounded however long the video. A packet that fails to decode is counted
    in decode_errors and decoding goes on. Raises VideoError(file, reason) when the video cannot
    be used, before any large allocation when it is over `limits`. handle: the file already open (from
    open_regular; `file` then only names it in messages), read from its first byte and left open.
    """
    with (nullcontext(handle) if handle is not None else open_regular(file)) as fh:
        _refuse_still_image(file, fh.read(12))
        with _open_container(fh, file, limits) as container:  # first pass: the packets alone
            times = _packet_times(container, container.streams.video[0])
            time_base = container.streams.video[0].time_base
        if not times:
            raise VideoError(file, "no decodable video frames")
        if segment is not None:
            lo, hi = segment_frames(file, times, time_base, segment)
            sampler = lambda count: lo + sample_indices(hi - lo, num_frames)  # noqa: E731
        indices = (sampler or (lambda count: sample_indices(count, num_frames)))(len(times))
        for gap in (seek_gap, None):  # a seek that lands after the frame asked for: read in order instead
            with _open_container(fh, file, limits) as container:  # decoding from the start, on a fresh demuxer
                clip = _decode_at(container, container.streams.video[0], file, times, indices, gap, limits, spec)
            if clip is not None:
                if segment is not None:
                    clip.repeated = hi - lo < num_frames
                return clip
        raise AssertionError("reading in order always lands")


def segment_frames(file, times: list[int], time_base, segment: tuple[float, float]) -> tuple[int, int]:
    """Frames [lo, hi) whose timestamps (sorted, in time_base) lie in segment = (start, end) seconds from the first
    frame; VideoError when none does."""
    start, end = segment
    seconds = (np.asarray(times, np.float64) - times[0]) * float(time_base)
    lo, hi = (int(i) for i in np.searchsorted(seconds, [start, end], side="left"))
    if hi <= lo:
        raise VideoError(file, f"the segment [{start:g}, {end:g}) s holds no frame (the video's frames span "
                         f"0 to {seconds[-1]:.2f} s)")
    return lo, hi


def _open_container(fh, file, limits: DecodeLimits):
    """The open file as a PyAV container from its first byte, its video stream checked against the limits."""
    fh.seek(0)
    try:
        # video containers only; max_pixels also bounds FFmpeg's own probing, which decodes a first frame
        container = av.open(fh, metadata_errors="replace", options={
            "format_whitelist": ",".join(CONTAINERS), "max_pixels": str(limits.max_pixels)})
    except av.FFmpegError as e:
        raise VideoError(file, f"not a readable video ({_ffmpeg_reason(e)})") from None
    try:
        if not container.streams.video:
            raise VideoError(file, "no video stream")
        stream = container.streams.video[0]
        _check_size(file, stream.codec_context.width, stream.codec_context.height, limits)
        stream.codec_context.thread_count = 1  # the decode workers are the parallelism; one thread is cheapest
    except BaseException:
        container.close()
        raise
    return container


_IMAGE_MAGIC = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP"}


def _refuse_still_image(file, head: bytes) -> None:
    """VideoError for an image file, or an FFmpeg playlist, with a video's name, given its first 12 bytes."""
    kind = next((k for magic, k in _IMAGE_MAGIC.items() if head.startswith(magic)), None)
    if kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        kind = "WebP"
    if kind:
        raise VideoError(file, f"a still {kind} image, not a video")
    if head.startswith(b"ffconcat"):
        raise VideoError(file, "an FFmpeg playlist (ffconcat), not a video: playlists are never followed")


def _ffmpeg_reason(e: av.FFmpegError) -> str:
    return f"FFmpeg: {e.strerror}" if getattr(e, "strerror", None) else f"FFmpeg: {e}"


def _check_size(file, width: int, height: int, limits: DecodeLimits) -> None:
    """VideoError when a frame of width x height is over the limits (or has no size)."""
    if width < 1 or height < 1:
        raise VideoError(file, f"the video stream has no frame size ({width}x{height})")
    if width * height > limits.max_pixels:
        raise VideoError(file, f"frames of {width}x{height} exceed the pixel limit "
                         f"({limits.max_pixels:,} pixels; extract.max_pixels)")
    if max(width, height) / min(width, height) > limits.max_aspect:
        raise VideoError(file, f"frames of {width}x{height} exceed the aspect-ratio limit "
                         f"({limits.max_aspect:g}:1; extract.max_aspect)")


def _packet_times(container, stream) -> list[int]:
    """The presentation timestamps of the stream's frames, sorted (int, in stream.time_base), from the packets
    alone; frames without a timestamp get their place in decode order."""
    times = []
    for packet in container.demux(stream):
        if packet.size:
            t = packet.pts if packet.pts is not None else packet.dts
            times.append(len(times) if t is None else t)
    times.sort()
    return times


def _decode_at(container, stream, file, times: list[int], indices: np.ndarray, seek_gap: int | None,
               limits: DecodeLimits, spec: FrameSpec | None) -> Clip | None:
    """Keep the frames at `indices` (sorted) of the frames whose timestamps are `times`.

    Returns None when a seek (only across gaps longer than seek_gap; None: never) lands after the frame asked for.
    A sample whose own frame never decodes (damage) takes the next frame that does, or else the last one, and
    counts as a decode error. The frames are written straight into the output array as they are decoded.
    """
    index_of = {t: i for i, t in enumerate(times)}  # a frame's timestamp -> its index
    rows: dict[int, list[int]] = {}
    for row, idx in enumerate(indices.tolist()):
        rows.setdefault(idx, []).append(row)
    errors = [0]
    frames: np.ndarray | None = None
    stamps = np.zeros(len(indices), np.float64)
    decoded = _frames(container, stream, errors)
    pos, last = 0, None  # the index of the next frame to come, and the last frame decoded (index pos - 1)
    for idx in sorted(rows):
        if seek_gap is not None and idx - pos > seek_gap:
            container.seek(times[idx], stream=stream, backward=True, any_frame=False)
            decoded, pos = _frames(container, stream, errors), idx
            first = next(decoded, None)
            if first is None or first.pts is None or first.pts > times[idx]:
                return None
            decoded = _chain(first, decoded)
        frame = None
        if last is not None and pos - 1 >= idx:
            frame = last  # already in hand: it stood in for an earlier sample whose frame was lost
        else:
            for frame in decoded:
                _check_size(file, frame.width, frame.height, limits)
                at = index_of.get(frame.pts, pos)
                pos = at + 1
                last = frame
                if at >= idx:
                    break
            else:
                frame = None
        if frame is None:  # the file ended before this sample: its frame never decoded
            frame = last
            if frame is None:
                raise VideoError(file, "no decodable video frames")
            errors[0] += 1
        elif pos - 1 > idx:
            errors[0] += 1  # this sample's own frame was lost to damage; the next one stands in
        image = _to_rgb(frame, spec)
        if frames is None:
            frames = np.empty((len(indices), *image.shape), np.uint8)
        elif image.shape != frames.shape[1:]:
            raise VideoError(file, f"the frame size changes mid-stream ({frames.shape[2]}x{frames.shape[1]} "
                             f"to {image.shape[1]}x{image.shape[0]} at frame {idx})")
        frames[rows[idx]] = image
        stamps[rows[idx]] = float((times[min(pos - 1, len(times) - 1)] - times[0]) * stream.time_base)
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    duration = float((times[-1] - times[0]) * stream.time_base) + (1 / fps if fps else 0.0)
    return Clip(frames, indices.astype(np.int64), stamps, fps, len(times), duration,
                repeated=len(times) < len(indices), decode_errors=errors[0])


def _chain(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def _frames(container, stream, errors: list[int]) -> Iterator:
    """Decoded frames in presentation order from the current position; a packet the decoder rejects, or a frame
    it marks corrupt (concealed damage), adds one to errors[0] and decoding goes on."""
    for packet in container.demux(stream):
        try:
            out = stream.decode(packet)
        except av.error.InvalidDataError:
            errors[0] += 1
            continue
        for frame in out:
            if frame.is_corrupt:
                errors[0] += 1
            yield frame


def _to_rgb(frame, spec: FrameSpec | None) -> np.ndarray:
    """A decoded frame as uint8 RGB (H, W, 3), upright (its rotation metadata applied), resized and cropped by spec."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = round(frame.rotation / 90) % 4  # FFmpeg's rotation is counter-clockwise, in degrees
    if turns:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=turns))
    return rgb if spec is None else resize_crop(rgb, spec)


def resize_crop(rgb: np.ndarray, spec: FrameSpec) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (crop_h, crop_w, 3): shortest side to spec.short (aspect ratio kept), centre crop;
    or, without keep_aspect, straight to crop_h x crop_w.

    "fast": torch's bicubic or bilinear with antialiasing on uint8, as PIL does; matches the transformers image
    processor within two uint8 steps (tests/test_encoder.py). "processor": PIL's filter, which the processor itself
    runs.
    """
    h, w = rgb.shape[:2]
    if not spec.keep_aspect:
        new_h, new_w = spec.crop_h, spec.crop_w
    else:  # transformers' get_resize_output_image_size: the long side is int(short * long / short_side)
        new_h, new_w = (spec.short, int(spec.short * w / h)) if h <= w else (int(spec.short * h / w), spec.short)
    if spec.backend == "processor":
        from PIL import Image
        pil = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[spec.resample]
        out = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), pil))
    else:
        import torch
        import torch.nn.functional as F
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8
        x = F.interpolate(x, size=(new_h, new_w), mode=spec.resample, antialias=True, align_corners=False)
        out = x[0].permute(1, 2, 0).numpy()
    top, left = (new_h - spec.crop_h) // 2, (new_w - spec.crop_w) // 2
    if top < 0 or left < 0:
        raise ConfigError(f"the encoder's crop {spec.crop_w}x{spec.crop_h} is larger than its resize ({new_w}x{new_h}): "
                          "its image processor config cannot be used")
    return np.ascontiguousarray(out[top:top + spec.crop_h, left:left + spec.crop_w])
