"""Adaptive flow control: the window shrinks on 429, grows back, and respects the share."""

from __future__ import annotations

import asyncio
import random

from batch_cancel.config import Settings
from batch_cancel.flow import INITIAL_WINDOW, Window
from batch_cancel.model import Answer, CancelJob, Outcome, Status, Verdict
from batch_cancel.runner import Limits, Runner
from batch_cancel.zuora import Credentials, ZuoraClient, open_session

CLEAN = Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=40,
               concurrency_remaining=20)
THROTTLED = Answer(Verdict.RETRY, http_status=429, rate_limited=True, concurrency_limit=40)


class Ticks:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def grow(window: Window, answers: int, answer: Answer = CLEAN) -> None:
    """Feed answers spread over time, a bit over a second apart (Zuora's sampling interval)."""
    clock = window._clock  # the test's Ticks
    for _ in range(answers):
        assert isinstance(clock, Ticks)
        clock.t += 1.1
        window.observe(answer)


def test_window_starts_small_and_doubles_until_the_ceiling() -> None:
    """Slow start: 4, 8, 16, then the ceiling, never a burst at start."""
    window = Window(max_size=64, share=0.5, clock=Ticks())
    sizes = [window.size]
    for _ in range(4):
        grow(window, window.size)
        sizes.append(window.size)
    assert sizes == [INITIAL_WINDOW, 8, 16, 20, 20]


def test_window_never_exceeds_the_share_of_the_advertised_limit() -> None:
    """With Concurrency-Limit-Limit 40 and share 0.5 the window stays at 20 or below."""
    window = Window(max_size=64, share=0.5, clock=Ticks())
    grow(window, 500)
    assert window.ceiling == 20 and window.size == 20
    grow(window, 50, Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=10))
    assert window.size == 5


def test_window_never_exceeds_the_concurrency_flag() -> None:
    """--concurrency caps the window even when the tenant's share is larger."""
    window = Window(max_size=6, share=1.0, clock=Ticks())
    grow(window, 200)
    assert window.size == 6


def test_a_429_halves_the_window_once_per_second() -> None:
    """Multiplicative decrease, with a cooldown so one burst of 429s counts once."""
    ticks = Ticks()
    window = Window(max_size=64, share=0.5, clock=ticks)
    grow(window, 200)
    assert window.size == 20
    change = window.observe(THROTTLED)
    assert change is not None and (change.old, change.new, change.reason) == (20, 10, "429")
    assert window.observe(THROTTLED) is None and window.size == 10
    ticks.t += 1.1
    window.observe(THROTTLED)
    assert window.size == 5


def test_the_window_grows_back_by_one_per_window_of_clean_answers() -> None:
    """Additive increase after a decrease: +1 for each full window of clean answers."""
    window = Window(max_size=64, share=0.5, clock=Ticks())
    grow(window, 200)
    window.observe(THROTTLED)
    assert window.size == 10
    grow(window, 10)
    assert window.size == 11
    grow(window, 11)
    assert window.size == 12


def test_a_tenant_filled_by_others_shrinks_the_window_without_a_429() -> None:
    """Remaining 0 while little of it is ours: shrink to what is ours before Zuora says 429."""
    window = Window(max_size=64, share=0.5, clock=Ticks())
    grow(window, 200)
    window.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=40,
                          concurrency_remaining=0))
    assert window.size == 1


async def test_a_tenant_filled_by_our_own_requests_does_not_shrink_the_window() -> None:
    """Remaining 0 because our own window fills the limit is not congestion."""
    window = Window(max_size=40, share=1.0, clock=Ticks())
    grow(window, 500, Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=40))
    assert window.size == 40
    for _ in range(39):
        await window.acquire()  # 40 were in flight; this answer's request just left
    assert window.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=40,
                                 concurrency_remaining=0)) is None
    assert window.size == 40


def test_outage_answers_do_not_move_the_window() -> None:
    """5xx and dropped connections are the breaker's concern, not congestion."""
    window = Window(max_size=64, share=0.5, clock=Ticks())
    before = window.size
    grow(window, 50, Answer(Verdict.RETRY, http_status=503, in_doubt=True))
    grow(window, 50, Answer(Verdict.RETRY, in_doubt=True))
    assert window.size == before


async def test_waiters_get_places_as_they_free_up_and_when_the_window_grows() -> None:
    """acquire() blocks at the window size and resumes on release."""
    window = Window(max_size=8, share=1.0, clock=Ticks())
    assert window.size == 4
    for _ in range(4):
        await window.acquire()
    blocked = asyncio.create_task(window.acquire())
    await asyncio.sleep(0)
    assert not blocked.done()
    window.release()
    await asyncio.wait_for(blocked, 1)
    assert window.in_flight == 4


async def test_the_server_never_sees_more_than_the_share_of_its_limit(live_sim) -> None:
    """Against a tenant limit of 10 with share 0.5, at most 5 requests are ever in flight."""
    live_sim.config.concurrency_limit = 10
    live_sim.config.latency = 0.01
    outcomes: dict[int, Outcome] = {}
    credentials = Credentials(live_sim.config.client_id, live_sim.config.client_secret)
    async with open_session() as session:
        client = ZuoraClient(session, live_sim.url, credentials, Settings())
        runner = Runner(client, Limits(concurrency=32, rate=None, max_attempts=3,
                                       tenant_share=0.5), "r", rng=random.Random(1))
        jobs = [CancelJob(n, f"INV{n:05d}", "02") for n in range(2, 82)]
        await runner.run(jobs, lambda o: outcomes.__setitem__(o.row, o))
    assert all(o.status is Status.SUCCEEDED for o in outcomes.values())
    assert live_sim.stats.max_in_flight <= 5
    assert runner.window.ceiling == 5
    assert not [r for r in live_sim.stats.requests if r.status == 429]


def test_the_window_grows_only_into_free_places_and_once_per_sample() -> None:
    """Growth stops one short of the tenant's free places, and waits for a fresh sample."""
    ticks = Ticks()
    window = Window(max_size=64, share=0.5, clock=ticks)
    tight = Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=40,
                   concurrency_remaining=3)
    for _ in range(4):
        window.observe(tight)
    assert window.size == 6  # 4 + 3 free - 1 kept for the others
    for _ in range(20):
        window.observe(tight)  # the same second: Remaining has not seen the growth yet
    assert window.size == 6
