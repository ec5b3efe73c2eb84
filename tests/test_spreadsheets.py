"""Spreadsheets as people make them, end to end: files saved by LibreOffice (tests/fixtures,
made by make_fixtures.py), the real CLI, and the simulator on loopback.

Each test asserts the exact invoice keys the simulator was asked to cancel: hidden and
filtered-out rows are `skipped` and never sent, a title above the header is not a column,
Zuora's export headers and Spanish headers are recognised, .ods cells are read as shown, and
a `;`/cp1252 CSV gets a report in the same dialect that can be fed back in.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import openpyxl
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
#: filtered.*: rows 2-41 hold INV-F001..INV-F040; 4 filtered out, 3 hidden by hand
HIDDEN_ROWS = {6, 9, 10, 13, 21, 28, 34}
FILTERED_KEYS = {f"INV-F{n - 1:03d}": n for n in range(2, 42)}
VISIBLE_KEYS = {k: n for k, n in FILTERED_KEYS.items() if n not in HIDDEN_ROWS}


def sent(sim: Any) -> dict[str, str]:
    """Each cancelled key and the row number at the end of its Zuora-Track-Id."""
    out = {}
    for record in sim.stats.cancels():
        track = {k.lower(): v for k, v in record.headers.items()}["zuora-track-id"]
        assert record.key not in out, f"{record.key} cancelled twice"
        out[record.key] = track.rsplit("-", 1)[1]
    return out


def report_rows(path: Path, encoding: str = "utf-8-sig", delimiter: str = ","
                ) -> dict[str, dict[str, str]]:
    """A CSV report's rows by invoice key."""
    with path.open(encoding=encoding, newline="") as handle:
        return {r["invoice_key"]: r for r in csv.DictReader(handle, delimiter=delimiter)}


def run(cli: Any, sim: Any, path: Path, tmp_path: Path, *args: str) -> tuple[Any, Path]:
    """`batch-cancel run PATH --base-url SIM --report tmp/r.csv ARGS`."""
    report = tmp_path / "r.csv"
    result = cli("run", str(path), "--base-url", sim.url, "--report", str(report),
                 "--no-progress", *args, env=sim.env)
    return result, report


# --- item 1: hidden means not meant ----------------------------------------------------------


@pytest.mark.parametrize("name", ["filtered.xlsx", "filtered.ods"])
def test_hidden_and_filtered_out_rows_are_skipped_not_sent(name: str, cli: Any, sim: Any,
                                                           tmp_path: Path) -> None:
    """Rows filtered out by the autofilter or hidden by hand are reported skipped, unsent."""
    result, report = run(cli, sim, FIXTURES / name, tmp_path)
    assert result.exit_code == 0, result.output
    assert "7 rows hidden in the sheet" in result.output
    assert sent(sim) == {k: str(n) for k, n in VISIBLE_KEYS.items()}
    rows = report_rows(report)
    assert set(rows) == set(FILTERED_KEYS)  # every row once, the hidden column read too
    skipped = {k for k, r in rows.items() if r["status"] == "skipped"}
    assert skipped == {k for k, n in FILTERED_KEYS.items() if n in HIDDEN_ROWS}
    assert {rows[k]["error_message"] for k in skipped} == {"hidden in the sheet"}
    assert rows["INV-F001"]["Internal id"] == "id-1"


def test_include_hidden_sends_every_row(cli: Any, sim: Any, tmp_path: Path) -> None:
    """--include-hidden sends the hidden and filtered-out rows too."""
    result, _ = run(cli, sim, FIXTURES / "filtered.xlsx", tmp_path, "--include-hidden")
    assert result.exit_code == 0, result.output
    assert sent(sim) == {k: str(n) for k, n in FILTERED_KEYS.items()}


def test_preflight_counts_hidden_rows_and_sends_nothing(cli: Any, sim: Any,
                                                        tmp_path: Path) -> None:
    """preflight says how many rows are hidden and lists them skipped in its report."""
    report = tmp_path / "plan.csv"
    result = cli("preflight", str(FIXTURES / "filtered.ods"), "--base-url", sim.url,
                 "--report", str(report))
    assert result.exit_code == 0, result.output
    assert "7 rows hidden in the sheet" in result.output
    assert "Would send 33 cancels" in result.output
    assert sim.stats.requests == []
    statuses = {k: r["status"] for k, r in report_rows(report).items()}
    assert sorted(k for k, s in statuses.items() if s == "skipped") == sorted(
        k for k, n in FILTERED_KEYS.items() if n in HIDDEN_ROWS)


def test_a_hidden_sheet_is_never_the_default(cli: Any, sim: Any, tmp_path: Path) -> None:
    """With the first sheet hidden, the first visible one is read; --sheet reads a hidden one."""
    book = openpyxl.Workbook()
    old = book.active
    old.title = "Old"
    old.append(["Invoice Number", "Reason"])
    old.append(["INV-OLD-9", "01"])
    old.sheet_state = "hidden"
    current = book.create_sheet("Current")
    current.append(["Invoice Number", "Reason"])
    current.append(["INV-NEW-1", "01"])
    book.active = 1
    path = tmp_path / "sheets.xlsx"
    book.save(path)
    result, _ = run(cli, sim, path, tmp_path)
    assert result.exit_code == 0, result.output
    assert sent(sim) == {"INV-NEW-1": "2"}
    result, _ = run(cli, sim, FIXTURES / "filtered.xlsx", tmp_path, "--sheet", "Old",
                    "--overwrite")
    assert result.exit_code == 0, result.output
    assert sent(sim) == {"INV-NEW-1": "2", "INV-OLD-1": "2"}


# --- item 2: find the header -----------------------------------------------------------------

TITLED_KEYS = {f"INV-T{n:03d}": str(n + 3) for n in range(1, 7)}


@pytest.mark.parametrize("name", ["titled.xlsx", "titled.ods"])
def test_a_title_merged_over_the_header_is_not_a_column(name: str, cli: Any, sim: Any,
                                                        tmp_path: Path) -> None:
    """The merged title on row 1 is skipped; the header on row 3 is found and said."""
    result, report = run(cli, sim, FIXTURES / name, tmp_path)
    assert result.exit_code == 0, result.output
    assert "header on row 3" in result.output
    assert sent(sim) == TITLED_KEYS
    rows = report_rows(report)
    assert rows["INV-T002"]["document_reference_id"] == "REF-2"
    assert rows["INV-T001"]["Invoice Date"] == "2026-10-31"
    assert "Month-end" not in ",".join(next(iter(rows.values())))


def test_the_header_below_notes_is_found(cli: Any, sim: Any, tmp_path: Path) -> None:
    """Notes on rows 1-4 are not data; the header on row 5 is."""
    result, _ = run(cli, sim, FIXTURES / "notes-above.xlsx", tmp_path)
    assert result.exit_code == 0, result.output
    assert "header on row 5" in result.output
    assert sent(sim) == {f"INV-N{n:03d}": str(n + 5) for n in range(1, 5)}


def test_header_row_names_the_header(cli: Any, sim: Any, tmp_path: Path, make_csv: Any) -> None:
    """--header-row picks the header even when a row above also names a key column."""
    path = make_csv([["Invoice", "note"], ["Batch", "7"], ["Invoice Number", "Reason"],
                     ["INV-H1", "01"]])
    result, _ = run(cli, sim, path, tmp_path)
    assert result.exit_code == 2  # row 1 names a key column: taken as the header, no reason
    assert sim.stats.requests == []
    result, _ = run(cli, sim, path, tmp_path, "--header-row", "3")
    assert result.exit_code == 0, result.output
    assert sent(sim) == {"INV-H1": "4"}


def test_no_header_lists_the_first_rows_once_and_names_the_flags(cli: Any, sim: Any,
                                                                 tmp_path: Path,
                                                                 make_csv: Any) -> None:
    """Without a key column name, the error shows the rows seen and both flags."""
    path = make_csv([["Corrections October"], ["Ref", "Why"], ["INV-X1", "01"]])
    result, _ = run(cli, sim, path, tmp_path)
    assert result.exit_code == 2
    assert "row 1: Corrections October; row 2: Ref, Why" in result.output
    assert "--key-column" in result.output and "--header-row" in result.output
    assert sim.stats.requests == []
    result, _ = run(cli, sim, path, tmp_path, "--key-column", "Ref", "--reason-column", "Why")
    assert result.exit_code == 0, result.output
    assert sent(sim) == {"INV-X1": "3"}


def test_a_merged_title_is_listed_once_when_no_header_is_found(cli: Any, sim: Any,
                                                               tmp_path: Path) -> None:
    """A title merged over nine cells appears once in the error, not nine times."""
    result, _ = run(cli, sim, FIXTURES / "titled.xlsx", tmp_path, "--key-column", "Folio")
    assert result.exit_code == 2
    assert result.output.count("Month-end corrections") == 1
    assert sim.stats.requests == []


def test_a_row_as_wide_as_the_header_above_it_is_refused(cli: Any, sim: Any, tmp_path: Path,
                                                         make_csv: Any) -> None:
    """A data row holding the word "Invoice" below a real header is not taken as the header."""
    path = make_csv([["Documento", "Tipo", "Motivo"], ["A-1", "Invoice", "01"],
                     ["A-2", "Credit", "01"]])
    result, _ = run(cli, sim, path, tmp_path, "--reason", "01")
    assert result.exit_code == 2
    assert "which row is the header" in result.output
    assert sim.stats.requests == []


def test_a_mistyped_key_column_gets_did_you_mean(cli: Any, sim: Any, tmp_path: Path) -> None:
    """--key-column 'Invoce Number' is refused with the closest name."""
    result, _ = run(cli, sim, FIXTURES / "titled.xlsx", tmp_path, "--key-column",
                    "Invoce Number")
    assert result.exit_code == 2
    assert "did you mean 'Invoice Number'?" in result.output
    assert sim.stats.requests == []


# --- item 3: the names people and Zuora use --------------------------------------------------


def test_a_data_source_export_uses_the_number_beside_the_id(cli: Any, sim: Any,
                                                            tmp_path: Path) -> None:
    """Invoice.Id + Invoice.InvoiceNumber: the number is sent, and the plan says so."""
    result, _ = run(cli, sim, FIXTURES / "datasource.xlsx", tmp_path, "--reason", "02")
    assert result.exit_code == 0, result.output
    assert "Invoice.InvoiceNumber (Invoice.Id beside it" in result.output
    assert sent(sim) == {f"INV000{n:05d}": str(n + 1) for n in range(1, 5)}


@pytest.mark.parametrize("header", [
    ["Invoice: Invoice Number", "Invoice: ID", "Account: Name", "Invoice: Reason Code"],
    ["invoicenumber", "id", "accountid", "reasoncode"],  # a Data Query result
    ["Invoice.InvoiceNumber", "Invoice.Balance", "Invoice.ReasonCode"],
])
def test_zuora_report_and_data_query_headers_are_recognised(header: list[str], cli: Any,
                                                            sim: Any, tmp_path: Path,
                                                            make_csv: Any) -> None:
    """A Zuora report export, a Data Query result and a Data Source export need no flags."""
    filler = ["x", "y"][:len(header) - 2]
    path = make_csv([header, ["INV-Z1", *filler, "03"], ["INV-Z2", *filler, "04"]])
    result, report = run(cli, sim, path, tmp_path)
    assert result.exit_code == 0, result.output
    assert sent(sim) == {"INV-Z1": "2", "INV-Z2": "3"}
    assert {r["reason"] for r in report_rows(report).values()} == {"03", "04"}


@pytest.mark.parametrize("name", ["spanish.xlsx", "spanish.ods"])
def test_spanish_headers_with_accents(name: str, cli: Any, sim: Any, tmp_path: Path) -> None:
    """Número de factura, Motivo de cancelación, Folio de sustitución are found."""
    result, _ = run(cli, sim, FIXTURES / name, tmp_path)
    assert result.exit_code == 0, result.output
    assert sent(sim) == {"FAC-001": "2", "FAC-002": "3", "FAC-003": "4"}
    bodies = {r.key: r.body for r in sim.stats.cancels()}
    assert "UUID-SUST-1" in bodies["FAC-001"]


def test_spanish_headers_without_accents(cli: Any, sim: Any, tmp_path: Path,
                                         make_csv: Any) -> None:
    """Numero de factura, Motivo, Documento de referencia: the same columns without accents."""
    path = make_csv([["Numero de factura", "Motivo", "Documento de referencia"],
                     ["FAC-101", "1", "SUST-9"], ["FAC-102", "2", ""]])
    result, _ = run(cli, sim, path, tmp_path)
    assert result.exit_code == 0, result.output
    assert sent(sim) == {"FAC-101": "2", "FAC-102": "3"}
    assert "SUST-9" in {r.key: r.body for r in sim.stats.cancels()}["FAC-101"]


@pytest.mark.parametrize("header", [["Invoice ID", "Invoice Number", "Reason"],
                                    ["Factura", "Folio", "Motivo"]])
def test_two_key_columns_are_refused_as_ambiguous(header: list[str], cli: Any, sim: Any,
                                                  tmp_path: Path, make_csv: Any) -> None:
    """Two columns that could be the key are never guessed between."""
    path = make_csv([header, ["A-1", "B-1", "01"]])
    result, _ = run(cli, sim, path, tmp_path)
    assert result.exit_code == 2
    assert f"{header[0]}, {header[1]}" in result.output
    assert "pass --key-column" in result.output
    assert sim.stats.requests == []


# --- item 4: OpenDocument ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["formats.ods", "formats.xlsx"])
def test_number_formats_and_formulas_are_read_as_shown(name: str, cli: Any, sim: Any,
                                                       tmp_path: Path) -> None:
    """1234 shown as 00001234, reason 1 shown as 01, a formula's cached value, leading zeros."""
    result, report = run(cli, sim, FIXTURES / name, tmp_path)
    assert result.exit_code == 0, result.output
    assert sent(sim) == {"00001234": "2", "00098765": "3", "000777": "4", "INV-0042": "5"}
    rows = report_rows(report)
    assert rows["00001234"]["reason"] == "01"
    assert rows["00001234"]["Invoice Date"] == "2026-10-01"
    if name.endswith(".ods"):  # the text LibreOffice showed, number format applied
        assert rows["00001234"]["Amount"] == "1,234.50"


def test_legacy_xls_names_the_fix(cli: Any, sim: Any, tmp_path: Path) -> None:
    """An .xls is refused with "save as .xlsx"."""
    path = tmp_path / "old.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504))
    result, _ = run(cli, sim, path, tmp_path)
    assert result.exit_code == 2
    assert "save as .xlsx" in result.output
    assert sim.stats.requests == []


# --- item 5: the report speaks the input's dialect -------------------------------------------


def test_a_semicolon_cp1252_crlf_csv_round_trips_through_its_report(cli: Any, sim: Any,
                                                                     tmp_path: Path) -> None:
    """The report of a ;/cp1252 CSV is ;/cp1252/CRLF; fixed and fed back, it sends the fix."""
    source = tmp_path / "ansi.csv"
    source.write_bytes((FIXTURES / "ansi.csv").read_bytes())
    assert b"\r\n" in source.read_bytes()
    result, report = run(cli, sim, source, tmp_path)
    assert result.exit_code == 1, result.output  # INV-A003 has reason 9
    assert "semicolon-separated cp1252" in result.output
    assert sent(sim) == {"INV-A001": "2", "INV-A002": "3"}
    raw = report.read_bytes()
    assert raw.startswith(b"Invoice Number;Reason;") and raw.count(b"\r\n") == 4
    text = raw.decode("cp1252")
    assert "Société Générale" in text and "100 €" in text
    rows = report_rows(report, "cp1252", ";")
    assert rows["INV-A003"]["status"] == "invalid"

    fixed = io.StringIO(newline="")  # the user fixes the reason, Excel saves it the same way
    writer = csv.DictWriter(fixed, list(rows["INV-A001"]), delimiter=";")
    writer.writeheader()
    for row in rows.values():
        # in their own column: it wins over the derived `reason` (issue 9)
        writer.writerow({**row, "Reason": "01"} if row["invoice_key"] == "INV-A003" else row)
    fixed_path = tmp_path / "fixed.csv"
    fixed_path.write_bytes(fixed.getvalue().encode("cp1252"))
    second = tmp_path / "second.csv"
    result = cli("run", str(fixed_path), "--base-url", sim.url, "--report", str(second),
                 "--no-progress", env=sim.env)
    assert result.exit_code == 0, result.output
    assert sent(sim) == {"INV-A001": "2", "INV-A002": "3", "INV-A003": "4"}
    assert report_rows(second, "cp1252", ";")["INV-A003"]["status"] == "succeeded"


def test_a_zuora_message_outside_cp1252_switches_the_report_to_utf8(tmp_path: Path) -> None:
    """A value cp1252 cannot hold makes the whole report UTF-8 with BOM, nothing lost."""
    from batch_cancel.model import Outcome, SourceRow, Status
    from batch_cancel.read.sheetfacts import CsvDialect
    from batch_cancel.record.writer import write_report

    rows = [SourceRow(2, "INV-1", "01", "", ("Peña",), columns=("Note",)),
            SourceRow(3, "INV-2", "01", "", ("Müller",), columns=("Note",))]
    outcomes = {2: Outcome(2, Status.FAILED, 400, "50000040", "facture déjà annulée"),
                3: Outcome(3, Status.FAILED, 400, "50000040", "請求書は取消済みです")}
    path = tmp_path / "r.csv"
    write_report(path, ["Note"], rows, outcomes, dialect=CsvDialect(";", "cp1252"))
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfNote;row;")
    text = raw.decode("utf-8-sig")
    assert "Peña" in text and "déjà" in text and "請求書は取消済みです" in text


# --- item 7: a dry run is a plan -----------------------------------------------------------


def test_a_dry_run_writes_the_plan_report_and_exits_by_the_preflight_rule(
        cli: Any, sim: Any, tmp_path: Path, make_csv: Any) -> None:
    """--dry-run --report writes every row (invalid ones with why); exit 1 with invalid rows."""
    rows = [["Invoice Number", "Reason"], *([f"BAD {n}", "01"] for n in range(12)),
            ["INV-OK", "01"]]
    path = make_csv(rows)
    plan = tmp_path / "plan.csv"
    result = cli("run", str(path), "--base-url", sim.url, "--dry-run", "--report", str(plan),
                 env=sim.env)
    assert result.exit_code == 1, result.output
    assert f"... and 2 more invalid rows (every invalid row is in {plan})" in result.output
    assert f"Plan report: {plan}" in result.output
    assert sim.stats.requests == []
    written = report_rows(plan)
    assert sum(r["status"] == "invalid" for r in written.values()) == 12
    assert written["INV-OK"]["status"] == "not_attempted"
    preflight = cli("preflight", str(path), "--base-url", sim.url, "--report",
                    str(tmp_path / "pre.csv"))
    assert preflight.exit_code == 1
    assert (tmp_path / "pre.csv").read_bytes() == plan.read_bytes()  # one code path

    good = make_csv([["Invoice Number", "Reason"], ["INV-OK", "01"]], name="good.csv")
    result = cli("run", str(good), "--base-url", sim.url, "--dry-run", env=sim.env)
    assert result.exit_code == 0, result.output
    assert sim.stats.requests == []


def test_header_row_on_a_blank_row_is_refused(cli: Any, sim: Any, tmp_path: Path) -> None:
    """--header-row naming a blank row (the one under the title) says so; nothing is sent."""
    result, _ = run(cli, sim, FIXTURES / "titled.ods", tmp_path, "--header-row", "2")
    assert result.exit_code == 2
    assert "--header-row 2: that row is blank" in result.output
    assert sim.stats.requests == []


def test_an_unknown_ods_sheet_lists_the_sheets(cli: Any, sim: Any, tmp_path: Path) -> None:
    """--sheet on an .ods names the sheets it has, hidden ones included."""
    result, _ = run(cli, sim, FIXTURES / "filtered.ods", tmp_path, "--sheet", "March")
    assert result.exit_code == 2
    assert "no sheet named 'March'; the sheets are: Corrections, Old" in result.output
    assert sim.stats.requests == []
    result, _ = run(cli, sim, FIXTURES / "filtered.ods", tmp_path, "--sheet", "Old")
    assert result.exit_code == 0, result.output
    assert sent(sim) == {"INV-OLD-1": "2"}


def test_verify_rewrites_a_semicolon_cp1252_report_in_its_own_dialect(
        sim: Any, cli: Any, tmp_path: Path) -> None:
    """`verify` writes the report back as it found it: `;`, cp1252, CRLF, nothing mangled."""
    source = tmp_path / "ansi.csv"
    source.write_bytes((FIXTURES / "ansi.csv").read_bytes())
    _, report = run(cli, sim, source, tmp_path)
    result = cli("verify", str(report), "--base-url", sim.url, "--until", "5", env=sim.env)
    assert result.exit_code == 0, result.output
    raw = report.read_bytes()
    assert raw.startswith(b"Invoice Number;Reason;") and b"\r\n" in raw
    rows = report_rows(report, "cp1252", ";")
    assert rows["INV-A001"]["einvoice_status"] == "Cancelled"
    assert rows["INV-A002"]["Note"] == "100 €"
