"""The limits behind one interface, the retry policy, and the events they emit: all on a fake
clock, so every schedule below is asserted exactly."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from batch_cancel.events import (
    Event,
    Events,
    PoolLoad,
    PoolPaceChanged,
    PoolPausedOutage,
    PoolPausedRateLimited,
    PoolResumed,
    RowRetryScheduled,
)
from batch_cancel.model import Answer, CancelJob, InvoiceState, Outcome, Status, StopKind, Verdict
from batch_cancel.send.clock import Stop
from batch_cancel.send.limits import Limiter, Limits
from batch_cancel.send.pool import Runner
from batch_cancel.send.retry import Backoff, RetryPolicy
from tests.helpers import FakeClock

OK = Answer(Verdict.SUCCEEDED, http_status=200)
BUSY = Answer(Verdict.RETRY, http_status=200, error_code="50000050",
              error_message="lock contention")
DOWN = Answer(Verdict.RETRY, http_status=503, error_message="unavailable")
RATE_429 = Answer(Verdict.RETRY, http_status=429, rate_limited=True, retry_after=2.0)


def limiter(limits: Limits, clock: FakeClock, seen: list[Event] | None = None
            ) -> tuple[Limiter, Stop, list[tuple[str, StopKind]]]:
    stop = Stop(clock)
    stops: list[tuple[str, StopKind]] = []
    events = Events(seen.append) if seen is not None else Events()
    return (Limiter(limits, clock, random.Random(1), events, stop,
                    lambda reason, kind: stops.append((reason, kind)), lambda: 0), stop, stops)


async def request(meter: Limiter, clock: FakeClock, answer: Answer, starts: list[float],
                  took: float = 0.0) -> None:
    """One request through the interface: wait, start (recorded), take `took`, answer."""
    ticket = await meter.wait_can_start()
    assert ticket is not None
    meter.started(ticket)
    starts.append(round(clock.now() - 1000.0, 9))
    if took:
        await clock.sleep(took)
    meter.finished(ticket, answer)


async def test_three_workers_start_exactly_one_interval_apart() -> None:
    """At --rate 10 three workers together start at 0, 0.1, 0.2 ... s: no burst, no drift."""
    clock = FakeClock(overlap=True)
    meter, _, _ = limiter(Limits(concurrency=3, rate=10.0, max_attempts=1), clock)
    starts: list[float] = []

    async def worker() -> None:
        for _ in range(4):
            await request(meter, clock, OK, starts)

    await asyncio.gather(*(worker() for _ in range(3)))
    assert starts == [round(n / 10, 9) for n in range(12)]


async def test_the_window_holds_a_start_until_a_place_is_free() -> None:
    """Unpaced, with a window of 2: the third request starts when a place is given back."""
    clock = FakeClock(overlap=True)
    meter, _, _ = limiter(Limits(concurrency=2, rate=None, max_attempts=1), clock)
    starts: list[float] = []
    await asyncio.gather(request(meter, clock, OK, starts, took=0.5),
                         request(meter, clock, OK, starts, took=0.5),
                         request(meter, clock, OK, starts, took=0.1))
    assert starts == [0.0, 0.0, 0.5]
    assert meter.window.in_flight == 0


async def test_a_rate_429_pauses_every_start_until_its_deadline() -> None:
    """A 429 naming 2 s at t=0.2: one `pool.paused` event, the pace learned from what was
    accepted, and no request starts before t=2.2."""
    clock = FakeClock(overlap=True)
    seen: list[Event] = []
    meter, _, _ = limiter(Limits(concurrency=3, rate=10.0, max_attempts=1), clock, seen)
    starts: list[float] = []
    for answer in (OK, OK, RATE_429):
        await request(meter, clock, answer, starts)
    assert starts == [0.0, 0.1, 0.2]
    assert meter.paused_until == pytest.approx(1002.2)
    assert seen == [PoolPaceChanged(10.0, 2.0, "rate_429", 0),
                    PoolPausedRateLimited("rate_limited", 2.0, "rate", 429, "")]
    await asyncio.gather(*(request(meter, clock, OK, starts) for _ in range(3)))
    assert min(starts[3:]) >= 2.2
    # after the pause the learned pace (2/s) spaces the starts exactly
    later = sorted(starts[3:])
    assert [round(b - a, 9) for a, b in itertools.pairwise(later)] == [0.5, 0.5]


async def test_an_outage_opens_the_breaker_and_one_probe_closes_it() -> None:
    """Three 503s in a row open the breaker (one `pool.paused` outage event); the next start
    is a probe at exactly the first backoff ceiling; its answer closes the breaker."""
    clock = FakeClock(overlap=True)
    seen: list[Event] = []
    limits = Limits(concurrency=2, rate=None, max_attempts=1, outage_threshold=3,
                    backoff=Backoff(base=1.0, cap=8.0))
    meter, _, _ = limiter(limits, clock, seen)
    starts: list[float] = []
    for _ in range(3):
        await request(meter, clock, DOWN, starts)
    assert seen == [PoolPausedOutage("outage", 3, 503, "unavailable")]
    assert not meter.counts(DOWN)  # an outage does not use up a row's attempts
    assert meter.holding(DOWN) == 0.0  # the breaker holds the row: no wait of its own
    ticket = await meter.wait_can_start()
    assert ticket is not None and ticket.probe
    assert clock.now() - 1000.0 == 1.0
    meter.started(ticket)
    meter.finished(ticket, OK)
    assert seen[1:] == [PoolResumed("outage over")]
    assert meter.counts(DOWN)


async def test_an_outage_past_the_outage_window_stops_the_run() -> None:
    """Probes that keep failing past --outage-window stop the run (kind `outage`)."""
    clock = FakeClock(overlap=True)
    limits = Limits(concurrency=1, rate=None, max_attempts=1, outage_threshold=1,
                    outage_window=5.0, backoff=Backoff(base=1.0, cap=2.0))
    meter, _, stops = limiter(limits, clock)
    starts: list[float] = []
    while not stops:
        await request(meter, clock, DOWN, starts)
    assert starts == [0.0, 1.0, 3.0, 5.0, 7.0]
    assert stops == [("Zuora did not answer for 7 s (--outage-window 5)", StopKind.OUTAGE)]


async def test_a_stop_releases_a_waiter_holding_nothing() -> None:
    """A start waiting for the pacer returns None at once when the run stops."""
    clock = FakeClock(overlap=True)
    meter, stop, _ = limiter(Limits(concurrency=2, rate=0.001, max_attempts=1), clock)
    await request(meter, clock, OK, [])
    waiting = asyncio.ensure_future(meter.wait_can_start())
    await asyncio.sleep(0)
    stop.set("test", StopKind.INTERRUPTED)
    assert await waiting is None
    assert meter.window.in_flight == 0


def test_the_retry_policy_bounds_attempts_and_time() -> None:
    """Out of attempts, or a next wait ending past the budget: give up; else wait."""
    policy = RetryPolicy(max_attempts=3, budget=10.0)
    assert not policy.exhausted(2, elapsed=4.0, delay=6.0)
    assert policy.exhausted(2, elapsed=4.0, delay=6.5)
    assert policy.exhausted(3, elapsed=0.0)
    assert not RetryPolicy(max_attempts=3).exhausted(2, elapsed=1e9, delay=1e9)


def test_the_retry_delay_is_the_documented_full_jitter() -> None:
    """Attempt n waits uniform(0, min(cap, base * 2**(n-1))), drawn from the given rng."""
    policy = RetryPolicy(max_attempts=9, backoff=Backoff(base=0.5, cap=3.0))
    draws = random.Random(5)
    expected = [draws.uniform(0.0, min(3.0, 0.5 * 2.0 ** (n - 1))) for n in range(1, 8)]
    rng = random.Random(5)
    assert [policy.delay(n, rng) for n in range(1, 8)] == expected


class Busy:
    """A sender whose every cancel meets lock contention (retryable, never in doubt)."""

    def __init__(self) -> None:
        self.calls = 0

    async def cancel(self, job: CancelJob, track_id: str) -> Answer:
        self.calls += 1
        return BUSY

    async def ready(self) -> None:
        return None

    async def invoice_state(self, key: str, track_id: str) -> InvoiceState:
        raise AssertionError("no read: nothing was in doubt")


async def test_a_row_gives_up_when_its_next_wait_would_pass_the_budget() -> None:
    """With a 2.5 s budget and waits of exactly 1, 2, 4 s (base 1, no jitter spread: the rng
    always draws the ceiling) the row tries at 0 and 1, then gives up: waiting 2 s more would
    end at 3 s, past the budget."""
    clock = FakeClock(overlap=True)
    seen: list[Event] = []

    class Ceiling(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    limits = Limits(concurrency=1, rate=None, max_attempts=10, retry_budget=2.5)
    sender = Busy()
    runner = Runner(sender, limits, "r", clock=clock, rng=Ceiling(), events=Events(seen.append))
    outcomes: list[Outcome] = []
    await runner.run([CancelJob(2, "INV1", "02")], outcomes.append, total=1)
    assert sender.calls == 2 and clock.sleeps == [1.0]
    assert [o.status for o in outcomes] == [Status.FAILED]
    assert "gave up after 2 attempts" in outcomes[0].error_message
    assert [e for e in seen if isinstance(e, RowRetryScheduled)] == [
        RowRetryScheduled(2, 1, 1.0, 200, "50000050", "lock contention")]
    assert [e.status for e in seen if isinstance(e, PoolLoad)] == [None, "failed"]
