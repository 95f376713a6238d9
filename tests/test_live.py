"""Live recognition: the engine with frames pushed directly, the sources (file, UDP on loopback, refused URLs) and
`clip-har-predict --live`."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pipeline.decode.video import DecodeLimits
from pipeline.errors import ConfigError, VideoError
from pipeline.live.engine import JSON_KEYS, LiveConfig, LiveEngine, default_window
from tests.conftest import write_video


@pytest.fixture(scope="module")
def predictor(project):
    """The project's linear head with the tiny CLIP it was trained on (no decode pool: the engine needs none)."""
    from pipeline.heads.kinds import load_head
    from pipeline.paths import HEAD_FILES
    from pipeline.tools.predict import encoder_for, make_predictor

    head = load_head(project / HEAD_FILES["linear"])
    return make_predictor(head, encoder_for(head.meta_, "cpu"), None)


def frame(level: int, size=(48, 64)) -> np.ndarray:
    return np.full((*size, 3), level, np.uint8)


def test_answers_every_second_of_stream_time(predictor):
    """25 frames/s for 3.2 s at 4 embedded/s: every frame 0.25 s apart or more is embedded, answers at 0 s (the
    first frame) and each time a second is crossed, each pooling the window's frames."""
    with LiveEngine(predictor, LiveConfig(rate=4, every=1, window=2)) as engine:
        for i in range(80):
            engine.push(frame(i), i / 25)
            while not engine.idle():  # one at a time: nothing dropped, so the counts are exact
                threading.Event().wait(0.001)
    answers = [a for a in iter(lambda: engine.get(timeout=0), None)]
    assert [a.time for a in answers] == [0.0, 1.0, 2.0, 3.0]
    assert engine.stats.embedded == engine.stats.accepted == 13  # 0, 0.28, 0.56, 0.84, 1.0 (the 25th), ...
    assert engine.stats.dropped == 0 and engine.stats.answers == 4
    assert [a.frames for a in answers] == [1, 5, 8, 8]  # the frames of the last 2 s (buffer pruned to the window)
    for a in answers:
        assert a.probabilities.shape == (3,) and abs(float(a.probabilities.sum()) - 1) < 1e-5
        assert a.latency_ms >= 0 and [c for c, _ in a.top] == sorted(a.class_names, key=lambda c: -a.probabilities[
            a.class_names.index(c)])
        assert set(a.as_json()) == set(JSON_KEYS)
    times, emb = engine.buffer()
    assert emb.shape == (len(times), predictor.encoder.dim) and times[-1] == 3.0


def test_latest_frame_wins_when_the_encoder_is_busy(predictor):
    """While the encoder is held, each new frame replaces the one waiting: dropped and counted, never queued; only
    the newest is embedded once the encoder is free."""
    hold, held = threading.Event(), threading.Event()

    def block(answer):
        held.set()
        hold.wait()

    with LiveEngine(predictor, LiveConfig(rate=100, every=100), on_answer=block) as engine:
        engine.push(frame(0), 0.0)
        assert held.wait(60)  # the first frame is answered at once: the encoder thread is now held
        for i in range(1, 11):
            assert engine.push(frame(i), i / 10)
        hold.set()
    assert engine.stats.dropped == 9 and engine.stats.embedded == 2
    times, _ = engine.buffer()
    assert times.tolist() == [0.0, 1.0]


def _play(predictor, config, levels, step=0.25):
    """Push one frame of each grey level, `step` s apart, one at a time (nothing dropped); the answers given."""
    seen = []
    with LiveEngine(predictor, config, on_answer=seen.append) as engine:
        for i, level in enumerate(levels):
            engine.push(frame(level), i * step)
            while not engine.idle():
                threading.Event().wait(0.001)
    return seen


def test_average_and_not_sure(predictor):
    """average K: each answer is the mean of the last K answers' probabilities; an answer under the head's
    threshold is "not sure" (label None)."""
    levels = [0, 0, 255, 255, 30, 30, 90, 200]
    alone = _play(predictor, LiveConfig(every=0.5, window=0.5), levels)
    averaged = _play(predictor, LiveConfig(every=0.5, window=0.5, average=2), levels)
    assert [a.time for a in averaged] == [a.time for a in alone] == [0, 0.5, 1.0, 1.5]
    np.testing.assert_allclose(averaged[0].probabilities, alone[0].probabilities, atol=1e-6)
    for k in range(1, 4):
        np.testing.assert_allclose(averaged[k].probabilities,
                                   (alone[k - 1].probabilities + alone[k].probabilities) / 2, atol=1e-6)
    assert not np.allclose(alone[1].probabilities, alone[2].probabilities, rtol=1e-2, atol=0)  # windows differ
    low = averaged[0]
    low.not_sure_below = 1.01
    assert low.label is None and not low.sure and low.answer == "not sure" and low.as_json()["answer"] is None


def test_settings_and_frames_are_checked(predictor):
    with pytest.raises(ConfigError, match="average"):
        LiveEngine(predictor, LiveConfig(average=0))
    with pytest.raises(ConfigError, match="every"):
        LiveEngine(predictor, LiveConfig(every=0))
    engine = LiveEngine(predictor)
    assert engine.window == default_window(4, 4.0) == 2.0
    with pytest.raises(ValueError, match="uint8"):
        engine.push(np.zeros((4, 4), np.uint8), 0.0)
    with pytest.raises(VideoError, match="aspect"):
        engine.push(np.zeros((2, 200, 3), np.uint8), 0.0)


# --- sources --------------------------------------------------------------------------------------------------------

def _collect(text: str, config=None, notes=None):
    """Every frame a source passes on: (SourceEnd, [(stream time, frame)])."""
    from pipeline.live.source import SourceConfig, parse_source, run_source

    got = []
    end = run_source(parse_source(text), config or SourceConfig(rate=100), lambda f, t: got.append((t, f)),
                     threading.Event(), (notes if notes is not None else []).append)
    return end, got


def test_refused_sources_name_the_protocols():
    from pipeline.live.source import StreamError, parse_source

    for url in ["concat:a.mp4|b.mp4", "file:///etc/passwd", "subfile:,,start,0,end,0,,:x.mp4", "gopher://host/x",
                "data:video/mp4;base64,AAAA", "pipe:0"]:
        with pytest.raises(StreamError, match="--live opens rtsp://"):
            parse_source(url)
    with pytest.raises(StreamError, match="needs a host"):
        parse_source("udp:1234")
    assert parse_source("./concat:a.mp4").kind == "file"  # a path: opened through a descriptor, never as a URL
    assert parse_source("/dev/video0").kind == "device"
    src = parse_source("rtsp://user:secret@cam.local:554/stream")
    assert src.kind == "network" and src.name == "rtsp://cam.local:554/stream"  # no password in messages


def test_a_file_source_never_opens_what_it_names(tmp_path):
    """A playlist named like a video, pointing at a listening socket, is refused and the socket never connected."""
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        (tmp_path / "list.mp4").write_text(f"ffconcat version 1.0\nfile 'http://127.0.0.1:{port}/x.mp4'\n")
        (tmp_path / "hls.mp4").write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n"
                                          f"http://127.0.0.1:{port}/x.ts\n#EXT-X-ENDLIST\n")
        ends = [_collect(str(tmp_path / name))[0] for name in ("list.mp4", "hls.mp4")]
        server.settimeout(0)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
    assert ends[0].kind == "failed" and "playlist" in ends[0].reason
    assert ends[1].kind == "failed" and "not a readable video" in ends[1].reason


def test_a_network_stream_follows_no_redirect_to_a_file_and_no_playlist(tmp_path):
    """http:// on loopback: a redirect to file:// (a real video) and an HLS playlist whose segment is a real video
    both fail to open; the file is never read and the segment never asked for."""
    import http.server
    import subprocess

    from pipeline.live.source import SourceConfig

    video = tmp_path / "real.ts"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-t", "1",
                    "-c:v", "mpeg2video", "-f", "mpegts", str(video)], check=True)
    asked = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", f"file://{video}")
                self.end_headers()
                return
            body = (f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:{port}/segment.ts\n"
                    "#EXT-X-ENDLIST\n").encode() if self.path == "/list.m3u8" else video.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.apple.mpegurl")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        config = SourceConfig(rate=100, stall_s=5, reconnects=0)
        ends = [_collect(f"http://127.0.0.1:{port}{path}", config) for path in ("/redirect", "/list.m3u8")]
        before = list(asked)
        direct = _collect(f"http://127.0.0.1:{port}/segment.ts", config)  # the check can fail: served, it plays
        server.shutdown()
    for end, got in ends:
        assert end.kind == "failed" and "cannot be opened" in end.reason and not got, end
    assert set(before) == {"/redirect", "/list.m3u8"}  # both were asked for; the segment never was
    # not paced (a network stream comes at its sender's speed): what the caller did not take in time is dropped
    assert direct[0].kind == "end" and len(direct[1]) + direct[0].dropped == 25 and direct[1]


def test_a_file_plays_at_its_rate_cap_and_damage_gets_a_message(tmp_path):
    from pipeline.live.source import SourceConfig

    clip = write_video(tmp_path / "clip.mp4", 25, fps=25)
    end, got = _collect(str(clip), SourceConfig(rate=4))
    assert end.kind == "end" and [round(t, 2) for t, _ in got] == [0.0, 0.28, 0.52, 0.76]
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for _, f in got)
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes())
    end, got = _collect(str(tmp_path / "garbage.mp4"))
    assert end.kind == "failed" and "not a readable video" in end.reason and not got
    end, got = _collect(str(clip), SourceConfig(limits=DecodeLimits(max_pixels=100)))  # FFmpeg's probe refuses it
    assert end.kind == "failed" and "frame size" in end.reason and not got
    end, _ = _collect(str(tmp_path / "missing.mp4"))
    assert end.kind == "failed" and "No such file" in end.reason


def test_a_resolution_change_mid_stream_is_said_and_decoding_goes_on(tmp_path):
    import subprocess

    parts = []
    for i, size in enumerate(["64x48", "96x72"]):
        parts.append(tmp_path / f"{i}.ts")
        subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc=size={size}:rate=25",
                        "-t", "0.4", "-c:v", "mpeg2video", "-output_ts_offset", str(0.4 * i), "-f", "mpegts",
                        str(parts[-1])], check=True)
    (tmp_path / "both.ts").write_bytes(b"".join(p.read_bytes() for p in parts))
    notes = []
    end, got = _collect(str(tmp_path / "both.ts"), notes=notes)
    assert end.kind == "end"
    assert {f.shape for _, f in got} == {(48, 64, 3), (72, 96, 3)}
    assert len(notes) == 1 and "changed from 64x48 to 96x72" in notes[0]


def test_stream_time_goes_on_over_a_timestamp_jump_back(tmp_path):
    """Two 1 s parts that both start at 0 (a sender restarted): the second part's frames carry on after the
    first's instead of being refused by the rate cap."""
    import subprocess

    part = tmp_path / "part.ts"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-t", "1",
                    "-c:v", "mpeg2video", "-f", "mpegts", str(part)], check=True)
    (tmp_path / "twice.ts").write_bytes(part.read_bytes() * 2)
    end, got = _collect(str(tmp_path / "twice.ts"))
    times = [t for t, _ in got]
    assert end.kind == "end" and len(times) == 50 and all(b > a for a, b in zip(times, times[1:]))


def test_a_decoder_out_of_memory_ends_the_source_with_a_message_in_bounded_time(tmp_path):
    """The worker's memory limit (here 1 MiB over its imports: nothing fits) ends the source with a reason, the
    watchdog's at the latest (stall_s + GRACE_S), never a hang or an exception in the caller."""
    import subprocess

    from pipeline.live.source import SourceConfig

    # 4K frames (12 MB each, more with the decoder's buffers): larger than any free memory the worker's forkserver
    # may already hold from its imports (at 720p, the decoder once fit in it and played the file to its end)
    hd = tmp_path / "uhd.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=3840x2160:rate=25", "-t",
                    "0.4", "-c:v", "mpeg2video", str(hd)], check=True)
    end, got = _collect(str(hd), SourceConfig(memory_mb=1, stall_s=1))
    assert end.kind == "failed" and not got
    assert any(why in end.reason for why in ("out of memory", "nothing arrived", "crashed", "Cannot allocate")), end


# --- parity with stage one ------------------------------------------------------------------------------------------

def test_a_file_played_live_gives_stage_ones_embeddings(project, predictor):
    """Every frame of a project video, decoded by the live source and embedded by the engine, equals stage one's
    embedding of the frame at the same timestamp (the cache's, for the frames it sampled) to 1e-6."""
    from pipeline.extract.cache import read_cache

    cache = read_cache(project / "cache" / "features.h5")
    row = next(i for i, p in enumerate(cache.paths) if str(p).endswith("clapping_1.mp4"))
    end, got = _collect(str(project / "data" / "clapping" / "clapping_1.mp4"))
    assert end.kind == "end" and len(got) == 25  # every frame (rate 100 > 25 frames/s)
    with LiveEngine(predictor, LiveConfig(rate=100, every=100, window=100)) as engine:
        for t, f in got:
            engine.push(f, t)
            while not engine.idle():
                threading.Event().wait(0.001)
    times, emb = engine.buffer()
    assert len(times) == 25
    matched = 0
    for t, e in zip(cache.timestamps[row], cache.embeddings[row]):
        at = np.flatnonzero(np.abs(times - t) < 1e-6)
        assert len(at) == 1, t
        np.testing.assert_allclose(emb[at[0]], e, atol=1e-6, rtol=0)
        matched += 1
    assert matched == 4


# --- clip-har-predict --live ------------------------------------------------------------------------------------------

def test_live_with_a_file_prints_one_line_per_answer(project, tmp_path, capsys, monkeypatch):
    import json

    from pipeline.tools.cli import predict

    clip = write_video(tmp_path / "clip.mp4", 55, fps=25)  # 2.2 s: answers at 0, 1 and 2 s
    monkeypatch.chdir(project)
    assert predict(["--live", str(clip), "--json", "--every", "1"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["time"] for line in lines] == [0.0, 1.0, 2.0]
    assert all(tuple(line) == JSON_KEYS for line in lines)
    assert all(line["answer"] in (None, "clapping", "sitting", "walking") and 0 < line["probability"] <= 1
               and (line["answer"] is None) != line["sure"] and line["latency_ms"] >= 0 for line in lines)
    assert "live: 3 answers, 9 frames embedded, 0 dropped, latency p50" in err and "the source ended" in err
    assert predict(["--live", str(clip), "--average", "2"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [r[0].strip() for r in rows] == ["0.00 s", "1.00 s", "2.00 s"] and all(len(r) == 3 for r in rows)


def test_live_refuses_before_starting(project, capsys, monkeypatch):
    from pipeline.tools.cli import predict

    monkeypatch.chdir(project)
    for url in ["concat:a.mp4|b.mp4", "file:///etc/passwd", "ftp://host/x.mp4"]:
        assert predict(["--live", url]) == 2
        assert "--live opens rtsp://" in capsys.readouterr().err
    assert predict(["--live", "x.mp4", "--average", "0"]) == 2
    assert "average must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict(["--live", "x.mp4", "a.mp4"])
    assert "not both" in capsys.readouterr().err
    assert predict(["--live", "missing.mp4"]) == 1
    assert "error: missing.mp4: cannot be opened (No such file or directory)" in capsys.readouterr().err
    for bad in (["--threshold", "nan"], ["--threshold", "5"], ["--segments", "2", "1"]):
        with pytest.raises(SystemExit):
            predict(["--live", "x.mp4", *bad])
        assert "--threshold must be" in capsys.readouterr().err or bad[0] == "--segments"


def test_a_urls_credentials_never_appear_in_a_message():
    from pipeline.live.source import StreamError, parse_source

    for url in ["rtsps://admin:hunter2@cam/x", "rtsp:admin:hunter2@cam", "http://admin:hunter2@/x"]:
        with pytest.raises(StreamError) as refused:
            parse_source(url)
        assert "hunter2" not in str(refused.value)
    name = parse_source("rtsp://u:hunter2@cam:554/s?password=hunter3&channel=1&token=hunter4").name
    assert name == "rtsp://cam:554/s?password=***&channel=1&token=***"


def test_a_bug_in_the_reader_ends_the_session_as_a_failure_not_a_stop(project, tmp_path, capsys, monkeypatch):
    """An exception the source thread did not expect (a bug) is exit 1 with its traceback and a failure line, never
    the "stopped" summary with exit 0."""
    import pipeline.live.command as command
    from pipeline.tools.cli import predict

    def broken(*args, **kwargs):
        raise ValueError("42 is not a valid Signals")

    monkeypatch.setattr(command, "run_source", broken)
    monkeypatch.chdir(project)
    assert predict(["--live", str(write_video(tmp_path / "clip.mp4", 10, fps=25))]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error (ValueError)" in err and "error: " in err


def test_a_decoder_killed_by_a_real_time_signal_is_named():
    from pipeline.live.source import _crash_reason

    assert _crash_reason(-40) == "the decoder crashed (signal 40, a real-time signal)"
    assert _crash_reason(-11) == "the decoder crashed (signal 11, SIGSEGV)"


def _live_command(project, *args):
    """clip-har-predict --live ... as a process in the project folder, its stdout and stderr read line by line."""
    import os
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "pipeline.tools.predict", "--live", *args], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_live_udp_stream_then_it_stops(project, tmp_path):
    """A UDP stream from `ffmpeg -re` on 127.0.0.1 gets answers; when the sender stops, the session waits
    --stall-timeout, reconnects once, then ends with a message and exit 1."""
    import json
    import subprocess


    clip = write_video(tmp_path / "clip.mp4", 50, fps=25)
    port = _free_udp_port()
    # the sender first (nobody listening yet: its packets are lost), so the receiver's first wait is not its start
    sender = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(clip),
                               "-c:v", "mpeg2video", "-g", "5", "-f", "mpegts",
                               f"udp://127.0.0.1:{port}?pkt_size=1316"])
    live = _live_command(project, f"udp://127.0.0.1:{port}", "--json", "--stall-timeout", "2",
                         "--reconnects", "1")
    try:
        answers = [json.loads(live.stdout.readline()) for _ in range(3)]  # waits on the output, not a clock
        assert all(tuple(a) == JSON_KEYS for a in answers)
        assert [a["time"] for a in answers] == sorted(a["time"] for a in answers)
    finally:
        sender.kill()
        sender.wait()
    out, err = live.communicate(timeout=120)
    assert live.returncode == 1, err
    assert "reconnecting (1 of 1)" in err
    assert f"error: udp://127.0.0.1:{port}: nothing arrived for 2 s (after 1 reconnection)" in err
    assert "live: " in err and "frames embedded" in err


def test_sigterm_ends_a_live_session_cleanly(project, tmp_path):
    import signal


    clip = write_video(tmp_path / "long.mp4", 25 * 60, fps=25)  # a minute: it is still playing when stopped
    live = _live_command(project, str(clip))
    try:
        first = live.stdout.readline()
        assert first.strip().startswith("0.00 s\t"), live.stderr.read() if not first else first
    finally:
        live.send_signal(signal.SIGTERM)
    out, err = live.communicate(timeout=120)
    assert live.returncode == 0, err
    summary = [line for line in err.splitlines() if line.startswith("live: ")]
    assert len(summary) == 1 and "answers" in summary[0] and "latency p50" in summary[0] and "stopped" in summary[0]
    assert "Traceback" not in err


# --- the Live page's feed (app/live_feed.py) ----------------------------------------------------------------------

def test_stream_time_starts_at_the_first_frame_and_goes_on_over_the_rtp_clocks_wrap(predictor):
    """aiortc's frame.time is the RTP timestamp: a 90 kHz clock from a random start, wrapping at 2**32 ticks. The
    page's stream time starts at 0 with the first frame and goes on over the wrap (no restart, no new strip)."""
    from app.live_feed import RTP_WRAP_S, LiveFeed

    feed = LiveFeed()
    feed.use("linear", lambda on_answer: LiveEngine(predictor, LiveConfig(rate=10.0), on_answer,
                                                    name="the camera").start())
    times = []
    for i in range(30):  # 6 s of frames at 5 a second, the clock's wrap 3 s in
        feed.push(frame(20 + 7 * i), (RTP_WRAP_S - 3.0 + i / 5.0) % RTP_WRAP_S)
        while not feed.engine.idle():
            time.sleep(0.001)
        while (answer := feed.next_answer(0)) is not None:
            times.append(round(answer.time, 6))
    assert times == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] and feed.engine_error() is None
    feed.stop()


def test_a_head_sampled_by_frame_rate_pools_the_windows_frames_at_its_rate(predictor, monkeypatch):
    """A head whose cache was sampled at 1 frame a second (at most 8) pools round(span x 1) of the window's frames,
    not 8 spread evenly: at 4 embedded/s and a 4 s window, 3.25 s of frames at t = 3 give 3 frames, the ones at the
    centres of its three seconds (0.5, 1.5 and 2.5 s: the frames at 0.5, 1.5, 2.5)."""
    from dataclasses import replace

    head = predictor.head
    meta = replace(head.meta_, features={**head.meta_.features, "sampling": "fps-centers:1", "num_frames": 8})
    monkeypatch.setattr(head, "meta_", meta)
    pooled = []
    real = type(head).predict_proba
    monkeypatch.setattr(head, "predict_proba", lambda x, *a, **k: pooled.append(x) or real(head, x, *a, **k))
    with LiveEngine(predictor, LiveConfig(rate=4, every=1, window=4)) as engine:
        for i in range(13):  # 0 to 3 s, every 0.25 s
            engine.push(frame(10 * i), i / 4)
            while not engine.idle():
                threading.Event().wait(0.001)
    times, emb = engine.buffer()
    assert [x.shape[1] for x in pooled] == [1, 1, 2, 3]  # at 0, 1, 2 and 3 s: round(span) frames, span + 0.25 s
    np.testing.assert_array_equal(pooled[-1][0], emb[[2, 6, 10]])  # 0.5, 1.5 and 2.5 s
