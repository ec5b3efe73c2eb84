"""A table as text: numbered rows in blocks, the header split off, and every data row shaped
to the header's width. Whatever the format, the readers (`text`, `excel`, `opendocument`)
give numbered rows of cell text; from here on all formats are one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from operator import itemgetter
from pathlib import Path

from . import guard
from .header import HeaderError, find_header
from .loaded import InputError, LoadOptions
from .sheetfacts import Block, SheetFacts

#: Rows are read and checked this many at a time: enough for the per-block work to run in C
#: (`map`, `islice`), few enough that redoing an odd block row by row costs little.
BLOCK_ROWS = 2048



def check_cells(path: Path, number: int, texts: list[str]) -> None:
    """Refuse a cell longer than any real one: tens of MB in a cell is an attack or a bug."""
    if texts and max(map(len, texts)) > guard.MAX_CELL_CHARS:
        raise InputError(f"{path}: row {number} has a cell of more than "
                         f"{guard.MAX_CELL_CHARS} characters; no invoice row needs one. "
                         "Check the file")


def in_blocks(records: Iterable[tuple[int, list[str]]]) -> Iterator[Block]:
    """Numbered rows grouped in blocks of up to BLOCK_ROWS. The rows read before a reading
    error are passed on before it, so a bad row above a damaged part is reported first."""
    records = iter(records)
    while True:
        chunk: list[tuple[int, list[str]]] = []
        try:
            chunk.extend(islice(records, BLOCK_ROWS))
        except Exception:
            if chunk:
                yield [number for number, _ in chunk], [cells for _, cells in chunk]
            raise
        if not chunk:
            return
        yield [number for number, _ in chunk], [cells for _, cells in chunk]


def records_of(blocks: Iterable[Block]) -> Iterator[tuple[int, list[str]]]:
    """The numbered rows of blocks, one by one."""
    for numbers, rows in blocks:
        yield from zip(numbers, rows, strict=True)


def split_header(path: Path, blocks: Iterable[Block], options: LoadOptions,
                 facts: SheetFacts) -> tuple[list[str], int, Iterator[Block]]:
    """The header (see `header.find_header`), its row number, and the data rows after it."""
    try:
        found = find_header(path, blocks, facts, options.key_column, options.header_row)
    except HeaderError as exc:
        raise InputError(str(exc)) from None
    if found is None:
        raise InputError(f"{path}: the file is empty (no header row, no data)")
    header, rest = found
    return header.cells, header.number, data_blocks(path, rest, header.cells, header.number)


def data_blocks(path: Path, blocks: Iterable[Block], header: list[str], header_number: int
                ) -> Iterator[Block]:
    """The blocks below the header: blank rows skipped, each row padded or cut to the header.

    A block whose rows are all as wide as the header and start with a non-blank cell (the
    usual block) passes as it is, checked in C; any other is redone row by row.
    """
    width = len(header)
    for numbers, rows in blocks:
        if set(map(len, rows)) <= {width} and all(map(str.strip, map(itemgetter(0), rows))):
            yield numbers, rows
        else:
            yield _shaped(path, numbers, rows, header, header_number)


def _shaped(path: Path, numbers: Sequence[int], rows: list[list[str]], header: list[str],
            header_number: int) -> Block:
    """A block's rows with blank rows dropped and each row padded or cut to the header; a
    value beyond the header is an `InputError`."""
    width = len(header)
    kept_numbers: list[int] = []
    kept: list[list[str]] = []
    for number, cells in zip(numbers, rows, strict=True):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > width:
            if any(c.strip() for c in cells[width:]):
                title = (f". If row {header_number} is a title above the real header row, "
                         "delete it") if sum(1 for c in header if c) == 1 else ""
                raise InputError(
                    f"{path}: row {number} has {len(cells)} cells but the header has "
                    f"{width}; a value sits in a column without a header. Give that "
                    "column a header, or check the delimiter (--encoding may also help)"
                    + title
                )
            cells = cells[:width]
        elif len(cells) < width:
            cells = cells + [""] * (width - len(cells))
        kept_numbers.append(number)
        kept.append(cells)
    return kept_numbers, kept


def unique_names(header: list[str]) -> list[str]:
    """Column names made unique and non-empty, so each maps to one value per row."""
    seen: dict[str, int] = {}
    names = []
    for index, name in enumerate(header, start=1):
        name = name or f"column_{index}"
        if name in seen:
            seen[name] += 1
            name = f"{name} ({seen[name]})"
        seen.setdefault(name, 1)
        names.append(name)
    return names
