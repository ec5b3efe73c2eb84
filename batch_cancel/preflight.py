"""`preflight`: what a run would do with an input, row by row, and how long it would take;
`run --dry-run` makes the same plan.

`preflight` validates the file exactly as `run` does; with `check_invoices` it also reads every
sendable invoice (under the run's own limits: pace, window, 429 pause, breaker) and says per
row: cancelable (`eInvoiceStatus` Success), already cancelled or in progress, not found, or not
in a cancelable state. It writes a report in the run's format: cancelable rows are
`not_attempted` (so `run PREFLIGHT-REPORT --only not_attempted` sends exactly those), rows
already cancelled or in progress `skipped` (nothing left to do), the others `failed` with the
reason, and a `preflight` column holds the verdict.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Settings, Target
from .model import (
    CancelState,
    EInvoiceStatus,
    ExitCode,
    InvoiceState,
    Outcome,
    SourceRow,
    Status,
    Summary,
    cancel_state,
)
from .progress import pace_text
from .read.dialect import plan_note, report_dialect
from .read.loader import InputError, LoadedInput, LoadOptions, load
from .record.writer import write_report
from .send.flow import ASSUMED_TENANT_LIMIT
from .send.pace import Source
from .send.reads import ReadsOpener, open_reads
from .send.zuora import Credentials

if TYPE_CHECKING:
    import pandas

CANCELABLE = "cancelable"
ALREADY = "already_cancelled_or_in_progress"
NOT_FOUND = "not_found"
NOT_CANCELABLE = "not_cancelable"
UNKNOWN = "unknown"
#: Seconds a cancel is assumed to take when no invoice was read to measure it.
ASSUMED_LATENCY = 0.5


@dataclass(slots=True)
class PreflightResult:
    """The plan: verdicts per row, counts, and the estimated duration of the run."""

    verdicts: dict[int, str] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    to_send: int = 0
    estimated_seconds: float = 0.0
    latency: float = ASSUMED_LATENCY
    #: the pace the estimate assumes (None: unpaced) and where it came from (`pace.Source`):
    #: with `check_invoices`, what the reads' answers taught the limiter, as in a run
    rate: float | None = None
    pace_source: str = Source.UNPACED
    #: whether the pace was learned from the reads (False: the flag or the target's default)
    pace_learned: bool = False
    #: the plan report's counts per status (None when no report was written)
    plan: Summary | None = None
    #: 0 when every row can be sent (or is deliberately not), 1 when some are invalid
    exit_code: int = ExitCode.OK


@dataclass(slots=True)
class PreflightOptions:
    """What one preflight needs: the input (a path or a DataFrame), the tenant, how to read
    the input and how fast to read Zuora; `check_invoices` reads every invoice."""

    source: Path | pandas.DataFrame
    target: Target
    credentials: Credentials | None = None
    report_path: Path | None = None
    load: LoadOptions = field(default_factory=LoadOptions)
    settings: Settings = field(default_factory=Settings)
    check_invoices: bool = False
    simulator_config: object | None = None  # a SimulatorConfig for target "simulator"
    #: how to open the invoice reader: `send.reads.open_reads` on the target unless given
    reads: ReadsOpener | None = None

    @property
    def report(self) -> Path:
        """`<input stem>.preflight.csv` beside the input, unless named."""
        if self.report_path is not None:
            return self.report_path
        if not isinstance(self.source, Path):
            raise InputError("a DataFrame input needs a report path for its plan")
        return self.source.with_name(f"{self.source.stem}.preflight.csv")

    @property
    def rate(self) -> float | None:
        """The pace of the reads: --rate, else the target's default."""
        return self.target.start_rate(self.settings.rate)


def load_input(options: PreflightOptions) -> LoadedInput:
    """Read and validate the input exactly as `run` would; the plan note names the report."""
    if isinstance(options.source, Path):
        loaded = load(options.source, options.load)
    else:
        from .read.frames import load_frame

        loaded = load_frame(options.source, options.load, options.load.numbers_as_text)
    note = plan_note(loaded.dialect, options.report)
    loaded.notes.extend([note] if note else [])
    return loaded


def preflight(options: PreflightOptions, loaded: LoadedInput | None = None) -> PreflightResult:
    """The plan of a run, synchronously (see `preflight_async`)."""
    return asyncio.run(preflight_async(options, loaded))


async def preflight_async(options: PreflightOptions, loaded: LoadedInput | None = None
                          ) -> PreflightResult:
    """The plan of a run, written as a report: with `check_invoices`, every sendable invoice
    is read once; without, nothing is sent at all. `loaded` is the input `load_input` read
    (read here when not given)."""
    loaded = loaded or load_input(options)
    if not options.check_invoices:
        result = unchecked(loaded, options.settings, options.rate, options.report)
    elif options.credentials is None and options.target.name != "simulator":
        raise InputError("check_invoices needs credentials (ZUORA_CLIENT_ID and "
                         "ZUORA_CLIENT_SECRET)")
    else:
        result = await check_async(loaded, options)
    result.exit_code = plan_exit_code(loaded)
    return result


def verdict_of(state: InvoiceState) -> tuple[str, str]:
    """The verdict for one read invoice, and a message for the report."""
    status = state.einvoice_status
    if status == EInvoiceStatus.SUCCESS:
        return CANCELABLE, ""
    if status is not None and cancel_state(status) is CancelState.ACCEPTED:
        return ALREADY, f"already {status} before this run; nothing to send"
    if state.answer.http_status == 404 or (state.answer.category == 40):
        return NOT_FOUND, state.answer.error_message or "invoice not found"
    if status is None:
        return UNKNOWN, state.answer.error_message or "the invoice could not be read"
    return NOT_CANCELABLE, f"eInvoiceStatus is {status}: not cancelable"


def window_of(settings: Settings) -> int:
    """Requests in flight at most: --concurrency, within --tenant-share of Zuora's limit."""
    return max(1, min(settings.concurrency,
                      math.floor(settings.tenant_share * ASSUMED_TENANT_LIMIT)))


def estimate(rows: int, settings: Settings, rate: float | None, latency: float) -> float:
    """Seconds a run of `rows` cancels takes under the tenant's limits (window / latency, rate)."""
    per_second = window_of(settings) / max(latency, 1e-3)
    if rate:
        per_second = min(per_second, rate)
    return rows / per_second


async def check_async(loaded: LoadedInput, options: PreflightOptions) -> PreflightResult:
    """Read every sendable invoice once (again after a 429) and write the preflight report."""
    result = PreflightResult()
    rows = list(loaded.to_send())
    window = window_of(options.settings)
    started = time.monotonic()
    states, (result.rate, result.pace_source) = await _read_all(options, rows)
    elapsed = time.monotonic() - started
    result.pace_learned = bool(rows)
    if rows:  # the reads ran `window` at a time: their mean latency, roughly
        result.latency = max(elapsed * min(window, len(rows)) / len(rows), 1e-3)
    outcomes: dict[int, Outcome] = {}
    for row in rows:
        state = states.get(row.row)
        verdict, outcomes[row.row] = _verdict_outcome(row.row, state)
        result.verdicts[row.row] = verdict
        result.counts[verdict] += 1
    result.to_send = result.counts[CANCELABLE]
    result.estimated_seconds = estimate(result.to_send, options.settings, result.rate,
                                        result.latency)
    result.plan = write_plan(options.report, loaded, outcomes, result.verdicts)
    return result


async def _read_all(options: PreflightOptions, rows: list[SourceRow]
                    ) -> tuple[dict[int, InvoiceState], tuple[float | None, str]]:
    """Each row's invoice, read under the run's limits (`send.reads`): its pace, window,
    429 pause and breaker; rows answered 429 are read again after the pause, up to
    --max-attempts reads. Also the pace the answers taught (rate, source): a read sees
    the tenant's RateLimit headers as a cancel does, so the run's pace is known."""
    opener = options.reads or partial(open_reads, options.target, options.credentials,
                                      options.simulator_config)
    async with opener(options.settings, None) as reads:
        states = await reads.read((row.row, row.invoice_key) for row in rows)
        return states, reads.pace


def start_pace(rate_flag: float | None, target_default: float | None
               ) -> tuple[float | None, str]:
    """The pace a run starts at before any answer (rate, source), as `run`'s plan names it."""
    if rate_flag is not None:
        return rate_flag, Source.FLAG
    if target_default is not None:
        return target_default, Source.DEFAULT
    return None, Source.UNPACED


def pace_line(result: PreflightResult) -> str:
    """The plan's `Pace:` line: the pace the estimate assumes, and where it came from."""
    pace = pace_text(result.rate, result.pace_source)
    if not result.pace_learned:
        return f"Pace: {pace}, not learned: no invoice read (--check-invoices reads them)"
    if result.pace_source in (Source.DEFAULT, Source.UNPACED):
        return f"Pace: {pace}: no answer to the invoice reads named a RateLimit policy"
    if result.pace_source == Source.FLAG:
        return f"Pace: {pace}: --rate, below what the answers to the invoice reads allow"
    return f"Pace: {pace}, learned from the answers to the invoice reads"


def _verdict_outcome(number: int, state: InvoiceState | None) -> tuple[str, Outcome]:
    """A row's verdict, and its line in the plan report."""
    verdict, message = verdict_of(state) if state else (UNKNOWN, "not read (429s)")
    status = _PLAN_STATUS.get(verdict, Status.FAILED)
    answer = state.answer if state else None
    return verdict, Outcome(
        number, status, answer.http_status if answer else None,
        answer.error_code if answer and verdict in (NOT_FOUND, UNKNOWN) else "",
        message or "cancelable: eInvoiceStatus is Success",
        zuora_request_id=answer.zuora_request_id if answer else "")


#: A verdict's status in the plan report; the rest are `failed` with the reason.
_PLAN_STATUS = {CANCELABLE: Status.NOT_ATTEMPTED, ALREADY: Status.SKIPPED}


def unchecked(loaded: LoadedInput, settings: Settings, rate: float | None,
              report_path: Path | None) -> PreflightResult:
    """The plan without reading Zuora: every valid row counts as to send. `preflight`
    without `--check-invoices` and `run --dry-run` both make it here."""
    rows = list(loaded.to_send())
    result = PreflightResult(to_send=len(rows), rate=rate,
                             pace_source=start_pace(settings.rate, rate)[1])
    result.estimated_seconds = estimate(len(rows), settings, rate, result.latency)
    if report_path is not None:
        result.plan = write_plan(report_path, loaded, NotChecked(row.row for row in rows), {})
    return result


class NotChecked(Mapping[int, Outcome]):
    """Each row to send's plan outcome (`not_attempted`, valid, not checked), made when the
    report asks for it: a million rows' outcomes built at once held some 300 MB."""

    MESSAGE = "valid; not checked against Zuora"

    def __init__(self, numbers: Iterator[int]) -> None:
        self._numbers = array("q", sorted(numbers))

    def __getitem__(self, number: int) -> Outcome:
        at = bisect_left(self._numbers, number)
        if at == len(self._numbers) or self._numbers[at] != number:
            raise KeyError(number)
        return Outcome(number, Status.NOT_ATTEMPTED, error_message=self.MESSAGE)

    def __iter__(self) -> Iterator[int]:
        return iter(self._numbers)

    def __len__(self) -> int:
        return len(self._numbers)


def write_plan(path: Path, loaded: LoadedInput, outcomes: Mapping[int, Outcome],
               verdicts: dict[int, str]) -> Summary:
    """The preflight report: the run's format plus a `preflight` verdict column."""
    columns = [*loaded.columns, *(["preflight"] if "preflight" not in loaded.columns else [])]
    marked = loaded.rows
    if verdicts or "preflight" in loaded.columns:  # else every row's verdict cell is empty
        marked = [_with_verdict(row, verdicts.get(row.row)) for row in loaded.rows]
    return write_report(path, columns, marked, outcomes,
                        dialect=report_dialect(loaded.dialect))


def plan_summary(loaded: LoadedInput) -> Summary:
    """The counts of a plan (rows to send are `not_attempted`); complete when no row is
    invalid: every row can be sent, or is deliberately not (duplicate, hidden, carried)."""
    counts = dict.fromkeys(Status, 0)
    for row in loaded.rows:
        counts[row.status or Status.NOT_ATTEMPTED] += 1
    return Summary(counts=counts, complete=counts[Status.INVALID] == 0)


def plan_exit_code(loaded: LoadedInput) -> int:
    """0 when every row can be sent (or is deliberately not), 1 when some are invalid: the
    exit code of `preflight` and of `run --dry-run` alike."""
    return ExitCode.OK if plan_summary(loaded).complete else ExitCode.ROWS_FAILED


def _with_verdict(row: SourceRow, verdict: str | None) -> SourceRow:
    return row.with_extra({**row.extra, "preflight": verdict or ""})
