"""One row's life driven directly: a scripted sender, the pool's real limits, a fake clock.

Every answer and every read of the invoice is the test's, the clock moves only when the row
or the limits sleep, and the backoff draws a fixed fraction of its ceiling, so each schedule,
attempt count and outcome is asserted exactly. The in-doubt rules are the point: a cancel
that may have been applied is never sent again before a read says it was not, and a row
stopped while in doubt (or resumed in doubt and stopped before its check) stays in doubt.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import pytest

from batch_cancel.events import Event, Events, RowRetryScheduled
from batch_cancel.model import (
    Answer,
    CancelJob,
    InvoiceState,
    Outcome,
    Status,
    StopKind,
    Verdict,
)
from batch_cancel.send.clock import Stop
from batch_cancel.send.limits import Limiter, Limits
from batch_cancel.send.retry import Backoff
from batch_cancel.send.row import REFUSED_AFTER_ATTEMPT, RowLife, RowState, SentSink
from tests.helpers import FakeClock

#: a mutant that leaves a request or a wait hanging fails in seconds, not at the suite's
#: two minutes (nothing here runs on real time: a test takes milliseconds)
pytestmark = pytest.mark.timeout(10)

#: the share of its ceiling every backoff (and pause spread) draws: 1 s, 2 s, 4 s ... times this
F = 0.1234567
TRACK = "bc-run1-2"
JOB = CancelJob(2, "INV00002", "02")

OK = Answer(Verdict.SUCCEEDED, 200, zuora_request_id="R-ok")
LOCKED = Answer(Verdict.RETRY, 200, "59210050", "invoice locked")
UNAVAILABLE = Answer(Verdict.RETRY, 503, error_message="Service Unavailable", in_doubt=True)
CANCELLING = Answer(Verdict.FINAL, 200, "59210030", "already cancelling")
INVALID = Answer(Verdict.FINAL, 200, "59210020", "bad reason")
REFUSED_TOKEN = Answer(Verdict.RETRY, 401, token_refused=True)
RATE_429 = Answer(Verdict.RETRY, 429, "", "too many requests", retry_after=7.0,
                  rate_limited=True)
READ_OK = Answer(Verdict.SUCCEEDED, 200, zuora_request_id="R-read")


def read(status: str | None, answer: Answer = READ_OK, code: str = "") -> InvoiceState:
    return InvoiceState(status, answer, einvoice_error_code=code)


APPROVED = read("Success")  # no cancel applied
ACCEPTED = read("CancelProcessing")
TAX_REFUSED = read("CancelFailed", code="TAX-9")
SLOW_VENDOR = read("RetrieveTimeout")
UNREADABLE = read(None, UNAVAILABLE)
NO_SUCH_INVOICE = read(None, Answer(Verdict.FINAL, 404, "59210040", "not found"))


class Fraction(random.Random):
    """Draws `share` of every range: uniform(a, b) is a + (b - a) * share."""

    def __init__(self, share: float) -> None:
        super().__init__(0)
        self.share = share

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.share


#: one scripted step: what the sender returns, raises, or a function of the harness giving it
Step = object


@dataclass
class Harness:
    """A RowLife on the real Limiter, with what it did recorded."""

    clock: FakeClock
    cancels: list[Step]
    reads: list[Step]
    max_attempts: int = 3
    budget: float = math.inf
    calls: list[tuple[str, float]] = field(default_factory=list)
    sent: list[tuple[int, int, str]] = field(default_factory=list)
    withdrawn: list[tuple[int, int]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    on_sent: SentSink | None = None
    draw: float = F
    #: what happens while the client makes sure of its token, call by call (None: nothing)
    on_ready: list[Callable[[Harness], None] | None] = field(default_factory=list)
    #: when the client was asked to make sure of its token
    readied: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = Fraction(self.draw)
        self.stop = Stop(self.clock)
        bus = Events(self.events.append)
        limits = Limits(concurrency=1, rate=None, max_attempts=self.max_attempts,
                        backoff=Backoff(1.0, 60.0), retry_budget=self.budget)
        self.limiter = Limiter(limits, self.clock, rng, bus, self.stop,
                               lambda reason, kind: None, lambda: 1)
        self.life = RowLife(self, self.limiter, limits.retry, self.clock, rng, bus, self.stop,
                            lambda row: f"bc-run1-{row}", self.record_sent, self.record_withdrawn)

    def record_sent(self, job: CancelJob, attempt: int, track_id: str) -> Awaitable[None] | None:
        self.sent.append((job.row, attempt, track_id))
        return self.on_sent(job, attempt, track_id) if self.on_sent else None

    def record_withdrawn(self, job: CancelJob, attempt: int) -> None:
        self.withdrawn.append((job.row, attempt))

    def halt(self, reason: str = "user interrupt") -> None:
        self.stop.set(reason, StopKind.INTERRUPTED)

    def _next(self, script: list[Step]) -> object:
        step = script.pop(0)
        if callable(step):
            step = step(self)
        if isinstance(step, BaseException):
            raise step
        return step

    async def cancel(self, job: CancelJob, track_id: str) -> Answer:
        assert track_id == TRACK
        self.calls.append(("cancel", self.clock.t))
        answer = self._next(self.cancels)
        assert isinstance(answer, Answer)
        return answer

    async def ready(self) -> None:
        self.readied.append(self.clock.t)
        do = self.on_ready.pop(0) if self.on_ready else None
        if do is not None:
            do(self)

    async def invoice_state(self, key: str, track_id: str) -> InvoiceState:
        assert (key, track_id) == (JOB.invoice_key, TRACK)
        self.calls.append(("read", self.clock.t))
        state = self._next(self.reads)
        assert isinstance(state, InvoiceState)
        return state

    async def run(self, job: CancelJob = JOB, state: RowState | None = None) -> Outcome:
        outcome = await self.life.process(job, state or RowState.of(job))
        assert self.cancels == [] and self.reads == [], "the script was not used up"
        return replace(outcome, finished_at="")

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]

    def retries(self) -> list[tuple[int, int, float, int | None, str, str]]:
        return [(e.row, e.attempt, e.delay, e.http_status, e.error_code, e.error_message)
                for e in self.events if isinstance(e, RowRetryScheduled)]


def harness(cancels: list[Step], reads: list[Step] | None = None, start: float = 0.0,
            **options: object) -> Harness:
    return Harness(FakeClock(start=start), list(cancels), list(reads or []),
                   **options)  # type: ignore[arg-type]


def then(answer: object, do: Callable[[Harness], None]) -> Callable[[Harness], object]:
    """A step that does something (stop the run, say) as the request is answered."""
    def step(h: Harness) -> object:
        do(h)
        return answer
    return step


def outcome(status: Status, http: int | None, code: str, message: str, attempts: int,
            in_doubt: bool = False, request_id: str = "") -> Outcome:
    return Outcome(JOB.row, status, http, code, message, attempts, TRACK, request_id, "", "",
                   in_doubt)


# --- retries ---------------------------------------------------------------------------


async def test_an_accepted_cancel_is_sent_once_journalled_first() -> None:
    h = harness([OK])
    assert await h.run() == outcome(Status.SUCCEEDED, 200, "", "", 1, request_id="R-ok")
    assert (h.sent, h.withdrawn, h.calls, h.clock.sleeps) == ([(2, 1, TRACK)], [],
                                                               [("cancel", 0.0)], [])


async def test_a_retryable_answer_is_retried_after_full_jitter_backoff_until_max_attempts(
        ) -> None:
    """Waits of F x 1 s, F x 2 s (the backoff's ceiling doubles), then out of attempts."""
    h = harness([LOCKED, LOCKED, LOCKED])
    assert await h.run() == outcome(Status.FAILED, 200, "59210050",
                                    "invoice locked (gave up after 3 attempts)", 3)
    assert h.clock.sleeps == [F, 2 * F]
    assert h.calls == [("cancel", 0.0), ("cancel", F), ("cancel", F + 2 * F)]
    assert h.retries() == [(2, 1, 0.123, 200, "59210050", "invoice locked"),
                           (2, 2, 0.247, 200, "59210050", "invoice locked")]
    assert [attempt for _, attempt, _ in h.sent] == [1, 2, 3]


async def test_a_retry_that_succeeds_counts_its_attempts() -> None:
    h = harness([LOCKED, OK], max_attempts=2)
    assert await h.run() == outcome(Status.SUCCEEDED, 200, "", "", 2, request_id="R-ok")


async def test_the_retry_event_keeps_200_characters_of_the_message() -> None:
    long = replace(LOCKED, error_message="x" * 250)
    h = harness([long, OK])
    await h.run()
    assert [len(r[5]) for r in h.retries()] == [200]


@pytest.mark.parametrize(("budget", "attempts"), [(5.0, 3), (6.999, 3), (7.0, 4)])
async def test_the_time_budget_counts_from_the_first_request(budget: float,
                                                             attempts: int) -> None:
    """Backoff drawing its whole ceiling (1, 2, 4, 8 s): a row gives up when the next wait
    would end past the budget, counted from its first request."""
    h = harness([LOCKED] * attempts, start=100.0, max_attempts=10, budget=budget, draw=1.0)
    assert await h.run() == outcome(Status.FAILED, 200, "59210050",
                                    f"invoice locked (gave up after {attempts} attempts)",
                                    attempts)
    assert h.clock.sleeps == [1.0, 2.0, 4.0][:attempts - 1]
    assert h.calls[0] == ("cancel", 100.0)


async def test_a_refused_token_is_sent_again_at_once_and_not_counted() -> None:
    """A 401 applied nothing: the same request goes again, no wait, no attempt used up."""
    h = harness([REFUSED_TOKEN, REFUSED_TOKEN, LOCKED], max_attempts=1)
    assert await h.run() == outcome(Status.FAILED, 200, "59210050",
                                    "invoice locked (gave up after 3 attempts)", 3)
    assert (h.clock.sleeps, h.retries()) == ([], [])


def paused_by_another_row(h: Harness) -> None:
    """Another row's 429 pauses the pool for its 7 s (while this row's token is fetched)."""
    h.limiter.pause(RATE_429)


async def test_a_resend_after_a_401_waits_out_a_pause_that_came_while_its_token_did() -> None:
    """Seed 5733 (20,000-seed search): after a 401 the next request fetches a token, a round
    trip in which another row's 429 paused the pool; it went out inside the pause. Now the
    token comes before the last look at the limits: the request is withdrawn, waits the
    pause out, and leaves after it."""
    h = harness([REFUSED_TOKEN, OK], on_ready=[None, paused_by_another_row])
    assert await h.run() == outcome(Status.SUCCEEDED, 200, "", "", 2, request_id="R-ok")
    assert h.calls == [("cancel", 0.0), ("cancel", 7.0 + F)]
    assert (h.readied, h.withdrawn) == ([0.0, 0.0, 7.0 + F], [(2, 2)])
    assert [attempt for _, attempt, _ in h.sent] == [1, 2, 2]


async def test_a_read_after_a_401_waits_out_a_pause_that_came_while_its_token_did() -> None:
    """The same for the read that settles a doubt before a resend."""
    refused_read = read(None, REFUSED_TOKEN)
    h = harness([UNAVAILABLE, OK], [refused_read, APPROVED],
                on_ready=[None, None, paused_by_another_row])
    assert await h.run() == outcome(Status.SUCCEEDED, 200, "", "", 2, request_id="R-ok")
    assert h.kinds() == ["cancel", "read", "read", "cancel"]
    assert h.calls[2][1] >= 7.0  # the second read waited the pause out
    assert h.withdrawn == []  # a read has no journal record to void


async def test_no_token_means_the_request_never_left_and_its_record_is_voided() -> None:
    def refused(h: Harness) -> None:
        raise RuntimeError("token endpoint refused for good")

    h = harness([], on_ready=[refused])
    with pytest.raises(RuntimeError, match="refused for good"):
        await h.life.process(JOB, RowState.of(JOB))
    assert (h.calls, h.sent, h.withdrawn) == ([], [(2, 1, TRACK)], [(2, 1)])
    assert h.limiter.window.in_flight == 0


async def test_a_429_holds_the_row_for_the_pools_pause_not_a_backoff_of_its_own() -> None:
    """The 429 pauses the pool for its 7 s; the row's retry waits that pause (plus its share
    of the resume spread) and nothing more."""
    h = harness([RATE_429, OK])
    assert await h.run() == outcome(Status.SUCCEEDED, 200, "", "", 2, request_id="R-ok")
    assert h.retries() == [(2, 1, 7.0, 429, "", "too many requests")]
    assert h.clock.sleeps == [7.0 + F]
    assert h.calls == [("cancel", 0.0), ("cancel", 7.0 + F)]


# --- the journal before each request ----------------------------------------------------


async def test_the_journal_record_is_awaited_before_the_request_leaves() -> None:
    order: list[str] = []

    async def journalled() -> None:
        order.append("journalled")

    h = harness([then(OK, lambda h: order.append("cancel"))])
    h.on_sent = lambda job, attempt, track: journalled()
    await h.run()
    assert order == ["journalled", "cancel"]


async def test_a_request_the_journal_failed_on_is_withdrawn_and_never_sent() -> None:
    def broken(job: CancelJob, attempt: int, track: str) -> None:
        raise OSError("disk full")

    h = harness([])
    h.on_sent = broken
    state = RowState.of(JOB)
    with pytest.raises(OSError, match="disk full"):
        await h.life.process(JOB, state)
    assert (h.withdrawn, state.attempts, state.in_flight, h.calls) == ([(2, 1)], 0, False, [])
    assert h.limiter.window.in_flight == 0


async def test_a_stop_while_the_journal_takes_the_record_withdraws_it() -> None:
    h = harness([])
    h.on_sent = lambda job, attempt, track: h.halt()
    assert await h.run() == outcome(Status.NOT_ATTEMPTED, None, "", "not sent: user interrupt", 0)
    assert (h.sent, h.withdrawn, h.calls) == ([(2, 1, TRACK)], [(2, 1)], [])
    assert h.limiter.window.in_flight == 0


async def test_a_429_while_the_journal_takes_the_record_waits_and_sends_once() -> None:
    """Another worker's 429 paused the pool between the journal record and the request: the
    record is voided, the pause waited out, and the same attempt number journalled again."""
    h = harness([OK])
    h.on_sent = lambda job, attempt, track: (
        h.limiter.pause(RATE_429) if not h.withdrawn else None)
    assert await h.run() == outcome(Status.SUCCEEDED, 200, "", "", 1, request_id="R-ok")
    assert (h.sent, h.withdrawn) == ([(2, 1, TRACK), (2, 1, TRACK)], [(2, 1)])
    assert h.calls == [("cancel", 7.0 + F)]


async def test_a_request_with_no_answer_leaves_the_row_in_flight() -> None:
    """The sender never answered (the worker was cancelled): the request may have landed."""
    h = harness([RuntimeError("cut")])
    state = RowState.of(JOB)
    with pytest.raises(RuntimeError, match="cut"):
        await h.life.process(JOB, state)
    assert (state.attempts, state.in_flight, h.limiter.window.in_flight) == (1, True, 0)


async def test_a_read_with_no_answer_gives_its_place_in_the_window_back() -> None:
    h = harness([UNAVAILABLE], [RuntimeError("cut")])
    with pytest.raises(RuntimeError, match="cut"):
        await h.life.process(JOB, RowState.of(JOB))
    assert (h.kinds(), h.limiter.window.in_flight) == (["cancel", "read"], 0)


async def test_an_answered_request_is_no_longer_in_flight_and_is_remembered() -> None:
    h = harness([LOCKED, OK], max_attempts=2)
    state = RowState.of(JOB)
    await h.life.process(JOB, state)
    assert (state.in_flight, state.last, state.first_sent) == (False, OK, 0.0)


# --- in doubt ----------------------------------------------------------------------------


async def test_an_in_doubt_answer_is_read_before_the_resend() -> None:
    h = harness([UNAVAILABLE, OK], [APPROVED])
    assert await h.run() == outcome(Status.SUCCEEDED, 200, "", "", 2, request_id="R-ok")
    assert h.calls == [("cancel", 0.0), ("read", F), ("cancel", F)]


async def test_a_read_finding_the_cancel_accepted_ends_the_row_without_a_resend() -> None:
    h = harness([UNAVAILABLE], [ACCEPTED])
    assert await h.run() == outcome(Status.SUCCEEDED, 200, "",
                                    "verified after retry: eInvoiceStatus is CancelProcessing",
                                    1, request_id="R-read")
    assert h.kinds() == ["cancel", "read"]


async def test_a_read_finding_the_cancel_refused_by_the_tax_authority_fails_the_row() -> None:
    h = harness([UNAVAILABLE], [TAX_REFUSED])
    assert await h.run() == outcome(Status.FAILED, 200, "TAX-9", REFUSED_AFTER_ATTEMPT, 1,
                                    request_id="R-read")


async def test_a_read_with_a_status_that_settles_nothing_leaves_the_row_in_doubt() -> None:
    h = harness([UNAVAILABLE], [SLOW_VENDOR])
    result = await h.run()
    assert (result.status, result.in_doubt, result.attempts) == (Status.FAILED, True, 1)
    assert result.error_message.startswith(
        "in doubt, not sent again: eInvoiceStatus is RetrieveTimeout: the tax vendor is slow")


async def test_an_unreadable_invoice_is_read_max_attempts_times_then_left_in_doubt() -> None:
    h = harness([UNAVAILABLE], [UNREADABLE] * 3)
    assert await h.run() == outcome(
        Status.FAILED, 503, "", "in doubt, not sent again: the invoice could not be read "
        "(Service Unavailable); --resume reads it first", 1, in_doubt=True)
    assert h.kinds() == ["cancel", "read", "read", "read"]
    assert h.clock.sleeps == [F, F, 2 * F]


async def test_a_read_that_met_a_429_waits_for_the_pools_pause_only() -> None:
    limited = read(None, RATE_429)
    h = harness([UNAVAILABLE], [limited, ACCEPTED])
    result = await h.run()
    assert result.status is Status.SUCCEEDED
    assert h.clock.sleeps == [F, 7.0 + F]


async def test_refused_tokens_on_a_read_are_read_again_uncounted() -> None:
    h = harness([UNAVAILABLE], [read(None, REFUSED_TOKEN)] * 2 + [ACCEPTED], max_attempts=1)
    assert (await h.run()).status is Status.SUCCEEDED
    assert h.kinds() == ["cancel", "read", "read", "read"]


async def test_an_invoice_that_does_not_exist_had_nothing_applied_and_is_sent_again() -> None:
    h = harness([UNAVAILABLE, CANCELLING], [NO_SUCH_INVOICE, ACCEPTED])
    result = await h.run()
    assert (result.status, result.error_message) == (
        Status.SUCCEEDED, "verified after retry: eInvoiceStatus is CancelProcessing")
    assert h.kinds() == ["cancel", "read", "cancel", "read"]


async def test_out_of_attempts_in_doubt_reads_the_invoice_first() -> None:
    h = harness([UNAVAILABLE], [ACCEPTED], max_attempts=1)
    assert (await h.run()).error_message == (
        "verified after retry: eInvoiceStatus is CancelProcessing")


async def test_out_of_attempts_and_the_read_says_not_applied_gives_up_not_in_doubt() -> None:
    h = harness([UNAVAILABLE], [APPROVED], max_attempts=1)
    assert await h.run() == outcome(Status.FAILED, 503, "",
                                    "Service Unavailable (gave up after 1 attempts)", 1)


async def test_a_row_stopped_while_in_doubt_stays_in_doubt_unread() -> None:
    """Issue 12: the stop came with the in-doubt answer; no read, no resend, in doubt."""
    h = harness([then(UNAVAILABLE, Harness.halt)])
    assert await h.run() == outcome(
        Status.FAILED, 503, "", "in doubt: stopped (user interrupt) before the earlier request "
        "could be checked; --resume checks it first", 1, in_doubt=True)
    assert h.kinds() == ["cancel"]


async def test_a_row_out_of_attempts_as_the_run_stops_gives_up_still_in_doubt() -> None:
    h = harness([then(UNAVAILABLE, Harness.halt)], max_attempts=1)
    assert await h.run() == outcome(Status.FAILED, 503, "",
                                    "Service Unavailable (gave up after 1 attempts)", 1,
                                    in_doubt=True)


async def test_a_row_stopped_before_a_retry_is_not_attempted_with_its_last_answer() -> None:
    h = harness([then(LOCKED, Harness.halt)])
    assert await h.run() == outcome(
        Status.NOT_ATTEMPTED, 200, "59210050",
        "not cancelled: stopped (user interrupt) before a retry; last answer: invoice locked", 1)


async def test_a_resumed_in_doubt_row_is_read_before_anything_is_sent() -> None:
    resumed = replace(JOB, in_doubt=True)
    h = harness([], [read("Cancelled")])
    assert await h.run(resumed) == outcome(
        Status.SUCCEEDED, 200, "", "verified after resume: eInvoiceStatus is Cancelled", 0,
        request_id="R-read")


async def test_a_resumed_in_doubt_row_stopped_before_its_check_stays_in_doubt() -> None:
    """Issue 12: stopped before the read a resumed in-doubt row starts with: still in doubt,
    never `not_attempted`, nothing sent or read."""
    h = harness([])
    h.halt("the quota ran out")
    assert await h.run(replace(JOB, in_doubt=True)) == outcome(
        Status.FAILED, None, "", "in doubt: stopped (the quota ran out) before the earlier "
        "request could be checked; --resume checks it first", 0, in_doubt=True)
    assert (h.calls, h.sent) == ([], [])


async def test_a_row_stopped_before_it_starts_is_not_sent() -> None:
    h = harness([])
    h.halt()
    assert await h.run() == outcome(Status.NOT_ATTEMPTED, None, "", "not sent: user interrupt", 0)
    assert h.sent == []


# --- final answers -----------------------------------------------------------------------


async def test_a_final_refusal_is_the_outcome_without_a_read() -> None:
    h = harness([INVALID])
    assert await h.run() == outcome(Status.FAILED, 200, "59210020", "bad reason", 1)
    assert h.kinds() == ["cancel"]


async def test_already_cancelling_on_a_fresh_row_is_a_cancel_from_before_this_run() -> None:
    h = harness([CANCELLING], [ACCEPTED])
    assert await h.run() == outcome(
        Status.SKIPPED, 200, "", "already CancelProcessing before this run; not sent again", 1,
        request_id="R-read")


async def test_already_cancelling_after_an_in_doubt_request_is_ours() -> None:
    h = harness([UNAVAILABLE, CANCELLING], [APPROVED, ACCEPTED])
    result = await h.run()
    assert (result.status, result.error_message, result.attempts) == (
        Status.SUCCEEDED, "verified after retry: eInvoiceStatus is CancelProcessing", 2)


async def test_already_cancelling_on_a_row_doubted_by_an_earlier_run_is_ours() -> None:
    h = harness([CANCELLING], [read("Cancelled")])
    result = await h.run(replace(JOB, doubted_before=True))
    assert (result.status, result.error_message) == (
        Status.SUCCEEDED, "verified after resume: eInvoiceStatus is Cancelled")


async def test_a_tax_refusal_found_after_our_in_doubt_request_fails_the_row() -> None:
    h = harness([UNAVAILABLE, CANCELLING], [APPROVED, TAX_REFUSED])
    result = await h.run()
    assert (result.status, result.error_message, result.error_code) == (
        Status.FAILED, REFUSED_AFTER_ATTEMPT, "TAX-9")


async def test_a_tax_refusal_never_ours_leaves_zuoras_refusal_standing() -> None:
    h = harness([CANCELLING], [TAX_REFUSED])
    assert await h.run() == outcome(Status.FAILED, 200, "59210030", "already cancelling", 1)


async def test_a_refusal_on_a_fresh_row_with_an_unreadable_invoice_stands() -> None:
    h = harness([CANCELLING], [UNREADABLE] * 3)
    assert await h.run() == outcome(Status.FAILED, 200, "59210030", "already cancelling", 1)


async def test_a_refusal_after_an_in_doubt_request_with_an_unreadable_invoice_is_in_doubt(
        ) -> None:
    h = harness([UNAVAILABLE, CANCELLING], [APPROVED] + [UNREADABLE] * 3)
    result = await h.run()
    assert (result.status, result.in_doubt, result.http_status) == (Status.FAILED, True, 503)


async def test_a_final_answer_in_doubt_is_read_and_stands_once_the_read_says_not_applied(
        ) -> None:
    odd = Answer(Verdict.FINAL, 200, "", "no success field", in_doubt=True)
    h = harness([odd], [APPROVED])
    assert await h.run() == outcome(Status.FAILED, 200, "", "no success field", 1)


async def test_a_final_answer_in_doubt_with_an_unsettled_read_stays_in_doubt() -> None:
    odd = Answer(Verdict.FINAL, 200, "", "no success field", in_doubt=True)
    h = harness([odd], [SLOW_VENDOR])
    result = await h.run()
    assert (result.status, result.in_doubt) == (Status.FAILED, True)


def test_a_row_starts_in_doubt_only_if_an_earlier_run_left_it_so() -> None:
    states = [RowState.of(replace(JOB, in_doubt=d, doubted_before=b))
              for d, b in ((False, False), (True, False), (False, True))]
    assert [(s.doubt, s.ever_doubt, s.attempts, s.in_flight) for s in states] == [
        (False, False, 0, False), (True, True, 0, False), (False, True, 0, False)]
    assert RowState() == states[0] == RowState(0, False, False, False, None, None)
    assert not hasattr(states[0], "__dict__")  # one per worker, and nothing else to hold


async def test_a_read_answered_without_a_status_is_not_read_again() -> None:
    """A 200 without `eInvoiceStatus` is an answer, not a failure to retry: one read, then the
    row stays in doubt (nothing can be concluded)."""
    h = harness([UNAVAILABLE], [read(None)])
    result = await h.run()
    assert (result.status, result.in_doubt, h.kinds()) == (Status.FAILED, True,
                                                           ["cancel", "read"])


async def test_after_a_read_finds_no_such_invoice_the_row_is_no_longer_in_doubt() -> None:
    """The resend's own retryable answer is then retried without another read."""
    h = harness([UNAVAILABLE, LOCKED, OK], [NO_SUCH_INVOICE])
    assert (await h.run()).status is Status.SUCCEEDED
    assert h.kinds() == ["cancel", "read", "cancel", "cancel"]
