"""The report: every input row exactly once, in input order, written while the run goes.

Written to a temporary file beside the target and renamed into place at the end, so a report
is either whole or absent. Its columns are the input's own, then `model.REPORT_COLUMNS`: the
row's four (what the loader made of it), then its `Outcome`'s.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..events import Events, ReportEncodingChanged
from ..logs import logged_events
from ..model import REPORT_COLUMNS, ROW_COLUMNS, Outcome, SourceRow, Status, Summary
from ..read.dialect import DEFAULT as DEFAULT_DIALECT
from ..read.sheetfacts import CsvDialect
from .paths import REPORT_FORMATS, ReportError
from .sinks import open_sink
from .tally import Tally

#: Columns whose text came from Zuora (or a proxy) and so may hold a spreadsheet formula.
SERVER_TEXT = ("error_code", "error_message", "zuora_request_id", "process_id")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: Why a row to send has no outcome when the report is finished.
UNSENT_MESSAGE = "not sent: the run stopped first"


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
                 dialect: CsvDialect | None = None, events: Events | None = None) -> None:
        if path.suffix.lower() not in REPORT_FORMATS:
            raise ReportError(f"--report {path}: unsupported format {path.suffix!r}")
        self.path = path
        self._rows = rows
        self._wanted = tuple(input_columns)
        self._cursor = 0
        self._pending: dict[int, Outcome] = {}
        self._tally = Tally(rows)
        self._events = events
        #: why the report could not be written ("" while all is well)
        self.error: str | None = None
        header = [*input_columns, *REPORT_COLUMNS]
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        self._temp = Path(temp)
        os.chmod(self._temp, 0o600)
        self._sink = open_sink(self._temp, path.suffix, header, dialect or DEFAULT_DIALECT,
                               self._reencoded)

    def _reencoded(self, old: str, new: str) -> None:
        """The CSV report switched to `new` midway: say so (`report.encoding_changed`), on
        the run's bus, else on the package's logger as it is configured now."""
        events = self._events if self._events is not None else logged_events("batch_cancel")
        events.emit(ReportEncodingChanged(old, new, f"a value does not fit {old}"))

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
                self._sink.close(self._summary_lines(context or {}))
                os.replace(self._temp, self.path)
        except OSError as exc:
            self._fail(exc)
        except BaseException:
            self.abort()
            raise
        summary = self._tally.summary(self.path)
        summary.report_error = self.error or ""
        return summary

    def _summary_lines(self, context: dict[str, str]) -> Iterator[tuple[list[object], bool]]:
        """The Summary sheet's lines, built only if the sink reads them: a CSV report does
        not load openpyxl (half a second of start-up on a busy machine)."""
        yield from self._tally.summary_lines(context)

    def _fail(self, exc: OSError) -> None:
        self.error = f"{type(exc).__name__}: {exc.strerror or exc}"
        self.abort()

    def abort(self) -> None:
        """Drop the unfinished file."""
        with contextlib.suppress(Exception):
            self._sink.discard()
        self._temp.unlink(missing_ok=True)

    def _emit(self, row: SourceRow, outcome: Outcome | None) -> None:
        """Write one row: carried over as it was, or this run's outcome (or the loader's
        verdict, for a row that was not to be sent); count it by its status."""
        if row.carried is not None and row.status is not None:
            columns, status = dict(row.carried), row.status
        else:
            outcome = outcome or _unsent(row)
            columns, status = _columns(row, outcome), outcome.status
            self._tally.in_scope(outcome)
        self._tally.count(row.row, status, columns)
        if self._sink.spreadsheet:
            for name in SERVER_TEXT:
                columns[name] = neutralise(columns[name])
        self._sink.write(row.values_for(self._wanted) + [columns[c] for c in REPORT_COLUMNS])


def _unsent(row: SourceRow) -> Outcome:
    """The outcome of a row without one: the loader's verdict (invalid, duplicate of a row,
    skipped), or `not_attempted` for a row to send that the run did not reach."""
    if row.status is None:
        return Outcome(row.row, Status.NOT_ATTEMPTED, error_message=row.message or UNSENT_MESSAGE)
    return Outcome(row.row, row.status, error_message=row.message,
                   duplicate_of=row.duplicate_of)


def _columns(row: SourceRow, outcome: Outcome) -> dict[str, str]:
    """A row's report columns: its own four (`SourceRow` attributes of the same names), then
    its outcome's; a warning the row carries (sent all the same) joins the message."""
    columns = {name: str(getattr(row, name)) for name in ROW_COLUMNS}
    columns.update(outcome.report_columns())
    if row.warning:
        message = columns["error_message"]
        columns["error_message"] = (f"{message}; warning: {row.warning}" if message
                                    else f"warning: {row.warning}")
    return columns


def write_report(path: Path, input_columns: list[str], rows: list[SourceRow],
                 outcomes: Mapping[int, Outcome], context: dict[str, str] | None = None,
                 dialect: CsvDialect | None = None, events: Events | None = None) -> Summary:
    """Write a whole report at once, atomically, in the format its extension names.

    `context` (input, target, run id, times) goes on the .xlsx report's Summary sheet;
    `dialect` is a CSV report's delimiter and encoding (default: comma, UTF-8 with BOM);
    `events` is the bus its `report.encoding_changed` goes to (default: the logger).
    """
    return ReportWriter(path, input_columns, rows, dialect, events).finish(context, outcomes)
