"""The writer: stage one's finished videos into part files, and the cache joined from the parts and the previous one.

A part file (`<cache>.parts/part-<random>.h5`) holds up to `shard_size` newly encoded clips and is written
atomically: the work a killed run can lose is at most one part's. The new cache is streamed from its sources
(previous cache and parts) row block by row block, so memory does not grow with the number of videos.
"""
from __future__ import annotations

import dataclasses
import json
import os
import uuid
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

from pipeline.extract.cache import (BLOCK_ROWS, COLUMNS, FRAMES, Cache, clip_id, gather_rows, open_cache, write_cache,
                                    write_cache_blocks)
from pipeline.data.discover import VideoFile
from pipeline.csvsafe import cell
from pipeline.errors import printable
from pipeline.decode.sampling import Sampling
from pipeline.decode.video import Clip

VERSIONS = ("torch", "transformers", "av", "h5py", "numpy")  # the packages whose versions a cache records


def cache_attributes(encoder_attrs: dict, sampling: Sampling, batch_size: int, data_root: str, dtype: str,
                     annotations: str, limits: dict[str, float]) -> dict:
    """The attributes of the cache a run writes (docs/stage-one.md): the encoder's (its describe()), the
    sampling's (Sampling.attrs), frames per forward pass, the data root the paths are relative to, the embeddings'
    storage dtype, the annotation file ("" for folders), decode_limits (`limits`: the settings a failure is
    remembered under, as sorted JSON) and the versions of the packages that made the numbers (onnxruntime's when
    it ran)."""
    packages = VERSIONS + (("onnxruntime",) if encoder_attrs["backend"] == "onnxruntime" else ())
    return {**encoder_attrs, **sampling.attrs(), "batch_size": batch_size, "data_root": data_root, "dtype": dtype,
            "annotations": annotations,
            "decode_limits": json.dumps({k: float(v) for k, v in limits.items()}, sort_keys=True),
            "versions": json.dumps({p: version(p) for p in packages})}


@dataclass
class VideoRow:
    """One usable video, a row of the cache to be: its file's size, mtime and content hash; `clip` (indices,
    times) until its part is written."""

    video: VideoFile
    size: int
    mtime_ns: int
    digest: str
    clip: Clip | None = None

    @property
    def key(self) -> str:
        """The row key its embeddings are stored under (Cache.row_keys): content hash and segment."""
        return clip_id(self.digest, self.video.segment)


class PartWriter:
    """The part writer: finished videos with their embeddings (F, D) go into part files of `shard_size` videos,
    each written atomically (`<cache>.parts/part-<random>.h5`); `parts` lists what was written, opened lazily
    (their embeddings stay in the files: memory holds at most one part's)."""

    def __init__(self, parts_dir: Path, template: Cache, shard_size: int):
        self.parts_dir, self.template, self.shard_size = parts_dir, template, shard_size
        self.parts: list[Cache] = []
        self._rows: list[tuple[VideoRow, np.ndarray]] = []

    def add(self, item: VideoRow, embeddings: np.ndarray) -> None:
        self._rows.append((item, embeddings))
        if len(self._rows) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write what is waiting as one part file."""
        if not self._rows:
            return
        part = part_cache(self._rows, self.template)
        part_file = self.parts_dir / f"part-{uuid.uuid4().hex}.h5"
        write_cache(part_file, part)
        self.parts.append(open_cache(part_file))
        for item, _ in self._rows:
            item.clip = None  # the part holds it now
        self._rows.clear()


def part_cache(rows: list[tuple[VideoRow, np.ndarray]], template: Cache) -> Cache:
    """Finished videos and their embeddings (n_v, D) as a Cache (rows keyed by content hash), ready to be a part
    file: each column filled from its source (cache.COLUMNS); a clip of fewer than the template's F frames (sampled by
    frame rate) is padded with each column's pad value."""
    items, frames = [it for it, _ in rows], template.embeddings.shape[1]
    values = listing_columns(items, template.class_names)
    for name, col in COLUMNS.items():
        if col.source == "embeddings":
            values[name] = np.stack([_padded(emb, frames, col.pad) for _, emb in rows]).astype(col.dtype)
        elif col.source == "clip" and FRAMES in col.axes:
            values[name] = np.stack([_padded(getattr(it.clip, col.clip), frames, col.pad) for it in items]).astype(
                col.dtype)
        elif col.source == "clip":
            values[name] = np.array([getattr(it.clip, col.clip) for it in items], col.dtype)
        elif col.source == "content":
            values[name] = np.array([it.digest for it in items], object)
    return Cache(**values, class_names=list(template.class_names), attrs=dict(template.attrs))


def _padded(values: np.ndarray, frames: int, pad) -> np.ndarray:
    """A clip's per-frame values (n, ...) as (frames, ...), `pad` after its own n (n <= frames); as given when full."""
    if len(values) == frames:
        return values
    assert len(values) < frames, f"{len(values)} frames sampled, the cache holds {frames}"
    out = np.full((frames, *values.shape[1:]), pad, np.result_type(values.dtype, np.asarray(pad).dtype))
    out[:len(values)] = values
    return out


def assemble_cache(cache_path: Path, kept: list[VideoRow], sources: list[Cache], template: Cache, skipped: list,
                   skipped_stat: dict, skipped_kind: dict) -> None:
    """Write the new cache at cache_path: one row per usable video in path order, its embeddings and frame data
    copied by row key (content hash and segment) from `sources` (previous cache and parts, the last holding a key
    wins), BLOCK_ROWS rows at a time; the listing's columns (path, label, stat, annotation) are this run's."""
    where = {k: (s, i) for s, src in enumerate(sources) for i, k in enumerate(src.row_keys())}
    source, row = np.array([where[it.key] for it in kept], np.int64).reshape(-1, 2).T  # (V,) each
    out = dataclasses.replace(template, skipped=list(skipped), skipped_stat=dict(skipped_stat),
                              skipped_kind=dict(skipped_kind))

    def blocks():
        for start in range(0, len(kept), BLOCK_ROWS):
            at = slice(start, start + BLOCK_ROWS)
            block = gather_rows(sources, source[at], row[at], out)
            for name, values in listing_columns(kept[at], template.class_names).items():
                setattr(block, name, values)
            yield block

    write_cache_blocks(cache_path, out, len(kept), blocks())


def listing_columns(items: list[VideoRow], class_names: list[str]) -> dict[str, np.ndarray]:
    """The columns this run's listing gives (source "listing" in cache.COLUMNS), for `items`: paths str, labels
    int64 into class_names, file_size and mtime_ns int64, segment float64 (V, 2) (NaN: the whole file), group and
    annotated part str; all (V,) but segment."""
    label_of = {name: c for c, name in enumerate(class_names)}
    values = {"paths": [it.video.path for it in items], "labels": [label_of[it.video.label] for it in items],
              "file_size": [it.size for it in items], "mtime_ns": [it.mtime_ns for it in items],
              "segment": [it.video.segment or (np.nan, np.nan) for it in items],
              "group": [it.video.group for it in items], "annotated_part": [it.video.part for it in items]}
    assert set(values) == {n for n, c in COLUMNS.items() if c.source == "listing"}, "cache.COLUMNS' listing columns"
    return {name: np.array(v, object if COLUMNS[name].text else COLUMNS[name].dtype).reshape(
        COLUMNS[name].shape(len(items), 0, 0)) for name, v in values.items()}


def write_skipped_list(path: Path, skipped: list[tuple[str, str]]) -> Path:
    """Every skip as a row of a TSV file (`clip` and `reason`: the clip id and the line naming it and why, both
    escaped by printable, so a name can neither add a row nor a column), written beside and renamed into `path`;
    returns `path`. What the terminal's summary shortens."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("clip\treason\n")
        f.writelines(f"{cell(printable(name))}\t{cell(printable(line))}\n" for name, line in skipped)  # csvsafe
    os.replace(tmp, path)
    return path
