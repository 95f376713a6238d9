"""Stage two's plots: DVCLive's logger for the stages, the charts' data, and the page `dvc plots show` draws them in."""
from __future__ import annotations

import textwrap

from dvclive import Live

from pipeline.paths import EVALUATE_NOTICE

NOTICE = EVALUATE_NOTICE  # drawn by .dvc/plots/notice.json, first on the page (dvc.yaml's `plots:`)
NOTICE_WIDTH = 120  # characters per line of the notice: 13 px text in the template's 900 px


class StageLive(Live):
    """DVCLive's Live for a stage's metrics and plots, without DVCLive's own look at the repository: dvc runs the
    stage and tracks what it writes (dvc.yaml), so Live need not open the DVC repository and git to name an
    experiment (0.4 to 0.5 s of each stage on the 2-core machine; bench/README.md, "Head experiments"). The files
    it writes are Live's: StageLive(directory, dvcyaml=None, save_dvc_exp=False), as Live would be called. What
    needs the repository is off: live updates to DVC Studio during a run (none are sent; `dvc exp push` still
    sends the results)."""

    def _init_dvc(self) -> None:  # Live.__init__ calls these two (dvclive==3.49.1, requirements.txt); a test checks
        self._dvc_file, self._save_dvc_exp = None, False

    def _init_studio(self) -> None:  # Studio's live updates need what _init_dvc found: none are sent
        self._studio_events_to_skip |= {"start", "data", "done"}


def confusion_rows(confusion: list[list[int]], class_names: list[str]) -> list[dict]:
    """A confusion matrix (C, C) of counts (rows: true class, columns: predicted) as its C * C cells,
    {"actual": name, "predicted": name, "count": n}, zeros included, so that a chart has every class on both axes
    and its diagonal lines up (DVCLive's confusion plot logs one row per video: a class that was never predicted had
    no column). .dvc/plots/confusion_counts.json sums "count"."""
    assert len(confusion) == len(class_names) and all(len(row) == len(class_names) for row in confusion)
    return [{"actual": actual, "predicted": predicted, "count": int(confusion[i][j])}
            for i, actual in enumerate(class_names) for j, predicted in enumerate(class_names)]


def by_head(rows: list[dict], x: str, y: str) -> list[dict]:
    """Wide rows {x: value, head: number, ...} as long ones {x: value, "head": head, y: number}, one per head and
    row: .dvc/plots/by_head.json draws a line per head, each in its own colour (DVC's default template colours by
    revision and tells a file's fields apart by dash alone)."""
    return [{x: row[x], "head": head, y: value} for row in rows for head, value in row.items() if head != x]


def notice_rows(warning: str, cautions: list[str], protocol: str) -> list[dict]:
    """The lines `dvc plots show` writes above the charts, {"line": n, "kind": "warning" | "note", "text": str}:
    the random encoder's warning (when set) first and last, as the terminal table has it, the cautions (a small
    test part, leakage), then the protocol; each wrapped at NOTICE_WIDTH characters (a Vega text mark does not
    wrap). .dvc/plots/notice.json draws them as text, warnings in red."""
    said = ([("warning", f"*** {warning} ***")] if warning else []) + [("warning", c) for c in cautions]
    said += [("note", protocol)] + ([("warning", f"*** {warning} ***")] if warning else [])
    lines = [(kind, part) for kind, text in said for part in textwrap.wrap(text, NOTICE_WIDTH)]
    return [{"line": n, "kind": kind, "text": text} for n, (kind, text) in enumerate(lines)]


# `dvc plots show` writes a page that loads Vega from a CDN, so offline every chart is blank. .dvc/config points
# it at this page template instead (plots.html_template, relative to .dvc/): Vega, Vega-Lite and Vega-Embed
# inline (vl-convert's bundle, ~0.9 MB), no {scripts} placeholder, so the page needs no network.
OFFLINE_TEMPLATE = ".dvc/plots/offline.html"
VEGA_LITE_VERSION = "5.21"  # DVC's templates are Vega-Lite 5 specs


def offline_page_template() -> str:
    """The HTML page template for `dvc plots show --html-template` (dvc-render's placeholders {refresh_tag} and
    {plot_divs}) with the Vega libraries inline: charts render without network."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)  # sets window.vega, vegaLite, vegaEmbed
    assert "</script" not in bundle.lower() and "{plot_divs}" not in bundle
    return ("<!DOCTYPE html>\n<html>\n<head>\n{refresh_tag}\n<meta charset=\"utf-8\">\n<title>DVC Plot</title>\n"
            "<style>table { border-spacing: 15px; }</style>\n<script>\n" + bundle + "\n</script>\n</head>\n<body>\n"
            "{plot_divs}\n</body>\n</html>\n")
