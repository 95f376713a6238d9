"""Cells of the CSV and TSV files the project writes, made safe to open in a spreadsheet, and read back exactly.

OWASP's rule against CSV injection: a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is a
formula to Excel, LibreOffice and Google Sheets (`=HYPERLINK(...)`, `+cmd|...`); a leading `'` makes it text,
and spreadsheets show the cell without it. A cell that starts with `'` itself gets one more, so that `uncell`
maps every cell back to the text it came from (`'=x` -> `''=x` -> `'=x`).
"""
from __future__ import annotations

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula
QUOTE = "'"  # what makes a spreadsheet read a cell as text (and does not show)


def cell(text: object) -> str:
    """`text` as a cell no spreadsheet runs: a leading QUOTE when it starts with FORMULA_START or QUOTE."""
    text = str(text)
    return QUOTE + text if text.startswith((*FORMULA_START, QUOTE)) else text


def uncell(text: str) -> str:
    """The text a cell written by `cell` came from (its leading QUOTE taken off)."""
    return text[1:] if text.startswith(QUOTE) else text
