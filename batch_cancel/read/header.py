"""Find the header row: below titles, notes and merged banners, where the key column is.

People put a title ("Month-end corrections - October 2026", merged across the sheet) and notes
above the header. The header is the first row, among the first SEARCH_ROWS non-blank rows,
that names the key column (by an alias or by `--key-column`); rows above it are not data.
`--header-row N` says it outright.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from .columns import did_you_mean, key_found
from .sheetfacts import Block, SheetFacts

#: How many non-blank rows are searched for the header.
SEARCH_ROWS = 30
#: How many of the rows searched an error message shows.
SHOWN_ROWS = 5


class HeaderError(Exception):
    """No header row could be found; the message shows the rows seen and the flags."""


@dataclass(frozen=True, slots=True)
class Header:
    """The header row: its number as the user sees it, and its cells (merged ones filled)."""

    number: int
    cells: list[str]
    #: non-blank rows above the header (titles, notes), ignored
    skipped: int = 0


def find_header(path: Path, blocks: Iterable[Block], facts: SheetFacts,
                key_column: str | None, header_row: int | None
                ) -> tuple[Header, Iterator[Block]] | None:
    """The header and the blocks below it, or None if the file has no non-blank row."""
    blocks = iter(blocks)
    seen: list[tuple[int, list[str]]] = []
    for numbers, rows in blocks:
        for index, cells in enumerate(rows):
            number = numbers[index]
            blank = not any(c.strip() for c in cells)
            if header_row is not None:
                if number < header_row:
                    seen.extend([] if blank else [(number, cells)])
                    continue
                if number > header_row or blank:
                    raise HeaderError(f"{path}: --header-row {header_row}: that row is "
                                      "blank; pass the number of the row that names the "
                                      "columns")
            elif blank:
                continue
            else:
                seen.append((number, cells))
                if not key_found(facts.fill_merged(number, cells), key_column):
                    if len(seen) >= SEARCH_ROWS:
                        raise HeaderError(_not_found(path, seen, key_column))
                    continue
            above = [(n, c) for n, c in seen if n < number]
            if header_row is None:
                _check_above(path, number, cells, above)
            header = Header(number, _trimmed(facts.fill_merged(number, cells)), len(above))
            rest = chain([(numbers[index + 1:], rows[index + 1:])], blocks)
            return header, rest
    if header_row is not None and (seen or header_row > 1):
        raise HeaderError(f"{path}: --header-row {header_row}: the file has no row "
                          f"{header_row} with cells; pass the number of the header row")
    if seen:
        raise HeaderError(_not_found(path, seen, key_column))
    return None


def _check_above(path: Path, number: int, cells: list[str],
                 above: Sequence[tuple[int, list[str]]]) -> None:
    """Refuse a header below a row as wide as itself: titles and notes are narrower than a
    header, so that row is more likely the real header (one without a key name) and this
    one a data row holding a word like "Invoice". Guessing wrong would send the wrong rows.
    """
    width = _width(cells)
    for above_number, above_cells in above:
        if _width(above_cells) >= width:
            raise HeaderError(
                f"{path}: row {number} names the key column, but row {above_number} above it "
                f"has as many cells ({', '.join(_once(above_cells))}); which row is the "
                "header? Pass --header-row N (and --key-column NAME if its key column has "
                "another name)")


def _width(cells: list[str]) -> int:
    """Non-blank cells of a row (a merged cell counts once: its text is in one cell)."""
    return sum(1 for c in cells if c.strip())


def _trimmed(cells: list[str]) -> list[str]:
    """Header names stripped, without the blank cells at the end of the row."""
    header = [c.strip() for c in cells]
    while header and not header[-1]:
        header.pop()
    return header


def _not_found(path: Path, seen: Sequence[tuple[int, list[str]]], key_column: str | None
               ) -> str:
    """Why no row is the header: the first rows' cells (each once), and the flags to pass."""
    shown = "; ".join(f"row {number}: {', '.join(_once(cells))}"
                      for number, cells in seen[:SHOWN_ROWS])
    if key_column is not None:
        names = [c for _, cells in seen for c in _once(cells)]
        return (f"{path}: --key-column {key_column!r} names no column in the first "
                f"{len(seen)} non-blank rows{did_you_mean(key_column, names)}; saw: {shown}. "
                "Pass --header-row N if the header is further down")
    return (f"{path}: no column for the invoice key in the first {len(seen)} non-blank rows; "
            f"saw: {shown}. Name it 'invoiceKey' or 'Invoice Number', or pass --key-column NAME "
            "(and --header-row N if the header is not the first row naming it)")


def _once(cells: list[str]) -> list[str]:
    """A row's non-blank cells, each text once (a merged cell is kept in one cell only)."""
    return list(dict.fromkeys(c.strip() for c in cells if c.strip()))
