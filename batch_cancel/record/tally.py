"""The run summary, counted row by row as the report is written: never read back from it.

Counts per status and the top error codes for the closing summary and the workbook's Summary
sheet, and whether the run is complete (exit 0), from the rows' `Status` values and the
`duplicate_of` each duplicate carries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..model import DONE, Outcome, SourceRow, Status, Summary

#: How many error codes the summary names.
TOP_ERRORS = 5


class Tally:
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
        self._owners = {row.duplicate_of for row in rows if row.duplicate_of is not None}
        self._owner_status: dict[int, Status] = {}
        self._duplicates: list[int | None] = []
        self._incomplete = False

    def count(self, row: int, status: Status, columns: Mapping[str, str]) -> None:
        """Count one report row, of this run or carried over; `columns` are its report
        columns, whose error code (or HTTP status) and message name a failure."""
        self.counts[status] += 1
        if row in self._owners:
            self._owner_status[row] = status
        if status is Status.FAILED:
            code = columns["error_code"] or _status_label(columns["http_status"])
            self.errors[code] += 1
            self.first_message.setdefault(code, columns["error_message"])

    def in_scope(self, outcome: Outcome) -> None:
        """Note the outcome of a row in this run's scope: it leaves the run incomplete unless
        done, or a duplicate of a row that turns out done."""
        if outcome.status is Status.DUPLICATE:
            self._duplicates.append(outcome.duplicate_of)
        elif outcome.status not in DONE:
            self._incomplete = True

    def top_errors(self) -> list[tuple[str, int, str]]:
        """The most frequent error codes: (code, rows, the first message seen for it)."""
        return [(code, n, self.first_message[code])
                for code, n in self.errors.most_common(TOP_ERRORS)]

    def summary_lines(self, context: dict[str, str]) -> Iterator[tuple[list[object], bool]]:
        """The workbook's Summary sheet for these counts (openpyxl loads only here)."""
        from .workbook import summary_lines

        return summary_lines(context, self._all_counts(), self.top_errors())

    def summary(self, path: Path) -> Summary:
        """The counts as the run's `Summary`, for the report at `path`."""
        complete = not self._incomplete and all(
            owner is not None and self._owner_status.get(owner) in DONE
            for owner in self._duplicates)
        return Summary(counts=self._all_counts(), top_errors=self.top_errors(),
                       report_path=str(path), complete=complete)

    def _all_counts(self) -> dict[Status, int]:
        """Every status, in `Status` order, counted or not."""
        return {status: self.counts.get(status, 0) for status in Status}


def _status_label(http_status: str) -> str:
    """What stands for an error code when Zuora gave none: an HTTP error status, never a 200."""
    return f"HTTP {http_status}" if http_status and not http_status.startswith("2") else (
        "(no code)")
