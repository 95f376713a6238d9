"""What stage one may reuse: the previous cache and an interrupted run's parts, made the same way, finite rows only."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import CacheError, printable
from pipeline.extract.cache import KEY_ATTRS, Cache, cache_attrs, open_cache


def reusable(cache_path: Path, parts_dir: Path, attrs: dict) -> tuple[list[Cache], str]:
    """The previous cache and the parts left by an interrupted run, where made with the same encoder and sampling
    (KEY_ATTRS equal to `attrs`), opened lazily (metadata in memory, embeddings left in their files), without
    their rows whose embeddings are not finite; and a note saying what was not reused and why ("" if all was).

    Each is opened through open_cache, the door that refuses a crafted file (cache_door). Other parts (or unusable
    ones) are deleted; a previous cache made otherwise or unusable is ignored, replaced at the end of the run.
    """
    found, notes = [], []
    if cache_path.is_file():
        try:
            previous = open_cache(cache_path)
        except CacheError as e:
            previous = None
            notes.append(f"the previous cache cannot be used ({e}): everything re-encoded")
        differ = [k for k in KEY_ATTRS if previous is not None and previous.attrs.get(k) != attrs[k]]
        if differ:
            notes.append(f"the previous cache was made with other {', '.join(differ)}: everything re-encoded")
        elif previous is not None:
            try:
                found.append(finite_only(previous, notes))
            except (CacheError, OSError) as e:  # replaced since it was opened, or a block that cannot be read
                notes.append(f"the previous cache cannot be read ({printable(e)}): everything re-encoded")
    for part_file in sorted(parts_dir.glob("part-*.h5")):
        try:
            part = open_cache(part_file)
            usable = all(part.attrs.get(k) == attrs[k] for k in KEY_ATTRS)
            part = finite_only(part, notes) if usable else None
        except (CacheError, OSError):
            part = None
        if part is not None:
            found.append(part)
        else:
            part_file.unlink()
    return found, "; ".join(notes)


EXTENDED_ATTRS = ("backend", "encoder_model", "device_type", "quantize", "precision")  # EncoderConfig.extending's


def previous_attrs(cache_path: Path) -> dict:
    """The EXTENDED_ATTRS of the cache at `cache_path`, {} where there is none or it cannot be read: what backend
    auto extends (EncoderConfig.extending), compared with strings, never trusted further (the run opens the cache
    through its door, open_cache, afterwards)."""
    attrs = cache_attrs(cache_path)
    return {k: attrs[k] for k in EXTENDED_ATTRS if k in attrs}


def finite_only(source: Cache, notes: list[str]) -> Cache:
    """`source` without its rows whose embeddings are not finite (NaN, infinite, huge: cache_door.finite_rows),
    which are then encoded again whatever extract.rehash says; a note counting them is added to `notes`. Reads
    every row once."""
    good = source.embeddings.finite()
    if good.all():
        return source
    notes.append(f"{int((~good).sum())} rows of {printable(source.embeddings.path)} held embeddings that are not "
                 "finite: encoded again")
    return source.take(np.flatnonzero(good))
