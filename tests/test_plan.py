"""Stage one's plan, without video or encoder: what the sources know, what is hashed, the rounds of repeats; and the
cache's attributes the writer builds."""
import json

import numpy as np

from pipeline.data.discover import VideoFile
from pipeline.decode.sampling import Sampling
from pipeline.decode.hashing import Hashed
from pipeline.extract.cache import COLUMNS, Cache
from pipeline.extract.plan import Known, Plan, Rounds, Work
from pipeline.extract.writer import cache_attributes

LIMITS = '{"video_timeout_s": 60.0}'


def source(rows: list[tuple[str, int, int, str]], skipped=(), limits: str = LIMITS):
    """A cache with `rows` (path, size, mtime_ns, content hash) and `skipped` (path, reason, size, mtime_ns, kind)."""
    n = len(rows)
    cache = Cache(**{name: col.empty(n, 2, 3) for name, col in COLUMNS.items()}, attrs={"decode_limits": limits})
    cache.paths = np.array([r[0] for r in rows], object)
    cache.file_size = np.array([r[1] for r in rows], np.int64)
    cache.mtime_ns = np.array([r[2] for r in rows], np.int64)
    cache.content_hash = np.array([r[3] for r in rows], object)
    cache.segment = np.full((n, 2), np.nan)
    cache.skipped = [(p, reason) for p, reason, *_ in skipped]
    cache.skipped_stat = {p: (s, m) for p, _, s, m, _ in skipped}
    cache.skipped_kind = {p: k for p, *_, k in skipped}
    return cache


def files(tmp_path, *names):
    out = []
    for name in names:
        (tmp_path / name).write_bytes(name.encode())
        out.append(VideoFile(name, "a", tmp_path / name))
    return out


def stat(video: VideoFile) -> tuple[int, int]:
    st = video.file.stat()
    return st.st_size, st.st_mtime_ns


def test_known_files_by_stat_failures_under_the_same_limits_and_the_rest_hashed(tmp_path):
    a, b, c, d = files(tmp_path, "a.mp4", "b.mp4", "c.mp4", "d.mp4")
    gone = VideoFile("gone.mp4", "a", tmp_path / "gone.mp4")
    old = source([("a.mp4", *stat(a), "h1"), ("b.mp4", 1, 2, "h2")],
                 skipped=[("c.mp4", "c.mp4: broken", *stat(c), "VideoError")])
    plan = Plan([a, b, c, d, gone], [old], LIMITS)
    assert [(w.name, w.digest) for w in plan.ready] == [("a.mp4", "h1")]
    assert [(w.name, line, kind) for w, line, kind in plan.remembered] == [("c.mp4", "c.mp4: broken", "VideoError")]
    assert [w.name for w in plan.to_hash] == ["b.mp4", "d.mp4", "gone.mp4"] and plan.to_hash[2].stat is None
    assert plan.keys == {"h1", "h2"} and plan.size == 5
    other = Plan([a, b, c, d], [old], '{"video_timeout_s": 30.0}')  # other limits: the failure is read again
    assert not other.remembered and [w.name for w in other.to_hash] == ["b.mp4", "c.mp4", "d.mp4"]
    again = Plan([a, b, c, d], [old], LIMITS, rehash=True)  # rehash: every file hashed, no failure remembered
    assert not again.ready and not again.remembered and len(again.to_hash) == 4


def test_a_file_that_now_hashes_otherwise_no_longer_vouches_for_its_rows_key(tmp_path):
    (b,) = files(tmp_path, "b.mp4")
    plan = Plan([b], [source([("b.mp4", 1, 2, "old")])], LIMITS)
    assert plan.files() == [str(b.file)]
    plan.hashed(plan.to_hash[0], Hashed((0, 1, 5, 7), "new"))
    assert plan.keys == set() and plan.ready[0].row().size == 5 and plan.ready[0].row().digest == "new"


def test_rounds_decode_each_content_once_and_retry_repeats_of_a_failed_first_alone(tmp_path):
    videos = files(tmp_path, "a.mp4", "b.mp4", "c.mp4", "d.mp4")
    work = [Work(i, v, v.path, (1, 1), digest) for i, (v, digest) in enumerate(zip(videos, "xxxy"))]
    rounds = Rounds(work[::-1])
    reused, todo = rounds.next(written={"y"})
    assert [w.name for w in reused] == ["d.mp4"] and [w.name for w in todo] == ["a.mp4"]
    repeats = rounds.repeats(todo[0])
    assert [w.name for w in repeats] == ["b.mp4", "c.mp4"] and rounds.repeats(todo[0]) == []
    rounds.again(repeats, alone=True)  # the first failed: each repeat is decoded for itself
    reused, todo = rounds.next(written={"y"})
    assert not reused and [w.name for w in todo] == ["b.mp4", "c.mp4"] and not rounds.pending


def test_known_takes_the_last_source_and_keys_of_all():
    first, second = source([("a.mp4", 1, 2, "h1")]), source([("a.mp4", 1, 2, "h2")])
    known = Known.of([first, second], LIMITS)
    assert known.by_stat == {("a.mp4", 1, 2): "h2"} and known.hashes == {"a.mp4": {"h1", "h2"}}


def test_cache_attributes_are_the_encoders_the_samplings_and_the_runs():
    encoder = {"encoder_model": "m", "embedding_dim": 3, "backend": "torch"}
    attrs = cache_attributes(encoder, Sampling(4, 2.0), 8, "data", "float16", "", {"b": 2, "a": 1})
    assert attrs["num_frames"] == 4 and attrs["sampling"] == "fps-centers:2" and attrs["batch_size"] == 8
    assert attrs["decode_limits"] == '{"a": 1.0, "b": 2.0}' and attrs["dtype"] == "float16"
    assert set(json.loads(attrs["versions"])) == {"torch", "transformers", "av", "h5py", "numpy"}
    onnx = cache_attributes({**encoder, "backend": "onnxruntime"}, Sampling(), 8, "data", "float32", "", {})
    assert "onnxruntime" in json.loads(onnx["versions"])
