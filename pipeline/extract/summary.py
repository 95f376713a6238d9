"""What a stage-one run did, as its terminal shows it: encoded, reused and skipped clips, and why (ExtractSummary)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pipeline.decode.sampling import Sampling
from pipeline.errors import printable

SHOWN_SKIPS = 10  # skip lines the terminal gets; the full list is in the skipped list beside the cache
SHOWN_REASONS = 5  # reasons counted on the terminal, the most frequent first


@dataclass
class ExtractSummary:
    """What a run did: videos encoded now, reused from earlier work, and skipped with their reasons.

    skipped: (clip id, line) pairs, the line naming the clip and why, in the order a person reads them (what the
    data listing gave, in its order, then the rest by name); kinds counts them by reason.
    """

    cache_path: str
    encoded: int = 0
    reused: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""  # why a previous cache was not reused, if it was not
    skipped_stat: dict[str, tuple[int, int]] = field(default_factory=dict)  # (size, mtime_ns) of skipped files
    skipped_kind: dict[str, str] = field(default_factory=dict)  # clip id -> the error type's name (Cache.skipped_kind)
    remembered: int = 0  # skipped because they failed before and are unchanged (not read again)
    damaged: int = 0  # decoded in this run with packets that failed to decode (Clip.decode_errors > 0)
    capped: int = 0  # sampled by frame rate, but longer than extract.max_frames at that rate: max_frames spread over
    sampling: Sampling = field(default_factory=Sampling)  # how the clips were sampled (for the capped line)
    kinds: Counter = field(default_factory=Counter)  # skips by reason
    skipped_list: str = ""  # the file listing every skip (SKIPPED_LIST beside the cache), once written
    internal: list[tuple[str, str]] = field(default_factory=list)  # (clip id, traceback): skips by a bug of ours

    def skip(self, name: str, line: str, why: str, kind: str = "", stat: tuple[int, int] | None = None) -> None:
        """One more skipped clip: its clip id and line, counted under `why`; kind: the error type's name ("" when
        unknown); stat: its file's (size, mtime_ns) before it was read, where the failure is remembered (the file is
        not read again while unchanged)."""
        self.skipped.append((name, line))
        self.kinds[why] += 1
        if kind:
            self.skipped_kind[name] = kind
        if stat is not None:
            self.skipped_stat[name] = stat

    def decoded(self, clip) -> None:
        """Count a clip decoded in this run: damaged (packets that failed to decode), capped (sampled by frame rate,
        longer than num_frames at that rate: its frames spaced wider than 1 / fps)."""
        self.damaged += clip.decode_errors > 0
        span = float(clip.timestamps[-1] - clip.timestamps[0]) if clip.sampled > 1 else 0.0
        fps, frames = self.sampling.fps, self.sampling.num_frames
        self.capped += bool(fps) and bool(clip.sampled == frames) and span * fps > frames - 0.5

    def __str__(self) -> str:
        remembered = (f" ({self.remembered} unchanged since they failed: not read again; extract.rehash: true "
                      "retries them)") if self.remembered else ""
        lines = [f"{printable(self.cache_path)}: {self.encoded} encoded, {self.reused} reused, "
                 f"{len(self.skipped)} skipped{remembered} in {self.seconds:.1f} s"]
        lines += [f"  note: {printable(self.note)}"] if self.note else []
        if self.capped:
            lines.append(f"  {self.capped} clips are longer than {self.sampling.num_frames} frames at "
                         f"{self.sampling.fps:g} a second: each got {self.sampling.num_frames} frames spread over it "
                         "(extract.max_frames)")
        if self.damaged:
            lines.append(f"  {self.damaged} videos had packets that failed to decode (decode_errors in the cache; "
                         "extract.max_damaged)")
        if len(self.skipped) > SHOWN_SKIPS:
            lines += [f"  skipped, by reason: {n:,} {printable(why)}"
                      for why, n in self.kinds.most_common(SHOWN_REASONS)]
        lines += [f"  skipped {printable(line)}" for _, line in self.skipped[:SHOWN_SKIPS]]
        if len(self.skipped) > SHOWN_SKIPS:
            where = printable(self.skipped_list) if self.skipped_list else "the cache's skipped table"
            lines.append(f"  ... and {len(self.skipped) - SHOWN_SKIPS:,} more: {where} lists them all")
        if self.internal:  # counted apart: not the videos' fault, and retried by the next run
            name, trace = self.internal[0]
            lines.append(f"  {len(self.internal)} of the skipped hit an internal error, a bug in clip-har rather than "
                         f"the videos (they are retried by the next run); please report it with the traceback of "
                         f"the first, {printable(name)}:")
            lines += [f"    {printable(line)}" for line in trace.rstrip().splitlines()]
        return "\n".join(lines)
