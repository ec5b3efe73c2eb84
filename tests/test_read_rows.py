"""A plain file's rows as `read.rows` builds them, and duplicates as `read.duplicates` marks
them, with every row's exact value and the exact blocks that took the fast path.

`test_loader_fastpath` proves the fast and the row-by-row paths agree on random files; these
small files pin what both must give (a row, its reason code, its duplicate mark), and which
blocks are plain enough for the fast path, so a change to either path is caught on its own.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from batch_cancel.model import REPORT_COLUMNS, SourceRow, Status
from batch_cancel.read import rows as plain_rows
from batch_cancel.read import table as tables
from batch_cancel.read.duplicates import as_duplicate, duplicate_message, mark_duplicates
from batch_cancel.read.loader import LoadOptions, load

WHITESPACE = "invoice key has whitespace inside"


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    """A UTF-8 CSV written by the csv module."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def load_rows(path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool, **options: Any
              ) -> tuple[list[SourceRow], list[int]]:
    """The rows, in blocks of three records (the first block holds the header and rows 2-3,
    the next rows 4-6, ...), and the first row number of each block the fast path built
    (none when `fast` is False: every block then goes row by row)."""
    monkeypatch.setattr(tables, "BLOCK_ROWS", 3)
    taken: list[int] = []
    real = plain_rows.fast_block

    def counting(*args: Any) -> bool:
        built = real(*args) if fast else False
        if built:
            taken.append(args[0][0])
        return built

    monkeypatch.setattr(plain_rows, "fast_block", counting)
    return load(path, LoadOptions(**options)).rows, taken


def row(number: int, key: str, reason: str, cells: tuple[str, ...], columns: tuple[str, ...],
        *, reference: str = "", status: Status | None = None, message: str = "",
        duplicate_of: int | None = None) -> SourceRow:
    """The row the loader should build."""
    return SourceRow(row=number, invoice_key=key, reason=reason,
                     document_reference_id=reference, cells=cells, status=status,
                     message=message, duplicate_of=duplicate_of, columns=columns)


def dup(number: int, key: str, reason: str, cells: tuple[str, ...],
        columns: tuple[str, ...], owner: int) -> SourceRow:
    return row(number, key, reason, cells, columns, status=Status.DUPLICATE,
               message=f"duplicate of row {owner} (same invoice key)", duplicate_of=owner)


#: the header of most files here, and the columns its rows carry ("reason" is a report
#: column: the report calls the input's own one "input_reason")
HEADER = ["invoiceKey", "reason"]
KR = ("invoiceKey", "input_reason")


@pytest.mark.parametrize("fast", [True, False])
def test_plain_blocks_mark_case_only_duplicates_within_and_across_blocks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    path = write_csv(tmp_path / "in.csv", [HEADER, ["INV1", "02"], ["INV2", "2"],
                                           ["inv1", "3"], ["INV3", "04"], ["Inv2", "02"],
                                           ["iNV3", "4"], ["INV4", "03"]])
    rows, taken = load_rows(path, monkeypatch, fast)
    assert rows == [
        row(2, "INV1", "02", ("INV1", "02"), KR),
        row(3, "INV2", "02", ("INV2", "2"), KR),
        dup(4, "inv1", "03", ("inv1", "3"), KR, 2),
        row(5, "INV3", "04", ("INV3", "04"), KR),
        dup(6, "Inv2", "02", ("Inv2", "02"), KR, 3),
        dup(7, "iNV3", "04", ("iNV3", "4"), KR, 5),
        row(8, "INV4", "03", ("INV4", "03"), KR),
    ]
    assert taken == ([2, 4, 7] if fast else [])


@pytest.mark.parametrize("fast", [True, False])
def test_a_block_with_one_bad_key_goes_row_by_row_and_the_bad_row_claims_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    path = write_csv(tmp_path / "in.csv", [HEADER, ["INV1", "02"], ["INV 2", "02"],
                                           [" INV1 ", "02"], ["INV2", "02"], ["inv 2", "02"],
                                           ["INV1", "02"], ["INV 2", "02"]])
    rows, taken = load_rows(path, monkeypatch, fast)
    assert rows == [
        row(2, "INV1", "02", ("INV1", "02"), KR),
        row(3, "INV 2", "02", ("INV 2", "02"), KR, status=Status.INVALID, message=WHITESPACE),
        dup(4, "INV1", "02", (" INV1 ", "02"), KR, 2),
        row(5, "INV2", "02", ("INV2", "02"), KR),
        row(6, "inv 2", "02", ("inv 2", "02"), KR, status=Status.INVALID, message=WHITESPACE),
        dup(7, "INV1", "02", ("INV1", "02"), KR, 2),
        row(8, "INV 2", "02", ("INV 2", "02"), KR, status=Status.INVALID, message=WHITESPACE),
    ]
    assert taken == []  # every block holds a key only the rules can judge


@pytest.mark.parametrize("fast", [True, False])
def test_a_reason_not_spelled_the_usual_way_sends_its_block_row_by_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    path = write_csv(tmp_path / "in.csv", [HEADER, ["INV1", "1"], ["INV2", " 2 "],
                                           ["INV3", "02"], ["INV4", "2"], ["INV5", "3"],
                                           ["INV6", "4"], ["INV7", "9"]])
    rows, taken = load_rows(path, monkeypatch, fast, default_reason="03")
    assert [(r.row, r.reason, r.status) for r in rows] == [
        (2, "01", None), (3, "02", None), (4, "02", None), (5, "02", None), (6, "03", None),
        (7, "04", None), (8, "09", Status.INVALID)]
    assert rows[6].message == "reason '09' is not one of 01, 02, 03, 04"
    assert taken == ([4] if fast else [])


@pytest.mark.parametrize("fast", [True, False])
def test_a_blank_reason_cell_takes_the_default_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    path = write_csv(tmp_path / "in.csv", [HEADER, ["INV1", ""], ["INV2", "2"],
                                           ["INV3", ""], ["INV4", " "], ["INV5", "02"],
                                           ["INV6", ""]])
    rows, taken = load_rows(path, monkeypatch, fast, default_reason="3")
    assert rows == [
        row(2, "INV1", "03", ("INV1", ""), KR),
        row(3, "INV2", "02", ("INV2", "2"), KR),
        row(4, "INV3", "03", ("INV3", ""), KR),
        row(5, "INV4", "03", ("INV4", " "), KR),
        row(6, "INV5", "02", ("INV5", "02"), KR),
        row(7, "INV6", "03", ("INV6", ""), KR),
    ]
    assert taken == ([2, 7] if fast else [])


@pytest.mark.parametrize("fast", [True, False])
def test_a_blank_reason_without_a_default_is_invalid(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    path = write_csv(tmp_path / "in.csv", [HEADER, ["INV1", "02"], ["INV4", "04"],
                                           ["INV2", ""], ["INV3", " "], ["INV5", "3"]])
    rows, taken = load_rows(path, monkeypatch, fast)
    empty = "reason is empty; fill the reason column (01-04) or pass --reason CODE"
    assert rows == [
        row(2, "INV1", "02", ("INV1", "02"), KR),
        row(3, "INV4", "04", ("INV4", "04"), KR),
        row(4, "INV2", "", ("INV2", ""), KR, status=Status.INVALID, message=empty),
        row(5, "INV3", "", ("INV3", " "), KR, status=Status.INVALID, message=empty),
        row(6, "INV5", "03", ("INV5", "3"), KR),
    ]
    assert taken == ([2] if fast else [])


@pytest.mark.parametrize("fast", [True, False])
def test_no_reason_column_gives_every_row_the_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    path = write_csv(tmp_path / "in.csv", [["invoiceKey", "note"], ["INV1", "a"],
                                           ["inv1", "b"], ["INV2", "c"], ["INV 3", "d"]])
    rows, taken = load_rows(path, monkeypatch, fast, default_reason="4")
    columns = ("invoiceKey", "note")
    assert rows == [
        row(2, "INV1", "04", ("INV1", "a"), columns),
        dup(3, "inv1", "04", ("inv1", "b"), columns, 2),
        row(4, "INV2", "04", ("INV2", "c"), columns),
        row(5, "INV 3", "04", ("INV 3", "d"), columns, status=Status.INVALID,
            message=WHITESPACE),
    ]
    assert taken == ([2] if fast else [])


@pytest.mark.parametrize("fast", [True, False])
def test_a_reference_cell_sends_its_block_row_by_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    columns = ("invoiceKey", "input_reason", "documentReferenceID")
    path = write_csv(tmp_path / "in.csv", [[*HEADER, "documentReferenceID"], ["INV1", "02", ""],
                                           ["INV2", "1", " MX-1 "], ["INV3", "03", ""],
                                           ["INV4", "02", ""], ["INV5", "04", ""],
                                           ["INV6", "03", ""], ["INV7", "2", "R"]])
    rows, taken = load_rows(path, monkeypatch, fast)
    reference_02 = ("documentReferenceID is given with reason 02; "
                    "Zuora accepts it only with reason 01 (Mexico)")
    assert rows == [
        row(2, "INV1", "02", ("INV1", "02", ""), columns),
        row(3, "INV2", "01", ("INV2", "1", " MX-1 "), columns, reference="MX-1"),
        row(4, "INV3", "03", ("INV3", "03", ""), columns),
        row(5, "INV4", "02", ("INV4", "02", ""), columns),
        row(6, "INV5", "04", ("INV5", "04", ""), columns),
        row(7, "INV6", "03", ("INV6", "03", ""), columns),
        row(8, "INV7", "02", ("INV7", "2", "R"), columns, reference="R",
            status=Status.INVALID, message=reference_02),
    ]
    assert taken == ([4] if fast else [])


@pytest.mark.parametrize("fast", [True, False])
def test_columns_renamed_onto_each_other_keep_the_last_cell(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    """'reason' becomes 'input_reason' in the report, beside an input_reason column: a row
    keeps the last cell under that name, and such a file never takes the fast path."""
    path = write_csv(tmp_path / "in.csv", [["invoiceKey", "Code", "reason", "input_reason"],
                                           ["INV1", "01", "a", "b"], ["inv1", "2", "c", "d"]])
    rows, taken = load_rows(path, monkeypatch, fast, reason_column="Code")
    columns = ("invoiceKey", "Code", "input_reason")
    assert rows[1:] == [dup(3, "inv1", "02", ("inv1", "2", "d"), columns, 2)]
    assert (rows[0].row, rows[0].cells, rows[0].columns, rows[0].status) == (
        2, ("INV1", "01", "b"), columns, None)
    assert taken == []


def test_duplicate_message_and_mark() -> None:
    plain = SourceRow(9, "INV1", "02", "", ("INV1",), columns=("invoiceKey",))
    assert duplicate_message(4) == "duplicate of row 4 (same invoice key)"
    assert as_duplicate(plain, 4) == SourceRow(
        9, "INV1", "02", "", ("INV1",), status=Status.DUPLICATE, duplicate_of=4,
        message="duplicate of row 4 (same invoice key)", columns=("invoiceKey",))


def report_row(number: int, key: str, status: Status | None) -> SourceRow:
    return SourceRow(number, key, "02", "", status=status)


def test_a_report_fed_back_marks_keys_claimed_by_rows_to_send_succeeded_or_skipped() -> None:
    """Succeeded and skipped rows claim their key first, wherever they are (case aside); rows
    to send then claim theirs in order; other outcomes claim nothing; only rows still to
    send are marked, and the list given is left as it was."""
    rows = [report_row(2, "a1", None), report_row(3, "A1", None),
            report_row(4, "B2", Status.FAILED), report_row(5, "b2", None),
            report_row(6, "c3", None), report_row(7, "C3", Status.SUCCEEDED),
            report_row(8, "D4", Status.SKIPPED), report_row(9, "d4", None),
            report_row(10, "E5", Status.INVALID), report_row(11, "e5", None),
            report_row(12, "F6", Status.NOT_ATTEMPTED), report_row(13, "f6", Status.SUCCEEDED),
            report_row(14, "a1", Status.FAILED), report_row(15, "g7", None),
            report_row(16, "G7", Status.SKIPPED), report_row(17, "g7", Status.SUCCEEDED)]
    marked = mark_duplicates(rows)
    assert [(r.row, r.status, r.duplicate_of) for r in marked] == [
        (2, None, None), (3, Status.DUPLICATE, 2), (4, Status.FAILED, None), (5, None, None),
        (6, Status.DUPLICATE, 7), (7, Status.SUCCEEDED, None), (8, Status.SKIPPED, None),
        (9, Status.DUPLICATE, 8), (10, Status.INVALID, None), (11, None, None),
        (12, Status.NOT_ATTEMPTED, None), (13, Status.SUCCEEDED, None),
        (14, Status.FAILED, None), (15, Status.DUPLICATE, 16), (16, Status.SKIPPED, None),
        (17, Status.SUCCEEDED, None)]
    assert marked[2] is rows[2] and rows[1].status is None and rows[4].status is None


def test_a_row_corrected_to_a_key_that_succeeded_below_it_is_not_sent_again(
        tmp_path: Path) -> None:
    """An invalid row above a succeeded one, its key corrected to that key before the report
    is fed back: the invoice is already cancelled, so the row is a duplicate, not a resend."""
    path = tmp_path / "in.report.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, [*REPORT_COLUMNS, "customer"], restval="")
        writer.writeheader()
        writer.writerows([
            {"row": "2", "invoice_key": "inv1", "reason": "02", "status": "invalid",
             "error_message": WHITESPACE, "customer": "A"},
            {"row": "3", "invoice_key": "INV2", "reason": "02", "status": "not_attempted",
             "customer": "B"},
            {"row": "4", "invoice_key": "INV1", "reason": "02", "status": "succeeded",
             "http_status": "200", "attempts": "1", "customer": "C"},
        ])
    loaded = load(path, LoadOptions())
    assert [(r.row, r.status, r.duplicate_of) for r in loaded.rows] == [
        (2, Status.DUPLICATE, 4), (3, None, None), (4, Status.SUCCEEDED, None)]
    assert [r.row for r in loaded.to_send()] == [3]


@pytest.mark.parametrize("fast", [True, False])
def test_keys_of_any_printable_ascii_but_the_refused_ones_take_the_fast_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    """From '!' (0x21) to '~' (0x7E), but / ? # % and '..': the first and last character
    of that range are as plain as a letter; a space (0x20) or DEL (0x7F) is not."""
    path = write_csv(tmp_path / "in.csv", [HEADER, ["!INV~", "02"], ["~1!", "02"],
                                           ["A\x7f", "02"], ["B", "02"], ["C", "02"]])
    rows, taken = load_rows(path, monkeypatch, fast)
    assert [(r.invoice_key, r.status) for r in rows] == [
        ("!INV~", None), ("~1!", None), ("A\x7f", Status.INVALID), ("B", None), ("C", None)]
    assert taken == ([2] if fast else [])
