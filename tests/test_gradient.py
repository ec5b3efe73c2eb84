"""Gradient2 (`--concurrency-algorithm gradient2`): latency and concurrency 429s size the limit
on requests in flight, under the window's ceilings; the Limiter measures each round trip on its
injected clock. Exact values: the formula is Netflix's, the clock a fake one."""

from __future__ import annotations

import asyncio
import random

import pytest

from batch_cancel.config import ConfigError, Settings, Target
from batch_cancel.events import Event, Events, PoolWindowChanged
from batch_cancel.model import Answer, CancelJob, Outcome, Status, Verdict
from batch_cancel.send.clock import Stop
from batch_cancel.send.flow import Window, WindowChange
from batch_cancel.send.gradient import Gradient2, LongRtt
from batch_cancel.send.limits import Limiter, Limits, limits_for
from batch_cancel.send.pool import Runner
from batch_cancel.send.zuora import Credentials, ZuoraClient, open_session
from tests.helpers import FakeClock, jobs

OK = Answer(Verdict.SUCCEEDED, http_status=200)
CONCURRENCY_429 = Answer(Verdict.RETRY, http_status=429, rate_limited=True,
                         concurrency_limited=True, retry_after=120.0)
RATE_429 = Answer(Verdict.RETRY, http_status=429, rate_limited=True, retry_after=2.0)
DOWN = Answer(Verdict.RETRY, http_status=503)


def full(gradient: Gradient2) -> Gradient2:
    """Every place taken but the answer's own, as in a pool that keeps the limit busy."""
    gradient.in_flight = gradient.size - 1
    return gradient


def grown_to_ceiling(rtt: float = 0.05) -> Gradient2:
    """A limit of 64 x 0.5 of the assumed 40 = 20, grown there on steady answers."""
    gradient = Gradient2(max_size=64, share=0.5)
    for _ in range(40):
        full(gradient).observe(OK, rtt)
    assert gradient.size == 20
    return gradient


def test_it_starts_at_four_like_the_window() -> None:
    """No burst at the start: 4 places, the window's slow-start opening."""
    assert Gradient2(max_size=64, share=0.5).size == 4
    assert Gradient2(max_size=2, share=0.5).size == 2


def test_steady_latency_grows_the_limit_by_a_fifth_of_the_queue_allowance() -> None:
    """limit*0.8 + (limit*1 + 4)*0.2: +0.8 per answer while the RTT holds."""
    gradient = Gradient2(max_size=64, share=0.5)
    sizes = []
    for _ in range(5):
        full(gradient).observe(OK, 0.05)
        sizes.append(gradient.size)
    assert sizes == [4, 5, 6, 7, 8]
    assert gradient.estimate == pytest.approx(8.0)


def test_a_latency_rise_lowers_the_limit() -> None:
    """At 20, an RTT twice the long-term one: gradient ~0.5, the limit drops to 18.8 -> 18."""
    gradient = grown_to_ceiling()
    change = full(gradient).observe(OK, 0.10)
    long_rtt = 0.05 * (1 - 2 / 601) + 0.10 * 2 / 601
    assert gradient.estimate == pytest.approx(20 * 0.8 + (20 * long_rtt / 0.10 + 4) * 0.2)
    assert change == WindowChange(20, 18, "gradient")
    sizes = []
    for _ in range(19):
        full(gradient).observe(OK, 0.10)
        sizes.append(gradient.size)
    # down towards 4 / (1 - gradient), ~8.5, while the long RTT creeps up to the new one
    assert sizes == [17, 16, 15, 15, 14, 13, 13, 12, 12, 11, 11, 11, 11, 10, 10, 10, 10, 10, 9]


def test_a_concurrency_429_takes_a_tenth_off() -> None:
    """A refusal counts as the gradient's floor without queue allowance: 20 -> 18 -> 16.2."""
    gradient = grown_to_ceiling()
    assert gradient.observe(CONCURRENCY_429, 0.001) == WindowChange(20, 18, "429")
    assert gradient.observe(CONCURRENCY_429, 0.001) == WindowChange(18, 16, "429")
    assert gradient.estimate == pytest.approx(16.2)
    assert gradient.short_rtt == 0.05  # the quick refusal is no RTT sample


def test_a_run_of_429s_never_takes_it_below_one() -> None:
    """However many refusals, one request may still go."""
    gradient = grown_to_ceiling()
    for _ in range(100):
        gradient.observe(CONCURRENCY_429)
    assert gradient.size == 1


def test_rate_429s_and_outages_leave_it_alone() -> None:
    """A rate 429 is the pace's, a 503 or no answer the breaker's: neither is congestion."""
    gradient = grown_to_ceiling()
    for answer in (RATE_429, DOWN, Answer(Verdict.RETRY, in_doubt=True)):
        assert full(gradient).observe(answer, 9.0) is None
    assert gradient.size == 20
    assert gradient.short_rtt == 0.05


def test_it_does_not_grow_while_the_caller_leaves_it_half_empty() -> None:
    """Fewer than half the limit in flight: the RTT is learned, the limit kept."""
    gradient = grown_to_ceiling()
    gradient.observe(CONCURRENCY_429)  # 18
    gradient.in_flight = 7  # 8 with the answer's own, under 18 / 2
    for _ in range(10):
        assert gradient.observe(OK, 0.01) is None
    assert gradient.size == 18
    assert gradient.short_rtt == 0.01


@pytest.mark.parametrize(("max_size", "share", "advertised", "ceiling"),
                         [(64, 0.5, None, 20), (6, 0.5, None, 6), (64, 0.5, 10, 5),
                          (64, 1.0, 100, 64)])
def test_it_never_grows_above_the_windows_ceilings(max_size: int, share: float,
                                                  advertised: int | None,
                                                  ceiling: int) -> None:
    """--concurrency and --tenant-share of Concurrency-Limit-Limit cap it, as the window."""
    gradient = Gradient2(max_size=max_size, share=share)
    answer = Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=advertised)
    for _ in range(200):
        full(gradient).observe(answer, 0.05)
    assert gradient.size == gradient.ceiling == ceiling


def test_an_advertised_limit_below_the_size_cuts_it_at_once() -> None:
    """At 20, a tenant that says its limit is 10 (share 0.5): 5 at the next answer."""
    gradient = grown_to_ceiling()
    small = Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=10)
    assert full(gradient).observe(small, 0.05) == WindowChange(20, 5,
                                                               "tenant limit advertised")


def test_the_long_term_rtt_is_a_mean_then_an_exponential_average() -> None:
    """A plain mean over the first ten samples, then 2/(600+1) of each new one."""
    long_rtt = LongRtt()
    for sample in (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10):
        long_rtt.add(sample)
    assert long_rtt.value == pytest.approx(0.055)
    assert long_rtt.add(0.655) == pytest.approx(0.055 + 0.6 * 2 / 601)


def test_a_fall_in_latency_after_a_slow_spell_decays_the_long_rtt() -> None:
    """Long over twice short: the long RTT loses a tenth at once, not over 600 samples."""
    gradient = grown_to_ceiling(rtt=0.2)
    before = gradient.long_rtt.value
    full(gradient).observe(OK, 0.05)
    assert gradient.long_rtt.value == pytest.approx(
        0.9 * (before * (1 - 2 / 601) + 0.05 * 2 / 601))


async def test_a_place_frees_for_a_waiter_when_the_limit_grows() -> None:
    """A waiter at a full limit starts as soon as a clean answer raises it."""
    gradient = Gradient2(max_size=64, share=0.5)
    for _ in range(4):
        await gradient.acquire()
    waiting = asyncio.ensure_future(gradient.acquire())
    await asyncio.sleep(0)
    assert not waiting.done()
    gradient.in_flight = 4  # 4 held, 5 with the answer's own: over half the limit
    for _ in range(2):
        gradient.observe(OK, 0.05)  # 4.8, 5.6: a fifth place
    await asyncio.wait_for(waiting, 1)
    assert gradient.in_flight == 5


# --- through the Limiter, on its injected clock -------------------------------------------------


def limiter(limits: Limits, clock: FakeClock, seen: list[Event]) -> Limiter:
    return Limiter(limits, clock, random.Random(1), Events(seen.append), Stop(clock),
                   lambda reason, kind: None, lambda: 0)


async def test_the_limiter_measures_each_round_trip_on_its_clock() -> None:
    """A place taken at t, answered at t + 0.25: the gradient's sample is 0.25 s."""
    clock = FakeClock(start=0.0)
    seen: list[Event] = []
    meter = limiter(Limits(concurrency=64, rate=None, max_attempts=1,
                           concurrency_algorithm="gradient2"), clock, seen)
    assert isinstance(meter.window, Gradient2)
    ticket = await meter.wait_can_start()
    assert ticket is not None and ticket.taken_at == 0.0
    meter.started(ticket)
    await clock.sleep(0.25)
    meter.finished(ticket, OK)
    assert meter.window.short_rtt == 0.25
    assert meter.window.long_rtt.value == 0.25
    assert meter.window.in_flight == 0


async def test_the_limiter_reports_its_changes_as_window_events() -> None:
    """The same `pool.window_changed` event, with the gradient's reasons."""
    clock = FakeClock(start=0.0)
    seen: list[Event] = []
    meter = limiter(Limits(concurrency=64, rate=None, max_attempts=1,
                           concurrency_algorithm="gradient2"), clock, seen)
    tickets = [await meter.wait_can_start() for _ in range(4)]
    for ticket in tickets:
        assert ticket is not None
        meter.started(ticket)
    await clock.sleep(0.05)
    for ticket in tickets[:2]:
        assert ticket is not None
        meter.finished(ticket, OK)
    assert [e for e in seen if isinstance(e, PoolWindowChanged)] == [
        PoolWindowChanged(4, 5, "gradient", 20)]


def test_the_window_stays_the_default() -> None:
    """Nothing chosen: the AIMD window, with no per-request ticket."""
    assert Settings().concurrency_algorithm == "window"
    assert limits_for(Settings(), Target(base_url="", name="simulator")
                      ).concurrency_algorithm == "window"
    assert isinstance(limiter(Limits(concurrency=8, rate=None, max_attempts=1), FakeClock(),
                              []).window, Window)
    assert limits_for(Settings(concurrency_algorithm="gradient2"),
                      Target(base_url="", name="simulator")
                      ).concurrency_algorithm == "gradient2"


def test_an_unknown_algorithm_is_refused() -> None:
    """A typo is a usage error that names the choices."""
    with pytest.raises(ConfigError, match="window, gradient2"):
        Settings(concurrency_algorithm="vegas")


def test_the_run_command_refuses_an_unknown_algorithm(cli, make_csv) -> None:
    """`run --concurrency-algorithm` accepts gradient2 and refuses anything else (exit 2)."""
    path = make_csv([["invoiceKey"], ["INV-1"]])
    result = cli("run", str(path), "--simulate", "--concurrency-algorithm", "vegas")
    assert result.exit_code == 2
    assert "'vegas' is not one of 'window', 'gradient2'" in result.output


async def test_a_run_on_gradient2_cancels_every_row(live_sim) -> None:
    """Against a tenant limit of 10 at share 0.5: every row succeeds, never over 5 in flight."""
    live_sim.config.concurrency_limit = 10
    live_sim.config.latency = 0.01
    outcomes: dict[int, Outcome] = {}
    credentials = Credentials(live_sim.config.client_id, live_sim.config.client_secret)
    async with open_session() as session:
        client = ZuoraClient(session, live_sim.url, credentials, Settings())
        runner = Runner(client, Limits(concurrency=32, rate=None, max_attempts=3,
                                       concurrency_algorithm="gradient2"), "r",
                        rng=random.Random(1))
        work: list[CancelJob] = jobs(60)
        await runner.run(work, lambda o: outcomes.__setitem__(o.row, o))
    assert len(outcomes) == 60
    assert all(o.status is Status.SUCCEEDED for o in outcomes.values())
    assert live_sim.stats.max_in_flight <= 5
    assert not [r for r in live_sim.stats.requests if r.status == 429]
