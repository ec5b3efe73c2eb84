"""The .xlsx report as finance people open it: a Summary sheet, then the Rows.

Rows are streamed (openpyxl write-only mode), so memory stays flat however many rows there are;
every cell is text, so keys with leading zeros and input values such as "=SUM()" stay inert.
The Rows sheet has a frozen header, an autofilter, readable widths and coloured status cells.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter

from .model import Status

SUMMARY_SHEET = "Summary"
ROWS_SHEET = "Rows"

_FILLS = {
    Status.SUCCEEDED.value: PatternFill("solid", fgColor="C6EFCE"),
    Status.FAILED.value: PatternFill("solid", fgColor="FFC7CE"),
    Status.INVALID.value: PatternFill("solid", fgColor="FFEB9C"),
    Status.DUPLICATE.value: PatternFill("solid", fgColor="FFEB9C"),
}
_BOLD = Font(bold=True)
#: Widths (in characters) for the report's own columns; input columns get their header's width.
_WIDTHS = {"error_message": 60, "track_id": 30, "zuora_request_id": 38, "finished_at": 25,
           "invoice_key": 18, "status": 14, "document_reference_id": 22, "process_id": 18}


SummaryLine = tuple[list[object], bool]  # values, and whether the line is a heading


def write_workbook(path: Path, header: list[str], records: Iterable[list[str]],
                   summary_rows: Callable[[], Iterable[SummaryLine]]) -> None:
    """Write Summary (filled after the rows, from what they counted) and Rows sheets."""
    book = Workbook(write_only=True)
    summary = book.create_sheet(SUMMARY_SHEET)
    summary.column_dimensions["A"].width = 22
    summary.column_dimensions["B"].width = 14
    summary.column_dimensions["C"].width = 80
    rows = book.create_sheet(ROWS_SHEET)
    rows.freeze_panes = "A2"
    for index, name in enumerate(header, start=1):
        width = _WIDTHS.get(name, min(max(len(name) + 4, 10), 40))
        rows.column_dimensions[get_column_letter(index)].width = width
    status_at = header.index("status")
    rows.append([_text(rows, name, _BOLD) for name in header])
    count = 0
    for values in records:
        cells = [_text(rows, value) for value in values]
        fill = _FILLS.get(values[status_at])
        if fill is not None:
            cells[status_at].fill = fill
        rows.append(cells)
        count += 1
    rows.auto_filter.ref = f"A1:{get_column_letter(len(header))}{count + 1}"
    for line, heading in summary_rows():
        summary.append([_text(summary, v, _BOLD) if heading else v for v in line])
    book.save(path)


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
