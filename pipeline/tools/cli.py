"""The command lines (clip-har-inspect, clip-har-tiny-clip, clip-har-predict): arguments in, the library's work out."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pipeline.extract.cache import random_encoder_note
from pipeline.errors import HeadError, UserError, VideoError, printable
from pipeline.tools.inspector import (GROUPING_HINT, NEAR_DUPLICATE, TOP, find_outliers, frame_report, group_leakage,
                                      load, nearest_neighbors, plot_projection, project_2d, split_file, summarize)
from pipeline.paths import CACHE_PATH, HEAD_FILES, TINY_CLIP
from pipeline.progress import progress_bar
from pipeline.heads.split import PARTS, read_split

INSPECT_HELP = """\
Look inside a feature cache: summary, one video's frames, neighbours, a 2-D map, likely mislabels and leakage.

    clip-har-inspect [CACHE] [--json] [--video PATH] [--neighbors PATH -k 5] [--skipped]
                     [--plot FILE.png [--method pca|tsne]] [--outliers [--top N]] [--split CSV]

(or python -m pipeline.tools.inspector ...). CACHE defaults to cache/features.h5; the split defaults to split.csv beside
it, when it exists. The cache is opened lazily: embeddings are read a block of videos at a time, so memory grows
with V x D, not V x F x D.
"""
WIDTH = 100  # columns the text tables fit
SHOWN = 10  # lines of a long list (skipped, damaged) the summary shows; --skipped or --json gives them all


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
    from pipeline.embed.tiny_clip import build_tiny_clip  # transformers loads in seconds: once the arguments are good

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


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 pair`, `2 pairs`, `1,347 videos`: n and the word in the number n takes (`many`: an irregular plural)."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def format_summary(s: dict) -> str:
    """summarize's result as readable text (the first SHOWN damaged and skipped videos; --skipped lists them all)."""
    name_w = max([5, *(len(printable(n)) for n in s["classes"])])
    lines = [
        f"{printable(s['path'])}: {plural(s['videos'], 'video')}, {plural(len(s['classes']), 'class', 'classes')}, "
        f"{s['size_bytes'] / 2**20:.1f} MiB, schema {s['schema_version']}",
        f"encoder: {printable(s['encoder']['model'])} (fingerprint {s['encoder']['fingerprint']}, "
        f"{s['encoder']['precision']} on {s['encoder']['device_type']}, {s['encoder']['backend']}, quantize "
        f"{s['encoder']['quantize']}); decoder {printable(s['decoder'])}",
        f"frames: {s['frames_per_video']} per video, sampling {s['sampling']}, preprocessing {s['preprocess']}, "
        f"{s['key']['batch_size']} per forward pass; embedding dim {s['embedding_dim']}",
        f"durations: {s['duration_seconds']['min']:.1f} s to {s['duration_seconds']['max']:.1f} s "
        f"(median {s['duration_seconds']['median']:.1f} s); {plural(s['videos_with_repeated_frames'], 'video')} "
        f"shorter than the frames sampled; {len(s['damaged']):,} with decode errors (listed below)",
        f"data root: {printable(s['data_root'])}",
        "",
        f"{'class':<{name_w}} {'videos':>6}" + ("".join(f" {p:>6}" for p in PARTS) if s["split"] else ""),
    ]
    for name, c in s["classes"].items():
        lines.append(f"{printable(name):<{name_w}} {c['videos']:>6}"
                     + ("".join(f" {c[p]:>6}" for p in PARTS) if s["split"] else ""))
    lines.append("")
    if s["damaged"]:
        lines.append(f"damaged (encoded from the frames that decoded): {len(s['damaged']):,}")
        lines += [f"  {printable(d['path'])}: {plural(d['decode_errors'], 'decode error')}"
                  for d in s["damaged"][:SHOWN]]
        lines += [f"  ... and {len(s['damaged']) - SHOWN:,} more (--json lists them all)"] * (len(s["damaged"]) > SHOWN)
    lines.append(f"skipped: {len(s['skipped']):,}")
    lines += ["  " + line for line in format_skipped(s["skipped"][:SHOWN]).splitlines()]
    lines += [f"  ... and {len(s['skipped']) - SHOWN:,} more (--skipped lists them all)"] * (len(s["skipped"]) > SHOWN)
    return "\n".join(lines)


def format_skipped(rows: list[dict]) -> str:
    """The skipped videos, one line each: path: reason (both escaped: one line per file, whatever the name)."""
    return "\n".join(f"{printable(r['path'])}: {printable(r['reason'])}" for r in rows)


def format_frames(rows: list[dict]) -> str:
    """frame_report's rows as text at most WIDTH wide (unless a class name alone is wider): a line per frame
    (index, time, norm, cosine to the previous frame, the nearest class centroid), then the cosine to each class
    centroid, a row per class headed by its whole name and a column per frame, in blocks of frames."""
    lines = [f"{'frame':>6} {'time s':>7} {'norm':>7} {'cos prev':>8}  nearest class centroid"]
    for r in rows:
        prev = f"{r['cos_previous']:8.4f}" if r["cos_previous"] is not None else f"{'-':>8}"
        best = max(r["cos_class"], key=r["cos_class"].get) if r["cos_class"] else None
        lines.append(f"{r['frame']:>6} {r['time']:>7.2f} {r['norm']:>7.3f} {prev}  "
                     + (f"{r['cos_class'][best]:.4f} {printable(best)}" if best is not None else "-"))
    names = list(rows[0]["cos_class"]) if rows else []
    shown = [printable(n) for n in names]
    name_w = max([5, *(len(n) for n in shown)])
    per_block = max(1, (WIDTH - name_w) // 8)  # a frame's column: a space and -0.1234
    lines += ["", "cosine to each class centroid, a column per sampled frame (headed by its index):"]
    for start in range(0, len(rows), per_block):
        block = rows[start:start + per_block]
        lines.append(f"{'class':<{name_w}}" + "".join(f" {r['frame']:>7}" for r in block))
        lines += [f"{n:<{name_w}}" + "".join(f" {r['cos_class'][name]:7.4f}" for r in block)
                  for name, n in zip(names, shown)]
    return "\n".join(lines)


def format_neighbors(rows: list[dict]) -> str:
    """nearest_neighbors' rows, one line each: similarity, class, path."""
    return "\n".join(f"{r['similarity']:.4f}  {printable(r['class']):<28} {printable(r['path'])}" for r in rows)


def format_outliers(result: dict, has_split: bool) -> str:
    """find_outliers' result as readable text (leakage marked when there is a split; the grouping that keeps
    near-duplicates together named when some sit in different parts)."""
    found, shown = result["mislabelled_found"], len(result["mislabelled"])
    lines = [f"likely mislabelled (nearer another class's centroid than their own): {found:,}"
             + (f", the {shown:,} most suspicious listed (--top)" if shown < found else "")]
    lines += [f"  {printable(m['path'])} [{printable(m['class'])}] own {m['own_similarity']:.4f} < "
              f"{printable(m['nearer_class'])} {m['nearer_similarity']:.4f}" for m in result["mislabelled"]]
    near = result["near_duplicates_found"]
    across = near["across_parts"] or 0
    lines.append(f"near-duplicates (cosine >= {NEAR_DUPLICATE} or same bytes): {plural(near['pairs'], 'pair')}"
                 + (f", {across:,} across split parts (leakage)" if has_split else " (no split to check leakage)"))
    if near["capped"]:
        lines.append(f"  only the first {plural(len(result['near_duplicates']), 'pair')} listed (--top "
                     f"{near['top']}): " + ("those across split parts first, then " if has_split else "")
                     + "the most similar")
    for d in result["near_duplicates"]:
        where = f" {d['parts'][0]}/{d['parts'][1]}" + (" LEAK" if d["leak"] else "") if has_split else ""
        lines.append(f"  {d['similarity']:.4f}{' same bytes' if d['same_bytes'] else ''}{where}  "
                     f"{printable(d['a'])}  {printable(d['b'])}")
    if across:
        lines.append(f"{plural(across, 'near-duplicate pair')} {'sits' if across == 1 else 'sit'} in different "
                     f"split parts: {GROUPING_HINT}")
    return "\n".join(lines)


def format_group_leakage(result: dict, capped: bool = False) -> str:
    """group_leakage's result as readable text (capped: the near-duplicate pairs it was given were the first few)."""
    lines = [f"groups in more than one split part (leakage): {len(result['straddling']):,}"]
    lines += [f"  {printable(r['group'])}: " + ", ".join(f"{p} {n}" for p, n in r["parts"].items())
              for r in result["straddling"]]
    lines.append(f"group pairs across split parts holding near-duplicates: {len(result['near_duplicate_groups']):,}"
                 + (" (among the pairs listed)" if capped else ""))
    lines += [f"  {printable(r['a'])} ({r['parts'][0]}) ~ {printable(r['b'])} ({r['parts'][1]}): "
              f"{plural(r['pairs'], 'pair')}, max {r['max_similarity']:.4f}" for r in result["near_duplicate_groups"]]
    return "\n".join(lines)


PREDICT_HELP = """\
What the person in each video is doing: a trained head over the full encoder, exactly as stage one encodes.

    clip-har-predict PATH... [--head linear|logreg|zeroshot] [--json] [--threshold F]
                             [--segments WINDOW STRIDE] [--device auto|cpu|cuda] [-v]

(or python -m pipeline.tools.predict ...).

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
    from pipeline.tools.predict import encoder_for, make_predictor  # torch and transformers: seconds, only for this
    from pipeline.heads.estimators import load_head
    from pipeline.threads import set_threads
    from pipeline.extract.project import DecodePool, project_decoding

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
                             "warnings here; the decode workers stay quiet and report failures as error lines)")
    args = parser.parse_args(argv)
    quiet_libraries(args.verbose)
    set_threads("app")
    try:  # params.yaml's decode settings, the head and its encoder first: without them no decode worker is started
        (decoding, limits), head = project_decoding(), load_head(HEAD_FILES[args.head])
        print(f"loading the encoder {printable(head.meta_.features['encoder_model'])} ...", file=sys.stderr, flush=True)
        encoder = encoder_for(head.meta_, args.device)
    except (UserError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
