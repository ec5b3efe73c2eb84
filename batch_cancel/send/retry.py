"""How long a row keeps trying: a retry policy as one frozen value, as `stamina` has it.

Both a number of attempts and a time budget bound every row; the backoff formula is stated
here, once, and tests read the schedule off a fake clock.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff, full jitter: attempt n waits uniform(0, min(cap, base * 2**(n-1)))."""

    base: float = 1.0
    cap: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The wait after the `attempt`-th failed try (1-based)."""
        return rng.uniform(0.0, self.ceiling(attempt))

    def ceiling(self, attempt: int) -> float:
        """The longest wait after the `attempt`-th failed try."""
        return min(self.cap, self.base * 2.0 ** (attempt - 1))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a row that met a retryable answer tries again, and when it gives up.

    After the n-th counted failure (1-based) the row waits
    ``uniform(0, min(backoff.cap, backoff.base * 2 ** (n - 1)))`` seconds (full jitter), unless
    the pool already holds it (a 429 pause, an open breaker). It gives up after
    `max_attempts` counted failures, or when the next wait would end more than `budget`
    seconds after its first request (infinite by default: the pool's pauses and the outage
    window already bound a run, and a row cut short by a clock would end `failed`).
    Failures while the breaker is open are not counted (an outage must not burn the file).
    """

    max_attempts: int
    backoff: Backoff = Backoff()
    budget: float = math.inf

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The wait after the `attempt`-th failure (1-based), drawn from `rng`."""
        return self.backoff.delay(attempt, rng)

    def exhausted(self, counted: int, elapsed: float, delay: float = 0.0) -> bool:
        """Whether a row with `counted` failures, `elapsed` seconds after its first request,
        gives up rather than wait `delay` more."""
        return counted >= self.max_attempts or elapsed + delay > self.budget
