"""The command lines (clip-har-inspect, clip-har-tiny-clip, clip-har-predict): arguments in, the library's work out.

clip-har-search's is in pipeline.tools.search_cli."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pipeline.extract.cache import random_encoder_note
from pipeline.embed.choices import DEVICES
from pipeline.errors import HeadError, UserError, VideoError, printable
from pipeline.tools.inspector import (TOP, find_outliers, frame_report, group_leakage, load,
                                nearest_neighbors, plot_projection, project_2d, split_file, summarize)
from pipeline.paths import CACHE_PATH, TINY_CLIP
from pipeline.tools.inspect_text import (format_frames, format_group_leakage, format_neighbors, format_outliers,
                                         format_skipped, format_summary, plural)
from pipeline.heads.split_file import read_split
from pipeline.progress import progress_bar

INSPECT_HELP = """\
Look inside a feature cache: summary, one video's frames, neighbours, a 2-D map, likely mislabels and leakage.

    clip-har-inspect [CACHE] [--json] [--video PATH] [--neighbors PATH -k 5] [--skipped]
                     [--plot FILE.png [--method pca|tsne]] [--outliers [--top N]] [--split CSV]

(or python -m pipeline.tools.inspector ...). CACHE defaults to cache/features.h5; the split defaults to split.csv beside
it, when it exists. The cache is opened lazily: embeddings are read a block of videos at a time, so memory grows
with V x D, not V x F x D.
"""


def inspect(argv: list[str] | None = None) -> int:
    """`clip-har-inspect`: print what the options ask of a cache, as text or JSON; 1 with one line on stderr when
    the cache, the split or an option cannot be used."""
    parser = argparse.ArgumentParser(description=INSPECT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cache", nargs="?", default=CACHE_PATH)
    parser.add_argument("--split", help="split CSV (default: split.csv beside the cache, if present)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--video", metavar="PATH", help="one video's frames (path as stored in the cache)")
    parser.add_argument("--neighbors", metavar="PATH", help="nearest videos to PATH")
    parser.add_argument("-k", type=int, default=5, help="how many neighbours (default 5)")
    parser.add_argument("--plot", metavar="FILE.png", help="write a 2-D map of all videos")
    parser.add_argument("--method", choices=("pca", "tsne"), default="pca", help="projection for --plot")
    parser.add_argument("--outliers", action="store_true", help="likely mislabelled videos and split leakage")
    parser.add_argument("--top", type=int, default=TOP, metavar="N",
                        help=f"--outliers lists at most N mislabelled videos and N near-duplicate pairs, and counts "
                             f"them all (default {TOP})")
    parser.add_argument("--skipped", action="store_true", help="every video stage one skipped, with the reason")
    args = parser.parse_args(argv)
    try:
        cache, parts = load(args.cache, args.split)
        if args.video:
            result = frame_report(cache, args.video)
            text = format_frames(result)
        elif args.neighbors:
            result = nearest_neighbors(cache, args.neighbors, args.k)
            text = format_neighbors(result)
        elif args.plot:
            coords = project_2d(cache, args.method)
            note = random_encoder_note(cache.attrs)
            plot_projection(cache, coords, args.plot, f"{printable(args.cache)}: {plural(len(cache), 'video')}, "
                            f"{args.method.upper()}" + (f"\n{note}" if note else ""), args.method)
            result = {"plot": args.plot, "method": args.method, "videos": len(cache)}
            text = f"wrote {printable(args.plot)} ({args.method.upper()} of {plural(len(cache), 'video')})"
        elif args.outliers:
            result = find_outliers(cache, parts, top=args.top)
            text = format_outliers(result, parts is not None)
            if parts is not None:
                groups = read_split(split_file(args.cache, args.split), cache.clip_ids(), "group")
                result["groups"] = group_leakage(cache, parts, groups, result["near_duplicates"])
                text += "\n" + format_group_leakage(result["groups"], result["near_duplicates_found"]["capped"])
        elif args.skipped:
            result = [{"path": p, "reason": r} for p, r in cache.skipped]
            text = format_skipped(result)
        else:
            result = summarize(cache, args.cache, parts)
            text = format_summary(result)
    except (UserError, OSError) as e:  # the cache, the split, an option, or the disk: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    warning = random_encoder_note(cache.attrs)  # every output of the inspector shows numbers made by the encoder
    if warning and args.json and isinstance(result, dict):
        result = {"warning": warning, **result}
    elif warning and args.json:  # a JSON list keeps its shape: the note goes to stderr
        print(f"note: {warning}", file=sys.stderr)
    elif warning:
        text = f"*** {warning} ***\n{text}\n*** {warning} ***"
    return _print(json.dumps(result, indent=2) if args.json else text)


def tiny_clip(argv: list[str] | None = None) -> int:
    """`clip-har-tiny-clip`: write a randomly initialised CLIP, SigLIP or SigLIP 2 (no download) and say how to use
    it; 1 with one line on stderr when the folder cannot be written."""
    from pipeline.embed.tiny_clip import TINY_FAMILIES  # (no transformers import: that module imports it where used)

    parser = argparse.ArgumentParser(description="Write a randomly initialised CLIP, SigLIP or SigLIP 2 (no download "
                                                 "needed).")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--tiny", metavar="DIR", help=f"a tiny one, for tests and offline demos (e.g. {TINY_CLIP})")
    group.add_argument("--vit-b-32", "--full-size", metavar="DIR", dest="full_size",
                       help="the full architecture (CLIP ViT-B/32, SigLIP / SigLIP 2 base 224), for benchmarks")
    parser.add_argument("--family", choices=TINY_FAMILIES, default="clip",
                        help="clip (default), siglip, or siglip2 (fixed resolution: google/siglip2-base-patch16-224)")
    args = parser.parse_args(argv)
    from pipeline.embed.tiny_clip import build_tiny_clip  # transformers: seconds, only once the arguments are good

    out = args.tiny or args.full_size
    try:
        path = build_tiny_clip(out, full_size=args.full_size is not None, family=args.family)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    name = {"clip": "CLIP", "siglip": "SigLIP", "siglip2": "SigLIP 2"}[args.family]
    return _print(f"random {name} written to {path} (its embeddings mean nothing: tests, demos and benchmarks only)\n"
                  f"next: dvc exp run -S encoder.model={out}   "
                  "(or set encoder.model in params.yaml, then dvc repro)")


def _print(text: str) -> int:
    """Print the command's output; 0, also when the reader has gone (piped into head and the like: stop quietly)."""
    try:
        print(text)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")
    return 0


PREDICT_HELP = """\
What the person in each video is doing: a trained head over the full encoder, exactly as stage one encodes.

    clip-har-predict PATH... [--head {heads}] [--json] [--threshold F]
                             [--segments WINDOW STRIDE] [--device auto|cpu|cuda] [-v]
    clip-har-predict --live SOURCE [--every S] [--window S] [--average K]  (or python -m pipeline.tools.predict)

PATH is a video or a folder (searched recursively). Prints a header line, then one tab-separated line per video:
path, answer (the top class, or "not sure" under the head's cut-off; a class itself called "not sure" is shown
quoted), top class, probability; or a JSON list, where "answer" is the class or null and "sure" says which. Names
are escaped (a tab, a newline, an escape sequence as \\t, \\n, \\x1b): one line per video.
Heads on a random encoder (python -m pipeline.embed.encoder) say so on stderr and in each JSON entry ("warning").
stderr is quiet (no progress bars, no FFmpeg warnings) unless -v is given. A file that fails, for any reason, is
one error line on stderr (and an "error" entry in the JSON) and the others are still predicted; the exit status
is 1 when any file failed, or when the paths hold no video. --segments adds one indented line per sliding window
(start-end seconds, answer, top class, probability); a video that would need more than 200 windows gets a wider
stride (said on stderr and in "segments_note"); when the windows cannot be made at all the whole-video answer is
still printed, the reason goes to stderr (and "segments_error"), and the exit status is 1. In a project folder,
stage one's decode limits apply (params.yaml: extract.max_*, video_timeout_s, worker_memory_mb).
"""
TSV_HEADER = ("path", "answer", "class", "probability")  # the columns of the text output, printed first


def predict(argv: list[str] | None = None) -> int:
    """`clip-har-predict`: the answer for each video the paths name, as lines or JSON; 1 when a file failed, 2 when
    the head or its encoder cannot be used."""
    from pipeline.live.command import parse_with_live, run_live  # first: it sets OMP_WAIT_POLICY before torch loads
    from pipeline.tools.predict import encoder_for, make_predictor  # torch and transformers: seconds, only for this
    from pipeline.heads.kinds import HEADS, load_head
    from pipeline.threads import set_threads
    from pipeline.extract.project import DecodePool, project_decoding

    parser = argparse.ArgumentParser(description=PREDICT_HELP.format(heads="|".join(HEADS)),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", metavar="PATH", help="video files or folders")
    parser.add_argument("--head", choices=sorted(HEADS), default="linear")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of lines (--live: JSON lines)")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--segments", nargs=2, type=float, metavar=("WINDOW", "STRIDE"),
                        help="also answer for sliding windows of WINDOW seconds every STRIDE seconds")
    parser.add_argument("--threshold", type=float, metavar="F",
                        help='answer "not sure" when the top probability is under F of the way from chance to '
                             "certainty (default: the head's, calibration.not_sure_below_chance_to_certain)")
    parser.add_argument("-v", "--verbose", action="store_true", help="let the libraries speak on stderr (download "
                        "progress bars, PyAV's FFmpeg warnings in this process; the decode workers stay quiet)")
    args = parse_with_live(parser, argv)
    quiet_libraries(args.verbose)
    set_threads("app")
    try:  # params.yaml's decode settings, the head and its encoder first: without them no decode worker is started
        (decoding, limits), head = project_decoding(), load_head(HEADS[args.head].file)
        print(f"loading the encoder {printable(head.meta_.features['encoder_model'])} ...", file=sys.stderr, flush=True)
        encoder = encoder_for(head.meta_, args.device)
    except (UserError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.live:  # a camera, a stream or a file played live (docs/app.md, "Live")
        return run_live(args, head, encoder, decoding.memory_mb, limits)
    files, results = _videos(args.paths)  # and without a video, neither
    if not files:
        if args.json:
            print(json.dumps(results, indent=2))
        return 1
    with DecodePool(decoding) as pool:
        try:
            predictor = make_predictor(head, encoder, pool, limits=limits)
        except HeadError as e:  # made for another encoder or sampling
            print(f"error: {e}", file=sys.stderr)
            return 2
        return _predict_all(args, predictor, files, results)


def _videos(paths: list[str]) -> tuple[list[Path], list[dict]]:
    """(the video files the paths name: files as given, folders searched; the {"path", "error"} entries of what
    cannot be searched, and of each folder without a video), each error also one line on stderr."""
    from pipeline.data.discover import VIDEO_EXTENSIONS, find_video_files

    files, errors = [], []

    def error(path, reason: str) -> None:
        print(f"error: {printable(path)}: {reason}", file=sys.stderr)
        errors.append({"path": printable(path), "error": reason})

    for p in paths:
        found = find_video_files(p) if Path(p).is_dir() else None
        files += found.files if found else [Path(p)]
        for problem, reason in found.problems if found else []:
            error(problem, reason)
        if found is not None and not found.files and not found.problems:
            error(p, f"no video in this folder (extensions {', '.join(VIDEO_EXTENSIONS)})")
    return files, errors


def _predict_all(args: argparse.Namespace, predictor, files: list[Path], results: list[dict]) -> int:
    """Every file through predictor (tools.predict.Predictor), as lines or JSON after `results`; 1 when any failed."""
    from pipeline.heads.calibration import sure_threshold
    from pipeline.tools.predict import predict_segments, predict_video

    warning = random_encoder_note(predictor.head.meta_.features)
    if warning:
        print(f"note: {warning}", file=sys.stderr)
    failed = len(results)
    if not args.json:
        print("\t".join(TSV_HEADER), flush=True)
    for file in progress_bar(files, desc="predict", unit="video", disable=len(files) < 2):  # stderr; stdout: answers
        shown = printable(file)  # one line per file: no control character, no byte that is not UTF-8
        try:  # any failure of one file is that file's error line; the others are still predicted
            pred = predict_video(file, predictor)
        except Exception as e:  # noqa: BLE001 (batch work: skip and record; not BaseException: Ctrl-C still stops)
            failed += 1
            results.append({"path": shown, "error": _report(e, shown)})
            continue
        timeline, segments_error = None, None
        if args.segments:
            try:  # the whole-video answer stands even when the windows cannot be made
                timeline = predict_segments(file, predictor, *args.segments)
            except Exception as e:  # noqa: BLE001
                failed += 1
                segments_error = _report(e, shown, "timeline: ")
        segments = timeline.segments if timeline else []
        if args.threshold is not None:
            for p in [pred, *segments]:
                p.not_sure_below = sure_threshold(args.threshold, len(p.class_names))
        results.append({"path": shown, "answer": pred.label, "sure": pred.sure, "class": pred.top_class,
                        "probability": pred.top_probability,
                        "probabilities": dict(zip(pred.class_names, pred.probabilities.tolist()))})
        if warning:
            results[-1]["warning"] = warning
        if timeline:
            results[-1]["segments"] = [{"start": s.start, "end": s.end, "answer": s.label, "sure": s.sure,
                                        "class": s.top_class, "probability": s.top_probability} for s in segments]
            note = _timeline_note(timeline)
            if note:
                results[-1]["segments_note"] = note
                print(f"note: {shown}: timeline: {note}", file=sys.stderr)
        if segments_error:
            results[-1]["segments_error"] = segments_error
        if not args.json:
            print(f"{shown}\t{pred.answer}\t{printable(pred.top_class)}\t{pred.top_probability:.3f}", flush=True)
            for s in segments:
                print(f"  {s.start:7.2f}-{s.end:7.2f} s\t{s.answer}\t{printable(s.top_class)}\t"
                      f"{s.top_probability:.3f}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


def _timeline_note(timeline) -> str:
    """What a Timeline changed or left out, in words ("" when nothing)."""
    missing = (f"{timeline.missing} window(s) held no readable frame and are left out" if timeline.missing
               else "")
    return "; ".join(filter(None, [timeline.note, missing]))


def quiet_libraries(verbose: bool = False) -> None:
    """Quiet: no Hugging Face progress bar (a first download's; loading from disk never shows one: hub.py) and no
    FFmpeg log lines ("moov atom not found") from this process; the decode workers start from a clean process
    (forkserver), where PyAV logs nothing. A file that fails still gets its error line. verbose: the download's
    bars, and FFmpeg's warnings from this process through Python logging."""
    import av.logging
    from transformers.utils import logging as hf_logging

    if verbose:
        hf_logging.enable_progress_bar()
        av.logging.set_level(av.logging.WARNING)
    else:
        hf_logging.disable_progress_bar()
        av.logging.set_level(None)


def _reason(e: BaseException) -> str:
    """Why one file failed, without the file: a VideoError's reason, an OSError's strerror, another UserError's
    message; any other exception (a MemoryError, a RuntimeError) named by its type as well."""
    if isinstance(e, VideoError):
        return e.reason
    if isinstance(e, OSError):
        return e.strerror or str(e)
    if isinstance(e, UserError):
        return str(e)
    return f"{type(e).__name__}: {e}".rstrip(": ")


def _report(e: BaseException, shown: str, what: str = "") -> str:
    """`<shown>: <what><reason>` on stderr after "error: ", and returned for the JSON."""
    message = f"{shown}: {what}{_reason(e)}"
    print(f"error: {message}", file=sys.stderr)
    return message
