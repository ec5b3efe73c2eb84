"""The Limiter called directly: what each limit is built from, what a finished request
feeds back, when the pool holds a row, and how a start waits; on a fake clock, exact values."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random

import pytest

from batch_cancel.config import DEFAULT_CUSTOM_RATE, Settings, Target
from batch_cancel.events import (
    Event,
    Events,
    PoolPaceChanged,
    PoolPausedOutage,
    PoolPausedRateLimited,
    PoolResumed,
    PoolWindowChanged,
    QuotaLow,
)
from batch_cancel.model import Answer, StopKind, Verdict
from batch_cancel.send.clock import Stop
from batch_cancel.send.limits import PLAIN, PROBE, Limiter, Limits, limits_for
from batch_cancel.send.retry import Backoff, RetryPolicy
from tests.helpers import FakeClock

OK = Answer(Verdict.SUCCEEDED, http_status=200)
DOWN = Answer(Verdict.RETRY, http_status=503, error_message="unavailable")
RATE_429 = Answer(Verdict.RETRY, http_status=429, rate_limited=True, retry_after=2.0)


class Top(random.Random):
    """Draws the top of every range asked for, and records the ranges."""

    def __init__(self) -> None:
        super().__init__(0)
        self.asked: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.asked.append((a, b))
        return b


def bare(limits: Limits, clock: FakeClock, seen: list[Event], rows_left: int = 0
         ) -> tuple[Limiter, Top, list[tuple[str, StopKind]]]:
    """A limiter whose rng draws the top of every range, with `rows_left` rows to go."""
    rng, stops = Top(), []
    meter = Limiter(limits, clock, rng, Events(seen.append), Stop(clock),
                    lambda reason, kind: stops.append((reason, kind)), lambda: rows_left)
    return meter, rng, stops


def test_the_limits_defaults_and_the_retry_policy_they_make() -> None:
    limits = Limits(concurrency=3, rate=None, max_attempts=4)
    assert (limits.default_pause, limits.outage_threshold, limits.outage_window,
            limits.tenant_share, limits.pause_on_concurrency_429, limits.default_rate,
            limits.retry_budget) == (5.0, 10, 1800.0, 0.5, False, None, math.inf)
    assert limits.backoff == Backoff()
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.concurrency = 4  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        PLAIN.probe = True  # type: ignore[misc]  # one value shared by every request
    budgeted = Limits(concurrency=1, rate=None, max_attempts=4, retry_budget=9.0,
                      backoff=Backoff(base=2.0, cap=3.0))
    assert budgeted.retry == RetryPolicy(4, Backoff(base=2.0, cap=3.0), 9.0)


@pytest.mark.parametrize(("rate", "target", "mode", "default_rate", "pause"), [
    (None, "custom", "shrink", DEFAULT_CUSTOM_RATE, False),
    (7.0, "custom", "pause", None, True),
    (7.0, "custom", "".join(["pau", "se"]), None, True),  # read from a file: not interned
    (None, "simulator", "shrink", None, False),
])
def test_a_commands_limits_come_from_its_settings_and_its_target(
        rate: float | None, target: str, mode: str, default_rate: float | None,
        pause: bool) -> None:
    """--rate, when given, replaces the target's default rate; every setting is carried."""
    settings = Settings(concurrency=6, rate=rate, max_attempts=3, outage_window=60.0,
                        tenant_share=0.75, concurrency_429=mode)
    assert limits_for(settings, Target("http://x", target)) == Limits(
        concurrency=6, rate=rate, max_attempts=3, outage_window=60.0, tenant_share=0.75,
        pause_on_concurrency_429=pause, default_rate=default_rate)


@pytest.mark.parametrize(("concurrency", "rate", "default_rate", "spread"), [
    (2, 10.0, None, 0.2), (2, None, 4.0, 0.5), (2, 8.0, 4.0, 0.25), (20, 10.0, None, 1.0),
    (2, None, None, 1.0),
])
async def test_the_resume_spread_is_one_round_of_starts_at_most_a_second(
        concurrency: int, rate: float | None, default_rate: float | None,
        spread: float) -> None:
    """After a pause each waiter draws its wake-up from uniform(0, concurrency / rate), the
    time one round of the pool's starts takes (--rate first, else the default), at most 1 s."""
    clock = FakeClock()
    meter, rng, _ = bare(Limits(concurrency=concurrency, rate=rate, max_attempts=1,
                                default_rate=default_rate), clock, [])
    meter.gate.pause(1.0)
    assert await meter.gate.wait()
    assert rng.asked == [(0.0, spread)]
    assert clock.sleeps == [1.0 + spread]


def test_each_limit_is_built_from_the_limits() -> None:
    limits = Limits(concurrency=12, rate=3.0, max_attempts=1, tenant_share=0.25,
                    outage_threshold=2)
    meter, _, _ = bare(limits, FakeClock(), [])
    assert (meter.pace.rate, meter.pace.source) == (3.0, "rate_flag")
    assert (meter.window.max_size, meter.window.share, meter.window.ceiling) == (12, 0.25, 10)
    meter.finished(PLAIN, DOWN)
    assert not meter.breaker.is_open
    meter.finished(PLAIN, DOWN)
    assert meter.breaker.is_open
    defaulted, _, _ = bare(Limits(concurrency=1, rate=None, max_attempts=1, default_rate=2.0),
                           FakeClock(), [])
    assert (defaulted.pace.rate, defaulted.pace.source) == (2.0, "target_default")


async def test_a_run_stopped_before_the_start_gets_no_ticket_and_holds_nothing() -> None:
    clock = FakeClock()
    meter, _, _ = bare(Limits(concurrency=2, rate=None, max_attempts=1), clock, [])
    ticket = await meter.wait_can_start()
    assert ticket == PLAIN and meter.window.in_flight == 1
    meter.started(PLAIN)
    assert meter.pace.in_flight == 1
    stop = Stop(clock)
    stopped = Limiter(Limits(concurrency=2, rate=None, max_attempts=1), clock, Top(), Events(),
                      stop, lambda reason, kind: None, lambda: 0)
    stop.set("test", StopKind.INTERRUPTED)
    assert await stopped.wait_can_start() is None
    assert stopped.window.in_flight == 0


def test_a_request_without_an_answer_gives_its_place_and_its_probe_back() -> None:
    """No answer: the place is free again, the pacer no longer counts it in flight, and a
    probe's turn passes to the next worker; the breaker learns nothing from it."""
    meter, _, _ = bare(Limits(concurrency=2, rate=None, max_attempts=1, outage_threshold=1),
                       FakeClock(), [])
    meter.finished(PLAIN, DOWN)
    assert meter.breaker.is_open
    meter.window.in_flight, meter.pace.in_flight = 2, 2
    meter.breaker.probe_in_flight = True
    meter.finished(PLAIN, None)
    assert (meter.window.in_flight, meter.pace.in_flight) == (1, 1)
    assert meter.breaker.probe_in_flight  # not the probe's place
    meter.finished(PROBE, None)
    assert (meter.window.in_flight, meter.pace.in_flight) == (0, 0)
    assert not meter.breaker.probe_in_flight and meter.breaker.failures == 1
    meter.window.in_flight = 1
    meter.breaker.probe_in_flight = True
    meter.give_back(PLAIN)
    assert meter.window.in_flight == 0 and meter.breaker.probe_in_flight


def test_the_pause_ends_exactly_at_its_deadline() -> None:
    clock = FakeClock()
    meter, _, _ = bare(Limits(concurrency=1, rate=None, max_attempts=1), clock, [])
    assert meter.paused_until == 0.0 and not meter.paused()
    meter.pause(RATE_429)
    assert meter.paused_until == 1002.0 and meter.paused()
    clock.t = 1002.0
    assert not meter.paused()


def test_the_pool_holds_a_row_only_for_its_pause_or_an_open_breaker() -> None:
    """A 429 while paused: held for the time left; an outage failure while the breaker is
    open: held for the pause left, never less than 0 (it has long ended); else not held."""
    clock = FakeClock()
    meter, _, _ = bare(Limits(concurrency=1, rate=None, max_attempts=1, outage_threshold=1),
                       clock, [])
    assert meter.holding(RATE_429) is None and meter.holding(DOWN) is None
    assert meter.counts(DOWN) and meter.counts(RATE_429)
    meter.pause(RATE_429)
    clock.t = 1000.5
    assert meter.holding(RATE_429) == 1.5
    assert meter.holding(DOWN) is None and meter.holding(OK) is None
    meter.finished(PLAIN, DOWN)
    assert meter.holding(DOWN) == 1.5
    clock.t = 1010.0
    assert meter.holding(DOWN) == 0.0 and meter.holding(RATE_429) is None
    assert not meter.counts(DOWN) and meter.counts(RATE_429)


@pytest.mark.parametrize(("answer", "pause", "base", "seconds"), [
    (Answer(Verdict.RETRY, http_status=429, rate_limited=True), 5.0, 1.0, 5.0),
    (Answer(Verdict.RETRY, http_status=429, rate_limited=True), 0.5, 2.0, 2.0),
    (Answer(Verdict.RETRY, http_status=429, rate_limited=True, retry_after=0.0), 5.0, 1.0, 0.0),
    (Answer(Verdict.RETRY, http_status=429, rate_limited=True, retry_after=1.23456), 5.0, 1.0,
     1.235),
])
def test_a_429_pauses_for_its_retry_after_else_the_longer_of_default_and_backoff(
        answer: Answer, pause: float, base: float, seconds: float) -> None:
    """No Retry-After: max(default pause, a first backoff draw); Retry-After: 0 is a pause of
    none (told, as Zuora named it), not the default."""
    clock, seen = FakeClock(), []
    limits = Limits(concurrency=1, rate=None, max_attempts=1, default_pause=pause,
                    backoff=Backoff(base=base))
    meter, _, _ = bare(limits, clock, seen)
    meter.pause(answer)
    assert seen == [PoolPausedRateLimited("rate_limited", seconds, "rate", 429, "")]
    assert meter.paused_until == pytest.approx(1000.0 + seconds, abs=1e-3)


def test_a_shorter_pause_within_a_longer_one_is_not_told_again() -> None:
    clock, seen = FakeClock(), []
    meter, _, _ = bare(Limits(concurrency=1, rate=None, max_attempts=1), clock, seen)
    refused = Answer(Verdict.RETRY, http_status=429, rate_limited=True, retry_after=120.0,
                     concurrency_limited=True, error_code="50000070")
    meter.pause(refused)
    meter.pause(RATE_429)
    assert seen == [PoolPausedRateLimited("rate_limited", 120.0, "concurrency", 429,
                                          "50000070")]
    assert meter.paused_until == 1120.0


def test_an_answer_feeds_the_pace_and_the_window_and_both_are_told() -> None:
    """A policy of 10 per 3 s at share 1 paces at 9 per 3 s, 3/s (one start a window below
    its quota; in the event with the requests in flight); an advertised tenant limit of 4 at
    share 0.5 caps the window at 2."""
    clock, seen = FakeClock(), []
    meter, _, _ = bare(Limits(concurrency=8, rate=None, max_attempts=1, tenant_share=1.0),
                       clock, seen)
    meter.window.in_flight = 3
    meter.finished(PLAIN, Answer(Verdict.SUCCEEDED, http_status=200, rate_windows=((10, 3.0),)))
    assert seen == [PoolPaceChanged(None, 3.0, "tenant_policy", 2)]
    halved, _, _ = bare(Limits(concurrency=8, rate=None, max_attempts=1), clock, seen)
    halved.window.in_flight = 1
    halved.finished(PLAIN, Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=4))
    assert seen[1:] == [PoolWindowChanged(4, 2, "tenant limit advertised", 2)]
    assert halved.window.in_flight == 0


def test_the_breaker_is_told_with_the_answer_that_opened_it() -> None:
    clock, seen = FakeClock(), []
    meter, _, stops = bare(Limits(concurrency=1, rate=None, max_attempts=1, outage_threshold=1,
                                  outage_window=0.0), clock, seen)
    long_down = Answer(Verdict.RETRY, http_status=502, error_message="x" * 300)
    meter.finished(PLAIN, long_down)
    assert seen == [PoolPausedOutage("outage", 1, 502, "x" * 200)]
    meter.finished(PROBE, OK, cancel=False)  # a read answered: the cancels may still be down
    assert meter.breaker.is_open and seen[1:] == []
    meter.finished(PROBE, DOWN)  # a failed probe, no time out yet: 0 s is not past 0 s
    assert stops == []
    clock.t = 1000.5
    meter.finished(PLAIN, DOWN)  # not a probe: requests sent before it opened say nothing
    assert stops == []
    meter.finished(PROBE, DOWN)
    assert stops == [("Zuora did not answer for 0 s (--outage-window 0)", StopKind.OUTAGE)]
    meter.finished(PROBE, OK)
    assert seen[1:] == [PoolResumed("outage over")]


@pytest.mark.parametrize(("window", "pause_flag", "paused"), [
    (2, False, False), (1, False, True), (2, True, True),
])
def test_a_concurrency_429_pauses_the_pool_only_once_the_window_cannot_shrink(
        window: int, pause_flag: bool, paused: bool) -> None:
    """Unless --concurrency-429 pause: then every concurrency 429 pauses the pool."""
    clock = FakeClock()
    meter, _, _ = bare(Limits(concurrency=4, rate=None, max_attempts=1,
                              pause_on_concurrency_429=pause_flag), clock, [])
    meter.window.size, meter.window.in_flight = window, 1
    meter.finished(PLAIN, Answer(Verdict.RETRY, http_status=429, rate_limited=True,
                                 concurrency_limited=True, retry_after=120.0))
    assert meter.paused_until == (1120.0 if paused else 0.0)
    meter.window.in_flight = 1
    meter.finished(PLAIN, RATE_429)  # a rate 429 always pauses (not longer than the first)
    assert meter.paused_until == (1120.0 if paused else 1002.0)


def quota(remaining: int | None, window: int | None = 86400) -> Answer:
    return Answer(Verdict.SUCCEEDED, http_status=200, quota_remaining=remaining,
                  quota_window=window)


def test_a_daily_quota_short_of_the_rows_left_is_told_once_and_at_0_stops_the_run() -> None:
    seen: list[Event] = []
    meter, _, stops = bare(Limits(concurrency=1, rate=None, max_attempts=1), FakeClock(), seen,
                           rows_left=10)
    for answer in (quota(10), quota(11), quota(None), quota(5, None), quota(0, 86399),
                   quota(3, 3600)):
        meter.window.in_flight = 1
        meter.finished(PLAIN, answer)
    assert seen == [] and stops == []
    for answer in (quota(9), quota(8), quota(1)):
        meter.window.in_flight = 1
        meter.finished(PLAIN, answer)
    assert seen == [QuotaLow(9, 10, 86400)] and stops == []
    meter.window.in_flight = 1
    meter.finished(PLAIN, quota(0))
    assert stops == [("the tenant's daily API quota is used up (RateLimit-Remaining 0)",
                      StopKind.QUOTA)]
    meter.window.in_flight = 1
    meter.finished(PLAIN, quota(-1, 90000))
    assert len(stops) == 2 and seen == [QuotaLow(9, 10, 86400)]


async def test_an_open_breaker_makes_the_next_start_its_probe() -> None:
    """A start behind an open breaker waits for the probe's time and is the probe."""
    clock = FakeClock(overlap=True)
    meter, _, _ = bare(Limits(concurrency=2, rate=None, max_attempts=1, outage_threshold=1,
                              backoff=Backoff(base=3.0)), clock, [])
    meter.window.in_flight = 1
    meter.finished(PLAIN, DOWN)
    assert await meter.wait_can_start() == PROBE
    assert clock.t == 1003.0 and meter.window.in_flight == 1
    second = asyncio.ensure_future(meter.wait_can_start())
    await asyncio.sleep(0)
    assert not second.done()  # one probe at a time
    meter.started(PROBE)
    meter.finished(PROBE, OK)
    assert await second == PLAIN
    assert clock.t == 1003.0 and meter.window.in_flight == 1


async def test_a_start_queued_at_the_window_waits_out_a_pause_that_came_meanwhile() -> None:
    """A worker waiting for a place when a 429 pauses the pool gets the place back only
    after the pause (and its share of the resume spread, here all of 1 s at most)."""
    clock = FakeClock(overlap=True)
    meter, _, _ = bare(Limits(concurrency=1, rate=None, max_attempts=1), clock, [])
    assert await meter.wait_can_start() == PLAIN
    queued = asyncio.ensure_future(meter.wait_can_start())
    await asyncio.sleep(0)
    meter.finished(PLAIN, RATE_429)
    assert await queued == PLAIN
    assert clock.sleeps == [3.0] and clock.t == 1003.0 and meter.window.in_flight == 1


async def test_a_start_that_met_a_429_while_waiting_for_the_pacer_waits_the_pause() -> None:
    """At 1/s the second start waits 1 s for its slot; a 429 then pauses until 1003: the
    start waits that out (plus the spread, 1 s) and takes a fresh slot after it, so the
    third start is a full interval later, not a burst right behind it."""
    def at_one(clock: FakeClock) -> None:
        if clock.t == 1001.0:
            meter.pause(RATE_429)

    clock = FakeClock(overlap=True)
    meter, _, _ = bare(Limits(concurrency=1, rate=1.0, max_attempts=1), clock, [])
    starts = []
    for _ in range(3):
        ticket = await meter.wait_can_start()
        assert ticket == PLAIN
        starts.append(clock.t)
        meter.started(PLAIN)
        meter.finished(PLAIN, OK)
        clock.on_sleep = at_one
    assert starts == [1000.0, 1004.0, 1005.0]
    assert clock.sleeps == [1.0, 3.0, 1.0]


async def test_a_probe_stopped_or_cancelled_at_the_window_gives_its_turn_back() -> None:
    clock = FakeClock(overlap=True)
    stop = Stop(clock)
    meter = Limiter(Limits(concurrency=1, rate=None, max_attempts=1, outage_threshold=1),
                    clock, Top(), Events(), stop, lambda reason, kind: None, lambda: 0)
    meter.window.in_flight = 1
    meter.finished(PLAIN, DOWN)
    clock.t = 1001.0  # the probe is due
    meter.window.in_flight = 1  # the window is full
    waiting = asyncio.ensure_future(meter.wait_can_start())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert meter.breaker.probe_in_flight
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not meter.breaker.probe_in_flight and meter.window.in_flight == 1
    waiting = asyncio.ensure_future(meter.wait_can_start())
    for _ in range(3):
        await asyncio.sleep(0)
    assert meter.breaker.probe_in_flight
    stop.set("test", StopKind.INTERRUPTED)
    meter.window.release()
    assert await waiting is None
    assert not meter.breaker.probe_in_flight and meter.window.in_flight == 0
