"""Stage one's engine on a Ray cluster (Ray Data): decode actors feed encoder actors, the driver writes the cache.

The same roles as on one machine (pipeline.extract.engines.LocalEngine): each decode actor reads videos through its own
DecodePool, so a video that crashes, hangs or exhausts its decoder costs only that video, never the Ray task
(Ray Data retries a dying task forever). Where the encoder runs on the CPU, that worker embeds the video too, on its
one thread, as the local engine's workers do (in_worker.decode_and_embed); on GPUs, encoder actors run the same
Embedder with the same fixed-shape passes. A video's embeddings do not depend on where or with what it was encoded.
Only the driver writes files.
Ray is optional (requirements-ray.txt): only pipeline.extract.runner imports this module, when extract.engine is ray.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields, replace

import numpy as np
import ray
from ray.data import ActorPoolStrategy, DataContext

import pipeline
from pipeline.extract.cache import KEY_ATTRS, clip_id
from pipeline.embed.encoder import Embedder, EncoderConfig
from pipeline.extract.engines import Result, embedding_pool
from pipeline.errors import BrokenInstall, ConfigError, Unusable, UserError, VideoError
from pipeline.decode.video import Clip
from pipeline.decode.hashing import Hashed
from pipeline.decode.workers import DecodePool, Loaded, PoolConfig, ReadConfig, load_video
from pipeline.threads import role_threads, set_torch_threads

VIDEOS_PER_BLOCK = 4  # rows per Ray Data block: the work a lost node takes with it, at most, per decode actor
# Columns a decode actor returns per video beside its frames, the Clip's own fields (and the Python type each comes back
# as, from its annotation; None: an array); the encoder actors pass them through.
_CLIP_COLUMNS = {f.name: {"float": float, "int": int, "bool": bool, "str": str}.get(f.type)
                 for f in fields(Clip) if f.name != "frames"}

_VIDEO_ERRORS = {kind.__name__: kind for kind in (VideoError, *VideoError.__subclasses__())}  # Unusable.kind by name


class RayEngine:
    """Connects to Ray (or starts it on this machine), asks a node that will encode what its encoder is, then runs
    videos through Ray Data: results() yields what LocalEngine.results does, in completion order.

    encoder_attrs, frame_spec and batch_size as on LocalEngine (the Engine interface: pipeline.extract.engines), from
    encoder and pool settings; address: extract.ray_address; threads: the encoders' thread count, THREADS["extract"]
    (what the local engine would encode with on a GPU: pipeline.threads), which every encoder actor uses.
    A context manager; shuts down a Ray it started.
    """

    def __init__(self, encoder: EncoderConfig, pool: PoolConfig, decode: Callable = load_video, address: str = ""):
        self.encoder_cfg, self.pool, self.decode = encoder, pool, decode
        self.threads = role_threads("extract")
        self._started = False
        if not ray.is_initialized():
            try:
                # joining a cluster ships the pipeline package to the nodes; on this machine they import it anyway
                runtime_env = {"py_modules": [pipeline]} if address else None
                ray.init(address=address or None, runtime_env=runtime_env, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
            except ConnectionError as e:
                raise ConfigError(f"cannot join the Ray cluster at extract.ray_address={address!r}: {e} "
                                  "(start it with `ray start --head`, or set extract.ray_address to '' to start "
                                  "Ray on this machine)") from None
            self._started = True
        try:
            resources = ray.cluster_resources()
            self.gpu = encoder.device != "cpu" and resources.get("GPU", 0) >= 1
            if encoder.device == "cuda" and not self.gpu:
                raise ConfigError("extract.device is cuda but the Ray cluster has no GPU: set it to auto or cpu")
            self.encoders = int(resources["GPU"]) if self.gpu else max(1, len([n for n in ray.nodes() if n["Alive"]]))
            probe = ray.remote(_describe).options(**self._encoder_resources())
            self.encoder_attrs, self.frame_spec, self.batch_size = ray.get(probe.remote(encoder, self.threads))
            # on the CPU the decode actors' workers embed: no encoder actors
            self.in_decoders = self.encoder_attrs["device_type"] == "cpu"
            # the decoders take the CPUs the encoder actors leave (Ray Data gives each actor one CPU)
            self.decoders = max(1, int(resources.get("CPU", 1)) - (0 if self.in_decoders else self.encoders))
        except BaseException:
            self.close()
            raise
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # stage one shows its own bar, per video
        ctx.print_on_execution_start = False
        ctx.target_max_block_size = 1  # each video its own block downstream: a slow one never holds back the rest
        ctx.raise_original_map_exception = True  # a failing actor's own exception, as RayTaskError.cause

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._started:
            ray.shutdown()
            self._started = False

    def _encoder_resources(self) -> dict:
        """One GPU per encoder actor on GPU clusters, else one CPU (its threads use the whole node); Ray Data gives
        a GPU actor one CPU too."""
        return {"num_gpus": 1} if self.gpu else {"num_cpus": 1}

    def results(self, files: list[str], reader: ReadConfig, known: set[str],
                segments: list[tuple[float, float] | None] | None = None,
                hashed: list[Hashed | None] | None = None) -> Iterator[Result]:
        """Decode and embed `files` (segments: per file, the (start, end) seconds to sample inside, or None) on the
        cluster; clips whose row key is in `known` are decoded (to hash them) but not encoded. Each index comes
        back once, even when a lost node's work is done again elsewhere. `hashed` (the driver's hashes) is not
        sent: a file's identity (device, inode) is this machine's, so each node hashes the bytes it decodes from
        its own open, as load_video does without one."""
        if not files:
            return
        segments = segments or [None] * len(files)
        items = [{"index": i, "file": f, "segment": np.array(s if s is not None else (np.nan, np.nan), np.float64)}
                 for i, (f, s) in enumerate(zip(files, segments))]
        ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // VIDEOS_PER_BLOCK)))
        ds = ds.map_batches(
            _Decoder, batch_size=1, batch_format="numpy", num_cpus=1,
            compute=ActorPoolStrategy(min_size=1, max_size=self.decoders),
            fn_constructor_kwargs=dict(pool=replace(self.pool, workers=1), reader=reader,
                                       known=ray.put(frozenset(known)), decode=self.decode,
                                       embed=self.encoder_cfg if self.in_decoders else None,
                                       attrs={**self.encoder_attrs, "batch_size": self.batch_size}))
        if not self.in_decoders:
            ds = ds.map_batches(
                _Encoder, batch_size=max(1, self.batch_size // reader.num_frames), batch_format="numpy",
                compute=ActorPoolStrategy(min_size=1, max_size=self.encoders),
                fn_constructor_kwargs=dict(cfg=self.encoder_cfg, threads=self.threads,
                                           attrs={**self.encoder_attrs, "batch_size": self.batch_size}),
                **self._encoder_resources())
        seen: set[int] = set()
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):  # as they come
                for row in range(len(batch["index"])):
                    index = int(batch["index"][row])
                    if index in seen:
                        continue
                    seen.add(index)
                    yield (index, _loaded(batch, row, files[index]),
                           batch["embeddings"][row] if batch["encode"][row] else None)
        except ray.exceptions.RayError as e:  # an actor that cannot start, a cluster gone: the parts written stay
            cause = _original(e)
            if not _users_to_fix(e, cause):
                raise  # a bug on the cluster (numpy, torch, this code): Ray's error keeps the remote traceback
            raise UserError(f"stage one on Ray failed ({len(seen)} of {len(files)} videos done, kept in parts): "
                            f"{_describe_error(cause)}") from None
        missing = len(files) - len(seen)
        assert missing == 0, f"Ray Data returned {len(seen)} of {len(files)} videos"


def _original(error: BaseException) -> BaseException:
    """The exception raised on the cluster that a Ray error carries (RayTaskError.cause, through nested tasks and
    actors; Ray Data hands over a map's own exception: raise_original_map_exception), else the Ray error itself."""
    while isinstance(error, ray.exceptions.RayTaskError) and error.cause is not None and error.cause is not error:
        error = error.cause
    return error


def _users_to_fix(error: BaseException, cause: BaseException) -> bool:
    """Whether a Ray failure is the user's to fix, and so one line: the cluster itself (an actor or node lost, not a
    task's exception), or a task that raised the project's UserError, the disk's OSError, or found the installation
    broken (BrokenInstall, ImportError)."""
    return (not isinstance(error, ray.exceptions.RayTaskError)
            or isinstance(cause, (UserError, OSError, BrokenInstall, ImportError)))


def _describe_error(error: BaseException) -> str:
    """`Type: first line of the message` (Ray adds its retry advice on later lines)."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _describe(cfg: EncoderConfig, threads: int) -> tuple[dict, object, int]:
    """Runs where an encoder actor would: what the encoder is there (its describe()), its frame spec, batch size."""
    set_torch_threads(threads)
    encoder, batch_size = cfg.load()
    return encoder.describe(), encoder.frame_spec(), batch_size


def _loaded(batch: dict[str, np.ndarray], row: int, file: str) -> Loaded | Unusable:
    """Row `row` of a result batch (the video `file`) as the reader's answer: a Loaded (its clip without frames)
    or an Unusable with the decode actor's reason."""
    if not batch["usable"][row]:
        return Unusable(file, str(batch["reason"][row]), _VIDEO_ERRORS.get(str(batch["kind"][row]), VideoError))
    clip = Clip(frames=None, **{name: batch[name][row] if kind is None else kind(batch[name][row])
                                for name, kind in _CLIP_COLUMNS.items()})
    return Loaded(int(batch["size"][row]), int(batch["mtime_ns"][row]), str(batch["digest"][row]), clip)


class _Decoder:
    """Decode actor: one video per call through its own DecodePool (one worker process, with the run's limits).

    Returns the video's columns: usable (bool), reason and kind (its Unusable's reason and error type's name, ""
    when usable), size, mtime_ns, digest, the clip's fields (_CLIP_COLUMNS), encode (False when its row key is in
    `known` or it is unusable) and either frames uint8 (1, F, H, W, 3) for the encoder actors or, with `embed` (an
    encoder on the CPU: the worker embeds, as the local engine's do), embeddings float32 (1, F, D); zeros where not
    to be encoded. attrs: the encoder the driver was told about (its describe() and batch size).
    """

    def __init__(self, pool: PoolConfig, reader: ReadConfig, known, decode: Callable, embed: EncoderConfig | None,
                 attrs: dict):
        self.reader, self.known, self.attrs, self.embeds = reader, ray.get(known), attrs, embed is not None
        if embed is None:
            self.pool = DecodePool(pool, decode)
        else:
            self.pool = embedding_pool(pool, embed, decode)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        (index,), (file,), (segment,) = batch["index"], batch["file"], batch["segment"]
        segment = None if np.isnan(segment[0]) else (float(segment[0]), float(segment[1]))
        out = next(self.pool.map([str(file)], self.reader, segments=[segment]))
        spec, n = self.reader.spec, self.reader.num_frames
        unusable = isinstance(out, Unusable)
        row = {"index": [index], "usable": [not unusable], "reason": [out.reason if unusable else ""],
               "kind": [out.kind.__name__ if unusable else ""]}
        if unusable:
            clip, loaded = Clip(None, np.zeros(n, np.int64), np.zeros(n), fps=0.0, frame_count=0, duration=0.0,
                                repeated=False), None
        else:
            clip, loaded = out.clip, out
        row |= {"size": [loaded.size if loaded else 0], "mtime_ns": [loaded.mtime_ns if loaded else 0],
                "digest": [loaded.digest if loaded else ""]}
        row |= {name: [getattr(clip, name)] for name in _CLIP_COLUMNS}
        encode = loaded is not None and clip_id(loaded.digest, segment) not in self.known
        row["encode"] = [encode]
        if self.embeds:
            if loaded is not None and loaded.fingerprint != self.attrs["encoder_fingerprint"]:
                _differ(["encoder_fingerprint"])
            row["embeddings"] = [loaded.embeddings if encode else
                                 np.zeros((n, self.attrs["embedding_dim"]), np.float32)]
        else:
            row["frames"] = [clip.frames if encode else np.zeros((n, spec.crop_h, spec.crop_w, 3), np.uint8)]
        return {k: np.asarray(v) for k, v in row.items()}


def _differ(keys: list[str]) -> None:
    """ConfigError: the encoder on this node differs from the run's in `keys` (the cache key's fields)."""
    raise ConfigError(f"the encoder on Ray node {ray.get_runtime_context().get_node_id()} differs from the one this "
                      f"run started with in {', '.join(keys)}: give every node the same model files, libraries and "
                      "kind of device")


class _Encoder:
    """Encoder actor: the same encoder and Embedder as on one machine; replaces each batch's frames with their
    embeddings float32 (B, F, D) (zeros where `encode` is False), with the driver's thread count. Refuses to run
    where the encoder differs from the one the driver was told about (another model, device type, library or batch
    size: the cache's key fields)."""

    def __init__(self, cfg: EncoderConfig, attrs: dict, threads: int):
        # the driver's count, not the node's cores (nor Ray's OMP_NUM_THREADS=1): on the CPU the thread count changes
        # how some sums round, and so some videos' embeddings by an ulp (docs/engines.md); set before the load, as an
        # ONNX Runtime session takes torch's count when it is made
        self.threads = threads
        set_torch_threads(threads)
        self.encoder, self.batch_size = cfg.load()
        mine = {**self.encoder.describe(), "batch_size": self.batch_size}
        differ = [k for k in KEY_ATTRS if k in attrs and mine.get(k) != attrs[k]]
        if differ:
            _differ(differ)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        set_torch_threads(self.threads)  # calls run on another thread than __init__ (MKL's count is per thread)
        frames = batch.pop("frames")
        out = np.zeros((*frames.shape[:2], self.encoder.dim), np.float32)  # (B, F, D)
        embedder = Embedder(self.encoder, self.batch_size)  # every pass padded to batch_size: results never
        done = []                                           # depend on which videos share a pass
        for row in np.flatnonzero(batch["encode"]):
            done += embedder.add(row, frames[row])
        for row, embeddings in done + embedder.flush():
            out[row] = embeddings
        batch["embeddings"] = out
        return batch
