"""Behaviour of the loader, pinned on real files written to tmp_path.

The loader decides what is sent: every cell must be read as the text the user sees, every row
that cannot be sent must say why, and every file that cannot be read must stop the run before a
single request (checked at the end through the CLI against the simulator).
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from batch_cancel.model import REPORT_COLUMNS, SourceRow, Status
from batch_cancel.read.excel import excel_text
from batch_cancel.read.loader import InputError, LoadedInput, LoadOptions, load
from batch_cancel.read.validate import MAX_KEY_LENGTH, problem_in_reference
from tests.helpers import patch_cells

MakeFile = Callable[..., Path]
OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


# --- helpers -------------------------------------------------------------------------------


def read(path: Path, **options: object) -> LoadedInput:
    """Load `path` with the given LoadOptions fields."""
    return load(path, LoadOptions(**options))  # type: ignore[arg-type]


def by_row(loaded: LoadedInput) -> dict[int, SourceRow]:
    """The loaded rows keyed by the row number the user sees."""
    return {row.row: row for row in loaded.rows}


def only_row(loaded: LoadedInput) -> SourceRow:
    """The single data row of a one-row file."""
    assert len(loaded.rows) == 1, loaded.rows
    return loaded.rows[0]


def write_bytes(path: Path, data: bytes) -> Path:
    """Write raw bytes (for encodings and broken files) and return the path."""
    path.write_bytes(data)
    return path


def write_xlsx(path: Path, rows: list[list[object]]) -> Path:
    """A plain workbook with one sheet, for the shared bad-file builders."""
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    book.save(path)
    return path


# --- every cell read as text -----------------------------------------------------------------


def test_csv_key_keeps_leading_zeros(make_csv: MakeFile) -> None:
    """A CSV key such as 000123 is read as text, zeros included."""
    path = make_csv([["invoiceKey", "reason"], ["000123", "01"]])
    assert only_row(read(path)).invoice_key == "000123"


def test_xlsx_text_key_keeps_leading_zeros(make_xlsx: MakeFile) -> None:
    """A text cell 000123 in a workbook is read with its zeros."""
    path = make_xlsx([["invoiceKey", "reason"], ["000123", "01"]])
    assert only_row(read(path)).invoice_key == "000123"


@pytest.mark.parametrize("reason", ["1", "1.0", "01", " 1 "])
def test_csv_reason_spellings_mean_01(make_csv: MakeFile, reason: str) -> None:
    """Reason 1, 1.0, 01 and ' 1 ' (as Excel and people write it) all become 01."""
    row = only_row(read(make_csv([["invoiceKey", "reason"], ["INV1", reason]])))
    assert (row.reason, row.status, row.message) == ("01", None, "")


@pytest.mark.parametrize("reason", [1, 1.0])
def test_xlsx_numeric_reason_means_01(make_xlsx: MakeFile, reason: float) -> None:
    """An Excel number cell 1 or 1.0 in the reason column becomes 01."""
    row = only_row(read(make_xlsx([["invoiceKey", "reason"], ["INV1", reason]])))
    assert (row.reason, row.status) == ("01", None)


def test_xlsx_number_format_zero_pads_key(make_xlsx: MakeFile) -> None:
    """A number 1234 shown through format 00000000 reads 00001234, never 1234 or 1234.0."""
    path = make_xlsx([["invoiceKey", "reason"], [1234, "01"]], formats={"A2": "00000000"})
    row = only_row(read(path))
    assert row.invoice_key == "00001234"
    assert row.extra["invoiceKey"] == "00001234"


@pytest.mark.parametrize("stored", ["987654.0", "9.87654E5"])
def test_xlsx_general_integer_float_has_no_decimal_point(make_xlsx: MakeFile,
                                                        stored: str) -> None:
    """A General-format float holding an integer (987654.0) reads as 987654, without '.0'."""
    path = make_xlsx([["invoiceKey", "reason", "amount"], ["placeholder", "01", "placeholder"]])
    patch_cells(path, {"A2": ("n", f"<v>{stored}</v>"), "C2": ("n", "<v>5.0</v>")})
    row = only_row(read(path))
    assert (row.invoice_key, row.extra["amount"]) == ("987654", "5")


def test_xlsx_formula_cells_read_as_cached_values(make_xlsx: MakeFile) -> None:
    """A formula cell gives the value Excel cached, formatted, never the formula text."""
    path = make_xlsx(
        [["invoiceKey", "reason", "flag"], ["p", "p", "p"], ["p", "p", "p"], ["p", "p", "p"]],
        formats={"A3": "00000000"},
    )
    patch_cells(path, {
        "A2": ("str", '<f>"INV"&amp;TEXT(42,"00000")</f><v>INV00042</v>'),
        "B2": (None, "<f>0+1</f><v>1</v>"),
        "C2": ("b", "<f>TRUE()</f><v>1</v>"),
        "A3": (None, "<f>1000+234</f><v>1234</v>"),
        "B3": ("str", '<f>"0"&amp;"2"</f><v>02</v>'),
        "C3": ("b", "<f>FALSE()</f><v>0</v>"),
        "A4": ("e", "<f>VLOOKUP(1,Z:Z,1,FALSE)</f><v>#N/A</v>"),
        "B4": (None, "<f>2*2</f><v>4</v>"),
        "C4": ("str", "<f>T(\"x\")</f><v>x</v>"),
    })
    rows = by_row(read(path))
    assert (rows[2].invoice_key, rows[2].reason, rows[2].extra["flag"]) == ("INV00042", "01",
                                                                           "TRUE")
    assert (rows[3].invoice_key, rows[3].reason, rows[3].extra["flag"]) == ("00001234", "02",
                                                                           "FALSE")
    assert rows[4].status is Status.INVALID
    assert "#N/A" in rows[4].message and "Excel error" in rows[4].message
    assert not any(v.startswith("=") for r in rows.values() for v in r.extra.values())


def test_xlsx_booleans_and_dates_read_as_text(make_xlsx: MakeFile) -> None:
    """Boolean cells read TRUE/FALSE, dates read ISO (time only when there is one)."""
    path = make_xlsx([
        ["invoiceKey", "reason", "paid", "invoiced"],
        ["INV1", "01", True, dt.datetime(2024, 1, 5)],
        ["INV2", "01", False, dt.datetime(2024, 1, 5, 10, 30)],
    ])
    rows = by_row(read(path))
    assert (rows[2].extra["paid"], rows[2].extra["invoiced"]) == ("TRUE", "2024-01-05")
    assert (rows[3].extra["paid"], rows[3].extra["invoiced"]) == ("FALSE", "2024-01-05 10:30:00")


@pytest.mark.parametrize("error", ["#N/A", "#REF!"])
def test_xlsx_error_cell_key_is_invalid_naming_the_error(make_xlsx: MakeFile,
                                                        error: str) -> None:
    """An Excel error cell (#N/A, #REF!) as key makes the row invalid, naming the error."""
    row = only_row(read(make_xlsx([["invoiceKey", "reason"], [error, "01"]])))
    assert row.status is Status.INVALID
    assert error in row.message and "Excel error" in row.message


# --- blank rows, row numbers, sheets ---------------------------------------------------------


def test_csv_blank_rows_skipped_and_row_numbers_kept(tmp_path: Path) -> None:
    """Blank lines (above the header too, or just delimiters) are skipped; numbers stay."""
    path = write_bytes(tmp_path / "in.csv",
                       b"\n\ninvoiceKey,reason\nINV1,01\n\n,\n,,\nINV2,01\n   \nINV3,01,\n")
    loaded = read(path)
    assert [(r.row, r.invoice_key) for r in loaded.rows] == [(4, "INV1"), (8, "INV2"),
                                                            (10, "INV3")]


def test_xlsx_blank_rows_skipped_and_row_numbers_kept(make_xlsx: MakeFile) -> None:
    """Blank sheet rows (above the header too) are skipped; numbers are Excel's row numbers."""
    path = make_xlsx([[], [None, None], ["invoiceKey", "reason"], ["INV1", "01"], [],
                      [None, ""], ["INV2", "01"]])
    assert [(r.row, r.invoice_key) for r in read(path).rows] == [(4, "INV1"), (7, "INV2")]


def test_xlsx_reads_only_the_chosen_sheet(make_xlsx: MakeFile) -> None:
    """--sheet picks one worksheet; without it, only the first is read."""
    path = make_xlsx([["invoiceKey", "reason"], ["FIRST1", "01"]],
                     extra_sheets={"Second": [["invoiceKey", "reason"], ["SECOND1", "02"],
                                              ["SECOND2", "03"]]})
    assert [r.invoice_key for r in read(path).rows] == ["FIRST1"]
    assert [r.invoice_key for r in read(path, sheet="Second").rows] == ["SECOND1", "SECOND2"]


def test_xlsx_unknown_sheet_is_input_error_listing_sheets(make_xlsx: MakeFile) -> None:
    """An unknown --sheet is refused with the names of the sheets that exist."""
    path = make_xlsx([["invoiceKey", "reason"], ["INV1", "01"]], sheet="Data",
                     extra_sheets={"Notes": [["x"]]})
    with pytest.raises(InputError, match="Nope") as info:
        read(path, sheet="Nope")
    assert "Data, Notes" in str(info.value) and path.name in str(info.value)


def test_sheet_option_on_csv_is_input_error(make_csv: MakeFile) -> None:
    """--sheet on a CSV is refused rather than silently ignored."""
    path = make_csv([["invoiceKey", "reason"], ["INV1", "01"]])
    with pytest.raises(InputError, match="--sheet"):
        read(path, sheet="Sheet1")


# --- columns -------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["invoiceKey", "Invoice Key", "invoice_number", "INVOICE ID",
                                    "invoice", " Invoice-Number "])
def test_key_column_aliases_ignore_case_spaces_underscores(make_csv: MakeFile,
                                                          header: str) -> None:
    """The key column is found by any alias, whatever its case, spaces or underscores."""
    loaded = read(make_csv([[header, "reason"], ["INV1", "01"]]))
    assert only_row(loaded).invoice_key == "INV1"
    assert loaded.key_column == header.strip()


@pytest.mark.parametrize("header", ["reason", "Reason Code", "cancel_reason", "REASON"])
def test_reason_column_aliases(make_csv: MakeFile, header: str) -> None:
    """The reason column is found as reason, Reason Code or cancel_reason."""
    loaded = read(make_csv([["invoiceKey", header], ["INV1", "3"]]))
    assert only_row(loaded).reason == "03"
    assert loaded.reason_column == header


@pytest.mark.parametrize("header", ["documentReferenceID", "Document Reference ID"])
def test_reference_column_aliases(make_csv: MakeFile, header: str) -> None:
    """The documentReferenceID column is found by its API name or its spelled-out name."""
    row = only_row(read(make_csv([["invoiceKey", "reason", header], ["INV1", "01", "R-77"]])))
    assert (row.document_reference_id, row.status) == ("R-77", None)


def test_column_overrides_pick_any_named_columns(make_csv: MakeFile) -> None:
    """--key-column, --reason-column and --reference-column name columns no alias matches."""
    path = make_csv([["Ref", "Why", "Folio", "invoiceKey"], ["INV9", "1", "F-1", "OTHER"]])
    loaded = read(path, key_column="Ref", reason_column="why", reference_column="FOLIO")
    row = only_row(loaded)
    assert (row.invoice_key, row.reason, row.document_reference_id) == ("INV9", "01", "F-1")
    assert (loaded.key_column, loaded.reason_column, loaded.reference_column) == (
        "Ref", "Why", "Folio")


def test_key_column_override_exact_name_wins_over_lookalike(make_csv: MakeFile) -> None:
    """--key-column invoiceKey takes that column, not an earlier 'Invoice Key' look-alike."""
    path = make_csv([["Invoice Key", "invoiceKey", "reason"], ["WRONG", "RIGHT", "01"]])
    assert only_row(read(path, key_column="invoiceKey")).invoice_key == "RIGHT"
    assert only_row(read(path, key_column="Invoice Key")).invoice_key == "WRONG"


def test_column_override_naming_no_column_is_input_error(make_csv: MakeFile) -> None:
    """An override that names no column is refused, listing the columns seen."""
    path = make_csv([["invoiceKey", "reason"], ["INV1", "01"]])
    with pytest.raises(InputError, match=r"--reason-column 'Motive' names no column.*reason"):
        read(path, reason_column="Motive")


def test_default_reason_fills_missing_column_and_blank_cells(make_csv: MakeFile) -> None:
    """--reason applies to every row without a reason: no column, or a blank cell."""
    assert only_row(read(make_csv([["invoiceKey"], ["INV1"]]), default_reason="2")).reason == "02"
    path = make_csv([["invoiceKey", "reason"], ["INV1", ""], ["INV2", "03"]])
    rows = by_row(read(path, default_reason="04"))
    assert (rows[2].reason, rows[3].reason) == ("04", "03")


def test_invalid_default_reason_is_input_error(make_csv: MakeFile) -> None:
    """--reason 07 is refused before any row is read."""
    with pytest.raises(InputError, match="--reason '07'"):
        read(make_csv([["invoiceKey"], ["INV1"]]), default_reason="07")


def test_missing_reason_column_without_default_is_input_error(make_csv: MakeFile) -> None:
    """No reason column and no --reason is refused, naming both fixes."""
    with pytest.raises(InputError, match=r"--reason-column.*--reason CODE"):
        read(make_csv([["invoiceKey"], ["INV1"]]))


@pytest.mark.parametrize("header", [
    ["Invoice Key", "invoice_key", "reason"],
    ["invoiceKey", "invoiceKey", "reason"],
    ["invoiceKey", "reason", "REASON"],
    ["invoiceKey", "reason", "documentReferenceID", "Document Reference ID"],
])
def test_ambiguous_columns_are_input_error(make_csv: MakeFile, header: list[str]) -> None:
    """Two columns that could both be the key (or reason, or reference) are refused."""
    path = make_csv([header, ["INV1"] * len(header)])
    with pytest.raises(InputError, match="several columns could be"):
        read(path)


def test_missing_key_column_names_columns_and_flag(make_csv: MakeFile) -> None:
    """No key column is refused, listing the columns seen and --key-column."""
    path = make_csv([["Customer", "Amount", "reason"], ["ACME", "10", "01"]])
    with pytest.raises(InputError) as info:
        read(path)
    message = str(info.value)
    assert "Customer, Amount, reason" in message and "--key-column" in message
    assert path.name in message


def test_other_columns_pass_through_untouched(make_csv: MakeFile) -> None:
    """Columns the loader does not use are kept in `extra` exactly as written, in order."""
    path = make_csv([["Customer", "invoiceKey", "Reason Code", "Amount", "Note"],
                     [" ACME ", " INV1 ", "1", "0012.50", "a;b, c"]])
    loaded = read(path)
    row = only_row(loaded)
    assert loaded.columns == ["Customer", "invoiceKey", "Reason Code", "Amount", "Note"]
    assert row.extra == {"Customer": " ACME ", "invoiceKey": " INV1 ", "Reason Code": "1",
                         "Amount": "0012.50", "Note": "a;b, c"}
    assert row.invoice_key == "INV1"


def test_input_columns_named_like_report_columns_are_prefixed(make_csv: MakeFile) -> None:
    """An input column named like a report column (status) passes through as input_status."""
    path = make_csv([["invoiceKey", "reason", "status"], ["INV1", "01", "open"]])
    loaded = read(path)
    assert loaded.columns == ["invoiceKey", "input_reason", "input_status"]
    assert only_row(loaded).extra["input_status"] == "open"


# --- CSV dialects and encodings --------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_csv_delimiter_is_detected(make_csv: MakeFile, delimiter: str) -> None:
    """Comma, semicolon and tab separated files are all read without an option."""
    path = make_csv([["invoiceKey", "reason", "customer"], ["INV1", "01", "Smith, Jones; Co"]],
                    delimiter=delimiter)
    row = only_row(read(path))
    assert (row.invoice_key, row.reason, row.extra["customer"]) == ("INV1", "01",
                                                                    "Smith, Jones; Co")


def test_tsv_extension_means_tab_separated(tmp_path: Path) -> None:
    """A .tsv file is split on tabs even when its header holds more commas than tabs."""
    data = b"invoiceKey\treason\tnotes, comments, etc\nINV1\t01\ta, b, c\n"
    row = only_row(read(write_bytes(tmp_path / "in.tsv", data)))
    assert (row.invoice_key, row.reason, row.extra["notes, comments, etc"]) == ("INV1", "01",
                                                                               "a, b, c")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_csv_unicode_encodings_are_detected(make_csv: MakeFile, encoding: str) -> None:
    """UTF-8, UTF-8 with BOM and UTF-16 with BOM are read without an option."""
    path = make_csv([["invoiceKey", "reason", "customer"], ["INV1", "01", "Société Générale"]],
                    encoding=encoding)
    loaded = read(path)
    assert loaded.key_column == "invoiceKey"  # no BOM glued to the first header
    assert only_row(loaded).extra["customer"] == "Société Générale"


def test_csv_cp1252_semicolon_file_is_read(tmp_path: Path) -> None:
    """A French Excel export (cp1252, ';') reads its accents right."""
    data = "invoiceKey;reason;customer\r\nINV1;1;Société Générale\r\n".encode("cp1252")
    row = only_row(read(write_bytes(tmp_path / "in.csv", data)))
    assert (row.invoice_key, row.reason, row.extra["customer"]) == ("INV1", "01",
                                                                    "Société Générale")


def test_csv_explicit_encoding_overrides_detection(tmp_path: Path) -> None:
    """--encoding cp1251 reads a Cyrillic file that detection would take for cp1252."""
    data = "invoiceKey,reason,customer\nINV1,01,Газпром\n".encode("cp1251")
    path = write_bytes(tmp_path / "in.csv", data)
    assert only_row(read(path)).extra["customer"] != "Газпром"
    assert only_row(read(path, encoding="cp1251")).extra["customer"] == "Газпром"


def test_csv_unknown_encoding_is_input_error(make_csv: MakeFile) -> None:
    """An --encoding Python does not know is refused."""
    with pytest.raises(InputError, match="--encoding 'klingon'"):
        read(make_csv([["invoiceKey", "reason"], ["INV1", "01"]]), encoding="klingon")


def test_csv_quoted_newlines_keep_record_numbering(tmp_path: Path) -> None:
    """A quoted field spanning lines is one row; later rows are numbered by record."""
    data = b'invoiceKey,reason,note\nINV1,01,"line one\nline two\r\nline three"\nINV2,01,x\n'
    loaded = read(write_bytes(tmp_path / "in.csv", data))
    rows = by_row(loaded)
    assert sorted(rows) == [2, 3]
    assert rows[2].extra["note"] == "line one\nline two\r\nline three"
    assert rows[3].invoice_key == "INV2"


def test_csv_unterminated_quote_is_input_error(tmp_path: Path) -> None:
    """An unterminated quote is refused instead of swallowing the rest of the file."""
    path = write_bytes(tmp_path / "in.csv", b'invoiceKey,reason,note\nINV1,01,"oops\nINV2,01,x\n')
    with pytest.raises(InputError, match=r"in\.csv.*quotes"):
        read(path)


# --- row rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "rule"), [
    ("", "empty"),
    ("INV 1", "whitespace inside"),
    ("INV\u00a01", "whitespace inside"),
    ("INV/1", "'/'"),
    ("INV?1", "'?'"),
    ("INV#1", "'#'"),
    ("INV%1", "'%'"),
    ("INV..1", "'..'"),
    ("INVé1", "non-ASCII"),
    ("INV\x011", "control characters"),
    ("INV\x7f1", "control characters"),
    ("A" * 256, "longer than 255"),
    ("1.23457E+15", "scientific notation"),
    ("#N/A", "Excel error value #N/A"),
])
def test_invalid_key_names_the_rule(make_csv: MakeFile, key: str, rule: str) -> None:
    """Each key rule marks the row invalid with a message naming that rule."""
    row = only_row(read(make_csv([["invoiceKey", "reason", "note"], [key, "01", "x"]])))
    assert row.status is Status.INVALID
    assert rule in row.message


@pytest.mark.parametrize("key", [" INV1 ", "A" * 255, "INV-1_2.3", "00012"])
def test_valid_keys_are_sendable(make_csv: MakeFile, key: str) -> None:
    """Keys with outer spaces (trimmed), 255 characters, or - _ . are sent."""
    row = only_row(read(make_csv([["invoiceKey", "reason"], [key, "01"]])))
    assert (row.invoice_key, row.status, row.message) == (key.strip(), None, "")


@pytest.mark.parametrize(("reason", "rule"), [
    ("05", "'05' is not one of 01, 02, 03, 04"),
    ("0", "'00' is not one of"),
    ("cancel", "'cancel' is not one of"),
    ("1.5", "'1.5' is not one of"),
    ("", "reason is empty"),
])
def test_reason_outside_01_to_04_is_invalid(make_csv: MakeFile, reason: str, rule: str) -> None:
    """A reason that is not 01-04 (or missing) makes the row invalid, saying so."""
    row = only_row(read(make_csv([["invoiceKey", "reason"], ["INV1", reason]])))
    assert row.status is Status.INVALID
    assert rule in row.message


@pytest.mark.parametrize("reason", ["02", "03", "04"])
def test_reference_with_reason_other_than_01_is_invalid(make_csv: MakeFile, reason: str) -> None:
    """documentReferenceID is accepted only with reason 01."""
    path = make_csv([["invoiceKey", "reason", "documentReferenceID"], ["INV1", reason, "R1"]])
    row = only_row(read(path))
    assert row.status is Status.INVALID
    assert "documentReferenceID" in row.message and reason in row.message


def test_reference_with_reason_01_is_sendable(make_csv: MakeFile) -> None:
    """Reason 01 with a documentReferenceID is a valid row."""
    path = make_csv([["invoiceKey", "reason", "documentReferenceID"], ["INV1", "1", " R1 "]])
    row = only_row(read(path))
    assert (row.status, row.reason, row.document_reference_id) == (None, "01", "R1")
    assert row.job.document_reference_id == "R1"


# --- duplicates ----------------------------------------------------------------------------


def test_later_row_with_same_key_is_duplicate_of_first(make_csv: MakeFile) -> None:
    """A later row with a key already seen is a duplicate pointing at the first row."""
    path = make_csv([["invoiceKey", "reason"], ["INV1", "01"], ["INV2", "01"], ["INV1", "02"],
                     ["INV1", "01"]])
    rows = by_row(read(path))
    assert (rows[2].status, rows[3].status) == (None, None)
    for number in (4, 5):
        assert rows[number].status is Status.DUPLICATE
        assert rows[number].duplicate_of == 2
        assert "row 2" in rows[number].message


def test_duplicate_keys_compare_without_case(make_csv: MakeFile) -> None:
    """INV1 and inv1 are the same invoice: the second is a duplicate."""
    rows = by_row(read(make_csv([["invoiceKey", "reason"], ["INV1", "01"], [" inv1", "01"]])))
    assert (rows[3].status, rows[3].duplicate_of) == (Status.DUPLICATE, 2)


def test_invalid_earlier_row_does_not_claim_key(make_csv: MakeFile) -> None:
    """An invalid row does not make a later valid row with its key a duplicate."""
    path = make_csv([["invoiceKey", "reason"], ["INV1", "09"], ["INV1", "01"], ["INV1", "01"]])
    rows = by_row(read(path))
    assert rows[2].status is Status.INVALID
    assert (rows[3].status, rows[3].duplicate_of) == (None, None)
    assert (rows[4].status, rows[4].duplicate_of) == (Status.DUPLICATE, 3)


def test_reason_01_without_a_reference_is_a_warning_or_with_require_reference_invalid(
        make_csv: MakeFile) -> None:
    """Only a sendable reason-01 row naming no replacing document is flagged: a warning it
    is sent with, or (--require-reference) `invalid` with the fix; the rest are untouched."""
    path = make_csv([["invoiceKey", "reason", "documentReferenceID"], ["INV1", "01", ""],
                     ["INV2", "02", ""], ["INV3", "1", "MX-9"], ["INV1", "01", ""],
                     ["bad key", "01", ""], ["INV4", "1", " "]])
    warned = by_row(read(path))
    assert {n for n, r in warned.items() if r.warning} == {2, 7}
    assert all(r.status is None for n, r in warned.items() if n in (2, 3, 4, 7))
    assert "Mexico" in warned[2].warning
    assert (warned[5].status, warned[5].warning) == (Status.DUPLICATE, "")
    assert (warned[6].status, warned[6].warning) == (Status.INVALID, "")
    strict = by_row(read(path, require_reference=True))
    assert {n for n, r in strict.items() if r.status is Status.INVALID} == {2, 6, 7}
    assert "drop --require-reference" in strict[2].message and not strict[2].warning
    assert (strict[3].status, strict[4].status, strict[5].status) == (None, None,
                                                                      Status.DUPLICATE)


# --- files that cannot be read ---------------------------------------------------------------


def _missing(tmp: Path) -> Path:
    return tmp / "missing.csv"


def _empty_csv(tmp: Path) -> Path:
    return write_bytes(tmp / "empty.csv", b"")


def _blank_csv(tmp: Path) -> Path:
    return write_bytes(tmp / "blank.csv", b"\r\n\n  \n")


def _empty_xlsx(tmp: Path) -> Path:
    return write_bytes(tmp / "empty.xlsx", b"")


def _header_only_csv(tmp: Path) -> Path:
    return write_bytes(tmp / "header.csv", b"invoiceKey,reason\n\n")


def _header_only_xlsx(tmp: Path) -> Path:
    return write_xlsx(tmp / "header.xlsx", [["invoiceKey", "reason"]])


def _empty_sheet_xlsx(tmp: Path) -> Path:
    return write_xlsx(tmp / "nothing.xlsx", [])


def _folder(tmp: Path) -> Path:
    (tmp / "folder.csv").mkdir()
    return tmp / "folder.csv"


def _pdf(tmp: Path) -> Path:
    return write_bytes(tmp / "invoices.pdf", b"%PDF-1.7\n")


def _xls(tmp: Path) -> Path:
    return write_bytes(tmp / "old.xls", OLE2_MAGIC + bytes(504))


def _corrupt_xlsx(tmp: Path) -> Path:
    return write_bytes(tmp / "corrupt.xlsx", bytes((i * 37 + 11) % 256 for i in range(4096)))


def _truncated_xlsx(tmp: Path) -> Path:
    whole = write_xlsx(tmp / "whole.xlsx", [["invoiceKey", "reason"], ["INV1", "01"]])
    return write_bytes(tmp / "truncated.xlsx", whole.read_bytes()[:600])


def _csv_named_xlsx(tmp: Path) -> Path:
    return write_bytes(tmp / "renamed.xlsx", b"invoiceKey,reason\nINV1,01\n")


def _xlsx_named_csv(tmp: Path) -> Path:
    book = write_xlsx(tmp / "book.xlsx", [["invoiceKey", "reason"], ["INV1", "01"]])
    return write_bytes(tmp / "renamed.csv", book.read_bytes())


def _encrypted_xlsx(tmp: Path) -> Path:
    return write_bytes(tmp / "locked.xlsx", OLE2_MAGIC + bytes(2048))


def _wide_row_csv(tmp: Path) -> Path:
    return write_bytes(tmp / "wide.csv", b"invoiceKey,reason\nINV1,01\nINV2,01,surprise\n")


def _wide_row_xlsx(tmp: Path) -> Path:
    return write_xlsx(tmp / "wide.xlsx", [["invoiceKey", "reason"], ["INV1", "01"],
                                          ["INV2", "01", None, "surprise"]])


BAD_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (_missing, "no such file"),
    "empty csv": (_empty_csv, "empty"),
    "blank csv": (_blank_csv, "empty"),
    "empty xlsx": (_empty_xlsx, "empty"),
    "header only csv": (_header_only_csv, "no data rows"),
    "header only xlsx": (_header_only_xlsx, "no data rows"),
    "empty sheet xlsx": (_empty_sheet_xlsx, "empty"),
    "folder": (_folder, "folder"),
    "pdf": (_pdf, "unsupported file type '.pdf'"),
    "xls": (_xls, ".xls format is not supported"),
    "corrupt xlsx": (_corrupt_xlsx, "not a valid .xlsx"),
    "truncated xlsx": (_truncated_xlsx, "not a valid .xlsx"),
    "csv renamed xlsx": (_csv_named_xlsx, "not a valid .xlsx"),
    "xlsx renamed csv": (_xlsx_named_csv, "rename it to .xlsx"),
    "password-protected xlsx": (_encrypted_xlsx, "password-protected"),
    "wide row csv": (_wide_row_csv, "row 3 has 3 cells but the header has 2"),
    "wide row xlsx": (_wide_row_xlsx, "row 3 has 4 cells but the header has 2"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_unreadable_file_is_input_error_naming_file(tmp_path: Path, case: str) -> None:
    """A file that cannot be read raises InputError naming the file and the problem."""
    build, problem = BAD_FILES[case]
    path = build(tmp_path)
    with pytest.raises(InputError) as info:
        read(path)
    assert path.name in str(info.value)
    assert problem in str(info.value)


# --- an earlier report as input ------------------------------------------------------------


def write_report(path: Path, rows: list[dict[str, str]]) -> Path:
    """A report as batch-cancel writes it: the report columns, then the input's own."""
    columns = [*REPORT_COLUMNS, "customer"]
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def report_rows() -> list[dict[str, str]]:
    """One report row per status, plus a not_attempted row repeating a succeeded key."""
    return [
        {"row": "2", "invoice_key": "INV1", "reason": "01", "status": "succeeded",
         "http_status": "200", "attempts": "1", "track_id": "bc-1-2", "customer": "A"},
        {"row": "3", "invoice_key": "INV2", "reason": "02", "status": "failed",
         "http_status": "500", "error_message": "boom", "attempts": "5", "track_id": "bc-1-3",
         "customer": "B"},
        {"row": "4", "invoice_key": "INV3", "reason": "1", "status": "not_attempted",
         "customer": "C"},
        {"row": "5", "invoice_key": "INV4", "reason": "09", "status": "invalid",
         "error_message": "reason '09' is not one of 01, 02, 03, 04", "customer": "D"},
        {"row": "6", "invoice_key": "INV5", "reason": "01", "status": "duplicate",
         "error_message": "duplicate of row 2", "customer": "E"},
        {"row": "8", "invoice_key": "inv1", "reason": "01", "status": "not_attempted",
         "customer": "F"},
    ]


def test_report_input_reruns_failed_not_attempted_invalid(tmp_path: Path) -> None:
    """By default a report's failed, not_attempted and invalid rows are re-validated."""
    loaded = read(write_report(tmp_path / "in.report.csv", report_rows()))
    rows = by_row(loaded)
    assert loaded.is_report and loaded.columns == ["customer"]
    assert (rows[3].status, rows[3].reason, rows[3].carried) == (None, "02", None)
    assert (rows[4].status, rows[4].reason) == (None, "01")
    assert rows[5].status is Status.INVALID and "'09'" in rows[5].message
    assert rows[5].carried is None
    assert (rows[8].status, rows[8].duplicate_of) == (Status.DUPLICATE, 2)
    assert [r.row for r in loaded.to_send()] == [3, 4]
    assert rows[3].extra == {"customer": "B"}


def test_report_input_carries_other_rows_over(tmp_path: Path) -> None:
    """Rows not re-run keep their status, message and every report column in `carried`."""
    source = report_rows()
    rows = by_row(read(write_report(tmp_path / "in.report.csv", source)))
    for number, original in ((2, source[0]), (6, source[4])):
        row = rows[number]
        assert row.status is Status(original["status"])
        assert row.carried == {c: original.get(c, "") for c in REPORT_COLUMNS}
        assert row.message == original.get("error_message", "")
        assert row.extra == {"customer": original["customer"]}


def test_a_duplicate_row_carries_the_row_it_repeats_as_data(make_csv: MakeFile) -> None:
    """`duplicate_of` is the first row's number, on the fast path and row by row alike."""
    keys = [f"INV{n}" for n in range(3000)] + ["inv7", "bad key", "INV2999 "]
    keys[100] = "inv5"  # in the first block, all plain rows: the fast path
    path = make_csv([["invoiceKey", "reason"], *([key, "02"] for key in keys)])
    rows = by_row(read(path))
    assert {n: r.duplicate_of for n, r in rows.items() if r.status is Status.DUPLICATE} == {
        102: 7, 3002: 9, 3004: 3001}
    assert all(r.duplicate_of is None for r in rows.values() if r.status is not Status.DUPLICATE)


def test_a_report_fed_back_keeps_each_duplicate_pointing_at_its_row(tmp_path: Path) -> None:
    """A report written by batch-cancel and read back: a carried duplicate's `duplicate_of` is
    the row it repeats, as the first run had it."""
    from batch_cancel.model import Outcome
    from batch_cancel.record.writer import write_report as write_batch_report

    source = tmp_path / "in.csv"
    source.write_text("invoiceKey,reason\nINV1,01\nINV2,02\ninv1,01\nINV2,03\n",
                      encoding="utf-8")
    first = read(source)
    assert [r.duplicate_of for r in first.rows] == [None, None, 2, 3]
    report = tmp_path / "in.report.csv"
    write_batch_report(report, first.columns, first.rows,
                       {2: Outcome(2, Status.SUCCEEDED, 200, attempts=1),
                        3: Outcome(3, Status.FAILED, 500, "", "boom", attempts=5)})
    rows = by_row(read(report))
    assert (rows[4].status, rows[4].duplicate_of, rows[4].carried is not None) == (
        Status.DUPLICATE, 2, True)
    assert (rows[5].status, rows[5].duplicate_of) == (Status.DUPLICATE, 3)
    assert (rows[3].status, rows[3].duplicate_of) == (None, None)  # sent again


def test_a_report_duplicate_of_column_wins_over_the_message(tmp_path: Path) -> None:
    """A report that says `duplicate_of` in a column is read from it; only a `duplicate`
    row's message is ever read for it, and only without that column (older reports)."""
    source = report_rows()
    source[1]["error_message"] = "duplicate of row 2 (a failed row says so by chance)"
    rows = by_row(read(write_report(tmp_path / "old.report.csv", source),
                       only=frozenset({Status.NOT_ATTEMPTED})))
    assert (rows[6].duplicate_of, rows[3].duplicate_of) == (2, None)
    columns = [*REPORT_COLUMNS, "duplicate_of", "customer"]
    path = tmp_path / "new.report.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, columns, restval="")
        writer.writeheader()
        writer.writerows([*source[:4], {**source[4], "duplicate_of": "4"}])
    assert by_row(read(path))[6].duplicate_of == 4


def test_report_input_only_selects_statuses(tmp_path: Path) -> None:
    """--only failed re-runs failed rows only; not_attempted and invalid are carried."""
    loaded = read(write_report(tmp_path / "in.report.csv", report_rows()),
                  only=frozenset({Status.FAILED}))
    rows = by_row(loaded)
    assert [r.row for r in loaded.to_send()] == [3]
    assert rows[4].status is Status.NOT_ATTEMPTED and rows[4].carried is not None
    assert rows[5].status is Status.INVALID and rows[5].carried is not None


def test_report_input_only_succeeded_is_input_error(tmp_path: Path) -> None:
    """--only including succeeded is refused: those invoices are already cancelled."""
    path = write_report(tmp_path / "in.report.csv", report_rows())
    with pytest.raises(InputError, match="succeeded"):
        read(path, only=frozenset({Status.SUCCEEDED, Status.FAILED}))


def test_only_on_non_report_is_input_error(make_csv: MakeFile) -> None:
    """--only on a plain input file is refused."""
    path = make_csv([["invoiceKey", "reason"], ["INV1", "01"]])
    with pytest.raises(InputError, match="--only") as info:
        read(path, only=frozenset({Status.FAILED}))
    assert path.name in str(info.value)


def test_report_input_unknown_status_is_input_error(tmp_path: Path) -> None:
    """A report row whose status is not a known status is refused (an edited report)."""
    rows = report_rows()
    rows[1]["status"] = "maybe"
    with pytest.raises(InputError, match="'maybe'"):
        read(write_report(tmp_path / "in.report.csv", rows))


# --- through the CLI: nothing is sent --------------------------------------------------------


def _unknown_sheet(tmp: Path) -> tuple[Path, list[str]]:
    path = write_xlsx(tmp / "sheets.xlsx", [["invoiceKey", "reason"], ["INV1", "01"]])
    return path, ["--sheet", "Nope"]


def _no_key_column(tmp: Path) -> tuple[Path, list[str]]:
    return write_bytes(tmp / "nokey.csv", b"Customer,reason\nACME,01\n"), []


def _ambiguous(tmp: Path) -> tuple[Path, list[str]]:
    return write_bytes(tmp / "twice.csv", b"Invoice Key,invoice_key,reason\nA,B,01\n"), []


def _only_non_report(tmp: Path) -> tuple[Path, list[str]]:
    return write_bytes(tmp / "plain.csv", b"invoiceKey,reason\nINV1,01\n"), ["--only", "failed"]


def _only_succeeded(tmp: Path) -> tuple[Path, list[str]]:
    return write_report(tmp / "in.report.csv", report_rows()), ["--only", "succeeded"]


def _bad_encoding(tmp: Path) -> tuple[Path, list[str]]:
    return write_bytes(tmp / "enc.csv", b"invoiceKey,reason\nINV1,01\n"), ["--encoding", "nope"]


CLI_BAD_INPUTS: dict[str, Callable[[Path], tuple[Path, list[str]]]] = {
    **{name: (lambda tmp, build=build: (build(tmp), [])) for name, (build, _) in BAD_FILES.items()},
    "unknown sheet": _unknown_sheet,
    "no key column": _no_key_column,
    "ambiguous key column": _ambiguous,
    "--only on a plain file": _only_non_report,
    "--only succeeded": _only_succeeded,
    "unknown encoding": _bad_encoding,
}


@pytest.mark.parametrize("case", list(CLI_BAD_INPUTS))
def test_cli_bad_input_exits_2_and_sends_nothing(tmp_path: Path, cli: Any,
                                                 sim: Any, case: str) -> None:
    """Every unreadable file or unusable column choice exits 2 before a token or a cancel."""
    path, args = CLI_BAD_INPUTS[case](tmp_path)
    result = cli("run", str(path), "--base-url", sim.url, "--no-progress", *args,
                 env=sim.env)
    assert result.exit_code == 2, result.output
    assert sim.stats.cancel_requests == 0
    assert sim.stats.token_requests == 0


def test_cli_good_input_does_send(tmp_path: Path, cli: Any,
                                  sim: Any) -> None:
    """Control for the test above: the same invocation with a good file does send."""
    path = write_bytes(tmp_path / "good.csv", b"invoiceKey,reason\nINV1,01\nINV2,01\n")
    result = cli("run", str(path), "--base-url", sim.url, "--no-progress",
                 env=sim.env)
    assert result.exit_code == 0, result.output
    assert sim.stats.cancel_requests == 2
    assert sorted(sim.stats.accepted_cancels) == ["INV1", "INV2"]



@pytest.mark.parametrize(("value", "number_format", "shown"), [
    (2.5, "0", "3"),
    (-2.5, "0", "-3"),
    (0.125, "0.00", "0.13"),
    (1.005, "0.00", "1.01"),  # the decimal the cell shows, not the binary float below it
    (3.5, '"INV"00000', "INV00004"),
    (0.125, "0%", "13%"),
    (0.5, "0.00", "0.50"),  # a 0 before the point keeps its digit; only "#.00" drops it
    (0.5, "#.00", ".50"),
])
def test_excel_rounds_half_away_from_zero(value: float, number_format: str, shown: str) -> None:
    """A number format rounds halves away from zero as Excel does (not to even)."""
    assert excel_text(value, number_format) == shown


@pytest.mark.parametrize(("value", "number_format"), [
    (10**15 - 1, "0"),
    (10**15 - 1, "General"),
    (999999999999999.0, "0"),
    (999999999999999.0, "General"),
    (-(10**15 - 1), "0"),
])
def test_fifteen_digit_numbers_read_in_full(value: float, number_format: str) -> None:
    """Up to 15 digits Excel stores a number exactly and shows every digit."""
    assert excel_text(value, number_format).lstrip("-") == "999999999999999"


@pytest.mark.parametrize(("value", "number_format"), [
    (10**15, "0"),
    (10**15, "General"),
    (1e15, "0"),
    (1e15, "General"),
    (-(10**15), "0"),
    (1234567890123456, "0"),
    (1.234567890123456e15, "General"),
    (1e16, "General"),
])
def test_sixteen_digit_numbers_read_as_excel_shows_them_in_scientific(
        value: float, number_format: str) -> None:
    """From 10**15 on digits are lost, and Excel shows General's scientific form whatever the
    number format: never a 16-digit text that looks exact."""
    text = excel_text(value, number_format)
    assert "E+1" in text and not text.lstrip("-").isdigit(), text


def test_a_document_reference_may_be_as_long_as_a_key_and_no_longer() -> None:
    """255 characters pass, 256 are refused with the limit named."""
    assert problem_in_reference("R" * MAX_KEY_LENGTH) == ""
    assert str(MAX_KEY_LENGTH) in problem_in_reference("R" * (MAX_KEY_LENGTH + 1))
