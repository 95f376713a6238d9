"""`clip-har-search`'s command line: a text or a video in, the nearest cached clips and their best moments out."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.embed.choices import DEVICES
from pipeline.errors import UserError, printable
from pipeline.extract.cache import random_encoder_note
from pipeline.paths import CACHE_PATH, PARAMS
from pipeline.tools.cli import _print, quiet_libraries
from pipeline.tools.search import SPLIT_PARTS

SEARCH_HELP = """\
Search the cached videos with a text or a video: the nearest clips, and the moment in each that matches best.

    clip-har-search [TEXT] [--like PATH] [-k K] [--cache H5] [--class NAME] [--split train|val|test] [--json]
    clip-har-search --build-index [--cache H5]        (or python -m pipeline.tools.search ...)

TEXT is embedded by the text tower of the encoder that made the cache. --like PATH: a cached clip (its path under
the data root, as clip-har-inspect shows it) or any video file (decoded and encoded as stage one does, with the
project's decode limits); the query video itself is left out. A clip's score is the cosine of its mean-pooled
vector to the query's; its moment is its best-matching sampled frame (seconds). Prints a header line, then one
tab-separated line per clip: rank, score, path, class, moment; or, with --json, exactly
{"query": {...}, "took_ms": ..., "results": [{"path", "label", "score", "time"}]}, took_ms being the search's own
time (no start-up, model loading or text embedding). The search reads the index beside the cache
(<cache stem>.index.h5, made by `dvc repro index`, or by --build-index for a cache outside a project); an index
built from another version of the cache is refused. Exit status 1 with one line on stderr when the cache, the
index, the query or an option cannot be used.
"""


def main(argv: list[str] | None = None) -> int:
    """`clip-har-search`: the results as lines or JSON; 1 with one line on stderr when something cannot be used."""
    parser = argparse.ArgumentParser(prog="clip-har-search", description=SEARCH_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("text", nargs="?", metavar="TEXT", help="what to look for, in words")
    parser.add_argument("--like", metavar="PATH", help="clips like this one: a cached clip's path or a video file")
    parser.add_argument("-k", type=int, default=10, help="how many clips (default 10)")
    parser.add_argument("--cache", default=CACHE_PATH, help=f"the feature cache (default {CACHE_PATH})")
    parser.add_argument("--index", help="the search index (default: <cache stem>.index.h5 beside the cache)")
    parser.add_argument("--class", dest="class_name", metavar="NAME", help="only clips of this class")
    parser.add_argument("--split", choices=SPLIT_PARTS, help="only clips of this split part "
                        "(split.csv beside the cache)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where a --like video file is encoded")
    parser.add_argument("--build-index", action="store_true", help="build (or rebuild) the index beside the cache, "
                        f"with {PARAMS}'s search settings when run in a project")
    parser.add_argument("-v", "--verbose", action="store_true", help="let the libraries speak on stderr")
    args = parser.parse_args(argv)
    if args.build_index:
        return _build(args)
    if (args.text is None) == (args.like is None):
        parser.error("give a TEXT or --like PATH (one of them)")
    try:
        searcher, vector, excluded, query = _query(args)
        allowed = searcher.allowed(args.class_name, args.split)
        found = searcher.search(vector, args.k, allowed, excluded)
    except (UserError, OSError) as e:  # the cache, the index, the query, an option, or the disk: one line
        print(f"error: {e}", file=sys.stderr)
        return 1
    warning = random_encoder_note(searcher.cache.attrs)
    if args.json:
        if warning:
            print(f"note: {warning}", file=sys.stderr)
        return _print(json.dumps({"query": query, "took_ms": round(found.took_ms, 3),
                                  "results": [h.json() for h in found.hits]}, indent=2))
    index = searcher.index
    how = "exact" if index.exact else f"approximate: faiss IVF, {index.nprobe} of {index.ivf.nlist} lists"
    print(f"{len(found.hits)} of {len(searcher.cache):,} clips in {found.took_ms:.1f} ms ({how})", file=sys.stderr)
    lines = ["rank\tscore\tpath\tclass\tmoment_s"]
    lines += [f"{i}\t{h.score:.4f}\t{printable(h.path)}\t{printable(h.label)}\t{h.time:.2f}"
              for i, h in enumerate(found.hits, 1)]
    text = "\n".join(lines)
    return _print(f"*** {warning} ***\n{text}\n*** {warning} ***" if warning else text)


def _query(args: argparse.Namespace):
    """(searcher, unit query vector (D,), excluded bool (V,) or None, the query as JSON) for the arguments."""
    from pipeline.tools import search as lib

    searcher = lib.open_searcher(args.cache, args.index)
    query = {"text": args.text} if args.text is not None else {"like": args.like}
    query.update({"k": args.k, "class": args.class_name, "split": args.split})
    if args.text is None and lib.is_cached(searcher, args.like):  # its vector is in the index: no model, no torch
        return searcher, *lib.cached_query(searcher, args.like), query
    from pipeline.threads import set_threads

    quiet_libraries(args.verbose)
    set_threads("search")
    if args.text is not None:
        return searcher, lib.text_vector(searcher.cache.attrs["encoder_model"], args.text), None, query
    file = lib.existing_file(args.like)
    from pipeline.extract.project import DecodePool, project_decoding
    from pipeline.tools.predict import encoder_for

    decoding, limits = project_decoding()
    encoder = encoder_for(searcher.cache.attrs, args.device)
    with DecodePool(decoding) as pool:
        video = lib.encode_video(file, searcher.cache, encoder, pool, limits)
    return searcher, *lib.file_query(searcher, video), query


def _build(args: argparse.Namespace) -> int:
    """--build-index: the index beside the cache (or at --index), with params.yaml's search settings if here."""
    from pipeline.settings import load_params
    from pipeline.tools.search_index import IndexConfig, build_index_file

    try:
        cfg = IndexConfig(**load_params()["search"]) if Path(PARAMS).is_file() else IndexConfig()
        print(build_index_file(args.cache, args.index, cfg))
    except (UserError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
