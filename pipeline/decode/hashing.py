"""A video file's identity and the SHA-256 of its bytes, read through one handle within a time bound, in this process
(reading bytes parses nothing, so an untrusted file needs no worker process here): what stage one keys content by."""
from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

from pipeline.decode.container import content_hash, open_regular
from pipeline.errors import Unusable, VideoError
from pipeline.threads import cores


# What tells one version of a file from another without reading it: (st_dev, st_ino, st_size, st_mtime_ns). A
# file renamed over another (rsync) is another inode; one written in place has another size or mtime (unless the
# writer sets the old mtime back on a same-size rewrite: load_video hashes the bytes again after decoding for that).
Identity = tuple[int, int, int, int]


def identity(st: os.stat_result) -> Identity:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class Hashed:
    """A file hashed: the identity of the handle its bytes were read from, and their SHA-256 (hex)."""

    identity: Identity
    digest: str

    @property
    def size(self) -> int:
        return self.identity[2]

    @property
    def mtime_ns(self) -> int:
        return self.identity[3]


class HashTimeout(VideoError):
    """Hashing a file took longer than its bound (extract.hash_timeout_s). Stage one remembers it as any failure,
    under the limits it had: the same file is not read again until it changes or the bound does."""


class _Deadline:
    """A binary file that raises HashTimeout from readinto() once `seconds` have passed: what hashlib.file_digest
    reads, so a 100 GiB hole is cut at the bound instead of being read to the end."""

    def __init__(self, fh, file: str, seconds: float):
        self.fh, self.file, self.seconds = fh, file, seconds
        self.deadline = time.monotonic() + seconds

    def seek(self, *args) -> int:
        return self.fh.seek(*args)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if time.monotonic() > self.deadline:
            raise HashTimeout(self.file, f"hashing took longer than {self.seconds:g} s (extract.hash_timeout_s)")
        return self.fh.readinto(buffer)


def hash_video(file: str, timeout_s: float) -> Hashed:
    """SHA-256 of the file's bytes read through one handle, within timeout_s (HashTimeout past it); VideoError when
    the file changed while it was read (its handle's identity before and after differ, or the path names another
    file by then)."""
    with open_regular(file) as fh:
        before = identity(os.fstat(fh.fileno()))
        digest = content_hash(file, _Deadline(fh, file, timeout_s))
        after = identity(os.fstat(fh.fileno()))
    if before != after or identity(os.stat(file)) != after:
        raise VideoError(file, "changed while it was being hashed (written to, or renamed over): run stage one "
                         "again once it is complete")
    return Hashed(after, digest)


def hash_videos(files: Iterable[str], timeout_s: float, threads: int | None = None
                ) -> Iterator[Hashed | Unusable]:
    """hash_video for every file, in order, `threads` at a time (default: one per core; SHA-256 releases the GIL),
    in this process: reading bytes parses nothing, so an untrusted file needs no worker process here. Yields per
    file a Hashed, or an Unusable with the reason (a HashTimeout's reason names extract.hash_timeout_s)."""
    def one(file: str) -> Hashed | Unusable:
        try:
            return hash_video(file, timeout_s)
        except VideoError as e:  # a HashTimeout among them
            return Unusable(file, e.reason, type(e))
        except OSError as e:
            return unreadable(file, e)

    files = iter(files)
    with ThreadPoolExecutor(threads or cores()) as ex:
        while chunk := list(islice(files, 1024)):  # a bounded number of futures at a time, whatever the dataset
            yield from ex.map(one, chunk)


def unreadable(file: str, e: OSError) -> Unusable:
    """Why `file` could not be read, from the OSError (its text names an absolute path: left out, the file's own name
    is the record's)."""
    return Unusable(file, f"cannot be read ({e.strerror or type(e).__name__})")
