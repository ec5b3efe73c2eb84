"""The report tells the truth: answers we cannot read, the wrong tenant, work already done,
doubts that survive every stop, and a report that cannot be written.

Every case runs real files through the CLI (or the real runner) against the simulator over
loopback and checks what the server recorded, not only what the report says.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from batch_cancel.config import Settings
from batch_cancel.model import CancelJob, Outcome, Status
from batch_cancel.record.journal import read_journal
from batch_cancel.record.paths import journal_path
from batch_cancel.send.clock import Clock
from batch_cancel.send.limits import Limits
from batch_cancel.send.pool import Runner
from batch_cancel.send.zuora import Credentials, ZuoraClient, open_session
from tests.helpers import CliInvoker, FakeClock, RunningSimulator, read_report

CANCEL_ACCEPTED = frozenset({"CancelProcessing", "Cancelled"})


def sheet(make_csv: Callable[..., Path], count: int, name: str = "input.csv",
          extra: list[list[str]] | None = None) -> Path:
    """A plain month-end sheet: `count` ordinary invoices with reason 02, then `extra` rows."""
    rows = [["Invoice Number", "Reason", "Note"],
            *[[f"INV{n:05d}", "02", f"note {n}"] for n in range(1, count + 1)],
            *(extra or [])]
    return make_csv(rows, name=name)


def run_args(path: Path, sim: RunningSimulator, report: Path, *more: str) -> list[str]:
    return ["run", str(path), "--base-url", sim.url, "--report", str(report), "--no-progress",
            "--rate", "10000", *more]


def check_truth(sim: RunningSimulator, report: list[dict[str, str]], rows: int) -> None:
    """The oracle of this issue: every row once; a cancel never sent again for an invoice
    whose cancel was accepted unless a read of it came between; `succeeded` exactly when the
    simulator accepted our cancel; `skipped` only for invoices cancelled but not by us."""
    assert [int(r["row"]) for r in report] == list(range(2, rows + 2))
    accepted = sim.stats.accepted_cancels
    assert set(accepted.values()) <= {1}
    by_key: dict[str, list[tuple[str, int | None]]] = {}
    for record in sim.stats.requests:
        if record.key is not None:
            by_key.setdefault(record.key, []).append((record.method, record.status))
    for key, records in by_key.items():
        applied = False
        for method, _status in records:
            if method == "GET":
                applied = False  # a read came between: a resend is an informed decision
            elif method == "PUT":
                assert not applied, f"{key}: a cancel sent after one took effect: {records}"
                applied = key in accepted  # conservative: any PUT may be the accepted one
    for r in report:
        key, status = r["invoice_key"], r["status"]
        if status == "succeeded":
            assert key in accepted, f"row {r['row']} {key} succeeded, not cancelled by us"
        elif status == "skipped":
            assert key not in accepted and sim.simulator.invoice_status(key) in CANCEL_ACCEPTED
        else:
            assert key not in accepted, f"row {r['row']} {key} {status} but we cancelled it"


FAULTS = {
    "truncated_200_after_apply": {"truncated_after_apply": 0.5},
    "html_504_after_apply": {"html_504_after_apply": 0.5},
    "drop_before_and_after_apply": {"drop": 0.25, "drop_after_apply": 0.25},
    "slow_before_and_after_apply": {"slow": 0.15, "slow_before_apply": 0.15},
    "all_of_them": {"truncated_after_apply": 0.1, "html_504_after_apply": 0.1, "drop": 0.05,
                    "drop_after_apply": 0.05, "slow": 0.05, "slow_before_apply": 0.05},
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_answers_cut_off_after_the_cancel_took_effect_are_reported_succeeded(
        fault: str, sim: RunningSimulator, cli: CliInvoker,
        make_csv: Callable[..., Path]) -> None:
    """A cut-off 200, a gateway 504 page, a drop or a slow answer, before or after the cancel
    took effect: every row ends succeeded exactly when the simulator cancelled it."""
    for name, share in FAULTS[fault].items():
        setattr(sim.config, name, share)
    sim.config.slow_seconds = 1.5
    sim.config.seed = 7
    path = sheet(make_csv, 60)
    report = path.with_name("r.csv")
    result = cli(*run_args(path, sim, report, "--timeout", "1", "--max-attempts", "8"),
                 env=sim.env)
    rows = read_report(report)
    check_truth(sim, rows, 60)
    assert result.exit_code == 0, result.output
    assert [r["status"] for r in rows] == ["succeeded"] * 60
    assert len(sim.stats.accepted_cancels) == 60


def test_a_truncated_200_is_read_back_not_reported_failed(
        sim: RunningSimulator, cli: CliInvoker, make_csv: Callable[..., Path]) -> None:
    """Every cancel answered by a cut-off 200 is confirmed by one read, never resent."""
    sim.config.truncated_after_apply = 1.0
    path = sheet(make_csv, 10)
    report = path.with_name("r.csv")
    assert cli(*run_args(path, sim, report), env=sim.env).exit_code == 0
    rows = read_report(report)
    assert {r["status"] for r in rows} == {"succeeded"}
    assert all("verified after retry" in r["error_message"] for r in rows)
    assert sim.stats.cancel_requests == 10 and sim.stats.invoice_reads == 10


def test_resume_against_another_tenant_is_refused_before_any_request(
        sim: RunningSimulator, cli: CliInvoker, make_csv: Callable[..., Path]) -> None:
    """A journal belongs to one tenant: --resume pointed at another is refused, exit 2."""
    path = sheet(make_csv, 5)
    report = path.with_name("r.csv")
    assert cli(*run_args(path, sim, report), env=sim.env).exit_code == 0
    other = asyncio.new_event_loop()
    from batch_cancel.sim.server import Simulator, SimulatorConfig

    second = Simulator(SimulatorConfig())
    url = other.run_until_complete(second.start("127.0.0.1", 0))
    try:
        args = run_args(path, sim, report, "--resume")
        args[args.index(sim.url)] = url
        result = cli(*args, env=sim.env)
    finally:
        other.run_until_complete(second.stop())
        other.close()
    assert result.exit_code == 2, result.output
    assert "belongs to another tenant" in result.output
    assert sim.url in result.output and url in result.output
    assert "another --report" in result.output and "--overwrite" in result.output
    assert second.stats.requests == []


def test_resume_with_other_entity_ids_is_refused(
        sim: RunningSimulator, cli: CliInvoker, make_csv: Callable[..., Path]) -> None:
    """Another entity of the same tenant is another tenant for the journal."""
    path = sheet(make_csv, 3)
    report = path.with_name("r.csv")
    assert cli(*run_args(path, sim, report, "--entity-ids", "e1"), env=sim.env).exit_code == 0
    before = len(sim.stats.requests)
    result = cli(*run_args(path, sim, report, "--entity-ids", "e2", "--resume"), env=sim.env)
    assert result.exit_code == 2 and "entity_ids" in result.output
    assert len(sim.stats.requests) == before


def test_rerunning_a_finished_sheet_is_a_no_op_that_exits_0(
        sim: RunningSimulator, cli: CliInvoker, make_csv: Callable[..., Path]) -> None:
    """A scheduled re-run of a finished sheet: every row skipped, no new cancel, exit 0."""
    path = sheet(make_csv, 20, extra=[["INV-CANCELLED-0001", "02", "done before"]])
    first = path.with_name("first.csv")
    assert cli(*run_args(path, sim, first), env=sim.env).exit_code == 0
    accepted = dict(sim.stats.accepted_cancels)
    second = path.with_name("second.csv")
    result = cli(*run_args(path, sim, second), env=sim.env)
    assert result.exit_code == 0, result.output
    rows = read_report(second)
    assert {r["status"] for r in rows} == {"skipped"}
    assert rows[0]["error_message"] in (
        f"already {status} before this run; not sent again" for status in CANCEL_ACCEPTED)
    assert sim.stats.accepted_cancels == accepted
    first_rows = read_report(first)
    assert first_rows[-1]["status"] == "skipped"
    assert first_rows[-1]["error_message"] == "already Cancelled before this run; not sent again"


def test_preflight_plan_then_run_exits_0_when_every_sent_cancel_succeeds(
        sim: RunningSimulator, cli: CliInvoker, make_csv: Callable[..., Path]) -> None:
    """preflight → run PLAN --only not_attempted: already-cancelled rows are skipped, exit 0."""
    path = sheet(make_csv, 6, extra=[["INV-CANCELLED-0001", "02", "x"],
                                     ["INV-CANCELLED-0002", "02", "y"]])
    plan = path.with_name("plan.csv")
    result = cli("preflight", str(path), "--check-invoices", "--base-url", sim.url,
                 "--report", str(plan), env=sim.env)
    assert result.exit_code == 0, result.output
    statuses = [r["status"] for r in read_report(plan)]
    assert statuses == ["not_attempted"] * 6 + ["skipped"] * 2
    out = path.with_name("out.csv")
    result = cli(*run_args(plan, sim, out, "--only", "not_attempted"), env=sim.env)
    assert result.exit_code == 0, result.output
    assert sorted(sim.stats.accepted_cancels) == [f"INV{n:05d}" for n in range(1, 7)]
    assert [r["status"] for r in read_report(out)] == ["succeeded"] * 6 + ["skipped"] * 2


# --- a doubt is never dropped -----------------------------------------------------------------


async def _run(live_sim: RunningSimulator, jobs: list[CancelJob], limits: Limits,
               before: Callable[[Runner], None] | None = None,
               clock: Clock | None = None) -> dict[int, Outcome]:
    outcomes: dict[int, Outcome] = {}
    credentials = Credentials(live_sim.config.client_id, live_sim.config.client_secret)
    async with open_session() as session:
        client = ZuoraClient(session, live_sim.url, credentials, Settings(timeout=2))
        runner = Runner(client, limits, "run1", rng=random.Random(1), clock=clock)
        if before is not None:
            before(runner)
        await runner.run(jobs, lambda o: outcomes.__setitem__(o.row, o), total=len(jobs))
    return outcomes


async def test_a_row_in_doubt_stopped_before_its_check_stays_in_doubt(
        live_sim: RunningSimulator) -> None:
    """A resumed row in doubt that the run stops before reaching is failed and in doubt,
    never plain not_attempted; a row not in doubt is not_attempted."""
    jobs = [CancelJob(2, "INV00002", "02", in_doubt=True), CancelJob(3, "INV00003", "02")]
    outcomes = await _run(live_sim, jobs, Limits(1, None, 3),
                          before=lambda runner: runner.stop("test"))
    assert (outcomes[2].status, outcomes[2].in_doubt) == (Status.FAILED, True)
    assert (outcomes[3].status, outcomes[3].in_doubt) == (Status.NOT_ATTEMPTED, False)
    assert live_sim.stats.requests == []


async def test_a_row_stopped_between_attempts_while_in_doubt_stays_in_doubt(
        live_sim: RunningSimulator) -> None:
    """The first answer is lost after the cancel took effect; the run stops during the
    backoff: the row is reported in doubt (a resume reads it), not not_attempted."""
    live_sim.config.drop_after_apply = 1.0
    runners: list[Runner] = []

    def stop_the_run(_clock: FakeClock) -> None:
        """The first sleep (the backoff between two attempts) stops the run."""
        runners[0].stop("stopped between attempts")

    clock = FakeClock(start=0.0, on_sleep=stop_the_run)
    outcomes = await _run(live_sim, [CancelJob(2, "INV00002", "02")], Limits(1, None, 5),
                          before=runners.append, clock=clock)
    assert (outcomes[2].status, outcomes[2].in_doubt) == (Status.FAILED, True)
    assert "in doubt" in outcomes[2].error_message
    assert live_sim.stats.cancel_requests == 1


def test_a_stopped_resume_keeps_the_doubt_and_the_next_resume_reads_first(
        sim: RunningSimulator, cli: CliInvoker, make_csv: Callable[..., Path]) -> None:
    """Run, then a crash leaves row 3 in doubt; a resume that is itself stopped (bad
    credentials) keeps it in doubt in the journal and the report; a third run reads the
    invoice before anything is sent for it."""
    path = sheet(make_csv, 4)
    report = path.with_name("r.csv")
    assert cli(*run_args(path, sim, report), env=sim.env).exit_code == 0
    journal = journal_path(report)
    with journal.open("a") as handle:  # as if the process died mid-request on row 3
        handle.write(json.dumps({"event": "sent", "row": 3, "invoice_key": "INV00002",
                                 "attempt": 2, "track_id": "t"}) + "\n")
    bad = {**sim.env, "ZUORA_CLIENT_SECRET": "wrong"}
    stopped = cli(*run_args(path, sim, report, "--resume"), env=bad)
    assert stopped.exit_code == 3, stopped.output
    rows = {r["row"]: r for r in read_report(report)}
    assert (rows["3"]["status"], rows["3"]["in_doubt"]) == ("failed", "yes")
    assert 3 in read_journal(journal).in_doubt
    start = len(sim.stats.requests)
    third = cli(*run_args(path, sim, report, "--resume"), env=sim.env)
    assert third.exit_code == 0, third.output
    seen = [(r.method, r.key) for r in sim.stats.requests[start:] if r.key is not None]
    assert seen == [("GET", "INV00002")]  # read, found cancelled, nothing sent
    rows = {r["row"]: r for r in read_report(report)}
    assert rows["3"]["status"] == "succeeded"
    assert "verified after resume" in rows["3"]["error_message"]


# --- statuses Zuora may add ---------------------------------------------------------------------


async def test_an_unknown_status_in_the_doubt_read_is_neither_success_nor_resend(
        live_sim: RunningSimulator) -> None:
    """RetrieveTimeout (or any status we do not know) leaves the row in doubt, unsent, with
    Zuora's own remedy named."""
    live_sim.simulator.set_status("INV00002", "RetrieveTimeout")
    outcomes = await _run(live_sim, [CancelJob(2, "INV00002", "02", in_doubt=True)],
                          Limits(1, None, 3))
    assert (outcomes[2].status, outcomes[2].in_doubt) == (Status.FAILED, True)
    assert "Resync E-Invoice Status" in outcomes[2].error_message
    assert live_sim.stats.cancel_requests == 0
    live_sim.simulator.set_status("INV00003", "SomethingNew")
    outcomes = await _run(live_sim, [CancelJob(3, "INV00003", "02", in_doubt=True)],
                          Limits(1, None, 3))
    assert "SomethingNew" in outcomes[3].error_message and outcomes[3].in_doubt
    assert live_sim.stats.cancel_requests == 0


def test_verify_exits_6_while_some_cancels_are_pending_and_names_the_status(
        sim: RunningSimulator, cli: CliInvoker, make_csv: Callable[..., Path]) -> None:
    """Pending (in progress or an unknown status) has its own exit code; CancelFailed is 1."""
    sim.config.cancel_delay = 3600
    path = sheet(make_csv, 3)
    report = path.with_name("r.csv")
    assert cli(*run_args(path, sim, report), env=sim.env).exit_code == 0
    sim.simulator.set_status("INV00002", "RetrieveTimeout")
    result = cli("verify", str(report), "--base-url", sim.url, "--until", "0", env=sim.env)
    assert result.exit_code == 6, result.output
    notes = {r["invoice_key"]: r["verify_note"] for r in read_report(report)}
    assert "Resync E-Invoice Status" in notes["INV00002"]
    assert notes["INV00001"].startswith("pending")
    sim.simulator.set_status("INV00003", "CancelFailed")
    result = cli("verify", str(report), "--base-url", sim.url, "--until", "0", env=sim.env)
    assert result.exit_code == 1, result.output


def test_verify_refuses_a_report_of_another_tenant(
        sim: RunningSimulator, cli: CliInvoker, make_csv: Callable[..., Path]) -> None:
    """verify reads the tenant from the report's journal and refuses another one."""
    path = sheet(make_csv, 2)
    report = path.with_name("r.csv")
    assert cli(*run_args(path, sim, report, "--org-ids", "o1"), env=sim.env).exit_code == 0
    result = cli("verify", str(report), "--base-url", sim.url.replace("127.0.0.1", "localhost"),
                 "--until", "0", env=sim.env)
    assert result.exit_code == 2 and "belongs to another tenant" in result.output


# --- a report that cannot be written -----------------------------------------------------------


def test_a_report_that_cannot_be_written_exits_5_and_the_resume_rebuilds_it(
        sim: RunningSimulator, cli: CliInvoker, make_csv: Callable[..., Path]) -> None:
    """The report's place is taken mid-run (as a file locked by Excel would be): exit 5, one
    line with the path, the error, the journal and the rebuild command; that command then
    writes the whole report and sends nothing."""
    path = sheet(make_csv, 30)
    report = path.with_name("r.csv")
    sim.config.latency = 0.01

    def take_the_place(key: str) -> None:
        if len(sim.stats.accepted_cancels) == 5 and not report.exists():
            report.mkdir()  # os.replace onto a folder fails, even for root

    sim.simulator.on_accept = take_the_place
    result = cli(*run_args(path, sim, report, "--concurrency", "2"), env=sim.env)
    assert result.exit_code == 5, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("Could not write"))
    assert str(report) in line and "IsADirectoryError" in line
    assert str(journal_path(report)) in line
    command = line.split("with: ", 1)[1]
    assert command.endswith("--resume") and "--overwrite" not in command
    shutil.rmtree(report)
    sim.simulator.on_accept = None
    cancels = sim.stats.cancel_requests
    args = command.split()[1:]
    rebuilt = cli(*args, env=sim.env)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert sim.stats.cancel_requests == cancels
    assert [r["status"] for r in read_report(report)] == ["succeeded"] * 30


def test_a_report_folder_that_cannot_be_written_is_refused_before_any_request(
        sim: RunningSimulator, cli: CliInvoker, make_csv: Callable[..., Path],
        tmp_path: Path) -> None:
    """Checked by trying, not by asking: a report path under a file is refused, exit 2."""
    path = sheet(make_csv, 2)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    result = cli(*run_args(path, sim, blocker / "r.csv"), env=sim.env)
    assert result.exit_code == 2
    assert sim.stats.requests == []


# --- a report fed back in, and reason 01 without a reference --------------------------------------


def test_a_report_fed_back_leaves_out_final_failures_unless_edited(
        sim: RunningSimulator, cli: CliInvoker, make_csv: Callable[..., Path]) -> None:
    """Not-found rows are final: left out (the plan says so) until the user edits the row in
    their own column, which then wins over the derived invoice_key; --include-final sends all."""
    path = sheet(make_csv, 2, extra=[["INV-NOTFOUND-0001", "02", "typo"],
                                     ["INV-NOTFOUND-0002", "02", "typo"],
                                     ["INV 00009", "02", "space"]])
    first = path.with_name("first.csv")
    assert cli(*run_args(path, sim, first), env=sim.env).exit_code == 1
    rows = read_report(first)
    rows[2]["Invoice Number"] = "INV00003"  # the user fixes the typo in their own column
    rows[4]["Invoice Number"] = "INV00009"  # and the invalid key
    import csv

    with first.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    start = len(sim.stats.requests)
    second = path.with_name("second.csv")
    result = cli(*run_args(first, sim, second), env=sim.env)
    assert "left out: 1 failed rows whose answer was final (59210040 x1)" in result.output
    sent = [r.key for r in sim.stats.requests[start:] if r.method == "PUT"]
    assert sorted(sent) == ["INV00003", "INV00009"]
    assert result.exit_code == 0, result.output  # the carried-over not-found row is out of scope
    third = path.with_name("third.csv")
    result = cli(*run_args(second, sim, third, "--include-final"), env=sim.env)
    assert [r.key for r in sim.stats.requests if r.method == "PUT"][-1] == "INV-NOTFOUND-0002"
    assert result.exit_code == 1


def test_reason_01_without_reference_warns_or_is_invalid_when_required(
        sim: RunningSimulator, cli: CliInvoker, make_csv: Callable[..., Path]) -> None:
    """Zuora accepts it, SAT does not: a warning in the plan and the report's message, and
    --require-reference keeps such rows from being sent."""
    path = make_csv([["Invoice Number", "Reason", "Document Reference ID"],
                     ["INV00001", "01", "INV00099"], ["INV00002", "01", ""]])
    report = path.with_name("r.csv")
    result = cli(*run_args(path, sim, report), env=sim.env)
    assert result.exit_code == 0
    assert "warning: 1 rows: reason 01 without a documentReferenceID" in result.output
    assert "  row 3: INV00002" in result.output
    rows = read_report(report)
    assert rows[1]["status"] == "succeeded" and "SAT requires" in rows[1]["error_message"]
    assert "warning" not in rows[0]["error_message"]
    strict = path.with_name("strict.csv")
    result = cli(*run_args(path, sim, strict, "--require-reference"), env=sim.env)
    assert result.exit_code == 1
    assert read_report(strict)[1]["status"] == "invalid"
    assert [r.key for r in sim.stats.requests if r.method == "PUT"].count("INV00002") == 1


def test_a_report_row_in_doubt_is_read_before_it_is_sent_again(
        sim: RunningSimulator, cli: CliInvoker, make_csv: Callable[..., Path]) -> None:
    """Fed back in, a row the report marks in doubt is read first; found cancelled, it is
    succeeded with no second cancel."""
    import csv

    path = sheet(make_csv, 3)
    first = path.with_name("first.csv")
    assert cli(*run_args(path, sim, first), env=sim.env).exit_code == 0
    rows = read_report(first)
    rows[1].update(status="failed", in_doubt="yes", error_message="in doubt: test")
    with first.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    start = len(sim.stats.requests)
    second = path.with_name("second.csv")
    result = cli(*run_args(first, sim, second), env=sim.env)
    assert result.exit_code == 0, result.output
    seen = [(r.method, r.key) for r in sim.stats.requests[start:] if r.key is not None]
    assert seen == [("GET", "INV00002")]
    assert "verified after resume" in read_report(second)[1]["error_message"]
