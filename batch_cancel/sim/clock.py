"""Virtual time for the simulated world: an asyncio loop that never sleeps.

`VirtualLoop` moves its clock to the next timer whenever nothing is ready, so a schedule of
hours runs in milliseconds, and the same seed replays the same run. A loop with nothing left
to run and nothing to wake it raises `Stuck` instead of hanging (a hang in the code under test).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Mapping
from typing import Any, Final

from ..send.clock import Clock

__all__ = ["HORIZON", "LoopClock", "Stuck", "VirtualLoop"]

#: Virtual seconds one turn of the loop takes (so time always moves, as it does for real).
TICK: Final = 1e-6
#: Loop turns one schedule may take: more means tasks spin without time moving.
MAX_TURNS: Final = 3_000_000
#: A schedule that has not finished after this much virtual time is stuck.
HORIZON: Final = 30 * 86400.0


class Stuck(RuntimeError):
    """The loop has nothing left to run and nothing that could wake it, or ran past HORIZON:
    some task waits for ever (a hang in the code under test)."""


class _IdleSelector(selectors.BaseSelector):
    """A selector with no I/O behind it: waiting `timeout` moves the clock by that much."""

    def __init__(self) -> None:
        self.now = 0.0
        self.turns = 0
        self.horizon = HORIZON
        self.max_turns = MAX_TURNS
        self._keys: dict[Any, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.turns += 1
        if self.turns > self.max_turns:
            raise Stuck(f"{self.max_turns} loop turns: tasks spin without time moving")
        if timeout is None:
            raise Stuck("every task is waiting and no timer is set: the run hangs")
        # every turn takes a microsecond, as a real one does: code that waits for a deadline
        # (now >= until) must see time move, or it spins on a float one ulp short of it
        self.now += timeout if timeout > TICK else TICK
        if timeout > 0 and self.now > self.horizon:
            raise Stuck(f"still running after {self.horizon:.0f} s of virtual time")
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._keys

    def close(self) -> None:
        self._keys.clear()


class VirtualLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time: when nothing is ready it jumps to the next timer.

    Everything on the loop sees this time (`loop.time()`, `asyncio.sleep`, the pacer's
    pacer), so the schedule a run follows is the one real time would give, without the waits.
    """

    def __init__(self) -> None:
        self._idle = _IdleSelector()
        super().__init__(self._idle)

    def time(self) -> float:
        return self._idle.now

    def unbounded(self) -> None:
        """Lift the horizon and the turn limit (to let a stuck run's tasks be cancelled)."""
        self._idle.horizon = self._idle.now + HORIZON
        self._idle.turns = 0


class LoopClock(Clock):
    """The runner's (or a reader's) clock on a loop's time: virtual on a `VirtualLoop`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def now(self) -> float:
        return self._loop.time()
