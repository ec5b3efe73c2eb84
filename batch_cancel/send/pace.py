"""Pacing: how many requests may start per second, learned from what the tenant says.

Zuora sends `RateLimit-Limit` as a policy list (`2250000, 50000;w=60, 2250000;w=3600,
27000000;w=86400`: the first number is the quota of the window closest to exhaustion, each
`N;w=S` a window of S seconds allowing N requests) with `RateLimit-Remaining` and
`RateLimit-Reset` for that closest window. The pace is the lowest of:

* `--rate`, when given: a ceiling, never a target;
* the per-target default, until an answer carries a policy (and for good if none ever does);
* `--tenant-share` of the tightest window's rate, min(N / S) over windows shorter than a
  DAY: the sustained rate that trips no window while leaving the other integrations the
  rest of every one of them (a daily quota is the runner's: it warns and stops at 0); at
  most N - 1 a window, as the schedule below may start one more than S x pace in S seconds;
* the remaining quota spread over the seconds left in the closest window (windows of at
  least SPREAD_MIN_WINDOW seconds), so a minute window is never emptied early and no 429 is
  needed to find the limit; when nothing is left, nobody starts before the reset;
* what rate 429s taught, only when the tenant sends no policy (a proxy strips it, an older
  API version): each rate 429 lowers the pace multiplicatively (to DECREASE of the pace; the
  first one also to what the tenant accepted in the last second), at most once per
  COOLDOWN after the pause it asks for, so a burst of 429s counts once (a 429 asking for
  no wait, `Retry-After: 0`, says no window is used up and lowers nothing); then each
  second of clean answers raises it by PROBE_SHARE of itself (at least PROBE_MIN), slowly,
  so a pause never ends in a burst back to the asked rate.

Starts are spaced by a virtual schedule (GCRA): start n is due at slot(n-1) + 1 / pace and
never goes earlier (up to a millisecond earlier above 1,000/s, as the event loop's timers
wake no finer). A start that goes less than an interval late keeps its due slot, so a late
wake-up does not push the schedule back; over any span of S seconds at most S x pace + 1
starts go, and there is no start-up burst. All time comes from the injected
clock, so tests assert exact schedules.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from ..model import Answer

#: Windows shorter than this are not spread: `RateLimit-Reset` counts whole seconds, so over
#: a window of a few seconds "remaining / reset" would understate the time left several-fold.
SPREAD_MIN_WINDOW = 10.0
#: Windows this long or longer neither pace nor spread: spreading a daily quota would crawl
#: for hours; the runner warns when it is short and stops the run cleanly at 0 (resume later).
DAY = 86400.0
#: On a rate 429 the pace drops to this share of itself (and to no more than was accepted
#: in the last second).
DECREASE = 0.8
#: A burst of 429s (requests already on their way) lowers the pace once in this many seconds.
COOLDOWN = 1.0
#: Each second of clean answers after a rate 429 raises the learned pace by this share ...
PROBE_SHARE = 0.02
#: ... and by at least this many starts per second.
PROBE_MIN = 0.5
#: The learned pace never drops below this (starts per second).
MIN_RATE = 0.5
#: Above this pace a start may go up to TOLERANCE early: timers wake no finer.
FINE_RATE = 1000.0
TOLERANCE = 0.001
#: A pace change is an event when it moves by at least this share, or when its source
#: changes and it moves by at least EVENT_NUDGE (two bounds a hair apart, such as the policy
#: and the quota spread at share 1, would otherwise flap).
EVENT_STEP = 0.1
EVENT_NUDGE = 0.01


class Clock(Protocol):
    """Time as the pacer sees it (the runner's clock)."""

    def now(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


class Source:
    """What sets the pace now (the `source` of `pool.pace_changed`)."""

    UNPACED = "unpaced"
    DEFAULT = "target_default"
    FLAG = "rate_flag"
    POLICY = "tenant_policy"
    QUOTA = "quota_left"
    RESET = "quota_reset"
    LEARNED = "rate_429"


@dataclass(frozen=True, slots=True)
class PaceChange:
    """One change of the pace worth an event."""

    old: float | None
    new: float | None
    source: str


def policy_rate(windows: tuple[tuple[int, float], ...], share: float = 1.0) -> float | None:
    """`share` of the tightest window's rate, min(share x quota / seconds), None without
    windows; but never more than quota - 1 starts a window (of a quota above 1). The pacer
    may start S x pace + 1 in any S seconds (a start that goes late keeps its slot, so the
    next can follow sooner): paced at a whole window's quota, a fixed window now and then
    took one start too many, each a 429 and a pause of the pool (measured: 201 starts in the
    second before a 429 of a 200-a-second window)."""
    return min(((min(share * quota, quota - 1) if quota > 1 else share * quota) / seconds
                for quota, seconds in windows), default=None)


class Pace:
    """The start-rate limit: `wait_can_start()`, `started()`, `finished(answer)`."""

    __slots__ = ("_ceiling", "_clock", "_default", "_event_rate", "_event_source",
                 "_hold_until", "_last_decrease", "_last_probe", "_nap", "_ok", "_policy",
                 "_share", "_slot", "_spread", "_stopped", "_turn", "in_flight", "learned",
                 "rate", "source")

    def __init__(self, clock: Clock, ceiling: float | None, default: float | None,
                 share: float = 1.0, nap: Callable[[float], Awaitable[None]] | None = None,
                 stopped: Callable[[], bool] = lambda: False) -> None:
        self._clock = clock
        self._nap = nap or clock.sleep
        self._stopped = stopped
        self._ceiling = ceiling
        self._default = default
        self._share = share
        #: share of the tightest policy window, once an answer carried one
        self._policy: float | None = None
        #: remaining quota over the seconds left in the closest window
        self._spread: float | None = None
        #: nobody starts before this (the closest window is used up)
        self._hold_until = -math.inf
        #: the pace rate 429s taught (None: none met, or probed back above the others)
        self.learned: float | None = None
        self._last_decrease = -math.inf
        self._last_probe = -math.inf
        #: finish times of answers the tenant accepted (not 429) in the last second
        self._ok: deque[float] = deque()
        self._slot = -math.inf
        self._turn = asyncio.Lock()
        self.in_flight = 0
        self.rate: float | None = None
        self.source = Source.UNPACED
        self._event_rate: float | None = None
        self._event_source = ""
        self._recompute()
        self._event_rate, self._event_source = self.rate, self.source

    # --- the interface ------------------------------------------------------------------

    async def wait_can_start(self) -> None:
        """Wait for this start's slot (first come, first served); return at once if stopped."""
        if self.try_start():
            return
        async with self._turn:
            while not self._stopped():
                wait = self._take_slot()
                if not wait:
                    return
                await self._nap(wait)

    def try_start(self) -> bool:
        """Take this start's slot at once if nobody is queued for one and it is due (no lock
        to take and give back, no coroutine to await); False: `wait_can_start` for it."""
        if self.rate is None and self._clock.now() >= self._hold_until:
            return True  # unpaced: the hot path of a run with no rate limit at all
        return not self._turn.locked() and not self._stopped() and not self._take_slot()

    def _take_slot(self) -> float:
        """Take this start's slot if it is due (0.0); else the seconds until it may be."""
        now = self._clock.now()
        if now < self._hold_until:
            return self._hold_until - now
        rate = self.rate
        if rate is None:
            self._slot = now
            return 0.0
        interval = 1.0 / rate
        due = self._slot + interval
        if due - now <= (TOLERANCE if rate > FINE_RATE else 0.0):
            # a slot missed by less than an interval (the loop woke us late) is kept, so the
            # next one is not pushed back; an older one is idle time, no credit
            self._slot = due if now - due < interval else now
            return 0.0
        return due - now

    def started(self) -> None:
        """A request left (counted against the quota Remaining last showed)."""
        self.in_flight += 1

    def finished(self, answer: Answer | None) -> PaceChange | None:
        """A request ended (None: with no answer); learn from its headers or its 429."""
        self.in_flight = max(0, self.in_flight - 1)
        if answer is None:
            return None
        now = self._clock.now()
        if answer.rate_windows:
            self._policy = policy_rate(tuple(w for w in answer.rate_windows if w[1] < DAY),
                                       self._share)
        self._note_quota(answer, now)
        wait = answer.retry_after
        if (answer.rate_limited and not answer.concurrency_limited and self._policy is None
                and (wait is None or wait > 0)):
            # learned only when the tenant names no policy (with one, the pause is enough: a
            # 429 then comes from a start that fell a hair early in a fixed window); a 429
            # that asks for no wait at all (Retry-After: 0) says no window is used up
            self._decrease(now, wait)
        elif answer.http_status is not None and answer.http_status != 429:
            self._ok.append(now)
            self._probe(now)
        return self._recompute()

    # --- learning -----------------------------------------------------------------------

    def _note_quota(self, answer: Answer, now: float) -> None:
        """Spread what is left of the closest window over the seconds until it resets."""
        remaining, reset, window = answer.quota_remaining, answer.quota_reset, answer.quota_window
        if (remaining is None or reset is None or window is None
                or not SPREAD_MIN_WINDOW <= window < DAY):
            return
        left = remaining - self.in_flight  # ours on their way may not be counted yet
        if left <= 0:
            self._hold_until = max(self._hold_until, now + reset)
            self._spread = None  # the window after the reset is a fresh one
        else:
            self._spread = left / max(reset, 1.0)

    def _decrease(self, now: float, retry_after: float | None) -> None:
        """A rate 429: lower the pace to DECREASE of itself, once per COOLDOWN. The first
        one also lowers it to what the tenant accepted in the last second: a run asked to go
        at 200/s against 30/s finds 30 at once, not after eight steps of 0.8 (later seconds
        may hold a pause, which would make that count meaningless)."""
        if now < self._last_decrease + COOLDOWN:
            return
        # the pool pauses for Retry-After: 429s of requests sent before it do not count again
        self._last_decrease = self._last_probe = now + (retry_after or 0.0)
        ok = self._ok
        while ok and ok[0] < now - 1.0:
            ok.popleft()
        accepted = float(len(ok))
        # unpaced until now: what went through in the last second is the best guess
        current = self.rate if self.rate is not None else max(accepted, MIN_RATE / DECREASE)
        lowered = DECREASE * current
        if self.learned is None and accepted > 0:
            lowered = min(lowered, accepted)
        self.learned = max(MIN_RATE, lowered)

    def _probe(self, now: float) -> None:
        """A clean answer: once a second, raise the learned pace a little."""
        ok = self._ok
        while ok and ok[0] < now - 1.0:
            ok.popleft()
        learned = self.learned
        if learned is None or now < self._last_probe + 1.0:
            return
        self._last_probe = now
        learned += max(PROBE_MIN, PROBE_SHARE * learned)
        bound = self._bound_without_learned()[0]
        # probed back up to the other bounds: they rule again
        self.learned = None if bound is not None and learned >= bound else learned

    # --- the pace -----------------------------------------------------------------------

    def _bound_without_learned(self) -> tuple[float | None, str]:
        """The lowest bound other than what 429s taught, and its source."""
        bounds: list[tuple[float, str]] = []
        if self._ceiling is not None:
            bounds.append((self._ceiling, Source.FLAG))
        if self._policy is not None:
            bounds.append((self._policy, Source.POLICY))
        elif self._default is not None:
            bounds.append((self._default, Source.DEFAULT))
        if self._spread is not None:
            bounds.append((self._spread, Source.QUOTA))
        if not bounds:
            return None, Source.UNPACED
        rate, source = min(bounds, key=lambda bound: bound[0])
        return rate, source

    def _recompute(self) -> PaceChange | None:
        rate, source = self._bound_without_learned()
        if self.learned is not None and (rate is None or self.learned < rate):
            rate, source = self.learned, Source.LEARNED
        if self._hold_until > self._clock.now():
            source = Source.RESET
        self.rate, self.source = rate, source
        old = self._event_rate
        if _close(old, rate, EVENT_STEP if source == self._event_source else EVENT_NUDGE):
            return None
        self._event_rate, self._event_source = rate, source
        return PaceChange(old, rate, source)


def _close(old: float | None, new: float | None, step: float) -> bool:
    """Whether two paces are within `step` (a share) of each other (None is unpaced)."""
    if old is None or new is None:
        return old is new
    return abs(new - old) < step * max(old, 1e-9)
