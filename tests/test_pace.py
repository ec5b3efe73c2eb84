"""The pace: learned from RateLimit headers, lowered by rate 429s, on an injected clock."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from batch_cancel.model import Answer, Verdict
from batch_cancel.send.answers import classify, parse_policy, rate_headers
from batch_cancel.send.pace import DECREASE, Pace, Source, policy_rate
from tests.helpers import FakeClock, ok, policy

ZUORA_POLICY = "2250000, 50000;w=60, 2250000;w=3600, 27000000;w=86400"


RATE_429 = Answer(Verdict.RETRY, http_status=429, rate_limited=True, retry_after=1.0)


async def starts(pace: Pace, clock: FakeClock, n: int) -> list[float]:
    """Clock times (relative to 1000) at which n starts in a row were let go."""
    out = []
    for _ in range(n):
        await pace.wait_can_start()
        out.append(round(clock.t - 1000.0, 6))
    return out


def test_zuora_policy_list_parses_every_window() -> None:
    """`RateLimit-Limit` as Zuora sends it: the closest window's quota, then each N;w=S."""
    first, windows = parse_policy(ZUORA_POLICY)
    assert first == 2250000
    assert windows == ((50000, 60.0), (2250000, 3600.0), (27000000, 86400.0))
    assert policy_rate(windows) == pytest.approx(27000000 / 86400)  # the day is the tightest


def test_policy_items_that_do_not_parse_are_skipped() -> None:
    """A half-understood policy still yields the windows that parse."""
    assert parse_policy("100, 100;w=1, junk;w=5, 7;w=x, 50;q=2;w=10") == (
        100, ((100, 1.0), (50, 10.0)))
    assert parse_policy("") == (None, ())


def test_answers_carry_remaining_reset_and_the_closest_window() -> None:
    """Remaining and Reset belong to the window whose quota comes first in the policy."""
    headers = CIMultiDict({"RateLimit-Limit": ZUORA_POLICY, "RateLimit-Remaining": "1200",
                           "RateLimit-Reset": "1200"})
    assert rate_headers(headers) == (1200, 3600, 1200.0, parse_policy(ZUORA_POLICY)[1])
    answer = classify(200, headers, b'{"success": true}')
    assert (answer.quota_remaining, answer.quota_window, answer.quota_reset) == (1200, 3600,
                                                                                 1200.0)
    assert answer.rate_windows == parse_policy(ZUORA_POLICY)[1]


async def test_starts_follow_the_pace_exactly_with_no_startup_burst() -> None:
    """At 10/s the starts go at 0, 0.1, 0.2 ... s: the second one included."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=10.0, default=None)
    assert await starts(pace, clock, 5) == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert (pace.rate, pace.source) == (10.0, Source.FLAG)


async def test_a_late_wake_up_does_not_push_the_schedule_back() -> None:
    """A start let go late (the loop was busy) keeps its slot: the next one is not delayed."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=10.0, default=None)
    await pace.wait_can_start()
    clock.t += 0.13  # the caller came back 30 ms after its slot
    assert await starts(pace, clock, 2) == [0.13, 0.2]
    assert clock.sleeps == [pytest.approx(0.07)]


async def test_the_default_holds_until_an_answer_names_the_policy() -> None:
    """Start at the per-target default; the first answer with a policy sets share x rate."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=None, default=100.0, share=0.5)
    assert (pace.rate, pace.source) == (100.0, Source.DEFAULT)
    change = pace.finished(policy(18000, 60))  # 300/s
    assert change is not None and (change.old, change.new, change.source) == (
        100.0, 150.0, Source.POLICY)
    assert pace.finished(policy(18000, 60)) is None  # nothing new: no event


async def test_two_bounds_a_hair_apart_do_not_flap_the_event() -> None:
    """At share 1 the policy and the quota spread take turns by 0.01/s: one event, not many."""
    pace = Pace(FakeClock(), ceiling=None, default=100.0, share=1.0)
    first = pace.finished(policy(18000, 60, remaining=17990, reset=60))  # 299.8/s, spread
    assert first is not None and first.source == Source.QUOTA
    assert pace.finished(policy(18000, 60, remaining=17000, reset=50)) is None  # 300, policy
    assert pace.source == Source.POLICY


async def test_the_rate_flag_is_a_ceiling_not_a_target() -> None:
    """--rate below the tenant's share wins; above it, the tenant's share does."""
    clock = FakeClock()
    low = Pace(clock, ceiling=100.0, default=None, share=1.0)
    low.finished(policy(18000, 60))
    assert (low.rate, low.source) == (100.0, Source.FLAG)
    high = Pace(clock, ceiling=1000.0, default=None, share=1.0)
    high.finished(policy(18000, 60))
    assert (high.rate, high.source) == (pytest.approx(17999 / 60), Source.POLICY)


async def test_the_tightest_window_sets_the_pace() -> None:
    """Of 50,000/min and 2.25M/h the hour is the tightest: 625/s, x share. The day is the
    runner's quota watch (warn, stop at 0), not paced: it would crawl for hours."""
    pace = Pace(FakeClock(), ceiling=None, default=400.0, share=0.5)
    pace.finished(ok(rate_windows=parse_policy(ZUORA_POLICY)[1]))
    assert pace.rate == pytest.approx(312.5)
    day = Pace(FakeClock(), ceiling=None, default=None, share=0.5)
    day.finished(policy(12, 86400, remaining=3, reset=3600))
    assert (day.rate, day.source) == (None, Source.UNPACED)


async def test_the_remaining_quota_is_spread_over_the_time_left() -> None:
    """30 left of a minute window that resets in 60 s: 0.5/s, whatever the policy allows."""
    pace = Pace(FakeClock(), ceiling=None, default=None, share=1.0)
    change = pace.finished(policy(600, 60, remaining=30, reset=60))
    assert change is not None and (change.new, change.source) == (0.5, Source.QUOTA)
    pace.finished(policy(600, 60, remaining=590, reset=59))
    assert (pace.rate, pace.source) == (pytest.approx(599 / 60), Source.POLICY)


async def test_requests_on_their_way_count_against_what_is_left() -> None:
    """Remaining may not count our requests still in flight: they are taken off first."""
    pace = Pace(FakeClock(), ceiling=None, default=None, share=1.0)
    for _ in range(10):
        pace.started()
    pace.finished(policy(600, 60, remaining=40, reset=60))  # 9 still out: 31 left
    assert pace.rate == pytest.approx(31 / 60)


async def test_a_used_up_window_holds_every_start_until_its_reset() -> None:
    """Nothing left: nobody starts before RateLimit-Reset, and no 429 is needed to learn it."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=None, default=None, share=1.0)
    change = pace.finished(policy(600, 60, remaining=0, reset=12))
    assert change is not None and change.source == Source.RESET
    await pace.wait_can_start()
    assert clock.sleeps[0] == 12.0 and clock.t == 1012.0


async def test_short_windows_are_paced_not_spread() -> None:
    """A 1-second window's Reset is rounded to whole seconds: its policy rate paces it, one
    start a window below its quota (the schedule may start S x pace + 1 in S seconds)."""
    pace = Pace(FakeClock(), ceiling=None, default=None, share=1.0)
    pace.finished(policy(200, 1, remaining=3, reset=1))
    assert (pace.rate, pace.source) == (199.0, Source.POLICY)


async def test_a_rate_429_lowers_the_pace_to_what_the_tenant_accepted() -> None:
    """Without a policy: at 200/s, a tenant that accepted 30 in the last second -> 30/s."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=200.0, default=None)
    for _ in range(30):
        clock.t += 0.005
        pace.finished(ok())
    change = pace.finished(RATE_429)
    assert change is not None and (change.new, change.source) == (30.0, Source.LEARNED)
    assert pace.finished(RATE_429) is None and pace.rate == 30.0  # same burst: once a second
    clock.t += 1.5
    assert pace.finished(RATE_429) is None  # still within its Retry-After + a second
    clock.t += 0.5
    pace.finished(RATE_429)  # a later one: DECREASE of the pace
    assert pace.rate == pytest.approx(30.0 * DECREASE)


async def test_after_a_429_the_pace_probes_up_slowly() -> None:
    """After the pause, each second of clean answers adds max(0.5, 2 %): no burst back."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=200.0, default=None)
    for _ in range(25):
        clock.t += 0.01
        pace.finished(ok())
    pace.finished(RATE_429)
    assert pace.rate == 25.0
    seen = []
    for _ in range(6):  # six seconds of clean answers, ten a second
        for _ in range(10):
            clock.t += 0.1
            pace.finished(ok())
        seen.append(round(pace.rate or 0.0, 3))
    assert seen == [25.0, 25.5, 26.01, 26.53, 27.061, 27.602]


async def test_probing_ends_at_the_other_bounds() -> None:
    """Once the learned pace climbs back to the ceiling, the ceiling rules again."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=2.0, default=None)
    clock.t += 0.5
    pace.finished(ok())
    pace.finished(RATE_429)
    assert pace.rate == 1.0 and pace.source == Source.LEARNED
    for _ in range(5):
        clock.t += 1.0
        pace.finished(ok())
    assert (pace.rate, pace.source, pace.learned) == (2.0, Source.FLAG, None)


async def test_with_a_policy_a_rate_429_only_pauses() -> None:
    """The tenant named its windows: a 429 (a start a hair early in a fixed window) is the
    pause's business; the pace stays at the tenant's share instead of dropping by a fifth."""
    pace = Pace(FakeClock(), ceiling=200.0, default=None, share=1.0)
    pace.finished(policy(200, 1))
    pace.finished(RATE_429)
    assert (pace.rate, pace.source, pace.learned) == (199.0, Source.POLICY, None)


async def test_a_429_that_asks_for_no_wait_leaves_the_pace_alone() -> None:
    """Retry-After: 0 says no window is used up (a transient refusal): the pace holds."""
    pace = Pace(FakeClock(), ceiling=50.0, default=None)
    pace.finished(Answer(Verdict.RETRY, http_status=429, rate_limited=True, retry_after=0.0))
    assert pace.rate == 50.0 and pace.learned is None


async def test_a_concurrency_429_leaves_the_pace_alone() -> None:
    """Too many in flight says nothing of the start rate: the window handles it."""
    pace = Pace(FakeClock(), ceiling=50.0, default=None)
    pace.finished(Answer(Verdict.RETRY, http_status=429, rate_limited=True,
                         concurrency_limited=True))
    assert pace.rate == 50.0 and pace.learned is None


async def test_waiters_leave_at_once_when_the_run_stops() -> None:
    """A stopped run does not keep its workers waiting for slots."""
    clock = FakeClock()
    stopped = False
    pace = Pace(clock, ceiling=1.0, default=None, stopped=lambda: stopped)
    await pace.wait_can_start()
    stopped = True
    await pace.wait_can_start()
    assert clock.sleeps == []


async def test_an_unpaced_run_never_waits() -> None:
    """No --rate, no default, no policy: the pacer is out of the way."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=None, default=None)
    assert await starts(pace, clock, 3) == [0.0, 0.0, 0.0]
    assert pace.source == Source.UNPACED
