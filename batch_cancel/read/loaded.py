"""The read stage's vocabulary: how to read a file (`LoadOptions`), what was read
(`LoadedInput`), and why a file cannot be used (`InputError`).

Kept apart from the readers so that each of them (text, Excel, a report fed back in) can name
these without importing the dispatcher in `loader`, which imports them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..model import SourceRow, Status
from .sheetfacts import CsvDialect


class InputError(Exception):
    """The input file cannot be used; the message names the file and the fix."""


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How to read the file: the loader's share of the CLI options."""

    sheet: str | None = None
    encoding: str | None = None
    key_column: str | None = None
    reason_column: str | None = None
    reference_column: str | None = None
    default_reason: str | None = None
    only: frozenset[Status] | None = None
    #: reason 01 without a documentReferenceID is `invalid` rather than a warning
    require_reference: bool = False
    #: a report fed back in re-sends rows whose earlier answer was final (not found, ...)
    include_final: bool = False
    #: a DataFrame's or Parquet file's numeric key/reason columns are taken as they print
    numbers_as_text: bool = False
    #: send rows hidden in the sheet (or filtered out) too; by default they are `skipped`
    include_hidden: bool = False
    #: the header's row number as the spreadsheet shows it; by default it is found
    header_row: int | None = None


@dataclass(slots=True)
class LoadedInput:
    """What the loader made of a file: pass-through columns and every data row, in order."""

    path: Path
    columns: list[str]
    rows: list[SourceRow]
    is_report: bool = False
    key_column: str = ""
    reason_column: str = ""
    reference_column: str = ""
    notes: list[str] = field(default_factory=list)
    #: the header's row number as the user sees it
    header_row: int = 1
    #: rows hidden in the sheet and so `skipped` (0 with --include-hidden)
    hidden: int = 0
    #: delimiter and codec of a CSV input (None for other formats)
    dialect: CsvDialect | None = None

    def to_send(self) -> Iterator[SourceRow]:
        """The rows the runner must send, in input order."""
        return (row for row in self.rows if row.status is None)



def check_not_empty(path: Path, rows: list[SourceRow]) -> None:
    """A header without data rows is refused: there is nothing to do, and saying so beats an
    empty report."""
    if not rows:
        raise InputError(f"{path}: the file has a header row but no data rows; nothing to do")
