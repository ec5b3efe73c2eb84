"""Adaptive flow control: the window shrinks on 429, grows back, and respects the share."""

from __future__ import annotations

import asyncio
import random

import structlog

from batch_cancel.config import Settings
from batch_cancel.model import Answer, Outcome, Status, Verdict
from batch_cancel.send.clock import Clock
from batch_cancel.send.flow import INITIAL_WINDOW, Window, WindowChange
from batch_cancel.send.limits import Limits
from batch_cancel.send.pool import Runner
from batch_cancel.send.row import Sender
from batch_cancel.send.zuora import Credentials, ZuoraClient, open_session
from tests.helpers import FakeClock, SenderSpy, jobs, starts_before_a_429_deadline

CLEAN = Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=40,
               concurrency_remaining=30)
THROTTLED = Answer(Verdict.RETRY, http_status=429, rate_limited=True, concurrency_limited=True,
                   concurrency_limit=40)


async def held(window: Window, places: int) -> None:
    """Take `places` places in the window and give them back: the most of ours the window
    has seen in flight is then at least `places`."""
    for _ in range(places):
        await window.acquire()
    for _ in range(places):
        window.release()


async def throttle(window: Window, places: int | None = None) -> WindowChange | None:
    """A concurrency 429 met with the window full (our places as the tenant counted them),
    or with `places` of ours in flight; every place is back by the time it is read."""
    await held(window, window.size if places is None else places)
    return window.observe(THROTTLED)


def grow(window: Window, clock: FakeClock, answers: int, answer: Answer = CLEAN) -> None:
    """Feed answers spread over time, a bit over a second apart (Zuora's sampling interval)."""
    for _ in range(answers):
        clock.t += 1.1
        window.observe(answer)


def test_window_starts_small_and_doubles_until_the_ceiling() -> None:
    """Slow start: 4, 8, 16, then the ceiling, never a burst at start."""
    ticks = FakeClock(start=0.0)
    window = Window(max_size=64, share=0.5, clock=ticks.now)
    sizes = [window.size]
    for _ in range(4):
        grow(window, ticks, window.size)
        sizes.append(window.size)
    assert sizes == [INITIAL_WINDOW, 8, 16, 20, 20]


def test_window_never_exceeds_the_share_of_the_advertised_limit() -> None:
    """With Concurrency-Limit-Limit 40 and share 0.5 the window stays at 20 or below."""
    ticks = FakeClock(start=0.0)
    window = Window(max_size=64, share=0.5, clock=ticks.now)
    grow(window, ticks, 500)
    assert window.ceiling == 20 and window.size == 20
    grow(window, ticks, 50, Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=10))
    assert window.size == 5


def test_window_never_exceeds_the_concurrency_flag() -> None:
    """--concurrency caps the window even when the tenant's share is larger."""
    ticks = FakeClock(start=0.0)
    window = Window(max_size=6, share=1.0, clock=ticks.now)
    grow(window, ticks, 200)
    assert window.size == 6


async def test_a_429_within_the_burst_clamps_below_what_we_held() -> None:
    """A second 429 within the second, met at fewer of ours in flight: two below that, at once."""
    ticks = FakeClock(start=0.0)
    window = Window(max_size=64, share=1.0, clock=ticks.now)
    grow(window, ticks, 300, Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=40))
    assert window.size == 40
    await throttle(window)
    assert window.size == 20
    # the tenant refused our 13th: it allows 12 (no Remaining advertised)
    change = await throttle(window, 13)
    assert change is not None and (change.old, change.new) == (20, 12)


async def test_without_remaining_the_window_stays_one_below_the_refused_count() -> None:
    """No Concurrency-Limit headers: the 13th refused says 12 fit, and nobody else is seen."""
    ticks = FakeClock(start=0.0)
    window = Window(max_size=64, share=1.0, clock=ticks.now)
    bare = Answer(Verdict.SUCCEEDED, http_status=200)
    grow(window, ticks, 100, bare)
    await held(window, 13)
    window.observe(Answer(Verdict.RETRY, http_status=429, rate_limited=True,
                          concurrency_limited=True))
    assert window.size == 12
    for _ in range(100):  # 10 s of clean answers: it stays one below the refused count
        ticks.t += 0.1
        window.observe(bare)
    assert window.size == 12


def test_a_rate_429_leaves_the_window_alone() -> None:
    """Too many starts per second says nothing of how many may be in flight: the pace acts."""
    ticks = FakeClock(start=0.0)
    window = Window(max_size=64, share=0.5, clock=ticks.now)
    grow(window, ticks, 200)
    rate_429 = Answer(Verdict.RETRY, http_status=429, rate_limited=True, concurrency_limit=40)
    assert window.observe(rate_429) is None and window.size == 20


async def test_a_429_halves_the_window_once_per_second() -> None:
    """Multiplicative decrease, with a cooldown so one burst of 429s counts once."""
    ticks = FakeClock(start=0.0)
    window = Window(max_size=64, share=0.5, clock=ticks.now)
    grow(window, ticks, 200)
    assert window.size == 20
    for _ in range(20):
        await window.acquire()  # the whole window in flight
    window.release()  # the first refused request's answer
    change = window.observe(THROTTLED)
    assert change is not None and (change.old, change.new, change.reason) == (20, 10, "429")
    window.release()  # another request of the same burst, refused while we still held 20
    assert window.observe(THROTTLED) is None and window.size == 10
    for _ in range(18):
        window.release()
    ticks.t += 1.1
    await throttle(window)
    assert window.size == 5


async def test_the_window_grows_back_by_one_per_window_of_clean_answers() -> None:
    """Additive increase after a decrease: +1 for each full window of clean answers."""
    ticks = FakeClock(start=0.0)
    window = Window(max_size=64, share=0.5, clock=ticks.now)
    grow(window, ticks, 200)
    await throttle(window)
    assert window.size == 10
    grow(window, ticks, 10)
    assert window.size == 11
    grow(window, ticks, 11)
    assert window.size == 12


def test_a_tenant_filled_by_others_shrinks_the_window_without_a_429() -> None:
    """Remaining 0 while little of it is ours: shrink to what is ours before Zuora says 429."""
    ticks = FakeClock(start=0.0)
    window = Window(max_size=64, share=0.5, clock=ticks.now)
    grow(window, ticks, 200)
    window.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=40,
                          concurrency_remaining=0))
    assert window.size == 1


async def test_a_tenant_filled_by_our_own_requests_does_not_shrink_the_window() -> None:
    """Remaining 0 because our own window fills the limit is not congestion."""
    ticks = FakeClock(start=0.0)
    window = Window(max_size=40, share=1.0, clock=ticks.now)
    grow(window, ticks, 500, Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=40))
    assert window.size == 40
    for _ in range(39):
        await window.acquire()  # 40 were in flight; this answer's request just left
    assert window.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=40,
                                 concurrency_remaining=0)) is None
    assert window.size == 40


def test_outage_answers_do_not_move_the_window() -> None:
    """5xx and dropped connections are the breaker's concern, not congestion."""
    ticks = FakeClock(start=0.0)
    window = Window(max_size=64, share=0.5, clock=ticks.now)
    before = window.size
    grow(window, ticks, 50, Answer(Verdict.RETRY, http_status=503, in_doubt=True))
    grow(window, ticks, 50, Answer(Verdict.RETRY, in_doubt=True))
    assert window.size == before


async def test_waiters_get_places_as_they_free_up_and_when_the_window_grows() -> None:
    """acquire() blocks at the window size and resumes on release."""
    window = Window(max_size=8, share=1.0, clock=FakeClock(start=0.0).now)
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
        await runner.run(jobs(80), lambda o: outcomes.__setitem__(o.row, o))
    assert all(o.status is Status.SUCCEEDED for o in outcomes.values())
    assert live_sim.stats.max_in_flight <= 5
    assert runner.limiter.window.ceiling == 5
    assert not [r for r in live_sim.stats.requests if r.status == 429]


def test_the_window_grows_only_into_the_places_the_tenant_had_free() -> None:
    """Growth stops one short of Remaining plus what we held when it was sampled."""
    window = Window(max_size=64, share=1.0, clock=FakeClock(start=0.0).now)
    tight = Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=10,
                   concurrency_remaining=3)
    window.in_flight = 3  # 4 were in flight when Zuora counted; this answer's just left
    for _ in range(4):
        window.observe(tight)
    assert window.room == 6 and window.size == 6  # 4 ours + 3 free - 1 kept spare
    window.in_flight = 5
    for _ in range(30):
        window.observe(tight)  # the same stale sample, though we now hold 6: no growth
    assert window.size == 6


def test_a_stale_sample_counts_the_fewest_requests_we_held_since_the_last_one() -> None:
    """Zuora samples Remaining once a second: credit only what we surely held then."""
    ticks = FakeClock(start=0.0)
    window = Window(max_size=64, share=1.0, clock=ticks.now)
    window.in_flight = 1
    window.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_remaining=30))
    ticks.t += 0.6
    window.in_flight = 9
    window.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_remaining=30))
    ticks.t += 0.5  # a new value a second after the last one: a sampled Remaining
    window.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_remaining=20))
    # not 10 + 20: the sample may predate our growth; 1 spare, 1 per 10 of the others' 18
    assert window.room == 2 + 20 - 1 - 1


async def _hold_in_flight(client: ZuoraClient, places: int, stop: asyncio.Event) -> None:
    """Another integration of the tenant: keeps `places` reads in flight until told to stop."""

    async def one(n: int) -> None:
        while not stop.is_set():
            await client.invoice_state(f"BG-{n}", f"bg-{n}")

    await asyncio.gather(*(one(n) for n in range(places)))


async def _run_beside_others(live_sim, limits: Limits, others: int, rows: int,
                             others_for: float | None = None, clock: Clock | None = None,
                             spy: list[SenderSpy] | None = None
                             ) -> tuple[Runner, dict[int, Outcome]]:
    """Run `rows` cancels while `others` reads of another client hold places on the tenant
    (with `spy`, the runner's calls go through a SenderSpy appended to it)."""
    outcomes: dict[int, Outcome] = {}
    credentials = Credentials(live_sim.config.client_id, live_sim.config.client_secret)
    stop = asyncio.Event()
    async with open_session() as session:
        client = ZuoraClient(session, live_sim.url, credentials, Settings())
        await client.authenticate()
        background = asyncio.create_task(_hold_in_flight(client, others, stop))
        if others_for is not None:
            asyncio.get_running_loop().call_later(others_for, stop.set)
        await asyncio.sleep(0.1)  # the others are in flight before the run starts
        sender: Sender = client
        if spy is not None:
            spy.append(SenderSpy(client, clock or Clock()))
            sender = spy[-1]
        runner = Runner(sender, limits, "r", rng=random.Random(3), clock=clock)
        try:
            await asyncio.wait_for(
                runner.run(jobs(rows), lambda o: outcomes.__setitem__(o.row, o)), 60)
        finally:
            stop.set()
            await background
    return runner, outcomes


def _cancel_429s(live_sim) -> list[float]:
    return [r.started for r in live_sim.stats.cancels() if r.status == 429]


async def test_a_concurrency_429_shrinks_the_window_without_pausing_the_pool(live_sim) -> None:
    """Code 50000070 halves the window and the refused row is retried soon, not after 120 s."""
    live_sim.config.concurrency_limit = 6
    live_sim.config.latency = 0.03
    live_sim.config.concurrency_sample_interval = 1.0  # Remaining is stale, as on Zuora
    runner, outcomes = await _run_beside_others(
        live_sim, Limits(concurrency=8, rate=None, max_attempts=5, tenant_share=1.0),
        others=3, rows=40)
    assert _cancel_429s(live_sim), "the scenario must provoke a concurrency 429"
    assert len(outcomes) == 40
    assert all(o.status is Status.SUCCEEDED for o in outcomes.values())
    assert runner.limiter.paused_until == 0.0  # the pool never paused for Retry-After: 120
    assert runner.limiter.window.size < 8


async def test_concurrency_429_pause_mode_pauses_the_whole_pool(live_sim) -> None:
    """With --concurrency-429 pause, each concurrency 429 pauses the pool for its Retry-After
    (on the runner's clock) and the row it met waits that long before its next call."""
    live_sim.config.concurrency_limit = 6
    live_sim.config.latency = 0.03
    live_sim.config.concurrency_retry_after = 1
    live_sim.config.concurrency_sample_interval = 1.0
    limits = Limits(concurrency=8, rate=None, max_attempts=5, tenant_share=1.0,
                    pause_on_concurrency_429=True)
    clock = FakeClock(overlap=True)
    spy: list[SenderSpy] = []
    with structlog.testing.capture_logs() as logs:
        _, outcomes = await _run_beside_others(live_sim, limits, others=3, rows=20,
                                               clock=clock, spy=spy)
    assert all(o.status is Status.SUCCEEDED for o in outcomes.values())
    assert _cancel_429s(live_sim), "the scenario must provoke a concurrency 429"
    pauses = [e for e in logs if e["event"] == "pool.paused"]
    assert pauses and {(e["limit"], e["seconds"]) for e in pauses} == {("concurrency", 1.0)}
    early = starts_before_a_429_deadline(spy[0].events, same_key_only=True)
    assert not early, early


async def test_a_concurrency_429_at_a_window_of_one_pauses_for_retry_after(live_sim) -> None:
    """A tenant filled by others: once the window is 1, the pool waits Zuora's Retry-After."""
    live_sim.config.concurrency_limit = 4
    live_sim.config.latency = 0.05
    live_sim.config.concurrency_retry_after = 1
    runner, outcomes = await _run_beside_others(
        live_sim, Limits(concurrency=8, rate=None, max_attempts=10, tenant_share=1.0),
        others=4, rows=6, others_for=3.5)
    assert runner.limiter.paused_until > 0.0
    assert all(o.status is Status.SUCCEEDED for o in outcomes.values())


async def test_after_a_429_the_window_stays_below_the_size_that_met_it_for_a_while() -> None:
    """Remaining shows others' places as free between their requests: do not regrow into them."""
    ticks = FakeClock(start=0.0)
    window = Window(max_size=64, share=0.5, clock=ticks.now)
    roomy = Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=40,
                   concurrency_remaining=30)
    grow(window, ticks, 100, roomy)
    assert window.size == 20
    await throttle(window)
    assert window.size == 10
    for _ in range(200):
        ticks.t += 0.01  # two seconds of clean answers that advertise plenty of room
        window.observe(roomy)
    assert window.size == 18  # two below the 20 that met the 429
    ticks.t += 30.0
    grow(window, ticks, 40, roomy)
    assert window.size == 20  # the memory fades: probing past it again


def test_the_room_keeps_a_place_spare_per_ten_requests_of_other_clients() -> None:
    """Remaining counts others' requests between two calls as free: leave room for them."""
    window = Window(max_size=64, share=1.0, clock=FakeClock(start=0.0).now)
    window.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=40,
                          concurrency_remaining=17))
    assert window.room == 18 - 1 - 2  # 1 ours + 17 free; others hold 22: 2 more spare


def test_an_exact_remaining_is_trusted_as_it_comes() -> None:
    """Remaining that changes from one answer to the next counts our requests in flight now."""
    ticks = FakeClock(start=0.0)
    window = Window(max_size=64, share=1.0, clock=ticks.now)
    window.in_flight = 1
    window.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_remaining=30))
    ticks.t += 0.01
    window.in_flight = 15
    window.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_remaining=24))
    assert window.room == 16 + 24  # not 2 + 24: no sample is stale here (and nobody else
    # holds a place of the 40: none is kept spare)


def test_the_room_keeps_a_place_spare_only_while_others_hold_some() -> None:
    """Alone on the tenant the whole share may be used; with others in sight, one spare."""
    window = Window(max_size=64, share=1.0, clock=FakeClock(start=0.0).now)
    window.in_flight = 39
    window.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=40,
                          concurrency_remaining=0))
    assert window.room == 40
    window.in_flight = 29
    window.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=40,
                          concurrency_remaining=1))  # exact: it changed at once
    assert window.room == 31 - 1 - 0  # others hold 9: one place spare


def test_an_exact_remaining_lets_slow_start_grow_straight_into_the_room() -> None:
    """Remaining advertised exactly says how many places are free: no round trips to probe."""
    ticks = FakeClock(start=0.0)
    window = Window(max_size=64, share=1.0, clock=ticks.now)
    window.in_flight = 3
    window.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=40,
                          concurrency_remaining=36))
    assert window.size == INITIAL_WINDOW  # one value: not known to be exact yet
    ticks.t += 0.01
    window.in_flight = 2
    window.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=40,
                          concurrency_remaining=30))  # others took 7 meanwhile
    assert window.size == 3 + 30 - 1 - 0  # ours + free - 1 spare (others hold 7: 0 more)
