"""The pace: learned from RateLimit headers, lowered by rate 429s, on an injected clock."""

from __future__ import annotations

import dataclasses

import pytest
from multidict import CIMultiDict

from batch_cancel.model import Answer, Verdict
from batch_cancel.send.answers import classify, parse_policy, rate_headers
from batch_cancel.send.pace import DECREASE, Pace, PaceChange, Source, policy_rate
from tests.helpers import FakeClock

ZUORA_POLICY = "2250000, 50000;w=60, 2250000;w=3600, 27000000;w=86400"


def ok(**fields: object) -> Answer:
    return Answer(Verdict.SUCCEEDED, http_status=200, **fields)  # type: ignore[arg-type]


def policy(quota: int, seconds: float, remaining: int | None = None,
           reset: float | None = None) -> Answer:
    """A clean answer advertising one window, as the simulator sends it."""
    return ok(rate_windows=((quota, seconds),), quota_remaining=remaining,
              quota_window=int(seconds) if remaining is not None else None, quota_reset=reset)


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
    assert (high.rate, high.source) == (300.0, Source.POLICY)


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
    assert (pace.rate, pace.source) == (10.0, Source.POLICY)


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
    """A 1-second window's Reset is rounded to whole seconds: its policy rate paces it."""
    pace = Pace(FakeClock(), ceiling=None, default=None, share=1.0)
    pace.finished(policy(200, 1, remaining=3, reset=1))
    assert (pace.rate, pace.source) == (200.0, Source.POLICY)


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
    assert (pace.rate, pace.source, pace.learned) == (200.0, Source.FLAG, None)


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


# --- the edges of each rule, asserted exactly -----------------------------------------------


NO_WAIT_NAMED = Answer(Verdict.RETRY, http_status=429, rate_limited=True)


async def test_an_unpaced_run_refused_with_nothing_accepted_drops_to_the_floor() -> None:
    """Unpaced, no clean answer in the last second: the guess is MIN_RATE / DECREASE, so the
    learned pace is exactly the floor (0.5/s), not above it."""
    pace = Pace(FakeClock(), ceiling=None, default=None)
    pace.finished(RATE_429)
    assert (pace.rate, pace.source, pace.learned) == (0.5, Source.LEARNED, 0.5)


async def test_answers_older_than_a_second_are_not_counted_as_accepted() -> None:
    """30 accepted at 0-0.3 s, then a 429 at 5 s: nothing was accepted in the last second,
    so the pace drops by DECREASE (200 -> 160), not to 30."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=200.0, default=None)
    for _ in range(30):
        clock.t += 0.01
        pace.finished(ok())
    clock.t = 1005.0
    pace.finished(RATE_429)
    assert pace.rate == pytest.approx(160.0) and pace.source == Source.LEARNED


async def test_a_learned_pace_equal_to_a_bound_leaves_the_bound_in_charge() -> None:
    """--rate 0.5 and a 429: DECREASE of it is under the floor, so the learned pace is 0.5,
    the same as --rate: the flag still sets the pace, and no event is due."""
    pace = Pace(FakeClock(), ceiling=0.5, default=None)
    assert pace.finished(RATE_429) is None
    assert (pace.rate, pace.source, pace.learned) == (0.5, Source.FLAG, 0.5)


async def test_a_negative_retry_after_is_no_wait_and_leaves_the_pace_alone() -> None:
    """The client clamps Retry-After at 0; were a negative one to come through, it would
    still mean no window is used up, like Retry-After: 0."""
    pace = Pace(FakeClock(), ceiling=50.0, default=None)
    assert pace.finished(Answer(Verdict.RETRY, http_status=429, rate_limited=True,
                                retry_after=-1.0)) is None
    assert (pace.rate, pace.learned) == (50.0, None)


async def test_probing_past_a_bound_hands_the_pace_back_to_it() -> None:
    """--rate 2.2: learned 1.0 after a 429, then 1.5, 2.0, 2.5 a second apart; 2.5 passes
    the flag, so the learned pace is dropped (not kept above it)."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=2.2, default=None)
    clock.t += 0.5
    pace.finished(ok())
    pace.finished(RATE_429)
    assert pace.learned == 1.0
    learned = []
    for _ in range(4):  # the first second is the 429's Retry-After: no probe yet
        clock.t += 1.0
        pace.finished(ok())
        learned.append(pace.learned)
    assert learned == [1.0, 1.5, 2.0, None]
    assert (pace.rate, pace.source) == (2.2, Source.FLAG)


async def test_a_429_naming_no_wait_starts_its_cooldown_at_once() -> None:
    """With no Retry-After the cooldown runs from the 429 itself: another 429 exactly a
    second later lowers the pace again (20 -> 16 -> 12.8)."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=20.0, default=None)
    pace.finished(NO_WAIT_NAMED)
    assert pace.rate == pytest.approx(16.0)
    clock.t += 0.999
    pace.finished(NO_WAIT_NAMED)
    assert pace.rate == pytest.approx(16.0)
    clock.t = 1001.0
    pace.finished(NO_WAIT_NAMED)
    assert pace.rate == pytest.approx(12.8)


async def test_a_ten_second_window_is_spread() -> None:
    """SPREAD_MIN_WINDOW is 10 s: a window of exactly 10 s spreads what is left (4 over 2 s);
    one of 9 s does not."""
    pace = Pace(FakeClock(), ceiling=None, default=None, share=1.0)
    pace.finished(policy(100, 10, remaining=4, reset=2))
    assert (pace.rate, pace.source) == (2.0, Source.QUOTA)
    short = Pace(FakeClock(), ceiling=None, default=None, share=1.0)
    short.finished(policy(90, 9, remaining=4, reset=2))
    assert (short.rate, short.source) == (10.0, Source.POLICY)


@pytest.mark.parametrize(("rate", "early"), [(1000.0, False), (1001.0, True)])
async def test_only_above_a_thousand_a_second_may_a_start_go_a_hair_early(
        rate: float, early: bool) -> None:
    """Above FINE_RATE (1,000/s) a start due within TOLERANCE goes now; at 1,000/s it waits."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=rate, default=None)
    assert pace.try_start()
    clock.t += 0.0005
    assert pace.try_start() is early


@pytest.mark.parametrize("reset", [0.0, 0.5, 1.0])
async def test_what_is_left_is_spread_over_at_least_a_second(reset: float) -> None:
    """RateLimit-Reset counts whole seconds: 4 left with 0 or 1 s to go is 4/s, not more."""
    pace = Pace(FakeClock(), ceiling=None, default=None, share=1.0)
    pace.finished(policy(6000, 60, remaining=4, reset=reset))
    assert (pace.rate, pace.source) == (4.0, Source.QUOTA)


async def test_an_unpaced_start_waits_for_the_reset_of_a_used_up_window() -> None:
    """No rate at all, but a minute window with nothing left and 5 s to its reset: no start
    goes before the reset, even on the unpaced fast path."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=None, default=None)
    pace.finished(ok(quota_remaining=0, quota_window=60, quota_reset=5.0))
    assert (pace.rate, pace.source) == (None, Source.RESET)
    assert pace.try_start() is False
    await pace.wait_can_start()
    assert clock.sleeps == [5.0]
    assert pace.try_start() is True


async def test_a_move_of_under_a_tenth_within_one_source_is_no_event() -> None:
    """The policy moving 100 -> 105/s is no event (under EVENT_STEP); 100 -> 111/s is."""
    pace = Pace(FakeClock(), ceiling=None, default=None, share=1.0)
    assert pace.finished(policy(100, 1)) is not None
    assert pace.finished(policy(105, 1)) is None
    assert pace.finished(policy(95, 1)) is None
    change = pace.finished(policy(111, 1))
    assert change is not None and (change.old, change.new) == (100.0, 111.0)


async def test_a_bound_that_drops_below_the_learned_pace_rules() -> None:
    """Learned 1/s after a 429; then the tenant names a policy of 0.5/s: 0.5/s, the policy."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=2.0, default=None, share=1.0)
    clock.t += 0.5
    pace.finished(ok())
    pace.finished(RATE_429)
    assert pace.learned == 1.0
    pace.finished(policy(1, 2))
    assert (pace.rate, pace.source) == (0.5, Source.POLICY)


async def test_a_paced_start_at_the_reset_takes_its_slot() -> None:
    """10/s behind a used-up window resetting in 5 s: the first start goes at the reset,
    and the next ones a tenth of a second apart (no burst at the reset)."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=10.0, default=None)
    pace.finished(ok(quota_remaining=0, quota_window=60, quota_reset=5.0))
    assert await starts(pace, clock, 3) == [5.0, 5.1, 5.2]


async def test_accepted_means_within_the_last_second_not_this_whole_second() -> None:
    """30 accepted at 0.51-0.80 s, a 429 at 1.2 s: all 30 are within the last second."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=200.0, default=None)
    clock.t = 1000.5
    for _ in range(30):
        clock.t += 0.01
        pace.finished(ok())
    clock.t = 1001.2
    pace.finished(RATE_429)
    assert pace.rate == 30.0


async def test_windows_of_a_day_or_longer_do_not_pace() -> None:
    """A 10 s window of 100 paces at 10/s; a day's or two days' quota is the runner's."""
    pace = Pace(FakeClock(), ceiling=None, default=None, share=1.0)
    pace.finished(ok(rate_windows=((100, 10.0), (86400, 86400.0), (1000, 172800.0))))
    assert (pace.rate, pace.source) == (10.0, Source.POLICY)
    pace.finished(ok(rate_windows=((86399, 86399.0),)))  # a second short of a day: paces
    assert (pace.rate, pace.source) == (1.0, Source.POLICY)


async def test_without_a_share_the_whole_policy_is_used() -> None:
    pace = Pace(FakeClock(), ceiling=None, default=None)
    pace.finished(policy(100, 1))
    assert (pace.rate, pace.source) == (100.0, Source.POLICY)


async def test_under_one_a_second_a_tenth_is_a_tenth_of_the_pace_itself() -> None:
    """0.5/s -> 0.56/s moves by 12 %: an event, though the move is under 0.1 start/s."""
    pace = Pace(FakeClock(), ceiling=None, default=None, share=1.0)
    pace.finished(policy(1, 2))
    change = pace.finished(policy(56, 100))
    assert change is not None and (change.old, change.new) == (0.5, 0.56)


async def test_a_quota_window_of_a_day_or_more_or_without_a_reset_is_not_spread() -> None:
    pace = Pace(FakeClock(), ceiling=None, default=None, share=1.0)
    pace.finished(ok(quota_remaining=4, quota_window=172800, quota_reset=2.0))
    pace.finished(ok(quota_remaining=4, quota_window=60, quota_reset=None))
    pace.finished(ok(quota_remaining=0, quota_window=60, quota_reset=None))
    assert (pace.rate, pace.source) == (None, Source.UNPACED)
    assert pace.try_start()


async def test_probing_exactly_up_to_a_bound_hands_the_pace_back_at_once() -> None:
    """--rate 2: learned 1.0, then 1.5, then 2.0, the flag itself: dropped there."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=2.0, default=None)
    clock.t += 0.5
    pace.finished(ok())
    pace.finished(RATE_429)
    learned = []
    for _ in range(4):
        clock.t += 1.0
        pace.finished(ok())
        learned.append(pace.learned)
    assert learned == [1.0, 1.5, None, None]


async def test_only_answers_of_the_last_second_count_as_accepted_at_a_429() -> None:
    """Accepted at 0.0 and 0.9 s, a 429 at 1.5 s: one was within the last second."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=200.0, default=None)
    pace.finished(ok())
    clock.t = 1000.9
    pace.finished(ok())
    clock.t = 1001.5
    pace.finished(RATE_429)
    assert pace.rate == 1.0


async def test_a_429_that_lowers_nothing_is_not_counted_as_accepted() -> None:
    """Five concurrency 429s, then a rate 429: nothing was accepted, so 200 -> 160/s."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=200.0, default=None)
    for _ in range(5):
        clock.t += 0.1
        pace.finished(Answer(Verdict.RETRY, http_status=429, rate_limited=True,
                             concurrency_limited=True))
    pace.finished(RATE_429)
    assert pace.rate == pytest.approx(160.0)
    change = PaceChange(1.0, 2.0, Source.FLAG)
    with pytest.raises(dataclasses.FrozenInstanceError):
        change.new = 3.0  # type: ignore[misc]


async def test_below_a_thousand_a_second_a_start_is_never_early() -> None:
    """10/s: half a millisecond before its slot a start still waits."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=10.0, default=None)
    assert pace.try_start()
    clock.t += 0.0995
    assert not pace.try_start()


async def test_a_start_a_whole_interval_late_takes_no_credit() -> None:
    """4/s: slot 0, the next due at 0.25 s but asked for at 0.5 s (a whole interval late):
    it starts, and the one after waits for 0.75 s; no catch-up burst."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=4.0, default=None)
    assert pace.try_start()
    clock.t = 1000.5
    assert pace.try_start()
    assert not pace.try_start()


async def test_a_5xx_counts_as_an_answer_that_was_not_refused() -> None:
    """Five 503s, then a rate 429: the tenant took five in the last second (not a 429)."""
    clock = FakeClock()
    pace = Pace(clock, ceiling=200.0, default=None)
    for _ in range(5):
        clock.t += 0.1
        pace.finished(Answer(Verdict.RETRY, http_status=503))
    pace.finished(RATE_429)
    assert pace.rate == 5.0


@pytest.mark.parametrize(("remaining", "in_flight", "rate", "source"), [
    (1, 3, 10.0, Source.RESET),   # more of ours on their way than is left: hold
    (1, 0, 0.2, Source.QUOTA),    # one left over 5 s: spread, no hold
])
async def test_what_is_left_after_ours_on_their_way_holds_or_spreads(
        remaining: int, in_flight: int, rate: float, source: str) -> None:
    pace = Pace(FakeClock(), ceiling=10.0, default=None)
    for _ in range(in_flight):
        pace.started()
    pace.finished(ok(quota_remaining=remaining, quota_window=60, quota_reset=5.0))
    assert (pace.rate, pace.source) == (pytest.approx(rate), source)


async def test_an_answer_exactly_a_second_old_is_still_counted() -> None:
    clock = FakeClock()
    pace = Pace(clock, ceiling=200.0, default=None)
    pace.finished(ok())
    clock.t = 1001.0
    pace.finished(RATE_429)
    assert pace.rate == 1.0


async def test_at_the_reset_the_bound_is_told_again() -> None:
    clock = FakeClock()
    pace = Pace(clock, ceiling=10.0, default=None)
    pace.finished(ok(quota_remaining=0, quota_window=60, quota_reset=5.0))
    assert pace.source == Source.RESET
    clock.t = 1005.0
    pace.finished(ok())
    assert (pace.rate, pace.source) == (10.0, Source.FLAG)


async def test_a_change_of_source_is_told_from_a_hundredth() -> None:
    """--rate 100, then a policy of 95/s, then of 105/s (the flag rules again): each moves
    by 5 % with a new source, so each is told; 100 -> 110/s in one source is told too."""
    pace = Pace(FakeClock(), ceiling=100.0, default=None, share=1.0)
    first = pace.finished(policy(95, 1))
    second = pace.finished(policy(105, 1))
    assert first == PaceChange(100.0, 95.0, Source.POLICY)
    assert second == PaceChange(95.0, 100.0, Source.FLAG)
    alone = Pace(FakeClock(), ceiling=None, default=None, share=1.0)
    alone.finished(policy(100, 1))
    assert alone.finished(policy(110, 1)) == PaceChange(100.0, 110.0, Source.POLICY)
