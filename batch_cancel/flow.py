"""Adaptive flow control: how many requests may be in flight, learned from Zuora's answers.

Zuora's concurrency limit is per tenant and shared with every other integration of the tenant,
so a fixed `--concurrency` is either too timid or too greedy. The window follows TCP's
congestion control (AIMD): it never exceeds `--concurrency` nor `--tenant-share` of the limit
Zuora advertises in `Concurrency-Limit-Limit`; a 429, or `Concurrency-Limit-Remaining` at 0,
halves it, and fewer free places than the window shrinks it to what is free (at most once per
second, since Zuora samples Remaining once a second); a full
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
#: Seconds between two decreases: Zuora refreshes Concurrency-Limit-Remaining once a second.
DECREASE_COOLDOWN = 1.0
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

    __slots__ = ("_clean", "_clock", "_last_decrease", "_slow_start", "_waiters", "in_flight",
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
        if answer.rate_limited or answer.concurrency_remaining == 0:
            return self._decrease(old, "429" if answer.rate_limited else "tenant at its limit",
                                  self.size // 2)
        free = answer.concurrency_remaining
        if free is not None and self.in_flight + free < self.size:
            # the tenant's free places plus ours: growing past that only earns 429s
            return self._decrease(old, "tenant headroom", self.in_flight + free)
        if answer.http_status is None or answer.http_status >= 500:
            return None  # outages are the breaker's business, not congestion
        self._clean += 1
        if self._clean >= self.size and self.size < self.ceiling:
            self._clean = 0
            if answer.concurrency_remaining is not None and answer.concurrency_remaining <= 1:
                return None  # the tenant has no headroom left to take
            grown = self.size * 2 if self._slow_start else self.size + 1
            self.size = min(self.ceiling, grown)
            return self._changed(old, "slow start" if self._slow_start else "clean answers")
        return None

    def _decrease(self, old: int, reason: str, to: int) -> WindowChange | None:
        self._slow_start = False
        now = self._clock()
        if now - self._last_decrease < DECREASE_COOLDOWN:
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
