"""The worker pool with an in-memory sender on a fake clock: every row reported once, the
track ids, the events it tells, how far it reads ahead, and each way a run stops."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest

from batch_cancel.events import Event, Events, PoolLoad, PoolStopping, QuotaLow, RowFinished
from batch_cancel.model import Answer, CancelJob, InvoiceState, Outcome, Status, StopKind, Verdict
from batch_cancel.send.limits import Limits
from batch_cancel.send.pool import Runner
from batch_cancel.send.zuora import AuthenticationError
from tests.helpers import FakeClock, jobs

OK = Answer(Verdict.SUCCEEDED, http_status=200)


class Sender:
    """Answers every cancel with `answers` in turn (OK after them), or raises what `raises`
    maps the row to; records each call's track id, and how many jobs had been read by then."""

    def __init__(self, answers: list[Answer] | None = None,
                 raises: dict[int, BaseException] | None = None) -> None:
        self.answers = list(answers or [])
        self.raises = raises or {}
        self.track_ids: list[str] = []
        self.read_ahead: list[int] = []
        self.pulled = 0
        self.gate: asyncio.Event | None = None

    async def cancel(self, job: CancelJob, track_id: str) -> Answer:
        self.track_ids.append(track_id)
        self.read_ahead.append(self.pulled)
        if self.gate is not None:
            await self.gate.wait()
        if job.row in self.raises:
            raise self.raises[job.row]
        return self.answers.pop(0) if self.answers else OK

    async def ready(self) -> None:
        return None

    async def invoice_state(self, key: str, track_id: str) -> InvoiceState:
        raise AssertionError("no read: nothing was in doubt")

    def counted(self, items: list[CancelJob]) -> Iterator[CancelJob]:
        for job in items:
            self.pulled += 1
            yield job


async def run(runner: Runner, items: list[CancelJob], total: int | None = None
              ) -> dict[int, Outcome]:
    outcomes: dict[int, Outcome] = {}

    def collect(outcome: Outcome) -> None:
        assert outcome.row not in outcomes, "a row was reported twice"
        outcomes[outcome.row] = outcome

    await runner.run(items, collect, total=total)
    return outcomes


async def runner_over(runner: Runner, items: Iterator[CancelJob]) -> None:
    """Run over jobs read one at a time, as from a large file."""
    await runner.run(items, lambda outcome: None)


def pool(sender: Sender, concurrency: int = 1, seen: list[Event] | None = None,
         prefix: str = "bc", max_attempts: int = 1) -> Runner:
    events = Events(seen.append) if seen is not None else Events()
    return Runner(sender, Limits(concurrency=concurrency, rate=None, max_attempts=max_attempts),
                  "run1", prefix, clock=FakeClock(overlap=True), rng=random.Random(1),
                  events=events)


async def test_every_row_goes_once_with_a_track_id_of_prefix_run_and_row() -> None:
    sender = Sender()
    outcomes = await run(pool(sender, concurrency=2), jobs(3))
    assert sorted(sender.track_ids) == ["bc-run1-2", "bc-run1-3", "bc-run1-4"]
    assert {row: o.status for row, o in outcomes.items()} == {
        2: Status.SUCCEEDED, 3: Status.SUCCEEDED, 4: Status.SUCCEEDED}
    assert outcomes[3].track_id == "bc-run1-3"
    bare = Sender()
    await run(pool(bare, prefix=""), jobs(1))
    assert bare.track_ids == ["run1-2"]


async def test_the_pool_tells_its_load_before_the_first_row_and_after_each() -> None:
    """One window place (concurrency 1), unpaced: each row's status with the load after it,
    and at debug level each row's end."""
    seen: list[Event] = []
    failed = Answer(Verdict.FINAL, http_status=404, error_code="50000040")
    await run(pool(Sender([OK, failed]), seen=seen), jobs(2))
    assert seen == [PoolLoad(None, 0, 1, None, "unpaced"),
                    PoolLoad("succeeded", 0, 1, None, "unpaced"),
                    RowFinished(2, "succeeded", 1, 200, ""),
                    PoolLoad("failed", 0, 1, None, "unpaced"),
                    RowFinished(3, "failed", 1, 404, "50000040")]


async def test_a_row_finished_event_is_not_built_when_nobody_wants_it() -> None:
    seen: list[Event] = []

    class Quiet:
        def __call__(self, event: Event) -> None:
            seen.append(event)

        def wants(self, kind: type[Event]) -> bool:
            return kind is not RowFinished

    runner = Runner(Sender(), Limits(concurrency=1, rate=None, max_attempts=1), "run1",
                    clock=FakeClock(overlap=True), events=Events(Quiet()))
    await run(runner, jobs(2))
    assert [type(e) for e in seen] == [PoolLoad] * 3


async def test_the_pool_reads_two_jobs_a_worker_ahead_and_no_more() -> None:
    """The queue holds 2 x concurrency jobs: when the first request leaves, one worker's
    pool has read its job, two queued, and the producer holds the next, waiting."""
    for concurrency, ahead in ((1, 3), (2, 5)):
        sender = Sender()
        await runner_over(pool(sender, concurrency), sender.counted(jobs(12)))
        assert sender.read_ahead[0] == ahead, concurrency
        assert sender.pulled == 12


async def test_a_stop_is_told_once_and_the_rows_not_started_are_not_attempted() -> None:
    seen: list[Event] = []
    sender = Sender()
    runner = pool(sender, seen=seen)
    assert (runner.stopping, runner.stop_reason, runner.stop_kind) == (False, "", None)

    async def stop_at_first(job: CancelJob, track_id: str) -> Answer:
        runner.stop("operator", StopKind.INTERRUPTED)
        runner.stop("again", StopKind.QUOTA)
        return OK

    sender.cancel = stop_at_first  # type: ignore[method-assign]
    outcomes = await run(runner, jobs(8))
    assert (runner.stopping, runner.stop_reason, runner.stop_kind) == (
        True, "operator", StopKind.INTERRUPTED)
    assert [e for e in seen if isinstance(e, PoolStopping)] == [
        PoolStopping("operator", "interrupted")]
    assert outcomes[2].status is Status.SUCCEEDED
    assert {row: (o.status, o.error_message) for row, o in outcomes.items() if row > 2} == {
        row: (Status.NOT_ATTEMPTED, "not sent: operator") for row in range(3, 10)}


async def test_refused_credentials_stop_the_run_and_the_first_error_is_kept() -> None:
    """Rows 2 and 3 in flight together both meet refused credentials: the run stops for
    the first; every row not answered is not attempted."""
    first, second = AuthenticationError("bad secret"), AuthenticationError("bad again")
    sender = Sender(raises={2: first, 3: second})
    sender.gate = asyncio.Event()
    runner = pool(sender, concurrency=2)
    task = asyncio.ensure_future(run(runner, jobs(5)))
    for _ in range(10):
        await asyncio.sleep(0)
    sender.gate.set()
    outcomes = await task
    assert sender.track_ids == ["bc-run1-2", "bc-run1-3"]
    assert runner.auth_error is first
    assert (runner.stop_reason, runner.stop_kind) == (
        "authentication failed: bad secret", StopKind.AUTH)
    assert {row: o.status for row, o in outcomes.items()} == {
        row: Status.NOT_ATTEMPTED for row in range(2, 7)}


async def test_one_rows_bug_fails_that_row_in_doubt_and_the_others_go_on() -> None:
    sender = Sender(raises={3: ValueError("boom")})
    outcomes = await run(pool(sender), jobs(3))
    assert (outcomes[3].status, outcomes[3].error_message, outcomes[3].in_doubt) == (
        Status.FAILED, "unexpected error: ValueError: boom", True)
    assert outcomes[3].ever_in_doubt
    assert (outcomes[2].status, outcomes[4].status) == (Status.SUCCEEDED, Status.SUCCEEDED)
    assert not outcomes[2].ever_in_doubt


async def test_a_cancelled_run_reports_rows_in_flight_in_doubt_and_the_rest_unsent() -> None:
    sender = Sender()
    sender.gate = asyncio.Event()  # no answer ever comes
    runner = pool(sender, concurrency=2)
    outcomes: dict[int, Outcome] = {}
    task = asyncio.ensure_future(runner.run(jobs(6), lambda o: outcomes.setdefault(o.row, o)))
    for _ in range(10):
        await asyncio.sleep(0)
    assert sorted(sender.track_ids) == ["bc-run1-2", "bc-run1-3"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert {row: (o.status, o.in_doubt) for row, o in outcomes.items()} == {
        2: (Status.FAILED, True), 3: (Status.FAILED, True)}


async def test_the_rows_left_are_the_total_less_the_rows_reported() -> None:
    """The daily quota is weighed against the rows still to report: 5 in all, two done, so
    2 left of the quota is short of the 3 rows left."""
    daily = [Answer(Verdict.SUCCEEDED, http_status=200, quota_remaining=q, quota_window=86400)
             for q in (10, 10, 2)]
    seen: list[Event] = []
    await run(pool(Sender(list(daily)), seen=seen), jobs(3), total=5)
    assert [e for e in seen if isinstance(e, QuotaLow)] == [QuotaLow(2, 3, 86400)]
    unknown: list[Event] = []
    await run(pool(Sender(list(daily)), seen=unknown), jobs(3))
    assert [e for e in unknown if isinstance(e, QuotaLow)] == []


async def test_a_failing_outcome_sink_still_lets_every_row_in_flight_be_reported() -> None:
    """The sink fails on row 2 (a full disk, say): the run ends with that error, but only
    after the other worker's row, cut off in flight, was reported in doubt (its client
    took a few turns of the loop to give up)."""
    stuck = asyncio.Event()

    class Sender2(Sender):
        async def cancel(self, job: CancelJob, track_id: str) -> Answer:
            self.track_ids.append(track_id)
            if job.row != 2:
                try:
                    await stuck.wait()
                finally:  # as a real client does: closing the connection takes turns
                    for _ in range(3):
                        await asyncio.sleep(0)
            return OK

    reported: list[tuple[int, Status, bool]] = []

    def sink(outcome: Outcome) -> None:
        reported.append((outcome.row, outcome.status, outcome.in_doubt))
        if outcome.row == 2:
            raise OSError("disk full")

    runner = pool(Sender2(), concurrency=2)
    try:
        await runner.run(jobs(4), sink)
    except OSError as exc:
        assert str(exc) == "disk full"
    else:
        raise AssertionError("the sink's error was lost")
    assert reported == [(2, Status.SUCCEEDED, False), (3, Status.FAILED, True)]


async def test_an_outcome_sink_that_always_fails_ends_the_run_with_its_error() -> None:
    """Every outcome fails to be recorded: each worker dies on its first row, and the run
    ends with the error (it used to wait for room in the queue for ever)."""
    def full_disk(outcome: Outcome) -> None:
        raise OSError("disk full")

    runner = pool(Sender(), concurrency=2)
    with pytest.raises(OSError, match="disk full"):
        await asyncio.wait_for(runner.run(jobs(20), full_disk), 30.0)  # a hang guard
