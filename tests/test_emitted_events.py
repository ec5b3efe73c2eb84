"""verify and the report writer emit typed events: the names and keys the schema lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from batch_cancel.config import Settings, Target
from batch_cancel.events import Event, Events, ReportEncodingChanged
from batch_cancel.model import Outcome, SourceRow, Status
from batch_cancel.read.sheetfacts import CsvDialect
from batch_cancel.record.writer import write_report
from batch_cancel.send.zuora import Credentials
from batch_cancel.verify import VerifyOptions, verify
from tests.helpers import run_args


def cp1252_report(path: Path, events: Events | None = None) -> None:
    """A ;/cp1252 report that a Zuora message in Japanese forces to UTF-8."""
    rows = [SourceRow(2, "INV-1", "01", "", ("Peña",), columns=("Note",))]
    outcomes = {2: Outcome(2, Status.FAILED, 400, "50000040", "請求書は取消済みです")}
    write_report(path, ["Note"], rows, outcomes, dialect=CsvDialect(";", "cp1252"),
                 events=events)


def test_the_report_says_it_changed_encoding_as_a_typed_event(tmp_path: Path) -> None:
    """On the bus it is given: one `ReportEncodingChanged` record, cp1252 to UTF-8."""
    seen: list[Event] = []
    cp1252_report(tmp_path / "r.csv", Events(seen.append))
    assert seen == [ReportEncodingChanged("cp1252", "utf-8-sig", "a value does not fit cp1252")]


def test_the_report_logs_its_encoding_change_by_its_documented_name(tmp_path: Path) -> None:
    """Without a bus, the package's logger writes `report.encoding_changed` as before."""
    with structlog.testing.capture_logs() as logs:
        cp1252_report(tmp_path / "r.csv")
    assert logs == [{"event": "report.encoding_changed", "log_level": "warning",
                     "old": "cp1252", "new": "utf-8-sig",
                     "reason": "a value does not fit cp1252"}]


def test_verify_logs_its_events_with_their_documented_keys(sim: Any, cli: Any,
                                                           make_csv: Any) -> None:
    """verify.started, one verify.round per round, verify.finished with a count per status."""
    path = make_csv([["Invoice Number", "Reason"], ["INV00001", "2"], ["INV00002", "2"]])
    report = path.with_name("r.csv")
    assert cli(*run_args(sim, path, "--report", str(report)), env=sim.env).exit_code == 0
    options = VerifyOptions(report, Target(sim.url, "custom"),
                            Credentials(sim.config.client_id, sim.config.client_secret),
                            settings=Settings(concurrency=4), until=20)
    with structlog.testing.capture_logs() as logs:
        summary = verify(options)
    assert summary.exit_code == 0
    mine = [e for e in logs if e["event"].startswith("verify.")]
    assert mine[0] == {"event": "verify.started", "log_level": "info",
                       "report": str(report), "to_check": 2}
    assert mine[-1] == {"event": "verify.finished", "log_level": "info",
                        "report": str(report), "count_Cancelled": 2}
    rounds = mine[1:-1]
    assert rounds and all(set(e) == {"event", "log_level", "pending", "checked"}
                          for e in rounds)
    assert rounds[-1]["pending"] == 0 and rounds[-1]["checked"] == 2
