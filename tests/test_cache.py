"""Cache round trip, schema, atomic writes, clear errors for unusable files, the lazy reader and float16 storage."""
import dataclasses

import h5py
import numpy as np
import pytest

import pipeline.extract.cache as cache_module
import pipeline.extract.embeddings as embeddings_module
from pipeline.extract.cache import (COLUMNS, META_FIELDS, ROW_FIELDS, SCHEMA_VERSION, Cache, Embeddings, empty_cache,
                                    gather_rows, open_cache, read_cache, write_cache)
from pipeline.errors import CacheError, ConfigError


def concat_caches(caches: list[Cache], template: Cache) -> Cache:
    """Rows of all `caches` (in memory) one after another: the plain join gather_rows is checked against."""
    return dataclasses.replace(
        template, **{name: np.concatenate([getattr(c, name) for c in caches]) for name in ROW_FIELDS})


def small_cache(n=3, frames=4, dim=8) -> Cache:
    rng = np.random.default_rng(0)
    base = empty_cache(frames, dim, {"encoder_model": "tiny", "num_frames": frames}, ["a", "b"])
    return Cache(
        embeddings=rng.standard_normal((n, frames, dim)).astype(np.float32),
        frame_indices=np.tile(np.arange(frames), (n, 1)), timestamps=np.tile(np.arange(frames) / 25, (n, 1)),
        labels=np.arange(n) % 2, paths=np.array([f"a/v{i}.mp4" for i in range(n)], object),
        content_hash=np.array([f"{i:064x}" for i in range(n)], object), fps=np.full(n, 25.0),
        frame_count=np.full(n, 50), duration=np.full(n, 2.0), repeated=np.zeros(n, bool),
        decode_errors=np.zeros(n, np.int64),
        file_size=np.full(n, 1000), mtime_ns=np.arange(n), class_names=base.class_names,
        skipped=[("b/bad.mp4", "not a readable video")], attrs=base.attrs,
    )


def test_round_trip_keeps_every_field(tmp_path):
    cache = small_cache()
    write_cache(tmp_path / "f.h5", cache)
    back = read_cache(tmp_path / "f.h5")
    for name in ROW_FIELDS:
        np.testing.assert_array_equal(getattr(back, name), getattr(cache, name), err_msg=name)
    assert back.class_names == ["a", "b"] and back.skipped == [("b/bad.mp4", "not a readable video")]
    assert back.attrs["encoder_model"] == "tiny" and back.attrs["schema_version"] == SCHEMA_VERSION
    assert back.embeddings.dtype == np.float32 and back.embeddings.shape == (3, 4, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.h5"]  # no temporary file left behind


def test_schema_on_disk_is_the_documented_one(tmp_path):
    write_cache(tmp_path / "f.h5", small_cache())
    with h5py.File(tmp_path / "f.h5") as f:
        assert set(f.keys()) == set(ROW_FIELDS) | {"class_names", "skipped"}
        assert f["embeddings"].shape == (3, 4, 8) and f["labels"].dtype == np.int64
        assert set(f["skipped"].keys()) == {"path", "reason", "kind", "file_size", "mtime_ns"}
        for name, col in COLUMNS.items():  # each dataset as its column declares it
            assert f[name].shape[1:] == getattr(small_cache(), name).shape[1:] and len(col.axes) == f[name].ndim - 1
            assert (h5py.check_string_dtype(f[name].dtype) is not None) == col.text, name


def test_a_skips_kind_is_kept_and_a_version_4_cache_is_still_read(tmp_path):
    """skipped_kind ({clip id: error type}) round trips; a cache of schema version 4 (a persisted DVC output: no
    skipped/kind) opens with its skips' kinds unknown, every row as it was."""
    cache = dataclasses.replace(small_cache(), skipped_kind={"b/bad.mp4": "EmptySegment"})
    write_cache(tmp_path / "f.h5", cache)
    assert read_cache(tmp_path / "f.h5").skipped_kind == {"b/bad.mp4": "EmptySegment"}
    with h5py.File(tmp_path / "f.h5", "a") as f:  # what version 4 wrote
        del f["skipped/kind"]
        f.attrs["schema_version"] = 4
    old = read_cache(tmp_path / "f.h5")
    assert old.skipped == cache.skipped and old.skipped_kind == {} and old.attrs["schema_version"] == 4
    for name in ROW_FIELDS:
        np.testing.assert_array_equal(getattr(old, name), getattr(cache, name), err_msg=name)
    with h5py.File(tmp_path / "f.h5", "a") as f:  # version 5 without it is damaged
        f.attrs["schema_version"] = 5
    with pytest.raises(CacheError, match="no dataset 'skipped/kind'"):
        read_cache(tmp_path / "f.h5")


def test_an_empty_cache_is_written_whole_and_refused_at_the_door(tmp_path):
    """0 rows: the file is written (its datasets of shape (0, ...)), and opening it says so in one line instead of a
    ZeroDivisionError in training."""
    write_cache(tmp_path / "f.h5", empty_cache(4, 8, {}, []))
    with h5py.File(tmp_path / "f.h5") as f:
        assert f["embeddings"].shape == (0, 4, 8) and f["skipped/path"].shape == (0,)
    with pytest.raises(CacheError, match="holds no clips"):
        read_cache(tmp_path / "f.h5")


def test_write_replaces_the_previous_file_whole(tmp_path):
    write_cache(tmp_path / "f.h5", small_cache(3))
    write_cache(tmp_path / "f.h5", small_cache(5))
    assert len(read_cache(tmp_path / "f.h5")) == 5


def test_take_and_concat_select_rows(tmp_path):
    cache = small_cache(4)
    both = concat_caches([cache.take([3, 0]), cache.take([1])], cache)
    assert both.paths.tolist() == ["a/v3.mp4", "a/v0.mp4", "a/v1.mp4"]
    np.testing.assert_array_equal(both.embeddings[1], cache.embeddings[0])


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(CacheError, match="no feature cache.*run stage one"):
        read_cache(tmp_path / "nope.h5")


def test_corrupt_file_is_one_clear_error(tmp_path):
    (tmp_path / "bad.h5").write_bytes(b"not hdf5 at all" * 100)
    with pytest.raises(CacheError, match="bad.h5: not a readable feature cache"):
        read_cache(tmp_path / "bad.h5")
    with h5py.File(tmp_path / "partial.h5", "w") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION
        f["embeddings"] = np.zeros((1, 2, 3))
    with pytest.raises(CacheError, match="partial.h5: not a readable feature cache"):
        read_cache(tmp_path / "partial.h5")


def _labels_as_a_group(f):
    del f["labels"]
    f.create_group("labels")


def _paths_as_numbers(f):
    del f["paths"]
    f["paths"] = np.arange(3)


def _embeddings_in_two_dimensions(f):
    del f["embeddings"]
    f["embeddings"] = np.zeros((3, 32))


def _embeddings_as_strings(f):
    del f["embeddings"]
    f["embeddings"] = np.zeros((3, 4, 8), "S3")


@pytest.mark.parametrize("damage, problem", [
    (lambda f: f.__delitem__("class_names"), "no dataset 'class_names'"),
    (lambda f: f.__delitem__("skipped/file_size"), "no dataset 'skipped/file_size'"),
    (_labels_as_a_group, "no dataset 'labels'"),
    (_paths_as_numbers, "'paths' holds numbers"),
    (_embeddings_in_two_dimensions, "embeddings are float64 in 2 dimensions"),
    (_embeddings_as_strings, "'embeddings' holds strings"),
])
def test_a_damaged_layout_is_a_cache_error_naming_the_dataset(tmp_path, damage, problem):
    """Whatever part of the layout is wrong, the reader says which, as a CacheError (never h5py's TypeError or
    numpy's ValueError from deep inside the read)."""
    write_cache(tmp_path / "f.h5", small_cache())
    with h5py.File(tmp_path / "f.h5", "a") as f:
        damage(f)
    with pytest.raises(CacheError, match=f"f.h5: not a readable feature cache \\({problem}"):
        read_cache(tmp_path / "f.h5")


def test_a_truncated_file_is_a_cache_error(tmp_path):
    write_cache(tmp_path / "f.h5", small_cache())
    data = (tmp_path / "f.h5").read_bytes()
    (tmp_path / "f.h5").write_bytes(data[:len(data) // 2])
    with pytest.raises(CacheError, match="f.h5: not a readable feature cache"):
        open_cache(tmp_path / "f.h5")


def test_older_schema_is_refused(tmp_path):
    write_cache(tmp_path / "f.h5", small_cache())
    with h5py.File(tmp_path / "f.h5", "a") as f:
        f.attrs["schema_version"] = 0
    with pytest.raises(CacheError, match="schema version 0.*re-run stage one"):
        read_cache(tmp_path / "f.h5")


def test_lazy_reader_equals_the_whole_read(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "BLOCK_ROWS", 3)  # several blocks on the write side
    monkeypatch.setattr(embeddings_module, "BLOCK_ROWS", 3)  # and on the read side
    cache = small_cache(10)
    write_cache(tmp_path / "f.h5", cache)
    lazy = open_cache(tmp_path / "f.h5")
    for name in META_FIELDS:
        np.testing.assert_array_equal(getattr(lazy, name), getattr(cache, name), err_msg=name)
    emb = lazy.embeddings
    assert isinstance(emb, Embeddings) and emb.shape == (10, 4, 8) and len(emb) == 10
    np.testing.assert_array_equal(np.asarray(emb), cache.embeddings)
    for rows in ([7, 2, 2, 9, 0], [0, 9, 5], slice(2, 8), np.arange(10) % 3 != 1):  # any order, repeats, sparse
        np.testing.assert_array_equal(np.asarray(emb[rows]), cache.embeddings[rows], err_msg=str(rows))
    np.testing.assert_array_equal(np.asarray(emb[[9, 1, 4]][[2, 0]]), cache.embeddings[[4, 9]])  # a view's view
    np.testing.assert_array_equal(emb[4], cache.embeddings[4])
    assert [start for start, _ in emb.blocks()] == [0, 3, 6, 9]
    np.testing.assert_array_equal(emb.mean(axis=1), cache.embeddings.mean(axis=1))  # the same floats, per block
    np.testing.assert_array_equal(emb[5:].mean(axis=1), cache.embeddings[5:].mean(axis=1))


def test_a_cache_replaced_after_opening_is_an_error_not_other_rows(tmp_path):
    write_cache(tmp_path / "f.h5", small_cache(3))
    lazy = open_cache(tmp_path / "f.h5")
    write_cache(tmp_path / "f.h5", small_cache(5))
    with pytest.raises(CacheError, match="f.h5 was replaced since it was opened"):
        np.asarray(lazy.embeddings)


def test_gathering_rows_from_lazy_sources_equals_concat_and_take(tmp_path):
    a, b = small_cache(4), small_cache(3)
    b.embeddings = b.embeddings + 1
    b.paths = np.array([f"b/w{i}.mp4" for i in range(3)], object)
    write_cache(tmp_path / "a.h5", a)
    write_cache(tmp_path / "b.h5", b)
    sources = [open_cache(tmp_path / "a.h5"), open_cache(tmp_path / "b.h5")]
    got = gather_rows(sources, np.array([1, 0, 0, 1, 0]), np.array([2, 3, 0, 0, 1]), a)
    want = concat_caches([a, b], a).take([4 + 2, 3, 0, 4 + 0, 1])
    for name in ROW_FIELDS:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def test_float16_storage_is_recorded_and_read_as_float32(tmp_path):
    cache = small_cache(4)
    write_cache(tmp_path / "h.h5", dataclasses.replace(cache, attrs={**cache.attrs, "dtype": "float16"}))
    with h5py.File(tmp_path / "h.h5") as f:
        assert f["embeddings"].dtype == np.float16 and f.attrs["dtype"] == "float16"
    back = read_cache(tmp_path / "h.h5")
    assert back.embeddings.dtype == np.float32 and back.attrs["dtype"] == "float16"
    np.testing.assert_array_equal(back.embeddings, cache.embeddings.astype(np.float16).astype(np.float32))
    write_cache(tmp_path / "f.h5", cache)
    assert read_cache(tmp_path / "f.h5").attrs["dtype"] == "float32"  # the default, recorded
    with pytest.raises(ConfigError, match="extract.dtype must be one of"):
        write_cache(tmp_path / "x.h5", dataclasses.replace(cache, attrs={"dtype": "int8"}))
