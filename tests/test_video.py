"""Discovery, sampling and decoding of videos that the tests write with OpenCV."""
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.discover import discover_videos
from pipeline.errors import DataError, UserError, VideoError
from pipeline.decode.sampling import Sampling, fps_indices, sample_indices
from pipeline.decode.video import content_hash, read_frames
from tests.conftest import level, set_mp4_rotation, write_video


def test_sample_indices_are_evenly_spaced_segment_centres():
    assert sample_indices(160, 16).tolist() == list(range(5, 160, 10))
    assert sample_indices(16, 16).tolist() == list(range(16))
    idx = sample_indices(100, 16)
    assert idx.dtype == np.int64 and idx[0] >= 0 and idx[-1] <= 99 and np.all(np.diff(idx) > 0)


def test_sample_indices_repeat_frames_of_a_short_video_in_order():
    idx = sample_indices(5, 16)
    assert sorted(set(idx.tolist())) == [0, 1, 2, 3, 4] and np.all(np.diff(idx) >= 0)
    assert sample_indices(1, 4).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("count,num", [(0, 16), (10, 0), (-3, 16)])
def test_sample_indices_reject_impossible_requests(count, num):
    with pytest.raises(ValueError, match="cannot sample"):
        sample_indices(count, num)


def test_discover_videos_labels_from_first_folder_and_skips_hidden(dataset: Path):
    (dataset / "clapping" / ".hidden.mp4").write_bytes(b"x")
    (dataset / ".cache" / "x").mkdir(parents=True)
    (dataset / ".cache" / "x" / "y.mp4").write_bytes(b"x")
    (dataset / "notes.txt").write_text("not a video")
    (dataset / "top.mp4").write_bytes(b"no class folder")
    (dataset / "sitting" / "folder.mp4").mkdir()  # a directory named like a video
    (dataset / "empty_class").mkdir()
    videos, classes, problems = discover_videos(dataset)
    assert classes == ["clapping", "sitting", "walking"]
    assert [v.path for v in videos] == ["clapping/a.mp4", "clapping/b.avi", "clapping/sub/c.mkv", "sitting/d.webm",
                                        "sitting/e.MOV", "walking/f.mp4", "walking/g.avi"]
    assert [v.label for v in videos][:3] == ["clapping"] * 3
    assert all(v.file == dataset / v.path for v in videos)


def test_discover_videos_rejects_a_missing_root(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        discover_videos(tmp_path / "nope")


@pytest.mark.parametrize("name", ["v.mp4", "v.avi", "v.mkv", "v.webm", "v.mov"])
def test_read_frames_returns_the_sampled_frames_in_rgb(tmp_path, name):
    file = write_video(tmp_path / name, n_frames=48, fps=24.0)
    clip = read_frames(file, 8)
    expected = sample_indices(48, 8)
    assert clip.frames.shape == (8, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.indices.tolist() == expected.tolist()
    assert clip.frame_count == 48 and clip.fps == pytest.approx(24.0) and clip.duration == pytest.approx(2.0, abs=0.01)
    assert not clip.repeated
    np.testing.assert_allclose(clip.timestamps, expected / 24.0, atol=1e-3)
    # the background grey level tells which frame was decoded (lossy codecs: within a few levels)
    corner = clip.frames[:, -1, -1, :].astype(int)
    np.testing.assert_allclose(corner[:, 0], [level(i) for i in expected], atol=4)


def test_read_frames_converts_bgr_to_rgb(tmp_path):
    import cv2
    file = tmp_path / "red.avi"
    writer = cv2.VideoWriter(str(file), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for _ in range(5):
        writer.write(np.tile(np.array([0, 0, 255], np.uint8), (32, 32, 1)))  # pure red in BGR
    writer.release()
    pixel = read_frames(file, 2).frames[0, 16, 16].astype(int)
    assert pixel[0] > 200 and pixel[2] < 50


def test_a_video_shorter_than_num_frames_repeats_frames_and_says_so(tmp_path):
    clip = read_frames(write_video(tmp_path / "short.mp4", n_frames=5), 16)
    assert clip.repeated and clip.frame_count == 5 and len(clip.frames) == 16
    assert clip.indices.tolist() == sample_indices(5, 16).tolist()


def test_a_one_frame_video_is_decoded(tmp_path):
    clip = read_frames(write_video(tmp_path / "one.avi", n_frames=1), 4)
    assert clip.indices.tolist() == [0, 0, 0, 0] and clip.repeated and clip.frames.shape[0] == 4


def test_a_wrong_header_frame_count_is_corrected_by_counting(tmp_path):
    # an AVI cut in the middle still announces 60 frames in its header, but only the first ones decode
    file = write_video(tmp_path / "cut.avi", n_frames=60)
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    clip = read_frames(file, 8)
    assert 10 < clip.frame_count < 60
    assert clip.indices.tolist() == sample_indices(clip.frame_count, 8).tolist()
    np.testing.assert_allclose(clip.frames[:, -1, -1, 0].astype(int), [level(i) for i in clip.indices], atol=4)


@pytest.mark.parametrize("content", [b"", b"this is a text file, not a video\n" * 10, bytes(range(256)) * 64])
def test_unreadable_files_raise_value_error_naming_the_file(tmp_path, content):
    file = tmp_path / "bad.mp4"
    file.write_bytes(content)
    with pytest.raises(VideoError, match="bad.mp4") as err:
        read_frames(file, 4)
    assert err.value.file == str(file) and str(file) not in err.value.reason  # the file and the reason apart


def test_a_truncated_mp4_raises_value_error(tmp_path):
    file = write_video(tmp_path / "cut.mp4", n_frames=60)
    file.write_bytes(file.read_bytes()[:2000])  # OpenCV writes the index (moov) last: it is gone
    with pytest.raises(VideoError, match="cut.mp4"):
        read_frames(file, 4)


def test_content_hash_depends_on_bytes_only(tmp_path):
    (tmp_path / "a").write_bytes(b"same")
    (tmp_path / "b").write_bytes(b"same")
    (tmp_path / "c").write_bytes(b"other")
    assert content_hash(tmp_path / "a") == content_hash(tmp_path / "b") != content_hash(tmp_path / "c")
    assert len(content_hash(tmp_path / "a")) == 64


@pytest.mark.parametrize("degrees,corner", [(0, (0, 0)), (90, (0, 1)), (180, (1, 1)), (270, (1, 0))])
def test_rotation_metadata_is_applied(tmp_path, degrees, corner):
    import cv2
    file = tmp_path / f"rot{degrees}.mp4"
    writer = cv2.VideoWriter(str(file), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 32))
    for _ in range(6):
        frame = np.zeros((32, 64, 3), np.uint8)
        frame[:16, :16] = 255  # a white block in the top-left corner of the stored picture
        writer.write(frame)
    writer.release()
    set_mp4_rotation(file, degrees)
    frames = read_frames(file, 2).frames
    assert frames.shape[1:3] == ((64, 32) if degrees in (90, 270) else (32, 64))
    h, w = frames.shape[1:3]
    corners = {(0, 0): frames[0, 2, 2], (0, 1): frames[0, 2, w - 3], (1, 0): frames[0, h - 3, 2],
               (1, 1): frames[0, h - 3, w - 3]}
    assert [k for k, px in corners.items() if px.mean() > 128] == [corner]  # upright: the block moved with it


def _image(path: Path, container: str, codec: str, pix_fmt: str, frames: int) -> Path:
    import av
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, pix_fmt
        for i in range(frames):
            rgb = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 60 * i, np.uint8), format="rgb24")
            for packet in stream.encode(rgb.reformat(format=pix_fmt)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.mark.parametrize("container,codec,pix_fmt,frames,reason", [
    ("gif", "gif", "rgb8", 1, "a still GIF image, not a video"),
    ("gif", "gif", "rgb8", 2, "an animated image (GIF), not a video"),
    ("webp", "libwebp", "yuv420p", 1, "a still WebP image, not a video"),
    ("webp", "libwebp_anim", "yuv420p", 2, "an animated image (WebP), not a video"),
    ("apng", "apng", "rgb24", 2, "an animated image (APNG), not a video"),
])
def test_images_with_a_video_name_are_refused_still_or_animated(tmp_path, container, codec, pix_fmt, frames, reason):
    file = _image(tmp_path / "v.mp4", container, codec, pix_fmt, frames)
    with pytest.raises(VideoError) as err:
        read_frames(file, 4)
    assert err.value.reason == reason


@pytest.mark.parametrize("head,reason", [
    (b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heic", "a still HEIF image, not a video"),
    (b"\x00\x00\x00\x1cftypavis\x00\x00\x00\x00avismsf1", "an animated image (AVIF sequence), not a video"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "a still JPEG XL image, not a video"),
    (b"II*\x00\x08\x00\x00\x00", "a still TIFF image, not a video"),
    # image items (meta) and no movie (moov), under a video's brand: HEIF all the same
    (b"\x00\x00\x00\x10ftypisom\x00\x00\x00\x00\x00\x00\x00\x10meta\x00\x00\x00\x00\x00\x00\x00\x00",
     "a still HEIF image, not a video"),
])
def test_image_formats_are_known_by_their_first_bytes(tmp_path, head, reason):
    (tmp_path / "v.mp4").write_bytes(head + bytes(64))
    with pytest.raises(VideoError) as err:
        read_frames(tmp_path / "v.mp4", 4)
    assert err.value.reason == reason


def test_a_video_whose_frames_mostly_fail_is_refused_naming_the_setting(tmp_path):
    from pipeline.decode.video import DecodeLimits
    file = write_video(tmp_path / "v.avi", n_frames=20)  # MJPEG: every frame its own picture, damaged alone
    data = bytearray(file.read_bytes())
    for at in range(len(data) // 4, len(data) * 3 // 4, 97):
        data[at] ^= 0xFF
    file.write_bytes(data)
    clip = read_frames(file, 4, limits=DecodeLimits(max_damaged=1.0))
    assert 0 < clip.damaged <= clip.packets
    limit = clip.damaged / clip.packets - 0.01
    with pytest.raises(VideoError, match=rf"damaged: {clip.damaged} of {clip.packets} packets failed to decode "
                                         rf"\(extract.max_damaged: {limit:g}\)"):
        read_frames(file, 4, limits=DecodeLimits(max_damaged=limit))


def test_data_references_are_found_along_their_path_only():
    import io
    import struct

    from pipeline.decode.sniff import external_reference

    def box(kind, body):
        return struct.pack(">I4s", len(body) + 8, kind) + body

    def movie(flags):  # moov/trak/mdia/minf/dinf/dref with one 'url ' entry
        dref = box(b"dref", struct.pack(">II", 0, 1) + box(b"url ", struct.pack(">I", flags)))
        for kind in (b"dinf", b"minf", b"mdia", b"trak", b"moov"):
            dref = box(kind, dref)
        return box(b"ftyp", b"isom" + bytes(4)) + dref

    assert external_reference(io.BytesIO(movie(0))) and not external_reference(io.BytesIO(movie(1)))
    deep = b""
    for _ in range(20_000):  # traks nested 20,000 deep: no recursion past the path's five levels
        deep = box(b"trak", deep)
    assert not external_reference(io.BytesIO(box(b"moov", deep)))


def test_a_short_video_is_demuxed_once_and_decodes_as_from_a_fresh_demuxer(tmp_path, monkeypatch):
    import pipeline.decode.video as video
    path = tmp_path / "v.mp4"
    write_video(path, 30)
    opens, real = [], video.open_container
    monkeypatch.setattr(video, "open_container", lambda *args: opens.append(args) or real(*args))
    kept = read_frames(path, 8)  # its packets kept by the first pass, decoded from memory
    assert len(opens) == 1
    monkeypatch.setattr(video, "KEPT_BYTES", 0)  # none kept: a second pass on a fresh demuxer, as for a long video
    fresh = read_frames(path, 8)
    assert len(opens) == 3
    for name in kept.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(kept, name), getattr(fresh, name), err_msg=name)


def test_sampling_by_frame_rate_takes_the_frame_at_each_spans_centre():
    seconds = np.arange(50) / 10  # 5 s at 10 fps
    assert fps_indices(seconds, 1.0, 64).tolist() == [5, 15, 25, 35, 45]  # at 0.5, 1.5, ... 4.5 s
    assert fps_indices(seconds[:20], 1.0, 64).tolist() == [5, 15]  # 2 s: 2 frames
    assert fps_indices(seconds, 1.0, 3).tolist() == [8, 25, 41]  # capped: max_frames spread over the 5 s
    assert fps_indices(seconds[:3], 1.0, 64).tolist() == [1]  # 0.3 s: at least one frame
    assert fps_indices(np.zeros(1), 2.0, 64).tolist() == [0]  # one frame
    assert fps_indices(seconds[:10], 20.0, 64).tolist() == sorted(np.arange(20) // 2)  # above the video's rate: repeats


def test_a_clip_sampled_by_frame_rate_gets_one_frame_a_second(tmp_path):
    """A 1-fps reading of clips 2 s and 5 s long gives 2 and 5 frames, at the centre of each second."""
    for seconds in (2, 5):
        clip = read_frames(write_video(tmp_path / f"v{seconds}.mp4", 10 * seconds, fps=10.0), 64, fps=1.0)
        assert clip.sampled == len(clip.frames) == seconds and not clip.repeated
        np.testing.assert_allclose(clip.timestamps, np.arange(seconds) + 0.5)
        assert clip.indices.tolist() == list(range(5, 10 * seconds, 10))  # frames 5, 15, ...
        np.testing.assert_allclose(clip.frames[:, -1, -1, 0].astype(int), [level(i) for i in clip.indices], atol=4)
    inside = read_frames(tmp_path / "v5.mp4", 64, segment=(1.0, 4.0), fps=1.0)  # 3 s of it
    np.testing.assert_allclose(inside.timestamps, [1.5, 2.5, 3.5])


def test_sampling_is_recorded_and_rebuilt_from_its_attributes():
    assert Sampling(16).attrs() == {"num_frames": 16, "sampling": "uniform-centers"}  # as every cache says today
    assert Sampling(64, 0.5).attrs() == {"num_frames": 64, "sampling": "fps-centers:0.5"}
    for sampling in (Sampling(16), Sampling(64, 0.5), Sampling(8, 2.0)):
        assert Sampling.from_attrs(sampling.attrs()) == sampling
    for name in ("uniform", "fps-centers:x", "fps-centers:0", "fps-centers:inf", "fps-centers:-1"):
        with pytest.raises(UserError, match="sampling"):
            Sampling.from_attrs({"num_frames": 8, "sampling": name})
