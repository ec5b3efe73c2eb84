"""Adaptive flow control: how many requests may be in flight, learned from Zuora's answers.

Zuora's concurrency limit is per tenant and shared with every other integration of the tenant,
so a fixed `--concurrency` is either too timid or too greedy. The window follows TCP's
congestion control (AIMD): it never exceeds `--concurrency` nor `--tenant-share` of the limit
Zuora advertises in `Concurrency-Limit-Limit`; a 429, or `Concurrency-Limit-Remaining` at 0,
halves it; fewer places left on the tenant (`Concurrency-Limit-Remaining` plus ours in flight)
than the window shrinks it to those (at most once per second, since Zuora samples Remaining
once a second), and it never grows past them; a full
window of clean answers grows it by one. It starts small and doubles (slow start) until the
first sign of congestion, so a run never opens with a burst.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .model import Answer

#: Zuora's Default concurrency limit, assumed until an answer advertises the real one.
ASSUMED_TENANT_LIMIT = 40
#: Zuora refreshes Concurrency-Limit-Remaining once a second: the window moves at most once per
#: such interval in each direction, so it reacts to a sample that shows its last move.
SAMPLE_INTERVAL = 1.0
#: Slow start opens with this many requests in flight.
INITIAL_WINDOW = 4


@dataclass(frozen=True, slots=True)
class WindowChange:
    """One change of the window, for the `pool.window_changed` event."""

    old: int
    new: int
    reason: str


class Window:
    """A resizable limit on requests in flight, sized by AIMD from Zuora's answers."""

    __slots__ = ("_clean", "_clock", "_last_decrease", "_last_growth", "_slow_start", "_waiters",
                 "in_flight",
                 "max_size", "share", "size", "tenant_limit")

    def __init__(self, max_size: int, share: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_size = max_size
        self.share = share
        self.tenant_limit = ASSUMED_TENANT_LIMIT
        self._clock = clock
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._clean = 0
        self._last_decrease = -math.inf
        self._last_growth = -math.inf
        self._slow_start = True
        self.in_flight = 0
        self.size = min(self.ceiling, INITIAL_WINDOW)

    @property
    def ceiling(self) -> int:
        """The most the window may grow to: our cap, and our share of the tenant's limit."""
        return max(1, min(self.max_size, math.floor(self.share * self.tenant_limit)))

    async def acquire(self) -> None:
        """Wait for a free place in the window (first come, first served)."""
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

    def release(self) -> None:
        """Give a place back (call once per acquire, whatever happened)."""
        self.in_flight -= 1
        self._wake()

    def observe(self, answer: Answer) -> WindowChange | None:
        """Resize after an answer; returns the change, if any."""
        old = self.size
        if answer.concurrency_limit:
            self.tenant_limit = answer.concurrency_limit
            if self.size > self.ceiling:
                self.size = self.ceiling
                return self._changed(old, "tenant limit advertised")
        if answer.rate_limited:
            return self._decrease(old, "429", self.size // 2)
        if answer.http_status is None or answer.http_status >= 500:
            return None  # outages are the breaker's business, not congestion
        free = answer.concurrency_remaining
        if free == 0 and self.in_flight + 1 < self.size // 2:
            # the tenant is full while we use under half our window: others took it
            return self._decrease(old, "tenant headroom", self.in_flight + 1)
        self._clean += 1
        if self._clean < self.size or self.size >= self.ceiling:
            return None
        tight = free is not None and free < 2 * self.size  # stale by one doubling: still fits
        if tight and self._clock() - self._last_growth < SAMPLE_INTERVAL:
            return None  # a tight tenant: wait for a Remaining sample that shows our last growth
        room = self.size + free - 1 if free is not None else self.ceiling
        grown = min(self.ceiling, room, self.size * 2 if self._slow_start else self.size + 1)
        self._clean = 0
        if grown <= self.size:
            return None
        self._last_growth = self._clock()
        self.size = grown
        return self._changed(old, "slow start" if self._slow_start else "clean answers")

    def _decrease(self, old: int, reason: str, to: int) -> WindowChange | None:
        self._slow_start = False
        now = self._clock()
        if now - self._last_decrease < SAMPLE_INTERVAL:
            return None
        self._last_decrease = now
        self._clean = 0
        self.size = max(1, min(self.size, to))
        return self._changed(old, reason)

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
