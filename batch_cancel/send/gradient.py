"""A latency-steered limit on requests in flight: Netflix's Gradient2, beside the AIMD window.

`--concurrency-algorithm gradient2` picks it instead of `flow.Window`, so the benchmark can
compare the two on a shared tenant (issue 14). It follows `Gradient2Limit` of Netflix's
concurrency-limits (github.com/Netflix/concurrency-limits, concurrency-limits-core/src/main/
java/com/netflix/concurrency/limits/limit/Gradient2Limit.java, Apache-2.0; the formula is its
class comment), re-implemented here:

* every answer is a sample of the round trip (RTT: from taking a place to the answer, as
  Netflix's limiter measures from `acquire`); the short-term RTT is the last sample, the
  long-term RTT an exponential average over LONG_WINDOW samples (a plain mean of the first
  WARMUP ones), cut by a tenth whenever it is over twice the short one, so it recovers after
  a slow spell;
* while at least half the limit is in flight (else the caller, not the tenant, holds us back):
  ``gradient = clamp(long / short, 0.5, 1)``, ``new = limit * gradient + QUEUE_SIZE``,
  ``limit = limit * (1 - SMOOTHING) + new * SMOOTHING``: steady latency grows it by
  SMOOTHING x QUEUE_SIZE per answer, a latency rise lowers it, at most by half a step.

What is ours, not Netflix's: Gradient2 ignores drops, and a tenant that refuses at once above
its limit (Zuora, the simulator) shows no latency rise before its 429s, so a concurrency 429
counts as a sample at the gradient's floor (0.5) with no queue allowance,
``limit = limit * (1 - SMOOTHING / 2)``, and its quick refusal is not an RTT sample. The limit
starts at `flow.INITIAL_WINDOW` (no burst; Netflix starts at 20), never goes below 1 (Netflix
20) and never above the window's ceilings: `--concurrency` and `--tenant-share` of the
advertised `Concurrency-Limit-Limit`. Rate 429s are the pace's business, outages the
breaker's: neither moves it. `Concurrency-Limit-Remaining` is not read: the published
algorithm steers by latency and drops alone, and the comparison is of the algorithms.
"""

from __future__ import annotations

from ..model import Answer
from .flow import INITIAL_WINDOW, Places, WindowChange

#: Gradient2's defaults (`Gradient2Limit.Builder`): how much of the new estimate is taken per
#: sample, the places it may add while latency holds, the long-term average's span and warm-up.
SMOOTHING = 0.2
QUEUE_SIZE = 4.0
LONG_WINDOW = 600
WARMUP = 10
#: The gradient's clamp: at most half the limit is shed on one sample's latency.
MIN_GRADIENT = 0.5
#: Long over short RTT beyond this: latency fell back after a slow spell, decay the long one.
RECOVERY_RATIO = 2.0
RECOVERY_DECAY = 0.9


class LongRtt:
    """An exponential average of RTTs (Netflix's `ExpAvgMeasurement`): a plain mean over the
    first `warmup` samples, so one early outlier does not set the baseline for long."""

    __slots__ = ("_count", "_sum", "_warmup", "factor", "value")

    def __init__(self, window: int = LONG_WINDOW, warmup: int = WARMUP) -> None:
        self.factor = 2.0 / (window + 1)
        self._warmup = warmup
        self._count = 0
        self._sum = 0.0
        self.value = 0.0

    def add(self, sample: float) -> float:
        """Take one sample; returns the average."""
        if self._count < self._warmup:
            self._count += 1
            self._sum += sample
            self.value = self._sum / self._count
        else:
            self.value = self.value * (1 - self.factor) + sample * self.factor
        return self.value


class Gradient2(Places):
    """A resizable limit on requests in flight, sized by Gradient2 from RTTs and 429s.

    Offers what the `Limiter` uses of `flow.Window` (both are `flow.Places`); `observe`
    also takes the answer's RTT.
    """

    __slots__ = ("estimate", "long_rtt", "short_rtt")

    def __init__(self, max_size: int, share: float) -> None:
        super().__init__(max_size, share)
        self.long_rtt = LongRtt()
        self.short_rtt = 0.0
        #: Gradient2's estimate, fractional; `size` is its whole part within the ceilings
        self.estimate = float(min(self.ceiling, INITIAL_WINDOW))
        self.size = int(self.estimate)

    def observe(self, answer: Answer, rtt: float | None = None) -> WindowChange | None:
        """Resize after an answer (its place already released) that took `rtt` seconds from
        taking its place; returns the change, if any."""
        old = self.size
        if answer.concurrency_limit:
            self.tenant_limit = answer.concurrency_limit
            if self.size > self.ceiling:
                return self._resized(old, "tenant limit advertised")
        if answer.concurrency_limited:
            self.estimate *= 1 - SMOOTHING * (1 - MIN_GRADIENT)
            return self._resized(old, "429")
        if answer.rate_limited or answer.http_status is None or answer.http_status >= 500:
            return None  # the pace's business, or the breaker's: not congestion
        if rtt is not None and rtt > 0:
            self._sample(rtt, self.in_flight + 1)
        return self._resized(old, "gradient")

    def _sample(self, rtt: float, in_flight: int) -> None:
        """One RTT sample through Gradient2's update (`Gradient2Limit._update`)."""
        self.short_rtt = rtt
        long_rtt = self.long_rtt.add(rtt)
        if long_rtt / rtt > RECOVERY_RATIO:
            self.long_rtt.value *= RECOVERY_DECAY
        if in_flight < self.estimate / 2:
            return  # the caller holds us back, not the tenant: no growth to learn from
        gradient = max(MIN_GRADIENT, min(1.0, long_rtt / rtt))
        new = self.estimate * gradient + QUEUE_SIZE
        self.estimate = self.estimate * (1 - SMOOTHING) + new * SMOOTHING

    def _resized(self, old: int, reason: str) -> WindowChange | None:
        """Keep the estimate within [1, ceiling] and the size its whole part; the change."""
        self.estimate = max(1.0, min(float(self.ceiling), self.estimate))
        self.size = int(self.estimate)
        return self._changed(old, reason)
