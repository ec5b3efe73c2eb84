"""The .xlsx report as finance people open it: a Summary sheet, then the Rows.

Rows are streamed (openpyxl write-only mode), so memory stays flat however many rows there are;
every cell is text, so keys with leading zeros and input values such as "=SUM()" stay inert.
The Rows sheet has a frozen header, an autofilter, readable widths and coloured status cells.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter

from ..model import Status

SUMMARY_SHEET = "Summary"
ROWS_SHEET = "Rows"

_FILLS = {
    Status.SUCCEEDED.value: PatternFill("solid", fgColor="C6EFCE"),
    Status.SKIPPED.value: PatternFill("solid", fgColor="DDEBF7"),
    Status.FAILED.value: PatternFill("solid", fgColor="FFC7CE"),
    Status.INVALID.value: PatternFill("solid", fgColor="FFEB9C"),
    Status.DUPLICATE.value: PatternFill("solid", fgColor="FFEB9C"),
}
_BOLD = Font(bold=True)
#: Widths (in characters) for the report's own columns; input columns get their header's width.
_WIDTHS = {"error_message": 60, "track_id": 30, "zuora_request_id": 38, "finished_at": 25,
           "invoice_key": 18, "status": 14, "document_reference_id": 22, "process_id": 18}


SummaryLine = tuple[list[object], bool]  # values, and whether the line is a heading


class WorkbookWriter:
    """Writes the Summary and Rows sheets as rows come (Summary filled last, from the counts).

    openpyxl's write-only sheets go to temporary files as they are appended to, so a million
    rows cost disk, not memory.
    """

    def __init__(self, path: Path, header: list[str]) -> None:
        self._path = path
        self._book = Workbook(write_only=True)
        self._summary = self._book.create_sheet(SUMMARY_SHEET)
        self._summary.column_dimensions["A"].width = 22
        self._summary.column_dimensions["B"].width = 14
        self._summary.column_dimensions["C"].width = 80
        rows = self._rows = self._book.create_sheet(ROWS_SHEET)
        rows.freeze_panes = "A2"
        for index, name in enumerate(header, start=1):
            width = _WIDTHS.get(name, min(max(len(name) + 4, 10), 40))
            rows.column_dimensions[get_column_letter(index)].width = width
        self._columns = len(header)
        self._status_at = header.index("status")
        rows.append([_text(rows, name, _BOLD) for name in header])
        self._count = 0

    def write(self, values: list[str]) -> None:
        """Append one report row, its status cell coloured."""
        cells = [_text(self._rows, value) for value in values]
        fill = _FILLS.get(values[self._status_at])
        if fill is not None:
            cells[self._status_at].fill = fill
        self._rows.append(cells)
        self._count += 1

    def close(self, summary_rows: Iterable[SummaryLine]) -> None:
        """Fill the Summary sheet and save the workbook."""
        self._rows.auto_filter.ref = f"A1:{get_column_letter(self._columns)}{self._count + 1}"
        for line, heading in summary_rows:
            self._summary.append([_text(self._summary, v, _BOLD) if heading else v
                                  for v in line])
        self._book.save(self._path)


def _text(sheet: Any, value: object, font: Font | None = None) -> WriteOnlyCell:
    cell = WriteOnlyCell(sheet, value=value)
    cell.data_type = "s"  # text, even for "=..." values: never a formula
    cell.number_format = "@"
    if font is not None:
        cell.font = font
    return cell


def summary_lines(context: dict[str, str], counts: dict[Status, int],
                  top_errors: list[tuple[str, int, str]]) -> Iterator[SummaryLine]:
    """The Summary sheet: the run, counts per status, top error codes with one message each."""
    yield ["batch-cancel report"], True
    for label, key in (("Input", "input"), ("Target", "target"), ("Base URL", "base_url"),
                       ("Run id", "run_id"), ("Started", "started_at"),
                       ("Finished", "finished_at")):
        if context.get(key):
            yield [label, context[key]], False
    yield [], False
    yield ["Status", "Rows"], True
    for status, count in counts.items():
        yield [status.value, count], False
    yield ["total", sum(counts.values())], False
    if top_errors:
        yield [], False
        yield ["Top error codes", "Rows", "Message (one example)"], True
        for code, count, message in top_errors:
            yield [code, count, message], False
