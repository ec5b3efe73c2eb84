"""How a row's outcome is worded, built directly from what a worker knows of the row: from an
answer, a read of the invoice, a stop, or a worker cancelled mid-request."""

from __future__ import annotations

import re
from dataclasses import replace

from batch_cancel.model import Answer, CancelJob, InvoiceState, Outcome, Status, StopKind, Verdict
from batch_cancel.send.clock import Stop
from batch_cancel.send.outcomes import Outcomes, now, stamped
from batch_cancel.send.row import RowState
from tests.helpers import FakeClock

JOB = CancelJob(7, "INV00007", "02")
TRACK = "bc-run1-7"
LAST = Answer(Verdict.RETRY, 503, "E5", "Service Unavailable", zuora_request_id="R1",
              process_id="P1", in_doubt=True)
READ = InvoiceState("RetrieveTimeout", Answer(Verdict.SUCCEEDED, 200, "",
                                               zuora_request_id="R2", process_id="P2"),
                    einvoice_error_code="TAX-1")


def outcomes(reason: str = "") -> Outcomes:
    stop = Stop(FakeClock())
    if reason:
        stop.set(reason, StopKind.INTERRUPTED)
    return Outcomes(lambda row: f"bc-run1-{row}", stop)


def plain(outcome: Outcome) -> Outcome:
    """The outcome without its wall-clock stamp."""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", outcome.finished_at)
    return replace(outcome, finished_at="")


def test_an_answer_decides_the_outcome() -> None:
    ok = Answer(Verdict.SUCCEEDED, 200, zuora_request_id="R9", process_id="P9")
    assert plain(outcomes().answered(JOB, RowState(attempts=2), ok)) == Outcome(
        7, Status.SUCCEEDED, 200, "", "", 2, TRACK, "R9", "P9", "")


def test_giving_up_says_after_how_many_attempts_and_keeps_the_doubt() -> None:
    state = RowState(attempts=3, doubt=True)
    assert plain(outcomes().gave_up(JOB, state, LAST)) == Outcome(
        7, Status.FAILED, 503, "E5", "Service Unavailable (gave up after 3 attempts)", 3,
        TRACK, "R1", "P1", "", in_doubt=True)


def test_giving_up_on_an_answer_without_a_message_is_not_padded() -> None:
    bare = replace(LAST, error_message="")
    result = outcomes().gave_up(JOB, RowState(attempts=1), bare)
    assert (result.error_message, result.in_doubt) == ("(gave up after 1 attempts)", False)


def test_a_read_decides_the_outcome_and_ends_the_doubt() -> None:
    state = RowState(attempts=1, doubt=True)
    assert plain(outcomes().read(JOB, state, READ, Status.SUCCEEDED, "verified")) == Outcome(
        7, Status.SUCCEEDED, 200, "TAX-1", "verified", 1, TRACK, "R2", "P2", "")
    assert state.doubt is False


def test_an_unsettled_status_stays_in_doubt_with_its_hint() -> None:
    result = plain(outcomes().unsettled(JOB, RowState(attempts=1, doubt=True), READ))
    assert result == Outcome(
        7, Status.FAILED, 200, "", "in doubt, not sent again: eInvoiceStatus is "
        "RetrieveTimeout: the tax vendor is slow to answer; run Zuora's \"Resync E-Invoice "
        "Status\" action on the invoice, then verify again; --resume reads it first", 1, TRACK,
        "R2", "P2", "", in_doubt=True)


def test_an_unreadable_invoice_stays_in_doubt_with_why() -> None:
    unread = InvoiceState(None, LAST)
    message = outcomes().unsettled(JOB, RowState(attempts=1), unread).error_message
    assert message == ("in doubt, not sent again: the invoice could not be read "
                       "(Service Unavailable); --resume reads it first")
    silent = InvoiceState(None, replace(LAST, error_message=""))
    assert outcomes().unsettled(JOB, RowState(), silent).error_message == (
        "in doubt, not sent again: the invoice could not be read (no answer); "
        "--resume reads it first")


def test_a_plain_outcome_without_an_answer_has_no_http_details() -> None:
    assert plain(outcomes().plain(JOB, RowState(), Status.FAILED, "boom")) == Outcome(
        7, Status.FAILED, None, "", "boom", 0, TRACK, "", "", "", in_doubt=False)


def test_a_plain_outcome_carries_the_last_answer() -> None:
    state = RowState(attempts=2, last=LAST)
    assert plain(outcomes().plain(JOB, state, Status.FAILED, "boom", in_doubt=True)) == Outcome(
        7, Status.FAILED, 503, "E5", "boom", 2, TRACK, "R1", "P1", "", in_doubt=True)


def test_a_row_stopped_in_doubt_stays_in_doubt() -> None:
    result = outcomes("user interrupt").stopped(JOB, RowState(doubt=True))
    assert (result.status, result.in_doubt, result.error_message) == (
        Status.FAILED, True, "in doubt: stopped (user interrupt) before the earlier request "
        "could be checked; --resume checks it first")


def test_a_row_stopped_before_its_first_request_was_not_sent() -> None:
    assert outcomes("user interrupt").stopped(JOB, RowState()).error_message == (
        "not sent: user interrupt")
    assert outcomes().stopped(JOB, RowState()).error_message == "not sent: the run stopped"
    assert outcomes().stopped(JOB, RowState()).status is Status.NOT_ATTEMPTED


def test_a_row_stopped_before_a_retry_names_its_last_answer() -> None:
    state = RowState(attempts=1, last=replace(LAST, in_doubt=False))
    result = outcomes("quota").stopped(JOB, state)
    assert (result.status, result.in_doubt, result.error_message) == (
        Status.NOT_ATTEMPTED, False,
        "not cancelled: stopped (quota) before a retry; last answer: Service Unavailable")
    assert outcomes("quota").stopped(JOB, RowState(attempts=1)).error_message == (
        "not cancelled: stopped (quota) before a retry; last answer: ")


def test_a_worker_cancelled_mid_request_leaves_the_row_in_doubt() -> None:
    for state in (RowState(attempts=1, in_flight=True), RowState(attempts=1, doubt=True)):
        result = outcomes("user interrupt").interrupted(JOB, state)
        assert (result.status, result.in_doubt, result.error_message) == (
            Status.FAILED, True, "in doubt: interrupted while a request was in flight; the "
            "cancel may have been applied (--resume checks it first)")


def test_a_worker_cancelled_between_requests_is_a_stopped_row() -> None:
    result = outcomes("user interrupt").interrupted(JOB, RowState(attempts=1))
    assert (result.status, result.in_doubt) == (Status.NOT_ATTEMPTED, False)


def test_the_journal_remembers_any_doubt_the_row_ever_had() -> None:
    settled = Outcome(7, Status.SUCCEEDED)
    assert stamped(settled, RowState(ever_doubt=True)).ever_in_doubt is True
    assert stamped(replace(settled, in_doubt=True), RowState()).ever_in_doubt is True
    assert stamped(settled, RowState()) is settled


def test_outcomes_are_stamped_in_utc_to_the_millisecond() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now())
