"""Time as the send stage sees it, and the run's stop signal that cuts every wait short.

Every wait of the pool, the limits and a row goes through one injected `Clock`, so tests
pass a fake one and assert schedules exactly; `Stop.nap` is that clock's sleep, woken at
once when the run is told to stop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from ..model import StopKind

#: A sleep that returns early when the run stops.
Nap = Callable[[float], Awaitable[None]]


class Clock:
    """Time as the runner sees it; tests pass a fake one so schedules are asserted, not slept."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        await asyncio.sleep(seconds)


class Stop:
    """The run's stop signal: set once, with its reason and kind; every nap wakes at it."""

    __slots__ = ("_clock", "_set", "kind", "reason")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._set = asyncio.Event()
        self.reason = ""
        self.kind: StopKind | None = None

    @property
    def is_set(self) -> bool:
        """Whether the pool has been told to start no new row."""
        return self._set.is_set()

    def set(self, reason: str, kind: StopKind) -> bool:
        """Stop the run; False if it was already stopping (the first reason stays)."""
        if self.is_set:
            return False
        self._set.set()
        self.reason, self.kind = reason, kind
        return True

    async def nap(self, seconds: float) -> None:
        """Sleep on the clock, but wake at once when the run is told to stop."""
        if self.is_set or seconds <= 0:
            return
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        stopper = asyncio.ensure_future(self._set.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()
