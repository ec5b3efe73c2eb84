"""Hostile and broken input, end to end: real files, the real CLI, the simulator.

One table, one test. Each case writes a real file into tmp_path, runs
`batch-cancel run FILE --base-url SIM --report r.csv --no-progress` in-process against the
simulator and checks one of three outcomes:

* the file cannot be used: exit 2, a message naming the file and the fix, and not a single
  request (no token, no cancel);
* the file is fine but some rows are hostile: those rows are `invalid` in the report with the
  rule they broke, the simulator never saw their keys, and exactly the valid keys were
  cancelled, once each, with the row number the user sees;
* the file is fine (encodings, delimiters, quoted newlines, header below blank lines, Excel
  cell types): the values were read right and exactly the valid keys were cancelled, once.

The loader's rules are pinned one by one in test_loader.py (key rules, encodings, delimiters,
unreadable files at the loader level, with a bare exit-2 check through the CLI); this module
checks the same hazards as a user meets them, through the CLI, with the message, the report
and the simulator's request log, plus the cases test_loader.py does not have (merged headers,
decimal-comma and 16-digit Excel numbers, damaged workbook XML, UTF-16 without BOM, a
50 MB file, another tool's report, path-escaping keys).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import openpyxl
import pytest

from batch_cancel import plan
from batch_cancel.model import REPORT_COLUMNS
from tests.helpers import patch_cells, read_report

Build = Callable[[Path], Path]
OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
STATUSES = "succeeded, failed, invalid, duplicate, not_attempted"
BIG_ROWS = 600_000


# --- writing real files ----------------------------------------------------------------------


def csv_text(rows: Sequence[Sequence[str]], delimiter: str = ",") -> str:
    """Rows as CSV text (quoted where needed, CRLF like Excel)."""
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter).writerows(rows)
    return out.getvalue()


def text_file(name: str, text: str, encoding: str = "utf-8") -> Build:
    """A builder writing `text` in `encoding` (Python's codec, so utf-16 gets its BOM)."""
    return lambda tmp: raw_file(name, text.encode(encoding))(tmp)


def raw_file(name: str, data: bytes) -> Build:
    def build(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(data)
        return path
    return build


def csv_file(name: str, rows: Sequence[Sequence[str]], delimiter: str = ",",
             encoding: str = "utf-8") -> Build:
    return text_file(name, csv_text(rows, delimiter), encoding)


def workbook(rows: Sequence[Sequence[object]], *, start_row: int = 1,
             formats: Mapping[str, str] | None = None, merge: Sequence[str] = (),
             sheets: Mapping[str, Sequence[Sequence[object]]] | None = None
             ) -> openpyxl.Workbook:
    """A workbook whose first sheet holds `rows` from `start_row` (rows above left empty)."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Sheet1"
    for r, row in enumerate(rows, start=start_row):
        for c, value in enumerate(row, start=1):
            if value is not None:
                sheet.cell(row=r, column=c, value=value)
    for ref, number_format in (formats or {}).items():
        sheet[ref].number_format = number_format
    for ref in merge:
        sheet.merge_cells(ref)
    for title, more in (sheets or {}).items():
        other = book.create_sheet(title)
        for row in more:
            other.append(list(row))
    return book


def xlsx_file(name: str, rows: Sequence[Sequence[object]], *,
              patch: Mapping[str, tuple[str | None, str]] | None = None,
              **options: Any) -> Build:
    """A real .xlsx; `patch` rewrites cells as raw XML (formulas with cached values)."""
    def build(tmp: Path) -> Path:
        path = tmp / name
        workbook(rows, **options).save(path)
        if patch:
            patch_cells(path, dict(patch))
        return path
    return build


def xlsx_bytes(tmp: Path, rows: Sequence[Sequence[object]]) -> bytes:
    """The bytes of a small valid workbook (saved beside the case's file, then read)."""
    path = tmp / "source-workbook.xlsx"
    workbook(rows).save(path)
    return path.read_bytes()


def renamed_xlsx(name: str) -> Build:
    """A valid workbook saved under another name (a .csv, say)."""
    def build(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(xlsx_bytes(tmp, [["invoiceKey", "reason"], ["INV-X1", "01"]]))
        return path
    return build


def truncated_xlsx(tmp: Path) -> Path:
    """A valid workbook cut in half: the zip's central directory is gone."""
    whole = xlsx_bytes(tmp, [["invoiceKey", "reason"], *([f"INV{i}", "01"] for i in range(50))])
    path = tmp / "truncated.xlsx"
    path.write_bytes(whole[: len(whole) // 2])
    return path


def damaged_member(name: str, member: str) -> Build:
    """A workbook whose zip is sound but whose `member` XML stops halfway (a bad copy)."""
    def build(tmp: Path) -> Path:
        source = tmp / "source-workbook.xlsx"
        workbook([["invoiceKey", "reason"], *([f"INV{i}", "01"] for i in range(300))]).save(source)
        with zipfile.ZipFile(source) as archive:
            parts = {info.filename: archive.read(info.filename) for info in archive.infolist()}
        parts[member] = parts[member][: len(parts[member]) // 2]
        path = tmp / name
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for part, data in parts.items():
                archive.writestr(part, data)
        return path
    return build


def big_csv(tmp: Path) -> Path:
    """~50 MB, 600k rows of realistic width, written with one write of one joined string."""
    lines = [
        f"INV{i:09d},0{1 + i % 4},,Customer {i % 997:03d} GmbH,"
        f"2024-03-{1 + i % 28:02d},{i % 100000}.{i % 100:02d},EUR,"
        f"month-end correction batch {i % 50:02d} ok"
        for i in range(BIG_ROWS)
    ]
    header = ("Invoice Number,Reason,Document Reference ID,Customer,Invoice Date,Amount,"
              "Currency,Note")
    path = tmp / "big.csv"
    path.write_text("\n".join([header, *lines, ""]), encoding="utf-8")
    assert path.stat().st_size >= 50 * 2**20
    return path


def our_report(name: str, status: str) -> Build:
    """A file with every batch-cancel report column, as an edited or foreign report."""
    row = {"row": "2", "invoice_key": "INV-R1", "reason": "01", "status": status,
           "track_id": "bc-x-2"}
    return csv_file(name, [list(REPORT_COLUMNS), [row.get(c, "") for c in REPORT_COLUMNS]])


def hostile_key(key: str) -> Build:
    """A valid row, the hostile key, and a valid row after it."""
    return csv_file("keys.csv", [["Invoice Number", "Reason", "Customer"],
                                 ["INV-OK-1", "01", "before"], [key, "01", "hostile"],
                                 ["INV-OK-2", "02", "after"]])


# --- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """How to build the file and what must come of it.

    `error`: the run must stop with exit 2 and these fragments in the message.
    Otherwise `sent` maps each valid key to its row number (cancelled exactly once, nothing
    else cancelled), `invalid` maps each hostile key (as the report shows it) to a fragment of
    its message, and `values` maps a key to report columns it must carry.
    """

    build: Build
    args: tuple[str, ...] = ()
    error: tuple[str, ...] = ()
    sent: Mapping[str, int] = field(default_factory=dict)
    invalid: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    output: tuple[str, ...] = ()


SOCIETE = "Société Générale"
ACCENTED = [["Invoice Number", "Reason", "Customer"], ["INV-E1", "01", SOCIETE],
            ["INV-E2", "02", "Müller & Söhne, 100 €"]]
ACCENTED_SENT = {"INV-E1": 2, "INV-E2": 3}
ACCENTED_VALUES = {"INV-E1": {"Customer": SOCIETE},
                   "INV-E2": {"Customer": "Müller & Söhne, 100 €"}}
DELIMITED = [["invoiceKey", "reason", "note"], ["INV-D1", "1", "a,b;c\td"],
             ["INV-D2", "04", "plain"]]
DELIMITED_VALUES = {"INV-D1": {"note": "a,b;c\td", "reason": "01"}}
LONG_NOTE = ('Line, with "quotes"; and\ttabs and é ' * 3000)[:100_000]
MULTILINE_NOTE = "first line\nsecond, line\r\n\"third\" line"


CASES: dict[str, Case] = {
    # -- encodings: read right, sent -----------------------------------------------------------
    "utf-8 BOM": Case(csv_file("bom.csv", ACCENTED, encoding="utf-8-sig"),
                      sent=ACCENTED_SENT, values=ACCENTED_VALUES),
    "utf-8 BOM with --encoding utf-8": Case(
        csv_file("bom.csv", ACCENTED, encoding="utf-8-sig"), args=("--encoding", "utf-8"),
        sent=ACCENTED_SENT, values=ACCENTED_VALUES),
    "utf-16 BOM": Case(csv_file("utf16.csv", ACCENTED, encoding="utf-16"),
                       sent=ACCENTED_SENT, values=ACCENTED_VALUES),
    "utf-16 BOM tab .txt (Excel Unicode Text)": Case(
        csv_file("unicode.txt", ACCENTED, delimiter="\t", encoding="utf-16"),
        sent=ACCENTED_SENT, values=ACCENTED_VALUES),
    "cp1252 semicolons (Excel, French locale)": Case(
        csv_file("ansi.csv", ACCENTED, delimiter=";", encoding="cp1252"),
        sent=ACCENTED_SENT, values=ACCENTED_VALUES),
    "utf-16 without BOM": Case(csv_file("nobom.csv", ACCENTED, encoding="utf-16-le"),
                               error=("NUL bytes", "--encoding utf-16-le")),
    # -- delimiters ----------------------------------------------------------------------------
    "comma": Case(csv_file("comma.csv", DELIMITED), sent={"INV-D1": 2, "INV-D2": 3},
                  values=DELIMITED_VALUES),
    "semicolon": Case(csv_file("semi.csv", DELIMITED, delimiter=";"),
                      sent={"INV-D1": 2, "INV-D2": 3}, values=DELIMITED_VALUES),
    "tab in a .csv": Case(csv_file("tabs.csv", DELIMITED, delimiter="\t"),
                          sent={"INV-D1": 2, "INV-D2": 3}, values=DELIMITED_VALUES),
    "tab in a .tsv": Case(csv_file("tabs.tsv", DELIMITED, delimiter="\t"),
                          sent={"INV-D1": 2, "INV-D2": 3}, values=DELIMITED_VALUES),
    # -- quoted fields with newlines: a row is a record, numbered as such ----------------------
    "quoted newlines in a note": Case(
        csv_file("multiline.csv", [["invoiceKey", "reason", "note"],
                                   ["INV-Q1", "01", MULTILINE_NOTE], ["INV-Q2", "02", "x\ny"],
                                   ["INV-Q3", "03", "single"]]),
        sent={"INV-Q1": 2, "INV-Q2": 3, "INV-Q3": 4},
        values={"INV-Q1": {"note": MULTILINE_NOTE}, "INV-Q2": {"note": "x\ny"}}),
    "quoted newline inside a key": Case(
        csv_file("multikey.csv", [["invoiceKey", "reason"], ["INV-Q1", "01"],
                                  ["INV\nQ9", "01"], ["INV-Q3", "01"]]),
        sent={"INV-Q1": 2, "INV-Q3": 4}, invalid={"INV\nQ9": "control characters"}),
    # -- a header row that is not the first row ------------------------------------------------
    "csv blank lines above the header": Case(
        text_file("below.csv", "\r\n\r\n,,\r\n   \r\ninvoiceKey,reason,customer\r\n"
                               "INV-H1,01,A\r\n\r\nINV-H2,02,B\r\n"),
        sent={"INV-H1": 6, "INV-H2": 8}, values={"INV-H2": {"customer": "B"}}),
    "xlsx blank rows above the header": Case(
        xlsx_file("below.xlsx", [["invoiceKey", "reason", "customer"], ["INV-H1", "01", "A"],
                                 [], ["INV-H2", "02", "B"]], start_row=3),
        sent={"INV-H1": 4, "INV-H2": 6}, values={"INV-H2": {"customer": "B"}}),
    "title row above the header": Case(
        csv_file("titled.csv", [["Month-end corrections, March"], [],
                                ["invoiceKey", "reason"], ["INV-T1", "01"]]),
        sent={"INV-T1": 4}, output=("header on row 3",)),
    "title row forced as the header": Case(
        csv_file("titled.csv", [["Month-end corrections, March"], [],
                                ["invoiceKey", "reason"], ["INV-T1", "01"]]),
        args=("--header-row", "1"),
        error=("row 3 has 2 cells but the header has 1",
               "If row 1 is a title above the real header row, delete it")),
    # -- merged or duplicated header names -----------------------------------------------------
    "merged header cell over the key (xlsx)": Case(
        xlsx_file("merged.xlsx", [["Invoice Number", None, "Reason"], ["INV", "1", "01"],
                                  ["INV", "2", "01"]], merge=["A1:B1"]),
        error=("several columns could be the invoice key", "Invoice Number, Invoice Number (2)",
               "merged", "--key-column")),
    "merged header cell over a note (xlsx)": Case(
        xlsx_file("merged-note.xlsx", [["Invoice Number", "Reason", "Notes", None],
                                       ["INV-M1", "01", "a", "b"]], merge=["C1:D1"]),
        sent={"INV-M1": 2}, values={"INV-M1": {"Notes": "a", "Notes (2)": "b"}}),
    "duplicated key header (csv)": Case(
        csv_file("twice.csv", [["Invoice Number", "Invoice Number", "Reason"],
                               ["INV-A", "INV-B", "01"]]),
        error=("several columns could be the invoice key", "Invoice Number, Invoice Number (2)",
               "--key-column")),
    "duplicated key header (xlsx)": Case(
        xlsx_file("twice.xlsx", [["Invoice Number", "Reason", "Invoice Number"],
                                 ["INV-A", "01", "INV-B"]]),
        error=("several columns could be the invoice key", "Invoice Number, Invoice Number (2)",
               "--key-column")),
    "duplicated reason header": Case(
        csv_file("reasons.csv", [["invoiceKey", "Reason", "reason"], ["INV-A", "01", "02"]]),
        error=("several columns could be the reason", "Reason, reason", "--reason-column")),
    # -- Excel cell types ----------------------------------------------------------------------
    "xlsx numbers, dates and booleans": Case(
        xlsx_file("types.xlsx", [
            ["Invoice Number", "Reason", "Amount", "Invoiced", "Posted at", "Paid"],
            [12345678, 2, 1234.5, dt.date(2024, 3, 31), dt.datetime(2024, 3, 31, 13, 45), True],
            [4321, 3.0, 0.1, dt.datetime(2024, 2, 29), dt.datetime(2024, 2, 29, 0, 0, 5), False],
            [123456789012345, 4, -7, None, None, None],
        ], formats={"A3": "00000000"}),
        sent={"12345678": 2, "00004321": 3, "123456789012345": 4},
        values={"12345678": {"reason": "02", "Amount": "1234.5", "Invoiced": "2024-03-31",
                             "Posted at": "2024-03-31 13:45:00", "Paid": "TRUE"},
                "00004321": {"reason": "03", "Amount": "0.1", "Invoiced": "2024-02-29",
                             "Posted at": "2024-02-29 00:00:05", "Paid": "FALSE"},
                "123456789012345": {"reason": "04", "Amount": "-7"}}),
    "xlsx formulas with cached values": Case(
        xlsx_file("formulas.xlsx", [["invoiceKey", "reason", "flag"], ["p", "p", "p"],
                                    ["p", "p", "p"], ["INV-F3", "01", "p"]],
                  patch={"A2": ("str", '<f>"INV-F"&amp;2</f><v>INV-F2</v>'),
                         "B2": (None, "<f>1+1</f><v>2</v>"),
                         "C2": ("b", "<f>TRUE()</f><v>1</v>"),
                         "A3": ("e", "<f>1/0</f><v>#DIV/0!</v>"),
                         "B3": (None, "<f>0+1</f><v>1</v>"),
                         "C3": ("str", "<f>T(\"x\")</f><v>x</v>"),
                         "C4": ("str", "<f>NOW()</f>")}),
        sent={"INV-F2": 2, "INV-F3": 4}, invalid={"#DIV/0!": "Excel error value #DIV/0!"},
        values={"INV-F2": {"reason": "02", "flag": "TRUE"}, "INV-F3": {"flag": ""}}),
    "xlsx error cells": Case(
        xlsx_file("errors.xlsx", [["invoiceKey", "reason"], ["#N/A", "01"], ["INV-OK", "01"],
                                  ["#REF!", "01"]]),
        sent={"INV-OK": 3}, invalid={"#N/A": "Excel error value #N/A; fix the formula",
                                     "#REF!": "Excel error value #REF!"}),
    "xlsx formula never calculated": Case(
        xlsx_file("uncalculated.xlsx", [["invoiceKey", "reason"], ['="INV"&"9"', "01"],
                                        ["INV-OK", "01"]]),
        sent={"INV-OK": 3}, invalid={"": "invoice key is empty"}),
    # -- numbers in scientific notation: an ID Excel mangled ------------------------------------
    "csv scientific-notation key": Case(
        csv_file("sci.csv", [["invoiceKey", "reason"], ["1.23457E+15", "01"], ["INV-OK", "01"],
                             ["4.5e+12", "01"]]),
        sent={"INV-OK": 3}, invalid={"1.23457E+15": "scientific notation",
                                     "4.5e+12": "format the column as Text"}),
    "csv scientific-notation key with a decimal comma": Case(
        csv_file("sci-fr.csv", [["invoiceKey", "reason"], ["1,23457E+15", "01"],
                                ["INV-OK", "01"]], delimiter=";"),
        sent={"INV-OK": 3}, invalid={"1,23457E+15": "scientific notation"}),
    "xlsx 16-digit number keys": Case(
        xlsx_file("digits.xlsx", [["invoiceKey", "reason"], [1234567890123456, "01"],
                                  [9876543210987654.0, "01"], [1111111111111111, "01"],
                                  [999999999999999, "01"]], formats={"A4": "0"}),
        sent={"999999999999999": 5},
        invalid={"1.23456789012346E+15": "scientific notation",
                 "9.87654321098765E+15": "loses digits",
                 "1.11111111111111E+15": "scientific notation"}),
    # -- very long cells -----------------------------------------------------------------------
    "100,000-character note": Case(
        csv_file("long.csv", [["invoiceKey", "reason", "note"], ["INV-L1", "01", LONG_NOTE]]),
        sent={"INV-L1": 2}, values={"INV-L1": {"note": LONG_NOTE}}),
    "300-character key": Case(
        csv_file("longkey.csv", [["invoiceKey", "reason"], ["K" * 300, "01"], ["INV-L2", "01"]]),
        sent={"INV-L2": 3}, invalid={"K" * 300: "longer than 255 characters (300)"}),
    # -- a 50 MB file: read and planned, nothing sent (--dry-run) -------------------------------
    "50 MB csv": Case(big_csv, args=("--dry-run",),
                      output=(f"({BIG_ROWS} rows)", f"To send: {BIG_ROWS}",
                              "Dry run: nothing sent.")),
    # -- empty, header only --------------------------------------------------------------------
    "empty csv": Case(raw_file("empty.csv", b""), error=("the file is empty",)),
    "blank-lines-only csv": Case(raw_file("blank.csv", b"\r\n \r\n\t\r\n"),
                                 error=("the file is empty",)),
    "delimiters-only csv": Case(raw_file("commas.csv", b",,,\r\n,,,\r\n"),
                                error=("the file is empty",)),
    "empty xlsx (0 bytes)": Case(raw_file("empty.xlsx", b""), error=("the file is empty",)),
    "xlsx with no cells": Case(xlsx_file("nothing.xlsx", []), error=("the file is empty",)),
    "csv header only": Case(raw_file("header.csv", b"invoiceKey,reason\r\n,\r\n\r\n"),
                            error=("has a header row but no data rows", "nothing to do")),
    "xlsx header only": Case(xlsx_file("header.xlsx", [["invoiceKey", "reason"]]),
                             error=("has a header row but no data rows",)),
    "utf-16 header only": Case(text_file("header16.csv", "invoiceKey,reason\r\n", "utf-16"),
                               error=("has a header row but no data rows",)),
    # -- wrong extension -----------------------------------------------------------------------
    "csv named .xlsx": Case(raw_file("renamed.xlsx", b"invoiceKey,reason\r\nINV-X1,01\r\n"),
                            error=("not a valid .xlsx workbook", "Re-save it from Excel")),
    "xlsx named .csv": Case(renamed_xlsx("renamed.csv"),
                            error=("Excel workbook with a text extension", "rename it to .xlsx")),
    "pdf": Case(raw_file("invoices.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"),
                error=("unsupported file type '.pdf'", "use .csv, .tsv, .txt, .xlsx")),
    "no extension": Case(raw_file("invoices", b"invoiceKey,reason\nINV-X1,01\n"),
                         error=("unsupported file type '(no extension)'", "use .csv")),
    "old .xls": Case(raw_file("old.xls", OLE2_MAGIC + bytes(504)),
                     error=(".xls format is not supported", "save as .xlsx")),
    # -- corrupt or password-protected .xlsx ---------------------------------------------------
    "xlsx cut in half": Case(truncated_xlsx,
                             error=("not a valid .xlsx workbook", "Re-save it from Excel")),
    "xlsx with a damaged sheet": Case(
        damaged_member("damaged-sheet.xlsx", "xl/worksheets/sheet1.xml"),
        error=("the workbook is damaged", "'Sheet1'", "save it again as .xlsx")),
    "xlsx with a damaged workbook part": Case(
        damaged_member("damaged-book.xlsx", "xl/workbook.xml"),
        error=("not a valid .xlsx workbook", "Re-save it from Excel")),
    "password-protected xlsx": Case(raw_file("locked.xlsx", OLE2_MAGIC + bytes(4096)),
                                    error=("password-protected", "remove the password")),
    # -- a sheet name that does not exist --------------------------------------------------------
    "unknown sheet": Case(
        xlsx_file("sheets.xlsx", [["invoiceKey", "reason"], ["INV-S1", "01"]],
                  sheets={"Archive": [["invoiceKey", "reason"], ["INV-S2", "01"]]}),
        args=("--sheet", "March"),
        error=("no sheet named 'March'", "the sheets are: Sheet1, Archive", "--sheet")),
    "--sheet on a csv": Case(csv_file("plain.csv", [["invoiceKey", "reason"], ["INV-S1", "01"]]),
                             args=("--sheet", "Sheet1"),
                             error=("--sheet applies only to Excel files",)),
    # -- a report from another tool, or ours edited ----------------------------------------------
    "another tool's report": Case(
        csv_file("other-tool.csv", [["invoice_id", "status", "message", "retry"],
                                    ["INV-O1", "ERROR", "timeout", "true"],
                                    ["INV-O2", "OK", "", "false"]]),
        error=("no column for the reason code", "invoice_id, status, message, retry",
               "--reason-column", "--reason CODE")),
    "a report with statuses we do not know": Case(
        our_report("foreign.report.csv", "ERROR"),
        error=("row 2 has status 'ERROR'", f"not one of {STATUSES}")),
    # -- keys that try to escape the path, non-ASCII keys -----------------------------------------
    **{f"key {key!r}": Case(hostile_key(key), sent={"INV-OK-1": 2, "INV-OK-2": 4},
                            invalid={key: rule})
       for key, rule in [
           ("../INV1", "'/'"),
           ("INV%2F1", "'%'"),
           ("INV?x=1", "'?'"),
           ("INV#1", "'#'"),
           ("..", "'..'"),
           ("INV/../../oauth/token", "'/'"),
           ("%2e%2e", "'%'"),
           ("INV-\u00dc1", "non-ASCII"),      # INV-Ü1
           ("INV-\u04061", "non-ASCII"),      # Cyrillic I: looks like INV-I1
           ("INV-\u200b1", "non-ASCII"),      # a zero-width space inside
           ("INV\u00a01", "whitespace inside"),  # a no-break space, as pasted from a web page
       ]},
}


def params() -> list[Any]:
    return [pytest.param(case, id=name) for name, case in CASES.items()]


# --- the test --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", params())
def test_hostile_input(case: Case, tmp_path: Path, cli: Any, sim: Any,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = case.build(tmp_path)
    loader_seconds: list[float] = []
    load = plan.load

    def timed_load(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return load(*args, **kwargs)
        finally:
            loader_seconds.append(time.perf_counter() - started)

    monkeypatch.setattr(plan, "load", timed_load)
    report_path = tmp_path / "r.csv"
    result = cli("run", str(path), "--base-url", sim.url, "--report", str(report_path),
                 "--no-progress", *case.args, env=sim.env)
    print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB, loader "
          f"{sum(loader_seconds):.2f} s")

    if case.error:  # unusable: exit 2, the file and the fix named, nothing at all sent
        assert result.exit_code == 2, result.output
        assert path.name in result.output
        for fragment in case.error:
            assert fragment in result.output, (fragment, result.output)
        assert sim.stats.requests == []
        return

    for fragment in case.output:
        assert fragment in result.output, (fragment, result.output)
    if not case.sent and not case.invalid:  # a dry run: the plan, and nothing sent
        assert result.exit_code == 0, result.output
        assert sim.stats.requests == []
        return

    assert result.exit_code == (1 if case.invalid else 0), result.output
    report = {row["invoice_key"]: row for row in read_report(report_path)}
    assert set(report) == set(case.sent) | set(case.invalid)

    # exactly the valid keys were cancelled, once each, with the row number the user sees
    cancels = sim.stats.cancels()
    assert Counter(r.key for r in cancels) == dict.fromkeys(case.sent, 1)
    for record in cancels:
        track_id = {k.lower(): v for k, v in record.headers.items()}["zuora-track-id"]
        assert track_id.endswith(f"-{case.sent[record.key]}"), (record.key, track_id)
    assert sim.stats.token_requests == 1
    assert {r.key for r in sim.stats.requests if r.key is not None} == set(case.sent)
    for key, number in case.sent.items():
        assert (report[key]["row"], report[key]["status"]) == (str(number), "succeeded")

    # each hostile row is invalid, says why, and never reached the server in any spelling
    for key, rule in case.invalid.items():
        row = report[key]
        assert row["status"] == "invalid", row
        assert rule in row["error_message"], row["error_message"]
        assert (row["http_status"], row["attempts"], row["track_id"]) == ("", "0", ""), row
        if key:
            spellings = {key, quote(key, safe=""), quote(key)}
            assert not any(s in r.path for s in spellings for r in sim.stats.requests)

    for key, columns in case.values.items():
        for column, value in columns.items():
            assert report[key][column] == value, (key, column)
