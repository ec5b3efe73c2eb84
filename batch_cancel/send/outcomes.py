"""How a row's outcome is worded: from an answer, from a read of the invoice, or from a stop.

Every builder takes what the worker knows of the row (`row.RowState`), so a row stopped in the
middle is never reported plainer than it is: a request that may have been applied keeps the
row in doubt, whatever stopped the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..model import Answer, CancelJob, InvoiceState, Outcome, Status, Verdict, unsettled_hint
from .clock import Stop

if TYPE_CHECKING:
    from .row import RowState


class Outcomes:
    """Builds outcomes with the run's track ids and its stop reason."""

    def __init__(self, track_id: Callable[[int], str], stop: Stop) -> None:
        self._track_id = track_id
        self._stop = stop

    def answered(self, job: CancelJob, state: RowState, answer: Answer) -> Outcome:
        """The outcome Zuora's answer states."""
        return Outcome.from_answer(job, answer, state.attempts, self._track_id(job.row), now())

    def gave_up(self, job: CancelJob, state: RowState, answer: Answer) -> Outcome:
        """Out of attempts: the last answer, final, saying so (and still in doubt if it was)."""
        message = f"{answer.error_message} (gave up after {state.attempts} attempts)".strip()
        outcome = Outcome.from_answer(job, replace(answer, verdict=Verdict.FINAL,
                                                   error_message=message),
                                      state.attempts, self._track_id(job.row), now())
        return replace(outcome, in_doubt=state.doubt)

    def read(self, job: CancelJob, state: RowState, read: InvoiceState, status: Status,
             message: str) -> Outcome:
        """An outcome a read of the invoice decided: the doubt is over."""
        state.doubt = False
        answer = read.answer
        return Outcome(job.row, status, answer.http_status, read.einvoice_error_code, message,
                       state.attempts, self._track_id(job.row), answer.zuora_request_id,
                       answer.process_id, now())

    def unsettled(self, job: CancelJob, state: RowState, read: InvoiceState) -> Outcome:
        """The read could not settle the doubt: failed, still in doubt, and not sent again."""
        status = read.einvoice_status
        if status is None:
            why = f"the invoice could not be read ({read.answer.error_message or 'no answer'})"
        else:
            why = f"eInvoiceStatus is {status}: {unsettled_hint(status)}"
        answer = read.answer
        return Outcome(job.row, Status.FAILED, answer.http_status, answer.error_code,
                       f"in doubt, not sent again: {why}; --resume reads it first",
                       state.attempts, self._track_id(job.row), answer.zuora_request_id,
                       answer.process_id, now(), in_doubt=True)

    def plain(self, job: CancelJob, state: RowState, status: Status, message: str,
              in_doubt: bool = False) -> Outcome:
        """`status` and `message`, with the last answer's details if there was one."""
        last = state.last or Answer(Verdict.FINAL)
        return Outcome(job.row, status, last.http_status, last.error_code, message,
                       state.attempts, self._track_id(job.row), last.zuora_request_id,
                       last.process_id, now(), in_doubt)

    def stopped(self, job: CancelJob, state: RowState) -> Outcome:
        """A row the run stopped in the middle of: unsent, or in doubt, or surely not applied."""
        reason = self._stop.reason
        if state.doubt:
            return self.plain(job, state, Status.FAILED,
                              f"in doubt: stopped ({reason}) before the earlier request "
                              "could be checked; --resume checks it first", in_doubt=True)
        if state.attempts == 0:
            return self.plain(job, state, Status.NOT_ATTEMPTED,
                              f"not sent: {reason or 'the run stopped'}")
        last = state.last.error_message if state.last else ""
        return self.plain(job, state, Status.NOT_ATTEMPTED,
                          f"not cancelled: stopped ({reason}) before a retry; "
                          f"last answer: {last}")

    def interrupted(self, job: CancelJob, state: RowState) -> Outcome:
        """A row whose worker was cancelled: in doubt if a request was on its way."""
        if state.in_flight or state.doubt:
            return self.plain(job, state, Status.FAILED,
                              "in doubt: interrupted while a request was in flight; the "
                              "cancel may have been applied (--resume checks it first)",
                              in_doubt=True)
        return self.stopped(job, state)


def stamped(outcome: Outcome, state: RowState) -> Outcome:
    """The outcome with what the journal must remember for a resume: whether any request for
    the row was in doubt (a cancel found in place later may then be ours)."""
    ever = state.ever_doubt or outcome.in_doubt
    return replace(outcome, ever_in_doubt=True) if ever else outcome


def now() -> str:
    """The wall-clock time an outcome is stamped with (UTC, milliseconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
