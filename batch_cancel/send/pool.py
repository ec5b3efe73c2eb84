"""The worker pool: a fixed set of workers over a bounded queue, and how a run stops.

It turns `CancelJob`s into `Outcome`s through a `Sender` (the Zuora client) and hands each
outcome to a callback as soon as it is known; it reads no files and writes none. Before each
cancel request a row calls `on_sent`, so the caller can journal the request ahead of its
answer. One row's life is `row.RowLife`; when a request may start is `limits.Limiter`; what
happens is told as events (`events.py`) on the bus the pool is given.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable

from ..events import Events, PoolLoad, PoolStopping, RowFinished
from ..logs import logged_events
from ..model import CancelJob, Outcome, Status, StopKind
from .clock import Clock, Stop
from .limits import Limiter, Limits
from .outcomes import stamped
from .row import RowLife, RowState, Sender, SentSink, WithdrawnSink
from .zuora import AuthenticationError

OutcomeSink = Callable[[Outcome], None]


class Runner:
    """Sends jobs with a fixed pool of workers over a bounded queue, so memory stays flat."""

    def __init__(self, sender: Sender, limits: Limits, run_id: str, track_id_prefix: str = "bc",
                 clock: Clock | None = None, rng: random.Random | None = None,
                 events: Events | None = None, on_sent: SentSink | None = None,
                 on_withdrawn: WithdrawnSink | None = None) -> None:
        self._limits = limits
        self._track_prefix = f"{track_id_prefix}-{run_id}" if track_id_prefix else run_id
        clock = clock or Clock()
        rng = rng or random.Random()
        self._events = events if events is not None else logged_events("batch_cancel.runner")
        self._stop = Stop(clock)
        self._total = 0
        self._finished = 0
        self.limiter = Limiter(limits, clock, rng, self._events, self._stop, self.stop,
                               lambda: self._total - self._finished)
        self.rows = RowLife(sender, self.limiter, limits.retry, clock, rng, self._events,
                            self._stop, self.track_id, on_sent, on_withdrawn)
        self.auth_error: AuthenticationError | None = None

    @property
    def stopping(self) -> bool:
        """Whether the pool has been told to start no new row."""
        return self._stop.is_set

    @property
    def stop_reason(self) -> str:
        """Why the run stopped ("" while it runs)."""
        return self._stop.reason

    @property
    def stop_kind(self) -> StopKind | None:
        """What stopped the run (None while it runs)."""
        return self._stop.kind

    def stop(self, reason: str, kind: StopKind = StopKind.INTERRUPTED) -> None:
        """Start no new row; rows not started become `not_attempted`."""
        if self._stop.set(reason, kind):
            self.limiter.wake_all()
            self._events.emit(PoolStopping(reason, kind.value))

    def track_id(self, row: int) -> str:
        """A `Zuora-Track-Id` unique per row and run: prefix, run id, row number."""
        return f"{self._track_prefix}-{row}"

    async def run(self, jobs: Iterable[CancelJob], on_outcome: OutcomeSink,
                  total: int | None = None) -> None:
        """Send every job and report each outcome exactly once, whatever happens."""
        self._total = total or 0
        queue: asyncio.Queue[CancelJob | None] = asyncio.Queue(self._limits.concurrency * 2)

        def finish(outcome: Outcome, state: RowState) -> None:
            outcome = stamped(outcome, state)
            self._finished += 1
            on_outcome(outcome)
            self._load(outcome.status)

        self._load(None)
        workers = [asyncio.create_task(self._worker(queue, finish), name=f"worker-{n}")
                   for n in range(self._limits.concurrency)]
        feeder = asyncio.create_task(self._feed(jobs, queue, finish, len(workers)),
                                     name="feeder")
        tasks = [feeder, *workers]
        try:
            # a worker that dies (its outcome could not be recorded: a full disk) ends the
            # run with its error, rather than leave the feeder waiting for room in the queue
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            # let cancelled workers report their rows (in flight: in doubt) before returning
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _feed(self, jobs: Iterable[CancelJob], queue: asyncio.Queue[CancelJob | None],
                    finish: Callable[[Outcome, RowState], None], workers: int) -> None:
        """Queue every job, then one end mark per worker; once the run stops, the rows not
        queued yet are reported at once instead."""
        for job in jobs:
            if self.stopping:  # a row in doubt stays in doubt: never plain not_attempted
                state = RowState.of(job)
                finish(self.rows.outcomes.stopped(job, state), state)
                continue
            await queue.put(job)
        for _ in range(workers):
            await queue.put(None)

    async def _worker(self, queue: asyncio.Queue[CancelJob | None],
                      finish: Callable[[Outcome, RowState], None]) -> None:
        outcomes, stop = self.rows.outcomes, self._stop
        while (job := await queue.get()) is not None:
            state = RowState.of(job)
            if stop.is_set:
                finish(outcomes.stopped(job, state), state)
                continue
            try:
                outcome = await self.rows.process(job, state)
            except AuthenticationError as exc:
                self.auth_error = self.auth_error or exc
                self.stop(f"authentication failed: {exc}", StopKind.AUTH)
                outcome = outcomes.stopped(job, state)
            except asyncio.CancelledError:
                finish(outcomes.interrupted(job, state), state)
                raise
            except Exception as exc:  # one row's bug must not stop the others
                outcome = outcomes.plain(job, state, Status.FAILED,
                                         f"unexpected error: {type(exc).__name__}: {exc}",
                                         in_doubt=state.in_flight or state.doubt)
            finish(outcome, state)
            if self._events.wants(RowFinished):  # debug level: usually nobody listens
                self._events.emit(RowFinished(job.row, outcome.status.value, outcome.attempts,
                                              outcome.http_status, outcome.error_code))

    def _load(self, status: Status | None) -> None:
        """Tell subscribers the pool's load (a progress display), and the status of the row
        that just got its outcome, if one did."""
        window, pace = self.limiter.window, self.limiter.pace
        self._events.emit(PoolLoad(None if status is None else status.value,
                                   window.in_flight, window.size, pace.rate, pace.source))
