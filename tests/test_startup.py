"""Stage one's start-up (issue 39): the device decided without torch where no GPU driver is, and the decode workers'
encoder opened from its record, the same encoder as a full load, or loaded in full."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.embed import devices, in_worker, recorded
from pipeline.embed.encoder import EncoderConfig
from pipeline.embed.in_worker import RECORDED_MODULES, WORKER_MODULES, worker_modules
from pipeline.embed.tiny_clip import build_tiny_clip
from pipeline.paths import PARAMS
from tests.conftest import committed_params, write_video

ROOT = Path(__file__).resolve().parents[1]


def test_without_a_gpu_driver_the_device_is_decided_without_importing_torch(tmp_path):
    code = ("import sys\nfrom pipeline.embed import devices\nfrom pipeline.embed.encoder import EncoderConfig\n"
            f"devices.GPU_DRIVER_PATHS = ({str(tmp_path / 'nvidiactl')!r},)\n"
            "assert EncoderConfig('m').device_type() == 'cpu' and not devices.cuda_available()\n"
            "assert EncoderConfig('m', backend='torch').device_type() == 'cpu'\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr


def test_with_a_gpu_driver_torch_decides_and_auto_picks_torch_on_cuda(tmp_path, monkeypatch):
    import torch

    driver = tmp_path / "nvidiactl"
    driver.touch()
    monkeypatch.setattr(devices, "GPU_DRIVER_PATHS", (str(tmp_path / "absent"), str(driver)))
    monkeypatch.setattr(devices.sys, "platform", "linux")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.cuda_available() and EncoderConfig("m").device_type() == "cuda"
    assert EncoderConfig("m", device="cpu").device_type() == "cpu"
    assert EncoderConfig("m", backend="onnxruntime").device_type() == "cpu"  # the CPU-only backend keeps auto there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a driver, but no usable GPU: torch's answer
    assert not devices.cuda_available() and EncoderConfig("m").device_type() == "cpu"
    monkeypatch.setattr(devices.sys, "platform", "win32")  # elsewhere than Linux torch is always asked
    monkeypatch.setattr(devices, "GPU_DRIVER_PATHS", ())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.cuda_available()


def test_cuda_asked_without_a_driver_is_the_same_clear_error(tiny_clip, tmp_path, monkeypatch):
    from pipeline.embed.encoder import load_encoder

    monkeypatch.setattr(devices, "GPU_DRIVER_PATHS", (str(tmp_path / "absent"),))
    monkeypatch.setattr(devices.sys, "platform", "linux")
    with pytest.raises(ValueError, match="device 'cuda' was asked for but no CUDA GPU is available"):
        load_encoder(tiny_clip, device="cuda")
    with pytest.raises(ValueError, match="device 'cuda' was asked for but no CUDA GPU is available"):
        recorded.load(EncoderConfig(tiny_clip, device="cuda"), "cuda")
    assert EncoderConfig(tiny_clip).num_frames == 16  # Sampling's default


def _same(a, b, frames):
    from pipeline.embed.encoder import embed_frames

    (ea, na), (eb, nb) = a, b
    assert ea.describe() == eb.describe() and ea.frame_spec() == eb.frame_spec() and na == nb
    np.testing.assert_array_equal(embed_frames(frames, ea, na), embed_frames(frames, eb, nb))


def _spy(monkeypatch) -> list:
    """The devices EncoderConfig.load (a full load) is called with, from now on."""
    calls, load = [], EncoderConfig.load
    monkeypatch.setattr(EncoderConfig, "load", lambda self, device=None: calls.append(device) or load(self, device))
    return calls


def test_a_recorded_encoder_is_the_full_load_and_is_trusted_only_for_the_same_bytes(tmp_path, monkeypatch):
    model = build_tiny_clip(tmp_path / "model", seed=3)
    cfg = EncoderConfig(str(model), num_frames=4)
    frames = np.random.default_rng(1).integers(0, 256, (4, 224, 224, 3), np.uint8)
    full = cfg.load("cpu")
    assert not recorded.likely(str(model)) and worker_modules(str(model), "auto") == WORKER_MODULES
    calls = _spy(monkeypatch)
    _same(full, recorded.load(cfg), frames)  # no record yet: loaded in full, then recorded
    assert calls == ["cpu"]
    assert recorded.likely(str(model)) and worker_modules(str(model), "auto") == RECORDED_MODULES
    assert worker_modules(str(model), "torch") == WORKER_MODULES
    again = recorded.load(cfg)
    assert calls == ["cpu"] and again[0].model is None  # from the record: no model built, the same encoder
    _same(full, again, frames)
    recorded.load(EncoderConfig(str(model), backend="torch", num_frames=4))  # torch needs the model: in full
    assert calls == ["cpu", "cpu"]
    # other weights in the same folder (same names, sizes and config): another key, a full load, a new record
    shutil.rmtree(model)
    build_tiny_clip(model, seed=4)
    other = recorded.load(cfg)
    assert calls == ["cpu"] * 3 and other[0].fingerprint != full[0].fingerprint
    _same(other, recorded.load(cfg), frames)
    assert calls == ["cpu"] * 3
    # a record this code did not write (damaged, or of another shape) is ignored, and written again
    path = recorded._path(model.resolve())
    path.write_text(json.dumps({**json.loads(path.read_text()), "dim": "32"}))
    assert recorded._read(model.resolve()) is None and not recorded.likely(str(model))
    _same(other, recorded.load(cfg), frames)
    assert calls == ["cpu"] * 4 and recorded._read(model.resolve()) is not None


def test_a_damaged_export_is_made_again_not_opened_from_the_record(tmp_path):
    model = build_tiny_clip(tmp_path / "model", seed=5)
    cfg = EncoderConfig(str(model), num_frames=4)
    full = recorded.load(cfg)
    recorded.load(cfg)  # from its record
    from pipeline.embed.onnx_backend import export_name, model_dir, verified_export

    onnx = model_dir(full[0].fingerprint) / export_name("none")
    onnx.write_bytes(onnx.read_bytes()[:-10])
    again = recorded.load(cfg)
    assert verified_export(full[0].fingerprint) == onnx and again[0].fingerprint == full[0].fingerprint
    _same(full, again, np.random.default_rng(2).integers(0, 256, (4, 224, 224, 3), np.uint8))


def test_the_run_checks_the_record_once_and_says_what_the_encoder_is_its_workers_open_the_export(tmp_path,
                                                                                                monkeypatch):
    """Stage one's process verifies the record (the folder's hash, the export's check) and describes the encoder from
    it; each worker opens that export without hashing or checking again: the same encoder as a worker's full load."""
    from pipeline.decode.workers import PoolConfig
    from pipeline.embed import onnx_backend
    from pipeline.extract import engines
    from pipeline.extract.engines import LocalEngine

    def checked_again(*args):
        raise AssertionError("checked again, or a worker asked what the encoder is")

    model = build_tiny_clip(tmp_path / "model", seed=6)
    cfg = EncoderConfig(str(model), num_frames=4)
    key, hashed = recorded.folder_key, []
    monkeypatch.setattr(recorded, "folder_key", lambda folder: hashed.append(folder) or key(folder))
    assert recorded.verified(cfg) is None and hashed == []  # no record yet: nothing hashed (the workers load in full)
    monkeypatch.setattr(recorded, "folder_key", key)
    with LocalEngine(cfg, PoolConfig(workers=1)) as engine:  # a worker loads in full, records, and describes
        first = engine.encoder_attrs, engine.frame_spec, engine.batch_size
    checked = recorded.verified(cfg)
    assert checked is not None and checked.export == onnx_backend.verified_export(first[0]["encoder_fingerprint"])
    assert recorded.verified(EncoderConfig(str(model), backend="torch")) is None
    handed, pool = [], engines.embedding_pool
    monkeypatch.setattr(engines, "embedding_pool", lambda *args: handed.append(args[3]) or pool(*args))
    monkeypatch.setattr(engines, "describe_in_worker", checked_again)  # no worker is asked
    hashed.clear()
    monkeypatch.setattr(recorded, "folder_key", lambda folder: hashed.append(folder) or key(folder))
    with LocalEngine(cfg, PoolConfig(workers=1)) as engine:  # described here, from the record
        assert (engine.encoder_attrs, engine.frame_spec, engine.batch_size) == first
    assert len(hashed) == 1  # the folder hashed once, in this process (its workers are other processes)
    assert len(handed) == 1 and handed[0].export == checked.export  # the workers get what this process verified
    full = cfg.load("cpu")

    frames = np.random.default_rng(3).integers(0, 256, (4, 224, 224, 3), np.uint8)
    check = onnx_backend._verified

    monkeypatch.setattr(recorded, "folder_key", checked_again)
    monkeypatch.setattr(onnx_backend, "_verified", checked_again)
    monkeypatch.setattr(in_worker, "_in_worker", {})
    in_worker.load_in_worker(cfg, checked)  # a worker's setup with what the run's process verified (it keeps errors)
    assert "error" not in in_worker._in_worker, in_worker._in_worker.get("error")
    opened = in_worker._in_worker["encoder"], in_worker._in_worker["batch_size"]
    assert opened[0].model is None
    _same(full, opened, frames)
    # the export written to since the run's process checked it (its times at least): the worker checks again
    calls = []
    monkeypatch.setattr(recorded, "folder_key", lambda folder: calls.append(folder) or key(folder))
    monkeypatch.setattr(onnx_backend, "_verified", check)
    os.utime(checked.export)
    again = recorded.load(cfg, "cpu", checked)
    assert len(calls) == 1 and again[0].model is None
    _same(full, again, frames)
    # a record whose fingerprint (which names the export's folder) is not one this code makes is ignored
    path = recorded._path(model.resolve())
    path.write_text(json.dumps({**json.loads(path.read_text()), "fingerprint": "../" * 4 + "elsewhere"}))
    assert recorded._read(model.resolve()) is None and recorded.verified(cfg) is None


def test_the_key_covers_what_from_pretrained_reads_and_a_hub_id_is_its_cached_snapshot(tmp_path, monkeypatch):
    import huggingface_hub

    folder = tmp_path / "snapshot"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"a")
    alone = recorded.folder_key(folder)
    (folder / "pytorch_model.bin").write_bytes(b"b")  # read where there are no safetensors: another key
    assert recorded.folder_key(folder) != alone
    (folder / "model.safetensors").write_bytes(b"weights")
    key = recorded.folder_key(folder)
    (folder / "pytorch_model.bin").write_bytes(b"c")  # unread beside safetensors: the same key
    assert recorded.folder_key(folder) == key
    (folder / "model.safetensors").write_bytes(b"other")
    assert recorded.folder_key(folder) != key
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, name: str(folder / name) if repo == "org/model" else None)
    assert recorded._folder("org/model") == folder and recorded._folder("org/absent") is None


def test_the_stage_starts_the_workers_server_before_its_heavy_imports():
    """stages/extract.py's own imports (run before its main starts the server) and the server module import
    nothing heavy: the server's imports (torch, seconds) start at once. (The stages package, which `python -m`
    imports first, brings pydantic; the settings' choices of the cache come without its numpy and h5py.)"""
    from pipeline.decode import server, workers

    assert server.WORKERS_MODULE == workers.__name__
    code = ("import sys\nimport stages.extract\nfrom pipeline.embed.in_worker import worker_modules\n"
            f"worker_modules('some/model', 'auto'), worker_modules({str(ROOT)!r}, 'auto')\n"
            "heavy = ('torch', 'av', 'transformers', 'onnxruntime', 'pebble', 'numpy', 'h5py')\n"
            "assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr


# Stage one as `python -m stages.extract` runs it (device auto, on a machine without a GPU driver: argv[1] names a path
# that is not there), saying when it describes the encoder from its record, then what its own process imported (its
# workers are other processes)
STAGE = ("import runpy, sys\n"
         "from pipeline.embed import devices, recorded\n"
         "devices.GPU_DRIVER_PATHS = (sys.argv.pop(1),)\n"
         "describe = recorded.described\n"
         "recorded.described = lambda *a: print('described from the record') or describe(*a)\n"
         "runpy.run_module('stages.extract', run_name='__main__', alter_sys=True)\n"
         "heavy = [m for m in ('torch', 'onnxruntime', 'transformers') if m in sys.modules]\n"
         "assert not heavy, f'the stage imported {heavy}'\n")


def test_stage_one_on_the_cpu_never_imports_torch_in_its_own_process(tmp_path):
    """Where its decode workers embed, stage one's process decides the device, checks the record, describes the
    encoder and names the export's folder without torch, ONNX Runtime or transformers (seconds of imports that
    delayed the workers: bench/README.md, "Stage one's start-up"): on a first run (no record: a worker describes the
    encoder) and on the next (from the record the first one wrote)."""
    model = build_tiny_clip(tmp_path / "model", seed=7)
    for c in ("a", "b"):
        write_video(tmp_path / "data" / c / f"{c}.mp4", 12, seed=ord(c))
    params = committed_params(extract={"num_frames": 4, "device": "auto", "workers": 2})
    params["data"]["root"], params["encoder"]["model"] = "data", str(model)
    (tmp_path / PARAMS).write_text(yaml.safe_dump(params))
    for run in ("first", "recorded"):
        assert (recorded.verified(EncoderConfig(str(model))) is not None) == (run == "recorded")
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)
        out = subprocess.run([sys.executable, "-c", STAGE, str(tmp_path / "nvidiactl")], cwd=tmp_path,
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 0, out.stderr[-3000:]
        assert ("described from the record" in out.stdout) == (run == "recorded"), out.stdout
        assert "2 encoded, 0 reused, 0 skipped" in out.stdout, out.stdout


def test_an_engine_that_embeds_here_sets_torch_threads_and_puts_them_back_even_when_its_start_fails(tiny_clip,
                                                                                                     tmp_path,
                                                                                                     keep_threads):
    """Stage one's process sets torch's thread count only where it embeds (here: workers 0 on the CPU, one thread as
    a worker would), and puts the count back on close, or when its encoder cannot be loaded."""
    import torch

    from pipeline.decode.workers import PoolConfig
    from pipeline.errors import ConfigError
    from pipeline.extract.engines import LocalEngine
    from pipeline.threads import WORKER_THREADS

    torch.set_num_threads(3)
    with LocalEngine(EncoderConfig(tiny_clip, device="cpu"), PoolConfig(workers=0)) as engine:
        assert engine.encoder is not None and torch.get_num_threads() == WORKER_THREADS
    assert torch.get_num_threads() == 3
    with pytest.raises(ConfigError):
        LocalEngine(EncoderConfig(str(tmp_path / "no-model"), device="cpu"), PoolConfig(workers=0))
    assert torch.get_num_threads() == 3
