"""The worker pool: concurrency, pacing, pool-wide pauses, outages, retries, shutdown.

It turns `CancelJob`s into `Outcome`s through a `Sender` (the Zuora client) and hands each
outcome to a callback as soon as it is known; it reads no files and writes none. Before each
cancel request it calls `on_sent`, so the caller can journal the request ahead of its answer.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

import structlog

from ..logs import get_logger
from ..model import (
    Answer,
    CancelJob,
    CancelState,
    Outcome,
    Status,
    StopKind,
    Verdict,
    cancel_state,
    unsettled_hint,
)
from .flow import Window
from .pace import Pace, PaceChange
from .zuora import AuthenticationError, InvoiceState

#: Zuora's category for a business-rule refusal, e.g. "already cancelling".
CATEGORY_RULE = 30
#: Zuora's category for "not found".
CATEGORY_NOT_FOUND = 40
#: A RateLimit window this long or longer is a daily quota: at 0 the run stops, no pause helps.
DAY = 86400

OutcomeSink = Callable[[Outcome], None]
#: Called before each cancel request; when it returns an awaitable, the request waits for it
#: (the journal's record reaching the OS).
SentSink = Callable[[CancelJob, int, str], Awaitable[None] | None]


class Sender(Protocol):
    """What the runner needs from a Zuora client."""

    async def cancel(self, job: CancelJob, track_id: str) -> Answer: ...
    async def invoice_state(self, key: str, track_id: str) -> InvoiceState: ...


class Clock:
    """Time as the runner sees it; tests pass a fake one so schedules are asserted, not slept."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        await asyncio.sleep(seconds)


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
class Limits:
    """The runner's share of the settings."""

    concurrency: int
    #: `--rate`: the most starts per second, a ceiling on whatever the tenant allows
    rate: float | None
    max_attempts: int
    backoff: Backoff = Backoff()
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


Nap = Callable[[float], Awaitable[None]]


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


@dataclass(slots=True)
class _RowState:
    """What a worker knows of the row it holds, for an outcome if it is stopped mid-row.

    `doubt`: a request of ours may have been applied and no read has settled it yet (it
    starts true for a row an earlier run left in doubt). `ever_doubt`: some request of ours
    could have been applied, settled or not; a later "already cancelled" is then ours.
    """

    attempts: int = 0
    in_flight: bool = False
    doubt: bool = False
    ever_doubt: bool = False
    last: Answer | None = None

    @classmethod
    def of(cls, job: CancelJob) -> _RowState:
        """The state a job starts in: in doubt if an earlier run left it so."""
        return cls(doubt=job.in_doubt, ever_doubt=job.in_doubt or job.doubted_before)


class Runner:
    """Sends jobs with a fixed pool of workers over a bounded queue, so memory stays flat."""

    def __init__(self, sender: Sender, limits: Limits, run_id: str, track_id_prefix: str = "bc",
                 clock: Clock | None = None, rng: random.Random | None = None,
                 log: structlog.typing.FilteringBoundLogger | None = None,
                 on_sent: SentSink | None = None,
                 on_withdrawn: Callable[[CancelJob, int], None] | None = None) -> None:
        self._sender = sender
        self._limits = limits
        self._track_prefix = f"{track_id_prefix}-{run_id}" if track_id_prefix else run_id
        self._clock = clock or Clock()
        self._rng = rng or random.Random()
        # bound once: a lazy proxy would rebuild the logger on every per-row event
        self._log = log or get_logger("batch_cancel.runner").bind()
        self._on_sent = on_sent
        self._on_withdrawn = on_withdrawn
        first_rate = limits.rate or limits.default_rate
        spread = min(1.0, limits.concurrency / first_rate) if first_rate else 1.0
        self._gate = PauseGate(self._clock, self._nap, self._rng, spread, lambda: self.stopping)
        self.pace = Pace(self._clock, limits.rate, limits.default_rate, limits.tenant_share,
                         self._nap, lambda: self.stopping)
        self._breaker = Breaker(self._clock, limits.outage_threshold, limits.backoff)
        self.window = Window(limits.concurrency, limits.tenant_share, self._clock.now)
        self._stopped = asyncio.Event()
        self._active: dict[int, _RowState] = {}
        self._total: int | None = None
        self._finished = 0
        self._quota_warned = False
        self.stop_reason = ""
        self.stop_kind: StopKind | None = None
        self.auth_error: AuthenticationError | None = None

    @property
    def paused_until(self) -> float:
        """The clock time before which nobody starts (0 when not paused)."""
        return self._gate.until

    @property
    def stopping(self) -> bool:
        """Whether the pool has been told to start no new row."""
        return self._stopped.is_set()

    def stop(self, reason: str, kind: StopKind = StopKind.INTERRUPTED) -> None:
        """Start no new row; rows not started become `not_attempted`."""
        if not self.stopping:
            self._stopped.set()
            self.stop_reason = reason
            self.stop_kind = kind
            self._breaker.wake_all()
            self._log.warning("pool.stopping", reason=reason, kind=kind.value)

    def track_id(self, row: int) -> str:
        """A `Zuora-Track-Id` unique per row and run: prefix, run id, row number."""
        return f"{self._track_prefix}-{row}"

    async def run(self, jobs: Iterable[CancelJob], on_outcome: OutcomeSink,
                  total: int | None = None) -> None:
        """Send every job and report each outcome exactly once, whatever happens."""
        self._total = total
        queue: asyncio.Queue[CancelJob | None] = asyncio.Queue(self._limits.concurrency * 2)

        def finish(outcome: Outcome) -> None:
            self._finished += 1
            on_outcome(outcome)

        workers = [asyncio.create_task(self._worker(queue, finish), name=f"worker-{n}")
                   for n in range(self._limits.concurrency)]
        try:
            for job in jobs:
                if self.stopping:  # a row in doubt stays in doubt: never plain not_attempted
                    state = _RowState.of(job)
                    finish(_stamped(self._stopped_outcome(job, state), state))
                    continue
                await queue.put(job)
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            # let cancelled workers report their rows (in flight: in doubt) before returning
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self, queue: asyncio.Queue[CancelJob | None],
                      on_outcome: OutcomeSink) -> None:
        while (job := await queue.get()) is not None:
            state = _RowState.of(job)
            if self.stopping:
                on_outcome(_stamped(self._stopped_outcome(job, state), state))
                continue
            try:
                outcome = await self._process(job, state)
            except AuthenticationError as exc:
                self.auth_error = self.auth_error or exc
                self.stop(f"authentication failed: {exc}", StopKind.AUTH)
                outcome = self._stopped_outcome(job, state)
            except asyncio.CancelledError:
                on_outcome(_stamped(self._interrupted(job, state), state))
                raise
            except Exception as exc:  # one row's bug must not stop the others
                outcome = self._outcome(job, state, Status.FAILED,
                                        f"unexpected error: {type(exc).__name__}: {exc}",
                                        in_doubt=state.in_flight or state.doubt)
            on_outcome(_stamped(outcome, state))
            self._log.debug("row.finished", row=job.row, status=outcome.status.value,
                            attempts=outcome.attempts, http_status=outcome.http_status,
                            error_code=outcome.error_code)

    # --- one row ------------------------------------------------------------------------

    async def _process(self, job: CancelJob, state: _RowState) -> Outcome:
        """Try one job until it succeeds, fails for good, runs out of attempts, or the run stops.

        A cancel that may have been applied is never sent again before a read of the invoice
        says it was not: that read is the only guard, since the PUT has no idempotency key.
        """
        track_id = self.track_id(job.row)
        resumed = job.in_doubt or job.doubted_before
        label = "verified after resume" if resumed else "verified after retry"
        counted = 0  # attempts that count against --max-attempts
        while True:
            if state.doubt:
                settled = await self._settle_doubt(job, track_id, state, label)
                if settled is not None:
                    return settled
            probe = await self._start()
            if self.stopping or not await self._take_place(probe):
                return self._stopped_outcome(job, state)
            state.attempts += 1
            try:
                if self._on_sent is not None:
                    recorded = self._on_sent(job, state.attempts, track_id)
                    if recorded is not None:
                        await recorded
            except BaseException:  # the request never left: nothing is in doubt
                self._withdraw(job, state)
                self._give_back(probe)
                raise
            if self.stopping or self._gate.until > self._clock.now():
                # stopped, or a 429 paused the pool, while the journal took the record: this
                # request does not go out, and the journal says so
                self._withdraw(job, state)
                self._give_back(probe)
                if self.stopping:
                    return self._stopped_outcome(job, state)
                continue
            answer = await self._observed(lambda: self._sender.cancel(job, track_id), probe,
                                          state)
            if answer.verdict is Verdict.SUCCEEDED:
                return self._answered(job, state, answer)
            if answer.in_doubt or (answer.category == CATEGORY_RULE and state.ever_doubt):
                state.doubt = state.ever_doubt = True
            if answer.verdict is Verdict.FINAL:
                if answer.category == CATEGORY_RULE or answer.in_doubt:
                    return await self._final_check(job, track_id, state, answer, label)
                return self._answered(job, state, answer)
            if not (answer.outage_like and self._breaker.is_open):
                counted += 1
            if counted >= self._limits.max_attempts:
                return await self._give_up(job, track_id, state, answer, label)
            await self._wait_before_retry(job, answer, state.attempts)

    async def _start(self) -> bool:
        """Wait for the pool-wide pause, the pacer and an open breaker; True when probing."""
        while not self.stopping:
            await self._gate.wait()
            await self.pace.wait_can_start()
            if self._gate.until > self._clock.now():
                continue  # a 429 came in while this worker waited for the pacer
            return await self._breaker.admit(lambda: self.stopping, self._nap)
        return False

    async def _observed(self, call: Callable[[], Awaitable[Answer]], probe: bool,
                        state: _RowState) -> Answer:
        """Run one cancel in the place `_take_place` got it, give the place back, and feed
        the answer to the breaker, the window, pauses and quota."""
        state.in_flight = True
        self.pace.started()
        try:
            answer = await call()
        except BaseException:  # no answer came: the row stays in flight, hence in doubt
            self.pace.finished(None)
            self._give_back(probe)
            raise
        self.window.release()
        state.in_flight = False
        state.last = answer
        self._after_answer(answer, probe)
        return answer

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
            while self._gate.until > self._clock.now() and not self.stopping:
                self.window.release()
                await self._gate.wait()
                await self.window.acquire()
        except BaseException:
            if probe:
                self._breaker.abandon_probe()
            raise
        if self.stopping:
            self._give_back(probe)
            return False
        return True

    def _withdraw(self, job: CancelJob, state: _RowState) -> None:
        """The request of the latest `sent` record will not leave: void that record."""
        if self._on_withdrawn is not None:
            self._on_withdrawn(job, state.attempts)
        state.attempts -= 1

    def _give_back(self, probe: bool) -> None:
        """Return a place taken for a request that ended without an answer."""
        self.window.release()
        if probe:
            self._breaker.abandon_probe()

    def _after_answer(self, answer: Answer, probe: bool, cancel: bool = True) -> None:
        paced = self.pace.finished(answer)
        if paced is not None:
            self._pace_changed(paced)
        window_before = self.window.size
        change = self.window.observe(answer)
        if change is not None:
            self._log.info("pool.window_changed", old=change.old, new=change.new,
                           reason=change.reason, ceiling=self.window.ceiling)
        event = self._breaker.observe(answer, probe, cancel)
        if event == "opened":
            self._log.warning("pool.paused", reason="outage", failures=self._breaker.failures,
                              http_status=answer.http_status,
                              error_message=answer.error_message[:200])
        elif event == "closed":
            self._log.info("pool.resumed", reason="outage over")
        elif event == "probe_failed" and self._breaker.open_for() > self._limits.outage_window:
            self.stop(f"Zuora did not answer for {self._breaker.open_for():.0f} s "
                      f"(--outage-window {self._limits.outage_window:g})", StopKind.OUTAGE)
        if answer.rate_limited and self._pauses_pool(answer, window_before):
            self._pause(answer)
        self._watch_quota(answer)

    def _pace_changed(self, change: PaceChange) -> None:
        self._log.info("pool.pace_changed", old=_rounded(change.old), new=_rounded(change.new),
                       source=change.source, in_flight=self.window.in_flight)

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

    async def _read_invoice(self, job: CancelJob, track_id: str,
                            state: _RowState) -> InvoiceState | Outcome:
        """Read the invoice, retrying a read that met a 429, a 5xx or no answer (up to
        --max-attempts reads, with backoff); an outcome if the run stopped meanwhile."""
        reads = 0
        while True:
            probe = await self._start()
            if self.stopping or not await self._take_place(probe):
                return self._stopped_outcome(job, state)
            self.pace.started()
            try:
                read = await self._sender.invoice_state(job.invoice_key, track_id)
            except BaseException:
                self.pace.finished(None)
                self._give_back(probe)
                raise
            self.window.release()
            self._after_answer(read.answer, probe, cancel=False)
            reads += 1
            if (read.einvoice_status is not None or read.answer.verdict is not Verdict.RETRY
                    or reads >= self._limits.max_attempts):
                return read
            if self._gate.until <= self._clock.now():  # else a 429 paused the pool already
                await self._nap(self._limits.backoff.delay(reads, self._rng))

    async def _settle_doubt(self, job: CancelJob, track_id: str, state: _RowState,
                            label: str) -> Outcome | None:
        """Before a resend after an answer that leaves the cancel in doubt, read the invoice.

        Returns the row's outcome when the read settles it (accepted: succeeded; refused by
        the tax authority: failed), or when nothing can be concluded (unreadable, or a status
        batch-cancel does not know): failed and still in doubt, never resent. None means the
        invoice says no cancel was applied, so sending is safe.
        """
        read = await self._read_invoice(job, track_id, state)
        if isinstance(read, Outcome):
            return read
        status = read.einvoice_status
        if status is None and read.answer.category == CATEGORY_NOT_FOUND:
            state.doubt = False  # no such invoice: nothing was applied; the cancel says so
            return None
        verdict = cancel_state(status) if status is not None else None
        if verdict is CancelState.NOT_APPLIED:
            state.doubt = False
            return None
        if verdict is CancelState.ACCEPTED:
            return self._read_outcome(job, state, read, Status.SUCCEEDED,
                                      f"{label}: eInvoiceStatus is {status}")
        if verdict is CancelState.REFUSED:
            return self._read_outcome(job, state, read, Status.FAILED,
                                      "eInvoiceStatus is CancelFailed after an earlier attempt: "
                                      "the tax authority refused the cancel")
        return self._unsettled(job, state, read)

    async def _final_check(self, job: CancelJob, track_id: str, state: _RowState,
                           answer: Answer, label: str) -> Outcome:
        """A refusal for the invoice's state (category 30), or a final answer we cannot read:
        one read says whether a cancel is in place, and whose it is.

        Accepted and some request of ours could have done it: `succeeded`. Accepted and none
        could: it was cancelled before this run, `skipped`. Otherwise Zuora's refusal stands.
        """
        read = await self._read_invoice(job, track_id, state)
        if isinstance(read, Outcome):
            return read
        status = read.einvoice_status
        verdict = cancel_state(status) if status is not None else None
        if verdict is CancelState.ACCEPTED and state.ever_doubt:
            return self._read_outcome(job, state, read, Status.SUCCEEDED,
                                      f"{label}: eInvoiceStatus is {status}")
        if verdict is CancelState.ACCEPTED:
            return self._read_outcome(job, state, read, Status.SKIPPED,
                                      f"already {status} before this run; not sent again")
        if verdict is CancelState.REFUSED and state.ever_doubt:
            return self._read_outcome(job, state, read, Status.FAILED,
                                      "eInvoiceStatus is CancelFailed after an earlier attempt: "
                                      "the tax authority refused the cancel")
        if state.doubt and verdict in (None, CancelState.UNSETTLED):
            return self._unsettled(job, state, read)
        if verdict is not None:
            state.doubt = False  # the invoice says where it stands: the refusal is the answer
        return replace(self._answered(job, state, answer), in_doubt=state.doubt)

    async def _give_up(self, job: CancelJob, track_id: str, state: _RowState, answer: Answer,
                       label: str) -> Outcome:
        """Out of attempts: if the last answer left the cancel in doubt, read the invoice first."""
        if state.doubt and not self.stopping:
            settled = await self._settle_doubt(job, track_id, state, label)
            if settled is not None:
                return settled
        message = f"{answer.error_message} (gave up after {state.attempts} attempts)".strip()
        outcome = Outcome.from_answer(job, replace(answer, verdict=Verdict.FINAL,
                                                   error_message=message),
                                      state.attempts, self.track_id(job.row), _now())
        return replace(outcome, in_doubt=state.doubt)

    async def _wait_before_retry(self, job: CancelJob, answer: Answer, attempts: int) -> None:
        gated = (answer.rate_limited and self._gate.until > self._clock.now()) or (
            answer.outage_like and self._breaker.is_open)
        if gated:  # the pool-wide pause or the breaker holds the row; no wait of its own
            delay = max(self._gate.until - self._clock.now(), 0.0)
        else:
            delay = self._limits.backoff.delay(attempts, self._rng)
        self._log.info("row.retry_scheduled", row=job.row, attempt=attempts, delay=round(delay, 3),
                       http_status=answer.http_status, error_code=answer.error_code,
                       error_message=answer.error_message[:200])
        if not gated:
            await self._nap(delay)

    def _pause(self, answer: Answer) -> None:
        """Pause the whole pool for the time Zuora named, else for a backoff delay."""
        delay = answer.retry_after
        if delay is None:
            delay = max(self._limits.default_pause, self._limits.backoff.delay(1, self._rng))
        if self._gate.pause(delay):
            self._log.warning("pool.paused", reason="rate_limited", seconds=round(delay, 3),
                              limit="concurrency" if answer.concurrency_limited else "rate",
                              http_status=answer.http_status, error_code=answer.error_code)

    def _watch_quota(self, answer: Answer) -> None:
        """Warn once when the daily quota will not cover the rows left; stop when it is gone."""
        window, remaining = answer.quota_window, answer.quota_remaining
        if window is None or remaining is None or window < DAY:
            return
        if remaining <= 0:
            self.stop("the tenant's daily API quota is used up (RateLimit-Remaining 0)",
                      StopKind.QUOTA)
            return
        left = (self._total or 0) - self._finished
        if remaining < left and not self._quota_warned:
            self._quota_warned = True
            self._log.warning("quota.low", remaining=remaining, rows_left=left, window=window)

    async def _nap(self, seconds: float) -> None:
        """Sleep, but wake at once when the run is told to stop."""
        if self.stopping or seconds <= 0:
            return
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        stopper = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()

    # --- outcomes -------------------------------------------------------------------------

    def _answered(self, job: CancelJob, state: _RowState, answer: Answer) -> Outcome:
        return Outcome.from_answer(job, answer, state.attempts, self.track_id(job.row), _now())

    def _read_outcome(self, job: CancelJob, state: _RowState, read: InvoiceState,
                      status: Status, message: str) -> Outcome:
        """An outcome a read of the invoice decided: the doubt is over."""
        state.doubt = False
        answer = read.answer
        return Outcome(job.row, status, answer.http_status, read.einvoice_error_code, message,
                       state.attempts, self.track_id(job.row), answer.zuora_request_id,
                       answer.process_id, _now())

    def _unsettled(self, job: CancelJob, state: _RowState, read: InvoiceState) -> Outcome:
        """The read could not settle the doubt: failed, still in doubt, and not sent again."""
        status = read.einvoice_status
        if status is None:
            why = f"the invoice could not be read ({read.answer.error_message or 'no answer'})"
        else:
            why = f"eInvoiceStatus is {status}: {unsettled_hint(status)}"
        answer = read.answer
        return Outcome(job.row, Status.FAILED, answer.http_status, answer.error_code,
                       f"in doubt, not sent again: {why}; --resume reads it first",
                       state.attempts, self.track_id(job.row), answer.zuora_request_id,
                       answer.process_id, _now(), in_doubt=True)

    def _outcome(self, job: CancelJob, state: _RowState, status: Status, message: str,
                 in_doubt: bool = False) -> Outcome:
        last = state.last or Answer(Verdict.FINAL)
        return Outcome(job.row, status, last.http_status, last.error_code, message,
                       state.attempts, self.track_id(job.row), last.zuora_request_id,
                       last.process_id, _now(), in_doubt)

    def _not_attempted(self, job: CancelJob, state: _RowState) -> Outcome:
        return self._outcome(job, state, Status.NOT_ATTEMPTED,
                             f"not sent: {self.stop_reason or 'the run stopped'}")

    def _stopped_outcome(self, job: CancelJob, state: _RowState) -> Outcome:
        """A row the run stopped in the middle of: unsent, or in doubt, or surely not applied."""
        if state.doubt:
            return self._outcome(job, state, Status.FAILED,
                                 f"in doubt: stopped ({self.stop_reason}) before the earlier "
                                 "request could be checked; --resume checks it first",
                                 in_doubt=True)
        if state.attempts == 0:
            return self._not_attempted(job, state)
        last = state.last.error_message if state.last else ""
        return self._outcome(job, state, Status.NOT_ATTEMPTED,
                             f"not cancelled: stopped ({self.stop_reason}) before a retry; "
                             f"last answer: {last}")

    def _interrupted(self, job: CancelJob, state: _RowState) -> Outcome:
        if state.in_flight or state.doubt:
            return self._outcome(job, state, Status.FAILED,
                                 "in doubt: interrupted while a request was in flight; the "
                                 "cancel may have been applied (--resume checks it first)",
                                 in_doubt=True)
        return self._stopped_outcome(job, state)


def _rounded(rate: float | None) -> float | None:
    return None if rate is None else round(rate, 2)


def _stamped(outcome: Outcome, state: _RowState) -> Outcome:
    """The outcome with what the journal must remember for a resume: whether any request for
    the row was in doubt (a cancel found in place later may then be ours)."""
    ever = state.ever_doubt or outcome.in_doubt
    return replace(outcome, ever_in_doubt=True) if ever else outcome


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
