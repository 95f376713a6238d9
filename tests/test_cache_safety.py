"""The cache's door (issues 33 and 34): crafted HDF5 files refused before any data is read, rows checked at opening,
non-finite rows never reused, hashes tied to the bytes decoded, and a full or read-only disk said in one line."""
import dataclasses
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from pipeline.errors import CacheError, VideoError
from pipeline.extract.cache import ROW_FIELDS, open_cache, read_cache, write_cache
from pipeline.extract.runner import ExtractConfig, extract_features
from tests.conftest import committed_params, write_video
from tests.test_cache import small_cache

ROOT = Path(__file__).resolve().parents[1]
SECRET = b"SECRET-of-the-machine-0123456789"  # 32 bytes, repeated: what a crafted cache would copy out


def secret_file(tmp_path: Path, nbytes: int) -> Path:
    path = tmp_path / "secret.bin"
    path.write_bytes((SECRET * (nbytes // len(SECRET) + 1))[:nbytes])
    return path


def craft(path: Path, kind: str, tmp_path: Path) -> None:
    """Rewrite a good cache at `path` into one of the forbidden kinds (its data reachable through another file)."""
    other = tmp_path / "other.h5"
    with h5py.File(path, "r+") as f:
        emb = f["embeddings"]
        shape, nbytes = emb.shape, emb.size * 4
        if kind == "external storage":
            secret = secret_file(tmp_path, nbytes)
            del f["embeddings"]
            f.create_dataset("embeddings", shape=shape, dtype="<f4", external=[(str(secret), 0, nbytes)])
        elif kind == "virtual dataset":
            with h5py.File(other, "w") as src:
                src["x"] = np.frombuffer(secret_file(tmp_path, nbytes).read_bytes(), "<f4").reshape(shape)
            layout = h5py.VirtualLayout(shape=shape, dtype="<f4")
            layout[:] = h5py.VirtualSource(str(other), "x", shape=shape)
            del f["embeddings"]
            f.create_virtual_dataset("embeddings", layout)
        elif kind == "soft link":
            del f["labels"]
            f["labels"] = h5py.SoftLink("/frame_count")
        elif kind == "external link":
            with h5py.File(other, "w") as src:
                src.create_dataset("paths", data=np.array(["x"] * shape[0], object), dtype=h5py.string_dtype())
            del f["paths"]
            f["paths"] = h5py.ExternalLink(str(other), "/paths")
        elif kind == "external storage outside the schema":
            f["skipped"].create_dataset("notes", shape=(16,), dtype="u1",
                                        external=[(str(secret_file(tmp_path, 16)), 0, 16)])
        elif kind == "soft link in a group":
            f["skipped"]["alias"] = h5py.SoftLink("/labels")


KINDS = {"external storage": "external storage", "virtual dataset": "virtual", "soft link": "soft link",
         "external link": "link to another file", "external storage outside the schema": "external storage",
         "soft link in a group": "soft link"}


@pytest.mark.parametrize("kind", KINDS)
def test_a_cache_reaching_another_file_is_refused_in_one_line_before_any_data_is_read(tmp_path, kind):
    write_cache(tmp_path / "f.h5", small_cache())
    craft(tmp_path / "f.h5", kind, tmp_path)
    for reader in (open_cache, read_cache):
        with pytest.raises(CacheError) as err:
            reader(tmp_path / "f.h5")
        message = str(err.value)
        assert message.startswith(f"{tmp_path / 'f.h5'}: not a usable feature cache") and KINDS[kind] in message
        assert "\n" not in message and "SECRET" not in message


def test_embeddings_read_after_opening_are_checked_again(tmp_path):
    """The lazy reader checks the file at each read, not only at opening: one that reaches another file by then
    (rewritten in place with its identity kept, as the reader sees it here) is refused there too."""
    from pipeline.extract.cache import Embeddings
    from pipeline.extract.embeddings import file_identity

    path = tmp_path / "f.h5"
    write_cache(path, small_cache())
    for kind, problem in (("external storage", "external storage"), ("virtual dataset", "virtual")):
        write_cache(path, small_cache())
        craft(path, kind, tmp_path)
        lazy = Embeddings(path, file_identity(path), (3, 4, 8))  # as open_cache made it before the file changed
        with pytest.raises(CacheError, match=problem):
            np.asarray(lazy)


def test_every_reader_of_a_cache_goes_through_the_door():
    """Only the cache module opens HDF5 files (pipeline/extract/cache.py, and embeddings.py for the rows open_cache
    leaves in the file): the stages, the inspector, the app and stage one's reuse read caches and parts through
    open_cache (checked by the tests below and this one). The search index, another file, has its own door
    (search_index.open_index: check_storage first, then every array checked; tests/test_search.py)."""
    openers = [str(p.relative_to(ROOT)) for folder in ("pipeline", "stages", "app")
               for p in (ROOT / folder).rglob("*.py") if "h5py.File(" in p.read_text()]
    assert sorted(openers) == ["pipeline/extract/cache.py", "pipeline/extract/embeddings.py",
                               "pipeline/tools/search_index.py"]


@pytest.mark.parametrize("kind", ["external storage", "virtual dataset"])
def test_stage_two_and_the_inspector_refuse_a_crafted_cache_in_one_line(project, tmp_path, monkeypatch, kind,
                                                                        capsys, keep_threads):
    import stages.baseline
    import stages.evaluate
    import stages.split
    import stages.train
    import stages.zeroshot
    from pipeline.tools.cli import inspect

    (tmp_path / "cache").mkdir()
    cache = tmp_path / "cache" / "features.h5"
    cache.write_bytes((project / "cache" / "features.h5").read_bytes())
    craft(cache, kind, tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(committed_params()))
    monkeypatch.chdir(tmp_path)
    for name, module in [("split", stages.split), ("train", stages.train), ("baseline", stages.baseline),
                         ("zeroshot", stages.zeroshot), ("evaluate", stages.evaluate)]:
        with pytest.raises(SystemExit) as stopped:
            module.main()
        assert str(stopped.value).startswith(f"{name}: error: cache/features.h5: not a usable feature cache ("), name
    assert inspect(["cache/features.h5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cache/features.h5: not a usable feature cache") and err.count("\n") == 1


def run_stage_one(root, cache, tiny_clip, **kw):
    cfg = ExtractConfig(root=str(root), cache_path=str(cache), model=tiny_clip, num_frames=8, batch_size=8,
                        device="cpu", **kw)
    return extract_features(cfg, progress=False)


@pytest.mark.parametrize("kind", ["external storage", "virtual dataset"])
def test_stage_one_never_copies_another_files_bytes_into_the_new_cache(dataset, tmp_path, tiny_clip, kind):
    cache = tmp_path / "f.h5"
    run_stage_one(dataset, cache, tiny_clip)
    craft(cache, kind, tmp_path)
    parts = tmp_path / "f.h5.parts"
    parts.mkdir()
    (parts / "part-crafted.h5").write_bytes(cache.read_bytes())  # a part file left by "an interrupted run"
    summary = run_stage_one(dataset, cache, tiny_clip)
    assert (summary.encoded, summary.reused) == (7, 0) and "previous cache cannot be used" in summary.note
    assert SECRET not in cache.read_bytes() and not parts.exists()
    assert np.isfinite(read_cache(cache).embeddings).all()


def poke(path: Path, name: str, values) -> None:
    """Replace dataset `name` of a cache with `values` (its shape may change)."""
    with h5py.File(path, "r+") as f:
        del f[name]
        f[name] = values


@pytest.mark.parametrize("label", [99, -1])
def test_labels_outside_the_class_list_are_refused_at_opening(tmp_path, label):
    write_cache(tmp_path / "f.h5", small_cache())
    poke(tmp_path / "f.h5", "labels", np.array([0, label, 1]))
    with pytest.raises(CacheError, match=rf"row 1 has label {label}, outside its 2 class names"):
        open_cache(tmp_path / "f.h5")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e38])
def test_embeddings_that_are_not_finite_are_one_line_naming_the_row_whenever_read(tmp_path, value):
    cache = small_cache()
    cache.embeddings[1, 2, 3] = value
    write_cache(tmp_path / "f.h5", cache)
    lazy = open_cache(tmp_path / "f.h5")  # the metadata opens: the rows are checked as they are read
    np.testing.assert_array_equal(lazy.embeddings[0], cache.embeddings[0])
    for read in (lambda: np.asarray(lazy.embeddings), lambda: lazy.embeddings.mean(axis=1),
                 lambda: lazy.embeddings[1], lambda: read_cache(tmp_path / "f.h5")):
        with pytest.raises(CacheError, match="row 1 holds embeddings that are not finite"):
            read()
    assert lazy.embeddings.finite().tolist() == [True, False, True]


@pytest.mark.parametrize("damage, problem", [
    (("frame_indices", np.zeros((3, 5), np.int64)), "'frame_indices' has shape (3, 5)"),
    (("segment", np.zeros((3, 3))), "'segment' has shape (3, 3)"),
    (("labels", np.zeros(3)), "'labels' holds float64"),
    (("repeated", np.zeros(3, np.int64)), "'repeated' holds int64"),
    (("fps", np.zeros(4)), "'fps' has shape (4,)"),
    ({"embedding_dim": 512}, "attribute embedding_dim says 512, the embeddings have 8"),
    ({"num_frames": "abc"}, "attribute 'num_frames' is not a whole number"),
    ({"encoder_model": "x" * 70000}, "attribute 'encoder_model' is not a short text or number"),
    ({"sampling": np.arange(3)}, "attribute 'sampling' is not a short text or number"),
])
def test_fields_of_other_shapes_kinds_or_attribute_types_are_refused_at_opening(tmp_path, damage, problem):
    write_cache(tmp_path / "f.h5", small_cache())
    if isinstance(damage, dict):
        with h5py.File(tmp_path / "f.h5", "r+") as f:
            f.attrs.update(damage)
    else:
        poke(tmp_path / "f.h5", *damage)
    with pytest.raises(CacheError) as err:
        open_cache(tmp_path / "f.h5")
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_datasets_announcing_more_than_the_file_holds_are_refused_before_reading(tmp_path):
    """HDF5 fills rows never written: a small file announcing 10^8 rows would ask for gigabytes of metadata."""
    template = small_cache()
    with h5py.File(tmp_path / "f.h5", "w") as f:
        for name in ROW_FIELDS:
            like = getattr(template, name)
            kind = h5py.string_dtype() if like.dtype == object else like.dtype
            f.create_dataset(name, shape=(10**8, *like.shape[1:]), dtype=kind)
        f["class_names"] = np.array(["a", "b"], object)
        for name in ("path", "reason"):
            f.create_dataset(f"skipped/{name}", shape=(0,), dtype=h5py.string_dtype())
        for name in ("file_size", "mtime_ns"):
            f.create_dataset(f"skipped/{name}", shape=(0,), dtype=np.int64)
        f.attrs["schema_version"] = 4
    assert (tmp_path / "f.h5").stat().st_size < 100_000
    with pytest.raises(CacheError, match="its datasets announce .* more than a file of"):
        open_cache(tmp_path / "f.h5")


def test_a_previous_cache_of_another_embedding_size_is_re_encoded_on_every_run(dataset, tmp_path, tiny_clip):
    cache = tmp_path / "f.h5"
    run_stage_one(dataset, cache, tiny_clip)
    good = read_cache(cache)
    poke(cache, "embeddings", np.zeros((7, 8, 8), np.float32))  # the attributes still say 32
    for _ in range(2):
        summary = run_stage_one(dataset, cache, tiny_clip)
        assert summary.encoded == 7 and "embedding_dim says 32, the embeddings have 8" in summary.note
        poke(cache, "embeddings", np.zeros((7, 8, 8), np.float32))
    poke(cache, "embeddings", np.asarray(good.embeddings))
    assert run_stage_one(dataset, cache, tiny_clip).encoded == 0


@pytest.mark.parametrize("rehash", [False, True])
def test_a_row_whose_embeddings_are_not_finite_is_encoded_again_never_reused(dataset, tmp_path, tiny_clip, rehash):
    cache = tmp_path / "f.h5"
    run_stage_one(dataset, cache, tiny_clip)
    good = read_cache(cache)
    with h5py.File(cache, "r+") as f:
        f["embeddings"][2, 0, 0] = np.nan
        f["embeddings"][5, 1, 1] = np.inf
    summary = run_stage_one(dataset, cache, tiny_clip, rehash=rehash)
    assert (summary.encoded, summary.reused) == (2, 5) and "2 rows of" in summary.note
    np.testing.assert_array_equal(read_cache(cache).embeddings, good.embeddings)  # the same encoder, the same rows


def test_the_encoder_giving_non_finite_embeddings_skips_the_clip_not_the_cache(dataset, tmp_path, tiny_clip,
                                                                             monkeypatch):
    from pipeline.extract import engines
    from pipeline.extract.runner import NOT_FINITE

    results = engines.LocalEngine.results

    def nan_for_b(self, files, *args, **kw):
        for index, out, embeddings in results(self, files, *args, **kw):
            if files[index].endswith("b.avi") and embeddings is not None:
                embeddings = np.full_like(embeddings, np.nan)
            yield index, out, embeddings

    monkeypatch.setattr(engines.LocalEngine, "results", nan_for_b)
    summary = run_stage_one(dataset, tmp_path / "f.h5", tiny_clip, workers=0)
    assert summary.encoded == 6 and summary.skipped == [("clapping/b.avi", f"clapping/b.avi: {NOT_FINITE}")]
    assert np.isfinite(read_cache(tmp_path / "f.h5").embeddings).all()


def test_a_same_size_rewrite_with_the_mtime_put_back_between_hashing_and_decoding_keeps_hash_and_frames_together(
        dataset, tmp_path, tiny_clip, monkeypatch):
    """rsync --inplace -t between stage one's hashing and its decoding: the row's hash is of the bytes decoded."""
    import pipeline.decode.workers
    from pipeline.decode.hashing import hash_video
    from pipeline.decode.workers import CHANGED, ReadConfig, load_video

    a = dataset / "clapping" / "a.mp4"
    other = write_video(tmp_path / "other.mp4", 30, seed=11)
    size = max(a.stat().st_size, other.stat().st_size)  # same size: trailing zeros, which the demuxer ignores
    first, second = (p.read_bytes().ljust(size, b"\0") for p in (a, other))
    a.write_bytes(first)
    real, rewritten = pipeline.decode.workers.read_frames, []

    def rewrite(file: str, data: bytes) -> None:
        st = os.stat(file)
        with open(file, "r+b") as fh:  # same inode, same size, the mtime put back
            fh.write(data)
        os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns))

    def rewrite_in_place_first(file, *args, **kw):
        if Path(file) == a and not rewritten:
            rewritten.append(1)
            rewrite(file, second)
        return real(file, *args, **kw)

    monkeypatch.setattr(pipeline.decode.workers, "read_frames", rewrite_in_place_first)
    summary = run_stage_one(dataset, tmp_path / "f.h5", tiny_clip, workers=0)
    assert rewritten and summary.encoded == 7 and not summary.skipped
    cache = read_cache(tmp_path / "f.h5")
    row = list(cache.paths).index("clapping/a.mp4")
    assert cache.content_hash[row] == hashlib.sha256(second).hexdigest() != hashlib.sha256(first).hexdigest()
    monkeypatch.setattr(pipeline.decode.workers, "read_frames", real)
    fresh = tmp_path / "fresh" / "clapping" / "a.mp4"  # the frames are those of the bytes hashed: a run on them agrees
    fresh.parent.mkdir(parents=True)
    fresh.write_bytes(second)
    run_stage_one(tmp_path / "fresh", tmp_path / "g.h5", tiny_clip, workers=0)
    np.testing.assert_array_equal(read_cache(tmp_path / "g.h5").embeddings[0], cache.embeddings[row])

    def always_rewritten(file, *args, **kw):  # every decode meets other bytes than the hash before it
        rewrite(file, first if Path(file).read_bytes() == second else second)
        return real(file, *args, **kw)

    monkeypatch.setattr(pipeline.decode.workers, "read_frames", always_rewritten)
    hashed = hash_video(str(a), 60)
    with pytest.raises(VideoError) as err:
        load_video(str(a), ReadConfig(4, None), hashed)
    assert err.value.reason == CHANGED


def in_a_small_disk(tmp_path: Path, code: str, size: str = "256k", read_only: bool = False):
    """Run `code` (python, the mount point as sys.argv[1]) in a mount namespace of its own (unshare -rm) where a
    tmpfs of `size` (read-only if asked) is mounted on tmp_path/disk: a full or read-only disk, made by the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    remount = 'mount -o remount,ro "$1" && ' if read_only else ""
    script = f'mount -t tmpfs -o size={size} tmpfs "$1" && {remount}exec "$2" -c "$3" "$1"'
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no user and mount namespaces here (unshare -rm) to make a small disk in")
    command = ["unshare", "-rm", "sh", "-c", script, "sh", str(disk), sys.executable, textwrap.dedent(code)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_full_disk_is_one_line_naming_the_folder_and_the_previous_cache_is_intact(tmp_path):
    run = in_a_small_disk(tmp_path, """
        import sys, errno
        from pathlib import Path
        from pipeline.errors import CacheError, VideoError
        from pipeline.extract.cache import read_cache, write_cache
        from pipeline.extract.cache_door import disk_problem
        from tests.test_cache import small_cache
        disk = Path(sys.argv[1])
        write_cache(disk / "f.h5", small_cache())
        before = (disk / "f.h5").read_bytes()
        try:
            write_cache(disk / "f.h5", small_cache(3000, 16, 64))  # 12 MB on a 256 KiB disk
        except CacheError as e:
            print("refused:", e)
        assert (disk / "f.h5").read_bytes() == before and sorted(p.name for p in disk.iterdir()) == ["f.h5"]
        read_cache(disk / "f.h5")
        try:
            with open(disk / "fill", "wb") as fh:
                fh.write(b"x" * 10**6)
        except OSError as e:
            assert e.errno == errno.ENOSPC
        print("no errno:", disk_problem(RuntimeError("a flush failed"), disk))
        """)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    disk = tmp_path / "disk"
    assert lines[0] == (f"refused: the disk holding {str(disk)!r} is full (no space left to write the cache): free "
                        "some space and run stage one again; the previous cache is unchanged")
    assert lines[1].startswith(f"no errno: the disk holding {str(disk)!r} is full")


def test_a_read_only_cache_folder_is_named(tmp_path):
    run = in_a_small_disk(tmp_path, """
        import sys
        from pipeline.errors import CacheError, VideoError
        from pipeline.extract.runner import ExtractConfig, extract_features
        for cache in (sys.argv[1] + "/f.h5", sys.argv[1] + "/cache/f.h5"):
            try:
                extract_features(ExtractConfig(root=".", cache_path=cache, model="unused"), progress=False)
            except CacheError as e:
                print(e)
        """, read_only=True)
    assert run.returncode == 0, run.stderr
    disk = tmp_path / "disk"
    assert run.stdout.splitlines() == [
        f"cannot write in the cache's folder {str(folder)!r} (read-only or permission denied): make it writable or "
        "set another cache path; the previous cache is unchanged" for folder in (disk, disk / "cache")]


def test_a_folder_at_the_caches_path_says_remove_the_folder(dataset, tmp_path, tiny_clip):
    (tmp_path / "f.h5").mkdir()
    with pytest.raises(CacheError, match=r"is a folder: remove the folder"):
        run_stage_one(dataset, tmp_path / "f.h5", tiny_clip)


def test_the_door_leaves_a_good_cache_as_it_was(tmp_path):
    cache = small_cache()
    write_cache(tmp_path / "f.h5", dataclasses.replace(cache, attrs={**cache.attrs, "embedding_dim": 8,
                                                                      "random_weights": True}))
    back = read_cache(tmp_path / "f.h5")
    np.testing.assert_array_equal(back.embeddings, cache.embeddings)
    assert back.attrs["embedding_dim"] == 8 and back.attrs["random_weights"] is True
