"""The limits on when a request may start, behind one small interface.

`Limiter.wait_can_start()` returns a `Ticket` once the pool-wide pause (`gate.PauseGate`),
the pacer (`pace.Pace`), the outage breaker (`gate.Breaker`) and the flow-control window
(`flow.Window`, or `gradient.Gradient2` with `--concurrency-algorithm gradient2`) all allow a
start; `started(ticket)` marks the request leaving and `finished(ticket, answer)` feeds its
answer (None: none came) back to each of them, as `aiometer`'s meters do. Each limit stays a
small strategy of its own; this module only orders them and turns their changes into events.
Everything runs on the injected clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..config import Settings, Target
from ..events import (
    Events,
    PoolPaceChanged,
    PoolPausedOutage,
    PoolPausedRateLimited,
    PoolResumed,
    PoolWindowChanged,
    QuotaLow,
)
from ..model import Answer, StopKind
from .clock import Clock, Stop
from .flow import Window
from .gate import Breaker, PauseGate
from .gradient import Gradient2
from .pace import Pace, PaceChange
from .retry import Backoff, RetryPolicy

#: A RateLimit window this long or longer is a daily quota: at 0 the run stops, no pause helps.
DAY = 86400


@dataclass(frozen=True, slots=True)
class Limits:
    """The runner's share of the settings."""

    concurrency: int
    #: `--rate`: the most starts per second, a ceiling on whatever the tenant allows
    rate: float | None
    max_attempts: int
    backoff: Backoff = field(default_factory=Backoff)
    #: seconds to pause the pool after a 429 that names no time
    default_pause: float = 5.0
    #: outage-like failures in a row (5xx, timeouts, dropped connections) that open the breaker
    outage_threshold: int = 10
    #: seconds of outage to wait out before stopping the run cleanly
    outage_window: float = 1800.0
    #: share of the tenant's advertised concurrency limit this run may use
    tenant_share: float = 0.5
    #: a concurrency 429 pauses the whole pool for its Retry-After even while the window can
    #: still shrink (`--concurrency-429 pause`)
    pause_on_concurrency_429: bool = False
    #: starts per second until the tenant's RateLimit headers say more (the per-target
    #: default; None: unpaced until then)
    default_rate: float | None = None
    #: seconds a row may spend retrying, from its first request (see `RetryPolicy`)
    retry_budget: float = math.inf
    #: `--concurrency-algorithm`: "window" (`flow.Window`) or "gradient2" (`gradient.Gradient2`)
    concurrency_algorithm: str = "window"

    @property
    def retry(self) -> RetryPolicy:
        """One row's retry policy: attempts, backoff and time budget."""
        return RetryPolicy(self.max_attempts, self.backoff, self.retry_budget)


def limits_for(settings: Settings, target: Target) -> Limits:
    """The limits of every request of a command (a run's cancels and reads, preflight's and
    verify's reads) from its settings: the target's default rate while --rate names none."""
    return Limits(concurrency=settings.concurrency, rate=settings.rate,
                  default_rate=target.default_rate if settings.rate is None else None,
                  max_attempts=settings.max_attempts, outage_window=settings.outage_window,
                  tenant_share=settings.tenant_share,
                  pause_on_concurrency_429=settings.concurrency_429 == "pause",
                  concurrency_algorithm=settings.concurrency_algorithm)


@dataclass(frozen=True, slots=True)
class Ticket:
    """A place in the window, taken for one request; `probe`: it tests an open breaker;
    `taken_at`: when the place was taken, for Gradient2's round-trip times (0 otherwise)."""

    probe: bool
    taken_at: float = 0.0


#: The two tickets there are: values, shared rather than built per request.
PLAIN = Ticket(probe=False)
PROBE = Ticket(probe=True)


class Limiter:
    """When a request may start: the pause gate, the pacer, the breaker and the window."""

    def __init__(self, limits: Limits, clock: Clock, rng: random.Random, events: Events,
                 stop: Stop, stop_run: Callable[[str, StopKind], None],
                 rows_left: Callable[[], int]) -> None:
        self._limits = limits
        self._clock = clock
        self._rng = rng
        self._events = events
        self._stop = stop
        self._stop_run = stop_run
        self._rows_left = rows_left
        self._quota_warned = False
        first_rate = limits.rate or limits.default_rate
        spread = min(1.0, limits.concurrency / first_rate) if first_rate else 1.0
        stopping = self._stopping
        self.gate = PauseGate(clock, stop.nap, rng, spread, stopping)
        self.pace = Pace(clock, limits.rate, limits.default_rate, limits.tenant_share,
                         stop.nap, stopping)
        self.breaker = Breaker(clock, limits.outage_threshold, limits.backoff)
        #: the window's latency-steered alternative, when chosen: it needs each request's RTT
        self._gradient = (Gradient2(limits.concurrency, limits.tenant_share)
                          if limits.concurrency_algorithm == "gradient2" else None)
        self.window: Window | Gradient2 = self._gradient or Window(
            limits.concurrency, limits.tenant_share, clock.now)

    def _stopping(self) -> bool:
        return self._stop.is_set

    # --- the interface ------------------------------------------------------------------

    async def wait_can_start(self) -> Ticket | None:
        """Wait until a request may start, holding a place in the window; None (holding
        nothing) if the run stopped meanwhile."""
        probe = await self._admitted()
        if self._stop.is_set or not await self._take_place(probe):
            return None
        if self._gradient is not None:  # its RTT runs from here, as Netflix's from acquire
            return Ticket(probe, self._clock.now())
        return PROBE if probe else PLAIN

    async def may_leave(self, ticket: Ticket, ready: Callable[[], Awaitable[None]]) -> bool:
        """Whether the request of `ticket` may leave, once `ready` (the client's token) is:
        not if the run stopped or a 429 paused the pool meanwhile. The token comes first
        because fetching one takes a round trip or more, in which another row's 429 can pause
        the pool: this is the last look before the wire. When False, or if `ready` raises,
        the place is given back."""
        try:
            await ready()
        except BaseException:
            self.give_back(ticket)
            raise
        if self._stop.is_set or self.paused():
            self.give_back(ticket)
            return False
        return True

    def started(self, ticket: Ticket) -> None:
        """The request of `ticket` leaves now."""
        self.pace.started()

    def finished(self, ticket: Ticket, answer: Answer | None, cancel: bool = True) -> None:
        """The request of `ticket` ended: with `answer`, or with none (it may still land).

        Only a cancel's answer can close the breaker (`cancel` False: an invoice read).
        """
        if answer is None:
            self.pace.finished(None)
            self.give_back(ticket)
            return
        self.window.release()
        rtt = None if self._gradient is None else self._clock.now() - ticket.taken_at
        self._after_answer(answer, ticket.probe, cancel, rtt)

    def give_back(self, ticket: Ticket) -> None:
        """Return the place of a request that ended without an answer, or never left."""
        self.window.release()
        if ticket.probe:
            self.breaker.abandon_probe()

    # --- what a row asks of the pool ---------------------------------------------------

    @property
    def paused_until(self) -> float:
        """The clock time before which nobody starts (0 when not paused)."""
        return self.gate.until

    def paused(self) -> bool:
        """Whether a 429 holds the whole pool now."""
        return self.gate.until > self._clock.now()

    def holding(self, answer: Answer) -> float | None:
        """Seconds the pool itself holds a row that met `answer` (a 429 pause, an open
        breaker: the row needs no wait of its own); None when it does not."""
        if (answer.rate_limited and self.paused()) or (
                answer.outage_like and self.breaker.is_open):
            return max(self.gate.until - self._clock.now(), 0.0)
        return None

    def counts(self, answer: Answer) -> bool:
        """Whether `answer` uses up one of the row's attempts: not an outage failure while
        the breaker is open, so an outage does not burn through the file as `failed`."""
        return not (answer.outage_like and self.breaker.is_open)

    def wake_all(self) -> None:
        """Release every waiter (the run is stopping)."""
        self.breaker.wake_all()

    def pause(self, answer: Answer) -> None:
        """Pause the whole pool for the time Zuora named, else for a backoff delay."""
        delay = answer.retry_after
        if delay is None:
            delay = max(self._limits.default_pause, self._limits.backoff.delay(1, self._rng))
        if self.gate.pause(delay):
            self._events.emit(PoolPausedRateLimited(
                "rate_limited", round(delay, 3),
                "concurrency" if answer.concurrency_limited else "rate",
                answer.http_status, answer.error_code))

    # --- admission ----------------------------------------------------------------------

    async def _admitted(self) -> bool:
        """Wait for the pool-wide pause, the pacer and an open breaker; True when probing."""
        while not self._stop.is_set:
            if self.paused():  # else there is nothing to wait out
                await self.gate.wait()
            await self.pace.wait_can_start()
            if self.paused():
                continue  # a 429 came in while this worker waited for the pacer
            if not self.breaker.is_open:
                return False  # the common case, without a coroutine to admit it
            return await self.breaker.admit(self._stopping, self._stop.nap)
        return False

    async def _take_place(self, probe: bool) -> bool:
        """Wait for a place in the flow-control window, outside any pool-wide pause; False
        (holding nothing) if the run stopped meanwhile.

        The wait comes before a request counts as sent: a row still waiting here when the run
        stops was never sent (not in doubt), and no request starts after the stop. A worker
        that waited while a 429 paused the pool waits the pause out too, else every worker
        queued at the window would send into the 429 in turn.
        """
        try:
            await self.window.acquire()
            while self.paused() and not self._stop.is_set:
                self.window.release()
                await self.gate.wait()
                await self.window.acquire()
        except BaseException:
            if probe:
                self.breaker.abandon_probe()
            raise
        if self._stop.is_set:
            self.give_back(PROBE if probe else PLAIN)
            return False
        return True

    # --- learning from answers ----------------------------------------------------------

    def _after_answer(self, answer: Answer, probe: bool, cancel: bool,
                      rtt: float | None) -> None:
        paced = self.pace.finished(answer)
        if paced is not None:
            self._pace_changed(paced)
        window_before = self.window.size
        change = (self.window.observe(answer) if self._gradient is None
                  else self._gradient.observe(answer, rtt))
        if change is not None:
            self._events.emit(PoolWindowChanged(change.old, change.new, change.reason,
                                                self.window.ceiling))
        self._watch_breaker(answer, probe, cancel)
        if answer.rate_limited and self._pauses_pool(answer, window_before):
            self.pause(answer)
        self._watch_quota(answer)

    def _watch_breaker(self, answer: Answer, probe: bool, cancel: bool) -> None:
        """Feed the breaker; an outage longer than --outage-window stops the run."""
        breaker = self.breaker
        event = breaker.observe(answer, probe, cancel)
        if event == "opened":
            self._events.emit(PoolPausedOutage("outage", breaker.failures, answer.http_status,
                                               answer.error_message[:200]))
        elif event == "closed":
            self._events.emit(PoolResumed("outage over"))
        elif event == "probe_failed" and breaker.open_for() > self._limits.outage_window:
            self._stop_run(f"Zuora did not answer for {breaker.open_for():.0f} s "
                           f"(--outage-window {self._limits.outage_window:g})", StopKind.OUTAGE)

    def _pace_changed(self, change: PaceChange) -> None:
        self._events.emit(PoolPaceChanged(_rounded(change.old), _rounded(change.new),
                                          change.source, self.window.in_flight))

    def _pauses_pool(self, answer: Answer, window_before: int) -> bool:
        """Whether a 429 stops every worker until the time Zuora named.

        A rate 429 does: no request may start before the rate window resets. A concurrency
        429 says too many requests are in flight *now*; halving the window (done by then)
        is the pool-wide relief, and pausing everyone for Zuora's blanket 120 s would idle
        the tenant's free places. Only when the window is already down to one request, so
        it cannot shrink further, does the pool wait the full Retry-After.
        """
        if not answer.concurrency_limited or self._limits.pause_on_concurrency_429:
            return True
        return window_before <= 1

    def _watch_quota(self, answer: Answer) -> None:
        """Warn once when the daily quota will not cover the rows left; stop when it is gone."""
        window, remaining = answer.quota_window, answer.quota_remaining
        if window is None or remaining is None or window < DAY:
            return
        if remaining <= 0:
            self._stop_run("the tenant's daily API quota is used up (RateLimit-Remaining 0)",
                           StopKind.QUOTA)
            return
        left = self._rows_left()
        if remaining < left and not self._quota_warned:
            self._quota_warned = True
            self._events.emit(QuotaLow(remaining, left, window))


def _rounded(rate: float | None) -> float | None:
    return None if rate is None else round(rate, 2)
