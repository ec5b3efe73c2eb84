"""The pool-wide holds called directly: the pause after a 429 and the outage breaker, on a fake
clock, so every deadline, nap and probe time is asserted exactly."""

from __future__ import annotations

import asyncio
import random

from batch_cancel.model import Answer, Verdict
from batch_cancel.send.gate import Breaker, PauseGate
from batch_cancel.send.retry import Backoff
from tests.helpers import FakeClock

OK = Answer(Verdict.SUCCEEDED, http_status=200)
DOWN = Answer(Verdict.RETRY, http_status=503)
DROPPED = Answer(Verdict.RETRY, http_status=None)
RATE_429 = Answer(Verdict.RETRY, http_status=429, rate_limited=True, retry_after=2.0)
#: ceilings 1, 2, 4, 8, 8 ... s after the 1st, 2nd, 3rd ... failure
BACKOFF = Backoff(base=1.0, cap=8.0)


class Spread(random.Random):
    """Draws the top of every range asked for, and records the ranges."""

    def __init__(self) -> None:
        super().__init__(0)
        self.asked: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.asked.append((a, b))
        return b


def gate(clock: FakeClock, spread: float = 0.5, stopped: bool = False
         ) -> tuple[PauseGate, Spread]:
    rng = Spread()
    return PauseGate(clock, clock.sleep, rng, spread, lambda: stopped), rng


# --- the pause gate ---------------------------------------------------------------------------


def test_a_pause_moves_the_deadline_only_further_out() -> None:
    """The deadline is now + seconds; a shorter or equal one changes nothing (False)."""
    clock = FakeClock()
    pause, _ = gate(clock)
    assert pause.until == 0.0
    assert pause.pause(2.0) is True
    assert pause.until == 1002.0
    clock.t = 1001.0
    assert pause.pause(1.0) is False  # ends at 1002.0 too: no new pause, no new event
    assert pause.pause(0.5) is False
    assert pause.until == 1002.0
    assert pause.pause(1.5) is True
    assert pause.until == 1002.5


async def test_a_waiter_naps_the_time_left_plus_its_share_of_the_spread() -> None:
    """Paused until 1002.0 at 1000.5: one nap of 1.5 + up to 0.25 of spread, drawn from
    uniform(0, spread); the waiter reports that it waited."""
    clock = FakeClock(1000.5)
    pause, rng = gate(clock, spread=0.25)
    pause.until = 1002.0
    assert await pause.wait() is True
    assert clock.sleeps == [1.75]
    assert rng.asked == [(0.0, 0.25)]


async def test_a_waiter_woken_early_naps_again_until_the_deadline() -> None:
    """A nap that ends before the deadline (it moved on meanwhile) is followed by another."""
    clock = FakeClock()
    pause, _ = gate(clock, spread=0.0)
    pause.until = 1001.0

    def later(moved: FakeClock) -> None:
        if moved.t == 1001.0:
            pause.until = 1003.0  # another 429 while this worker slept

    clock.on_sleep = later
    assert await pause.wait() is True
    assert clock.sleeps == [1.0, 2.0]


async def test_a_gate_told_of_no_stop_waits_its_pause_out() -> None:
    """Without a stop signal the waiter is never taken for stopped."""
    clock = FakeClock()
    pause = PauseGate(clock, clock.sleep, Spread(), 0.0)
    pause.pause(3.0)
    assert await pause.wait() is True
    assert clock.sleeps == [3.0]


async def test_no_pause_no_wait() -> None:
    """At or past the deadline, and when the run stops, a waiter returns at once (False)."""
    clock = FakeClock()
    pause, rng = gate(clock)
    assert await pause.wait() is False
    pause.until = 1000.0  # exactly now: nothing left to wait
    assert await pause.wait() is False
    stopped, _ = gate(clock, stopped=True)
    assert stopped.pause(5.0)
    assert await stopped.wait() is False
    assert clock.sleeps == [] and rng.asked == []


# --- the breaker ------------------------------------------------------------------------------


def test_the_breaker_opens_after_threshold_outage_failures_in_a_row() -> None:
    """Three 5xx or dropped answers in a row open it at that moment; the first probe is due
    one backoff ceiling (1 s) later. A clean answer in between starts the count again."""
    clock = FakeClock()
    breaker = Breaker(clock, 3, BACKOFF)
    assert not breaker.is_open and breaker.open_for() == 0.0
    assert [breaker.observe(a, False) for a in (DOWN, DROPPED, OK, DOWN, DOWN)] == [""] * 5
    assert breaker.failures == 2 and not breaker.is_open
    clock.t = 1010.0
    assert breaker.observe(DOWN, False) == "opened"
    assert breaker.is_open and breaker.failures == 3
    assert (breaker.opened_at, breaker.next_probe) == (1010.0, 1011.0)
    clock.t = 1013.5
    assert breaker.open_for() == 3.5
    clock.t = 3030.0
    assert breaker.open_for() == 2020.0
    clock.t = 1013.5
    # more failures of requests already on their way neither reopen nor move the probe
    assert breaker.observe(DOWN, False) == ""
    assert (breaker.opened_at, breaker.next_probe, breaker.failures) == (1010.0, 1011.0, 4)


def test_a_429_and_a_final_answer_are_not_outages() -> None:
    """A 429 or a 4xx says Zuora is up: it clears the count like any answer."""
    breaker = Breaker(FakeClock(), 2, BACKOFF)
    final = Answer(Verdict.FINAL, http_status=400)
    for answer in (DOWN, RATE_429, DOWN, final, DOWN):
        assert breaker.observe(answer, False) == ""
    assert breaker.failures == 1 and not breaker.is_open


def test_each_failed_probe_backs_off_the_next_one() -> None:
    """Probe n failing at t sets the next one at t + ceiling(n + 1): 2, 4, 8, 8 s."""
    clock = FakeClock()
    breaker = Breaker(clock, 1, BACKOFF)
    assert breaker.observe(DOWN, False) == "opened"
    due = []
    for n in range(1, 5):
        clock.t = 1000.0 + 10 * n
        breaker.probe_in_flight = True
        assert breaker.observe(DOWN, True) == "probe_failed"
        assert not breaker.probe_in_flight
        due.append(breaker.next_probe - clock.t)
        assert breaker.probes == n
    assert due == [2.0, 4.0, 8.0, 8.0]


def test_an_answered_cancel_closes_the_breaker_and_starts_afresh() -> None:
    """Closed: no opening time, no probes counted, no failures; the next outage counts from 1."""
    clock = FakeClock()
    breaker = Breaker(clock, 2, BACKOFF)
    breaker.observe(DOWN, False)
    breaker.observe(DOWN, False)
    breaker.observe(DOWN, True)
    assert breaker.probes == 1
    assert breaker.observe(OK, True) == "closed"
    assert (breaker.is_open, breaker.opened_at, breaker.probes, breaker.failures) == (
        False, None, 0, 0)
    assert breaker.open_for() == 0.0
    assert breaker.observe(DOWN, False) == ""
    assert breaker.observe(DOWN, False) == "opened"


def test_a_read_can_trip_the_breaker_but_not_close_it() -> None:
    """Invoice reads (cancel=False) count as outage failures; a read's clean answer leaves
    the breaker open and the failures counted, but frees the probe's place."""
    breaker = Breaker(FakeClock(), 2, BACKOFF)
    assert breaker.observe(DOWN, False, cancel=False) == ""
    assert breaker.observe(OK, False, cancel=False) == ""
    assert breaker.failures == 1
    assert breaker.observe(DOWN, False, cancel=False) == "opened"
    breaker.probe_in_flight = True
    assert breaker.observe(OK, True, cancel=False) == ""
    assert breaker.is_open and breaker.failures == 2 and not breaker.probe_in_flight


async def test_a_closed_breaker_admits_at_once_and_no_probe() -> None:
    clock = FakeClock()
    breaker = Breaker(clock, 1, BACKOFF)
    assert await breaker.admit(lambda: False, clock.sleep) is False
    assert clock.sleeps == []


async def test_an_open_breaker_admits_one_probe_when_it_is_due() -> None:
    """Opened at 1000: the first admission naps exactly to 1001 and is the probe; the next
    waits for that probe's answer, then is the next probe when it fails ... 2 s later."""
    clock = FakeClock()
    breaker = Breaker(clock, 1, BACKOFF)
    breaker.observe(DOWN, False)
    assert await breaker.admit(lambda: False, clock.sleep) is True
    assert clock.sleeps == [1.0] and clock.t == 1001.0 and breaker.probe_in_flight
    second = asyncio.ensure_future(breaker.admit(lambda: False, clock.sleep))
    await asyncio.sleep(0)
    assert not second.done()  # one probe at a time
    assert breaker.observe(DOWN, True) == "probe_failed"
    assert await second is True
    assert clock.sleeps == [1.0, 2.0] and clock.t == 1003.0


async def test_a_probe_waits_exactly_until_its_time_or_goes_at_once_when_it_is_past() -> None:
    """Opened at 2 s with a first ceiling of 3 s: one nap of 3 s. A probe due at 1001 asked
    for at 1005 goes at once."""
    clock = FakeClock(start=2.0)
    breaker = Breaker(clock, 1, Backoff(base=3.0))
    breaker.observe(DOWN, False)
    assert await breaker.admit(lambda: False, clock.sleep) is True
    assert clock.sleeps == [3.0]
    late = FakeClock(1005.0)
    past = Breaker(late, 1, BACKOFF)
    past.opened_at, past.next_probe = 1000.0, 1001.0
    assert await past.admit(lambda: False, late.sleep) is True
    assert late.sleeps == []


async def test_a_probe_read_answered_lets_the_next_worker_probe() -> None:
    """A read that was the probe got an answer: the breaker stays open (a read does not
    close it) and the worker waiting behind the probe is woken to probe next."""
    clock = FakeClock(1001.0)
    breaker = Breaker(clock, 1, BACKOFF)
    breaker.opened_at, breaker.next_probe, breaker.probe_in_flight = 1000.0, 1001.0, True
    waiting = asyncio.ensure_future(breaker.admit(lambda: False, clock.sleep))
    await asyncio.sleep(0)
    assert breaker.observe(OK, True, cancel=False) == ""
    for _ in range(3):
        await asyncio.sleep(0)
    assert waiting.done() and waiting.result() is True
    assert breaker.is_open


async def test_an_abandoned_probe_lets_the_next_worker_probe_at_once() -> None:
    clock = FakeClock(1001.0)
    breaker = Breaker(clock, 1, BACKOFF)
    breaker.opened_at, breaker.next_probe, breaker.probe_in_flight = 1000.0, 1001.0, True
    waiting = asyncio.ensure_future(breaker.admit(lambda: False, clock.sleep))
    await asyncio.sleep(0)
    assert not waiting.done()
    breaker.abandon_probe()
    assert await waiting is True
    assert clock.sleeps == []


async def test_a_stop_releases_every_waiter_of_an_open_breaker() -> None:
    """wake_all with the run stopping: the waiter behind a probe in flight returns False,
    and a stopped run admits nobody, not even a due probe."""
    clock = FakeClock()
    breaker = Breaker(clock, 1, BACKOFF)
    breaker.observe(DOWN, False)
    breaker.probe_in_flight = True
    stopping = False
    waiting = asyncio.ensure_future(breaker.admit(lambda: stopping, clock.sleep))
    await asyncio.sleep(0)
    assert not waiting.done()
    stopping = True
    breaker.wake_all()
    assert await waiting is False
    breaker.probe_in_flight = False
    clock.t = 1005.0
    assert await breaker.admit(lambda: True, clock.sleep) is False
    assert clock.sleeps == [] and not breaker.probe_in_flight
