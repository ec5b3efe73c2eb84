"""Read a corrections spreadsheet (or an earlier report) into validated rows.

Every cell is read as the text the user sees: leading zeros survive, an Excel number cell is
rendered with its number format, a formula gives its cached value. A file that cannot be read
raises `InputError` before anything is sent; a row that cannot be sent is marked `invalid` or
`duplicate` with a message saying which rule it broke.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import gc
import heapq
import io
import json
import re
import zipfile
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from itertools import islice, repeat
from operator import attrgetter, itemgetter, ne, setitem
from pathlib import Path
from typing import TextIO, cast

from ..model import REPORT_COLUMNS, REPORT_SIGNATURE, SourceRow, Status
from . import guard
from .columns import KEY_ALIASES, REASON_ALIASES, REFERENCE_ALIASES, ColumnError, resolve_column
from .header import HeaderError, find_header
from .sheetfacts import Block, CsvDialect, SheetFacts, split_hidden

CSV_EXTENSIONS = {".csv", ".txt", ".tsv"}
EXCEL_EXTENSIONS = {".xlsx", ".xlsm"}
ODS_EXTENSIONS = {".ods"}
SHEET_EXTENSIONS = EXCEL_EXTENSIONS | ODS_EXTENSIONS
JSONL_EXTENSIONS = {".jsonl"}
PARQUET_EXTENSION = ".parquet"
#: The message of a row hidden in the sheet (or filtered out), reported `skipped`.
HIDDEN_MESSAGE = "hidden in the sheet"

MAX_KEY_LENGTH = 255
REASONS = ("01", "02", "03", "04")
EXCEL_ERRORS = {"#N/A", "#VALUE!", "#REF!", "#DIV/0!", "#NUM!", "#NAME?", "#NULL!", "#SPILL!",
                "#CALC!", "#GETTING_DATA"}
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_REASON_NUMBER = re.compile(r"^0*([0-9]+)(?:\.0*)?$")
_SCIENTIFIC = re.compile(r"^[0-9](?:[.,][0-9]+)?[eE]\+?[0-9]+$")  # 1,23E+15: decimal comma
#: A key every rule of `key_problem` accepts, in one match: 1-255 printable ASCII characters
#: without space, / ? # % (every Excel error value starts with #) or "..", and not scientific
#: notation. Most keys are like this; any other key goes through `key_problem`, rule by rule.
_KEY_CHARACTERS = "".join(re.escape(chr(c)) for c in range(0x21, 0x7F) if chr(c) not in "/?#%")
_CLEAN_KEY = re.compile(rf"(?![0-9](?:[.,][0-9]+)?[eE]\+?[0-9]+\Z)(?!.*\.\.)"
                        rf"[{_KEY_CHARACTERS}]{{1,{MAX_KEY_LENGTH}}}")
#: The usual spellings of a reason cell and their code ("2" and "02" mean "02"); any other
#: cell goes through `normalise_reason`.
_REASON_SPELLINGS = {spelling: code for code in REASONS for spelling in (code, code[1:])}
#: One str object per spelling (and for a blank cell), for rows to share.
_SHARED = {spelling: spelling for spelling in (*_REASON_SPELLINGS, "")}
#: Rows are read and checked this many at a time: enough for the per-block work to run in C
#: (`map`, `islice`), few enough that redoing an odd block row by row costs little.
BLOCK_ROWS = 2048
#: Longest line of a CSV file read (see `_check_lines`).
MAX_LINE_BYTES = 1 * 2**20
#: From this many rows on, the loader hides what it built from the cyclic GC (`_plain_rows`).
FREEZE_ROWS = 100_000
#: What a damaged .xlsx raises inside openpyxl: XML errors (ParseError and lxml's are
#: SyntaxErrors), broken zip members, bad numbers in cells.
_DAMAGED_XLSX = (SyntaxError, zipfile.BadZipFile, zlib.error, EOFError, KeyError, OSError,
                 ValueError)
#: The largest magnitude Excel stores exactly (15 significant digits); beyond, digits are lost.
_EXCEL_EXACT = 10**15
_NUMBER_FORMAT = re.compile(
    r'^(?P<pre>(?:"[^"]*"|\\.)*)(?P<int>[#0,]+)(?:\.(?P<dec>[0#]+))?'
    r'(?P<post>(?:"[^"]*"|\\.|%)*)$'
)


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


def load(path: str | Path, options: LoadOptions | None = None) -> LoadedInput:
    """Read, resolve columns, normalise and validate a file. Raises `InputError` if unusable.

    The rows are read as a stream of blocks and turned into `SourceRow`s block by block, so
    the whole file is never held as text, as cell lists and as rows at the same time.
    """
    options = options or LoadOptions()
    path = Path(path)
    if path.suffix.lower() == PARQUET_EXTENSION:
        try:
            guard.check_path(path)
        except guard.HostileFile as exc:
            raise InputError(str(exc)) from None
        from .frames import load_parquet  # pandas only when asked

        return load_parquet(path, options, options.numbers_as_text)
    facts = SheetFacts()
    header, header_row, blocks = read_table(path, options, facts)
    return load_table(path, header, blocks, options, header_row, facts)


def load_table(path: Path, header: list[str], blocks: Iterable[Block], options: LoadOptions,
               header_row: int = 1, facts: SheetFacts | None = None) -> LoadedInput:
    """Columns, normalisation and validation of rows already read as text: a file's, or a
    DataFrame's (`frames.load_frame`), so both go through exactly the same rules. `path`
    names the source in messages."""
    facts = facts or SheetFacts()
    columns = unique_names(header)
    notes = [f"header on row {header_row} (the rows above it are not read)"] \
        if header_row > 1 else []
    if set(columns) >= REPORT_SIGNATURE:
        loaded = _load_report(path, columns, list(records_of(blocks)), options)
        loaded.notes[:0] = notes
        loaded.header_row, loaded.dialect = header_row, facts.dialect
        return loaded
    try:
        layout = _layout(path, columns, options)
    except InputError:
        # A damaged row below the header is the first thing to fix, as when the whole file
        # was read before the columns were looked at: read on, so that error wins.
        deque(blocks, maxlen=0)
        raise
    hidden: list[tuple[int, list[str]]] = []
    if facts.hidden_rows and not options.include_hidden:
        blocks = split_hidden(blocks, facts.hidden_rows, hidden)
    rows = reference_rule(_plain_rows(blocks, layout), options.require_reference)
    if hidden:
        skipped = [_hidden_row(number, cells, layout) for number, cells in hidden]
        rows = list(heapq.merge(rows, skipped, key=attrgetter("row")))
        notes.append(f"{len(hidden)} rows hidden in the sheet (or filtered out) are skipped; "
                     "pass --include-hidden to send them")
    _check_not_empty(path, rows)
    return LoadedInput(path, list(layout.passthrough), rows,
                       key_column=columns[layout.key],
                       reason_column="" if layout.reason is None else columns[layout.reason],
                       reference_column="" if layout.reference is None
                       else columns[layout.reference],
                       notes=notes + list(layout.notes), header_row=header_row,
                       hidden=len(hidden), dialect=facts.dialect)


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
                   default_reason=_default_reason(options.default_reason),
                   passthrough=passthrough, columns=tuple(dict.fromkeys(passthrough)),
                   collapse=len(set(passthrough)) != len(passthrough),
                   notes=tuple(c.note for c in (key, reason, reference) if c.note))


def _plain_rows(blocks: Iterable[Block], layout: _Layout) -> list[SourceRow]:
    """Every data row, validated, duplicates marked; the cyclic GC is paused meanwhile.

    A million rows are millions of new container objects, none of them garbage: left on,
    the collector would walk the growing heap again and again for nothing, and once more
    right after it is back on. So from FREEZE_ROWS rows on, `gc.freeze()` moves everything
    alive out of its sight (still freed as usual when unused). The price: a reference cycle
    among the objects alive then is never collected, a fair trade for a big file only.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        rows = _build_rows(blocks, layout)
        if len(rows) >= FREEZE_ROWS:
            gc.freeze()
        return rows
    finally:
        if enabled:
            gc.enable()


def _build_rows(blocks: Iterable[Block], layout: _Layout, fast: bool = True
                ) -> list[SourceRow]:
    """Rows in input order. A block whose every row passes the one-match checks (the usual
    case) is built by `_fast_block`; any other block goes row by row through `_checked_row`
    and the rule-by-rule checks. `fast=False` sends every block that way (for tests).

    A sendable row claims its key, compared without case, unless an earlier one did: then
    it is a duplicate. Keys claimed are upper-cased: sendable keys are ASCII, where upper()
    equates exactly the keys lower() does.
    """
    rows: list[SourceRow] = []
    first: dict[str, int] = {}  # key in upper case -> the row that claimed it
    codes = dict(_REASON_SPELLINGS)
    if layout.default_reason:
        codes[""] = layout.default_reason  # a blank reason cell takes --reason
    fast = fast and not layout.collapse
    for numbers, cells in blocks:
        if not (fast and _fast_block(numbers, cells, layout, codes, first, rows)):
            rows.extend(_checked_row(number, row_cells, layout, first.setdefault)
                        for number, row_cells in zip(numbers, cells, strict=True))
    return rows


def _fast_block(numbers: Sequence[int], cells: list[list[str]], layout: _Layout,
                codes: dict[str, str], first: dict[str, int], out: list[SourceRow]) -> bool:
    """Build a block's rows column by column (`map`, in C) if every row is a plain one: key
    accepted by `_CLEAN_KEY`, reason cell one of `codes`, reference cell empty. Else build
    nothing, claim nothing and return False.

    Gives the rows `_checked_row` would: `_CLEAN_KEY` accepts only keys `key_problem`
    accepts, unchanged by strip(); `codes` holds only cells `normalise_reason` maps to them.
    """
    keys = list(map(itemgetter(layout.key), cells))
    if not all(map(_CLEAN_KEY.fullmatch, keys)):
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
                built[index] = replace(built[index], status=Status.DUPLICATE,
                                       duplicate_of=owner, message=_duplicate_message(owner))
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
    return replace(row, status=Status.DUPLICATE, duplicate_of=owner,
                   message=_duplicate_message(owner))


def _duplicate_message(owner: int) -> str:
    return f"duplicate of row {owner} (same invoice key)"


def _default_reason(code: str | None) -> str:
    if code is None:
        return ""
    reason = normalise_reason(code)
    if reason not in REASONS:
        raise InputError(f"--reason {code!r} is not a reason code; use 01, 02, 03 or 04")
    return reason


def _report_safe_name(column: str) -> str:
    """An input column named like a report column is renamed so the report stays readable."""
    return f"input_{column}" if column in REPORT_COLUMNS else column


def _check_not_empty(path: Path, rows: list[SourceRow]) -> None:
    if not rows:
        raise InputError(f"{path}: the file has a header row but no data rows; nothing to do")


# --- reading files as text -------------------------------------------------------------------


def read_table(path: Path, options: LoadOptions, facts: SheetFacts | None = None
               ) -> tuple[list[str], int, Iterator[Block]]:
    """The header, its row number, and the non-blank data rows below it (with the row
    numbers the user sees) of a file; `facts` gets what the sheet says about its rows.

    The rows come as a stream of blocks: a damaged row raises `InputError` when reached.
    A file that attacks the reader (a device, a zip bomb, XML entities) is refused first.
    """
    facts = facts if facts is not None else SheetFacts()
    suffix = path.suffix.lower()
    try:
        guard.check_path(path)
        if suffix in SHEET_EXTENSIONS:
            guard.check_zip(path, "workbook" if suffix in EXCEL_EXTENSIONS else "spreadsheet")
    except guard.HostileFile as exc:
        raise InputError(str(exc)) from None
    if options.sheet is not None and suffix not in SHEET_EXTENSIONS:
        raise InputError(f"{path}: --sheet applies only to Excel files (.xlsx, .xlsm) and "
                         "OpenDocument spreadsheets (.ods)")
    if suffix in EXCEL_EXTENSIONS:
        blocks: Iterable[Block] = in_blocks(read_excel(path, options.sheet, facts))
    elif suffix in ODS_EXTENSIONS:
        blocks = in_blocks(_read_ods(path, options.sheet, facts))
    elif suffix in CSV_EXTENSIONS:
        blocks = read_csv(path, options.encoding, "\t" if suffix == ".tsv" else None, facts)
    elif suffix in JSONL_EXTENSIONS:
        blocks = in_blocks(read_jsonl(path))
    elif suffix == ".xls":
        raise InputError(f"{path}: the old .xls format is not supported; open it in Excel "
                         "(or LibreOffice) and save as .xlsx, then pass that file")
    else:
        raise InputError(f"{path}: unsupported file type {suffix or '(no extension)'!r}; "
                         "use .csv, .tsv, .txt, .xlsx, .xlsm, .ods, .parquet or a .jsonl "
                         "report")
    return split_header(path, blocks, options, facts)


def _read_ods(path: Path, sheet: str | None, facts: SheetFacts
              ) -> Iterator[tuple[int, list[str]]]:
    """Rows of an .ods sheet (see `opendocument`), its errors as `InputError`."""
    from .opendocument import OdsError, read_ods  # odfpy only for .ods files

    try:
        for number, texts in read_ods(path, sheet, facts):
            _check_cells(path, number, texts)
            yield number, texts
    except OdsError as exc:
        raise InputError(str(exc)) from None


def _check_cells(path: Path, number: int, texts: list[str]) -> None:
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


def decode_text(path: Path, raw: bytes, encoding: str | None) -> tuple[str, str]:
    """The text and the codec that gave it: `--encoding`, else by BOM, else UTF-8, else
    cp1252, else latin-1. A file that does not decode raises here, naming the byte."""
    if encoding:
        try:
            codecs.lookup(encoding)
            text = raw.decode(encoding)
            return text.removeprefix("\ufeff"), encoding  # utf-8, utf-16-le/-be keep the BOM
        except LookupError as exc:
            raise InputError(f"--encoding {encoding!r} is not an encoding Python knows") from exc
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: cannot be read as {encoding} ({exc.reason} at byte "
                             f"{exc.start}); try another --encoding") from exc
    if raw.startswith(codecs.BOM_UTF8):
        return raw[len(codecs.BOM_UTF8):].decode("utf-8", errors="strict"), "utf-8-sig"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16"), "utf-16"
    if b"\x00" in raw[:4096]:
        raise InputError(f"{path}: holds NUL bytes, so it is probably UTF-16 without a "
                         "byte-order mark; pass --encoding utf-16-le (or utf-16-be), or save "
                         "it again as CSV UTF-8")
    for candidate in ("utf-8", "cp1252", "latin-1"):
        try:
            return raw.decode(candidate), candidate
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


def sniff_delimiter(text: str) -> str:
    """The delimiter of the header line: whichever of `,` `;` tab it holds most."""
    first = _first_nonblank_line(text)
    counts = {d: first.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _first_nonblank_line(text: str) -> str:
    """`next(line for line in text.splitlines() if line.strip())`, without splitting the
    whole text: a growing head of it is split, less its last (maybe cut) line."""
    size = 1 << 16
    while True:
        head = text[:size]
        lines = head.splitlines()
        whole = size >= len(text)
        for line in lines if whole else lines[:-1]:
            if line.strip():
                return line
        if whole:
            return ""
        size *= 4


def read_csv(path: Path, encoding: str | None, delimiter: str | None,
             facts: SheetFacts | None = None) -> Iterator[Block]:
    """CSV/TSV rows as text, in blocks; a row is a record, so a quoted field may span lines.
    `facts.dialect` gets the delimiter and codec, for a report that opens the same way."""
    try:
        raw = guard.read_bounded(path)
    except guard.HostileFile as exc:
        raise InputError(str(exc)) from None
    if not raw or raw.isspace():
        raise InputError(f"{path}: the file is empty (no header row, no data)")
    if raw.startswith(b"PK\x03\x04") or raw.startswith(_OLE2_MAGIC):
        raise InputError(f"{path}: this is an Excel workbook with a text extension; "
                         "rename it to .xlsx")
    _check_lines(path, raw)
    text, codec = decode_text(path, raw, encoding)
    sep = delimiter or sniff_delimiter(text)
    if facts is not None:
        facts.dialect = CsvDialect(sep, codec)
    # newline="": the reader sees line endings untranslated, as csv requires.
    lines: TextIO
    if encoding:  # any codec Python knows, BOM dropped: read the text as decoded
        lines = io.StringIO(text, newline="")
    else:  # a codec checked on the whole file above: decode again as read, not held twice
        lines = io.TextIOWrapper(io.BytesIO(raw), codec, newline="")
    del text
    # The stdlib reader, not pandas: pandas refuses blank lines above the header and rows
    # wider than the first line even when the extra cells are empty (trailing delimiters);
    # `split_header` decides about those.
    reader = csv.reader(lines, delimiter=sep, quotechar='"', strict=True)
    number = 1  # a row is a record: row numbers count records, not lines
    while True:
        rows: list[list[str]] = []
        try:
            rows.extend(islice(reader, BLOCK_ROWS))  # keeps the rows read before an error
        except csv.Error as exc:
            if rows:  # a bad row above the unreadable one is reported first, as row by row
                yield range(number, number + len(rows)), rows
            raise InputError(f"{path}: not a readable {'tab' if sep == chr(9) else repr(sep)}-"
                             f"separated file: {exc} (near line {reader.line_num}). "
                             "Check quotes and the delimiter") from exc
        if not rows:
            return
        yield range(number, number + len(rows)), rows
        number += len(rows)


def _check_lines(path: Path, raw: bytes) -> None:
    """Refuse a line of more than MAX_LINE_BYTES before the CSV reader splits it: millions
    of cells in one line would cost gigabytes as Python strings.

    Any line that long holds a whole aligned window of half that size without a line break,
    so looking at each window once (a few hundred `find`s in C for the largest file) is
    enough; a line between half and the whole limit may be refused too.
    """
    window = MAX_LINE_BYTES // 2
    for start in range(0, len(raw) - window + 1, window):
        end = start + window
        if raw.find(b"\n", start, end) < 0 and raw.find(b"\r", start, end) < 0:
            line = raw.count(b"\n", 0, start) + 1
            raise InputError(f"{path}: line {line} is longer than {MAX_LINE_BYTES // 2**10} KB"
                             "; no invoice row needs one. Check the file (is it CSV?)")


def read_jsonl(path: Path) -> Iterator[tuple[int, list[str]]]:
    """A JSON-lines report: the first line's keys are the header, one object per line.
    A line longer than MAX_LINE_BYTES is refused before any is parsed."""
    try:
        _check_lines(path, guard.read_bounded(path))
    except guard.HostileFile as exc:
        raise InputError(str(exc)) from None
    columns: list[str] | None = None
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: line {number} is not JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise InputError(f"{path}: line {number} is not a JSON object")
            if columns is None:
                columns = list(record)
                yield 1, columns
            yield number + 1, ["" if record.get(c) is None else str(record.get(c))
                               for c in columns]
    if columns is None:
        raise InputError(f"{path}: the file is empty (no header row, no data)")


def read_excel(path: Path, sheet: str | None, facts: SheetFacts | None = None
               ) -> Iterator[tuple[int, list[str]]]:
    """Rows of one worksheet as the text Excel shows (number formats applied, cached formulas).
    `facts` gets the sheet's merged ranges and hidden rows before the first row comes."""
    import openpyxl  # imported here: a CSV-only run does not pay for it

    from .xlsx_scan import default_sheet, scan_sheet

    facts = facts if facts is not None else SheetFacts()
    with path.open("rb") as handle:
        head = handle.read(8)
    if head.startswith(_OLE2_MAGIC):
        raise InputError(
            f"{path}: the workbook is password-protected (encrypted) or in the old binary "
            "format; open it in Excel, remove the password (File > Info > Protect Workbook) "
            "and save it as .xlsx"
        )
    if not head:
        raise InputError(f"{path}: the file is empty (0 bytes)")
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except _DAMAGED_XLSX as exc:
        raise InputError(f"{path}: not a valid .xlsx workbook (corrupt, or another format "
                         f"renamed to .xlsx): {exc}. Re-save it from Excel as .xlsx") from exc
    try:
        if sheet is None:
            worksheet = default_sheet(book)
            if worksheet is None:
                raise InputError(f"{path}: every sheet is hidden; pass --sheet NAME (the "
                                 f"sheets are: {', '.join(book.sheetnames)})")
        elif sheet in book.sheetnames:
            worksheet = book[sheet]
        else:
            raise InputError(f"{path}: no sheet named {sheet!r}; the sheets are: "
                             f"{', '.join(book.sheetnames)}. Pass one of them with --sheet")
        if not hasattr(worksheet, "iter_rows"):
            raise InputError(f"{path}: sheet {worksheet.title!r} is a chart, not a table")
        worksheet.reset_dimensions()  # trust the cells, not a possibly stale dimension tag
        facts.sheet = worksheet.title
        scan_sheet(worksheet, facts)
        rows = enumerate(worksheet.iter_rows(min_row=1), start=1)
        while True:
            try:  # the sheet XML is parsed lazily: a damaged member fails here, not at open
                number, cells = next(rows)
            except StopIteration:
                break
            except _DAMAGED_XLSX as exc:
                raise InputError(
                    f"{path}: the workbook is damaged; sheet {worksheet.title!r} cannot be read "
                    f"({type(exc).__name__}: {exc}). Open it in Excel (let it repair the file) "
                    "and save it again as .xlsx"
                ) from exc
            texts = [excel_text(c.value, getattr(c, "number_format", "General")) for c in cells]
            _check_cells(path, number, texts)
            yield number, texts
    finally:
        book.close()


def excel_text(value: object, number_format: str | None) -> str:
    """The text Excel would show for a cell value under its number format."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, int | float):
        if abs(value) >= _EXCEL_EXACT:  # digits past the 15th are lost: shown as General does
            return _general(value)
        return format_number(value, number_format or "General")
    return str(value)


def format_number(value: float, number_format: str) -> str:
    """Render a number for the common formats: General, 0, 00000000, 0.00, #,##0, 0%, @,
    with literal text around the digits (`"INV"00000`). Other formats fall back to General."""
    fmt = number_format.split(";")[0].strip()
    fmt = re.sub(r"\[[^\]]*\]|_.|\*.", "", fmt)  # colours, conditions, padding
    match = _NUMBER_FORMAT.match(fmt)
    if fmt in ("", "General", "@") or not match:
        return _general(value)
    percent = match.group("post").endswith("%")
    digits = _digits(value * 100 if percent else value, match.group("int"), match.group("dec"))
    return _literal(match.group("pre")) + digits + _literal(match.group("post"))


def _digits(value: float, integer_part: str, decimals: str | None) -> str:
    """Digits for a `0`/`#`/`,` pattern, rounded half away from zero as Excel does."""
    places = len(decimals or "")
    exact = Decimal(repr(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    spec = ("," if "," in integer_part else "") + f".{places}f"
    whole, _, frac = f"{abs(exact):{spec}}".partition(".")
    width = integer_part.count("0")
    if len(whole.replace(",", "")) < width:
        whole = whole.replace(",", "").zfill(width)
    elif width == 0 and whole == "0":
        whole = ""  # "#.00" shows 0.5 as ".50"
    sign = "-" if exact < 0 else ""
    return sign + whole + ("." + frac if frac else "")


def _literal(text: str) -> str:
    """The literal text of a format part: quoted strings and backslash-escaped characters."""
    return re.sub(r'"([^"]*)"|\\(.)', lambda m: m.group(1) or m.group(2) or "", text)


def _general(value: float) -> str:
    """Excel's General format: integers without '.0', up to 15 significant digits otherwise."""
    if isinstance(value, int) and abs(value) < _EXCEL_EXACT:
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXCEL_EXACT:
        return str(int(value))
    text = format(Decimal(value) if isinstance(value, int) else value, ".15g")
    return text.replace("e+", "E+").replace("e-", "E-")


# --- rows --------------------------------------------------------------------------------------


def normalise_reason(text: str) -> str:
    """`1`, `1.0`, `01` and ` 01 ` all mean reason `01`; anything else is kept for the message."""
    text = text.strip()
    match = _REASON_NUMBER.match(text)
    if match:
        return f"{int(match.group(1)):02d}"
    return text


def key_problem(key: str) -> str:
    """Why a (trimmed) invoice key cannot be sent, or "" if it can."""
    if not key:
        return "invoice key is empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"invoice key is longer than {MAX_KEY_LENGTH} characters ({len(key)})"
    if key in EXCEL_ERRORS:
        return f"invoice key is the Excel error value {key}; fix the formula or the cell"
    if _SCIENTIFIC.match(key):
        return ("invoice key looks like a number Excel turned into scientific notation "
                f"({key}), which loses digits; format the column as Text and re-enter the keys")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        return "invoice key contains control characters"
    if any(ch.isspace() for ch in key):
        return "invoice key has whitespace inside"
    if not key.isascii():
        return "invoice key contains non-ASCII characters"
    for bad in ("/", "?", "#", "%"):
        if bad in key:
            return f"invoice key contains {bad!r}, which no Zuora invoice key has"
    if ".." in key:
        return "invoice key contains '..'"
    return ""


def row_problem(key: str, reason: str, reference: str) -> str:
    """The first rule a row breaks, or "" if it can be sent."""
    problem = key_problem(key)
    if problem:
        return problem
    if not reason:
        return "reason is empty; fill the reason column (01-04) or pass --reason CODE"
    if reason not in REASONS:
        return f"reason {reason[:20]!r} is not one of 01, 02, 03, 04"
    if reference and reason != "01":
        return (f"documentReferenceID is given with reason {reason}; "
                "Zuora accepts it only with reason 01 (Mexico)")
    if reference and problem_in_reference(reference):
        return problem_in_reference(reference)
    return ""


def problem_in_reference(reference: str) -> str:
    """A document reference goes in a JSON body, so only length and control characters matter."""
    if len(reference) > MAX_KEY_LENGTH:
        return f"documentReferenceID is longer than {MAX_KEY_LENGTH} characters"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in reference):
        return "documentReferenceID contains control characters"
    return ""


def make_row(number: int, key: str, reason: str, reference: str, cells: tuple[str, ...],
             columns: tuple[str, ...]) -> SourceRow:
    """A normalised row, marked `invalid` with the broken rule if it cannot be sent."""
    key = key.strip()
    reason = normalise_reason(reason)
    reference = reference.strip()
    problem = row_problem(key, reason, reference)
    return SourceRow(row=number, invoice_key=key, reason=reason,
                     document_reference_id=reference, cells=cells, columns=columns,
                     status=Status.INVALID if problem else None, message=problem)


#: Why a reason-01 row without a documentReferenceID is flagged.
MISSING_REFERENCE = ("reason 01 without a documentReferenceID: Zuora accepts it, but Mexico's "
                     "SAT requires the replacing document for motive 01")


def reference_rule(rows: list[SourceRow], require: bool) -> list[SourceRow]:
    """Flag reason-01 rows that name no replacing document: a warning the plan and the
    report carry, or (`--require-reference`) `invalid`, never sent."""
    out = []
    for row in rows:
        if row.status is None and row.reason == "01" and not row.document_reference_id:
            row = (replace(row, status=Status.INVALID, message=MISSING_REFERENCE
                           + "; fill the reference column or drop --require-reference")
                   if require else replace(row, warning=MISSING_REFERENCE))
        out.append(row)
    return out


def mark_duplicates(rows: list[SourceRow]) -> list[SourceRow]:
    """A row whose key an earlier sendable row already has is `duplicate`, pointing at it.

    Keys compare without case: Zuora invoice numbers do not distinguish case, and a second
    cancel of the same invoice is exactly what must never be sent. Rows carried over from an
    earlier report as `succeeded` claim their key first.
    """
    first: dict[str, int] = {}
    for row in rows:
        if row.status in (None, Status.SUCCEEDED, Status.SKIPPED):
            first.setdefault(row.invoice_key.lower(), row.row)
    out = []
    for row in rows:
        owner = first.get(row.invoice_key.lower())
        if row.status is None and owner is not None and owner != row.row:
            row = replace(row, status=Status.DUPLICATE, duplicate_of=owner,
                          message=f"duplicate of row {owner} (same invoice key)")
        out.append(row)
    return out


# --- an earlier report as input ------------------------------------------------------------

#: Statuses re-run by default when a report is the input: never `succeeded` (a second cancel).
DEFAULT_RERUN = frozenset({Status.FAILED, Status.NOT_ATTEMPTED, Status.INVALID})
#: Zuora error categories no resend can change (not found, invalid value, not cancelable...):
#: such a `failed` row is sent again only once the user edits it, or with --include-final.
FINAL_CATEGORIES = frozenset({10, 11, 20, 21, 22, 23, 27, 30, 40, 45, 90})
_INPUT_PREFIX = "input_"


@dataclass(frozen=True, slots=True)
class _OwnColumns:
    """The user's own key, reason and reference columns in a report (names in the report)."""

    key: str | None
    reason: str | None
    reference: str | None


def _own_columns(path: Path, passthrough: list[str], options: LoadOptions) -> _OwnColumns:
    """Find, among a report's pass-through columns, the ones the original input had.

    They hold what the user sees and edits; the derived `invoice_key`/`reason`/
    `document_reference_id` are what batch-cancel made of them. A column renamed for the
    report (`reason` became `input_reason`) is found under its original name.
    """
    original = {(c[len(_INPUT_PREFIX):] if c.startswith(_INPUT_PREFIX)
                 and c[len(_INPUT_PREFIX):] in REPORT_COLUMNS else c): c for c in passthrough}
    names = list(original)

    def find(what: str, aliases: frozenset[str], override: str | None, flag: str
             ) -> str | None:
        try:
            found = resolve_column(path, names, what, aliases, override, flag).column
        except ColumnError as exc:
            if override is not None:
                raise InputError(str(exc)) from None
            return None  # two candidates: keep to the columns batch-cancel derived
        return None if found is None else original[found]

    return _OwnColumns(
        find("invoice key", KEY_ALIASES, options.key_column, "--key-column"),
        find("reason", REASON_ALIASES, options.reason_column, "--reason-column"),
        find("document reference", REFERENCE_ALIASES, options.reference_column,
             "--reference-column"))


def _user_fields(values: dict[str, str], own: _OwnColumns) -> tuple[str, str, str]:
    """Key, reason and reference of a report row: the user's own cells win over derived ones.

    An empty key or reason cell of the user's falls back to the derived value (the reason may
    have come from --reason; the derived key may be what the user corrected); an emptied
    reference is taken as meant (a reference given with the wrong reason is fixed so).
    """
    key = values[own.key] if own.key and values[own.key].strip() else values["invoice_key"]
    reason = (values[own.reason] if own.reason and values[own.reason].strip()
              else values.get("reason", ""))
    reference = (values[own.reference] if own.reference
                 else values.get("document_reference_id", ""))
    return key, reason, reference


def _edited(values: dict[str, str], key: str, reason: str, reference: str) -> bool:
    """Whether the user changed what a row sends since the report was written."""
    return (key.strip() != values["invoice_key"].strip()
            or normalise_reason(reason) != values.get("reason", "").strip()
            or reference.strip() != values.get("document_reference_id", "").strip())


def final_failure(values: dict[str, str]) -> bool:
    """A `failed` row whose answer no resend can change: Zuora refused it for good, and no
    request of ours is in doubt (timeouts, 5xx, stopped runs and in-doubt rows can change)."""
    if values.get("status", "").strip() != Status.FAILED or _was_in_doubt(values):
        return False
    code = values.get("error_code", "").strip()
    return code.isdigit() and int(code) % 100 in FINAL_CATEGORIES


def _was_in_doubt(values: dict[str, str]) -> bool:
    """The report marks rows whose last request may have been applied; reports written before
    the `in_doubt` column said so only in the message."""
    if "in_doubt" in values:
        return values["in_doubt"].strip() == "yes"
    return values.get("error_message", "").startswith("in doubt")


def _load_report(path: Path, columns: list[str], records: list[tuple[int, list[str]]],
                 options: LoadOptions) -> LoadedInput:
    """Rows of an earlier report: selected statuses are re-validated, the rest carried over.

    A selected row is re-sent with the user's own cells (so a corrected cell is what goes
    out), in doubt if the report says so; a `failed` row Zuora refused for good is left out
    unless the user edited it or passes --include-final.
    """
    only = options.only if options.only is not None else DEFAULT_RERUN
    if Status.SUCCEEDED in only:
        raise InputError("--only succeeded is refused: those invoices are already cancelled, "
                         "and a second cancel is what batch-cancel never sends")
    passthrough = [c for c in columns if c not in REPORT_COLUMNS]
    names = tuple(passthrough)
    own = _own_columns(path, passthrough, options)
    rows: list[SourceRow] = []
    left_out: Counter[str] = Counter()
    for number, cells in records:
        values = dict(zip(columns, cells, strict=True))
        extra = tuple(values[c] for c in passthrough)
        try:
            original = int(values["row"])
        except ValueError:
            original = number
        try:
            earlier = Status(values["status"].strip())
        except ValueError as exc:
            raise InputError(f"{path}: row {number} has status {values['status']!r}, which is "
                             f"not one of {', '.join(s.value for s in Status)}") from exc
        key, reason, reference = _user_fields(values, own)
        resend = earlier in only and (options.include_final or not final_failure(values)
                                      or _edited(values, key, reason, reference))
        if resend:
            row = make_row(original, key, reason, reference, extra, names)
            if row.status is None and _was_in_doubt(values):
                row = replace(row, in_doubt=True)
            rows.append(row)
            continue
        if earlier in only:
            left_out[values.get("error_code", "").strip()] += 1
        carried = {c: values.get(c, "") for c in REPORT_COLUMNS}
        rows.append(SourceRow(row=original, invoice_key=values["invoice_key"].strip(),
                              reason=values.get("reason", "").strip(),
                              document_reference_id=values.get("document_reference_id", ""),
                              cells=extra, columns=names, status=earlier,
                              message=values.get("error_message", ""), carried=carried))
    _check_not_empty(path, rows)
    numbers = [r.row for r in rows]
    if len(set(numbers)) != len(numbers):
        raise InputError(f"{path}: the report's 'row' column repeats a row number; "
                         "was the report edited? Restore unique row numbers")
    notes = []
    if left_out:
        codes = ", ".join(f"{code} x{n}" for code, n in left_out.most_common(5))
        notes.append(f"left out: {left_out.total()} failed rows whose answer was final "
                     f"({codes}); edit them, or pass --include-final to send them again")
    return LoadedInput(path, passthrough,
                       mark_duplicates(reference_rule(rows, options.require_reference)),
                       is_report=True, key_column=own.key or "invoice_key",
                       reason_column=own.reason or "reason",
                       reference_column=own.reference or "document_reference_id", notes=notes)
