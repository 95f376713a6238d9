"""A generated corpus of bad and odd inputs, each with the outcome stage one must give (docs/reliability.md).

`build_corpus(root)` writes every case under root/<class>/...; CASES is the table the tests check and
docs/reliability.md reproduces. Outcomes: "encoded" (a row in the cache), "skipped" (in the skipped table with a reason),
"ignored" (not a video file: never discovered). Videos are written with PyAV (H.264, HEVC, VP9, 10-bit, VFR, ...)
where OpenCV cannot write them.
"""
from __future__ import annotations

import inspect
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from tests.conftest import set_mp4_rotation, write_video


@dataclass(frozen=True)
class Case:
    """One kind of input: where it lies under the corpus root, what stage one must do with it, and why."""

    kind: str
    path: str
    outcome: str  # encoded | skipped | ignored
    note: str
    shown: str | None = None  # how docs/reliability.md writes the path, where the path itself cannot be written there

    @property
    def readme_path(self) -> str:
        """The path as docs/reliability.md's table writes it (`shown` if set, else `path`)."""
        return self.path if self.shown is None else self.shown


BAD_NAME = os.fsdecode(b"names/bad\xff.mp4")  # "names/bad\udcff.mp4": how Python names a file whose name is not UTF-8
DAMAGED_FRAMES = 500  # the true frame count of damaged/one_byte.mp4
ONE_KEY_FRAMES = 3000  # odd/one_keyframe.mp4: 8 samples 375 frames apart, past SEEK_GAP
EDIT_SHOWN = 12  # odd/edit_list.mp4: the last 12 of 75 frames are shown

CASES = [
    Case("zero bytes", "bad/zero.mp4", "skipped", "not a readable video"),
    Case("truncated mp4 at 10%", "bad/cut10.mp4", "skipped", "the index (moov) is written last: gone"),
    Case("truncated mp4 at 50%", "bad/cut50.mp4", "skipped", "the index (moov) is written last: gone"),
    Case("truncated mp4 at 90%", "bad/cut90.mp4", "skipped", "the index (moov) is written last: gone"),
    Case("mp4 with no index (moov box removed)", "bad/no_moov.mp4", "skipped", "not a readable video"),
    Case("truncated AVI (header still claims every frame)", "odd/cut.avi", "encoded",
         "frames counted and samples placed again over what decodes"),
    Case("truncated MKV", "odd/cut.mkv", "encoded", "the frames that decode"),
    Case("text named .mp4", "bad/text.mp4", "skipped", "not a readable video"),
    Case("PNG image named .mp4", "bad/image.mp4", "skipped", "a still image, not a video"),
    Case("audio-only mp4 (AAC)", "bad/audio.mp4", "skipped", "no video stream"),
    Case("random bytes named .mp4", "bad/random.mp4", "skipped", "not a readable video"),
    Case("one frame", "odd/one_frame.mp4", "encoded", "the frame repeated, `repeated` set"),
    Case("fewer frames than num_frames (5)", "odd/five_frames.mp4", "encoded", "frames repeated, `repeated` set"),
    Case("4K (3840x2160)", "odd/uhd.mp4", "encoded", "full frames kept only for the samples"),
    Case("16x16", "odd/tiny.mp4", "encoded", "upscaled to 224 by the preprocessing"),
    Case("rotation metadata 90", "rotation/r90.mp4", "encoded", "frames come out upright (portrait)"),
    Case("rotation metadata 180", "rotation/r180.mp4", "encoded", "frames come out upright"),
    Case("rotation metadata 270", "rotation/r270.mp4", "encoded", "frames come out upright (portrait)"),
    Case("variable frame rate (MKV)", "odd/vfr.mkv", "encoded", "timestamps from the stream, not index / fps"),
    Case("WebM/VP9 (frame count is an estimate)", "codecs/vp9.webm", "encoded", "count checked at the end"),
    Case("MPEG-TS (no frame count, seeking inexact)", "containers/h264.ts", "encoded",
         "a seek that lands elsewhere falls back to reading in order"),
    Case("grayscale (FFV1 gray)", "odd/gray.mkv", "encoded", "converted to RGB"),
    Case("10-bit 4:2:0 (HEVC yuv420p10le)", "odd/hevc10.mkv", "encoded", "converted to 8-bit RGB"),
    Case("4:4:4 (H.264 yuv444p)", "odd/h264_444.mp4", "encoded", ""),
    Case("H.264 in mp4", "codecs/h264.mp4", "encoded", ""),
    Case("HEVC in mp4", "codecs/hevc.mp4", "encoded", ""),
    Case("MJPEG in AVI", "codecs/mjpeg.avi", "encoded", ""),
    Case("MPEG-4 part 2 in AVI", "codecs/mpeg4.avi", "encoded", ""),
    Case("H.264 in MOV", "containers/h264.mov", "encoded", ""),
    Case("H.264 in MKV", "containers/h264.mkv", "encoded", ""),
    Case("long video, 12,000 frames", "odd/long.mp4", "encoded", "seeks across the gaps: bounded work"),
    Case("unicode and spaces in the name", "names/vidéo à la plage 🎬.mp4", "encoded", ""),
    Case("upper-case extension", "names/SHOUT.MP4", "encoded", ""),
    Case("hidden file", "names/.hidden.mp4", "ignored", "hidden files and folders are skipped"),
    Case("nested folders", "names/a/b/deep.mp4", "encoded", "class = first-level folder"),
    Case("a class with one video", "lonely/only.mp4", "encoded", "the class exists with one video"),
    Case("symlinked video", "names/link.mp4", "encoded", "followed"),
    Case("unreadable file (permission denied)", "bad/locked.mp4", "skipped", "the reason says permission denied"),
    Case("directory named like a video", "names/folder.mp4", "ignored", "not a file"),
    Case("empty class folder", "empty_class/", "ignored", "no class without videos"),
    Case("interlaced H.264 (top field first)", "interlaced/h264_tff.mp4", "encoded",
         "real frames (OpenCV's build gave near-black ones)"),
    Case("interlaced MPEG-2 in MPEG-PS", "interlaced/mpeg2.mpg", "encoded", "bottom field first"),
    Case("AV1 in MKV (SVT-AV1)", "codecs/av1.mkv", "encoded", "dav1d decodes it"),
    Case("one changed byte in the middle of a 500-frame H.264 mp4", "damaged/one_byte.mp4", "encoded",
         "decoding goes on past the damage; the decode errors are counted"),
    Case("memory bomb: one 16000x16000 H.264 frame (tens of KB)", "bombs/huge.mp4", "skipped",
         "over the pixel limit: refused before decoding"),
    Case("memory bomb: a 16000x1 sliver (FFV1)", "bombs/sliver.mkv", "skipped",
         "aspect ratio refused: resizing would need tens of GB"),
    Case("ffconcat playlist that lists itself, named .mp4", "playlists/loop.mp4", "skipped",
         "not a video container (playlists are refused)"),
    Case("ffconcat playlist naming another video of the corpus", "playlists/ref.mp4", "skipped",
         "never follows the reference"),
    Case("FIFO named .mp4", "special/pipe.mp4", "skipped", "not a regular file: never opened for reading"),
    Case("broken symbolic link", "special/broken.mp4", "skipped", "broken symbolic link"),
    Case("symbolic link to a character device (/dev/zero)", "special/dev.mp4", "skipped", "not a regular file"),
    Case("class folder that cannot be searched (mode 000)", "locked_dir/", "skipped",
         "the folder cannot be read: reported, the run goes on"),
    Case("symbolic link cycle (walk/loop -> ..)", "walk/loop/", "ignored",
         "each real folder is visited once: no duplicates, no endless walk"),
    Case("file name that is not valid UTF-8", BAD_NAME, "skipped",
         "the name is not valid UTF-8: reported, never a crash", shown=r"names/bad\xff.mp4"),
    Case("colon in the first path component", "scene:1/x.mp4", "encoded",
         "read as a file, never as an FFmpeg protocol"),
    Case(f"one keyframe for {ONE_KEY_FRAMES:,} frames (32x24)", "odd/one_keyframe.mp4", "encoded",
         "no seek that would land behind the frames decoded: read in order, each frame once"),
    Case("MKV with an unknown codec id", "bad/unknown_codec.mkv", "skipped",
         "the codec is unknown to FFmpeg: no decoder"),
    Case("copy-cut mp4: an edit list shows 12 of 75 frames", "odd/edit_list.mp4", "encoded",
         "only the 12 frames a player shows, and their duration (0.48 s)"),
    Case("audio with cover art (mp4 attached_pic)", "bad/cover.mp4", "skipped",
         "no video stream (only a cover picture)"),
    Case("audio with cover art (MKV attachment)", "bad/cover.mkv", "skipped",
         "no video stream (only a cover picture)"),
    Case("two video tracks, a 32x32 black thumbnail first", "odd/two_tracks.mp4", "encoded",
         "the larger picture, as the ffmpeg command picks"),
    Case("every timestamp equal (MKV)", "odd/equal_pts.mkv", "encoded",
         "sampled by frame order, and `timing` says so"),
    Case("shuffled timestamps (MKV)", "odd/shuffled_pts.mkv", "encoded",
         "sampled by frame order, and `timing` says so"),
    Case("raw H.264 (Annex B, no timestamps) named .mp4", "odd/annexb.mp4", "encoded",
         "sampled by frame order, timestamps from its frame rate"),
    Case("still AVIF image named .mp4", "bad/avif.mp4", "skipped", "a still AVIF image, not a video"),
    Case("animated GIF named .mp4", "bad/gif.mp4", "skipped", "an animated image, not a video"),
    Case("animated WebP named .mp4", "bad/webp.mp4", "skipped", "an animated image, not a video"),
    Case("animated PNG (APNG) named .mp4", "bad/apng.mp4", "skipped", "an animated image, not a video"),
    Case("mp4 whose data reference (dref alias) names another file", "bad/dref.mp4", "skipped",
         "the video data is in another file, which is never read"),
    Case("H.264 mp4 with a byte of every packet changed", "damaged/every_packet.mp4", "skipped",
         "damaged: most packets fail to decode (over extract.max_damaged)"),
]


BITEXACT = {"fflags": "+bitexact"}  # no random ids (Matroska, WebM) nor version strings from the muxer

VFR_PTS_MS = np.cumsum([0] + [20 if i % 3 else 90 for i in range(1, 40)]).tolist()  # 20 ms and 90 ms gaps


def _write_av(path: Path, codec: str, n: int, size=(96, 64), fps=25, pix_fmt="yuv420p", container=None,
              pts: list[int] | None = None, time_base: Fraction | None = None, options=None) -> Path:
    """Write n frames (grey level rising with the index, a white corner block) with PyAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=container, options=BITEXACT) as out:
        stream = out.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], pix_fmt
        if time_base is not None:
            stream.codec_context.time_base = time_base
        for i in range(n):
            img = np.full((size[1], size[0], 3), 20 + (3 * i) % 230, np.uint8)
            img[: size[1] // 4, : size[0] // 4] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=44100)
        for i in range(40):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _without_moov(data: bytes) -> bytes:
    """The mp4 with its top-level moov box cut out."""
    out, at = bytearray(), 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        if size < 8:
            break
        if kind != b"moov":
            out += data[at:at + size]
        at += size
    return bytes(out)


def _start_child(call: str, *functions) -> subprocess.Popen:
    """Run `call` in a Python child that defines `functions` from their source (they use only av and numpy).

    Five files are written this way, alongside the rest of the build: the bomb, whose encoding needs 1.5 GB (kept
    out of the test process); the AV1 video and the AVIF image, because once SVT-AV1 has run in a process, x264
    there gives other bytes from run to run (seen with SVT-AV1 4.1); and the two damaged videos, because x264 also
    gives other bytes now and then in a process where multi-threaded x264 has run, and the byte to change is chosen
    on what decoding does (one_byte) or the share of packets that fail must stay above the limit (every_packet).
    SVT_LOG=1: SVT-AV1 prints errors only, not its banner."""
    code = ("from __future__ import annotations\nfrom fractions import Fraction\nfrom pathlib import Path\n"
            f"import av\nimport numpy as np\nBITEXACT = {BITEXACT!r}\nDAMAGED_FRAMES = {DAMAGED_FRAMES}\n"
            + "".join(inspect.getsource(f) for f in functions) + call + "\n")
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "SVT_LOG": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _decode_errors(path: Path) -> int:
    """Packets whose decoding raises, decoding each packet on its own and going on."""
    errors = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            try:
                stream.decode(packet)
            except av.error.FFmpegError:
                errors += 1
    return errors


def _one_byte_damaged(path: Path) -> None:
    """DAMAGED_FRAMES frames of H.264 (one x264 thread: the same bytes whatever the machine's core count) with one
    byte inverted: the middle byte of the first packet from the middle of the video whose decoding FFmpeg refuses."""
    _write_av(path, "libx264", DAMAGED_FRAMES, options={"threads": "1"})
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(p.pos, p.size) for p in container.demux(stream) if p.size]
    clean = path.read_bytes()
    for pos, size in packets[DAMAGED_FRAMES // 2:DAMAGED_FRAMES // 2 + 30]:
        data = bytearray(clean)
        data[pos + size // 2] ^= 0xFF
        path.write_bytes(data)
        if _decode_errors(path):
            return
    raise AssertionError(f"{path}: no single inverted byte disturbs decoding")


def _huge_h264(path: Path, width: int = 16000, height: int = 16000) -> None:
    """One flat width x height H.264 frame: CABAC codes its million macroblocks in tens of KB (x264 needs about
    1.5 GB and a second or so for it; one thread, no lookahead: the fastest here)."""
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane in frame.planes:
        np.frombuffer(plane, np.uint8)[:] = 128
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options=BITEXACT) as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "threads": "1",
                                                             "x264-params": "cabac=1:rc-lookahead=0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _sliver(path: Path, width: int = 16000, height: int = 1) -> None:
    """Five grey frames of width x height pixels in FFV1 (FFV1 refuses a width of 1, so it is wide, not tall)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="matroska", options=BITEXACT) as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "gray"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((height, width), 20 + 40 * i, np.uint8), format="gray")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _every_packet_damaged(path: Path) -> None:
    """75 frames of H.264 (one x264 thread) with the byte three quarters into every packet inverted."""
    _write_av(path, "libx264", 75, options={"threads": "1"})
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    data = bytearray(path.read_bytes())
    for pos, size in packets:
        data[pos + size * 3 // 4] ^= 0xFF
    path.write_bytes(data)


def _still_avif(path: Path) -> None:
    """One 64x64 AV1 picture in FFmpeg's AVIF muxer (an image item, no moov), named as given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avif", options=BITEXACT) as out:
        stream = out.add_stream("libsvtav1", rate=1, options={"preset": "12", "svtav1-params": "lp=1"})
        stream.width = stream.height = 64
        frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 100, np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)


def _animation(path: Path, container: str, codec: str, pix_fmt: str) -> None:
    """Three 32x32 frames as an animated image (GIF, APNG, WebP) named as given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, pix_fmt
        for i in range(3):
            rgb = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(rgb.reformat(format=pix_fmt)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _with_cover(path: Path, container: str | None) -> None:
    """AAC audio with a JPEG cover: an attached_pic stream in mp4, an image attachment in Matroska."""
    jpeg = cv2.imencode(".jpg", np.full((32, 32, 3), 90, np.uint8))[1].tobytes()
    with av.open(str(path), "w", format=container) as out:
        audio = out.add_stream("aac", rate=44100)
        if container == "matroska":
            out.add_attachment("cover.jpg", "image/jpeg", jpeg)
        else:
            cover = out.add_stream("mjpeg", rate=1)
            cover.width = cover.height = 32
            cover.pix_fmt, cover.disposition = "yuvj420p", av.stream.Disposition.attached_pic
            packet = av.Packet(jpeg)
            packet.stream, packet.pts, packet.dts = cover, 0, 0
            out.mux(packet)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)


def _two_tracks(path: Path) -> None:
    """An mp4 of two H.264 tracks, 20 frames each: a black 32x32 thumbnail first, then the 96x64 video."""
    with av.open(str(path), "w", options=BITEXACT) as out:
        thumb, main = out.add_stream("libx264", rate=25), out.add_stream("libx264", rate=25)
        thumb.width = thumb.height = 32
        main.width, main.height = 96, 64
        for i in range(20):
            for stream, level in ((thumb, 0), (main, 20 + 10 * i)):
                img = np.full((stream.height, stream.width, 3), level, np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
        for stream in (thumb, main):
            for packet in stream.encode():
                out.mux(packet)


def _with_pts(path: Path, pts_ms: list[int]) -> None:
    """H.264 (no B-frames) in Matroska with these presentation times (ms) in stream order; grey level 20 + 10 i."""
    with av.open(str(path), "w", format="matroska", options=BITEXACT) as out:
        stream = out.add_stream("libx264", rate=25, options={"bf": "0", "threads": "1"})
        stream.width, stream.height = 64, 48
        packets = []
        for i in range(len(pts_ms)):
            img = np.full((48, 64, 3), 20 + 10 * i, np.uint8)
            packets += stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24"))
        for packet, t in zip([*packets, *stream.encode()], pts_ms):
            packet.time_base, packet.pts, packet.dts = Fraction(1, 1000), t, 0  # Matroska keeps the pts alone
            out.mux(packet)


def _copy_cut(path: Path) -> None:
    """75 frames (one keyframe) remuxed as a copy-cut does: every packet kept, times shifted so that frame 63 is at
    0; the mp4 muxer writes an edit list, and players show the last EDIT_SHOWN frames only."""
    whole = _write_av(path.with_suffix(".tmp"), "libx264", 75, container="mp4", options={"g": "75", "threads": "1"})
    with av.open(str(whole)) as src, av.open(str(path), "w", options=BITEXACT) as out:
        stream = src.streams.video[0]
        copy = out.add_stream_from_template(stream)
        shift = round((75 - EDIT_SHOWN) / 25 / stream.time_base)
        for packet in src.demux(stream):
            if packet.dts is not None:
                packet.pts, packet.dts, packet.stream = packet.pts - shift, packet.dts - shift, copy
                out.mux(packet)
    whole.unlink()


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", len(body) + 8, kind) + body


def _external_dref(src: Path, path: Path, target: str) -> None:
    """src (an mp4) with its data reference replaced by a Macintosh alias to `target`, not flagged self-contained
    (the alias record's layout as FFmpeg's mov_read_dref reads it: 150 bytes, then an absolute path)."""
    name = target.encode()
    alias = (bytes(130) + struct.pack(">HH", 1, 1) + bytes(16) + struct.pack(">HH", 2, len(name)) + name
             + bytes(len(name) % 2) + b"\xff\xff\x00\x00")
    dref = _box(b"dref", struct.pack(">II", 0, 1) + _box(b"alis", bytes(4) + alias))

    def rewrite(data: bytes) -> bytes:
        out, at = b"", 0
        while at + 8 <= len(data):
            size, kind = struct.unpack(">I4s", data[at:at + 8])
            if kind == b"dref":
                out += dref
            elif kind in (b"moov", b"trak", b"mdia", b"minf", b"dinf"):
                out += _box(kind, rewrite(data[at + 8:at + size]))
            else:
                out += data[at:at + size]
            at += size
        return out

    path.write_bytes(rewrite(src.read_bytes()))


def build_corpus(root: Path) -> Path:
    """Write every case of CASES under root (a folder per class); returns root."""
    p = root
    children = [
        _start_child(f"_huge_h264(Path({str(p / 'bombs/huge.mp4')!r}))", _huge_h264),
        _start_child(f"_write_av(Path({str(p / 'codecs/av1.mkv')!r}), 'libsvtav1', 20, container='matroska', "
                     "options={'preset': '10', 'svtav1-params': 'lp=1'})\n"
                     f"_still_avif(Path({str(p / 'bad/avif.mp4')!r}))", _write_av, _still_avif),
        _start_child(f"_one_byte_damaged(Path({str(p / 'damaged/one_byte.mp4')!r}))\n"
                     f"_every_packet_damaged(Path({str(p / 'damaged/every_packet.mp4')!r}))", _write_av,
                     _decode_errors, _one_byte_damaged, _every_packet_damaged),
    ]
    try:
        _build(p)
        for child in children:
            _, err = child.communicate()
            assert child.returncode == 0, err
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    return root


def _build(p: Path) -> None:
    """Everything but the files the children write (see _start_child)."""
    for d in ("bad", "odd", "rotation", "codecs", "containers", "names", "lonely", "empty_class"):
        (p / d).mkdir(parents=True, exist_ok=True)
    (p / "bad/zero.mp4").write_bytes(b"")
    full = _write_av(p / "odd/full.tmp", "libx264", 60, container="mp4").read_bytes()
    (p / "odd/full.tmp").unlink()
    for pct in (10, 50, 90):
        (p / f"bad/cut{pct}.mp4").write_bytes(full[: len(full) * pct // 100])
    (p / "bad/no_moov.mp4").write_bytes(_without_moov(full))
    avi = write_video(p / "odd/cut.avi", 60)
    avi.write_bytes(avi.read_bytes()[: avi.stat().st_size // 2])
    mkv = _write_av(p / "odd/cut.mkv", "libx264", 80, container="matroska")
    mkv.write_bytes(mkv.read_bytes()[: mkv.stat().st_size * 6 // 10])
    (p / "bad/text.mp4").write_text("this is not a video\n" * 50)
    (p / "bad/image.mp4").write_bytes(cv2.imencode(".png", np.full((48, 64, 3), 128, np.uint8))[1].tobytes())
    _audio_only(p / "bad/audio.mp4")
    (p / "bad/random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    _write_av(p / "odd/one_frame.mp4", "libx264", 1)
    _write_av(p / "odd/five_frames.mp4", "libx264", 5)
    _write_av(p / "odd/uhd.mp4", "libx264", 6, size=(3840, 2160), options={"preset": "ultrafast"})
    _write_av(p / "odd/tiny.mp4", "libx264", 20, size=(16, 16))
    for deg in (90, 180, 270):
        set_mp4_rotation(write_video(p / f"rotation/r{deg}.mp4", 20, size=(64, 32)), deg)
    _write_av(p / "odd/vfr.mkv", "libx264", 40, container="matroska", pts=VFR_PTS_MS, time_base=Fraction(1, 1000))
    _write_av(p / "codecs/vp9.webm", "libvpx-vp9", 30, container="webm")
    _write_av(p / "containers/h264.ts", "libx264", 60, container="mpegts")
    _write_av(p / "odd/gray.mkv", "ffv1", 20, pix_fmt="gray", container="matroska")
    _write_av(p / "odd/hevc10.mkv", "libx265", 20, pix_fmt="yuv420p10le", container="matroska",
              options={"x265-params": "log-level=error"})
    _write_av(p / "odd/h264_444.mp4", "libx264", 20, pix_fmt="yuv444p")
    _write_av(p / "codecs/h264.mp4", "libx264", 30)
    _write_av(p / "codecs/hevc.mp4", "libx265", 30, options={"x265-params": "log-level=error"})
    _write_av(p / "codecs/mjpeg.avi", "mjpeg", 30, pix_fmt="yuvj420p")
    _write_av(p / "codecs/mpeg4.avi", "mpeg4", 30)
    _write_av(p / "containers/h264.mov", "libx264", 30, container="mov")
    _write_av(p / "containers/h264.mkv", "libx264", 30, container="matroska")
    _write_av(p / "odd/long.mp4", "libx264", 12_000, size=(32, 24), options={"g": "25", "preset": "ultrafast"})
    _write_av(p / "names/vidéo à la plage 🎬.mp4", "libx264", 20)
    _write_av(p / "names/SHOUT.MP4", "libx264", 20)
    _write_av(p / "names/.hidden.mp4", "libx264", 20)
    _write_av(p / "names/a/b/deep.mp4", "libx264", 20)
    _write_av(p / "lonely/only.mp4", "libx264", 20)
    os.symlink(p / "codecs/h264.mp4", p / "names/link.mp4")
    locked = _write_av(p / "bad/locked.mp4", "libx264", 20)
    locked.chmod(0)
    (p / "names/folder.mp4").mkdir()
    interlaced = {"flags": "+ilme+ildct"}
    _write_av(p / "interlaced/h264_tff.mp4", "libx264", 20, options={**interlaced, "x264-params": "interlaced=1:tff=1"})
    _write_av(p / "interlaced/mpeg2.mpg", "mpeg2video", 20, container="mpeg", options=interlaced)
    _sliver(p / "bombs/sliver.mkv")
    (p / "playlists").mkdir()
    (p / "playlists/loop.mp4").write_text("ffconcat version 1.0\nfile loop.mp4\n")
    # FFmpeg's concat demuxer, in its default safe mode, refuses "../codecs/h264.mp4" itself; it follows a plain
    # name: clip.dat, a link to codecs/h264.mp4 that discovery never lists (not a video extension)
    os.symlink("../codecs/h264.mp4", p / "playlists/clip.dat")
    (p / "playlists/ref.mp4").write_text("ffconcat version 1.0\nfile clip.dat\n")
    (p / "special").mkdir()
    os.mkfifo(p / "special/pipe.mp4")
    os.symlink("missing.mp4", p / "special/broken.mp4")
    os.symlink("/dev/zero", p / "special/dev.mp4")
    _write_av(p / "locked_dir/v.mp4", "libx264", 20)
    (p / "locked_dir").chmod(0)
    _write_av(p / "walk/one.mp4", "libx264", 20)
    os.symlink("..", p / "walk/loop")
    bad = _write_av(p / "names/bad.tmp", "libx264", 20, container="mp4")
    os.rename(bad, os.path.join(os.fsencode(p), os.fsencode(BAD_NAME)))  # bytes: the name is not UTF-8
    _write_av(p / "scene:1/x.mp4", "libx264", 20)
    _write_av(p / "odd/one_keyframe.mp4", "libx264", ONE_KEY_FRAMES, size=(32, 24),
              options={"preset": "ultrafast", "threads": "1", "x264-params": "keyint=infinite:scenecut=0"})
    mkv = _write_av(p / "bad/unknown_codec.mkv", "libx264", 10, container="matroska")
    mkv.write_bytes(mkv.read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_XYZZY/ISO/AVC"))  # a codec id no one knows
    _copy_cut(p / "odd/edit_list.mp4")
    _with_cover(p / "bad/cover.mp4", None)
    _with_cover(p / "bad/cover.mkv", "matroska")
    _two_tracks(p / "odd/two_tracks.mp4")
    _with_pts(p / "odd/equal_pts.mkv", [0] * 20)
    _with_pts(p / "odd/shuffled_pts.mkv", (np.random.default_rng(1).permutation(20) * 40).tolist())
    _write_av(p / "odd/annexb.mp4", "libx264", 30, container="h264")
    _animation(p / "bad/gif.mp4", "gif", "gif", "rgb8")
    _animation(p / "bad/webp.mp4", "webp", "libwebp_anim", "yuv420p")
    _animation(p / "bad/apng.mp4", "apng", "apng", "rgb24")
    _external_dref(p / "codecs/h264.mp4", p / "bad/dref.mp4", str(p / "codecs/h264.mp4"))
