"""Search (pipeline.tools.search, search_index, clip-har-search): results against a brute-force numpy oracle, exact and
IVF, filters, the query's own clip left out, stale and hostile index files refused, the command's text and JSON."""
import dataclasses
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.errors import CacheError, ConfigError, DataError
from pipeline.extract.cache import RANDOM_ENCODER_NOTE, empty_cache, open_cache, read_cache, write_cache
from pipeline.heads.split_file import write_split
from pipeline.paths import CACHE_PATH, SEARCH_INDEX
from pipeline.settings import SECTIONS
from pipeline.tools.search import open_searcher
from pipeline.tools.search_cli import main as search_cli
from pipeline.tools.search_index import IndexConfig, StaleIndex, build_index, index_path, open_index, write_index

V, F, D = 240, 4, 16
NAMES = ["fall", "jump", "run"]


def synthetic_cache(folder: Path, seed: int = 0, sampled: np.ndarray | None = None) -> Path:
    """V clips of F distinct random frames (D dims) in 3 classes, clustered by class, the last 6 rows segments of
    one file; written as stage one writes, with a split file beside it. sampled int64 (V,): each clip's own frames,
    the rest padding as sampling by frame rate writes it (zero embeddings, frame index -1, no timestamp)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(V) % 3
    centres = rng.normal(size=(3, D))
    cache = empty_cache(F, D, {"encoder_model": "synthetic", "embedding_dim": D, "num_frames": F,
                               "encoder_fingerprint": "x"}, NAMES)
    cache.embeddings = (centres[labels][:, None] + rng.normal(size=(V, F, D))).astype(np.float32)
    cache.frame_indices = np.tile(np.arange(F) * 5, (V, 1))
    cache.timestamps = np.tile(np.arange(F) * 0.2, (V, 1)) + np.arange(V)[:, None] * 0.01
    cache.labels = labels.astype(np.int64)
    cache.paths = np.array([f"{NAMES[y]}/v{i}.mp4" if i < V - 6 else "long/film.mp4" for i, y in enumerate(labels)],
                           object)
    cache.content_hash = np.array([f"{min(i, V - 6):064x}" for i in range(V)], object)
    cache.fps, cache.frame_count, cache.duration = np.full(V, 25.0), np.full(V, 20), np.full(V, 1.0)
    cache.repeated, cache.decode_errors = np.zeros(V, bool), np.zeros(V, np.int64)
    cache.file_size, cache.mtime_ns = np.full(V, 100), np.zeros(V, np.int64)
    cache.segment = np.full((V, 2), np.nan)
    cache.segment[V - 6:] = np.stack([np.arange(6.0), np.arange(6.0) + 1], axis=1)
    cache.group, cache.annotated_part = np.full(V, "", object), np.full(V, "", object)
    cache.sampled = np.full(V, F, np.int64) if sampled is None else sampled  # F: fixed-count sampling
    padding = np.arange(F) >= cache.sampled[:, None]
    cache.embeddings[padding], cache.frame_indices[padding], cache.timestamps[padding] = 0, -1, np.nan
    write_cache(folder / "features.h5", cache)
    parts = np.array(["train", "val", "test"], object)[(np.arange(V) // 3) % 3]
    write_split(folder / "split.csv", cache.clip_ids(), cache.labels, NAMES, parts)
    return folder / "features.h5"


def oracle(embeddings: np.ndarray, query: np.ndarray, allowed: np.ndarray | None = None):
    """Brute force in float64: (rows best first, ties by row; cosines; each row's best frame)."""
    unit = embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)
    means = unit.mean(axis=1)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    scores = means @ query
    rows = np.arange(len(scores)) if allowed is None else np.flatnonzero(allowed)
    order = rows[np.lexsort((rows, -scores[rows]))]
    return order, scores[order], np.argmax(unit[order] @ query, axis=1)


def build(path: Path, cfg: IndexConfig | None = None):
    write_index(index_path(path), build_index(open_cache(path), cfg or IndexConfig()))
    return open_searcher(path)


def check_against_oracle(searcher, embeddings, query, k, allowed=None, excluded=None):
    found = searcher.search(query.astype(np.float32), k, allowed, excluded)
    keep = None if allowed is None and excluded is None else (
        (np.ones(V, bool) if allowed is None else allowed) & ~(np.zeros(V, bool) if excluded is None else excluded))
    rows, scores, frames = oracle(embeddings, query, keep)
    assert [h.row for h in found.hits] == rows[:k].tolist()
    np.testing.assert_allclose([h.score for h in found.hits], scores[:k], atol=1e-5)
    assert [h.frame for h in found.hits] == frames[:k].tolist()
    cache = searcher.cache
    assert [h.time for h in found.hits] == [cache.timestamps[r, f] for r, f in zip(rows[:k], frames[:k])]
    assert [h.label for h in found.hits] == [NAMES[cache.labels[r]] for r in rows[:k]]
    return found


@pytest.mark.parametrize("cfg", [IndexConfig(), IndexConfig(exact_up_to=50, lists=6, nprobe=6)], ids=["exact", "ivf"])
def test_search_is_the_brute_force_order_with_each_clips_best_moment(tmp_path, cfg):
    """Exact, and IVF with every list searched (nprobe = lists): the oracle's order, scores and moments; filters
    (class, split part) and the query's own clip left out; a filter of at most exact_up_to clips is exact with IVF
    at nprobe 1 too."""
    path = synthetic_cache(tmp_path)
    embeddings = read_cache(path).embeddings
    searcher = build(path, cfg)
    assert searcher.index.exact == (cfg.exact_up_to >= V)
    rng = np.random.default_rng(1)
    for _ in range(3):
        q = rng.normal(size=D)
        check_against_oracle(searcher, embeddings, q / np.linalg.norm(q), 10)
    q = rng.normal(size=D)
    q /= np.linalg.norm(q)
    jump, test = searcher.allowed("jump"), searcher.allowed(split="test")
    assert jump.sum() == V // 3 and 0 < test.sum() < V
    check_against_oracle(searcher, embeddings, q, 10, jump & test)
    found = check_against_oracle(searcher, embeddings, q, 500, searcher.allowed("fall", "val"))  # fewer than k
    assert len(found.hits) == (searcher.allowed("fall", "val")).sum() and found.took_ms > 0
    from pipeline.tools.search import cached_query

    vector, excluded = cached_query(searcher, "long/film.mp4")  # a bare path: every clip of the file left out
    assert excluded.sum() == 6 and excluded[V - 6]
    found = check_against_oracle(searcher, embeddings, vector, 10, excluded=excluded)
    assert "long/film.mp4" not in [h.path for h in found.hits]
    vector, excluded = cached_query(searcher, "long/film.mp4#t=2,3")  # a segment: that clip alone
    assert excluded.sum() == 1 and excluded[V - 4]
    every = [h.path for h in searcher.search(vector, V, None, excluded).hits]
    assert len(every) == V - 1 and "long/film.mp4#t=2,3" not in every and "long/film.mp4#t=1,2" in every
    if not searcher.index.exact:
        searcher.index.nprobe = 1  # a filter of few clips is still exact
        check_against_oracle(searcher, embeddings, q, 10, jump & test)
    with pytest.raises(ConfigError, match="no class 'swim'"):
        searcher.allowed("swim")


def test_a_cache_sampled_by_frame_rate_is_searched_over_each_clips_own_frames(tmp_path):
    """Clips of 1 to F frames (extract.fps): a clip's vector and its moment come from its own frames, never its
    padding."""
    sampled = np.random.default_rng(3).integers(1, F + 1, V)
    path = synthetic_cache(tmp_path, sampled=sampled)
    cache = read_cache(path)
    searcher = build(path)
    own = [cache.embeddings[v, :sampled[v]] for v in range(V)]
    unit = [e / np.linalg.norm(e, axis=1, keepdims=True) for e in own]
    means = np.stack([u.mean(axis=0) for u in unit])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    q = np.random.default_rng(4).normal(size=D)
    q /= np.linalg.norm(q)
    found = searcher.search(q.astype(np.float32), 10)
    scores = means @ q
    assert [h.row for h in found.hits] == np.lexsort((np.arange(V), -scores))[:10].tolist()
    assert [h.frame for h in found.hits] == [int(np.argmax(unit[h.row] @ q)) for h in found.hits]
    assert all(h.frame < sampled[h.row] and np.isfinite(h.time) for h in found.hits)


def test_ivf_at_few_lists_searched_returns_exact_cosines(tmp_path):
    path = synthetic_cache(tmp_path)
    embeddings = read_cache(path).embeddings
    searcher = build(path, IndexConfig(exact_up_to=10, lists=6, nprobe=1))
    q = embeddings[7].mean(axis=0)
    q /= np.linalg.norm(q)
    rows, scores, _ = oracle(embeddings, q)
    found = searcher.search(q.astype(np.float32), 10)
    exact = dict(zip(rows.tolist(), scores))
    assert [h.score for h in found.hits] == sorted((h.score for h in found.hits), reverse=True)
    np.testing.assert_allclose([h.score for h in found.hits], [exact[h.row] for h in found.hits], atol=1e-5)
    assert len({h.row for h in found.hits} & set(rows[:10].tolist())) >= 5  # clustered: its list holds most


def test_a_missing_stale_or_hostile_index_is_refused_with_the_command_that_rebuilds_it(tmp_path):
    path = synthetic_cache(tmp_path)
    with pytest.raises(StaleIndex, match="dvc repro index"):
        open_searcher(path)
    build(path, IndexConfig(exact_up_to=10, lists=6))
    synthetic_cache(tmp_path, seed=0)  # the same clips written again: the index still holds
    open_searcher(path)
    cache = read_cache(path)
    write_cache(path, cache.take(np.arange(V - 1)))  # another version: one clip fewer
    with pytest.raises(StaleIndex, match=r"another version of the cache.*dvc repro index"):
        open_searcher(path)
    cache.labels[0] = 1  # same rows, another label
    write_cache(path, cache)
    with pytest.raises(StaleIndex):
        open_searcher(path)
    cache.labels[0] = 0
    write_cache(path, cache)
    built = build_index(open_cache(path), IndexConfig(exact_up_to=10, lists=6))
    target = index_path(path)
    cases = {"lists out of range": ("lists", lambda a: a + 6), "NaN vector": ("vectors", lambda a: a * np.nan),
             "vectors of another width": ("vectors", lambda a: a[:, :3]), "no vectors": ("vectors", None)}
    for case, (name, change) in cases.items():
        arrays = dict(built["arrays"])
        if change is None:
            del arrays[name]
        else:
            arrays[name] = change(arrays[name])
        write_index(target, {"arrays": arrays, "attrs": built["attrs"]})
        with pytest.raises(CacheError, match="not a usable search index") as e:
            open_index(target, open_cache(path))
        assert not isinstance(e.value, StaleIndex), case
    write_index(target, built)
    with h5py.File(target, "a") as f:  # a link to another file: HDF5 would read it
        del f["lists"]
        f["lists"] = h5py.ExternalLink("/etc/passwd", "x")
    with pytest.raises(CacheError, match="link to another file"):
        open_index(target, open_cache(path))
    target.write_bytes(b"not hdf5")
    with pytest.raises(CacheError, match="not a readable search index"):
        open_index(target, open_cache(path))


def test_the_index_facts_agree():
    assert SEARCH_INDEX == str(index_path(CACHE_PATH))
    assert {f.name for f in dataclasses.fields(IndexConfig)} == set(SECTIONS["search"].model_fields)


def test_search_command_text_a_cached_clip_and_a_video_file(project, tmp_path, capsys):
    """clip-har-search on the tiny CLIP's project: JSON exactly as documented, the random encoder's note on
    stderr; --like a cached clip and --like its file give the same clips, the query itself left out; errors are one
    line and exit status 1."""
    cache = tmp_path / "cache" / "features.h5"
    cache.parent.mkdir()
    shutil.copy(project / CACHE_PATH, cache)
    assert search_cli(["walking", "--cache", str(cache), "--json"]) == 1
    assert "no search index" in capsys.readouterr().err
    assert search_cli(["--build-index", "--cache", str(cache)]) == 0
    assert "9 clips x 32 (exact" in capsys.readouterr().out
    assert search_cli(["a person walking", "--cache", str(cache), "--json", "-k", "4"]) == 0
    out, err = capsys.readouterr()
    got = json.loads(out)
    assert set(got) == {"query", "took_ms", "results"} and got["query"]["text"] == "a person walking"
    assert len(got["results"]) == 4 and all(set(r) == {"path", "label", "score", "time"} for r in got["results"])
    assert err == f"note: {RANDOM_ENCODER_NOTE}\n"
    searcher = open_searcher(cache)
    scores = [r["score"] for r in got["results"]]
    assert scores == sorted(scores, reverse=True)
    for r in got["results"]:  # each score is the clip's cosine; each time one of its sampled frames'
        row = list(searcher.cache.paths).index(r["path"])
        assert r["time"] in searcher.cache.timestamps[row].tolist()

    assert search_cli(["--like", "walking/walking_1.mp4", "--cache", str(cache), "--json", "-k", "8"]) == 0
    cached = json.loads(capsys.readouterr().out)["results"]
    assert [r["path"] for r in cached if r["path"] == "walking/walking_1.mp4"] == [] and len(cached) == 8
    video = project / "data" / "walking" / "walking_1.mp4"
    assert search_cli(["--like", str(video), "--cache", str(cache), "--json", "-k", "8"]) == 0
    from_file = json.loads(capsys.readouterr().out)["results"]
    assert [r["path"] for r in from_file] == [r["path"] for r in cached]  # encoded as stage one did: same vector
    np.testing.assert_allclose([r["score"] for r in from_file], [r["score"] for r in cached], atol=1e-5)

    assert search_cli(["walking", "--cache", str(cache), "--class", "sitting"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == f"*** {RANDOM_ENCODER_NOTE} ***" and lines[1] == "rank\tscore\tpath\tclass\tmoment_s"
    assert [line.split("\t")[3] for line in lines[2:-1]] == ["sitting"] * 3 and "3 of 9 clips in" in err
    for argv, message in ((["walking", "--class", "swim"], "no class 'swim'"),
                          (["walking", "--split", "test"], "no split file"),
                          (["--like", "nowhere.mp4"], "neither a cached clip nor a video file"),
                          (["walking", "-k", "0"], "-k must be from 1")):
        assert search_cli([*argv, "--cache", str(cache)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit):
        search_cli(["--cache", str(cache)])  # neither a text nor --like


def test_split_and_data_errors_are_typed(tmp_path):
    path = synthetic_cache(tmp_path)
    (tmp_path / "split.csv").unlink()
    searcher = build(path)
    with pytest.raises(DataError, match="dvc repro split"):
        searcher.allowed(split="test")
