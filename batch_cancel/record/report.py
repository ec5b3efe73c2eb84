"""The journal written as outcomes happen, the final report, and the run summary.

The journal is append-only JSON lines, flushed per outcome, so a crash loses nothing already
done. The report is written once at the end, atomically (temp file, then rename), with every
input row exactly once, in input order.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol

import orjson

from ..config import describe_tenant, tenant_mismatch
from ..logs import get_logger
from ..model import DONE, REPORT_COLUMNS, CancelJob, Outcome, SourceRow, Status, Summary
from ..read.dialect import DEFAULT as DEFAULT_DIALECT
from ..read.sheetfacts import CsvDialect

REPORT_FORMATS = (".csv", ".xlsx", ".jsonl", ".parquet")
#: Columns whose text came from Zuora (or a proxy) and so may hold a spreadsheet formula.
SERVER_TEXT = ("error_code", "error_message", "zuora_request_id", "process_id")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: fsync the journal at most once per this many records (each record is still flushed).
FSYNC_EVERY = 200
#: An outcome record waits at most this long (or until the next `sent` record) to be flushed.
OUTCOME_FLUSH_DELAY = 0.2


def _dumps(record: dict[str, object]) -> str:
    """One journal line. orjson, not json: measured 186 vs 201 µs of client CPU per row in
    the CPU-bound benchmark (two records per row)."""
    return orjson.dumps(record, default=str).decode()


class ReportError(Exception):
    """The report cannot be written where asked; the message says what to change."""


def default_report_path(input_path: Path) -> Path:
    """`<input stem>.report.csv` beside the input (a report fed back gets a new name)."""
    stem = input_path.stem
    return input_path.with_name(f"{stem}.report.csv")


def journal_path(report_path: Path) -> Path:
    """The journal lives beside the report it belongs to."""
    return report_path.with_name(report_path.name + ".journal.jsonl")


def check_report_path(path: Path) -> None:
    """Refuse a report path we could only fail to write, before anything is sent."""
    if path.suffix.lower() not in REPORT_FORMATS:
        raise ReportError(f"--report {path}: unsupported format {path.suffix or '(none)'!r}; "
                          "use a name ending in .csv, .xlsx, .jsonl or .parquet")
    if not path.parent.exists():
        raise ReportError(f"--report {path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise ReportError(f"--report {path}: is a folder; name a file")
    try:  # try it rather than ask os.access: root, ACLs and network shares all lie to it
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ReportError(f"--report {path}: cannot write in the folder {path.parent} "
                          f"({exc.strerror or exc}); choose another --report") from None
    if path.exists():
        try:  # a report open in Excel on Windows is locked: find out now, not after the run
            with path.open("ab"):
                pass
        except OSError as exc:
            raise ReportError(f"--report {path}: the file cannot be written "
                              f"({exc.strerror or exc}); is it open in another program? "
                              "Close it, or choose another --report") from None


def _private_open(path: Path, mode: str) -> IO[str]:
    """Open a file readable by its owner only: reports name invoices and tenants."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    return os.fdopen(fd, mode, encoding="utf-8", newline="")


class Journal:
    """Write-ahead journal: a `sent` record before each cancel request, an `outcome` after.

    JSON lines, append-only, each record flushed to the OS as written (a killed process loses
    nothing); fsync is batched (FSYNC_EVERY) so durability does not cost a syscall storm.
    Chosen over SQLite because appending a line is the whole protocol: a torn last line is the
    only damage a crash can do, and the file stays readable with `grep` and `jq`. `clock`
    times the outcome flush (OUTCOME_FLUSH_DELAY); a simulation passes its virtual time.
    """

    def __init__(self, path: Path, header: dict[str, object],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._handle = _private_open(path, "a")
        self._unsynced = 0
        self._unflushed = 0
        self._flushed_at = clock()
        self._turn: asyncio.Future[None] | None = None
        self._write({"event": "run", **header})
        self._flush()

    def sent(self, job: CancelJob, attempt: int, track_id: str) -> asyncio.Future[None] | None:
        """Record that a cancel request is about to go out; the request must wait for the
        returned future, set once the record is with the OS (None: it is already).

        Inside an event loop, every `sent` record written in one turn of the loop is handed
        over by one write at the start of the next turn, before any of those requests can
        start: the same guarantee as a flush per record, with one syscall per turn.
        """
        self._write({"event": "sent", "row": job.row, "invoice_key": job.invoice_key,
                     "attempt": attempt, "track_id": track_id})
        if self._turn is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._flush()
                return None
            self._turn = loop.create_future()
            loop.call_soon(self._end_turn)
        # shielded: a waiter cancelled (Ctrl-C) must not cancel the turn of the others
        return asyncio.shield(self._turn)

    def withdrawn(self, job: CancelJob, attempt: int) -> None:
        """Void the `sent` record of `attempt`: the run stopped, or a 429 paused the pool,
        after the record was written and before the request left, so it did not leave."""
        self._write({"event": "withdrawn", "row": job.row, "attempt": attempt})

    def _end_turn(self) -> None:
        turn, self._turn = self._turn, None
        try:
            self._flush()
        except Exception as exc:  # e.g. disk full: the waiting requests fail, none goes out
            if turn is not None and not turn.done():
                turn.set_exception(exc)
            return
        if turn is not None and not turn.done():
            turn.set_result(None)

    def record(self, outcome: Outcome) -> None:
        """Record a row's outcome; it reaches the OS with the next `sent` record, or within
        OUTCOME_FLUSH_DELAY seconds. An outcome lost to a crash leaves its row `sent` only,
        that is in doubt: a resume reads the invoice before anything is sent again."""
        self._write({"event": "outcome", "row": outcome.row, "status": outcome.status.value,
                     "http_status": outcome.http_status, "error_code": outcome.error_code,
                     "error_message": outcome.error_message, "attempts": outcome.attempts,
                     "track_id": outcome.track_id, "zuora_request_id": outcome.zuora_request_id,
                     "process_id": outcome.process_id, "finished_at": outcome.finished_at,
                     "in_doubt": outcome.in_doubt, "ever_in_doubt": outcome.ever_in_doubt})
        if self._clock() - self._flushed_at > OUTCOME_FLUSH_DELAY:
            self._flush()

    def _write(self, record: dict[str, object]) -> None:
        self._handle.write(_dumps(record) + "\n")
        self._unflushed += 1

    def _flush(self) -> None:
        """One write syscall for every record since the last flush; an fsync per FSYNC_EVERY."""
        if not self._unflushed:
            return
        self._handle.flush()
        self._flushed_at = self._clock()
        self._unsynced += self._unflushed
        self._unflushed = 0
        if self._unsynced >= FSYNC_EVERY:
            os.fsync(self._handle.fileno())
            self._unsynced = 0

    def close(self) -> None:
        """Sync and close."""
        if self._turn is not None:
            self._end_turn()
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


@dataclass(slots=True)
class JournalState:
    """What a journal says of each row: finished, in doubt, or never sent."""

    header: dict[str, object] = field(default_factory=dict)
    finished: dict[int, Outcome] = field(default_factory=dict)
    in_doubt: set[int] = field(default_factory=set)
    #: rows some request of which was in doubt at some point, settled or not: a cancel found
    #: in place later may be ours (a request that timed out can land after a read said no)
    doubted: set[int] = field(default_factory=set)

    def is_finished(self, row: int) -> bool:
        """Whether the row has an outcome a resume keeps."""
        return row in self.finished


def read_journal(path: Path) -> JournalState:
    """Replay a journal: the last event of each row decides its state.

    A row whose last event is `sent` was dispatched without a recorded answer (in doubt), as is
    one whose outcome says so; a `not_attempted` outcome is sent again; others are finished.
    A `withdrawn` record voids the `sent` record of its attempt: that request never left.
    A torn last line (the process died mid-write) is ignored.
    """
    state = JournalState()
    last: dict[int, dict[str, object]] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict):
                continue
            if record.get("event") == "run":
                state.header = state.header or record
            elif (record.get("event") in ("sent", "outcome", "withdrawn")
                  and isinstance(record.get("row"), int)):
                last[record["row"]] = record
    for row, record in last.items():
        if record["event"] == "sent":
            state.in_doubt.add(row)
            state.doubted.add(row)
            continue
        if record["event"] == "withdrawn":
            continue  # the request never left: the row is as if never sent
        outcome = _outcome_from(record)
        if outcome.in_doubt or outcome.ever_in_doubt:
            state.doubted.add(row)
        if outcome.in_doubt:
            state.in_doubt.add(row)
        elif outcome.status is not Status.NOT_ATTEMPTED:
            state.finished[row] = outcome
    return state


def recorded_tenant(header: dict[str, object]) -> dict[str, str]:
    """The tenant a journal header names (older journals: from their target and base URL)."""
    tenant = header.get("tenant")
    if isinstance(tenant, dict):
        return {str(k): str(v) for k, v in tenant.items()}
    name = str(header.get("target") or "")
    if not name:
        return {}
    if name == "simulator":
        return {"env": "simulator"}
    return {"env": name, "base_url": str(header.get("base_url") or "").rstrip("/")}


def check_same_tenant(journal: Path, header: dict[str, object], tenant: dict[str, str],
                      what: str) -> None:
    """Refuse to carry one tenant's outcomes over to another: a journal belongs to one tenant.

    A resume pointed at another tenant would report the first tenant's cancels as done there
    (a sandbox run, then production with --resume pasted along).
    """
    recorded = recorded_tenant(header)
    differs = tenant_mismatch(recorded, tenant) if recorded else []
    if differs:
        raise ReportError(
            f"{what}: {journal} belongs to another tenant ({describe_tenant(recorded)}) than "
            f"this run's ({describe_tenant(tenant)}); they differ in {', '.join(differs)}. "
            "Nothing was sent. For a run on this tenant, choose another --report (or pass "
            "--overwrite to replace that report and journal)")


def _outcome_from(record: dict[str, object]) -> Outcome:
    names = {f.name for f in fields(Outcome)}
    values = {k: v for k, v in record.items() if k in names}
    values["status"] = Status(str(values["status"]))
    return Outcome(**values)  # type: ignore[arg-type]


def _columns(row: SourceRow, outcome: Outcome) -> dict[str, str]:
    message = outcome.error_message
    if row.warning:
        message = f"{message}; warning: {row.warning}" if message else f"warning: {row.warning}"
    return {
        "row": str(row.row),
        "invoice_key": row.invoice_key,
        "reason": row.reason,
        "document_reference_id": row.document_reference_id,
        "status": outcome.status.value,
        "http_status": "" if outcome.http_status is None else str(outcome.http_status),
        "error_code": outcome.error_code,
        "error_message": message,
        "attempts": str(outcome.attempts),
        "track_id": outcome.track_id,
        "zuora_request_id": outcome.zuora_request_id,
        "process_id": outcome.process_id,
        "finished_at": outcome.finished_at,
        "in_doubt": "yes" if outcome.in_doubt else "",
    }


def neutralise(text: str) -> str:
    """Make server text inert in a spreadsheet: a leading = + - @ would start a formula."""
    return "'" + text if text.startswith(_FORMULA_START) else text


class ReportWriter:
    """Writes the report while the run goes, in input order, so outcomes are not held.

    Outcomes arrive in any order; each is kept only until every row above it is written (the
    runner takes rows in order, so that is a few rows, not the file). `finish` writes the
    rest (a row to send without an outcome is `not_attempted`: no row can go missing) and
    renames the temporary file into place; `abort` removes it.
    """

    def __init__(self, path: Path, input_columns: list[str], rows: list[SourceRow],
                 dialect: CsvDialect | None = None) -> None:
        if path.suffix.lower() not in REPORT_FORMATS:
            raise ReportError(f"--report {path}: unsupported format {path.suffix!r}")
        self.path = path
        self._rows = rows
        self._wanted = tuple(input_columns)
        self._cursor = 0
        self._pending: dict[int, Outcome] = {}
        self._tally = _Tally(rows)
        #: why the report could not be written ("" while all is well)
        self.error: str | None = None
        header = [*input_columns, *REPORT_COLUMNS]
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        self._temp = Path(temp)
        os.chmod(self._temp, 0o600)
        self._sink = _SINKS[path.suffix.lower()](self._temp, header,
                                                 dialect or DEFAULT_DIALECT)

    @property
    def held(self) -> int:
        """Outcomes kept in memory, waiting for a row above them."""
        return len(self._pending)

    def add(self, outcome: Outcome) -> None:
        """Take one row's outcome; write every row that is now ready, in order.

        A write that fails (disk full, say) stops the writing, not the run: every outcome is
        in the journal, and `finish` says the report must be rebuilt from it.
        """
        if self.error is not None:
            return
        try:
            self._add(outcome)
        except OSError as exc:
            self._fail(exc)

    def _add(self, outcome: Outcome) -> None:
        self._pending[outcome.row] = outcome
        rows, cursor = self._rows, self._cursor
        while cursor < len(rows):
            row = rows[cursor]
            if row.status is None and row.carried is None:
                found = self._pending.pop(row.row, None)
                if found is None:
                    break
                self._emit(row, found)
            else:
                self._emit(row, None)
            cursor += 1
        self._cursor = cursor

    def finish(self, context: dict[str, str] | None = None,
               outcomes: Mapping[int, Outcome] | None = None) -> Summary:
        """Write the remaining rows, close and rename the file; return the counts.

        If the report cannot be written, the summary's `report_error` says why (the file is
        not left half-written); the caller tells the user how to rebuild it from the journal.
        """
        try:
            if self.error is None:
                for row in self._rows[self._cursor:]:
                    outcome = self._pending.pop(row.row, None)
                    if outcome is None and outcomes is not None:
                        outcome = outcomes.get(row.row)
                    self._emit(row, outcome)
                self._cursor = len(self._rows)
                self._sink.close(self._tally.summary_lines(context or {}))
                os.replace(self._temp, self.path)
        except OSError as exc:
            self._fail(exc)
        except BaseException:
            self.abort()
            raise
        summary = self._tally.summary(self.path)
        summary.report_error = self.error or ""
        return summary

    def _fail(self, exc: OSError) -> None:
        self.error = f"{type(exc).__name__}: {exc.strerror or exc}"
        self.abort()

    def abort(self) -> None:
        """Drop the unfinished file."""
        with contextlib.suppress(Exception):
            self._sink.discard()
        self._temp.unlink(missing_ok=True)

    def _emit(self, row: SourceRow, outcome: Outcome | None) -> None:
        columns = _report_columns(row, outcome)
        self._tally.count(row, columns)
        if self._sink.spreadsheet:
            for name in SERVER_TEXT:
                columns[name] = neutralise(columns[name])
        self._sink.write(row.values_for(self._wanted) + [columns[c] for c in REPORT_COLUMNS])


def _report_columns(row: SourceRow, outcome: Outcome | None) -> dict[str, str]:
    """A row's report columns: carried over, from its outcome, or from the loader's verdict."""
    if row.carried is not None:
        return dict(row.carried)
    if outcome is None:
        status = row.status or Status.NOT_ATTEMPTED
        message = row.message or ("" if row.status else "not sent: the run stopped first")
        outcome = Outcome(row.row, status, error_message=message)
    return _columns(row, outcome)


class _Tally:
    """Counts per status, top error codes, and whether the run is complete, row by row.

    Complete means every row in this run's scope succeeded or was skipped, or duplicates such
    a row; only the statuses of rows some duplicate points at are kept for that, not one per
    row. Rows carried over from an earlier report are outside the scope: they keep their
    status in the report and the counts, but did not happen in this run.
    """

    def __init__(self, rows: list[SourceRow]) -> None:
        self.counts: Counter[Status] = Counter()
        self.errors: Counter[str] = Counter()
        self.first_message: dict[str, str] = {}
        self._owners = {_owner(row) for row in rows if row.status is Status.DUPLICATE}
        self._owner_status: dict[int, Status] = {}
        self._duplicates: list[int] = []
        self._incomplete = False

    def count(self, row: SourceRow, columns: dict[str, str]) -> None:
        status = Status(columns["status"])
        self.counts[status] += 1
        if row.row in self._owners:
            self._owner_status[row.row] = status
        if status is Status.DUPLICATE and row.carried is None:
            self._duplicates.append(row.duplicate_of or _owner_from_message(columns))
        elif status not in DONE and status is not Status.DUPLICATE and row.carried is None:
            self._incomplete = True
        if status is Status.FAILED:
            code = columns["error_code"] or _status_label(columns["http_status"])
            self.errors[code] += 1
            self.first_message.setdefault(code, columns["error_message"])

    def top_errors(self) -> list[tuple[str, int, str]]:
        return [(code, n, self.first_message[code]) for code, n in self.errors.most_common(5)]

    def summary_lines(self, context: dict[str, str]) -> Iterator[tuple[list[object], bool]]:
        from .workbook import summary_lines

        counted = {status: self.counts.get(status, 0) for status in Status}
        return summary_lines(context, counted, self.top_errors())

    def summary(self, path: Path) -> Summary:
        complete = not self._incomplete and all(
            self._owner_status.get(owner) in DONE for owner in self._duplicates)
        return Summary(counts={status: self.counts.get(status, 0) for status in Status},
                       top_errors=self.top_errors(), report_path=str(path), complete=complete)


def _status_label(http_status: str) -> str:
    """What stands for an error code when Zuora gave none: an HTTP error status, never a 200."""
    return f"HTTP {http_status}" if http_status and not http_status.startswith("2") else (
        "(no code)")


def _owner(row: SourceRow) -> int:
    if row.duplicate_of:
        return row.duplicate_of
    return _owner_from_message(row.carried or {"error_message": row.message})


class _Sink(Protocol):
    spreadsheet: bool

    def write(self, values: list[str]) -> None: ...
    def close(self, summary_lines: Iterable[tuple[list[object], bool]]) -> None: ...
    def discard(self) -> None: ...


class _FileSink:
    """A text file written row by row; nothing to add at close."""

    spreadsheet = False

    def __init__(self, path: Path, encoding: str) -> None:
        self._handle = path.open("w", encoding=encoding, newline="")

    def close(self, summary_lines: Iterable[tuple[list[object], bool]]) -> None:
        self._handle.close()

    def discard(self) -> None:
        self._handle.close()


class _CsvSink(_FileSink):
    """The input's delimiter and encoding (`dialect`); utf-8 with a BOM by default: Excel
    then opens non-ASCII text correctly, and the loader strips it.

    A value that does not fit a legacy encoding (a Zuora message in cp1252, say) switches
    the whole file to UTF-8 with BOM: the rows written so far are re-encoded, nothing lost.
    """

    spreadsheet = True

    def __init__(self, path: Path, header: list[str], dialect: CsvDialect) -> None:
        super().__init__(path, dialect.encoding)
        self._path = path
        self._dialect = dialect
        self._writer = csv.writer(self._handle, delimiter=dialect.delimiter)
        self.write(header)

    def write(self, values: list[str]) -> None:
        try:
            self._writer.writerow(values)  # one write per row: a failed row writes nothing
        except UnicodeEncodeError:
            self._to_utf8()
            self._writer.writerow(values)

    def _to_utf8(self) -> None:
        """Re-encode what was written as UTF-8 with BOM and go on in it."""
        self._handle.close()
        text = self._path.read_bytes().decode(self._dialect.encoding)
        self._path.write_bytes(text.encode("utf-8-sig"))
        get_logger("batch_cancel").warning(
            "report.encoding_changed", old=self._dialect.encoding, new="utf-8-sig",
            reason=f"a value does not fit {self._dialect.encoding}")
        self._dialect = CsvDialect(self._dialect.delimiter, "utf-8-sig")
        self._handle = self._path.open("a", encoding="utf-8-sig", newline="")
        self._writer = csv.writer(self._handle, delimiter=self._dialect.delimiter)


class _JsonlSink(_FileSink):
    def __init__(self, path: Path, header: list[str], dialect: CsvDialect) -> None:
        super().__init__(path, "utf-8")
        self._header = header

    def write(self, values: list[str]) -> None:
        self._handle.write(json.dumps(dict(zip(self._header, values, strict=True)),
                                      ensure_ascii=False) + "\n")


class _XlsxSink:
    spreadsheet = True

    def __init__(self, path: Path, header: list[str], dialect: CsvDialect) -> None:
        from .workbook import WorkbookWriter  # openpyxl only when asked

        self._book = WorkbookWriter(path, header)

    def write(self, values: list[str]) -> None:
        self._book.write(values)

    def close(self, summary_lines: Iterable[tuple[list[object], bool]]) -> None:
        self._book.close(summary_lines)

    def discard(self) -> None:
        pass


def _parquet_sink(path: Path, header: list[str], dialect: CsvDialect) -> _Sink:
    from ..read.frames import ParquetSink  # pandas/pyarrow only when asked

    return ParquetSink(path, header)


_SINKS: dict[str, Callable[[Path, list[str], CsvDialect], _Sink]] = {
    ".csv": _CsvSink, ".jsonl": _JsonlSink, ".xlsx": _XlsxSink, ".parquet": _parquet_sink,
}


def write_report(path: Path, input_columns: list[str], rows: list[SourceRow],
                 outcomes: Mapping[int, Outcome], context: dict[str, str] | None = None,
                 dialect: CsvDialect | None = None) -> Summary:
    """Write a whole report at once, atomically, in the format its extension names.

    `context` (input, target, run id, times) goes on the .xlsx report's Summary sheet;
    `dialect` is a CSV report's delimiter and encoding (default: comma, UTF-8 with BOM).
    """
    return ReportWriter(path, input_columns, rows, dialect).finish(context, outcomes)


def _owner_from_message(columns: dict[str, str]) -> int:
    """The row a carried-over duplicate points at ("duplicate of row 12 ..."), or 0."""
    words = columns["error_message"].split()
    return int(words[3]) if len(words) > 3 and words[3].isdigit() else 0
