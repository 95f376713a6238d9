"""The command lines (clip-har-inspect, clip-har-tiny-clip, clip-har-predict): arguments in, the library's work out."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pipeline.cache import random_encoder_note
from pipeline.errors import HeadError, UserError, VideoError
from pipeline.inspector import (NEAR_DUPLICATE, find_outliers, frame_report, group_leakage, load, nearest_neighbors,
                                plot_projection, project_2d, split_file, summarize)
from pipeline.paths import CACHE_PATH, HEAD_FILES, TINY_CLIP
from pipeline.split import PARTS, read_split

INSPECT_HELP = """\
Look inside a feature cache: summary, one video's frames, neighbours, a 2-D map, likely mislabels and leakage.

    clip-har-inspect [CACHE] [--json] [--video PATH] [--neighbors PATH -k 5]
                     [--plot FILE.png [--method pca|tsne]] [--outliers] [--split CSV]

(or python -m pipeline.inspector ...). CACHE defaults to cache/features.h5; the split defaults to split.csv beside
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
            plot_projection(cache, coords, args.plot, f"{args.cache}: {len(cache)} videos, {args.method.upper()}"
                            + (f"\n{note}" if note else ""))
            result = {"plot": args.plot, "method": args.method, "videos": len(cache)}
            text = f"wrote {args.plot} ({args.method.upper()} of {len(cache)} videos)"
        elif args.outliers:
            result = find_outliers(cache, parts)
            text = format_outliers(result, parts is not None)
            if parts is not None:
                groups = read_split(split_file(args.cache, args.split), cache.clip_ids(), "group")
                result["groups"] = group_leakage(cache, parts, groups, result["near_duplicates"])
                text += "\n" + format_group_leakage(result["groups"])
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
    from pipeline.tiny_clip import TINY_FAMILIES  # (no transformers import: that module imports it where used)

    parser = argparse.ArgumentParser(description="Write a randomly initialised CLIP, SigLIP or SigLIP 2 (no download "
                                                 "needed).")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--tiny", metavar="DIR", help=f"a tiny one, for tests and offline demos (e.g. {TINY_CLIP})")
    group.add_argument("--vit-b-32", "--full-size", metavar="DIR", dest="full_size",
                       help="the full architecture (CLIP ViT-B/32, SigLIP / SigLIP 2 base 224), for benchmarks")
    parser.add_argument("--family", choices=TINY_FAMILIES, default="clip",
                        help="clip (default), siglip, or siglip2 (fixed resolution, as "
                             "google/siglip2-base-patch16-224)")
    args = parser.parse_args(argv)
    from pipeline.tiny_clip import build_tiny_clip  # transformers loads in seconds: only once the arguments are good

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


def format_summary(s: dict) -> str:
    """summarize's result as readable text."""
    lines = [
        f"{s['path']}: {s['videos']} videos, {len(s['classes'])} classes, {s['size_bytes'] / 2**20:.1f} MiB, "
        f"schema {s['schema_version']}",
        f"encoder: {s['encoder']['model']} (fingerprint {s['encoder']['fingerprint']}, {s['encoder']['precision']} "
        f"on {s['encoder']['device_type']}, {s['encoder']['backend']}, quantize {s['encoder']['quantize']}); "
        f"decoder {s['decoder']}",
        f"frames: {s['frames_per_video']} per video, sampling {s['sampling']}, preprocessing {s['preprocess']}, "
        f"{s['key']['batch_size']} per forward pass; embedding dim {s['embedding_dim']}",
        f"durations: {s['duration_seconds']['min']:.1f} s to {s['duration_seconds']['max']:.1f} s "
        f"(median {s['duration_seconds']['median']:.1f} s); {s['videos_with_repeated_frames']} videos shorter "
        f"than the frames sampled; {len(s['damaged'])} with decode errors (listed below)",
        f"data root: {s['data_root']}",
        "",
        f"{'class':<32} {'videos':>6}" + ("".join(f" {p:>6}" for p in PARTS) if s["split"] else ""),
    ]
    for name, c in s["classes"].items():
        lines.append(f"{name:<32} {c['videos']:>6}" + ("".join(f" {c[p]:>6}" for p in PARTS) if s["split"] else ""))
    lines.append("")
    if s["damaged"]:
        lines.append(f"damaged (encoded from the frames that decoded): {len(s['damaged'])}")
        lines += [f"  {d['path']}: {d['decode_errors']} decode errors" for d in s["damaged"]]
    lines.append(f"skipped: {len(s['skipped'])}")
    lines += [f"  {k['path']}: {k['reason']}" for k in s["skipped"]]
    return "\n".join(lines)


def format_frames(rows: list[dict]) -> str:
    """frame_report's rows as a table, a column per class as wide as its name."""
    names = list(rows[0]["cos_class"]) if rows else []
    widths = [max(len(n), 7) for n in names]
    head = f"{'frame':>6} {'time s':>7} {'norm':>7} {'cos prev':>8}  " + " ".join(
        f"{n:>{w}}" for n, w in zip(names, widths))
    lines = [head]
    for r in rows:
        prev = f"{r['cos_previous']:8.4f}" if r["cos_previous"] is not None else f"{'-':>8}"
        lines.append(f"{r['frame']:>6} {r['time']:>7.2f} {r['norm']:>7.3f} {prev}  "
                     + " ".join(f"{r['cos_class'][n]:>{w}.4f}" for n, w in zip(names, widths)))
    return "\n".join(lines)


def format_neighbors(rows: list[dict]) -> str:
    """nearest_neighbors' rows, one line each: similarity, class, path."""
    return "\n".join(f"{r['similarity']:.4f}  {r['class']:<28} {r['path']}" for r in rows)


def format_outliers(result: dict, has_split: bool) -> str:
    """find_outliers' result as readable text (leakage marked when there is a split)."""
    lines = [f"likely mislabelled (nearer another class's centroid than their own): {len(result['mislabelled'])}"]
    lines += [f"  {m['path']} [{m['class']}] own {m['own_similarity']:.4f} < {m['nearer_class']} "
              f"{m['nearer_similarity']:.4f}" for m in result["mislabelled"]]
    leaks = [d for d in result["near_duplicates"] if d["leak"]]
    lines.append(f"near-duplicates (cosine >= {NEAR_DUPLICATE} or same bytes): {len(result['near_duplicates'])}"
                 + (f", {len(leaks)} across split parts (leakage)" if has_split else " (no split to check leakage)"))
    for d in result["near_duplicates"]:
        where = f" {d['parts'][0]}/{d['parts'][1]}" + (" LEAK" if d["leak"] else "") if has_split else ""
        lines.append(f"  {d['similarity']:.4f}{' same bytes' if d['same_bytes'] else ''}{where}  {d['a']}  {d['b']}")
    return "\n".join(lines)


def format_group_leakage(result: dict) -> str:
    """group_leakage's result as readable text."""
    lines = [f"groups in more than one split part (leakage): {len(result['straddling'])}"]
    lines += [f"  {r['group']}: " + ", ".join(f"{p} {n}" for p, n in r["parts"].items()) for r in result["straddling"]]
    lines.append(f"group pairs across split parts holding near-duplicates: {len(result['near_duplicate_groups'])}")
    lines += [f"  {r['a']} ({r['parts'][0]}) ~ {r['b']} ({r['parts'][1]}): {r['pairs']} pairs, max "
              f"{r['max_similarity']:.4f}" for r in result["near_duplicate_groups"]]
    return "\n".join(lines)


PREDICT_HELP = """\
What the person in each video is doing: a trained head over the full encoder, exactly as stage one encodes.

    clip-har-predict PATH... [--head linear|logreg|zeroshot] [--json] [--threshold F]
                             [--segments WINDOW STRIDE] [--device auto|cpu|cuda] [-v]

(or python -m pipeline.predict ...).

PATH is a video or a folder (searched recursively). Prints a header line, then one tab-separated line per video:
path, answer (the top class, or "not sure" under the head's cut-off), top class, probability (or a JSON list).
Heads on a random encoder (python -m pipeline.encoder) say so on stderr and in each JSON entry ("warning").
stderr is quiet (no progress bars, no FFmpeg warnings) unless -v is given. A file that fails, for
any reason, is one error line on stderr (and an "error" entry in the JSON) and the others are still predicted; the
exit status is 1 when any file failed. --segments adds one indented line per sliding window (start-end seconds,
answer, top class, probability); when the windows cannot be made (too many of them) the whole-video answer is
still printed, the reason goes to stderr (and "segments_error"), and the exit status is 1.
"""
TSV_HEADER = ("path", "answer", "class", "probability")  # the columns of the text output, printed first


def predict(argv: list[str] | None = None) -> int:
    """`clip-har-predict`: the answer for each video the paths name, as lines or JSON; 1 when a file failed, 2 when
    the head or its encoder cannot be used."""
    from pipeline.predict import encoder_for, make_predictor  # torch and transformers: seconds, only for this
    from pipeline.heads import load_head
    from pipeline.threads import set_threads
    from pipeline.workers import DecodePool, PoolConfig

    parser = argparse.ArgumentParser(description=PREDICT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="video files or folders")
    parser.add_argument("--head", choices=sorted(HEAD_FILES), default="linear")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of lines")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--segments", nargs=2, type=float, metavar=("WINDOW", "STRIDE"),
                        help="also answer for sliding windows of WINDOW seconds every STRIDE seconds")
    parser.add_argument("--threshold", type=float, metavar="F",
                        help='answer "not sure" when the top probability is under F of the way from chance to '
                             "certainty (default: the head's, calibration.not_sure_below_chance_to_certain)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="let the libraries speak on stderr (a first download's progress bars, PyAV's FFmpeg "
                             "warnings in this process; the decode workers stay quiet and report failures as error "
                             "lines)")
    args = parser.parse_args(argv)
    quiet_libraries(args.verbose)
    set_threads("app")
    try:  # the head and its encoder first: without them no decode worker is started
        head = load_head(HEAD_FILES[args.head])
        encoder = encoder_for(head.meta_, args.device)
    except (UserError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with DecodePool(PoolConfig(workers=1)) as pool:
        try:
            predictor = make_predictor(head, encoder, pool)
        except HeadError as e:  # made for another encoder or sampling
            print(f"error: {e}", file=sys.stderr)
            return 2
        return _predict_all(args, predictor)


def _predict_all(args: argparse.Namespace, predictor) -> int:
    """Every file the paths name through predictor (a pipeline.predict.Predictor), printed as lines or JSON; 1 when
    any failed."""
    from pipeline.calibration import sure_threshold
    from pipeline.discover import find_video_files
    from pipeline.predict import predict_segments, predict_video

    warning = random_encoder_note(predictor.head.meta_.features)
    if warning:
        print(f"note: {warning}", file=sys.stderr)
    if not args.json:
        print("\t".join(TSV_HEADER), flush=True)
    files, results, failed = [], [], 0
    for p in args.paths:
        found = find_video_files(p) if Path(p).is_dir() else None
        files += found.files if found else [Path(p)]
        for problem, reason in found.problems if found else []:
            failed += 1
            print(f"error: {problem}: {reason}", file=sys.stderr)
            results.append({"path": _printable(problem), "error": reason})
    for file in files:
        shown = _printable(file)  # a name that is not UTF-8 still prints
        try:  # any failure of one file is that file's error line; the others are still predicted
            pred = predict_video(file, predictor)
        except Exception as e:  # noqa: BLE001 (batch work: skip and record; not BaseException: Ctrl-C still stops)
            failed += 1
            results.append({"path": shown, "error": _report(e, shown)})
            continue
        segments, segments_error = [], None
        if args.segments:
            try:  # the whole-video answer stands even when the windows cannot be made
                segments = predict_segments(file, predictor, *args.segments)
            except Exception as e:  # noqa: BLE001
                failed += 1
                segments_error = _report(e, shown, "timeline: ")
        if args.threshold is not None:
            for p in [pred, *segments]:
                p.not_sure_below = sure_threshold(args.threshold, len(p.class_names))
        results.append({"path": shown, "answer": pred.answer, "class": pred.top_class,
                        "probability": pred.top_probability,
                        "probabilities": dict(zip(pred.class_names, pred.probabilities.tolist()))})
        if warning:
            results[-1]["warning"] = warning
        if segments:
            results[-1]["segments"] = [{"start": s.start, "end": s.end, "answer": s.answer, "class": s.top_class,
                                        "probability": s.top_probability} for s in segments]
        if segments_error:
            results[-1]["segments_error"] = segments_error
        if not args.json:
            print(f"{shown}\t{pred.answer}\t{pred.top_class}\t{pred.top_probability:.3f}", flush=True)
            for s in segments:
                print(f"  {s.start:7.2f}-{s.end:7.2f} s\t{s.answer}\t{s.top_class}\t{s.top_probability:.3f}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


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


def _printable(file: str | os.PathLike) -> str:
    """A file name as it can print (bytes that are not UTF-8 as backslash escapes)."""
    return os.fsencode(file).decode("utf-8", "backslashreplace")


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
