"""Outages, quotas, in-doubt answers, resume and authentication failures mid-run."""

from __future__ import annotations

import asyncio
import json
import random

import structlog

from batch_cancel.config import Settings
from batch_cancel.model import Answer, CancelJob, InvoiceState, Outcome, Status, StopKind
from batch_cancel.record.paths import journal_path
from batch_cancel.send.limits import Limits
from batch_cancel.send.pool import Runner
from batch_cancel.send.retry import Backoff
from batch_cancel.send.zuora import Credentials, ZuoraClient, open_session
from tests.helpers import FakeClock, jobs, read_report, requests_by_key, resends_after_acceptance


async def run_jobs(live_sim, job_list, limits: Limits, client_wrapper=None, **kwargs):
    outcomes: dict[int, Outcome] = {}

    def collect(outcome: Outcome) -> None:
        assert outcome.row not in outcomes, "a row was reported twice"
        outcomes[outcome.row] = outcome

    credentials = Credentials(live_sim.config.client_id, live_sim.config.client_secret)
    async with open_session() as session:
        client = ZuoraClient(session, live_sim.url, credentials, Settings(),
                             sleep=lambda s: asyncio.sleep(0))
        sender = client_wrapper(client) if client_wrapper else client
        runner = Runner(sender, limits, "run1", rng=random.Random(3), **kwargs)
        await runner.run(job_list, collect, total=len(job_list))
    return outcomes, runner


async def test_an_outage_opens_the_breaker_and_probes_one_request_at_a_time(live_sim) -> None:
    """During an outage only a trickle of probes is sent; afterwards every row succeeds."""
    live_sim.config.fail_503 = 1.0

    def end_outage(clock: FakeClock) -> None:
        if clock.t > 1030:
            live_sim.config.fail_503 = 0.0

    limits = Limits(concurrency=6, rate=None, max_attempts=3, outage_threshold=5,
                    backoff=Backoff(base=1.0, cap=8.0))
    outcomes, runner = await run_jobs(live_sim, jobs(60), limits,
                                      clock=FakeClock(on_sleep=end_outage))
    assert runner.stop_kind is None
    assert [o.status for o in outcomes.values()] == [Status.SUCCEEDED] * 60
    failed_requests = [r for r in live_sim.stats.requests if r.status == 503]
    # the threshold, what was already in flight, then single probes at growing intervals
    assert len(failed_requests) < 5 + 6 + 12
    assert not resends_after_acceptance(live_sim.stats)
    assert len(live_sim.stats.accepted_cancels) == 60


async def test_an_outage_longer_than_the_window_stops_cleanly(live_sim) -> None:
    """Past --outage-window the run stops: rows unsent are not_attempted, none lost."""
    live_sim.config.fail_503 = 1.0
    limits = Limits(concurrency=4, rate=None, max_attempts=3, outage_threshold=4,
                    outage_window=20.0, backoff=Backoff(base=1.0, cap=8.0))
    outcomes, runner = await run_jobs(live_sim, jobs(40), limits, clock=FakeClock())
    assert runner.stop_kind is StopKind.OUTAGE
    assert "did not answer" in runner.stop_reason
    assert len(outcomes) == 40
    statuses = {o.status for o in outcomes.values()}
    assert statuses <= {Status.NOT_ATTEMPTED, Status.FAILED}
    # a row whose last request was a cancel answered 503 (or nothing) was left unchecked: it
    # must say so, failed and in doubt; every other row was never sent or read back unapplied
    last = {key: records[-1] for key, records in requests_by_key(live_sim.stats).items()}
    for job in jobs(40):
        record = last.get(job.invoice_key)
        unchecked = record is not None and record.method == "PUT" and record.status != 200
        outcome = outcomes[job.row]
        assert (outcome.status is Status.FAILED, outcome.in_doubt) == (unchecked, unchecked), (
            job, record, outcome)
    assert sum(o.status is Status.NOT_ATTEMPTED for o in outcomes.values()) >= 30
    assert live_sim.stats.accepted_cancels == {}


async def test_a_daily_quota_at_zero_stops_the_run_after_one_warning(live_sim) -> None:
    """RateLimit-Remaining for the day window: warn once when short, stop at 0."""
    live_sim.config.rate_limit = 12
    live_sim.config.rate_window = 86400.0
    with structlog.testing.capture_logs() as events:
        outcomes, runner = await run_jobs(live_sim, jobs(30), Limits(2, None, 3))
    assert runner.stop_kind is StopKind.QUOTA
    assert len(outcomes) == 30
    succeeded = [o for o in outcomes.values() if o.status is Status.SUCCEEDED]
    assert 10 <= len(succeeded) <= 12
    assert [e["event"] for e in events].count("quota.low") == 1
    assert {o.status for o in outcomes.values()} == {Status.SUCCEEDED, Status.NOT_ATTEMPTED}


class StaleRead:
    """A real client whose first invoice read is stale (still `Success`), as a replica may be."""

    def __init__(self, inner: ZuoraClient) -> None:
        self.inner = inner
        self.stale_reads = 1

    async def cancel(self, job: CancelJob, track_id: str) -> Answer:
        return await self.inner.cancel(job, track_id)

    async def ready(self) -> None:
        return None

    async def invoice_state(self, key: str, track_id: str) -> InvoiceState:
        state = await self.inner.invoice_state(key, track_id)
        if self.stale_reads:
            self.stale_reads -= 1
            return InvoiceState("Success", state.answer)
        return state


async def test_a_second_cancel_refused_after_our_own_in_doubt_attempt_is_succeeded(
        live_sim) -> None:
    """Category 30 after an applied-but-unanswered cancel is checked: the row succeeded."""
    live_sim.config.drop_after_apply = 1.0
    outcomes, _ = await run_jobs(live_sim, jobs(1), Limits(1, None, 4), client_wrapper=StaleRead,
                                 clock=FakeClock())
    outcome = outcomes[2]
    assert outcome.status is Status.SUCCEEDED, outcome
    assert "verified after retry" in outcome.error_message
    assert live_sim.stats.accepted_cancels == {"INV00002": 1}


async def test_giving_up_after_an_in_doubt_answer_reads_the_invoice_once_more(live_sim) -> None:
    """Out of attempts after a dropped answer: the invoice is read before declaring failure."""
    live_sim.config.drop = 1.0
    outcomes, _ = await run_jobs(live_sim, jobs(1), Limits(1, None, 2), clock=FakeClock())
    assert outcomes[2].status is Status.FAILED
    assert not outcomes[2].in_doubt  # the read showed the cancel was not applied
    methods = [(r.method, r.status) for r in live_sim.stats.requests if r.key]
    assert methods == [("PUT", None), ("GET", 200), ("PUT", None), ("GET", 200)]


async def test_rows_marked_in_doubt_by_a_resume_are_read_before_any_cancel(live_sim) -> None:
    """A row sent by a killed run is verified, not sent again, when already cancelling."""
    async with open_session() as session:
        credentials = Credentials(live_sim.config.client_id, live_sim.config.client_secret)
        client = ZuoraClient(session, live_sim.url, credentials, Settings())
        await client.cancel(CancelJob(2, "INV00002", "02"), "earlier-run-2")
    resumed = [CancelJob(2, "INV00002", "02", in_doubt=True),
               CancelJob(3, "INV00003", "02", in_doubt=True)]
    outcomes, _ = await run_jobs(live_sim, resumed, Limits(2, None, 3))
    assert "verified after resume" in outcomes[2].error_message
    assert outcomes[2].status is Status.SUCCEEDED and outcomes[3].status is Status.SUCCEEDED
    assert live_sim.stats.accepted_cancels == {"INV00002": 1, "INV00003": 1}
    assert live_sim.stats.cancel_requests == 2  # the earlier one and row 3's


def test_resume_keeps_finished_rows_and_checks_rows_in_doubt(sim, cli, make_csv) -> None:
    """--resume: finished rows are not sent again, in-doubt rows are read first, the rest sent."""
    path = make_csv([["invoice", "reason"], *[[f"INV{n:05d}", "2"] for n in range(2, 8)]])
    report = path.with_name("r.csv")
    args = ["run", str(path), "--base-url", sim.url, "--report", str(report), "--no-progress"]
    assert cli(*args, env=sim.env).exit_code == 0
    journal = journal_path(report)
    lines = journal.read_text().splitlines()
    # pretend the run died: drop the outcomes of rows 5-7, keep row 5's `sent` record
    kept = [line for line in lines
            if not (json.loads(line).get("row") in (5, 6, 7)
                    and (json.loads(line)["event"] == "outcome"
                         or json.loads(line).get("row") != 5))]
    journal.write_text("\n".join(kept) + "\n")
    report.unlink()
    before = sim.stats.cancel_requests
    result = cli(*args, "--resume", env=sim.env)
    # rows 6 and 7 were cancelled, but no journal shows it: already done before this run
    assert result.exit_code == 0, result.output
    assert "Resuming: 3 rows already finished" in result.output
    rows = {r["row"]: r for r in read_report(report)}
    assert [rows[str(n)]["status"] for n in range(2, 5)] == ["succeeded"] * 3
    assert "verified after resume" in rows["5"]["error_message"]
    assert sim.stats.cancel_requests - before == 2  # rows 6 and 7 only: never sent for 2-5
    assert [rows[n]["status"] for n in ("6", "7")] == ["skipped"] * 2
    assert rows["6"]["error_message"] in ("already CancelProcessing before this run; not sent "
                                          "again", "already Cancelled before this run; not "
                                          "sent again")


def test_resume_refuses_a_changed_input(sim, cli, make_csv) -> None:
    """A resume must not send rows nobody checked: a changed input is refused."""
    path = make_csv([["invoice", "reason"], ["A1", "2"]])
    args = ["run", str(path), "--base-url", sim.url, "--no-progress"]
    cli(*args, env=sim.env)
    path.write_text("invoice,reason\nA1,2\nA2,2\n")
    before = sim.stats.cancel_requests
    result = cli(*args, "--resume", env=sim.env)
    assert result.exit_code == 2 and "changed" in result.output
    assert sim.stats.cancel_requests == before


def test_resume_without_a_journal_is_refused(sim, cli, make_csv) -> None:
    """Nothing to resume: said clearly, nothing sent."""
    path = make_csv([["invoice", "reason"], ["A1", "2"]])
    result = cli("run", str(path), "--base-url", sim.url, "--resume", env=sim.env)
    assert result.exit_code == 2 and "nothing to resume" in result.output
    assert sim.stats.requests == []


def test_credentials_revoked_mid_run_abort_with_exit_3_without_spinning(sim, cli, make_csv
                                                                         ) -> None:
    """A token endpoint that starts refusing stops the run (exit 3); rows left not_attempted."""
    sim.config.latency = 0.01
    path = make_csv([["invoice", "reason"], *[[f"INV{n:05d}", "2"] for n in range(200)]])

    def revoke() -> None:
        sim.config.client_secret = "rotated"
        sim.simulator.expire_tokens()

    import threading

    threading.Timer(0.3, revoke).start()
    result = cli("run", str(path), "--base-url", sim.url, "--no-progress", "--concurrency", "4",
                 env=sim.env)
    assert result.exit_code == 3, result.output
    statuses = [r["status"] for r in read_report(path.with_name("input.report.csv"))]
    assert len(statuses) == 200 and "not_attempted" in statuses and "failed" not in statuses
    assert sim.stats.token_requests <= 3


def test_journal_records_sent_before_outcome_and_holds_no_secret(sim, cli, make_csv) -> None:
    """Every cancel has a `sent` record before its outcome; no secret or token is written."""
    path = make_csv([["invoice", "reason"], *[[f"INV{n:05d}", "2"] for n in range(20)]])
    cli("run", str(path), "--base-url", sim.url, "--no-progress", env=sim.env)
    text = journal_path(path.with_name("input.report.csv")).read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert records[0]["event"] == "run" and records[0]["input_sha256"]
    for row in range(2, 22):
        events = [r["event"] for r in records if r.get("row") == row]
        assert events == ["sent", "outcome"]
    for secret in [sim.config.client_secret, *sim.simulator.issued_tokens()]:
        assert secret not in text


async def test_stop_during_a_long_429_pause_returns_at_once(live_sim) -> None:
    """A stop while the pool waits out Retry-After: 120 ends the wait, it does not spin or sleep."""
    live_sim.config.concurrency_limit = 1
    live_sim.config.latency = 0.2
    live_sim.config.concurrency_retry_after = 120
    outcomes: dict[int, Outcome] = {}
    napping = asyncio.Event()
    clock = FakeClock(wakes=False, on_sleep=lambda _clock: napping.set())
    credentials = Credentials(live_sim.config.client_id, live_sim.config.client_secret)
    async with open_session() as session:
        client = ZuoraClient(session, live_sim.url, credentials, Settings())
        runner = Runner(client, Limits(4, None, 3, tenant_share=1.0), "r", clock=clock)
        task = asyncio.create_task(runner.run(jobs(20), lambda o: outcomes.__setitem__(o.row, o)))
        while runner.limiter.paused_until != 1120.0:  # a concurrency 429 at a window of one
            await asyncio.wait_for(napping.wait(), 30)
            napping.clear()
        runner.stop("test")
        await asyncio.wait_for(task, 30)  # a bound for a hang: no nap ever ends by itself
    assert len(outcomes) == 20
    assert max(clock.sleeps) > 119.0  # the pool was waiting out Retry-After when stopped
