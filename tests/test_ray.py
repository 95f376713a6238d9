"""Stage one on Ray (extract.engine: ray): the same cache as the local engine, bit for bit, whatever fails.

One Ray for the whole module: a head node with 2 CPUs and a fake GPU (so the GPU scheduling path runs on the
CPU), inside a network namespace that has only loopback, so the test cluster never listens beyond this machine.
"""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray", reason="Ray is optional: pip install -r requirements-ray.txt")
from ray.cluster_utils import Cluster  # noqa: E402

from pipeline.extract.cache import read_cache  # noqa: E402
from pipeline.extract.runner import ExtractConfig, extract_features  # noqa: E402
from pipeline.paths import CACHE_PATH, PARAMS  # noqa: E402
from tests.conftest import committed_params, write_video  # noqa: E402
from tests.faults import DOOMED_NODE, broken_install_decode, doomed_node_decode, faulty_decode  # noqa: E402
from tests.netns import network_namespace  # noqa: E402
from tests.test_extract import assert_same_cache  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def loopback_only():
    """Run the body (and every process it starts) in a new network namespace with only `lo`, then come back."""
    return network_namespace(["ip link set lo up"], ["lo"],
                             "the Ray tests isolate their cluster in a network namespace")


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster on loopback: head node with 2 CPUs and one fake GPU; the driver (this process) connected."""
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a private test cluster: `ray start --head` would turn on token auth
    # the nodes' workers import the test decoders (tests.faults) from here, whichever driver started the job
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    with loopback_only():
        c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=2, num_gpus=1, include_dashboard=False,
                                                              object_store_memory=200 * 2**20))
        ray.init(address=c.address, log_to_driver=False)
        try:
            yield c
        finally:
            ray.shutdown()
            c.shutdown()


def config(root, cache, tiny_clip, **kw) -> ExtractConfig:
    # device auto: the encoder actors ask for the fake GPU, find no CUDA and run on the CPU, like the local engine
    return ExtractConfig(root=str(root), cache_path=str(cache), model=tiny_clip, num_frames=8, batch_size=8,
                         device="auto", **kw)


def test_the_cache_is_the_local_engines_bit_for_bit_with_the_same_skips(cluster, dataset, tmp_path, tiny_clip):
    (dataset / "sitting" / "zero.mp4").write_bytes(b"")
    (dataset / "sitting" / "text.mp4").write_text("hello, I am not a video\n" * 20)
    write_video(dataset / "walking" / "crash.mp4", 10)  # the test decoder segfaults on it, every time
    write_video(dataset / "walking" / "hang.mp4", 10)  # and hangs on this one
    (dataset / "walking" / "twin.mp4").write_bytes((dataset / "walking" / "f.mp4").read_bytes())  # same content
    local = extract_features(config(dataset, tmp_path / "local.h5", tiny_clip, video_timeout_s=3),
                             progress=False, decode=faulty_decode)
    on_ray = extract_features(config(dataset, tmp_path / "ray.h5", tiny_clip, video_timeout_s=3, engine="ray"),
                              progress=False, decode=faulty_decode)
    assert (on_ray.encoded, on_ray.reused) == (local.encoded, local.reused) == (7, 1)
    assert on_ray.skipped == local.skipped and len(local.skipped) == 4
    reasons = dict(on_ray.skipped)
    assert "decoder crashed (signal 11, SIGSEGV)" in reasons["walking/crash.mp4"]
    assert "timed out after 3 s" in reasons["walking/hang.mp4"]
    assert_same_cache(read_cache(tmp_path / "ray.h5"), read_cache(tmp_path / "local.h5"))
    again = extract_features(config(dataset, tmp_path / "ray.h5", tiny_clip, video_timeout_s=3, engine="ray"),
                             progress=False, decode=faulty_decode)
    assert (again.encoded, again.reused) == (0, 8)  # the (path, size, mtime) shortcut: nothing sent to Ray


# A driver process running stage one as `python -m stages.extract` does, with its encoder's thread count set as a
# machine with that many cores would set it (pipeline.threads.THREADS), then the stage's own main.
DRIVER = ("import runpy, sys, pipeline.threads\n"
          "pipeline.threads.THREADS['extract'] = int(sys.argv.pop(1))\n"
          "runpy.run_module('stages.extract', run_name='__main__')\n")


def start_stage_one(folder: Path, root: Path, annotations: Path, tiny_clip: str, threads: int,
                    **extract) -> subprocess.Popen:
    """`python -m stages.extract` in its own process, in `folder` with the committed params.yaml and `extract` over
    it (batch_size auto, as committed), on the videos `annotations` lists under `root`; started, not waited for."""
    params = committed_params(extract={**extract, "num_frames": 6})
    params["data"] |= {"root": str(root), "annotations": str(annotations)}
    params["encoder"]["model"] = tiny_clip
    folder.mkdir()
    (folder / PARAMS).write_text(yaml.safe_dump(params))
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(threads)], cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_stage_one_on_ray_writes_the_local_engines_bytes_as_users_run_it(cluster, tmp_path, tiny_clip):
    """Two runs of the stage in separate processes, as users run them: batch_size auto (on the CPU, one pass per
    video: 6 frames per pass for 6 frames per video, whichever engine batches the videos and however); videos of different lengths, an empty one (skipped) and trimmed clips (an annotation file's start and end: two
    segments of one file, and one past its end, travel to the decode actors). The driver's encoder runs 3 threads (a
    3-core machine's count), the cluster's node has 2 cores: on this CPU 3 threads round some videos' embeddings
    differently from 2 (by an ulp, in every frame), so the encoder actors must take the driver's count. Every row's
    bytes, every field, the skips and the attributes are equal."""
    root = tmp_path / "data"
    lines = ["path,label,start,end"]
    for i in range(8):  # different lengths and sizes (the decoder resizes them all to the encoder's input)
        write_video(root / f"class{i % 3}" / f"v{i}.avi", 5 + 7 * i, size=(64 + 16 * (i % 3), 48), seed=i)
        lines.append(f"class{i % 3}/v{i}.avi,class{i % 3},,")
    write_video(root / "long.mp4", 60, fps=10.0)
    lines += ["long.mp4,class0,0,2", "long.mp4,class1,3,6", "long.mp4,class1,7,8"]  # the last past its end
    (root / "empty.mp4").write_bytes(b"")
    lines.append("empty.mp4,class2,,")
    (tmp_path / "ann.csv").write_text("\n".join(lines) + "\n")
    runs = [start_stage_one(tmp_path / "local", root, tmp_path / "ann.csv", tiny_clip, threads=3),
            start_stage_one(tmp_path / "ray", root, tmp_path / "ann.csv", tiny_clip, threads=3, engine="ray",
                            ray_address=cluster.address)]  # at once: each has its own cache and folder
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
    local, on_ray = (read_cache(tmp_path / name / CACHE_PATH) for name in ("local", "ray"))
    assert len(local.paths) == 10 and len(local.skipped) == 2 and local.skipped == on_ray.skipped
    assert local.attrs["batch_size"] == 6 and local.embeddings.shape[1] == 6
    assert on_ray.embeddings.tobytes() == local.embeddings.tobytes()
    assert_same_cache(on_ray, local)  # every row field equal, the skips and the attributes too


@pytest.fixture(scope="module")
def twelve(tmp_path_factory, tiny_clip) -> tuple[Path, object]:
    """12 videos of 40 frames in 3 classes, and the local engine's cache of them (made once: two tests compare)."""
    base = tmp_path_factory.mktemp("twelve")
    root = base / "data"
    for i in range(12):
        write_video(root / f"class{i % 3}" / f"v{i:02d}.avi", 40, seed=i)
    assert extract_features(config(root, base / "local.h5", tiny_clip), progress=False).encoded == 12
    return root, read_cache(base / "local.h5")


def test_a_node_removed_mid_run_costs_only_its_in_flight_videos(cluster, twelve, tmp_path, tiny_clip):
    root, local = twelve
    marks = tmp_path / "marks"
    marks.mkdir()
    node = cluster.add_node(num_cpus=2, env_vars={DOOMED_NODE: "1"})  # its decode actors never finish a video
    cluster.wait_for_nodes()
    cfg = config(root, tmp_path / "ray.h5", tiny_clip, engine="ray", shard_size=1)
    outcome: dict = {}

    def run():
        try:
            outcome["summary"] = extract_features(cfg, progress=False,
                                                  decode=functools.partial(doomed_node_decode, marks=str(marks)))
        except BaseException as e:  # noqa: BLE001 (reported by the test below)
            outcome["error"] = e

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.time() + 300
    while not any(marks.iterdir()) and runner.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    lost = sorted(p.name for p in marks.iterdir())
    assert lost, "no video reached the second node"
    cluster.remove_node(node)
    runner.join(600)
    assert not runner.is_alive(), "the run did not end after the node was removed"
    assert "error" not in outcome, outcome.get("error")
    summary = outcome["summary"]
    assert (summary.encoded, summary.reused, summary.skipped) == (12, 0, [])
    cache = read_cache(tmp_path / "ray.h5")
    assert sorted(cache.paths) == sorted(f"class{i % 3}/v{i:02d}.avi" for i in range(12))  # each once
    assert_same_cache(cache, local)


@pytest.mark.slow  # a driver process SIGKILLed, then a second run
def test_a_killed_driver_leaves_the_cache_and_the_next_run_reuses_its_parts(cluster, twelve, tmp_path, tiny_clip):
    root, local = twelve
    gate = tmp_path / "gate"
    gate.mkdir()
    cache = tmp_path / "f.h5"
    code = (f"import functools\n"
            f"from pipeline.extract.runner import ExtractConfig, extract_features\n"
            f"from tests.faults import gated_decode\n"
            f"extract_features(ExtractConfig(root={str(root)!r}, cache_path={str(cache)!r}, model={tiny_clip!r}, "
            f"num_frames=8, batch_size=8, device='auto', shard_size=1, video_timeout_s=600, engine='ray', "
            f"ray_address={cluster.address!r}), progress=False, "
            f"decode=functools.partial(gated_decode, gate={str(gate)!r}, slots=5))\n")  # 5 videos, then none
    driver = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    parts = tmp_path / "f.h5.parts"
    deadline = time.time() + 300
    while len(list(parts.glob("part-*.h5"))) < 5 and driver.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert len(list(parts.glob("part-*.h5"))) == 5, "the driver did not write a part per decoded video"
    driver.send_signal(signal.SIGKILL)
    assert driver.wait() == -signal.SIGKILL
    assert not cache.exists()  # no cache yet, and no half-written one
    summary = extract_features(config(root, cache, tiny_clip, engine="ray", shard_size=1), progress=False)
    assert (summary.encoded, summary.reused) == (7, 5)  # only the videos that had not come back
    assert_same_cache(read_cache(cache), local)


def test_a_node_that_cannot_decode_stops_the_run_with_one_clear_error(cluster, dataset, tmp_path, tiny_clip):
    with pytest.raises(ValueError, match=r"stage one on Ray failed \(0 of 7 videos done.*ImportError: No module named 'av'"):
        extract_features(config(dataset, tmp_path / "f.h5", tiny_clip, engine="ray"), progress=False,
                         decode=broken_install_decode)
    assert not (tmp_path / "f.h5").exists()
