"""The domain: plain typed data that flows file → jobs → outcomes → report.

Nothing here does I/O; every other module speaks in these types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Any


class Status(StrEnum):
    """The final state of one input row, as written in the report's `status` column."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INVALID = "invalid"
    DUPLICATE = "duplicate"
    NOT_ATTEMPTED = "not_attempted"
    #: deliberately not sent, and nothing is left to do: the e-invoice was already cancelled
    #: before this run, or the row is hidden in the sheet; counts as done for the exit code
    SKIPPED = "skipped"
    #: set by `verify`: Zuora accepted the cancel, then the tax authority refused it
    CANCEL_FAILED = "cancel_failed"


class ExitCode(IntEnum):
    """The process exit codes, one table for the CLI, the library and the README."""

    OK = 0
    #: some rows in the run's scope failed, were invalid or were not attempted
    ROWS_FAILED = 1
    #: bad input or usage: nothing was sent
    USAGE = 2
    AUTH = 3
    #: stopped early by an outage or an exhausted daily quota: resume later
    STOPPED = 4
    #: the report could not be written; the journal holds every outcome
    REPORT_UNWRITTEN = 5
    #: verify: no cancel refused, some still pending
    PENDING = 6
    INTERRUPTED = 130


class StopKind(StrEnum):
    """Why a run stopped early; the CLI maps each to an exit code."""

    INTERRUPTED = "interrupted"
    AUTH = "auth"
    OUTAGE = "outage"
    QUOTA = "quota"


#: The exit code of a run that stopped early, by why it stopped (`StopKind`'s values, as
#: `Summary.stop_kind` records them): one table for the CLI, the library and the oracle.
STOP_EXIT_CODES: Mapping[str, ExitCode] = MappingProxyType({
    StopKind.INTERRUPTED: ExitCode.INTERRUPTED,
    StopKind.AUTH: ExitCode.AUTH,
    StopKind.OUTAGE: ExitCode.STOPPED,
    StopKind.QUOTA: ExitCode.STOPPED,
})


class EInvoiceStatus(StrEnum):
    """An invoice's `eInvoiceStatus` as Zuora spells it (the SDK's enum, plus the documented
    "RetrieveTimeout"). Zuora may add values: code reads them as plain strings and treats one
    it does not know as unsettled, never as success or failure (see `cancel_state`)."""

    PROCESSING = "Processing"
    SUCCESS = "Success"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    CONDITIONAL_SUCCESS = "ConditionalSuccess"
    APPROVED_BY_AUTHORITY = "ApprovedByAuthority"
    REJECTED = "Rejected"
    GENERATED = "Generated"
    CANCEL_PROCESSING = "CancelProcessing"
    CANCELLED = "Cancelled"
    CANCEL_FAILED = "CancelFailed"
    RETRIEVE_TIMEOUT = "RetrieveTimeout"


class CancelState(StrEnum):
    """What an `eInvoiceStatus` says of a cancel: the one reading every module shares."""

    #: a cancel was accepted (on its way to, or done by, the tax authority)
    ACCEPTED = "accepted"
    #: the tax authority refused a cancel that Zuora had accepted
    REFUSED = "refused"
    #: no cancel is applied: the e-invoice is in a state of its own
    NOT_APPLIED = "not_applied"
    #: a status batch-cancel does not know, or the vendor is slow: nothing can be concluded
    UNSETTLED = "unsettled"


#: Statuses in which Zuora accepts a cancel (approved e-invoices).
CANCELABLE_STATUSES: frozenset[str] = frozenset({EInvoiceStatus.SUCCESS})
_ACCEPTED = frozenset({EInvoiceStatus.CANCEL_PROCESSING, EInvoiceStatus.CANCELLED})
_NOT_APPLIED = frozenset({
    EInvoiceStatus.PROCESSING, EInvoiceStatus.SUCCESS, EInvoiceStatus.FAILED,
    EInvoiceStatus.SKIPPED, EInvoiceStatus.CONDITIONAL_SUCCESS,
    EInvoiceStatus.APPROVED_BY_AUTHORITY, EInvoiceStatus.REJECTED, EInvoiceStatus.GENERATED,
})
#: Statuses after which the tax authority has had its say: `verify` stops polling.
SETTLED_STATUSES: frozenset[str] = frozenset({EInvoiceStatus.CANCELLED,
                                              EInvoiceStatus.CANCEL_FAILED})


def cancel_state(status: str) -> CancelState:
    """What an `eInvoiceStatus` value says of a cancel; an unknown value is unsettled."""
    if status in _ACCEPTED:
        return CancelState.ACCEPTED
    if status == EInvoiceStatus.CANCEL_FAILED:
        return CancelState.REFUSED
    if status in _NOT_APPLIED:
        return CancelState.NOT_APPLIED
    return CancelState.UNSETTLED


def unsettled_hint(status: str) -> str:
    """What a user can do about an unsettled status (Zuora's own remedy where it has one)."""
    if status == EInvoiceStatus.RETRIEVE_TIMEOUT:
        return ("the tax vendor is slow to answer; run Zuora's \"Resync E-Invoice Status\" "
                "action on the invoice, then verify again")
    return "a status batch-cancel does not know; check the invoice in Zuora"


#: Statuses that leave nothing to do for a row: a run of only these (and duplicates of them)
#: is complete, exit 0.
DONE: frozenset[Status] = frozenset({Status.SUCCEEDED, Status.SKIPPED})

#: The columns that must be present for a file to be read back as a report.
REPORT_SIGNATURE: frozenset[str] = frozenset({"row", "invoice_key", "status"})


@dataclass(frozen=True, slots=True)
class CancelJob:
    """One cancel call to make: what the runner needs, nothing more.

    `in_doubt` marks a row an earlier, interrupted run sent without recording the answer:
    the invoice is read before anything is sent again.
    """

    row: int
    invoice_key: str
    reason: str
    document_reference_id: str = ""
    in_doubt: bool = False
    #: a request of the run this one resumes may have been applied (it was in doubt at some
    #: point, settled or not): a cancel found in place may be ours, never "already cancelled
    #: before this run"
    doubted_before: bool = False


@dataclass(slots=True)
class SourceRow:
    """One data row of the input file, with what the loader made of it.

    `row` is the row number the user sees in the file (the header row is 1). `cells` are the
    input's own cells, in the order of `columns` (unique names), passed through to the report
    untouched; `extra` maps them by name. Every row of a file shares one `columns` tuple, so
    a row costs one tuple of cells rather than a dict. A row that cannot be sent carries its
    final `status` (`invalid`, `duplicate`, or an earlier report's outcome being carried
    over) and `message`; a row to send has `status` None.

    Not frozen: a frozen dataclass sets every field through `object.__setattr__`, which made
    building a million rows cost over a second. Treat rows as values all the same: change
    one with `dataclasses.replace` or `with_extra`, never by assignment.
    """

    row: int
    invoice_key: str
    reason: str
    document_reference_id: str
    cells: tuple[str, ...] = ()
    status: Status | None = None
    message: str = ""
    carried: dict[str, str] | None = None
    duplicate_of: int | None = None
    columns: tuple[str, ...] = ()
    #: an earlier run left this row in doubt (read back from its report): read before sending
    in_doubt: bool = False
    #: sent all the same, but the user should know (e.g. reason 01 without a reference)
    warning: str = ""

    @property
    def extra(self) -> dict[str, str]:
        """The input's own columns by name (a new dict: changing it changes no row)."""
        return dict(zip(self.columns, self.cells, strict=True))

    def with_extra(self, extra: Mapping[str, str]) -> SourceRow:
        """The same row with other pass-through columns (names and cells from `extra`)."""
        return replace(self, cells=tuple(extra.values()), columns=tuple(extra))

    def values_for(self, columns: tuple[str, ...]) -> list[str]:
        """The cells under `columns`, in that order; a column the row lacks is empty.

        The report asks this of every row with the file's own columns: that common case
        copies the tuple instead of building a dict per row (`columns` of a row are unique).
        """
        if columns == self.columns:
            return list(self.cells)
        extra = self.extra
        return [extra.get(c, "") for c in columns]

    @property
    def job(self) -> CancelJob:
        """The cancel call this row asks for."""
        return CancelJob(self.row, self.invoice_key, self.reason, self.document_reference_id,
                         self.in_doubt)


class Verdict(StrEnum):
    """What one HTTP answer means for the row that was sent."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FINAL = "final"


@dataclass(frozen=True, slots=True)
class Answer:
    """One attempt's answer from Zuora, already classified.

    `in_doubt` is true when the cancel may or may not have been applied (timeout, dropped
    connection, 5xx): before sending it again the runner reads the invoice first.
    `retry_after` is the pause Zuora asked for (seconds), `rate_limited` marks a 429, and
    `concurrency_limited` one that refused the request for the tenant's concurrency limit
    (code 50000070) rather than its rate. `token_refused` marks a 401: nothing was applied, the
    client drops the token, and the caller sends again when its limits allow (never the
    client on its own: a resend must wait out a pause and not leave after a stop).
    """

    verdict: Verdict
    http_status: int | None = None
    error_code: str = ""
    error_message: str = ""
    zuora_request_id: str = ""
    process_id: str = ""
    retry_after: float | None = None
    rate_limited: bool = False
    concurrency_limited: bool = False
    in_doubt: bool = False
    quota_remaining: int | None = None
    quota_window: int | None = None
    concurrency_limit: int | None = None
    concurrency_remaining: int | None = None
    #: `RateLimit-Reset`: seconds until the window `quota_remaining` counts resets
    quota_reset: float | None = None
    #: every `(quota, seconds)` window of the `RateLimit-Limit` policy
    rate_windows: tuple[tuple[int, float], ...] = ()
    #: a 401 refused the token; the client's next request gets a new one: the same request
    #: goes again, through the limits like any other, and is not counted as an attempt
    token_refused: bool = False

    @property
    def category(self) -> int | None:
        """Zuora's error category, the last two digits of the reason code."""
        return int(self.error_code) % 100 if self.error_code.isdigit() else None

    @property
    def outage_like(self) -> bool:
        """A failure that says Zuora (or the way to it) is down rather than this row is wrong."""
        if self.verdict is not Verdict.RETRY or self.rate_limited:
            return False
        return self.http_status is None or self.http_status >= 500


@dataclass(frozen=True, slots=True)
class InvoiceState:
    """What `GET /v1/invoices/{key}` says of an invoice's e-invoice."""

    einvoice_status: str | None
    answer: Answer
    einvoice_error_code: str = ""
    einvoice_error_message: str = ""


#: `Outcome` field metadata: where a field goes. `report`: a report column (after the row's
#: own four, in field order); `journal`: a key of the journal's `outcome` record.
_IN_REPORT: Mapping[str, bool] = {"report": True, "journal": True}
_JOURNAL_ONLY: Mapping[str, bool] = {"report": False, "journal": True}
_NEITHER: Mapping[str, bool] = {"report": False, "journal": False}


@dataclass(frozen=True, slots=True)
class Outcome:
    """The final result of one sent (or unsent) job: one report row's status columns.

    Its fields are listed here once; each says (metadata) whether it is a report column and a
    journal key, and `OUTCOME_COLUMNS`, `journal_record` and `report_columns` follow from that.
    """

    row: int = field(metadata=_JOURNAL_ONLY)  # the report takes it from the row's own columns
    status: Status = field(metadata=_IN_REPORT)
    http_status: int | None = field(default=None, metadata=_IN_REPORT)
    error_code: str = field(default="", metadata=_IN_REPORT)
    error_message: str = field(default="", metadata=_IN_REPORT)
    attempts: int = field(default=0, metadata=_IN_REPORT)
    track_id: str = field(default="", metadata=_IN_REPORT)
    zuora_request_id: str = field(default="", metadata=_IN_REPORT)
    process_id: str = field(default="", metadata=_IN_REPORT)
    finished_at: str = field(default="", metadata=_IN_REPORT)
    #: the last request may have been applied and no check settled it: a resume reads the
    #: invoice before sending again
    in_doubt: bool = field(default=False, metadata=_IN_REPORT)
    #: some request for the row was in doubt at some point (settled or not): one that timed
    #: out can still land after a read said it had not. Journal only, not a report column.
    ever_in_doubt: bool = field(default=False, metadata=_JOURNAL_ONLY)
    #: the row a `duplicate` outcome repeats the key of. Never sent, so never journaled; the
    #: report says it in the message, as it always has
    duplicate_of: int | None = field(default=None, metadata=_NEITHER)

    @classmethod
    def from_answer(cls, job: CancelJob, answer: Answer, attempts: int, track_id: str,
                    finished_at: str) -> Outcome:
        """The outcome that the last answer of a job decides."""
        status = Status.SUCCEEDED if answer.verdict is Verdict.SUCCEEDED else Status.FAILED
        return cls(
            row=job.row,
            status=status,
            http_status=answer.http_status,
            error_code=answer.error_code,
            error_message=answer.error_message,
            attempts=attempts,
            track_id=track_id,
            zuora_request_id=answer.zuora_request_id,
            process_id=answer.process_id,
            finished_at=finished_at,
        )

    def journal_record(self) -> dict[str, object]:
        """The journal's `outcome` record of this outcome (without its `event` key)."""
        record: dict[str, object] = {name: getattr(self, name) for name in JOURNAL_FIELDS}
        record["status"] = self.status.value
        return record

    @classmethod
    def from_journal(cls, record: Mapping[str, object]) -> Outcome:
        """The outcome a journal record holds; keys that are not journal fields are ignored."""
        values: dict[str, Any] = {k: v for k, v in record.items() if k in JOURNAL_FIELDS}
        values["status"] = Status(str(values["status"]))
        return cls(**values)

    def report_columns(self) -> dict[str, str]:
        """This outcome's report columns as text, by name, in `OUTCOME_COLUMNS` order."""
        return {name: _cell(getattr(self, name)) for name in OUTCOME_COLUMNS}


def _cell(value: object) -> str:
    """A report cell: nothing for None, `yes` or nothing for a flag, else the value's text."""
    if value is None or value is False:
        return ""
    if value is True:
        return "yes"
    return str(value)  # a Status is a StrEnum: its value


#: The report columns an `Outcome` fills, in order.
OUTCOME_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in fields(Outcome) if f.metadata["report"])
#: The keys of a journal `outcome` record besides `event`, in order.
JOURNAL_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(Outcome) if f.metadata["journal"])
#: The row's own columns every report starts with (what the loader made of the input).
ROW_COLUMNS: tuple[str, ...] = ("row", "invoice_key", "reason", "document_reference_id")
#: The columns batch-cancel adds to every report, in order. A file holding all of them is a report.
REPORT_COLUMNS: tuple[str, ...] = (*ROW_COLUMNS, *OUTCOME_COLUMNS)


@dataclass(slots=True)
class Summary:
    """What a run did, for the closing summary, the exit code and library callers."""

    counts: dict[Status, int] = field(default_factory=dict)
    top_errors: list[tuple[str, int, str]] = field(default_factory=list)
    elapsed: float = 0.0
    sent_rows: int = 0
    report_path: str = ""
    #: every row succeeded or was skipped, or is a duplicate of such a row
    complete: bool = False
    stop_reason: str = ""
    #: why the run stopped early ("interrupted", "auth", "outage", "quota"), "" if it did not
    stop_kind: str = ""
    #: why the report could not be written ("" if it was); the journal holds every outcome
    report_error: str = ""

    @property
    def interrupted(self) -> bool:
        """Ctrl-C or SIGTERM stopped the run."""
        return self.stop_kind == "interrupted"

    @property
    def auth_failed(self) -> bool:
        """Authentication failed and the run stopped."""
        return self.stop_kind == "auth"

    @property
    def total(self) -> int:
        """Rows in the report."""
        return sum(self.counts.values())

    @property
    def rate(self) -> float:
        """Rows sent per second of wall time."""
        return self.sent_rows / self.elapsed if self.elapsed > 0 else 0.0


def exit_code(summary: Summary) -> ExitCode:
    """The process exit code a run's summary stands for (see the README's table): an
    unwritten report first, then why the run stopped early, then whether every row is done."""
    if summary.report_error:
        return ExitCode.REPORT_UNWRITTEN
    if summary.stop_kind:
        return STOP_EXIT_CODES[summary.stop_kind]
    return ExitCode.OK if summary.complete else ExitCode.ROWS_FAILED
