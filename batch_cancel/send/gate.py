"""Pool-wide holds: the pause after a 429, and the breaker that waits out an outage.

Both stop every worker, not one: a 429 says the tenant is over its limit for everyone, and
an outage answers nobody. Both run on the injected clock and wake at once when the run stops.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from ..model import Answer
from .clock import Clock, Nap
from .retry import Backoff


class PauseGate:
    """A pool-wide pause: after a 429 nobody starts a request before the deadline Zuora named.

    Waiters wake with a random spread after the deadline so the pool resumes gradually, not
    as one burst that would trip the limit again.
    """

    __slots__ = ("_clock", "_nap", "_rng", "_spread", "_stopped", "until")

    def __init__(self, clock: Clock, nap: Nap, rng: random.Random, spread: float,
                 stopped: Callable[[], bool] = lambda: False) -> None:
        self._clock = clock
        self._nap = nap
        self._stopped = stopped
        self._rng = rng
        self._spread = spread
        self.until = 0.0

    def pause(self, seconds: float) -> bool:
        """Push the deadline to `seconds` from now; False if it already reached that far."""
        deadline = self._clock.now() + seconds
        if deadline <= self.until:
            return False
        self.until = deadline
        return True

    async def wait(self) -> bool:
        """Wait out the pause (and this waiter's share of the resume spread); True if it did."""
        waited = False
        while (left := self.until - self._clock.now()) > 0 and not self._stopped():
            waited = True
            await self._nap(left + self._rng.uniform(0.0, self._spread))
        return waited


class Breaker:
    """A circuit breaker for outages.

    After `threshold` outage-like failures in a row, the pool stops sending; one request at a
    time goes through as a probe, with growing waits between probes, until one is answered.
    Failures while the breaker is open do not use up a row's attempts, so an outage does not
    burn through the file as `failed`.
    """

    __slots__ = ("_backoff", "_changed", "_clock", "_threshold", "failures", "next_probe",
                 "opened_at", "probe_in_flight", "probes")

    def __init__(self, clock: Clock, threshold: int, backoff: Backoff) -> None:
        self._clock = clock
        self._threshold = threshold
        self._backoff = backoff
        self._changed = asyncio.Event()
        self.failures = 0
        self.opened_at: float | None = None
        self.next_probe = 0.0
        self.probe_in_flight = False
        self.probes = 0

    @property
    def is_open(self) -> bool:
        """Whether the pool is waiting out an outage."""
        return self.opened_at is not None

    def open_for(self) -> float:
        """Seconds since the breaker opened (0 when closed)."""
        return 0.0 if self.opened_at is None else self._clock.now() - self.opened_at

    async def admit(self, stopping: Callable[[], bool], nap: Nap) -> bool:
        """Return when a request may start; True if it is the probe of an open breaker."""
        while self.is_open and not stopping():
            if not self.probe_in_flight and self._clock.now() >= self.next_probe:
                self.probe_in_flight = True
                return True
            if self.probe_in_flight:
                changed = self._changed
                await changed.wait()
            else:
                await nap(self.next_probe - self._clock.now())
        return False

    def observe(self, answer: Answer, probe: bool, cancel: bool = True) -> str:
        """Count an answer; returns "opened", "closed", "probe_failed" or "".

        Only a cancel that gets an answer shows the outage is over: invoice reads may work
        while the cancel endpoint does not, so a read can trip the breaker but not close it.
        """
        if probe:
            self.probe_in_flight = False
        if not answer.outage_like and not cancel:
            if probe:
                self._notify()
            return ""
        if not answer.outage_like:
            self.failures = 0
            if self.is_open:
                self.opened_at = None
                self.probes = 0
                self._notify()
                return "closed"
            return ""
        self.failures += 1
        if self.is_open and probe:
            self.probes += 1
            self.next_probe = self._clock.now() + self._backoff.ceiling(self.probes + 1)
            self._notify()
            return "probe_failed"
        if not self.is_open and self.failures >= self._threshold:
            self.opened_at = self._clock.now()
            self.next_probe = self.opened_at + self._backoff.ceiling(1)
            return "opened"
        return ""

    def abandon_probe(self) -> None:
        """The probe's task ended without an answer; let another worker probe."""
        self.probe_in_flight = False
        self._notify()

    def wake_all(self) -> None:
        """Release every waiter (the run is stopping)."""
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
