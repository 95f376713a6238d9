"""The inspector's results as text: the summary, one video's frames, neighbours and outliers, for a terminal."""
from __future__ import annotations

from pipeline.errors import printable, printable_all
from pipeline.heads.split_file import PARTS
from pipeline.tools.inspector import GROUPING_HINT, NEAR_DUPLICATE

WIDTH = 100  # columns the text tables fit
SHOWN = 10  # lines of a long list (skipped, damaged) the summary shows; --skipped or --json gives them all


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 pair`, `2 pairs`, `1,347 videos`: n and the word in the number n takes (`many`: an irregular plural)."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def format_summary(s: dict) -> str:
    """summarize's result as text, every string from the cache escaped (printable_all); SHOWN damaged and skipped."""
    s, name_w = printable_all(s), max([5, *(len(printable(n)) for n in s["classes"])])
    lines = [
        f"{printable(s['path'])}: {plural(s['videos'], 'video')}, {plural(len(s['classes']), 'class', 'classes')}, "
        f"{s['size_bytes'] / 2**20:.1f} MiB, schema {s['schema_version']}",
        f"encoder: {printable(s['encoder']['model'])} (fingerprint {s['encoder']['fingerprint']}, "
        f"{s['encoder']['precision']} on {s['encoder']['device_type']}, {s['encoder']['backend']}, quantize "
        f"{s['encoder']['quantize']}); decoder {printable(s['decoder'])}",
        f"frames: {frames_text(s)} per video, sampling {s['sampling']}, preprocessing {s['preprocess']}, "
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


def frames_text(s: dict) -> str:
    """The frames a video has in a summary: "16" for a fixed count, "3 to 64 (median 10)" by frame rate."""
    low, mid, high = (s["frames_sampled"][k] for k in ("min", "median", "max"))
    return f"{high:g}" if low == high else f"{low:g} to {high:g} (median {mid:g})"
