"""The report files: the Excel layout finance people open, and text made inert."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import openpyxl
import pytest

from batch_cancel.model import Outcome, Status
from tests.helpers import MIXED_ROWS, run_args


def test_xlsx_report_opens_on_a_summary_then_formatted_rows(sim, cli, make_csv) -> None:
    """Summary sheet first (run, counts, top errors), Rows with frozen header, filter, colours."""
    path = make_csv(MIXED_ROWS)
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
    from batch_cancel.record.writer import write_report

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
    from batch_cancel.record.writer import ReportWriter

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
    from batch_cancel.record.writer import ReportWriter

    source = tmp_path / "in.csv"
    source.write_text("invoiceKey,reason\nA1,02\nA2,02\nA3,02\n")
    loaded = load(source)
    writer = ReportWriter(tmp_path / "out.jsonl", loaded.columns, loaded.rows)
    writer.add(Outcome(row=3, status=Status.SUCCEEDED, attempts=1))
    writer.finish()
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    statuses = [json.loads(line)["status"] for line in lines]
    assert statuses == ["not_attempted", "succeeded", "not_attempted"]


def test_report_columns_are_the_rows_own_then_its_outcomes() -> None:
    """The report's columns, derived from `Outcome`'s fields, are still exactly these."""
    from batch_cancel.model import OUTCOME_COLUMNS, REPORT_COLUMNS

    assert REPORT_COLUMNS == (
        "row", "invoice_key", "reason", "document_reference_id", "status", "http_status",
        "error_code", "error_message", "attempts", "track_id", "zuora_request_id",
        "process_id", "finished_at", "in_doubt")
    assert REPORT_COLUMNS[4:] == OUTCOME_COLUMNS


def test_an_outcome_reads_as_report_text() -> None:
    """No HTTP status is an empty cell, a flag is `yes` or empty, a status its value."""
    outcome = Outcome(2, Status.FAILED, None, "53100020", "timed out", 3, "t", "q", "p",
                      "2026-11-24T20:00:00.000Z", in_doubt=True, ever_in_doubt=True)
    assert outcome.report_columns() == {
        "status": "failed", "http_status": "", "error_code": "53100020",
        "error_message": "timed out", "attempts": "3", "track_id": "t",
        "zuora_request_id": "q", "process_id": "p",
        "finished_at": "2026-11-24T20:00:00.000Z", "in_doubt": "yes"}
    assert Outcome(2, Status.SUCCEEDED, 200).report_columns()["in_doubt"] == ""
    assert Outcome(2, Status.SUCCEEDED, 200).report_columns()["http_status"] == "200"


@pytest.mark.parametrize(("owner", "complete"), [(Status.SUCCEEDED, True),
                                                 (Status.FAILED, False)])
def test_a_duplicate_is_complete_when_the_row_it_points_at_is_done(
        tmp_path: Path, owner: Status, complete: bool) -> None:
    """Completeness follows `duplicate_of`, never the message: a message that names no row
    still counts by the row the duplicate points at."""
    from batch_cancel.model import SourceRow
    from batch_cancel.record.writer import write_report

    rows = [SourceRow(2, "INV1", "02", ""), SourceRow(3, "INV9", "02", ""),
            SourceRow(4, "INV1", "02", "", status=Status.DUPLICATE, duplicate_of=2,
                      message="same invoice key as above")]
    outcomes = {2: Outcome(2, owner, attempts=1), 3: Outcome(3, Status.SUCCEEDED, attempts=1)}
    summary = write_report(tmp_path / "r.csv", [], rows, outcomes)
    assert summary.complete is complete
    assert summary.counts[Status.DUPLICATE] == 1
    with (tmp_path / "r.csv").open(encoding="utf-8-sig", newline="") as handle:
        report = list(csv.DictReader(handle))
    assert (report[2]["status"], report[2]["error_message"]) == (
        "duplicate", "same invoice key as above")


def test_a_row_carried_from_an_earlier_report_is_counted_by_its_status(
        tmp_path: Path) -> None:
    """A carried row keeps its columns and counts under its status, outside the run's scope."""
    from batch_cancel.model import REPORT_COLUMNS, SourceRow
    from batch_cancel.record.writer import write_report

    carried = dict.fromkeys(REPORT_COLUMNS, "")
    carried.update(row="2", invoice_key="INV1", status="failed", error_code="50000040",
                   error_message="not cancelable")
    rows = [SourceRow(2, "INV1", "02", "", status=Status.FAILED, carried=carried),
            SourceRow(3, "INV2", "02", "")]
    summary = write_report(tmp_path / "r.csv", [], rows,
                           {3: Outcome(3, Status.SUCCEEDED, attempts=1)})
    assert summary.counts[Status.FAILED] == 1 and summary.counts[Status.SUCCEEDED] == 1
    assert summary.top_errors == [("50000040", 1, "not cancelable")]
    assert summary.complete  # the carried failure is not this run's
