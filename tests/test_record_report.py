"""The report writer and its tally, through their public faces: every row once, in order, with
the text each column must hold; a failure leaves no half file; the counts and completeness."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from batch_cancel.events import Event, Events, ReportEncodingChanged
from batch_cancel.model import REPORT_COLUMNS, Outcome, SourceRow, Status
from batch_cancel.read.sheetfacts import CsvDialect
from batch_cancel.record.paths import ReportError
from batch_cancel.record.tally import TOP_ERRORS, Tally
from batch_cancel.record.writer import (
    UNSENT_MESSAGE,
    ReportWriter,
    neutralise,
    write_report,
)
from tests.helpers import disk_full


def csv_rows(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    """A CSV report's rows by column name."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def leftovers(folder: Path) -> list[str]:
    """Temporary files a writer left in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_report_name_of_no_known_format_is_refused(tmp_path: Path) -> None:
    """Before any file is made: the message names the path and the suffix."""
    with pytest.raises(ReportError) as caught:
        ReportWriter(tmp_path / "r.txt", [], [])
    assert str(caught.value) == f"--report {tmp_path / 'r.txt'}: unsupported format '.txt'"
    assert list(tmp_path.iterdir()) == []


def test_a_report_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """Reports name invoices: 0600, like the journal."""
    write_report(tmp_path / "r.csv", [], [SourceRow(2, "A", "02", "")], {})
    assert (tmp_path / "r.csv").stat().st_mode & 0o777 == 0o600


def test_unsent_rows_say_why_and_a_warning_joins_the_message(tmp_path: Path) -> None:
    """A row to send without an outcome is `not_attempted` with the run-stopped message (or
    the row's own); an invalid row keeps the loader's message; a row's warning is appended
    to the outcome's message, or stands alone."""
    rows = [SourceRow(2, "A", "02", ""),
            SourceRow(3, "B", "02", "", message="left by the earlier run"),
            SourceRow(4, "bad key", "02", "", status=Status.INVALID, message="bad key"),
            SourceRow(5, "C", "01", "", warning="reason 01 without a reference"),
            SourceRow(6, "D", "01", "", warning="w")]
    outcomes = {5: Outcome(5, Status.SUCCEEDED, 200, attempts=1),
                6: Outcome(6, Status.FAILED, 400, "E1", "refused", 1)}
    write_report(tmp_path / "r.csv", [], rows, outcomes)
    assert [(r["status"], r["error_message"]) for r in csv_rows(tmp_path / "r.csv")] == [
        ("not_attempted", UNSENT_MESSAGE),
        ("not_attempted", "left by the earlier run"),
        ("invalid", "bad key"),
        ("succeeded", "warning: reason 01 without a reference"),
        ("failed", "refused; warning: w")]


def test_server_text_is_made_inert_in_a_csv_but_not_in_json_lines(tmp_path: Path) -> None:
    """A CSV opens in Excel: every server column that starts a formula gets a quote; JSON
    lines are for scripts and keep the text as Zuora sent it."""
    rows = [SourceRow(2, "A", "02", "")]
    outcome = Outcome(2, Status.FAILED, 500, "-1", "=HYPERLINK()", 1, "t", "+q", "@p")
    write_report(tmp_path / "r.csv", [], rows, {2: outcome})
    write_report(tmp_path / "r.jsonl", [], rows, {2: outcome})
    spread = csv_rows(tmp_path / "r.csv")[0]
    assert [spread[c] for c in ("error_code", "error_message", "zuora_request_id",
                                "process_id", "track_id")] == [
        "'-1", "'=HYPERLINK()", "'+q", "'@p", "t"]
    plain = json.loads((tmp_path / "r.jsonl").read_text(encoding="utf-8"))
    assert [plain[c] for c in ("error_code", "error_message", "zuora_request_id",
                               "process_id")] == ["-1", "=HYPERLINK()", "+q", "@p"]
    assert [neutralise(t) for t in ("=a", "+a", "-a", "@a", "\ta", "\ra", "a=", "")] == [
        "'=a", "'+a", "'-a", "'@a", "'\ta", "'\ra", "a=", ""]


def test_the_outcomes_given_at_finish_fill_the_rows_not_yet_written(tmp_path: Path) -> None:
    """`finish(outcomes=...)` is how a whole report is written at once; an outcome already
    added wins over the mapping's."""
    rows = [SourceRow(n, f"K{n}", "02", "") for n in (2, 3, 4)]
    writer = ReportWriter(tmp_path / "r.csv", [], rows)
    writer.add(Outcome(3, Status.FAILED, 500, attempts=2))
    summary = writer.finish(outcomes={2: Outcome(2, Status.SUCCEEDED, 200, attempts=1),
                                      3: Outcome(3, Status.SUCCEEDED, 200, attempts=1)})
    assert [(r["row"], r["status"], r["attempts"]) for r in csv_rows(tmp_path / "r.csv")] == [
        ("2", "succeeded", "1"), ("3", "failed", "2"), ("4", "not_attempted", "0")]
    assert summary.counts[Status.NOT_ATTEMPTED] == 1
    assert (summary.report_path, summary.report_error) == (str(tmp_path / "r.csv"), "")
    assert leftovers(tmp_path) == []


def test_a_report_that_cannot_be_put_in_place_says_why_and_leaves_nothing(
        tmp_path: Path) -> None:
    """The rename fails (a folder has the report's name): no exception, no temporary file;
    the summary still counts the rows and says what went wrong."""
    (tmp_path / "r.csv").mkdir()
    (tmp_path / "r.csv" / "x").write_text("x")
    summary = write_report(tmp_path / "r.csv", [], [SourceRow(2, "A", "02", "")],
                           {2: Outcome(2, Status.SUCCEEDED, 200, attempts=1)})
    assert summary.report_error == "IsADirectoryError: Is a directory"
    assert summary.counts[Status.SUCCEEDED] == 1
    assert leftovers(tmp_path) == []


def test_a_write_that_fails_stops_the_writing_not_the_run(tmp_path: Path) -> None:
    """Disk full while rows are added: the writer keeps the error, drops the file, ignores
    later outcomes, and `finish` reports the error instead of raising."""
    rows = [SourceRow(n, f"K{n}", "02", "") for n in range(2, 6)]
    writer = ReportWriter(tmp_path / "r.csv", [], rows)
    with disk_full(tmp_path):
        writer.add(Outcome(2, Status.FAILED, 500, error_message="x" * 70_000, attempts=1))
    assert writer.error == "OSError: No space left on device"
    assert leftovers(tmp_path) == []
    writer.add(Outcome(3, Status.SUCCEEDED, 200, attempts=1))
    assert writer.held == 0
    summary = writer.finish()
    assert summary.report_error == "OSError: No space left on device"
    assert not (tmp_path / "r.csv").exists()


def test_an_unexpected_error_while_finishing_drops_the_file_and_goes_up(
        tmp_path: Path) -> None:
    """Anything but an OSError (here raised by a subscriber of the re-encoding event) is not
    the report's to swallow: the temporary file goes, the error reaches the caller."""
    def refuse(event: Event) -> None:
        raise KeyboardInterrupt

    rows = [SourceRow(2, "A", "02", "")]
    outcome = Outcome(2, Status.FAILED, 400, "E", "請求書", 1)
    with pytest.raises(KeyboardInterrupt):
        write_report(tmp_path / "r.csv", [], rows, {2: outcome},
                     dialect=CsvDialect(";", "cp1252"), events=Events(refuse))
    assert list(tmp_path.iterdir()) == []


def test_a_cp1252_report_turns_utf8_on_the_bus_it_is_given(tmp_path: Path) -> None:
    """The input's delimiter stays; the switch is told once, on the run's bus."""
    seen: list[Event] = []
    rows = [SourceRow(2, "A", "02", "", ("Peña",), columns=("Note",)),
            SourceRow(3, "B", "02", "", ("x",), columns=("Note",))]
    outcomes = {2: Outcome(2, Status.SUCCEEDED, 200, attempts=1),
                3: Outcome(3, Status.FAILED, 400, "E", "請求書", 1)}
    write_report(tmp_path / "r.csv", ["Note"], rows, outcomes,
                 dialect=CsvDialect(";", "cp1252"), events=Events(seen.append))
    assert seen == [ReportEncodingChanged("cp1252", "utf-8-sig", "a value does not fit cp1252")]
    assert (tmp_path / "r.csv").read_bytes().startswith(b"\xef\xbb\xbfNote;row;")
    assert [(r["Note"], r["error_message"]) for r in csv_rows(tmp_path / "r.csv", ";")] == [
        ("Peña", ""), ("x", "請求書")]


def test_rows_are_written_as_soon_as_those_above_are_known(tmp_path: Path) -> None:
    """Rows that are not sent are written as they come up; an outcome waits only for the
    rows above it; the file is in input order whatever the order of the outcomes."""
    rows = [SourceRow(2, "A", "02", ""),
            SourceRow(3, "bad", "02", "", status=Status.INVALID, message="bad key"),
            SourceRow(4, "B", "02", ""), SourceRow(5, "C", "02", "")]
    writer = ReportWriter(tmp_path / "r.jsonl", [], rows)
    writer.add(Outcome(5, Status.SUCCEEDED, attempts=1))
    writer.add(Outcome(4, Status.SUCCEEDED, attempts=1))
    assert writer.held == 2
    writer.add(Outcome(2, Status.SUCCEEDED, attempts=1))
    assert writer.held == 0
    writer.finish()
    lines = (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["row"] for line in lines] == ["2", "3", "4", "5"]


def test_the_tally_counts_every_status_and_names_failures_by_code_or_http_status() -> None:
    """Every status is in the counts (0 when unseen); a failure without a code is named by
    its HTTP status, or `(no code)` when there is none or it is a success status; the first
    message seen per code is kept."""
    tally = Tally([])
    tally.count(2, Status.FAILED, {"error_code": "", "http_status": "503",
                                   "error_message": "busy"})
    tally.count(3, Status.FAILED, {"error_code": "", "http_status": "503",
                                   "error_message": "later"})
    tally.count(4, Status.FAILED, {"error_code": "", "http_status": "",
                                   "error_message": "timed out"})
    tally.count(5, Status.FAILED, {"error_code": "", "http_status": "200",
                                   "error_message": "odd"})
    tally.count(6, Status.SUCCEEDED, {"error_code": "X", "http_status": "200",
                                      "error_message": ""})
    for row, status in ((7, Status.DUPLICATE), (8, Status.CANCEL_FAILED)):  # not failures
        tally.count(row, status, {"error_code": "", "http_status": "", "error_message": ""})
    summary = tally.summary(Path("r.csv"))
    assert list(summary.counts) == list(Status)
    assert summary.counts[Status.FAILED] == 4 and summary.counts[Status.SUCCEEDED] == 1
    assert sum(summary.counts.values()) == 7
    assert summary.top_errors == [("HTTP 503", 2, "busy"), ("(no code)", 2, "timed out")]


def test_the_tally_names_the_top_errors_only() -> None:
    """TOP_ERRORS codes, the most frequent first."""
    tally = Tally([])
    for n, code in enumerate("ABCDEFG"):
        for _ in range(n + 1):
            tally.count(2, Status.FAILED, {"error_code": code, "http_status": "400",
                                           "error_message": code.lower()})
    assert tally.top_errors() == [("G", 7, "g"), ("F", 6, "f"), ("E", 5, "e"),
                                  ("D", 4, "d"), ("C", 3, "c")]
    assert TOP_ERRORS == 5


@pytest.mark.parametrize(("statuses", "complete"), [
    ({2: Status.SUCCEEDED, 3: Status.SKIPPED}, True),
    ({2: Status.SUCCEEDED, 3: Status.FAILED}, False),
    ({2: Status.NOT_ATTEMPTED, 3: Status.SUCCEEDED}, False),
    ({2: Status.INVALID, 3: Status.SUCCEEDED}, False),
])
def test_a_run_is_complete_when_every_row_in_scope_is_done(
        statuses: dict[int, Status], complete: bool) -> None:
    """Succeeded and skipped are done; anything else in scope leaves the run incomplete."""
    tally = Tally([])
    for row, status in statuses.items():
        tally.in_scope(Outcome(row, status))
        tally.count(row, status, dict.fromkeys(REPORT_COLUMNS, ""))
    assert tally.summary(Path("r.csv")).complete is complete


@pytest.mark.parametrize(("owner", "duplicate_of", "complete"), [
    (Status.SUCCEEDED, 2, True), (Status.SKIPPED, 2, True), (Status.FAILED, 2, False),
    (Status.SUCCEEDED, None, False), (Status.SUCCEEDED, 9, False),
])
def test_a_duplicate_counts_by_the_row_it_points_at(
        owner: Status, duplicate_of: int | None, complete: bool) -> None:
    """A duplicate is done when its owner is; one that points at no row, or at a row never
    counted, is not."""
    rows = [SourceRow(2, "A", "02", ""),
            SourceRow(3, "A", "02", "", status=Status.DUPLICATE, duplicate_of=duplicate_of)]
    tally = Tally(rows)
    columns = dict.fromkeys(REPORT_COLUMNS, "")
    tally.in_scope(Outcome(2, owner))
    tally.count(2, owner, columns)
    tally.in_scope(Outcome(3, Status.DUPLICATE, duplicate_of=duplicate_of))
    tally.count(3, Status.DUPLICATE, columns)
    assert tally.summary(Path("r.csv")).complete is complete


def test_a_long_run_of_rows_not_to_send_is_written_to_its_end(tmp_path: Path) -> None:
    """Past the first few hundred rows (where Python's small numbers end) the writer still
    stops at the last row: every row once."""
    rows = [SourceRow(n, "bad", "02", "", status=Status.INVALID, message="bad key")
            for n in range(2, 302)]
    rows.append(SourceRow(302, "A", "02", ""))
    writer = ReportWriter(tmp_path / "r.jsonl", [], rows)
    writer.add(Outcome(302, Status.SUCCEEDED, attempts=1))
    assert writer.held == 0
    summary = writer.finish()
    assert summary.counts[Status.INVALID] == 300 and summary.counts[Status.SUCCEEDED] == 1
    lines = (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["row"] for line in lines] == [str(n) for n in range(2, 303)]


def test_aborting_twice_is_harmless(tmp_path: Path) -> None:
    """A run interrupted after the report already failed aborts it again: nothing to drop,
    nothing raised."""
    writer = ReportWriter(tmp_path / "r.csv", [], [SourceRow(2, "A", "02", "")])
    writer.abort()
    writer.abort()
    assert list(tmp_path.iterdir()) == []
