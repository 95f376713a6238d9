"""What a file holds, before decoding: an image or playlist named like a video, its video stream, data elsewhere."""
from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from av.stream import Disposition

from pipeline.errors import VideoError

HEAD = 1 << 16  # bytes read to recognise an image: PNG's acTL comes before the first IDAT, WebP's VP8X at byte 12
GIF_SCAN = 4 << 20  # bytes of a GIF walked to find a second image (an animation)
# Still images FFmpeg can read, by their first bytes (ISO-BMFF images, AVIF and HEIF, by their ftyp brand below)
IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF",
               b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"\xff\x0a": "JPEG XL",
               b"\x00\x00\x00\x0cJXL \r\n\x87\n": "JPEG XL", b"\x00\x00\x00\x0cjP  \r\n\x87\n": "JPEG 2000",
               b"qoif": "QOI", b"8BPS": "PSD", b"\x76\x2f\x31\x01": "OpenEXR", b"DDS ": "DDS"}
# ISO-BMFF major brands of images (HEIF, ISO/IEC 23008-12, and AVIF): still, and image sequences (animations)
STILL_BRANDS = {b"avif": "AVIF", b"avio": "AVIF", b"heic": "HEIF", b"heix": "HEIF", b"heim": "HEIF",
                b"heis": "HEIF", b"mif1": "HEIF", b"mif2": "HEIF", b"jpgh": "HEIF"}
SEQUENCE_BRANDS = {b"avis": "AVIF sequence", b"msf1": "HEIF sequence", b"hevc": "HEIF sequence",
                   b"hevx": "HEIF sequence"}
MAX_BOX = 64 << 20  # a moov box larger than this is not read for its data references
MAX_TOP_BOXES = 1000  # top-level boxes walked at most (a file of tiny boxes would otherwise cost a read each)


def refuse_non_video(file, fh: BinaryIO) -> None:
    """VideoError when the open file is an image (still or animated) or an FFmpeg playlist with a video's name.

    Reads from the file's first byte; where it is left is unspecified."""
    fh.seek(0)
    head = fh.read(HEAD)
    if head.startswith(b"ffconcat"):
        raise VideoError(file, "an FFmpeg playlist (ffconcat), not a video: playlists are never followed")
    kind = next((k for magic, k in IMAGE_MAGIC.items() if head.startswith(magic)), None)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        kind = "WebP"
    if head[4:8] == b"ftyp":
        kind = STILL_BRANDS.get(head[8:12])
        if head[8:12] in SEQUENCE_BRANDS:
            raise VideoError(file, f"an animated image ({SEQUENCE_BRANDS[head[8:12]]}), not a video")
        boxes = {box for box, _, _ in _top_boxes(fh)}
        if kind is None and b"meta" in boxes and b"moov" not in boxes:  # image items and no movie: HEIF, any brand
            kind = "HEIF"
    if kind is None:
        return
    animated = {"PNG": lambda: _apng(head), "WebP": lambda: _animated_webp(head),
                "GIF": lambda: _gif_images(fh) > 1}.get(kind, lambda: False)()
    if animated:
        raise VideoError(file, f"an animated image ({'APNG' if kind == 'PNG' else kind}), not a video")
    raise VideoError(file, f"a still {kind} image, not a video")


def video_stream(container, file):
    """The stream to decode, as the ffmpeg command picks one: the largest picture (then the one flagged default,
    then the first), never a cover picture (attached_pic), nor one whose codec has no decoder. VideoError if none.

    (PyAV's streams.best, FFmpeg's av_find_best_stream, ranks by bit rate and frames probed: it took a 32x32
    thumbnail track over the main one.)"""
    streams = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    if not streams:
        raise VideoError(file, "no video stream" + (" (only a cover picture)" if container.streams.video else ""))
    known = [s for s in streams if s.codec_context is not None]
    if not known:
        raise VideoError(file, "the video stream's codec is unknown to FFmpeg: there is no decoder for it")
    return max(known, key=lambda s: (s.codec_context.width * s.codec_context.height,
                                     bool(s.disposition & Disposition.default), -s.index))


def _apng(head: bytes) -> bool:
    """Whether a PNG (its first bytes) is animated: an acTL chunk before the first IDAT."""
    at = 8
    while at + 8 <= len(head):
        length, kind = struct.unpack(">I4s", head[at:at + 8])
        if kind in (b"acTL", b"IDAT"):
            return kind == b"acTL"
        at += 12 + length
    return False


def _animated_webp(head: bytes) -> bool:
    """Whether a WebP (its first bytes) is animated: the extended header's animation flag."""
    return head[12:16] == b"VP8X" and len(head) > 20 and bool(head[20] & 0x02)


def _gif_images(fh: BinaryIO) -> int:
    """How many images a GIF holds (counting stops at 2, or after GIF_SCAN bytes), walking its blocks."""
    fh.seek(0)
    data = fh.read(GIF_SCAN)
    at, images = 13, 0
    if len(data) > 10 and data[10] & 0x80:  # a global colour table
        at += 3 << ((data[10] & 7) + 1)
    while at < len(data) and images < 2:
        block = data[at]
        if block == 0x2C:  # an image: its descriptor, a local colour table, then LZW data in sub-blocks
            images += 1
            flags = data[at + 9] if at + 9 < len(data) else 0
            at += 10 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0) + 1
        elif block == 0x21:  # an extension: its label, then sub-blocks
            at += 2
        else:  # the trailer, or something a GIF does not hold
            break
        while at < len(data) and data[at]:  # sub-blocks: a length byte, then that many bytes; 0 ends them
            at += data[at] + 1
        at += 1
    return images


def external_reference(fh: BinaryIO) -> bool:
    """Whether an mp4/mov names another file for its media data (a `dref` entry not flagged self-contained), which
    FFmpeg, as used here, never opens. Reads the top-level boxes and the moov box (up to MAX_BOX bytes)."""
    for kind, body_at, body_size in _top_boxes(fh):
        if kind == b"moov":
            fh.seek(body_at)
            return body_size <= MAX_BOX and _refers_out(fh.read(body_size))
    return False


def _top_boxes(fh: BinaryIO) -> Iterator[tuple[bytes, int, int]]:
    """(kind, offset of the body, size of the body) of each top-level ISO-BMFF box, read by seeking."""
    fh.seek(0, 2)
    end, at = fh.tell(), 0
    for _ in range(MAX_TOP_BOXES):
        if at + 8 > end:
            return
        fh.seek(at)
        size, kind = struct.unpack(">I4s", fh.read(8))
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", fh.read(8).rjust(8, b"\0"))[0], 16
        elif size == 0:
            size = end - at
        if size < header:
            return
        yield kind, at + header, size - header
        at += size


_PATH_TO_DREF = (b"trak", b"mdia", b"minf", b"dinf", b"dref")  # where data references lie inside moov


def _refers_out(body: bytes, depth: int = 0) -> bool:
    """Whether these boxes (a moov's contents at depth 0) hold, along trak/mdia/minf/dinf, a dref entry whose
    flags lack 1 (media in this file). Descends by that path only: a box nested a million deep costs nothing."""
    at = 0
    while at + 8 <= len(body):
        size, kind = struct.unpack(">I4s", body[at:at + 8])
        if size < 8:
            return False
        inner = body[at + 8:at + size]
        if kind == _PATH_TO_DREF[depth]:
            if depth < len(_PATH_TO_DREF) - 1:
                if _refers_out(inner, depth + 1):
                    return True
            elif len(inner) >= 8:
                entry = 8  # version and flags, entry count
                for _ in range(struct.unpack(">I", inner[4:8])[0]):
                    if entry + 12 > len(inner):
                        break
                    entry_size, flags = struct.unpack(">I", inner[entry:entry + 4])[0], inner[entry + 11]
                    if not flags & 1:
                        return True
                    entry += max(entry_size, 12)
        at += size
    return False
