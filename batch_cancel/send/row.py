"""One row's life: its attempts, the waits between them, the in-doubt read, and its outcome.

A cancel that may have been applied is never sent again before a read of the invoice says it
was not: that read is the only guard, since the PUT has no idempotency key. How long a row
keeps trying is its `RetryPolicy`; when it may start is the pool's `Limiter`.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from ..events import Events, RowRetryScheduled
from ..model import (
    Answer,
    CancelJob,
    CancelState,
    InvoiceState,
    Outcome,
    Status,
    Verdict,
    cancel_state,
)
from .clock import Clock, Stop
from .limits import Limiter
from .outcomes import Outcomes
from .retry import RetryPolicy

#: Zuora's category for a business-rule refusal, e.g. "already cancelling".
CATEGORY_RULE = 30
#: Zuora's category for "not found".
CATEGORY_NOT_FOUND = 40

#: Called before each cancel request; when it returns an awaitable, the request waits for it
#: (the journal's record reaching the OS).
SentSink = Callable[[CancelJob, int, str], Awaitable[None] | None]
#: Called when the request of the latest `sent` record will not leave after all.
WithdrawnSink = Callable[[CancelJob, int], None]

REFUSED_AFTER_ATTEMPT = ("eInvoiceStatus is CancelFailed after an earlier attempt: the tax "
                         "authority refused the cancel")


class Sender(Protocol):
    """What the runner needs from a Zuora client (`ready`: hold a live token, so a request
    sent next leaves at once)."""

    async def ready(self) -> None: ...
    async def cancel(self, job: CancelJob, track_id: str) -> Answer: ...
    async def invoice_state(self, key: str, track_id: str) -> InvoiceState: ...


@dataclass(slots=True)
class RowState:
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
    #: clock time of the row's first request (its retry budget counts from there)
    first_sent: float | None = None

    @classmethod
    def of(cls, job: CancelJob) -> RowState:
        """The state a job starts in: in doubt if an earlier run left it so."""
        return cls(doubt=job.in_doubt, ever_doubt=job.in_doubt or job.doubted_before)


class RowLife:
    """Takes one job from its first request to its outcome, on the pool's limits."""

    def __init__(self, sender: Sender, limiter: Limiter, policy: RetryPolicy, clock: Clock,
                 rng: random.Random, events: Events, stop: Stop,
                 track_id: Callable[[int], str], on_sent: SentSink | None = None,
                 on_withdrawn: WithdrawnSink | None = None) -> None:
        self._sender = sender
        self._limiter = limiter
        self._policy = policy
        self._clock = clock
        self._rng = rng
        self._events = events
        self._stop = stop
        self.track_id = track_id
        self.on_sent = on_sent
        self.on_withdrawn = on_withdrawn
        self.outcomes = Outcomes(track_id, stop)

    async def process(self, job: CancelJob, state: RowState) -> Outcome:
        """Try one job until it succeeds, fails for good, runs out of attempts or budget, or
        the run stops."""
        track_id = self.track_id(job.row)
        resumed = job.in_doubt or job.doubted_before
        label = "verified after resume" if resumed else "verified after retry"
        counted = 0  # attempts that count against --max-attempts
        while True:
            if state.doubt:
                settled = await self.settle_doubt(job, track_id, state, label)
                if settled is not None:
                    return settled
            answer = await self._attempt(job, track_id, state)
            if answer is None:
                if self._stop.is_set:
                    return self.outcomes.stopped(job, state)
                continue  # a 429 paused the pool while the journal took the record
            if answer.token_refused:
                continue  # a 401 and a new token: nothing applied, the same request again
            if answer.verdict is Verdict.SUCCEEDED:
                return self.outcomes.answered(job, state, answer)
            if answer.in_doubt or (answer.category == CATEGORY_RULE and state.ever_doubt):
                state.doubt = state.ever_doubt = True
            if answer.verdict is Verdict.FINAL:
                if answer.category == CATEGORY_RULE or answer.in_doubt:
                    return await self._final_check(job, track_id, state, answer, label)
                return self.outcomes.answered(job, state, answer)
            counted += self._limiter.counts(answer)
            if not await self._wait_before_retry(job, answer, state, counted):
                return await self._give_up(job, track_id, state, answer, label)

    async def _attempt(self, job: CancelJob, track_id: str, state: RowState) -> Answer | None:
        """Send one cancel once the limits allow, journalled first; None if it did not leave
        (the run stopped, or a 429 paused the pool while the journal took the record)."""
        ticket = await self._limiter.wait_can_start()
        if ticket is None:
            return None
        state.attempts += 1
        if state.first_sent is None:
            state.first_sent = self._clock.now()
        try:
            if self.on_sent is not None:
                recorded = self.on_sent(job, state.attempts, track_id)
                if recorded is not None:
                    await recorded
        except BaseException:  # the request never left: nothing is in doubt
            self._withdraw(job, state)
            self._limiter.give_back(ticket)
            raise
        try:
            leaves = await self._limiter.may_leave(ticket, self._sender.ready)
        except BaseException:  # no token: the request never left (its place is back)
            self._withdraw(job, state)
            raise
        if not leaves:
            # stopped, or a 429 paused the pool, while the journal took the record or a
            # token came: this request does not go out, and the journal says so
            self._withdraw(job, state)
            return None
        state.in_flight = True
        self._limiter.started(ticket)
        try:
            answer = await self._sender.cancel(job, track_id)
        except BaseException:  # no answer came: the row stays in flight, hence in doubt
            self._limiter.finished(ticket, None)
            raise
        state.in_flight = False
        state.last = answer
        self._limiter.finished(ticket, answer)
        return answer

    def _withdraw(self, job: CancelJob, state: RowState) -> None:
        """The request of the latest `sent` record will not leave: void that record."""
        if self.on_withdrawn is not None:
            self.on_withdrawn(job, state.attempts)
        state.attempts -= 1

    async def _wait_before_retry(self, job: CancelJob, answer: Answer, state: RowState,
                                 counted: int) -> bool:
        """Wait before the next attempt (the pool's hold, else the policy's backoff); False
        when the policy says give up instead (out of attempts, or past its budget)."""
        elapsed = self._elapsed(state)
        if self._policy.exhausted(counted, elapsed):
            return False
        held = self._limiter.holding(answer)
        delay = held if held is not None else self._policy.delay(state.attempts, self._rng)
        if self._policy.exhausted(counted, elapsed, delay):
            return False
        self._events.emit(RowRetryScheduled(job.row, state.attempts, round(delay, 3),
                                            answer.http_status, answer.error_code,
                                            answer.error_message[:200]))
        if held is None:
            await self._stop.nap(delay)
        return True

    def _elapsed(self, state: RowState) -> float:
        first = state.first_sent
        return 0.0 if first is None else self._clock.now() - first

    # --- reading the invoice ------------------------------------------------------------

    async def _read_invoice(self, job: CancelJob, track_id: str,
                            state: RowState) -> InvoiceState | Outcome:
        """Read the invoice, retrying a read that met a 429, a 5xx or no answer (up to
        --max-attempts reads, with backoff); an outcome if the run stopped meanwhile."""
        reads = 0
        while True:
            ticket = await self._limiter.wait_can_start()
            if ticket is None:
                return self.outcomes.stopped(job, state)
            if not await self._limiter.may_leave(ticket, self._sender.ready):
                continue  # a pause came while a token did: wait it out (or stop) first
            self._limiter.started(ticket)
            try:
                read = await self._sender.invoice_state(job.invoice_key, track_id)
            except BaseException:
                self._limiter.finished(ticket, None)
                raise
            self._limiter.finished(ticket, read.answer, cancel=False)
            if read.answer.token_refused:
                continue  # a 401 and a new token: read again, not counted
            reads += 1
            if (read.einvoice_status is not None or read.answer.verdict is not Verdict.RETRY
                    or reads >= self._policy.max_attempts):
                return read
            if not self._limiter.paused():  # else a 429 paused the pool already
                await self._stop.nap(self._policy.delay(reads, self._rng))

    async def settle_doubt(self, job: CancelJob, track_id: str, state: RowState,
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
            return self.outcomes.read(job, state, read, Status.SUCCEEDED,
                                      f"{label}: eInvoiceStatus is {status}")
        if verdict is CancelState.REFUSED:
            return self.outcomes.read(job, state, read, Status.FAILED, REFUSED_AFTER_ATTEMPT)
        return self.outcomes.unsettled(job, state, read)

    async def _final_check(self, job: CancelJob, track_id: str, state: RowState,
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
            return self.outcomes.read(job, state, read, Status.SUCCEEDED,
                                      f"{label}: eInvoiceStatus is {status}")
        if verdict is CancelState.ACCEPTED:
            return self.outcomes.read(job, state, read, Status.SKIPPED,
                                      f"already {status} before this run; not sent again")
        if verdict is CancelState.REFUSED and state.ever_doubt:
            return self.outcomes.read(job, state, read, Status.FAILED, REFUSED_AFTER_ATTEMPT)
        if state.doubt and verdict in (None, CancelState.UNSETTLED):
            return self.outcomes.unsettled(job, state, read)
        if verdict is not None:
            state.doubt = False  # the invoice says where it stands: the refusal is the answer
        return replace(self.outcomes.answered(job, state, answer), in_doubt=state.doubt)

    async def _give_up(self, job: CancelJob, track_id: str, state: RowState, answer: Answer,
                       label: str) -> Outcome:
        """Out of attempts: if the last answer left the cancel in doubt, read the invoice first."""
        if state.doubt and not self._stop.is_set:
            settled = await self.settle_doubt(job, track_id, state, label)
            if settled is not None:
                return settled
        return self.outcomes.gave_up(job, state, answer)
