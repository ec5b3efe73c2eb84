"""Read an OpenDocument spreadsheet (.ods, as LibreOffice saves it) as the text the user sees.

Read with `odfpy` directly, not with pandas' `odf` engine (which uses odfpy too): pandas
turns each cell into a typed value (1234 formatted `00000000` becomes the number 1234, a
leading zero is lost, a date becomes a Timestamp) and knows nothing of hidden rows, while the
file itself stores, for every cell, the text its spreadsheet showed (`<text:p>`, number
format and cached formula result applied). That saved text is what is read here, as Excel's
is for .xlsx; pandas and numpy would also be a large dependency for one format. odfpy parses
with `defusedxml`, so entity declarations are refused, and `guard.check_zip` has bounded the
parts' sizes before it runs.

Rows and cells may be stored once with a repeat count (LibreOffice writes the empty rest of a
sheet as one row repeated a million times): blank repeats are skipped without being expanded,
and a repeated row or cell with content is expanded up to MAX_ROWS / MAX_COLUMNS only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .sheetfacts import SheetFacts

TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
STYLE = "urn:oasis:names:tc:opendocument:xmlns:style:1.0"
#: Most rows (counting repeats) and columns read from a sheet: Excel's own limits.
MAX_ROWS = 1_048_576
MAX_COLUMNS = 16_384
#: Most cells (counting repeats) read from a sheet: a few repeat counts cannot make billions.
MAX_CELLS = 5_000_000
#: Largest content.xml parsed: odfpy holds the whole document as objects (about 20 times the
#: XML's size), so this bounds the memory a .ods can take: 8 MB is about 20,000 rows as
#: LibreOffice writes them, read in under 300 MB and 5 s.
MAX_CONTENT_BYTES = 8 * 2**20


class OdsError(Exception):
    """The .ods cannot be read; the message names the file and the fix."""


class _Discard:
    """A stream that remembers whether anything was written (odfpy prints a part it could
    not parse instead of raising)."""

    def __init__(self) -> None:
        self.written = False

    def write(self, text: str) -> int:
        self.written = self.written or bool(text)
        return len(text)

    def flush(self) -> None:
        """Nothing is kept."""


def read_ods(path: Path, sheet: str | None, facts: SheetFacts) -> Iterator[tuple[int, list[str]]]:
    """Rows of one sheet as text; hidden and filtered-out rows and merges go in `facts`."""
    table = _table(path, sheet, _load(path))
    facts.sheet = str(table.attributes.get((TABLE, "name"), ""))
    yield from _rows(path, table, facts)


def _load(path: Path) -> Any:
    """The parsed document, or `OdsError` for a damaged or foreign file."""
    import zipfile

    from odf.opendocument import load

    try:
        with zipfile.ZipFile(path) as archive:
            size = archive.getinfo("content.xml").file_size
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise OdsError(f"{path}: not a valid .ods spreadsheet (corrupt, or another format "
                       f"renamed to .ods): {exc}. Save it again from your spreadsheet "
                       "program as .ods or .xlsx") from exc
    if size > MAX_CONTENT_BYTES:
        raise OdsError(f"{path}: the sheet is too big to read as .ods "
                       f"({size / 2**20:.0f} MB of XML; at most {MAX_CONTENT_BYTES // 2**20} MB)."
                       " Save it as .xlsx or CSV, which are read as a stream")
    printed = _Discard()
    try:
        with contextlib.redirect_stdout(printed):
            document = load(str(path))
    except Exception as exc:  # odfpy raises many kinds; every one means "cannot be read"
        raise OdsError(f"{path}: not a valid .ods spreadsheet ({type(exc).__name__}: {exc}). "
                       "Save it again from your spreadsheet program") from exc
    if printed.written:
        raise OdsError(f"{path}: the spreadsheet is damaged (its XML cannot be parsed). Open it "
                       "in your spreadsheet program and save it again")
    return document


def _table(path: Path, sheet: str | None, document: Any) -> Any:
    """The sheet to read: `--sheet NAME`, else the first sheet that is not hidden."""
    tables = [t for t in document.spreadsheet.childNodes if t.qname == (TABLE, "table")]
    names = [str(t.attributes.get((TABLE, "name"), "")) for t in tables]
    if sheet is not None:
        if sheet not in names:
            raise OdsError(f"{path}: no sheet named {sheet!r}; the sheets are: "
                           f"{', '.join(names)}. Pass one of them with --sheet")
        return tables[names.index(sheet)]
    hidden = _hidden_table_styles(document)
    for table in tables:
        if table.attributes.get((TABLE, "style-name")) not in hidden:
            return table
    raise OdsError(f"{path}: the file is empty (no visible sheet); pass --sheet NAME")


def _hidden_table_styles(document: Any) -> set[str]:
    """Names of table styles that hide their sheet (`table:display="false"`)."""
    hidden: set[str] = set()
    for style in document.automaticstyles.childNodes:
        for properties in getattr(style, "childNodes", []):
            if properties.qname == (STYLE, "table-properties") and \
                    properties.attributes.get((TABLE, "display")) == "false":
                hidden.add(str(style.attributes.get((STYLE, "name"))))
    return hidden


def _rows(path: Path, table: Any, facts: SheetFacts) -> Iterator[tuple[int, list[str]]]:
    """Numbered rows of a table (rows inside row groups and header-row blocks included)."""
    number = cells = 0
    for row in _row_elements(table):
        repeat = _count(row, "number-rows-repeated")
        hidden = row.attributes.get((TABLE, "visibility"), "visible") != "visible"
        texts = _cells(path, row, number + 1, facts)
        if not any(t.strip() for t in texts):
            number += repeat  # the empty rest of a sheet: skipped, never expanded
            continue
        cells += repeat * len(texts)
        if number + repeat > MAX_ROWS or cells > MAX_CELLS:
            raise OdsError(f"{path}: the sheet has more than {MAX_ROWS} rows or "
                           f"{MAX_CELLS} cells; split it into smaller files")
        for _ in range(repeat):
            number += 1
            if hidden:
                facts.hidden_rows.add(number)
            yield number, list(texts)


def _row_elements(element: Any) -> Iterator[Any]:
    """table:table-row elements in order, also inside table:table-row-group and
    table:table-header-rows."""
    for child in element.childNodes:
        qname = getattr(child, "qname", None)
        if qname == (TABLE, "table-row"):
            yield child
        elif qname in ((TABLE, "table-row-group"), (TABLE, "table-header-rows"),
                       (TABLE, "table-rows")):
            yield from _row_elements(child)


def _cells(path: Path, row: Any, number: int, facts: SheetFacts) -> list[str]:
    """A row's cells as text; trailing blank cells dropped, repeats expanded (bounded)."""
    texts: list[str] = []
    blanks = 0  # blank cells seen but not yet added: only added when content follows
    for cell in row.childNodes:
        if getattr(cell, "qname", None) not in ((TABLE, "table-cell"),
                                                (TABLE, "covered-table-cell")):
            continue
        repeat = _count(cell, "number-columns-repeated")
        text = cell_text(cell) if cell.qname == (TABLE, "table-cell") else ""
        if not text:
            blanks += repeat
            continue
        if len(texts) + blanks + repeat > MAX_COLUMNS:
            raise OdsError(f"{path}: row {number} has more than {MAX_COLUMNS} columns")
        texts.extend([""] * blanks)
        blanks = 0
        span = _count(cell, "number-columns-spanned")
        if span > 1:
            column = len(texts) + 1
            facts.merges.append((number, column, number + _count(cell, "number-rows-spanned")
                                 - 1, column + span - 1))
        texts.extend([text] * repeat)
    return texts


def _count(element: Any, attribute: str) -> int:
    """A positive repeat or span count (1 when absent or not a number)."""
    value = element.attributes.get((TABLE, attribute), "1")
    try:
        return max(1, int(value))
    except ValueError:
        return 1


def cell_text(cell: Any) -> str:
    """The text a cell shows: its paragraphs joined by newlines; without any, its value."""
    paragraphs = [p for p in cell.childNodes if getattr(p, "qname", None) == (TEXT, "p")]
    if paragraphs:
        return "\n".join(_inline_text(p) for p in paragraphs)
    for attribute in ("string-value", "value", "date-value", "time-value", "boolean-value"):
        value = cell.attributes.get((OFFICE, attribute))
        if value is not None:
            return str(value)
    return ""


def _inline_text(element: Any) -> str:
    """The text of a paragraph: text nodes, spans and links, `text:s` spaces, tabs, breaks;
    annotations (comments) left out."""
    parts: list[str] = []
    for node in element.childNodes:
        qname = getattr(node, "qname", None)
        if qname is None:
            parts.append(str(getattr(node, "data", "")))
        elif qname == (TEXT, "s"):
            parts.append(" " * _space_count(node))
        elif qname == (TEXT, "tab"):
            parts.append("\t")
        elif qname == (TEXT, "line-break"):
            parts.append("\n")
        elif qname != (OFFICE, "annotation"):
            parts.append(_inline_text(node))
    return "".join(parts)


def _space_count(node: Any) -> int:
    value = node.attributes.get((TEXT, "c"), "1")
    try:
        return min(max(1, int(value)), 1024)
    except ValueError:
        return 1
