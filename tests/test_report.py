"""The report files: the Excel layout finance people open, and text made inert."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import openpyxl

from batch_cancel.model import Outcome, Status
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
    assert rows.auto_filter.ref == "A1:R6"
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
    from batch_cancel.record.report import write_report

    rows = [SourceRow(2, "INV1", "02", "", ("=1+1",), columns=("Note",))]
    outcome = Outcome(2, Status.FAILED, 200, "59210030", "=cmd|' /C calc'!A0", 1)
    write_report(tmp_path / "r.xlsx", ["Note"], rows, {2: outcome})
    sheet = openpyxl.load_workbook(tmp_path / "r.xlsx")["Rows"]
    cells = {c.value: c.data_type for c in sheet[2]}
    assert cells["=1+1"] == "s"
    assert cells["'=cmd|' /C calc'!A0"] == "s"


def test_the_report_is_written_as_outcomes_arrive_holding_only_those_out_of_order(
        tmp_path: Path) -> None:
    """Rows go to the file in input order as soon as every row above them is known."""
    from batch_cancel.read.loader import load
    from batch_cancel.record.report import ReportWriter

    source = tmp_path / "in.csv"
    source.write_text("invoiceKey,reason\nA1,02\nA2,02\nbad key,02\nA4,02\nA1,02\n")
    loaded = load(source)
    writer = ReportWriter(tmp_path / "out.csv", loaded.columns, loaded.rows)
    writer.add(Outcome(row=5, status=Status.SUCCEEDED, attempts=1))  # A4, early
    assert writer.held == 1
    writer.add(Outcome(row=2, status=Status.SUCCEEDED, attempts=1))
    assert writer.held == 1  # row 3 (A2) still missing
    writer.add(Outcome(row=3, status=Status.FAILED, attempts=2, error_message="x"))
    assert writer.held == 0  # 2, 3, the invalid row 4, 5 and the duplicate 6 are written
    summary = writer.finish()
    with (tmp_path / "out.csv").open(encoding="utf-8-sig", newline="") as handle:
        report = list(csv.DictReader(handle))
    assert [(r["row"], r["status"]) for r in report] == [
        ("2", "succeeded"), ("3", "failed"), ("4", "invalid"), ("5", "succeeded"),
        ("6", "duplicate")]
    assert summary.counts[Status.FAILED] == 1 and not summary.complete


def test_rows_without_an_outcome_are_not_attempted_when_the_writer_finishes(
        tmp_path: Path) -> None:
    """A run that stopped early still reports every row, once."""
    from batch_cancel.read.loader import load
    from batch_cancel.record.report import ReportWriter

    source = tmp_path / "in.csv"
    source.write_text("invoiceKey,reason\nA1,02\nA2,02\nA3,02\n")
    loaded = load(source)
    writer = ReportWriter(tmp_path / "out.jsonl", loaded.columns, loaded.rows)
    writer.add(Outcome(row=3, status=Status.SUCCEEDED, attempts=1))
    writer.finish()
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    statuses = [json.loads(line)["status"] for line in lines]
    assert statuses == ["not_attempted", "succeeded", "not_attempted"]
