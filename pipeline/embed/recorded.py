"""An encoder's record: what a full load of a local model folder found, so that a decode worker opens its ONNX export
without transformers or the model (stage one's start-up), trusted only for the same bytes and libraries."""
from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.embed.config import check_settings, resolved
from pipeline.embed.hub import is_local

if TYPE_CHECKING:  # imported where used: stage one's process imports this module (likely) before its workers' server
    # starts, and should wait for nothing
    from pipeline.embed.encoder import Encoder, EncoderConfig

# A record is used only where its key is the key of the folder now: SHA-256 over FORMAT, the versions of the
# libraries a full load runs (they decide the weights as loaded, hence the fingerprint, and the processor's
# settings), the source of the modules that load and fingerprint, and the name and bytes of every file at the top of
# the model folder (what from_pretrained may read). So a record gives exactly what a full load would give, or is
# not used; it is written by a full load (remember), with the key taken before and after that load (equal: the
# files did not change meanwhile). One record per folder, under the exports' root (onnx_root()/encoders).
FORMAT = 1
LIBRARIES = ("torch", "transformers", "safetensors", "huggingface_hub")
SOURCES = ("encoder.py", "config.py", "hub.py")  # of pipeline/embed


class RecordedProcessor:
    """The image processor's settings as a record keeps them (its to_dict()): all a worker's encoder reads of it
    (Encoder.describe, frame_spec, normalize)."""

    def __init__(self, settings: dict):
        self._settings = settings
        self.image_mean, self.image_std = settings["image_mean"], settings["image_std"]
        self.rescale_factor = settings["rescale_factor"]

    def to_dict(self) -> dict:
        return json.loads(json.dumps(self._settings))  # a copy, as transformers' to_dict gives


@dataclass(frozen=True)
class DescribedDevice:
    """Where an encoder that only describes itself would run: the `type` of a torch.device ("cpu"), without importing
    torch (stage one's process on the CPU, whose workers embed, never imports it)."""

    type: str


@dataclass(frozen=True, eq=False)
class Verified:
    """A record that holds for its model folder's bytes now (record: as _read gives it), and its ONNX export, made and
    whole (export): what stage one checks once in its own process (verified) and hands to each decode worker, which
    then opens the export without hashing the folder or the export again (load)."""

    record: dict
    export: Path
    # the export's (device, inode, size, mtime, ctime) when checked: a write or a new file changes it (on a file
    # system with whole-second times, a rewrite of the same size within that second does not)
    identity: tuple[int, ...]


def _identity(path: Path) -> tuple[int, ...]:
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def verified(cfg: EncoderConfig, device: str = "cpu") -> Verified | None:
    """cfg.model's record and export where the backend is onnxruntime, the folder local (or the hub cache's snapshot),
    its key the record's and the export whole (size and CRC-32); else None (a full load is needed). The folder's
    SHA-256 and the export's CRC-32: about 0.7 s for ViT-B/32's 605 + 336 MB (bench/README.md); nothing is hashed
    where there is no record."""
    return _lookup(cfg, device, need_key=False)[1]


def _lookup(cfg: EncoderConfig, device: str, need_key: bool = True) -> tuple[str | None, Verified | None]:
    """(the folder's key, or None where there is no folder to record or need_key is False and there is no record;
    Verified or None), as verified."""
    backend = check_settings(device, cfg.preprocess, cfg.quantize, cfg.precision, cfg.backend)
    folder = _folder(cfg.model)
    if resolved(device, cfg.precision, backend, cfg.quantize)[2] != "onnxruntime" or folder is None:
        return None, None
    record = _read(folder)
    if record is None and not need_key:
        return None, None
    key = folder_key(folder)
    if key is None or record is None or record["key"] != key:
        return key, None
    from pipeline.embed.onnx_backend import export_name, model_dir, verified_export

    try:  # taken before the check: a write during it leaves another identity, which a worker then refuses
        identity = _identity(model_dir(record["fingerprint"]) / export_name(cfg.quantize))
    except OSError:
        return key, None
    path = verified_export(record["fingerprint"], cfg.quantize)  # None: not made yet, or damaged
    return key, None if path is None else Verified(record, path, identity)


def load(cfg: EncoderConfig, device: str = "cpu", checked: Verified | None = None) -> tuple[Encoder, int]:
    """cfg.load(device): from the record of cfg.model (a local folder) where one holds for the folder's bytes now,
    the backend is onnxruntime and its export is made and whole (the same encoder, without transformers or the
    model); else loaded in full, then recorded (remember). The same errors as cfg.load. checked: what verified gave
    for cfg in the run's process (its workers open that export without checking again)."""
    cfg.check_batch_size()
    key = None
    if checked is not None and not _unchanged(checked):  # written to since the run's process checked it
        checked = None
    if checked is None:
        key, checked = _lookup(cfg, device)
    if checked is None:
        loaded = cfg.load(device)
        remember(cfg, loaded[0], key)
        return loaded
    import torch

    from pipeline.embed.onnx_backend import ort_session

    encoder = described(cfg, checked, device, ort_session(checked.export, torch.get_num_threads()))
    return encoder, cfg.batch_for(encoder.device.type)


def _unchanged(checked: Verified) -> bool:
    try:
        return _identity(checked.export) == checked.identity
    except OSError:
        return False


def described(cfg: EncoderConfig, checked: Verified, device: str = "cpu", session=None) -> Encoder:
    """The encoder of a verified record: its session (None: one that only describes itself, its frames and batch,
    as stage one's process needs where its workers embed; its device a DescribedDevice, so torch is not imported)."""
    from pipeline.embed.encoder import Encoder

    backend = check_settings(device, cfg.preprocess, cfg.quantize, cfg.precision, cfg.backend)
    dev, precision, backend = resolved(device, cfg.precision, backend, cfg.quantize)
    if session is None:
        on = DescribedDevice(dev)
    else:
        import torch

        on = torch.device(dev)
    record = checked.record
    return Encoder(None, RecordedProcessor(record["processor"]), cfg.model, record["fingerprint"], record["dim"],
                   on, cfg.preprocess, cfg.quantize, precision, backend, session, record["random_weights"],
                   record["family"])


def remember(cfg: EncoderConfig, encoder: Encoder, key: str | None) -> None:
    """Record what a full load of cfg.model gave (`encoder`, with the onnxruntime backend), where `key` (folder_key
    before the load) is still the folder's key; nothing for a hub id or another backend. Written under a temporary
    name and renamed into place: a reader sees a whole record or none. A record that would not give the same
    description and frames is not written."""
    folder = _folder(cfg.model)
    if folder is None or key is None or encoder.backend != "onnxruntime":
        return
    settings = json.loads(json.dumps(encoder.processor.to_dict(), default=str))
    again = RecordedProcessor(settings)
    from pipeline.decode.frames import FrameSpec
    from pipeline.embed.encoder import pixel_config

    # the pixel settings (PIXEL_KEYS: the mean, std and rescale factor normalize reads among them) and the frames
    if (pixel_config(again) != pixel_config(encoder.processor)
            or FrameSpec.from_pixels(again.to_dict(), cfg.preprocess) != encoder.frame_spec()):
        return
    if folder_key(folder) != key:  # the folder changed during the load
        return
    record = {"format": FORMAT, "key": key, "files": _identities(folder), "fingerprint": encoder.fingerprint,
              "dim": encoder.dim, "family": encoder.family, "random_weights": encoder.random_weights,
              "processor": settings}
    path = _path(folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"tmp-{uuid.uuid4().hex}.json")
        tmp.write_text(json.dumps(record, sort_keys=True))
        os.replace(tmp, path)
    except OSError:  # a read-only cache folder: every run loads in full, as before
        pass


def likely(model: str) -> bool:
    """Whether `model`'s record is there and its files look unchanged (names, sizes, mtimes): a cheap hint for
    what the decode workers' server should import (load decides, by the bytes)."""
    folder = _folder(model)
    record = _read(folder) if folder is not None else None
    return record is not None and record.get("files") == _identities(folder)


def folder_key(folder: Path) -> str | None:
    """The record key of a model folder (FORMAT, LIBRARIES' versions, SOURCES, every top-level file's name and
    bytes), or None where a file cannot be read."""
    h = hashlib.sha256(json.dumps([FORMAT, [version(p) for p in LIBRARIES]]).encode())
    here = Path(__file__).parent
    try:
        for name in SOURCES:
            h.update((here / name).read_bytes())
        for path in _files(folder):
            h.update(json.dumps([path.name, path.stat().st_size]).encode())
            with open(path, "rb") as f:
                while chunk := f.read(1 << 24):
                    h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _folder(model: str) -> Path | None:
    """The folder from_pretrained reads `model` from without the network: the local folder it names (resolved), or
    for a hub id the local Hugging Face cache's snapshot of its main revision (as hub.load_pretrained tries first);
    None where there is none."""
    if not is_local(model):
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.errors import HFValidationError

        try:
            config = try_to_load_from_cache(model, "config.json")
        except HFValidationError:  # not a valid repo id
            return None
        return Path(config).parent if isinstance(config, str) else None
    folder = Path(model).expanduser().resolve()
    return folder if folder.is_dir() else None


# Weights in the other formats, which from_pretrained leaves unread where the folder holds safetensors (a clone of a
# hub repository holds all four: hashing them would cost seconds a run).
UNREAD_WEIGHTS = (".bin", ".h5", ".msgpack")


def _files(folder: Path) -> list[Path]:
    """The folder's files the key covers: every file at its top, less UNREAD_WEIGHTS beside safetensors."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if any(p.name.startswith("model") and p.name.endswith((".safetensors", ".safetensors.index.json"))
           for p in files):
        files = [p for p in files if not p.name.endswith(UNREAD_WEIGHTS)]
    return files


def _identities(folder: Path) -> list | None:
    try:
        return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in _files(folder)]
    except OSError:
        return None


def _path(folder: Path) -> Path:
    from pipeline.embed.onnx_backend import onnx_root

    return onnx_root() / "encoders" / f"{hashlib.sha256(str(folder).encode()).hexdigest()[:32]}.json"


def _read(folder: Path) -> dict | None:
    try:
        record = json.loads(_path(folder).read_text())
    except (OSError, ValueError):
        return None
    fields = {"key": str, "fingerprint": str, "dim": int, "family": str, "random_weights": bool, "processor": dict}
    if not (isinstance(record, dict) and record.get("format") == FORMAT
            and all(type(record.get(k)) is t for k, t in fields.items())
            and re.fullmatch(r"[0-9a-f]{16}", record["fingerprint"])):  # it names the export's folder
        return None  # not one this code wrote: ignored (a full load writes it again)
    return record
