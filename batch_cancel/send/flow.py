"""Adaptive flow control: how many requests may be in flight, learned from Zuora's answers.

Zuora's concurrency limit is per tenant and shared with every other integration of the tenant,
so a fixed `--concurrency` is either too timid or too greedy. The window follows TCP's
congestion control (AIMD): it starts small and doubles per window of clean answers (slow
start), then grows by one per window of clean answers; a concurrency 429, or
`Concurrency-Limit-Remaining` at 0 while we hold little of the tenant, halves it (at most once
a second, so one burst of 429s counts once). It never exceeds `--concurrency`, nor
`--tenant-share` of the limit Zuora advertises in `Concurrency-Limit-Limit`, nor the places the
tenant had free for us: the advertised Remaining plus what we had in flight when that value was
sampled (the fewer of the last two samples), one place kept spare while others hold some;
when Remaining is advertised exactly, slow start grows straight into that room. Zuora
refreshes Remaining only once a second, so "what we had in flight" is the least we held in
the last second or two: a stale sample then understates our part rather than overstating the
room (a server that advertises Remaining exactly is recognised and trusted as is). After a
concurrency 429 the window stays HURT_MARGIN below the number of our requests in flight that
met it, for HURT_MEMORY seconds: with no Concurrency-Limit headers at all, that is how the
limit is learned. Rate 429s are the pace's business (`pace.py`), not the window's.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..model import Answer

#: Zuora's Default concurrency limit, assumed until an answer advertises the real one.
ASSUMED_TENANT_LIMIT = 40
#: Zuora refreshes Concurrency-Limit-Remaining once a second: the window halves at most once
#: per such interval, so one burst of 429s (or one low sample) counts once.
SAMPLE_INTERVAL = 1.0
#: Slow start opens with this many requests in flight.
INITIAL_WINDOW = 4
#: After a 429 the window stays below the size that met it for this long: Remaining counts
#: places other clients are between two requests of theirs as free, so growing into them
#: again at once would only meet the next 429.
HURT_MEMORY = 30.0
#: ... and at least this many places below it: others' use of the tenant moves by more than
#: one place from second to second, so one below still met 429s in the benchmark.
HURT_MARGIN = 2
#: ... but one below it when the tenant advertises no Remaining: then nobody's use of the
#: tenant can be seen, and the refused request itself says the limit is one less.
HURT_MARGIN_UNADVERTISED = 1
#: Of this many requests other clients keep in flight, about one is between two calls (its
#: answer on the way, the next not yet sent) when Zuora samples Remaining: measured against
#: a client keeping 24 in flight, Remaining showed 2-3 places more than were really free.
OTHERS_BETWEEN_CALLS = 10
#: Remaining that changes twice within this many seconds is advertised exactly, not sampled
#: once a second: then it counts our requests in flight now, and one sample is enough.
EXACT_GAP = 0.25


@dataclass(frozen=True, slots=True)
class WindowChange:
    """One change of the window, for the `pool.window_changed` event."""

    old: int
    new: int
    reason: str


class Places:
    """Places for requests in flight, `size` of them, waited for first come, first served,
    under the ceilings of `--concurrency` and `--tenant-share` of the tenant's limit. How
    `size` is learned is the subclass's: `Window` (AIMD), `gradient.Gradient2`."""

    __slots__ = ("_peak", "_waiters", "in_flight", "max_size", "share", "size", "tenant_limit")

    def __init__(self, max_size: int, share: float) -> None:
        self.max_size = max_size
        self.share = share
        self.tenant_limit = ASSUMED_TENANT_LIMIT
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.in_flight = 0
        #: the most of ours in flight since `_peak` was last reset by the subclass
        self._peak = 0
        self.size = min(self.ceiling, INITIAL_WINDOW)

    @property
    def ceiling(self) -> int:
        """The most the size may grow to: our cap, and our share of the tenant's limit."""
        return max(1, min(self.max_size, math.floor(self.share * self.tenant_limit)))

    async def acquire(self) -> None:
        """Wait for a free place (first come, first served)."""
        while self.in_flight >= self.size:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # pass the wake-up this waiter will not use
                raise
        self.in_flight += 1
        if self.in_flight > self._peak:
            self._peak = self.in_flight

    def release(self) -> None:
        """Give a place back (call once per acquire, whatever happened)."""
        self.in_flight -= 1
        self._wake()

    def _changed(self, old: int, reason: str) -> WindowChange | None:
        if self.size == old:
            return None
        self._wake()
        return WindowChange(old, self.size, reason)

    def _wake(self) -> None:
        """Wake as many waiters as there are free places."""
        free = self.size - self.in_flight
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1


class Window(Places):
    """A resizable limit on requests in flight, sized by AIMD from Zuora's answers."""

    __slots__ = ("_available", "_changed_at", "_clean", "_clock", "_exact", "_held",
                 "_held_second", "_hurt_at", "_hurt_size", "_last_decrease", "_sample",
                 "_slow_start")

    def __init__(self, max_size: int, share: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(max_size, share)
        self._clock = clock
        self._clean = 0
        self._last_decrease = -math.inf
        #: the window size that last met a 429, and when
        self._hurt_size = 0
        self._hurt_at = -math.inf
        self._slow_start = True
        #: the last Concurrency-Limit-Remaining seen; for it and the one before, Remaining
        #: plus our requests in flight when it was taken
        self._sample: int | None = None
        self._available: deque[int] = deque(maxlen=2)
        #: whether Remaining looks exact (it changed twice within EXACT_GAP), not sampled
        self._exact = False
        self._changed_at = -math.inf
        #: the fewest of our requests in flight in the previous and the current second: a
        #: sample Zuora took at most a second ago counted at least that many of ours
        self._held = [max_size + 1, max_size + 1]
        self._held_second = -1
        # `_peak` (Places): reset at each concurrency 429, so it is at least as many as the
        # tenant held of ours when it refused the next one

    @property
    def room(self) -> int | None:
        """The places the tenant had for us in its last two samples (the fewer), None if never
        advertised. One place is kept spare, and one more per OTHERS_BETWEEN_CALLS requests
        of other clients: a sample counts theirs that are between two calls as free. With
        no other client in sight none is kept: the ceiling still caps the window at our
        share of the tenant."""
        if not self._available:
            return None
        available = self._available[-1] if self._exact else min(self._available)
        others = max(0, self.tenant_limit - available)
        if not others:
            return available  # nobody else holds a place: none to keep spare for them
        return available - 1 - others // OTHERS_BETWEEN_CALLS

    def observe(self, answer: Answer) -> WindowChange | None:
        """Resize after an answer (its place already released); returns the change, if any."""
        old = self.size
        self._note_remaining(answer.concurrency_remaining)
        if answer.concurrency_limit:
            self.tenant_limit = answer.concurrency_limit
            if self.size > self.ceiling:
                self.size = self.ceiling
                return self._changed(old, "tenant limit advertised")
        if answer.rate_limited:
            return self._throttled(old, answer.concurrency_limited)
        if answer.http_status is None or answer.http_status >= 500:
            return None  # outages are the breaker's business, not congestion
        if answer.concurrency_remaining == 0 and self.in_flight + 1 < self.size // 2:
            # the tenant is full while we use under half our window: others took it
            return self._decrease(old, "tenant headroom", self.in_flight + 1)
        self._clean += 1
        if self.size >= self.ceiling:
            return None
        if self._slow_start and self._exact:
            # the tenant says exactly how many places are free: no round trips to probe them
            grown = min(self.ceiling, self._limit_now())
        elif self._clean < self.size:
            return None
        else:
            step = self.size if self._slow_start else 1
            grown = min(self.ceiling, self.size + step, self._limit_now())
        if grown <= self.size:
            return None
        self._clean = 0
        self.size = grown
        return self._changed(old, "slow start" if self._slow_start else "clean answers")

    @property
    def _hurt_margin(self) -> int:
        """Places kept below a concurrency 429: fewer when the tenant advertises nothing."""
        return HURT_MARGIN if self._sample is not None else HURT_MARGIN_UNADVERTISED

    def _limit_now(self) -> int:
        """The most the window may hold now: the room Zuora advertised, below a recent 429."""
        room = self.room
        limit = self.ceiling if room is None else room
        if self._clock() - self._hurt_at < HURT_MEMORY:
            limit = min(limit, self._hurt_size - self._hurt_margin)
        return limit

    def _note_remaining(self, free: int | None) -> None:
        """Track Remaining and how many of ours it counted (this answer's request included)."""
        if free is None:
            return
        ours = self.in_flight + 1
        now = self._clock()
        second = math.floor(now / SAMPLE_INTERVAL)
        if second != self._held_second:
            last = self._held[1] if second == self._held_second + 1 else ours
            self._held, self._held_second = [last, ours], second
        self._held[1] = min(self._held[1], ours)
        if free != self._sample:
            # a server that advertises Remaining exactly changes it between close answers
            self._exact = now - self._changed_at < EXACT_GAP
            self._sample, self._changed_at = free, now
            self._available.append((ours if self._exact else min(self._held)) + free)

    def _throttled(self, old: int, concurrency: bool) -> WindowChange | None:
        """A concurrency 429: halve (once per SAMPLE_INTERVAL: one burst counts once), and
        remember how many of ours were in flight when it came (the fewest within
        HURT_MEMORY): the window stays HURT_MARGIN below that, at once, even within the
        burst. Without Concurrency-Limit headers this is how the limit is found: the tenant
        that refused our n-th request allows fewer than n. A rate 429 says nothing of how
        many may be in flight: the pace answers it (`pace.Pace`), not the window."""
        if not concurrency:
            return None
        now = self._clock()
        # the refused request came while we held at most `_peak` (counting it); answers
        # that arrived since may have lowered in_flight, so the peak is the measure
        ours = max(self._peak, self.in_flight + 1)
        self._peak = self.in_flight
        recent = now - self._hurt_at < HURT_MEMORY
        self._hurt_size = min(self._hurt_size, ours) if recent else ours
        self._hurt_at = now
        wall = max(1, self._hurt_size - self._hurt_margin)
        if now - self._last_decrease < SAMPLE_INTERVAL:
            # the same burst: no second halving, but never stay at the wall just met
            if self.size <= wall:
                return None
            self.size = wall
            return self._changed(old, "429")
        return self._decrease(old, "429", min(self.size // 2, wall))

    def _decrease(self, old: int, reason: str, to: int) -> WindowChange | None:
        self._slow_start = False
        now = self._clock()
        if now - self._last_decrease < SAMPLE_INTERVAL:
            return None
        self._last_decrease = now
        self._clean = 0
        self.size = max(1, min(self.size, to))
        return self._changed(old, reason)
