"""The worker pool: concurrency, pacing, pool-wide pauses, retries with backoff, shutdown.

It turns `CancelJob`s into `Outcome`s through a `Sender` (the Zuora client) and hands each
outcome to a callback as soon as it is known; it reads no files and writes none.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog
from aiolimiter import AsyncLimiter

from .model import Answer, CancelJob, Outcome, Status, Verdict
from .zuora import AuthenticationError, InvoiceState

#: e-invoice states that mean a cancel of ours was already accepted.
CANCEL_ACCEPTED = frozenset({"CancelProcessing", "Cancelled"})

OutcomeSink = Callable[[Outcome], None]


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
        return rng.uniform(0.0, min(self.cap, self.base * 2 ** (attempt - 1)))


class PauseGate:
    """A pool-wide pause: after a 429 nobody starts a request before the deadline Zuora named.

    Waiters wake with a random spread after the deadline so the pool resumes gradually, not
    as one burst that would trip the limit again.
    """

    __slots__ = ("_clock", "_rng", "_spread", "until")

    def __init__(self, clock: Clock, rng: random.Random, spread: float) -> None:
        self._clock = clock
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

    async def wait(self) -> None:
        """Return once the pause (and this waiter's share of the resume spread) is over."""
        while (left := self.until - self._clock.now()) > 0:
            await self._clock.sleep(left + self._rng.uniform(0.0, self._spread))


@dataclass(frozen=True, slots=True)
class Limits:
    """The runner's share of the settings."""

    concurrency: int
    rate: float | None
    max_attempts: int
    backoff: Backoff = Backoff()
    #: seconds to pause the pool after a 429 that names no time
    default_pause: float = 5.0


class Runner:
    """Sends jobs with a fixed pool of workers over a bounded queue, so memory stays flat."""

    def __init__(self, sender: Sender, limits: Limits, run_id: str, track_id_prefix: str = "bc",
                 clock: Clock | None = None, rng: random.Random | None = None,
                 log: structlog.typing.FilteringBoundLogger | None = None) -> None:
        self._sender = sender
        self._limits = limits
        self._track_prefix = f"{track_id_prefix}-{run_id}" if track_id_prefix else run_id
        self._clock = clock or Clock()
        self._rng = rng or random.Random()
        self._log = log or structlog.get_logger("batch_cancel.runner")
        spread = min(1.0, limits.concurrency / limits.rate) if limits.rate else 1.0
        self._gate = PauseGate(self._clock, self._rng, spread)
        self._pacer = AsyncLimiter(1, 1.0 / limits.rate) if limits.rate else None
        self._stopping = False
        self.stop_reason = ""
        self.auth_error: AuthenticationError | None = None
        self.in_flight = 0
        self._sent: set[int] = set()  # rows whose cancel request has been started

    @property
    def paused_until(self) -> float:
        """The clock time before which nobody starts (0 when not paused)."""
        return self._gate.until

    def stop(self, reason: str) -> None:
        """Start no new row; rows not started become `not_attempted`."""
        if not self._stopping:
            self._stopping = True
            self.stop_reason = reason
            self._log.warning("pool.stopping", reason=reason)

    def track_id(self, row: int) -> str:
        """A `Zuora-Track-Id` unique per row and run: prefix, run id, row number."""
        return f"{self._track_prefix}-{row}"

    async def run(self, jobs: Iterable[CancelJob], on_outcome: OutcomeSink) -> None:
        """Send every job and report each outcome exactly once, whatever happens."""
        queue: asyncio.Queue[CancelJob | None] = asyncio.Queue(self._limits.concurrency * 2)
        workers = [asyncio.create_task(self._worker(queue, on_outcome), name=f"worker-{n}")
                   for n in range(self._limits.concurrency)]
        try:
            for job in jobs:
                if self._stopping:
                    on_outcome(self._not_attempted(job))
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
            if self._stopping:
                on_outcome(self._not_attempted(job))
                continue
            self.in_flight += 1
            try:
                outcome = await self._process(job)
            except AuthenticationError as exc:
                self.auth_error = self.auth_error or exc
                self.stop("authentication failed")
                outcome = self._not_attempted(job, str(exc))
            except asyncio.CancelledError:
                sent = job.row in self._sent
                on_outcome(self._interrupted(job) if sent else self._not_attempted(job))
                raise
            except Exception as exc:  # one row's bug must not stop the others
                outcome = Outcome(job.row, Status.FAILED, attempts=0,
                                  error_message=f"unexpected error: {type(exc).__name__}: {exc}",
                                  track_id=self.track_id(job.row), finished_at=_now())
            finally:
                self.in_flight -= 1
                self._sent.discard(job.row)
            on_outcome(outcome)
            self._log.debug("row.finished", row=job.row, status=outcome.status.value,
                            attempts=outcome.attempts, http_status=outcome.http_status,
                            error_code=outcome.error_code)

    async def _start(self) -> None:
        """Wait for the pool-wide pause and the pacer before a request starts."""
        await self._gate.wait()
        if self._pacer is not None:
            await self._pacer.acquire()
            await self._gate.wait()

    async def _process(self, job: CancelJob) -> Outcome:
        """Try one job until it succeeds, fails for good, or runs out of attempts."""
        track_id = self.track_id(job.row)
        attempts = 0
        in_doubt = False
        while True:
            await self._start()
            if in_doubt:
                verified = await self._verify(job, track_id, attempts)
                if verified is not None:
                    return verified
            attempts += 1
            self._sent.add(job.row)
            answer = await self._sender.cancel(job, track_id)
            if answer.verdict is Verdict.SUCCEEDED:
                return Outcome.from_answer(job, answer, attempts, track_id, _now())
            if answer.verdict is Verdict.FINAL or attempts >= self._limits.max_attempts:
                if answer.verdict is Verdict.RETRY:
                    answer = _gave_up(answer, attempts)
                return Outcome.from_answer(job, answer, attempts, track_id, _now())
            in_doubt = answer.in_doubt
            await self._wait_before_retry(job, answer, attempts)

    async def _verify(self, job: CancelJob, track_id: str, attempts: int) -> Outcome | None:
        """After an answer that leaves the cancel in doubt, read the invoice before resending.

        Returns the outcome if the invoice shows the cancel was applied (or can never be), or
        None when a resend is safe. If the invoice cannot be read, a resend is still safe: Zuora
        refuses a second cancel of an e-invoice that is already cancelling.
        """
        state = await self._sender.invoice_state(job.invoice_key, track_id)
        status = state.einvoice_status
        if status in CANCEL_ACCEPTED:
            answer = Answer(Verdict.SUCCEEDED, http_status=state.answer.http_status,
                            zuora_request_id=state.answer.zuora_request_id,
                            error_message=f"verified after retry: eInvoiceStatus is {status}")
            return Outcome.from_answer(job, answer, attempts, track_id, _now())
        if status == "CancelFailed":
            answer = Answer(Verdict.FINAL, http_status=state.answer.http_status,
                            zuora_request_id=state.answer.zuora_request_id,
                            error_message="eInvoiceStatus is CancelFailed after an earlier "
                                          "attempt: the tax authority refused the cancel")
            return Outcome.from_answer(job, answer, attempts, track_id, _now())
        if state.answer.rate_limited:
            self._pause(state.answer, attempts)
        return None

    async def _wait_before_retry(self, job: CancelJob, answer: Answer, attempts: int) -> None:
        if answer.rate_limited:
            delay = self._pause(answer, attempts)
        else:
            delay = self._limits.backoff.delay(attempts, self._rng)
        self._log.info("row.retry_scheduled", row=job.row, attempt=attempts, delay=round(delay, 3),
                       http_status=answer.http_status, error_code=answer.error_code,
                       error_message=answer.error_message[:200])
        if not answer.rate_limited:
            await self._clock.sleep(delay)

    def _pause(self, answer: Answer, attempts: int) -> float:
        """Pause the whole pool for the time Zuora named, else for a backoff delay."""
        delay = answer.retry_after
        if delay is None:
            delay = max(self._limits.default_pause,
                        self._limits.backoff.delay(attempts, self._rng))
        if self._gate.pause(delay):
            self._log.warning("pool.paused", seconds=round(delay, 3),
                              http_status=answer.http_status, error_code=answer.error_code)
        return delay

    def _not_attempted(self, job: CancelJob, why: str = "") -> Outcome:
        return Outcome(job.row, Status.NOT_ATTEMPTED, attempts=0,
                       error_message=why or f"not sent: {self.stop_reason}",
                       track_id=self.track_id(job.row), finished_at=_now())

    def _interrupted(self, job: CancelJob) -> Outcome:
        return Outcome(job.row, Status.FAILED, attempts=0, track_id=self.track_id(job.row),
                       error_message="interrupted while a request was in flight; the cancel may "
                                     "have been applied: check the invoice before re-running",
                       finished_at=_now())


def _gave_up(answer: Answer, attempts: int) -> Answer:
    message = f"{answer.error_message} (gave up after {attempts} attempts)".strip()
    return Answer(Verdict.FINAL, answer.http_status, answer.error_code, message,
                  answer.zuora_request_id, answer.process_id)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
