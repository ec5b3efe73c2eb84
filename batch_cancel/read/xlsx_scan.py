"""What an .xlsx sheet says about its rows beyond their cells: merged ranges, hidden rows.

openpyxl's read-only worksheets (the fast, streaming way to read big sheets) expose neither,
so the sheet's XML is scanned for `<mergeCell ref="A1:B1"/>` and for `<row r="7" hidden="1">`.
Excel and LibreOffice save a row hidden by hand and a row filtered out by an autofilter alike,
as a hidden row, so one scan finds both.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from typing import Any

from .sheetfacts import SheetFacts

_MERGE_CELL = re.compile(
    rb'<(?:[\w.-]+:)?mergeCell\b[^>]*?\bref="([A-Z]+)([0-9]+):([A-Z]+)([0-9]+)"'
)
_ROW = re.compile(rb"<(?:[\w.-]+:)?row\b([^>]*)>")
_ROW_NUMBER = re.compile(rb'\br="([0-9]+)"')
_HIDDEN = re.compile(rb'\bhidden="(?:1|true)"')
#: What a damaged part raises while it is read.
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, KeyError, OSError, ValueError)


def scan_sheet(worksheet: Any, facts: SheetFacts) -> None:
    """Fill `facts` with the sheet's merged ranges and hidden rows (a damaged part: nothing;
    reading the rows reports the damage)."""
    get_source = getattr(worksheet, "_get_source", None)
    if get_source is None:  # pragma: no cover - not a read-only worksheet
        return
    scanner = _Scanner(facts)
    tail = b""
    try:
        with get_source() as source:
            while chunk := source.read(1 << 20):
                data = tail + chunk
                cut = data.rfind(b"<")  # a tag cut by the chunk boundary waits for the next
                cut = cut if cut >= 0 else len(data)
                scanner.scan(data[:cut])
                tail = data[cut:]
        scanner.scan(tail)
    except _DAMAGED:
        facts.merges.clear()
        facts.hidden_rows.clear()


class _Scanner:
    """Rows and merges of sheet XML fed in pieces cut between tags."""

    __slots__ = ("facts", "row")

    def __init__(self, facts: SheetFacts) -> None:
        self.facts = facts
        self.row = 0  # a <row> without r="" is the one after the previous row

    def scan(self, data: bytes) -> None:
        from openpyxl.utils import column_index_from_string

        for row in _ROW.finditer(data):
            attributes = row[1]
            number = _ROW_NUMBER.search(attributes)
            self.row = int(number[1]) if number else self.row + 1
            if _HIDDEN.search(attributes):
                self.facts.hidden_rows.add(self.row)
        for m in _MERGE_CELL.finditer(data):
            self.facts.merges.append((int(m[2]), column_index_from_string(m[1].decode()),
                                      int(m[4]), column_index_from_string(m[3].decode())))


def default_sheet(book: Any) -> Any:
    """The sheet read without `--sheet`: a batch-cancel report's rows, else the first sheet
    that is not hidden (a hidden sheet is never meant by default)."""
    if book.sheetnames[:2] == ["Summary", "Rows"]:
        return book["Rows"]
    for worksheet in book.worksheets:
        if getattr(worksheet, "sheet_state", "visible") == "visible":
            return worksheet
    return None
