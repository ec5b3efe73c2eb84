"""SIGKILL in the middle of a run, then `--resume`: nothing lost, nothing cancelled twice.

Real processes on both sides: `batch-cancel simulate` (latency, and 5 % of cancels applied
with the answer lost, so some rows are in doubt at any moment) and `batch-cancel run`
killed with SIGKILL, which no handler can catch: only what the journal already holds survives.
Kill points are counted from the first cancel the simulator sees, not from process start, so
every case really kills a run that is sending (start-up takes a few tenths of a second).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import BIN, SimulatorProcess, read_report, resends_after_acceptance

ROWS = 600
CLIENT_ID = "sim-client-id"
CLIENT_SECRET = "sim-client-secret"
CANCEL_ACCEPTED = frozenset({"CancelProcessing", "Cancelled"})


@pytest.fixture
def sim_process(request: pytest.FixtureRequest,
                simulator_process: Callable[..., SimulatorProcess]) -> SimulatorProcess:
    """A seeded simulator process (seed from the test's `seed` parameter, else 1): some
    latency, and 5 % of cancels applied with the answer lost."""
    seed = getattr(request, "param", 1)
    return simulator_process("--latency", "0.02", "--drop-after-apply", "0.05",
                             "--cancel-delay", "0.05", "--seed", str(seed))


@pytest.fixture
def job(tmp_path: Path) -> tuple[Path, Path]:
    """The input (ROWS rows, INV00001..., reason 02) and the report path."""
    path = tmp_path / "big.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["invoice", "reason"])
        writer.writerows([f"INV{n:05d}", "02"] for n in range(1, ROWS + 1))
    return path, tmp_path / "R.csv"


def command(sim: SimulatorProcess, path: Path, report: Path, *extra: str) -> list[str]:
    return [str(BIN), "run", str(path), "--base-url", sim.url, "--report", str(report),
            "--no-progress", "--log-format", "json", "--concurrency", "8", *extra]


ENV = {**os.environ, "ZUORA_CLIENT_ID": CLIENT_ID, "ZUORA_CLIENT_SECRET": CLIENT_SECRET}


def run_and_kill(sim: SimulatorProcess, path: Path, report: Path, after: float,
                 tmp_path: Path) -> None:
    """Start the job, SIGKILL it `after` seconds after the first cancel reached the server."""
    with (tmp_path / "killed.out").open("w") as out:
        process = subprocess.Popen(command(sim, path, report), env=ENV, stdout=out,
                                   stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while sim.get("stats")["cancel_requests"] == 0:
            assert process.poll() is None, (tmp_path / "killed.out").read_text()
            assert time.monotonic() < deadline, "no cancel reached the simulator"
            time.sleep(0.01)
        time.sleep(after)
        assert process.poll() is None, "the run finished before the kill point"
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    assert process.returncode == -signal.SIGKILL
    time.sleep(0.2)  # requests the dead client left behind finish on the server


def assert_journal_holds_no_secret(journal: Path, sim: SimulatorProcess) -> None:
    """The journal exists and holds neither the client secret nor any bearer token issued."""
    assert journal.exists(), f"no journal at {journal}"
    text = journal.read_text(encoding="utf-8")
    tokens = sim.get("tokens")["tokens"]
    assert tokens
    for secret in (CLIENT_SECRET, *tokens):
        assert secret not in text, "the journal holds a secret"
    assert "bearer" not in text.lower()


def journal_records(journal: Path) -> list[dict[str, Any]]:
    """The journal's JSON lines; a torn last line (killed mid-write) is skipped."""
    records = []
    for line in journal.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


@pytest.mark.parametrize(("sim_process", "after"), [(11, 0.3), (12, 0.8), (13, 1.5), (14, 2.5)],
                         indirect=["sim_process"], ids=["0.3s", "0.8s", "1.5s", "2.5s"])
def test_resume_after_sigkill_finishes_every_row_without_a_second_cancel(
        sim_process: SimulatorProcess, job: tuple[Path, Path], tmp_path: Path,
        after: float) -> None:
    """Killed mid-run, one --resume finishes: every row once, all cancelled once, rows in doubt
    read before anything is resent, and the journal holds no secret."""
    path, report = job
    run_and_kill(sim_process, path, report, after, tmp_path)
    journal = report.with_name(report.name + ".journal.jsonl")
    assert_journal_holds_no_secret(journal, sim_process)
    records = journal_records(journal)
    finished = {r["row"]: r for r in records if r.get("event") == "outcome"}
    before = sim_process.get("stats")
    applied_before = set(before["accepted_cancels"])
    seen_before = len(sim_process.get("requests")["requests"])
    assert 0 < len(applied_before) < ROWS, "the kill did not land mid-run"

    resumed = subprocess.run([*command(sim_process, path, report), "--resume"], env=ENV,
                             capture_output=True, text=True, timeout=120, check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-3000:]

    rows = read_report(report)
    assert [r["row"] for r in rows] == [str(n) for n in range(2, ROWS + 2)]
    assert Counter(r["status"] for r in rows) == {"succeeded": ROWS}
    stats = sim_process.get("stats")
    assert len(stats["accepted_cancels"]) == ROWS
    # across the killed run and the resume: no cancel after an accepted one without a read
    resent = resends_after_acceptance(sim_process.stats())
    assert not resent, resent[:10]
    # finished rows keep their outcome
    for r in rows:
        earlier = finished.get(int(r["row"]))
        if earlier is not None and earlier.get("status") == "succeeded":
            assert r["status"] == "succeeded" and r["track_id"] == earlier["track_id"], r
    # a key the killed run sent is first read, never blindly resent, by the resumed run
    new = sim_process.get("requests")["requests"][seen_before:]
    first_after: dict[str, dict[str, Any]] = {}
    for record in new:
        if record["key"] is not None:
            first_after.setdefault(record["key"], record)
    sent_before = {r["key"] for r in sim_process.get("requests")["requests"][:seen_before]
                   if r["method"] == "PUT" and r["key"] is not None}
    for key in sent_before:
        record = first_after.get(key)
        assert record is None or record["method"] == "GET", (
            f"{key} was sent before the kill and resent by --resume without a read first")
    # a row the journal records as finished is not touched again, not even read
    for r in rows:
        earlier = finished.get(int(r["row"]))
        if earlier is not None and earlier.get("status") == "succeeded":
            assert r["invoice_key"] not in first_after, r
    # rows the killed run had applied but not recorded are verified, not re-sent
    for r in rows:
        row = int(r["row"])
        if r["invoice_key"] in applied_before and row not in finished:
            assert "verified after resume" in r["error_message"], r
    assert_journal_holds_no_secret(journal, sim_process)


@pytest.mark.parametrize("sim_process", [21], indirect=True)
def test_rerun_after_sigkill_without_resume_or_overwrite_is_refused(
        sim_process: SimulatorProcess, job: tuple[Path, Path], tmp_path: Path) -> None:
    """After a kill, the same command without --resume/--overwrite exits 2 naming both flags,
    and sends nothing."""
    path, report = job
    run_and_kill(sim_process, path, report, 0.5, tmp_path)
    before = sim_process.get("stats")
    again = subprocess.run(command(sim_process, path, report), env=ENV, capture_output=True,
                           text=True, timeout=60, check=False)
    assert again.returncode == 2, again.stdout + again.stderr
    message = again.stdout + again.stderr
    assert "--resume" in message and "--overwrite" in message, message
    assert sim_process.get("stats") == before
