"""A plain (not report) file's rows: where the key, reason and reference columns are, and
every data row checked, normalised and marked, in input order.

Most rows of a big file are plain ones (a clean key, a usual reason spelling, no reference):
a block of such rows is built column by column in C (`fast_block`); any other block goes row
by row through the rules of `validate`. Both give the very same rows (tests prove it).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import repeat
from operator import attrgetter, itemgetter, ne, setitem
from pathlib import Path
from typing import cast

from ..model import REPORT_COLUMNS, REPORT_SIGNATURE, SourceRow, Status
from .columns import KEY_ALIASES, REASON_ALIASES, REFERENCE_ALIASES, ColumnError, resolve_column
from .duplicates import as_duplicate
from .loaded import InputError, LoadedInput, LoadOptions, check_not_empty
from .sheetfacts import Block, SheetFacts, split_hidden
from .validate import CLEAN_KEY, REASON_SPELLINGS, default_reason, make_row, reference_rule

#: The message of a row hidden in the sheet (or filtered out), reported `skipped`.
HIDDEN_MESSAGE = "hidden in the sheet"
#: One str object per spelling (and for a blank cell), for rows to share.
_SHARED = {spelling: spelling for spelling in (*REASON_SPELLINGS, "")}


def load_plain(path: Path, columns: list[str], blocks: Iterable[Block], options: LoadOptions,
               facts: SheetFacts) -> LoadedInput:
    """The rows of a plain file whose header gave `columns`, or `InputError` if no column
    holds the invoice key (or the reason, without --reason)."""
    try:
        layout = _layout(path, columns, options)
    except InputError:
        # A damaged row below the header is the first thing to fix, as when the whole file
        # was read before the columns were looked at: read on, so that error wins.
        deque(blocks, maxlen=0)
        raise
    notes = list(layout.notes)
    hidden: list[tuple[int, list[str]]] = []
    if facts.hidden_rows and not options.include_hidden:
        blocks = split_hidden(blocks, facts.hidden_rows, hidden)
    rows = reference_rule(_build_rows(blocks, layout), options.require_reference)
    if hidden:
        skipped = [_hidden_row(number, cells, layout) for number, cells in hidden]
        rows = list(heapq.merge(rows, skipped, key=attrgetter("row")))
        notes.insert(0, f"{len(hidden)} rows hidden in the sheet (or filtered out) are "
                        "skipped; pass --include-hidden to send them")
    check_not_empty(path, rows)
    return LoadedInput(path, list(layout.passthrough), rows,
                       key_column=columns[layout.key],
                       reason_column="" if layout.reason is None else columns[layout.reason],
                       reference_column="" if layout.reference is None
                       else columns[layout.reference],
                       notes=notes, hidden=len(hidden), dialect=facts.dialect)


def _hidden_row(number: int, cells: list[str], layout: _Layout) -> SourceRow:
    """A row hidden in the sheet: read like any other, never sent, reported `skipped`."""
    row = _checked_row(number, cells, layout, lambda _key, owner: owner)
    return replace(row, status=Status.SKIPPED, message=HIDDEN_MESSAGE, duplicate_of=None)


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where a plain (not report) file keeps each field: resolved once, used for every row."""

    key: int
    reason: int | None
    reference: int | None
    default_reason: str
    #: the name each input column has in the report (`_report_safe_name`)
    passthrough: tuple[str, ...]
    #: the same names, each once: a row's `columns`
    columns: tuple[str, ...]
    #: two input columns got the same report name ("reason" renamed beside "input_reason"):
    #: a row keeps the last one's cell under it, as a dict by name would
    collapse: bool
    #: sentences for the plan about how the columns were chosen
    notes: tuple[str, ...] = ()


def _layout(path: Path, columns: list[str], options: LoadOptions) -> _Layout:
    """The key, reason and reference columns of a plain file, or `InputError` saying why not."""
    if options.only is not None:
        raise InputError(
            f"{path}: --only works on an earlier batch-cancel report, and this file is not one "
            f"(it lacks the columns {', '.join(sorted(REPORT_SIGNATURE))})"
        )
    try:
        key = resolve_column(path, columns, "invoice key", KEY_ALIASES, options.key_column,
                             "--key-column")
        reason = resolve_column(path, columns, "reason", REASON_ALIASES, options.reason_column,
                                "--reason-column")
        reference = resolve_column(path, columns, "document reference", REFERENCE_ALIASES,
                                   options.reference_column, "--reference-column")
    except ColumnError as exc:
        raise InputError(str(exc)) from None
    key_col, reason_col, ref_col = key.column, reason.column, reference.column
    if key_col is None:
        raise InputError(
            f"{path}: no column for the invoice key; saw: {', '.join(columns) or '(none)'}. "
            "Name it 'invoiceKey' or 'Invoice Number', or pass --key-column NAME"
        )
    if reason_col is None and options.default_reason is None:
        raise InputError(
            f"{path}: no column for the reason code; saw: {', '.join(columns)}. "
            "Add a 'reason' column (01-04), pass --reason-column NAME, "
            "or --reason CODE for all rows"
        )
    passthrough = tuple(_report_safe_name(c) for c in columns)
    return _Layout(key=columns.index(key_col),
                   reason=None if reason_col is None else columns.index(reason_col),
                   reference=None if ref_col is None else columns.index(ref_col),
                   default_reason=default_reason(options.default_reason),
                   passthrough=passthrough, columns=tuple(dict.fromkeys(passthrough)),
                   collapse=len(set(passthrough)) != len(passthrough),
                   notes=tuple(c.note for c in (key, reason, reference) if c.note))


def _build_rows(blocks: Iterable[Block], layout: _Layout, fast: bool = True
                ) -> list[SourceRow]:
    """Rows in input order. A block whose every row passes the one-match checks (the usual
    case) is built by `fast_block`; any other block goes row by row through `_checked_row`
    and the rule-by-rule checks. `fast=False` sends every block that way (for tests).

    A sendable row claims its key, compared without case, unless an earlier one did: then
    it is a duplicate. Keys claimed are upper-cased: sendable keys are ASCII, where upper()
    equates exactly the keys lower() does.
    """
    rows: list[SourceRow] = []
    first: dict[str, int] = {}  # key in upper case -> the row that claimed it
    codes = dict(REASON_SPELLINGS)
    if layout.default_reason:
        codes[""] = layout.default_reason  # a blank reason cell takes --reason
    fast = fast and not layout.collapse
    for numbers, cells in blocks:
        if not (fast and fast_block(numbers, cells, layout, codes, first, rows)):
            rows.extend(_checked_row(number, row_cells, layout, first.setdefault)
                        for number, row_cells in zip(numbers, cells, strict=True))
    return rows


def fast_block(numbers: Sequence[int], cells: list[list[str]], layout: _Layout,
               codes: dict[str, str], first: dict[str, int], out: list[SourceRow]) -> bool:
    """Build a block's rows column by column (`map`, in C) if every row is a plain one: key
    accepted by `CLEAN_KEY`, reason cell one of `codes`, reference cell empty. Else build
    nothing, claim nothing and return False.

    Gives the rows `_checked_row` would: `CLEAN_KEY` accepts only keys `key_problem`
    accepts, unchanged by strip(); `codes` holds only cells `normalise_reason` maps to them.
    Public so the tests can count the blocks it takes and switch it off, to prove this.
    """
    # one int per row number, shared by the row and the claim: a range gives a new int each
    # time it is walked, and a million claims would hold a second million ints (~28 MB)
    numbers = list(numbers)
    keys = list(map(itemgetter(layout.key), cells))
    if not all(map(CLEAN_KEY.fullmatch, keys)):
        return False
    if layout.reference is not None and any(map(itemgetter(layout.reference), cells)):
        return False
    reasons = _block_reasons(cells, layout, codes)
    if reasons is None:
        return False
    # min() keeps the key itself when it is upper case already: no second copy to store
    owners = list(map(first.setdefault, map(min, keys, map(str.upper, keys)), numbers))
    built = list(map(SourceRow, numbers, keys, reasons, repeat(""), map(tuple, cells),
                     repeat(None), repeat(""), repeat(None), repeat(None),
                     repeat(layout.columns)))
    if any(map(ne, owners, numbers)):
        for index, (owner, number) in enumerate(zip(owners, numbers, strict=True)):
            if owner != number:
                built[index] = as_duplicate(built[index], owner)
    out.extend(built)
    return True


def _block_reasons(cells: list[list[str]], layout: _Layout, codes: dict[str, str]
                   ) -> Iterable[str] | None:
    """Each row's reason code, or None if a reason cell is not one of `codes`. The cells
    then hold one shared str per spelling: not a million copies of "02"."""
    if layout.reason is None:
        return repeat(layout.default_reason)
    spellings = list(map(itemgetter(layout.reason), cells))
    found = list(map(codes.get, spellings))
    if not all(found):
        return None
    deque(map(setitem, cells, repeat(layout.reason), map(_SHARED.__getitem__, spellings)),
          maxlen=0)
    return cast(list[str], found)


def _checked_row(number: int, cells: list[str], layout: _Layout,
                 claim: Callable[[str, int], int]) -> SourceRow:
    """A row checked rule by rule (`make_row`), marked `duplicate` if its key is claimed."""
    reason = "" if layout.reason is None else cells[layout.reason]
    values = tuple(cells)
    if layout.collapse:  # as a dict by name would: each name once, the last cell kept
        values = tuple(dict(zip(layout.passthrough, cells, strict=True)).values())
    row = make_row(
        number,
        key=cells[layout.key],
        reason=reason.strip() or layout.default_reason,
        reference="" if layout.reference is None else cells[layout.reference],
        cells=values,
        columns=layout.columns,
    )
    if row.status is not None:
        return row
    key = row.invoice_key  # sendable, so ASCII: upper() equates what lower() does
    owner = claim(key.upper(), number)
    if owner == number:
        return row
    return as_duplicate(row, owner)


def _report_safe_name(column: str) -> str:
    """An input column named like a report column is renamed so the report stays readable."""
    return f"input_{column}" if column in REPORT_COLUMNS else column
