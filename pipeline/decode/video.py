"""Decoding one untrusted video (PyAV): the sampled frames (pipeline.decode.sampling), and only those, decoded."""
from __future__ import annotations

import bisect
import heapq
import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO

import av
import numpy as np

from pipeline.errors import EmptySegment, VideoError
from pipeline.decode.container import (DecodeLimits, check_size, checked_stream, content_hash,  # noqa: F401
                                       open_container, open_regular)  # content_hash: as callers import it
from pipeline.decode.frames import FrameGroup, FrameSpec
from pipeline.decode.sampling import SAMPLING, fps_indices, sample_indices  # noqa: F401 (SAMPLING: callers import it)
from pipeline.decode.sniff import external_reference, refuse_non_video, video_stream

DECODER = f"pyav-{av.__version__}"  # named in the cache: another decoder (or FFmpeg build) gives other pixels
# Gaps between samples longer than this many frames are crossed by seeking instead of decoding every frame:
# seeking decodes from the keyframe before the target, and x264's default keyframe interval is 250 frames.
SEEK_GAP = 300
TIMESTAMPS = "timestamps"  # Clip.timing when the stream's timestamps place the samples
# Packets come in decode order: a decoder of B-frames holds at most this many frames back to put them in time
# order (H.264 and HEVC allow 16); timestamps that this cannot put in order are not the frames' order.
MAX_REORDER = 16
# A stream's packets totalling at most this many bytes are kept by the first pass and decoded from memory, when no
# seek could pay (at most SEEK_GAP frames): the file is not demuxed a second time (a container's open alone took
# 0.4 ms of a 4-frame 32x32 clip's 1.5).
KEPT_BYTES = 4 * 2**20
DEFAULT_FPS = 25  # the frame rate assumed for frames that have no timestamps and no rate (FFmpeg's own default)


@dataclass
class Clip:
    """The sampled frames of one video and where they came from.

    frames: uint8 (num_frames, H, W, 3), RGB, upright (rotation metadata applied); (num_frames, crop_h, crop_w, 3)
    when read through a FrameSpec.
    indices: int64 (num_frames,) frame numbers; timestamps: float64 (num_frames,) seconds from the first frame.
    repeated: True when the video has fewer frames than num_frames, so some frames appear twice.
    decode_errors: packets the decoder rejected or concealed, and samples that had to take a neighbouring frame
    because theirs never decoded: 0 for a sound file. packets: those given to the decoder (seeking skips some);
    damaged: those of them that failed (rejected, or a frame marked corrupt). timing: TIMESTAMPS when the stream's
    timestamps placed the samples, else "frame order: <why>" (the frames' order did; timestamps index / fps).
    """

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    fps: float
    frame_count: int
    duration: float
    repeated: bool
    decode_errors: int = 0
    packets: int = 0
    damaged: int = 0
    timing: str = TIMESTAMPS

    @property
    def sampled(self) -> int:
        """How many frames were sampled (num_frames, or a clip's own number when sampled by frame rate)."""
        return len(self.indices)


def read_frames(file: str | os.PathLike, num_frames: int, seek_gap: int | None = SEEK_GAP,
                sampler: Callable[[int], np.ndarray] | None = None, limits: DecodeLimits = DecodeLimits(),
                spec: FrameSpec | None = None, segment: tuple[float, float] | None = None,
                handle: BinaryIO | None = None, fps: float = 0.0) -> Clip:
    """Decode the num_frames sampled frames of a video, never holding more than those, a FrameGroup of decoded
    frames waiting to be resized, and one other frame in memory.

    sampler(frame_count) -> sorted int64 indices replaces the even sampling over the whole video (the timeline
    samples each window this way). fps > 0: `fps` frames per second of the video (or segment), at most num_frames
    (fps_indices), by the frames' timestamps, instead of num_frames evenly. spec: resize and crop each frame as it
    is decoded (see FrameSpec). segment: (start, end) seconds from the first frame: the frames are sampled among
    those whose timestamps lie in [start, end) only (a trimmed clip of a longer video); VideoError when no frame
    does.

    The file is read through an open descriptor, never by name: FFmpeg sees no path, no protocol, and may use
    video containers only (CONTAINERS). The stream is chosen by sniff.video_stream. A first pass reads its packets
    alone: those a player shows (not an edit list's cut-off ones) are the frames, and their timestamps place the
    samples, or else the frames' order does (Clip.timing says why). Frames are then decoded in order; a gap over
    seek_gap frames is crossed by seeking where the keyframe before the sample lies ahead, so the work is bounded.
    A packet that fails to decode is counted; a video with more than limits.max_damaged of them is refused.
    VideoError(file, reason) when the video cannot be used, before any large allocation when it is over `limits`.
    handle: the file already open (from open_regular; `file` then only names it in messages), read from its first
    byte and left open.
    """
    clip = None
    with (nullcontext(handle) if handle is not None else open_regular(file)) as fh:
        refuse_non_video(file, fh)
        with open_container(fh, file, limits) as container:  # first pass: the packets alone, kept when small
            stream = checked_stream(video_stream(container, file), file, limits)
            index, scan = stream.index, _scan(stream)
            if not scan.times:
                if external_reference(fh):
                    raise VideoError(file, "the video data is in another file (an external data reference), "
                                     "which is never read")
                raise VideoError(file, "no decodable video frames")
            lo, hi = 0, len(scan.times)
            if segment is not None:
                lo, hi = segment_frames(file, scan.times, scan.time_base, segment)
                sampler = lambda count: lo + sample_indices(hi - lo, num_frames)  # noqa: E731
            if fps:
                seconds = (np.asarray(scan.times[lo:hi], np.float64) - scan.times[lo]) * float(scan.time_base)
                sampler = lambda count: lo + fps_indices(seconds, fps, num_frames)
            indices = (sampler or (lambda count: sample_indices(count, num_frames)))(len(scan.times))
            if scan.packets is not None and (seek_gap is None or len(scan.times) <= seek_gap):  # no seek can pay:
                clip = _decode_at(container, stream, file, scan, indices, None, limits, spec)  # the packets again
        gaps = () if clip is not None else (seek_gap, None) if scan.timing == TIMESTAMPS else (None,)
        scan.packets = None
        for gap in gaps:  # a seek that lands after the frame asked for: read in order instead
            with open_container(fh, file, limits) as container:  # decoding from the start, on a fresh demuxer
                clip = _decode_at(container, checked_stream(container.streams[index], file, limits), file, scan,
                                  indices, gap, limits, spec)
            if clip is not None:
                break
        assert clip is not None, "reading in order always lands"
    if clip.packets and clip.damaged / clip.packets > limits.max_damaged:
        raise VideoError(file, f"damaged: {clip.damaged} of {clip.packets} packets failed to decode "
                         f"(extract.max_damaged: {limits.max_damaged:g})")
    if segment is not None or fps:
        clip.repeated = hi - lo < len(indices)
    return clip


def segment_frames(file, times: list[int], time_base, segment: tuple[float, float]) -> tuple[int, int]:
    """Frames [lo, hi) whose timestamps (sorted, in time_base) lie in segment = (start, end) seconds from the first
    frame; EmptySegment when none does."""
    start, end = segment
    seconds = (np.asarray(times, np.float64) - times[0]) * float(time_base)
    lo, hi = (int(i) for i in np.searchsorted(seconds, [start, end], side="left"))
    if hi <= lo:
        raise EmptySegment(file, f"the segment [{start:g}, {end:g}) s holds no frame (the video's frames span "
                         f"0 to {seconds[-1]:.2f} s)")
    return lo, hi


@dataclass
class _Scan:
    """The first pass over a stream's packets. times: sorted int timestamps in time_base, one per frame a player
    shows (the frame's index in frame order when timing is not TIMESTAMPS, time_base then 1 / fps); keyframes:
    sorted indices of the frames a seek can land on, or None when unknown; timing: Clip.timing."""

    times: list[int]
    time_base: Fraction
    keyframes: list[int] | None
    timing: str
    packets: list | None = None  # every packet read, in order (the end's empty one too), when they total KEPT_BYTES


def _scan(stream) -> _Scan:
    """Read the stream's packets (no decoding), keeping them when small, and decide whether its timestamps can
    place the samples."""
    stamps, keys, kept, size = [], [], [], 0
    for packet in stream.container.demux(stream):
        size += packet.size
        if size > KEPT_BYTES:
            kept = None
        elif kept is not None:
            kept.append(packet)
        if packet.size and not packet.is_discard:  # an edit list's cut-off packets are decoded, never shown
            stamps.append(packet.pts if packet.pts is not None else packet.dts)
            keys.append(packet.is_keyframe)
    timing = TIMESTAMPS
    if any(t is None for t in stamps):
        timing = "frame order: the stream has no timestamps" if all(t is None for t in stamps) else \
            "frame order: some frames have no timestamp"
    elif len(set(stamps)) < len(stamps):
        timing = "frame order: frames share timestamps"
    elif not _reorderable(stamps, MAX_REORDER if stream.codec_context.has_b_frames else 0):
        timing = "frame order: the timestamps are out of order"
    if timing != TIMESTAMPS:
        fps = stream.average_rate or stream.guessed_rate or DEFAULT_FPS
        return _Scan(list(range(len(stamps))), Fraction(1) / Fraction(fps), None, timing, kept)
    times = sorted(stamps)
    keyframes = sorted(bisect.bisect_left(times, t) for t, key in zip(stamps, keys) if key)
    return _Scan(times, stream.time_base, keyframes, timing, kept)


def _reorderable(stamps: list[int], depth: int) -> bool:
    """Whether a decoder holding `depth` frames back could put timestamps in decode order into time order."""
    held, last = [], None
    for t in stamps:
        heapq.heappush(held, t)
        if len(held) > depth:
            out = heapq.heappop(held)
            if last is not None and out < last:
                return False
            last = out
    return last is None or not held or min(held) > last


def _seek(container, stream, t: int) -> None:
    """Seek to the keyframe at or before timestamp t (its own function: the tests count the seeks)."""
    container.seek(t, stream=stream, backward=True, any_frame=False)


@dataclass
class _Count:
    """Packets given to the decoder, those that failed (at most one each), and Clip.decode_errors."""

    packets: int = 0
    damaged: int = 0
    errors: int = 0


def _decode_at(container, stream, file, scan: _Scan, indices: np.ndarray, seek_gap: int | None,
               limits: DecodeLimits, spec: FrameSpec | None) -> Clip | None:
    """Keep the frames at `indices` (sorted) of the frames scan.times.

    Returns None when a seek (only across gaps longer than seek_gap; None: never) lands after the frame asked for.
    A seek is made only where the keyframe before the sample lies ahead of the frames decoded, and no more once one
    lands behind them (with one keyframe, every seek would decode from frame 0 again). A sample whose frame never
    decodes (damage) takes the next that does, or else the last, and counts as a decode error.
    """
    times, by_order = scan.times, scan.timing != TIMESTAMPS
    index_of = {t: i for i, t in enumerate(times)}  # a frame's timestamp -> its index
    rows: dict[int, list[int]] = {}
    for row, idx in enumerate(indices.tolist()):
        rows.setdefault(idx, []).append(row)
    count = _Count()
    frames: np.ndarray | None = None  # uint8 (num_frames, h, w, 3), allocated at the first group resized
    group = FrameGroup()
    stamps = np.zeros(len(indices), np.float64)
    decoded = _frames(container, stream, count, scan.packets)
    pos, last = 0, None  # the index of the next frame to come, and the last frame decoded (index pos - 1)
    for idx in sorted(rows):
        key = None  # the keyframe a seek to idx lands on (-1: none before it), when the keyframes are known
        if scan.keyframes:
            k = bisect.bisect_right(scan.keyframes, idx) - 1
            key = scan.keyframes[k] if k >= 0 else -1
        if seek_gap is not None and idx - pos > seek_gap and (key is None or key > pos):
            _seek(container, stream, times[idx])
            decoded = _frames(container, stream, count)
            first = next(decoded, None)
            if first is None or first.pts is None or first.pts > times[idx]:
                return None
            landed = index_of.get(first.pts, idx)
            if landed < pos:  # behind the frames already decoded: seeking does not pay in this video
                seek_gap = None
            decoded, pos = itertools.chain([first], decoded), landed
        frame = None
        if last is not None and pos - 1 >= idx:
            frame = last  # already in hand: it stood in for an earlier sample whose frame was lost
        else:
            for frame in decoded:
                check_size(file, frame.width, frame.height, limits)
                at = pos if by_order else index_of.get(frame.pts, pos)
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
            count.errors += 1
        elif pos - 1 > idx:
            count.errors += 1  # this sample's own frame was lost to damage; the next one stands in
        rgb = to_rgb(frame)
        size = group.frames[0].shape if group.frames else rgb.shape if frames is None else frames.shape[1:]
        if rgb.shape != size:  # resized and cropped (spec), frames of any size give the encoder's input size
            if spec is None:
                raise VideoError(file, f"the frame size changes mid-stream ({size[1]}x{size[0]} to "
                                 f"{rgb.shape[1]}x{rgb.shape[0]} at frame {idx})")
            frames = group.flush(frames, spec, len(indices))
        if group.add(rgb, rows[idx]):  # full
            frames = group.flush(frames, spec, len(indices))
        stamps[rows[idx]] = float((times[min(pos - 1, len(times) - 1)] - times[0]) * scan.time_base)
    frames = group.flush(frames, spec, len(indices))
    fps = float(1 / scan.time_base) if by_order else float(stream.average_rate or stream.guessed_rate or 0)
    duration = float((times[-1] - times[0]) * scan.time_base) + (1 / fps if fps else 0.0)
    return Clip(frames, indices.astype(np.int64), stamps, fps, len(times), duration,
                repeated=len(times) < len(indices), decode_errors=count.errors, packets=count.packets,
                damaged=count.damaged, timing=scan.timing)


def _frames(container, stream, count: _Count, packets: list | None = None) -> Iterator:
    """Decoded frames in presentation order from the current position (or of `packets`, the stream's packets read
    before); a packet the decoder rejects, or a frame it marks corrupt (concealed damage), is counted in `count`
    and decoding goes on."""
    for packet in container.demux(stream) if packets is None else packets:
        if packet.size:
            count.packets += 1
        try:
            out = stream.decode(packet)
        except av.error.InvalidDataError:
            count.errors += 1
            count.damaged += 1
            continue
        corrupt = False
        for frame in out:
            if frame.is_corrupt:
                count.errors += 1
                count.damaged += not corrupt and count.damaged < count.packets
                corrupt = True
            yield frame


def to_rgb(frame) -> np.ndarray:
    """A decoded frame as uint8 RGB (H, W, 3), upright (its rotation metadata applied)."""
    # one thread: PyAV's default (0, auto) starts a pool of scaler threads for every frame, which cost 4x the
    # conversion itself on small frames and take the cores from the other decode workers (bench/per_file.py)
    rgb = frame.reformat(format="rgb24", threads=1).to_ndarray()
    turns = round(frame.rotation / 90) % 4  # FFmpeg's rotation is counter-clockwise, in degrees
    return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb
