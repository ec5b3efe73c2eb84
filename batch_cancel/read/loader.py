"""Read a corrections spreadsheet (or an earlier report) into validated rows.

This module dispatches: by the file's extension to a reader (`text`, `excel`, `opendocument`,
`frames` for Parquet), then by the header to a plain file's rows (`rows`) or an earlier
report's (`earlier_report`). A file that cannot be read raises `InputError` before anything
is sent; a row that cannot be sent is marked `invalid` or `duplicate` with a message saying
which rule it broke.

`load`, `LoadOptions`, `LoadedInput` and `InputError` are the read stage's public names and
are importable from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from ..model import REPORT_SIGNATURE
from . import guard
from .earlier_report import load_report
from .excel import read_excel
from .loaded import InputError, LoadedInput, LoadOptions
from .rows import load_plain
from .sheetfacts import Block, SheetFacts
from .table import check_cells, in_blocks, records_of, split_header, unique_names
from .text import read_csv, read_jsonl

__all__ = ["InputError", "LoadOptions", "LoadedInput", "load", "load_table", "read_table"]

CSV_EXTENSIONS = {".csv", ".txt", ".tsv"}
EXCEL_EXTENSIONS = {".xlsx", ".xlsm"}
ODS_EXTENSIONS = {".ods"}
SHEET_EXTENSIONS = EXCEL_EXTENSIONS | ODS_EXTENSIONS
JSONL_EXTENSIONS = {".jsonl"}
PARQUET_EXTENSION = ".parquet"


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
    if set(columns) >= REPORT_SIGNATURE:
        loaded = load_report(path, columns, list(records_of(blocks)), options)
    else:
        loaded = load_plain(path, columns, blocks, options, facts)
    if header_row > 1:
        loaded.notes.insert(0, f"header on row {header_row} (the rows above it are not read)")
    loaded.header_row, loaded.dialect = header_row, facts.dialect
    return loaded


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
    return split_header(path, _blocks(path, suffix, options, facts), options, facts)


def _blocks(path: Path, suffix: str, options: LoadOptions, facts: SheetFacts
            ) -> Iterable[Block]:
    """The rows of a file, header included, by the reader its extension names."""
    if suffix in EXCEL_EXTENSIONS:
        return in_blocks(read_excel(path, options.sheet, facts))
    if suffix in ODS_EXTENSIONS:
        return in_blocks(_read_ods(path, options.sheet, facts))
    if suffix in CSV_EXTENSIONS:
        return read_csv(path, options.encoding, "\t" if suffix == ".tsv" else None, facts)
    if suffix in JSONL_EXTENSIONS:
        return in_blocks(read_jsonl(path))
    if suffix == ".xls":
        raise InputError(f"{path}: the old .xls format is not supported; open it in Excel "
                         "(or LibreOffice) and save as .xlsx, then pass that file")
    raise InputError(f"{path}: unsupported file type {suffix or '(no extension)'!r}; "
                     "use .csv, .tsv, .txt, .xlsx, .xlsm, .ods, .parquet or a .jsonl report")


def _read_ods(path: Path, sheet: str | None, facts: SheetFacts
              ) -> Iterator[tuple[int, list[str]]]:
    """Rows of an .ods sheet (see `opendocument`), its errors as `InputError`."""
    from .opendocument import OdsError, read_ods  # odfpy only for .ods files

    try:
        for number, texts in read_ods(path, sheet, facts):
            check_cells(path, number, texts)
            yield number, texts
    except OdsError as exc:
        raise InputError(str(exc)) from None

