"""What a reader learns about a file beyond its cells: merged ranges, hidden rows, the dialect.

The readers (CSV, Excel, OpenDocument) yield rows of text; what the sheet says *about* those
rows travels beside them in one `SheetFacts`, filled by the reader before its first row, so
header detection and the hidden-row rule need no format-specific code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

#: (first row, first column, last row, last column) of a merged range, 1-based.
Merge = tuple[int, int, int, int]
#: Rows of a file as read: their row numbers (as the user sees them) and their cells.
Block = tuple[Sequence[int], list[list[str]]]


@dataclass(frozen=True, slots=True)
class CsvDialect:
    """How a CSV file was written: its delimiter and the codec that read it."""

    delimiter: str = ","
    encoding: str = "utf-8-sig"


@dataclass(slots=True)
class SheetFacts:
    """Facts of the sheet read; every field stays empty for a format that has no such thing."""

    merges: list[Merge] = field(default_factory=list)
    #: rows hidden in the sheet, or filtered out by an autofilter (spreadsheets store both
    #: as hidden rows): not meant to be sent unless the user says so
    hidden_rows: set[int] = field(default_factory=set)
    #: the delimiter and codec of a CSV input, for a report that opens the same way
    dialect: CsvDialect | None = None
    #: the sheet read, when the file has several
    sheet: str = ""

    def fill_merged(self, number: int, texts: list[str]) -> list[str]:
        """Row `number` with a cell merged across columns naming each of them (spreadsheets
        keep the text in the first cell only), so a merged key header shows up as the same
        header twice: ambiguous, never silently one of them."""
        texts = list(texts)
        for first_row, first_col, last_row, last_col in self.merges:
            if first_row == number <= last_row and last_col > first_col and \
                    len(texts) >= first_col:
                if len(texts) < last_col:
                    texts.extend([""] * (last_col - len(texts)))
                for index in range(first_col, last_col):
                    texts[index] = texts[first_col - 1]
        return texts


def split_hidden(blocks: Iterable[Block], hidden: set[int],
                 out: list[tuple[int, list[str]]]) -> Iterator[Block]:
    """The blocks without their hidden rows; the hidden rows are appended to `out`.

    A block with no hidden row (the usual block) passes as it is.
    """
    for numbers, rows in blocks:
        if hidden.isdisjoint(numbers):
            yield numbers, rows
            continue
        kept_numbers: list[int] = []
        kept: list[list[str]] = []
        for number, cells in zip(numbers, rows, strict=True):
            if number in hidden:
                out.append((number, cells))
            else:
                kept_numbers.append(number)
                kept.append(cells)
        yield kept_numbers, kept
