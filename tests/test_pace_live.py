"""The pace and the window against the simulator over loopback: behaviour, not speed."""

from __future__ import annotations

import json
import random
from collections import Counter

from batch_cancel.config import Settings
from batch_cancel.model import CancelJob, Outcome
from batch_cancel.send.limits import Limits
from batch_cancel.send.pool import Runner
from batch_cancel.send.zuora import Credentials, ZuoraClient, open_session
from tests.helpers import jobs


async def run_jobs(live_sim, job_list: list[CancelJob], limits: Limits
                   ) -> tuple[dict[int, Outcome], Runner]:
    """Send the jobs through a real client and runner to the simulator; outcomes by row."""
    outcomes: dict[int, Outcome] = {}
    credentials = Credentials(live_sim.config.client_id, live_sim.config.client_secret)
    async with open_session() as session:
        client = ZuoraClient(session, live_sim.url, credentials, Settings(timeout=10.0))
        runner = Runner(client, limits, "run1", rng=random.Random(7))
        await runner.run(job_list, lambda o: outcomes.__setitem__(o.row, o))
    return outcomes, runner


def cancel_statuses(live_sim) -> Counter[int | None]:
    return Counter(r.status for r in live_sim.stats.cancels())


async def test_a_policy_of_several_windows_is_paced_below_with_no_429(live_sim) -> None:
    """Zuora's policy list with a tight minute window: the run keeps under it, no 429."""
    live_sim.config.rate_limit = 30  # 30 per 2 s: 15/s, the tightest
    live_sim.config.rate_window = 2.0
    live_sim.config.rate_extra_windows = [[1200, 60.0], [60000, 3600.0]]  # 20/s, 16.7/s
    outcomes, runner = await run_jobs(live_sim, jobs(24), Limits(
        concurrency=8, rate=None, max_attempts=3, tenant_share=1.0, default_rate=100.0))
    assert all(o.status.value == "succeeded" for o in outcomes.values())
    assert cancel_statuses(live_sim) == {200: 24}
    assert runner.limiter.pace.source == "tenant_policy" and runner.limiter.pace.rate == 14.5


async def test_a_rate_limit_without_policy_headers_is_found_from_429s(live_sim) -> None:
    """30/s with Retry-After and no RateLimit headers, asked for 200/s: few 429s, all done."""
    live_sim.config.rate_limit = 30
    live_sim.config.rate_window = 1.0
    live_sim.config.rate_retry_after = True
    live_sim.config.rate_headers = False
    outcomes, runner = await run_jobs(live_sim, jobs(150), Limits(
        concurrency=16, rate=200.0, max_attempts=8))
    assert all(o.status.value == "succeeded" for o in outcomes.values())
    statuses = cancel_statuses(live_sim)
    assert statuses[200] == 150
    assert statuses[429] <= 0.05 * sum(statuses.values()), statuses
    assert runner.limiter.pace.rate is not None and runner.limiter.pace.rate <= 40.0


async def test_after_a_rate_pause_the_pool_does_not_burst_back(live_sim) -> None:
    """The second of the run after a 429 pause never sees the asked rate again."""
    live_sim.config.rate_limit = 20
    live_sim.config.rate_window = 1.0
    live_sim.config.rate_retry_after = True
    live_sim.config.rate_headers = False
    await run_jobs(live_sim, jobs(80), Limits(concurrency=16, rate=200.0, max_attempts=8))
    starts = sorted(r.started for r in live_sim.stats.cancels())
    first_429 = min(r.finished for r in live_sim.stats.cancels() if r.status == 429)
    later = [t for t in starts if t > first_429 + 1.0]
    per_second = Counter(int(t - first_429) for t in later)
    assert later and max(per_second.values()) <= 30, per_second


async def test_the_window_finds_an_unadvertised_concurrency_limit(live_sim) -> None:
    """12 in flight allowed and no Concurrency-Limit headers, --concurrency 64: few 429s."""
    live_sim.config.concurrency_limit = 12
    live_sim.config.concurrency_headers = False
    live_sim.config.latency = 0.02
    outcomes, runner = await run_jobs(live_sim, jobs(1000), Limits(
        concurrency=64, rate=None, max_attempts=8, tenant_share=1.0))
    assert all(o.status.value == "succeeded" for o in outcomes.values())
    statuses = cancel_statuses(live_sim)
    assert statuses[429] < 0.02 * sum(statuses.values()), statuses
    assert live_sim.stats.max_in_flight >= 10
    assert 9 <= runner.limiter.window.size <= 12


def test_the_plan_and_the_events_name_the_pace(sim, cli, make_csv) -> None:
    """The plan says where the pace starts; pool.pace_changed says what the tenant set."""
    sim.config.rate_limit = 600
    sim.config.rate_window = 60.0
    path = make_csv([["invoice", "reason"], *[[f"INV{n:04d}", "2"] for n in range(5)]])
    result = cli("run", str(path), "--base-url", sim.url, "--no-progress", "--log-format",
                 "json", env=sim.env)
    assert result.exit_code == 0, result.output
    assert ("Pace: 100/s (target_default) until the tenant's RateLimit headers say otherwise"
            in result.output)
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    paced = [e for e in events if e["event"] == "pool.pace_changed"]
    assert paced[0]["old"] == 100.0 and paced[0]["new"] == 5.0
    assert paced[0]["source"] == "tenant_policy"
