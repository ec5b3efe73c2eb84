"""The worker pool: limits as the server sees them, pauses, retries, and no row lost."""

from __future__ import annotations

import asyncio
import math
import random

import pytest
import structlog

from batch_cancel.config import Settings
from batch_cancel.model import Answer, CancelJob, InvoiceState, Outcome, Status
from batch_cancel.send.clock import Clock
from batch_cancel.send.flow import INITIAL_WINDOW
from batch_cancel.send.limits import Limits
from batch_cancel.send.pool import Runner
from batch_cancel.send.retry import Backoff
from batch_cancel.send.zuora import Credentials, ZuoraClient, open_session
from tests.helpers import (
    FakeClock,
    SenderSpy,
    SpyEvent,
    jobs,
    resends_after_acceptance,
    resent_inside_own_pause,
    starts_before_a_429_deadline,
)


async def run_jobs(live_sim, job_list: list[CancelJob], limits: Limits, **kwargs: object
                   ) -> tuple[dict[int, Outcome], Runner]:
    outcomes: dict[int, Outcome] = {}

    def collect(outcome: Outcome) -> None:
        assert outcome.row not in outcomes, "a row was reported twice"
        outcomes[outcome.row] = outcome

    credentials = Credentials(live_sim.config.client_id, live_sim.config.client_secret)
    timeout = float(kwargs.pop("timeout", 10.0))  # type: ignore[arg-type]
    async with open_session() as session:
        client = kwargs.pop("client", None) or ZuoraClient(
            session, live_sim.url, credentials, Settings(timeout=timeout))
        wrap = kwargs.pop("wrap", None)
        if wrap is not None:
            client = wrap(client)  # type: ignore[operator]
        runner = Runner(client, limits, "run1", rng=random.Random(7), **kwargs)  # type: ignore[arg-type]
        await runner.run(job_list, collect)
    return outcomes, runner


async def test_in_flight_never_exceeds_concurrency_as_seen_by_the_server(live_sim) -> None:
    """The server never sees more than --concurrency requests at once."""
    live_sim.config.latency = 0.02
    outcomes, _ = await run_jobs(live_sim, jobs(40), Limits(concurrency=4, rate=None,
                                                            max_attempts=3))
    assert len(outcomes) == 40
    assert all(o.status is Status.SUCCEEDED for o in outcomes.values())
    assert 2 <= live_sim.stats.max_in_flight <= 4


#: The virtual clock's step in the start-spacing test: a power of two, so sums stay exact.
STEP = 1 / 1024


async def test_starts_are_spaced_by_the_rate_without_a_startup_burst(
        live_sim, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the event loop's clock, made virtual and given to the runner: the first start at
    once, then exactly 1/rate apart (no start-up burst; a worker woken late keeps its slot).

    Time moves in steps of 1/1024 s from a whole second, and the rate is 32/s (32 steps), so
    every sum is exact in binary: steps of 0.001 added to the machine's monotonic time (some
    10^4 s) drifted by an ulp, and a start fell a step late once the machine had been up
    long enough."""
    loop = asyncio.get_running_loop()
    now = [float(math.ceil(loop.time()))]
    monkeypatch.setattr(loop, "time", lambda: now[0])
    clock = Clock()
    clock.now = loop.time  # type: ignore[method-assign]
    spies: list[SenderSpy] = []

    def wrap(inner: ZuoraClient) -> SenderSpy:
        spies.append(SenderSpy(inner, clock))
        return spies[0]

    async def tick() -> None:
        """Move time a step at a time, each only after the loop has run everything due."""
        while True:
            for _ in range(8):
                await asyncio.sleep(0)
            now[0] += STEP

    ticker = asyncio.create_task(tick())
    try:
        # 4 workers, the flow window's opening size: only the pacer holds a start back
        await run_jobs(live_sim, jobs(12), Limits(concurrency=INITIAL_WINDOW, rate=32.0,
                                                  max_attempts=1), wrap=wrap, clock=clock)
    finally:
        ticker.cancel()
    starts = [e.at for e in spies[0].events if e.kind == "start"]
    offsets = [(t - starts[0]) / STEP for t in starts]  # whole steps, exactly
    assert offsets == list(range(0, 32 * 12, 32)), offsets


async def test_a_429_pauses_the_pool_for_the_time_named_and_the_row_waits_it(live_sim) -> None:
    """A rate 429 with Retry-After pauses the pool for exactly that time (logged), the row it
    met is not resent sooner, and then every row finishes."""
    live_sim.config.rate_limit = 6
    live_sim.config.rate_window = 1.0
    live_sim.config.rate_retry_after = True
    live_sim.config.rate_headers = False  # advertised, the pace would keep under it: no 429
    with structlog.testing.capture_logs() as logs:
        outcomes, _ = await run_jobs(live_sim, jobs(14), Limits(concurrency=3, rate=None,
                                                                max_attempts=6))
    assert all(o.status is Status.SUCCEEDED for o in outcomes.values())
    assert any(r.status == 429 for r in live_sim.stats.cancels())
    # the simulator names the whole seconds left in its 1 s window: always 1
    pauses = [e for e in logs if e["event"] == "pool.paused"]
    assert pauses and {(e["reason"], e["seconds"]) for e in pauses} == {("rate_limited", 1.0)}
    early = resent_inside_own_pause(live_sim.stats, 1.0)
    assert not early, early


async def test_retries_follow_capped_full_jitter_backoff_up_to_max_attempts(live_sim) -> None:
    """A row that keeps failing is tried --max-attempts times with jittered, growing waits."""
    live_sim.config.retryable_false = 1.0
    clock = FakeClock()
    backoff = Backoff(base=1.0, cap=3.0)
    outcomes, _ = await run_jobs(live_sim, jobs(1), Limits(concurrency=1, rate=None,
                                                           max_attempts=5, backoff=backoff),
                                 clock=clock)
    outcome = outcomes[2]
    assert outcome.status is Status.FAILED and outcome.attempts == 5
    assert "gave up after 5 attempts" in outcome.error_message
    assert live_sim.stats.cancel_requests == 5
    # the runner's rng is Random(7) and nothing else draws from it here: the exact schedule
    draws = random.Random(7)
    expected = [draws.uniform(0.0, min(3.0, 2.0 ** (attempt - 1))) for attempt in range(1, 5)]
    assert clock.sleeps == pytest.approx(expected, abs=1e-12)


def test_backoff_formula_is_full_jitter_capped() -> None:
    """uniform(0, min(cap, base * 2**(n-1))): never above the cap, spread over the range."""
    rng = random.Random(1)
    backoff = Backoff(base=1.0, cap=60.0)
    waits = [backoff.delay(10, rng) for _ in range(500)]
    assert max(waits) <= 60.0 and min(waits) < 5.0 and max(waits) > 50.0


async def test_business_refusal_is_final_at_once(live_sim) -> None:
    """An unknown invoice is failed after one attempt, not retried."""
    outcomes, _ = await run_jobs(live_sim, jobs(1, prefix="INV-NOTFOUND-"),
                                 Limits(concurrency=1, rate=None, max_attempts=5))
    assert outcomes[2].status is Status.FAILED and outcomes[2].attempts == 1
    assert outcomes[2].http_status == 404 and outcomes[2].error_code == "59210040"


async def test_in_doubt_cancel_is_checked_before_resending(live_sim) -> None:
    """A cancel applied but answered by a dropped connection is verified, never sent twice."""
    live_sim.config.drop_after_apply = 1.0
    clock = FakeClock()
    outcomes, _ = await run_jobs(live_sim, jobs(3), Limits(concurrency=3, rate=None,
                                                           max_attempts=5), clock=clock)
    assert all(o.status is Status.SUCCEEDED for o in outcomes.values())
    assert all("verified after retry" in o.error_message for o in outcomes.values())
    assert live_sim.stats.accepted_cancels == {f"INV{n:05d}": 1 for n in range(2, 5)}
    assert live_sim.stats.cancel_requests == 3
    assert live_sim.stats.invoice_reads == 3


async def test_5xx_not_applied_is_checked_then_resent(live_sim) -> None:
    """After a 503 the invoice is still Success, so the cancel is sent again and succeeds."""
    live_sim.config.fail_503 = 0.5
    live_sim.config.seed = 3
    clock = FakeClock()
    outcomes, _ = await run_jobs(live_sim, jobs(20), Limits(concurrency=4, rate=None,
                                                            max_attempts=8), clock=clock)
    assert all(o.status is Status.SUCCEEDED for o in outcomes.values())
    assert not resends_after_acceptance(live_sim.stats)
    assert sorted(live_sim.stats.accepted_cancels) == [j.invoice_key for j in jobs(20)]
    assert live_sim.stats.cancel_requests > 20
    assert live_sim.stats.invoice_reads == live_sim.stats.cancel_requests - 20


async def test_token_expiry_mid_run_is_invisible_in_the_outcomes(live_sim) -> None:
    """Tokens revoked during the run are refreshed; every row still succeeds once.

    The tenant revokes every token after each 12th accepted cancel, a point in the run rather
    than in real time: revoked every 30 ms of wall clock, a loaded machine let a fresh token
    die before any request with it got through, which is the client's rule for "refused even
    with a fresh token" (stop for authentication), so the test failed under load."""
    live_sim.config.latency = 0.005
    accepted: list[str] = []

    def revoke_every_12th(key: str) -> None:
        accepted.append(key)
        if len(accepted) % 12 == 0 and len(accepted) < 60:
            live_sim.simulator.expire_tokens()

    live_sim.simulator.on_accept = revoke_every_12th
    outcomes, _ = await run_jobs(live_sim, jobs(60), Limits(concurrency=6, rate=None,
                                                            max_attempts=2))
    assert all(o.status is Status.SUCCEEDED for o in outcomes.values())
    assert live_sim.stats.token_requests == 5  # the first token and one after each revocation
    assert any(r.status == 401 for r in live_sim.stats.cancels()), "no request met a dead token"
    assert not resends_after_acceptance(live_sim.stats)
    assert len(live_sim.stats.accepted_cancels) == 60


class ExplodingClient:
    """A real client that raises a bug-like error for one invoice."""

    def __init__(self, inner: ZuoraClient, bad_key: str) -> None:
        self.inner, self.bad_key = inner, bad_key

    async def cancel(self, job: CancelJob, track_id: str) -> Answer:
        if job.invoice_key == self.bad_key:
            raise ValueError("boom")
        return await self.inner.cancel(job, track_id)

    async def ready(self) -> None:
        return None

    async def invoice_state(self, key: str, track_id: str) -> InvoiceState:
        return await self.inner.invoice_state(key, track_id)


async def test_an_unexpected_error_fails_that_row_only(live_sim) -> None:
    """One row's exception becomes its `failed` outcome with the error text; others go on."""
    credentials = Credentials(live_sim.config.client_id, live_sim.config.client_secret)
    async with open_session() as session:
        inner = ZuoraClient(session, live_sim.url, credentials, Settings())
        client = ExplodingClient(inner, "INV00004")
        outcomes: dict[int, Outcome] = {}
        runner = Runner(client, Limits(concurrency=2, rate=None, max_attempts=2), "r")
        await runner.run(jobs(6), lambda o: outcomes.__setitem__(o.row, o))
    assert outcomes[4].status is Status.FAILED
    assert "ValueError: boom" in outcomes[4].error_message
    assert [outcomes[n].status for n in (2, 3, 5, 6, 7)] == [Status.SUCCEEDED] * 5


async def test_authentication_failure_stops_the_pool_and_leaves_rows_not_attempted(
        live_sim) -> None:
    """A 401 that a fresh token does not cure stops everything; nothing is lost."""
    live_sim.config.token_ttl = 0.0
    outcomes, runner = await run_jobs(live_sim, jobs(30), Limits(concurrency=3, rate=None,
                                                                 max_attempts=3))
    assert runner.auth_error is not None
    assert len(outcomes) == 30
    assert {o.status for o in outcomes.values()} == {Status.NOT_ATTEMPTED}
    assert live_sim.stats.accepted_cancels == {}


async def test_stop_leaves_unstarted_rows_not_attempted(live_sim) -> None:
    """After stop(), in-flight rows finish and the rest are reported `not_attempted`."""
    live_sim.config.latency = 0.01
    outcomes: dict[int, Outcome] = {}
    credentials = Credentials(live_sim.config.client_id, live_sim.config.client_secret)
    async with open_session() as session:
        client = ZuoraClient(session, live_sim.url, credentials, Settings())
        runner = Runner(client, Limits(concurrency=2, rate=None, max_attempts=2), "r")

        def collect(outcome: Outcome) -> None:
            outcomes[outcome.row] = outcome
            if len(outcomes) == 5:
                runner.stop("test")

        await runner.run(jobs(50), collect)
    assert len(outcomes) == 50
    succeeded = [o for o in outcomes.values() if o.status is Status.SUCCEEDED]
    assert 5 <= len(succeeded) <= 8
    assert len(live_sim.stats.accepted_cancels) == len(succeeded)
    assert all(o.status in (Status.SUCCEEDED, Status.NOT_ATTEMPTED) for o in outcomes.values())


@pytest.mark.parametrize("prefix", ["bc", "nightly-fixups"])
def test_track_ids_are_unique_short_and_legal(prefix: str) -> None:
    """Track ids: prefix, run id, row; at most 64 US-ASCII characters, none of : ; \" '."""
    runner = Runner(ExplodingClient(None, ""), Limits(1, None, 1), "a1b2c3d4e5f6",  # type: ignore[arg-type]
                    track_id_prefix=prefix)
    ids = {runner.track_id(row) for row in (2, 3, 1_000_001)}
    assert len(ids) == 3
    for track_id in ids:
        assert len(track_id) <= 64 and track_id.isascii()
        assert not set(":;\"'") & set(track_id)
        assert track_id.startswith(f"{prefix}-a1b2c3d4e5f6-")


STORM_HEADERS = {"retry_after": 1, "reset_only": None}


async def run_storm(live_sim, headers: str) -> tuple[dict[int, Outcome], list[SpyEvent],
                                                     FakeClock]:
    """150 rows, 100 workers, 30% of calls met by a rate 429 naming 1 s, on a virtual clock."""
    live_sim.config.seed = 1
    live_sim.config.storm_429 = 0.3
    live_sim.config.storm_retry_after = STORM_HEADERS[headers]
    live_sim.config.storm_reset = 1
    clock = FakeClock(overlap=True)
    spies: list[SenderSpy] = []

    def wrap(inner: ZuoraClient) -> SenderSpy:
        spies.append(SenderSpy(inner, clock))
        return spies[0]

    outcomes, _ = await run_jobs(live_sim, jobs(150), Limits(concurrency=100, rate=None,
                                                             max_attempts=8),
                                 clock=clock, wrap=wrap)
    assert [o.status for o in outcomes.values()] == [Status.SUCCEEDED] * 150
    rate_429s = [e for e in spies[0].events if e.answer and e.answer.http_status == 429]
    assert len(rate_429s) > 10
    assert {e.answer.retry_after for e in rate_429s if e.answer} == {1.0}
    return outcomes, spies[0].events, clock


@pytest.mark.parametrize("headers", list(STORM_HEADERS))
async def test_a_row_met_by_a_429_waits_the_named_time_on_the_runner_clock(
        live_sim, headers: str) -> None:
    """In a 429 storm (Retry-After 1, or only RateLimit-Reset 1 at Remaining 0) a row's next
    call starts no earlier than 1 s after its 429 on the runner's clock, and the pool pauses
    for exactly the 1 s named each time."""
    with structlog.testing.capture_logs() as logs:
        _, events, _ = await run_storm(live_sim, headers)
    early = starts_before_a_429_deadline(events, same_key_only=True)
    assert not early, f"{len(early)} rows resent inside their own 429 pause: {early[:5]}"
    pauses = [e for e in logs if e["event"] == "pool.paused"]
    assert pauses and {(e["reason"], e["seconds"], e["limit"]) for e in pauses} == {
        ("rate_limited", 1.0, "rate")}


@pytest.mark.parametrize("headers", list(STORM_HEADERS))
async def test_no_call_starts_before_any_429_deadline_on_the_runner_clock(
        live_sim, headers: str) -> None:
    """In a 429 storm no call of any row starts before the deadline an earlier 429 named."""
    _, events, _ = await run_storm(live_sim, headers)
    early = starts_before_a_429_deadline(events)
    assert not early, f"{len(early)} calls started during a 429 pause: {early[:5]}"
