"""Excel workbooks (.xlsx, .xlsm): one worksheet's rows as the text Excel shows.

Every cell is read as the user sees it: leading zeros survive, a number cell is rendered with
its number format, a formula gives its cached value. A key Excel already mangled (15 digits
at most, scientific notation) is shown as Excel shows it, so the rules of `validate` can say
what went wrong.
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
import zlib
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Context, Decimal
from pathlib import Path
from typing import Any

from .loaded import InputError
from .sheetfacts import SheetFacts
from .table import check_cells
from .xlsx_scan import default_sheet, scan_sheet

#: How a legacy .xls (or an encrypted .xlsx) file starts: an OLE2 compound document.
OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
#: What a damaged .xlsx raises inside openpyxl: XML errors (ParseError and lxml's are
#: SyntaxErrors), broken zip members, bad numbers in cells.
_DAMAGED_XLSX = (SyntaxError, zipfile.BadZipFile, zlib.error, EOFError, KeyError, OSError,
                 ValueError)
#: The largest magnitude Excel stores exactly (15 significant digits); beyond, digits are lost.
_EXCEL_EXACT = 10**15
#: General's 15 significant digits, for an int cell past them (a float has its own `.15g`)
_GENERAL_DIGITS = Context(prec=15)
_NUMBER_FORMAT = re.compile(
    r'^(?P<pre>(?:"[^"]*"|\\.)*)(?P<int>[#0,]+)(?:\.(?P<dec>[0#]+))?'
    r'(?P<post>(?:"[^"]*"|\\.|%)*)$'
)


def read_excel(path: Path, sheet: str | None, facts: SheetFacts | None = None
               ) -> Iterator[tuple[int, list[str]]]:
    """Rows of one worksheet as the text Excel shows (number formats applied, cached formulas).
    `facts` gets the sheet's merged ranges and hidden rows before the first row comes."""
    import openpyxl  # imported here: a CSV-only run does not pay for it

    facts = facts if facts is not None else SheetFacts()
    _check_head(path)
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except _DAMAGED_XLSX as exc:
        raise InputError(f"{path}: not a valid .xlsx workbook (corrupt, or another format "
                         f"renamed to .xlsx): {exc}. Re-save it from Excel as .xlsx") from exc
    try:
        worksheet = _worksheet(path, book, sheet)
        worksheet.reset_dimensions()  # trust the cells, not a possibly stale dimension tag
        facts.sheet = worksheet.title
        scan_sheet(worksheet, facts)
        yield from _sheet_rows(path, worksheet)
    finally:
        book.close()


def _check_head(path: Path) -> None:
    """Refuse, by its first bytes, an encrypted or old binary workbook and an empty file:
    openpyxl would only say "not a zip file"."""
    with path.open("rb") as handle:
        head = handle.read(8)
    if head.startswith(OLE2_MAGIC):
        raise InputError(
            f"{path}: the workbook is password-protected (encrypted) or in the old binary "
            "format; open it in Excel, remove the password (File > Info > Protect Workbook) "
            "and save it as .xlsx"
        )
    if not head:
        raise InputError(f"{path}: the file is empty (0 bytes)")


def _worksheet(path: Path, book: Any, sheet: str | None) -> Any:
    """The sheet `--sheet` names, else the first visible one; never a chart sheet."""
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
    return worksheet


def _sheet_rows(path: Path, worksheet: Any) -> Iterator[tuple[int, list[str]]]:
    """The numbered rows of a worksheet as text. The sheet XML is parsed lazily, so a damaged
    member fails here, row by row, not when the workbook opens."""
    rows = enumerate(worksheet.iter_rows(min_row=1), start=1)
    while True:
        try:
            number, cells = next(rows)
        except StopIteration:
            return
        except _DAMAGED_XLSX as exc:
            raise InputError(
                f"{path}: the workbook is damaged; sheet {worksheet.title!r} cannot be read "
                f"({type(exc).__name__}: {exc}). Open it in Excel (let it repair the file) "
                "and save it again as .xlsx"
            ) from exc
        texts = [excel_text(c.value, getattr(c, "number_format", "General")) for c in cells]
        check_cells(path, number, texts)
        yield number, texts


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
    if isinstance(value, int):  # no trailing zeros: 10**15 shows as 1E+15, as the float does
        text = format(Decimal(value).normalize(_GENERAL_DIGITS), "g")
    else:
        text = format(value, ".15g")
    return text.replace("e+", "E+").replace("e-", "E-")

