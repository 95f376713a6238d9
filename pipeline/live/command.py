"""`clip-har-predict --live SOURCE`: its options, and the wiring of a source, the engine and the printed answers."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import traceback
from dataclasses import replace

from pipeline.threads import sleeping_openmp

# The engine's threads, the decoding worker and the machine's other work share the cores: idle OpenMP threads sleep
# (pipeline.threads). libgomp reads it when torch loads: before the imports below.
sleeping_openmp()

from pipeline.decode.container import DecodeLimits  # noqa: E402
from pipeline.errors import ConfigError, UserError, VideoError, printable  # noqa: E402
from pipeline.live.engine import DEFAULT_EVERY, DEFAULT_RATE, LiveAnswer, LiveConfig, LiveEngine  # noqa: E402
from pipeline.live.source import PROTOCOLS, SourceConfig, SourceEnd, parse_source, run_source  # noqa: E402
from pipeline.tools.predict import answer_text  # noqa: E402

LIVE_HELP = (f"answer continuously for a camera (/dev/video0), a network stream ({', '.join(PROTOCOLS)}) or a "
             "file played at its own speed; Ctrl-C or SIGTERM ends it with a summary")


def parse_with_live(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """clip-har-predict's arguments with the --live options added; PATHs or --live, one of the two (else the
    usage error, exit 2)."""
    add_live_arguments(parser)
    args = parser.parse_args(argv)
    if bool(args.live) == bool(args.paths):
        parser.error("give video PATHs, or --live SOURCE (not both)")
    if args.live and args.segments:
        parser.error("--segments answers for windows of a file: --live answers every --every seconds already")
    if args.threshold is not None and not 0 <= args.threshold < 1:  # NaN fails too: never "always" or "never sure"
        parser.error(f"--threshold must be from 0 to under 1, got {args.threshold}")
    return args


def add_live_arguments(parser: argparse.ArgumentParser) -> None:
    """The --live options of clip-har-predict."""
    live = parser.add_argument_group("live (--live SOURCE instead of PATHs)")
    live.add_argument("--live", metavar="SOURCE", help=LIVE_HELP)
    live.add_argument("--every", type=float, default=DEFAULT_EVERY, metavar="S",
                      help=f"seconds of stream time between answers (default {DEFAULT_EVERY:g})")
    live.add_argument("--window", type=float, metavar="S", help="seconds of video each answer looks at (default: "
                      "the head's frames at --rate, within 2 to 8 s)")
    live.add_argument("--average", type=int, default=1, metavar="K", help="average the last K answers (default 1)")
    live.add_argument("--rate", type=float, default=DEFAULT_RATE, metavar="F",
                      help=f"frames embedded per second at most (default {DEFAULT_RATE:g})")
    live.add_argument("--stall-timeout", type=float, default=SourceConfig.stall_s, metavar="S",
                      help="a source silent this long is reconnected, then reported "
                      f"(default {SourceConfig.stall_s:g})")
    live.add_argument("--reconnects", type=int, default=SourceConfig.reconnects, metavar="N",
                      help=f"reconnections to a network stream (default {SourceConfig.reconnects})")


def answer_line(answer: LiveAnswer, as_json: bool) -> str:
    """One update: `<time> s<TAB><answer><TAB><probability>`, or the JSON object of LiveAnswer.as_json."""
    if as_json:
        return json.dumps(answer.as_json())
    return f"{answer.time:8.2f} s\t{answer_text(answer.label)}\t{answer.top_probability:.3f}"


def summary_line(engine: LiveEngine, end: SourceEnd | None) -> str:
    """The closing line: answers, frames embedded, dropped, latency p50 / p95, how the source ended."""
    s = engine.stats
    p50, p95 = s.latency_percentile(50), s.latency_percentile(95)
    latency = f"latency p50 {p50:.0f} ms, p95 {p95:.0f} ms" if p50 is not None else "no latency (no answer)"
    how = {"end": "the source ended", "stopped": "stopped", "failed": "failed"}[end.kind] if end else "stopped"
    dropped = s.dropped + (end.dropped if end else 0)
    return (f"live: {s.answers} answers, {s.embedded} frames embedded, {dropped} dropped, {latency}; {how}")


class _Stop(Exception):
    """SIGTERM, as Ctrl-C: the session ends cleanly."""


def run_live(args: argparse.Namespace, head, encoder, memory_mb: int, limits: DecodeLimits) -> int:
    """Run --live with a head and the encoder it names until the source ends or Ctrl-C / SIGTERM: 0 then (the
    summary on stderr), 1 when the source failed (its reason on stderr), 2 for a head made for another encoder, a
    setting or a source refused before starting. memory_mb, limits: the project's decode settings (stage one's
    extract.worker_memory_mb and max_* in a project folder, else the defaults), as for files."""
    from pipeline.extract.cache import random_encoder_note
    from pipeline.tools.predict import make_predictor

    try:
        if args.threshold is not None:  # --threshold as for files: the head's "not sure" cut-off replaced
            head.use_calibration(replace(head.calibration_, not_sure_below_chance_to_certain=args.threshold))
        predictor = make_predictor(head, encoder, None, limits=limits)  # no decode pool: the source decodes
        source = parse_source(args.live)
        config = LiveConfig(rate=args.rate, every=args.every, window=args.window, average=args.average,
                            limits=limits).checked()
        if args.stall_timeout <= 0 or args.reconnects < 0:
            raise ConfigError("--stall-timeout must be positive and --reconnects at least 0")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    source_config = SourceConfig(rate=config.rate, stall_s=args.stall_timeout, reconnects=args.reconnects,
                                 memory_mb=memory_mb, limits=limits)
    stop, ended = threading.Event(), []

    def note(text: str) -> None:
        print(f"note: {text}", file=sys.stderr, flush=True)

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second SIGTERM must not interrupt the ending
        raise _Stop()

    warning = random_encoder_note(head.meta_.features)
    if warning:
        note(warning)
    previous = signal.signal(signal.SIGTERM, terminate)
    engine = LiveEngine(predictor, config, name=source.name)

    def feed() -> None:
        try:
            ended.append(run_source(source, source_config, engine.push, stop, note))
        except VideoError as e:  # a frame the engine refuses (over the limits): the session ends with it
            ended.append(SourceEnd("failed", e.reason))
        except Exception as e:  # the reader thread's boundary: a bug still ends the session as a failure, with its
            traceback.print_exc()  # traceback (a traceback means a bug), never as "stopped" with exit 0
            ended.append(SourceEnd("failed", f"internal error ({type(e).__name__}): a bug, please report it"))

    reader = threading.Thread(target=feed, name="live-source", daemon=True)
    note(f"live: {source.name}: an answer every {config.every:g} s over the last {engine.window:g} s, at most "
         f"{config.rate:g} frames embedded a second; Ctrl-C to stop")
    try:
        with engine:
            reader.start()
            while reader.is_alive():
                _show(engine.get(timeout=0.2), args.json)
                if isinstance(engine.error, UserError):  # the head or a frame refused by the data: one line
                    stop.set()
                    reader.join()
                    ended[:] = [SourceEnd("failed", str(engine.error))]
                elif engine.error is not None:
                    raise engine.error
        while (answer := engine.get(timeout=0)) is not None:  # those of the last frames
            _show(answer, args.json)
    except (KeyboardInterrupt, _Stop):
        stop.set()
        reader.join()
        engine.close(drain=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
    end = ended[0] if ended else None
    print(summary_line(engine, end), file=sys.stderr, flush=True)
    if end is not None and end.kind == "failed":
        print(f"error: {source.name}: {printable(end.reason)}", file=sys.stderr, flush=True)
        return 1
    return 0


def _show(answer: LiveAnswer | None, as_json: bool) -> None:
    if answer is not None:
        print(answer_line(answer, as_json), flush=True)
