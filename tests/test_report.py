"""The report files: the Excel layout finance people open, and text made inert."""

from __future__ import annotations

from pathlib import Path

import openpyxl

from tests.test_cli import ROWS, run_args


def test_xlsx_report_opens_on_a_summary_then_formatted_rows(sim, cli, make_csv) -> None:
    """Summary sheet first (run, counts, top errors), Rows with frozen header, filter, colours."""
    path = make_csv(ROWS)
    report = path.with_name("out.xlsx")
    assert cli(*run_args(sim, path, "--report", str(report)), env=sim.env).exit_code == 1
    book = openpyxl.load_workbook(report)
    assert book.sheetnames == ["Summary", "Rows"]
    summary = {row[0]: row[1:] for row in book["Summary"].iter_rows(values_only=True) if row[0]}
    assert summary["Target"][0] == "custom"
    assert summary["succeeded"][0] == 2 and summary["failed"][0] == 1
    assert summary["invalid"][0] == 1 and summary["duplicate"][0] == 1
    assert summary["59210040"][:1] == (1,) and "not found" in summary["59210040"][1]
    rows = book["Rows"]
    assert rows.freeze_panes == "A2"
    assert rows.auto_filter.ref == "A1:Q6"
    header = [c.value for c in rows[1]]
    status = header.index("status") + 1
    colours = {rows.cell(r, status).value: rows.cell(r, status).fill.fgColor.rgb
               for r in range(2, 7)}
    assert colours["succeeded"].endswith("C6EFCE")
    assert colours["failed"].endswith("FFC7CE")
    assert colours["invalid"].endswith("FFEB9C") and colours["duplicate"].endswith("FFEB9C")
    assert rows.column_dimensions["L"].width == 60  # error_message is readable
    assert all(c.value is None or isinstance(c.value, str) for c in rows[2])  # text, never numbers


def test_text_in_xlsx_reports_is_never_a_formula(tmp_path: Path) -> None:
    """Input values and server text beginning with = are stored as text cells."""
    from batch_cancel.model import Outcome, SourceRow, Status
    from batch_cancel.report import write_report

    rows = [SourceRow(2, "INV1", "02", "", ("=1+1",), columns=("Note",))]
    outcome = Outcome(2, Status.FAILED, 200, "59210030", "=cmd|' /C calc'!A0", 1)
    write_report(tmp_path / "r.xlsx", ["Note"], rows, {2: outcome})
    sheet = openpyxl.load_workbook(tmp_path / "r.xlsx")["Rows"]
    cells = {c.value: c.data_type for c in sheet[2]}
    assert cells["=1+1"] == "s"
    assert cells["'=cmd|' /C calc'!A0"] == "s"
