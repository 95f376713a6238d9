"""Stage one's plan: what the sources already know of each clip, what must be hashed, and what decoded, in rounds.

Known (from the previous cache and the parts): a file's content by its (path, size, mtime), the failures remembered
under the run's limits, the row keys whose rows are still vouched for. Plan: the run's clips sorted by it into
remembered failures, contents known by their stat, and files to hash. Rounds: the clips whose content is known,
decoded so that each new content is decoded once, its repeats waiting for the first.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.data.discover import VideoFile
from pipeline.decode.hashing import Hashed
from pipeline.extract.cache import Cache, clip_id
from pipeline.extract.writer import VideoRow


@dataclass
class Work:
    """One clip of the run: its place in the listing (index), video and clip id (name); stat: its file's
    (size, mtime_ns) before it was read (None where stat failed: hashing says why); digest: its content hash once
    known ("" until then), with the Hashed this run's hashing gave (None where its stat vouched for it); alone: a
    repeat whose first failed, decoded for itself."""

    index: int
    video: VideoFile
    name: str
    stat: tuple[int, int] | None = None
    digest: str = ""
    hashed: Hashed | None = None
    alone: bool = False

    @property
    def key(self) -> str:
        """The row key its embeddings are stored under: content hash and segment (Cache.row_keys)."""
        return clip_id(self.digest, self.video.segment)

    def row(self) -> VideoRow:
        """Its row, reusing the embeddings of its content, with the stat its content was known by."""
        size, mtime_ns = (self.hashed.size, self.hashed.mtime_ns) if self.hashed else self.stat
        return VideoRow(self.video, size, mtime_ns, self.digest)


@dataclass
class Known:
    """What the sources (the previous cache, an interrupted run's parts) vouch for. by_stat: (path, size, mtime_ns)
    -> content hash; hashes: clip id -> the content hashes their rows give it; keys: their row keys; failed:
    (clip id, size, mtime_ns) -> (line, kind) of their skips remembered under the same decode limits."""

    by_stat: dict[tuple[str, int, int], str] = field(default_factory=dict)
    hashes: dict[str, set[str]] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)
    failed: dict[tuple[str, int, int], tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, sources: list[Cache], decode_limits: str, rehash: bool = False) -> Known:
        """What `sources` vouch for; a failure counts only where its source's decode_limits attribute is
        `decode_limits`, and none with rehash (the failed files are retried)."""
        known = cls(keys={k for src in sources for k in src.row_keys()})
        for src in sources:
            known.by_stat.update(((p, int(s), int(m)), h) for p, s, m, h in
                                 zip(src.paths, src.file_size, src.mtime_ns, src.content_hash))
            for name, digest in zip(src.clip_ids(), src.content_hash):
                known.hashes.setdefault(name, set()).add(digest)
            if not rehash and src.attrs.get("decode_limits") == decode_limits:  # skips are listed by clip id
                known.failed.update(((p, *src.skipped_stat[p]), (reason, src.skipped_kind.get(p, "")))
                                    for p, reason in src.skipped if p in src.skipped_stat)
        return known


class Plan:
    """The run's clips sorted before any decoding: remembered (Work, line, kind): failed before under the same
    limits and unchanged since; ready: content known from an unchanged (path, size, mtime), or hashed; to_hash:
    the others (all of them with rehash), in the listing's order. keys: the row keys still vouched for (a row whose
    file now hashes otherwise loses its key: that content is decoded and encoded again)."""

    def __init__(self, videos: list[VideoFile], sources: list[Cache], decode_limits: str, rehash: bool = False):
        self.known = Known.of(sources, decode_limits, rehash)
        self.keys = self.known.keys
        self.remembered: list[tuple[Work, str, str]] = []
        self.ready: list[Work] = []
        self.to_hash: list[Work] = []
        self.size = len(videos)
        for i, video in enumerate(videos):
            work = Work(i, video, clip_id(video.path, video.segment))
            try:
                st = video.file.stat()
            except OSError:
                self.to_hash.append(work)  # hashing says why
                continue
            work.stat = (st.st_size, st.st_mtime_ns)
            failure = self.known.failed.get((work.name, *work.stat))
            digest = self.known.by_stat.get((video.path, *work.stat))
            if failure is not None:
                self.remembered.append((work, *failure))
            elif digest is None or rehash:  # with rehash, the same size and mtime need not mean the same bytes
                self.to_hash.append(work)
            else:
                work.digest = digest
                self.ready.append(work)

    def files(self) -> list[str]:
        """The files to hash, each once (segments of one file share it), in order."""
        return list(dict.fromkeys(str(work.video.file) for work in self.to_hash))

    def hashed(self, work: Work, out: Hashed) -> None:
        """`work`'s file hashed now: its content is known, and the sources' rows of its clip id that give another
        hash no longer vouch for their key."""
        work.digest, work.hashed = out.digest, out
        self.ready.append(work)
        for old in self.known.hashes.get(work.name, ()):
            if old != out.digest:
                self.keys.discard(clip_id(old, work.video.segment))


class Rounds:
    """The clips whose content is known, decoded in rounds: one round for all, and another for the repeats whose
    first failed (each then decoded for itself: a crash or a timeout is not a property of the bytes) or changed
    between hashing and decoding. A content already written is reused; of the others, the first of each content is
    decoded and its repeats wait for it."""

    def __init__(self, ready: list[Work]):
        self.pending = list(ready)
        self._waiting: dict[str, list[Work]] = {}  # a row key being decoded -> the repeats of its content

    def next(self, written: set[str]) -> tuple[list[Work], list[Work]]:
        """The next round: (those whose row key is in `written`, reused; those to decode), in listing order."""
        reused, todo, self._waiting = [], [], {}
        for work in sorted(self.pending, key=lambda w: w.index):
            if work.key in written:
                reused.append(work)
            elif work.key in self._waiting and not work.alone:
                self._waiting[work.key].append(work)
            else:
                self._waiting.setdefault(work.key, [])
                todo.append(work)
        self.pending = []
        return reused, todo

    def repeats(self, work: Work) -> list[Work]:
        """The repeats that waited for `work` (once: they are then the caller's)."""
        return self._waiting.pop(work.key, [])

    def again(self, repeats: list[Work], alone: bool) -> None:
        """Decode `repeats` in the next round (alone: each for itself, none waiting for another)."""
        for work in repeats:
            work.alone = alone
        self.pending += repeats
