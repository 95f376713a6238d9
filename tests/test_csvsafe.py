"""pipeline.csvsafe: CSV/TSV cells no spreadsheet runs (OWASP), mapped back exactly; the skipped list uses them."""
import pytest

from pipeline.csvsafe import cell, uncell
from pipeline.extract.writer import write_skipped_list

HOSTILE = ["=HYPERLINK(\"http://evil.example\",\"x\")", "@SUM(1+1)*cmd|' /C calc'!A0", "+cmd|' /C calc'!A0",
           "-1+2", "\tx", "\rx", "'=already quoted", "'", ""]


@pytest.mark.parametrize("text", HOSTILE + ["walking", "a=b", "x-1", "ünïcode"])
def test_a_cell_never_starts_a_formula_and_maps_back(text):
    assert not cell(text).startswith(("=", "+", "-", "@", "\t", "\r"))
    assert uncell(cell(text)) == text
    assert cell(text) == (text if text in ("walking", "a=b", "x-1", "ünïcode", "") else "'" + text)


def test_the_skipped_list_holds_no_formula(tmp_path):
    path = write_skipped_list(tmp_path / "features.skipped.tsv",
                              [("=cmd|' /C calc'!A0.mp4", "=cmd|' /C calc'!A0.mp4: no frames"),
                               ("@x.mp4", "@x.mp4: \tbad"), ("ok.mp4", "ok.mp4: -1 frames")])
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    assert rows == [["clip", "reason"], ["'=cmd|' /C calc'!A0.mp4", "'=cmd|' /C calc'!A0.mp4: no frames"],
                    ["'@x.mp4", "'@x.mp4: \\tbad"], ["ok.mp4", "ok.mp4: -1 frames"]]
