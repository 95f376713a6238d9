"""Live recognition: the engine with frames pushed directly, the sources (file, UDP on loopback, refused URLs) and
`clip-har-predict --live`."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from pipeline.errors import ConfigError, VideoError
from pipeline.live.engine import JSON_KEYS, LiveConfig, LiveEngine, default_window


@pytest.fixture(scope="module")
def predictor(project):
    """The project's linear head with the tiny CLIP it was trained on (no decode pool: the engine needs none)."""
    from pipeline.heads.estimators import load_head
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
