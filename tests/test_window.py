"""The flow-control window called directly, at the edges of each rule: the assumed limit, the
ceiling's floor, the one-second and thirty-second memories, the 5xx line, and waiters woken
or cancelled. A fake clock; exact sizes."""

from __future__ import annotations

import asyncio

import pytest

from batch_cancel.model import Answer, Verdict
from batch_cancel.send.flow import Window, WindowChange
from tests.helpers import FakeClock

BARE = Answer(Verdict.SUCCEEDED, http_status=200)
CONCURRENCY_429 = Answer(Verdict.RETRY, http_status=429, rate_limited=True,
                         concurrency_limited=True)


def window(max_size: int = 64, share: float = 1.0) -> tuple[Window, FakeClock]:
    clock = FakeClock(start=0.0)
    return Window(max_size, share, clock.now), clock


async def fill(win: Window, places: int) -> None:
    """Hold `places` places, then give them all back: the peak the window saw."""
    for _ in range(places):
        await win.acquire()
    for _ in range(places):
        win.release()


def test_until_zuora_says_otherwise_the_tenant_allows_40() -> None:
    """Share 0.5 of the assumed 40: a ceiling of 20; a first window of 4; no room known."""
    win, _ = window(share=0.5)
    assert (win.tenant_limit, win.ceiling, win.size, win.room) == (40, 20, 4, None)
    assert window(max_size=3)[0].size == 3


def test_the_ceiling_is_never_below_one_place() -> None:
    win, _ = window(share=0.01)
    assert (win.ceiling, win.size) == (1, 1)


def test_an_advertised_limit_under_the_window_shrinks_it_at_once() -> None:
    win, _ = window(share=0.5)
    change = win.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=6))
    assert change == WindowChange(4, 3, "tenant limit advertised")
    assert (win.tenant_limit, win.ceiling) == (6, 3)
    assert win.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=8)) is None


@pytest.mark.parametrize(("status", "counted"), [(499, True), (500, False), (None, False)])
def test_a_5xx_or_no_answer_is_not_a_clean_answer(status: int | None, counted: bool) -> None:
    """Four clean answers grow a window of 4 to 8; a 500 (or no status) does not count."""
    win, _ = window()
    for _ in range(3):
        win.observe(BARE)
    win.observe(Answer(Verdict.RETRY, http_status=status))
    assert win.size == (8 if counted else 4)


def test_slow_start_doubles_after_exactly_a_window_of_clean_answers() -> None:
    win, _ = window()
    changes = [win.observe(BARE) for _ in range(4)]
    assert changes == [None, None, None, WindowChange(4, 8, "slow start")]
    changes = [win.observe(BARE) for _ in range(8)]
    assert changes[:7] == [None] * 7 and changes[7] == WindowChange(8, 16, "slow start")


async def test_after_a_decrease_the_window_grows_by_one_per_window() -> None:
    """A 429 at 8 of ours: halved to 4 (and remembered: with no Remaining advertised 7 is
    the wall for 30 s); then +1 per full window of clean answers, told as "clean answers"."""
    win, clock = window()
    for _ in range(4):
        win.observe(BARE)
    await fill(win, 8)
    assert win.observe(CONCURRENCY_429) == WindowChange(8, 4, "429")
    changes = [win.observe(BARE) for _ in range(4)]
    assert changes == [None, None, None, WindowChange(4, 5, "clean answers")]
    changes = [win.observe(BARE) for _ in range(5)]
    assert changes[4] == WindowChange(5, 6, "clean answers")
    assert [win.observe(BARE) for _ in range(6)][5] == WindowChange(6, 7, "clean answers")
    assert [win.observe(BARE) for _ in range(14)] == [None] * 14  # the wall: one below 8
    clock.t = 29.999
    assert win.observe(BARE) is None
    clock.t = 30.0  # exactly HURT_MEMORY later: forgotten
    assert win.observe(BARE) == WindowChange(7, 8, "clean answers")


async def test_a_second_429_halves_again_exactly_a_second_later() -> None:
    win, clock = window()
    win.size = 16
    await fill(win, 16)
    assert win.observe(CONCURRENCY_429) == WindowChange(16, 8, "429")
    clock.t = 0.999
    win.in_flight = 8  # 9 of ours when the tenant refused: the wall is 8
    assert win.observe(CONCURRENCY_429) is None  # the same burst, and 8 is not past its wall
    clock.t = 1.0
    assert win.observe(CONCURRENCY_429) == WindowChange(8, 4, "429")


async def test_a_429_with_remaining_advertised_keeps_two_places_below_what_met_it() -> None:
    """Remaining was advertised: the wall is HURT_MARGIN (2) below the 10 that met it, even
    when halving would leave more (a window of 20 halves to 10, then the wall: 8)."""
    win, _ = window()
    win.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_remaining=30))
    win.size = 20
    await fill(win, 10)
    assert win.observe(CONCURRENCY_429) == WindowChange(20, 8, "429")


async def test_a_rate_429_says_nothing_of_the_window() -> None:
    win, _ = window()
    await fill(win, 4)
    assert win.observe(Answer(Verdict.RETRY, http_status=429, rate_limited=True)) is None
    assert win.size == 4


async def test_a_full_tenant_shrinks_the_window_only_when_we_hold_under_half() -> None:
    """Remaining 0 with 2 of ours in flight (this answer's included) in a window of 5: not
    under half (5 // 2 = 2); in a window of 6 it is (2 < 3): down to 2."""
    full = Answer(Verdict.SUCCEEDED, http_status=200, concurrency_remaining=0)
    win, _ = window()
    win.size, win.in_flight = 5, 1
    assert win.observe(full) is None and win.size == 5
    win, _ = window()
    win.size, win.in_flight = 6, 1
    assert win.observe(full) == WindowChange(6, 2, "tenant headroom")


async def test_a_grown_window_wakes_as_many_waiters_as_it_has_new_places() -> None:
    win, _ = window(max_size=8)
    for _ in range(4):
        await win.acquire()
    waiters = [asyncio.ensure_future(win.acquire()) for _ in range(6)]
    await asyncio.sleep(0)
    win.size = 6
    win.release()  # one free, and two more places: three wake
    await asyncio.sleep(0)
    assert [w.done() for w in waiters] == [True, True, True, False, False, False]
    assert win.in_flight == 6
    for waiter in waiters[3:]:
        waiter.cancel()
    await asyncio.gather(*waiters[3:], return_exceptions=True)


async def test_a_woken_waiter_cancelled_passes_its_place_on() -> None:
    """The waiter a release woke is cancelled before it runs: the next one gets the place."""
    win, _ = window(max_size=8)
    for _ in range(4):
        await win.acquire()
    first = asyncio.ensure_future(win.acquire())
    second = asyncio.ensure_future(win.acquire())
    await asyncio.sleep(0)
    win.release()
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.sleep(0)
    assert second.done() and win.in_flight == 4


async def test_a_later_429_at_more_of_ours_keeps_the_lower_wall() -> None:
    """Refused at our 10th, then (1.5 s later) at our 14th: the tenant still allows 9 at
    most for 30 s, so clean answers grow the window back to 9, not 13."""
    win, clock = window()
    win.size = 20
    await fill(win, 10)
    win.observe(CONCURRENCY_429)
    clock.t = 1.5
    win.in_flight = 13
    win.observe(CONCURRENCY_429)
    win.in_flight = 0
    for _ in range(200):
        win.observe(BARE)
    assert win.size == 9


async def test_the_wall_counts_the_most_of_ours_in_flight_not_the_latest() -> None:
    """Five in flight, three answered, one more sent: the 429 met at most 5 of ours (wall 4),
    not 4."""
    win, _ = window()
    win.size = 8
    for _ in range(5):
        await win.acquire()
    for _ in range(3):
        win.release()
    await win.acquire()
    win.release()
    assert win.observe(CONCURRENCY_429) == WindowChange(8, 4, "429")


def test_the_room_is_the_fewer_of_the_last_two_samples() -> None:
    """Sampled Remaining 10, then 20 a second later (one of ours each time): the room is
    from the first, 11 places less one spare and two for the others' 29."""
    win, clock = window()
    win.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_remaining=10))
    clock.t = 1.1
    win.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_remaining=20))
    assert win.room == 11 - 1 - 2
    clock.t = 2.2
    win.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_remaining=30))
    assert win.room == 21 - 1 - 1


async def test_waiters_get_places_first_come_first_served() -> None:
    """A window of 2, full, three waiting: each freed place goes to the longest waiting."""
    win, _ = window()
    win.size = 2
    await fill(win, 0)
    for _ in range(2):
        await win.acquire()
    order: list[str] = []

    async def wait(name: str) -> None:
        await win.acquire()
        order.append(name)

    waiters = [asyncio.ensure_future(wait(name)) for name in "ABC"]
    await asyncio.sleep(0)
    for _ in range(3):
        win.release()
        for _ in range(3):
            await asyncio.sleep(0)
    await asyncio.gather(*waiters)
    assert order == ["A", "B", "C"]


def test_what_we_held_is_forgotten_after_a_second() -> None:
    """1 of ours at 0 s, 10 at 5 s: the sample taken at 5 s counts the 10, not the 1 of
    long ago (30 - 1 spare - 1 for the others' 10 = 28)."""
    win, clock = window()
    win.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_remaining=30))
    clock.t = 5.0
    win.in_flight = 9
    win.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_remaining=20))
    assert win.room == 28


def test_remaining_that_changes_a_quarter_second_apart_is_not_exact() -> None:
    """EXACT_GAP is 0.25 s: two values exactly that far apart are samples, not exact."""
    win, clock = window()
    win.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_remaining=30))
    clock.t = 0.25
    win.in_flight = 14
    win.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_remaining=24))
    assert win.room == 1 + 24 - 1 - 1


def test_a_large_remaining_repeated_is_no_change() -> None:
    """Remaining 300 (a large tenant), then 300 again 0.1 s later: the same sample, so not
    taken for an exact count; the room stays the first sample's."""
    win, clock = window(max_size=1000)
    limit = int("1000")
    win.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=limit,
                       concurrency_remaining=int("300")))
    clock.t = 0.1
    win.in_flight = 50
    win.observe(Answer(Verdict.SUCCEEDED, http_status=200, concurrency_limit=limit,
                       concurrency_remaining=int("300")))
    assert win.room == 1 + 300 - 1 - 69  # others hold 699: 69 more spare
