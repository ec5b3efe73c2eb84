"""After a run: follow each accepted cancel to the tax authority's answer.

A cancel Zuora accepted (`succeeded`) is only on its way: the e-invoice goes `CancelProcessing`
→ `Cancelled`, or `CancelFailed` when the authority refuses. `verify` reads each such invoice
(`GET /v1/invoices/{key}`) politely, under the run's own limits (`send.reads`: pace, window,
429 pause, breaker), in rounds with growing waits, until every one is settled or the `--until`
deadline passes, and writes the report again with the e-invoice columns. Rows that ended
`CancelFailed` get the status `cancel_failed`, so `run REPORT --only cancel_failed` sends them
again.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import structlog

from .config import Settings, Target, tenant_identity
from .events import Events, VerifyFinished, VerifyRound, VerifyStarted
from .logs import LogSubscriber, get_logger
from .model import (
    SETTLED_STATUSES,
    CancelState,
    EInvoiceStatus,
    ExitCode,
    SourceRow,
    Status,
    cancel_state,
    unsettled_hint,
)
from .read.dialect import report_dialect
from .read.loader import LoadedInput, LoadOptions, load
from .record.journal import check_same_tenant, read_journal
from .record.paths import journal_path
from .record.writer import write_report
from .send.reads import InvoiceReads, ReadsOpener, open_reads
from .send.zuora import Credentials

VERIFY_COLUMNS = ("einvoice_status", "einvoice_error_code", "einvoice_error_message",
                  "verified_at", "verify_note")
#: Kept for callers of 0.1: the statuses after which polling stops.
SETTLED = SETTLED_STATUSES
#: Invoice reads in flight at most, by default: verify is a follow-up, not worth the tenant's
#: whole share.
VERIFY_CONCURRENCY = 10
#: Seconds to keep polling, by default, before writing what is known.
VERIFY_UNTIL = 600.0


@dataclass(slots=True)
class VerifyOptions:
    """What `verify` needs: the report, the tenant, and how long and how fast to poll."""

    report_path: Path
    target: Target
    #: None only for the built-in simulator, which `verify` starts itself
    credentials: Credentials | None
    output_path: Path | None = None
    settings: Settings = field(default_factory=lambda: Settings(concurrency=VERIFY_CONCURRENCY))
    until: float = VERIFY_UNTIL
    first_wait: float = 2.0
    max_wait: float = 60.0
    simulator_config: object | None = None  # a SimulatorConfig for target "simulator"
    #: how to open the invoice reader (settings, events): `send.reads.open_reads` on the
    #: target unless given (the seeded simulation gives its in-memory world's)
    reads: ReadsOpener | None = None


@dataclass(slots=True)
class VerifySummary:
    """How the accepted cancels ended."""

    counts: dict[str, int] = field(default_factory=dict)
    checked: int = 0
    report_path: str = ""

    @property
    def all_cancelled(self) -> bool:
        """Every accepted cancel reached `Cancelled`."""
        return self.checked > 0 and self.counts.get("Cancelled", 0) == self.checked

    @property
    def any_refused(self) -> bool:
        """Some cancel ended `CancelFailed`: the tax authority refused it."""
        return self.counts.get(EInvoiceStatus.CANCEL_FAILED, 0) > 0

    @property
    def exit_code(self) -> int:
        """1 when a cancel was refused, 6 while some are still pending, else 0."""
        if self.any_refused:
            return ExitCode.ROWS_FAILED
        return ExitCode.PENDING if self.pending else ExitCode.OK

    @property
    def pending(self) -> int:
        """Accepted cancels not settled yet (in progress, unknown status, or not read)."""
        return self.checked - sum(self.counts.get(s, 0) for s in SETTLED_STATUSES)


def load_report(path: Path) -> LoadedInput:
    """A report with every row carried over as it is (nothing here is ever sent)."""
    loaded = load(path, LoadOptions(only=frozenset()))
    return loaded


def to_check(loaded: LoadedInput) -> list[SourceRow]:
    """Rows whose cancel was accepted and whose e-invoice has not settled yet."""
    return [row for row in loaded.rows
            if row.status is Status.SUCCEEDED
            and row.extra.get("einvoice_status") not in SETTLED_STATUSES]


async def verify_async(options: VerifyOptions, loaded: LoadedInput | None = None
                       ) -> VerifySummary:
    """Poll until every accepted cancel settles or the deadline passes; rewrite the report.

    Refuses (before any request) a report whose journal names another tenant.
    """
    loaded = loaded or load_report(options.report_path)
    journal = journal_path(options.report_path)
    if journal.exists():
        client_id = options.credentials.client_id if options.credentials else ""
        tenant = tenant_identity(options.target, options.settings, client_id)
        check_same_tenant(journal, read_journal(journal).header, tenant, "verify")
    with structlog.contextvars.bound_contextvars(run_id=secrets.token_hex(6)):
        return await _verify(options, loaded)


async def _verify(options: VerifyOptions, loaded: LoadedInput) -> VerifySummary:
    events = Events(LogSubscriber(get_logger("batch_cancel.verify")))
    pending = {row.row: row for row in to_check(loaded)}
    states: dict[int, dict[str, str]] = {}
    deadline = time.monotonic() + options.until
    events.emit(VerifyStarted(str(options.report_path), len(pending)))
    settings = options.settings
    wait = options.first_wait
    opener = options.reads or partial(open_reads, options.target, options.credentials,
                                      options.simulator_config)
    async with opener(settings, events) as reads:
        while pending:
            await _round(reads, pending, states)
            events.emit(VerifyRound(len(pending), len(states)))
            if not pending or time.monotonic() + wait > deadline or reads.stop_reason:
                break
            await asyncio.sleep(wait)  # a 429's pause holds the next round's reads itself
            wait = min(options.max_wait, wait * 2)
    rows = [_with_state(row, states.get(row.row)) for row in loaded.rows]
    columns = loaded.columns + [c for c in VERIFY_COLUMNS if c not in loaded.columns]
    output = options.output_path or options.report_path
    # the report keeps its own dialect: a ;/cp1252 report opens in the same Excel the same way
    write_report(output, columns, rows, {}, dialect=report_dialect(loaded.dialect),
                 events=events)
    summary = VerifySummary(report_path=str(output))
    for row in rows:
        if row.status in (Status.SUCCEEDED, Status.CANCEL_FAILED):
            summary.checked += 1
            status = row.extra.get("einvoice_status") or "unknown"
            summary.counts[status] = summary.counts.get(status, 0) + 1
    events.emit(VerifyFinished(str(output), dict(summary.counts)))
    return summary


async def _round(reads: InvoiceReads, pending: dict[int, SourceRow],
                 states: dict[int, dict[str, str]]) -> None:
    """Read every pending invoice once (again after a 429, under the run's limits); a
    settled one leaves `pending`."""
    answers = await reads.read((row.row, row.invoice_key) for row in pending.values())
    for number, read in answers.items():
        if read.einvoice_status is None:
            continue  # not readable now: try again next round
        states[number] = {
            "einvoice_status": read.einvoice_status,
            "einvoice_error_code": read.einvoice_error_code,
            "einvoice_error_message": read.einvoice_error_message,
            "verified_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "verify_note": verify_note(read.einvoice_status),
        }
        if read.einvoice_status in SETTLED_STATUSES:
            pending.pop(number, None)


def verify_note(status: str) -> str:
    """What the e-invoice status means for the cancel, in words for the report."""
    verdict = cancel_state(status)
    if status == EInvoiceStatus.CANCELLED:
        return "settled: cancelled by the tax authority"
    if verdict is CancelState.REFUSED:
        return "settled: the tax authority refused the cancel"
    if verdict is CancelState.ACCEPTED:
        return "pending: the tax authority has not answered yet"
    if verdict is CancelState.NOT_APPLIED:
        return f"pending: eInvoiceStatus {status} shows no cancel; check the invoice in Zuora"
    return f"pending: {unsettled_hint(status)}"


def _with_state(row: SourceRow, state: dict[str, str] | None) -> SourceRow:
    """The row with its e-invoice columns; a refused cancel becomes `cancel_failed`."""
    if state is None:
        return row
    extra = {**row.extra, **state}
    carried = dict(row.carried or {})
    status = row.status
    if state["einvoice_status"] == "CancelFailed":
        status = Status.CANCEL_FAILED
        carried["status"] = Status.CANCEL_FAILED.value
    return replace(row.with_extra(extra), carried=carried or None, status=status)


def verify(options: VerifyOptions) -> VerifySummary:
    """Synchronous `verify_async`."""
    return asyncio.run(verify_async(options))
