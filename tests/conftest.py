"""Shared fixtures: a tiny random CLIP built by the project, and small videos written with OpenCV."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the suite never touches the network; set before transformers loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as stage one sets it (stages/extract.py): no spinning threads

import cv2
import numpy as np
import pytest

import yaml

from pipeline.embed.tiny_clip import build_tiny_clip

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app" / "streamlit_app.py")
# AppTest's bound on one script run (the run ends when the script does: an event, not a pace); generous, so that a
# loaded 2-core machine loading the encoder for the first time never fails a test
APP_RUN_S = 300


def committed_file(name: str) -> str:
    """A file of the repository as committed (git's HEAD), not the working tree's: `dvc exp run -S` edits
    params.yaml in place, and a user's experiment must fail no test. Outside a git checkout (an unpacked archive),
    the file itself."""
    try:
        return subprocess.run(["git", "show", f"HEAD:{name}"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return (ROOT / name).read_text()


def committed_params(**sections) -> dict:
    """params.yaml as committed (committed_file), with `sections` merged over it ({"extract": {"num_frames": 4}})."""
    params = yaml.safe_load(committed_file("params.yaml"))
    for name, values in sections.items():
        params[name] = {**params[name], **values}
    return params


FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "VP80", ".webm": "VP80", ".mov": "mp4v", ".m4v": "mp4v"}


def level(i: int) -> int:
    """The grey level of frame i in videos from `write_video`, so tests can tell which frame was decoded."""
    return 20 + (3 * i) % 230


def write_video(path: Path, n_frames: int = 30, size: tuple[int, int] = (64, 48), fps: float = 25.0,
                seed: int = 0) -> Path:
    """Write a video whose frame i is grey level `level(i)` with a seeded coloured box (BGR, size = (w, h))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC[path.suffix.lower()]), fps, size)
    assert writer.isOpened(), path
    rng = np.random.default_rng(seed)
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    x, y = int(rng.integers(0, size[0] // 2)), int(rng.integers(0, size[1] // 2))
    for i in range(n_frames):
        frame = np.full((size[1], size[0], 3), level(i), np.uint8)
        cv2.rectangle(frame, (x, y), (x + size[0] // 4, y + size[1] // 4), color, -1)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> str:
    """Directory of a tiny random CLIP, loaded through from_pretrained like the real one."""
    return str(build_tiny_clip(tmp_path_factory.mktemp("tiny-clip")))


@pytest.fixture(scope="session", autouse=True)
def onnx_dir(tmp_path_factory) -> Path:
    """The folder of ONNX exports for this test session, in every process it starts (the environment's
    CLIP_HAR_ONNX_DIR, set before the decode workers' forkserver starts): extract.backend auto runs the tiny CLIP
    through ONNX Runtime, exported once for the whole session (its fingerprint is the same in every test), and the
    user's ~/.cache is left alone."""
    from pipeline.embed.onnx_backend import ONNX_DIR_ENV

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ONNX_DIR_ENV, str(tmp_path_factory.mktemp("onnx")))
        yield Path(os.environ[ONNX_DIR_ENV])


@pytest.fixture
def dataset(tmp_path) -> Path:
    """Three classes, seven small videos in four containers (two classes with a nested folder)."""
    root = tmp_path / "data"
    write_video(root / "clapping" / "a.mp4", 30, seed=1)
    write_video(root / "clapping" / "b.avi", 40, seed=2)
    write_video(root / "clapping" / "sub" / "c.mkv", 24, seed=3)
    write_video(root / "sitting" / "d.webm", 20, seed=4)
    write_video(root / "sitting" / "e.MOV", 33, seed=5)
    write_video(root / "walking" / "f.mp4", 12, seed=6)
    write_video(root / "walking" / "g.avi", 50, size=(96, 128), seed=7)
    return root


def set_mp4_rotation(path: Path, degrees: int) -> None:
    """Write a rotation into an mp4's track header matrix (tkhd), as phones do for portrait video."""
    import struct

    data = bytearray(path.read_bytes())
    at = data.index(b"tkhd")
    assert data[at + 4] == 0, "version 0 tkhd expected"
    cos, sin = {0: (1, 0), 90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees]
    fixed = [cos, sin, 0, -sin, cos, 0]  # 16.16 fixed point, then u, v, w (2.30)
    matrix = b"".join(struct.pack(">i", v * 65536) for v in fixed) + struct.pack(">iii", 0, 0, 1 << 30)
    data[at + 44:at + 80] = matrix  # the matrix sits 44 bytes after the box type in a version 0 tkhd
    path.write_bytes(bytes(data))


@pytest.fixture(scope="session", autouse=True)
def forkserver_as_stage_one_starts_it(onnx_dir):
    """This process's decode workers all fork from one forkserver, started by the first pool with that pool's
    preload. Stage one's pool (the workers embed on the CPU) preloads the encoder's modules; were the first pool
    here the app's or predict's, every stage-one worker after it would import transformers itself (2.7 s a run
    instead of 0.25, measured). So the first pool is stage one's, as in `python -m stages.extract`."""
    from pipeline.embed.in_worker import WORKER_MODULES
    from pipeline.decode.workers import DecodePool, PoolConfig

    with DecodePool(PoolConfig(workers=1), preload=WORKER_MODULES) as pool:
        pool.call(os.getpid)
    yield


@pytest.fixture(scope="session")
def project(tmp_path_factory, tiny_clip) -> Path:
    """A project folder as `dvc repro` leaves it: videos, cache/features.h5, both heads in models/, the app config.

    Three classes of three videos each (4 sampled frames), encoded with the tiny CLIP; heads trained on all of them.
    """
    from pipeline.extract.cache import read_cache
    from pipeline.extract.runner import ExtractConfig, extract_features
    from pipeline.heads.estimators import LinearHead, mean_pool
    from pipeline.heads.logreg import LogRegHead
    from pipeline.paths import HEAD_FILES
    from pipeline.heads.training import LinearConfig

    root = tmp_path_factory.mktemp("project")
    for c, name in enumerate(["clapping", "sitting", "walking"]):
        for i in range(3):
            write_video(root / "data" / name / f"{name}_{i}.mp4", 20 + 5 * i, seed=10 * c + i)
    cache_file = root / "cache" / "features.h5"
    extract_features(ExtractConfig(root=str(root / "data"), cache_path=str(cache_file), model=tiny_clip,
                                   num_frames=4, batch_size=16, device="cpu"), progress=False)
    cache = read_cache(cache_file)
    x, y = mean_pool(cache.embeddings), cache.labels
    LinearHead(LinearConfig(lr=1e-2, epochs=50)).fit(x, y, cache.class_names, cache.attrs).save(
        root / HEAD_FILES["linear"])
    LogRegHead().fit(x, y, cache.class_names, cache.attrs).save(root / HEAD_FILES["logreg"])
    return root


@pytest.fixture
def keep_threads():
    """Torch's and the BLAS pools' thread counts put back after a test that runs a stage in this process (each
    stage sets them for its role: pipeline.threads), so that the tests after it run as they would alone."""
    import torch
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    with threadpool_limits(limits=None):  # restores the pools' counts on leaving
        yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(items: list) -> None:
    """The files with `slow` tests first, the most slow tests first; then the rest in xdist's own order (the most
    tests first). The two workers take whole files (`--dist loadfile`) from the front of this order: a long file
    (dvc repro, the Ray cluster) taken last left one worker alone with it for minutes at the end of the run, which
    xdist's default order (by number of tests, so a file of a few long tests comes last) made the rule. pytest.ini
    turns xdist's own reordering off (`--no-loadscope-reorder`) so that this order is the one used."""
    files: dict[str, list] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::", 1)[0], []).append(item)

    def weight(tests: list) -> tuple[int, int]:
        return -sum(t.get_closest_marker("slow") is not None for t in tests), -len(tests)

    items[:] = [item for tests in sorted(files.values(), key=weight) for item in tests]
