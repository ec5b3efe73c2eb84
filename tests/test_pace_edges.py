"""The pace at the edge of each rule (the floor, the last second, a bound met exactly, the
reset, the event steps, FINE_RATE), on a fake clock: exact rates, sources and events."""

from __future__ import annotations

import dataclasses

import pytest

from batch_cancel.model import Answer, Verdict
from batch_cancel.send.pace import Pace, PaceChange, Source
from tests.helpers import FakeClock, ok, policy

RATE_429 = Answer(Verdict.RETRY, http_status=429, rate_limited=True, retry_after=1.0)


async def starts(pace: Pace, clock: FakeClock, n: int) -> list[float]:
    """Clock times (relative to 1000) at which n starts in a row were let go."""
    out = []
    for _ in range(n):
        await pace.wait_can_start()
        out.append(round(clock.t - 1000.0, 6))
    return out


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
    assert (short.rate, short.source) == (pytest.approx(89 / 9), Source.POLICY)


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
    """The policy moving 100 -> 105/s is no event (under EVENT_STEP); 100 -> 111/s is (each
    paced one start a window below: 99, 104, 110)."""
    pace = Pace(FakeClock(), ceiling=None, default=None, share=1.0)
    assert pace.finished(policy(100, 1)) is not None
    assert pace.finished(policy(105, 1)) is None
    assert pace.finished(policy(95, 1)) is None
    change = pace.finished(policy(111, 1))
    assert change is not None and (change.old, change.new) == (99.0, 110.0)


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
    """A 10 s window of 100 paces at 9.9/s; a day's or two days' quota is the runner's."""
    pace = Pace(FakeClock(), ceiling=None, default=None, share=1.0)
    pace.finished(ok(rate_windows=((100, 10.0), (86400, 86400.0), (1000, 172800.0))))
    assert (pace.rate, pace.source) == (9.9, Source.POLICY)
    pace.finished(ok(rate_windows=((86399, 86399.0),)))  # a second short of a day: paces
    assert (pace.rate, pace.source) == (pytest.approx(86398 / 86399), Source.POLICY)


async def test_without_a_share_all_but_one_start_of_each_window_is_used() -> None:
    """A share of 1 paces one start a window below the quota: the schedule may start
    S x pace + 1 in S seconds, and at the whole quota that one was a 429 now and then."""
    pace = Pace(FakeClock(), ceiling=None, default=None)
    pace.finished(policy(100, 1))
    assert (pace.rate, pace.source) == (99.0, Source.POLICY)
    half = Pace(FakeClock(), ceiling=None, default=None, share=0.5)
    half.finished(policy(100, 1))
    assert half.rate == 50.0  # a share that leaves a start free is not lowered
    one = Pace(FakeClock(), ceiling=None, default=None)
    one.finished(policy(1, 2))
    assert one.rate == 0.5  # a quota of one a window is not cut to nothing


async def test_under_one_a_second_a_tenth_is_a_tenth_of_the_pace_itself() -> None:
    """0.5/s -> 0.56/s moves by 12 %: an event, though the move is under 0.1 start/s."""
    pace = Pace(FakeClock(), ceiling=None, default=None, share=1.0)
    pace.finished(policy(1, 2))
    change = pace.finished(policy(57, 100))  # one start a window below: 0.56/s
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
    first = pace.finished(policy(96, 1))  # one start a window below its quota: 95/s
    second = pace.finished(policy(105, 1))
    assert first == PaceChange(100.0, 95.0, Source.POLICY)
    assert second == PaceChange(95.0, 100.0, Source.FLAG)
    alone = Pace(FakeClock(), ceiling=None, default=None, share=1.0)
    alone.finished(policy(101, 1))
    assert alone.finished(policy(111, 1)) == PaceChange(100.0, 110.0, Source.POLICY)
