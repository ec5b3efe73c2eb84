"""Write the month-end corrections samples: the same 300 rows as a CSV and as an Excel workbook.

Run it from the project root to regenerate the committed files (or into another folder, as the
tests do):

    .venv/bin/python input_samples/make_samples.py [OUT_DIR]

The output is deterministic: one `random.Random(2026)` draws every value, and the workbook is
saved with fixed timestamps, so a regenerated file is byte-identical to the committed one and a
re-run leaves nothing to commit.

Most rows are ordinary corrections that cancel fine. Fifteen rows are there on purpose, and their
`Note` says so: 6 invalid rows, 4 duplicates and 5 keys the simulator refuses (see README.md).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import random
import re
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import openpyxl
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

SEED = 2026
ROWS = 300
STEM = "month-end-corrections"
HEADER = ["Invoice Number", "Invoice Date", "Reason", "Document Reference ID", "Customer",
          "Account Number", "Amount", "Currency", "Country", "Requested By", "Note"]
#: In the workbook, a blank row follows these data rows (151 twice: two blank rows in a row).
BLANK_AFTER = (74, 151, 151, 223)
#: Every timestamp inside the .xlsx (zip entries, document properties), so saves are identical.
FIXED_TIME = dt.datetime(2026, 1, 31, 18, 0, 0)

#: (country, currency, weight, customers): fictitious companies, a few per country.
COUNTRIES = (
    ("US", "USD", 26, ("Northwind Logistics Inc.", "Bluefin Analytics LLC",
                       "Cedar & Pine Outfitters Inc.", "Summit Peak Software Inc.")),
    ("MX", "MXN", 22, ("Comercializadora del Bajío S.A. de C.V.",
                       "Grupo Industrial Monterrey S.A. de C.V.",
                       "Servicios Digitales Tulum S. de R.L. de C.V.")),
    ("GB", "GBP", 12, ("Harbourside Media Ltd", "Kestrel Engineering Ltd")),
    ("DE", "EUR", 10, ("Rheinfeld Maschinenbau GmbH", "Blauwald Software GmbH")),
    ("FR", "EUR", 8, ("Atelier Lumière SAS", "Transports Vercors SARL")),
    ("CA", "CAD", 8, ("Maple Ridge Data Corp.",)),
    ("NL", "EUR", 5, ("Grachtenhuis Retail B.V.",)),
    ("ES", "EUR", 5, ("Soluciones Mirador S.L.",)),
    ("AU", "AUD", 4, ("Southern Cross Freight Pty Ltd",)),
)
REQUESTERS = ("Priya Natarajan", "Tomás Herrera", "Jordan Blake", "Mei Lin", "Sofia Ricci")
#: Everyday notes by reason code (an empty note is common too).
NOTES = {
    "01": ("Replaced by {ref}: price correction", "Replaced by {ref}: wrong RFC on original",
           "Replaced by {ref}: quantity corrected"),
    "02": ("Wrong billing address", "Wrong tax ID on invoice", "Billed to the wrong account",
           "Discount not applied"),
    "03": ("Order cancelled before delivery", "Service not provided this period",
           "Customer churned before the period started"),
    "04": ("Included in the global invoice by mistake",),
}

# The rows that are there on purpose, in the order they are placed into the file.
SPECIAL_KINDS = (
    "invalid_space", "invalid_empty", "invalid_reason", "invalid_reference", "invalid_slash",
    "invalid_non_ascii",
    "duplicate_same", "duplicate_lower_case", "duplicate_spaces", "duplicate_other_reason",
    "not_found", "not_found", "not_found", "cancelled", "cancelled",
)


@dataclass(frozen=True)
class Row:
    """One correction. `reason` is an int where the workbook holds a number cell."""

    key: str
    date: dt.date
    reason: int | str
    reference: str
    customer: str
    account: str
    cents: int
    currency: str
    country: str
    requested_by: str
    note: str

    def reason_code(self) -> str:
        """The two-digit code the loader makes of the reason cell."""
        return f"{self.reason:02d}" if isinstance(self.reason, int) else self.reason

    def csv_cells(self) -> list[str]:
        """The row as CSV text: a reason number cell is written as Excel shows it ("2")."""
        return [self.key, self.date.isoformat(), str(self.reason), self.reference,
                self.customer, self.account, f"{self.cents // 100}.{self.cents % 100:02d}",
                self.currency, self.country, self.requested_by, self.note]

    def xlsx_cells(self) -> list[object]:
        """The row as workbook values: a real date, a number amount, reason as number or text."""
        return [self.key or None, self.date, self.reason, self.reference or None, self.customer,
                self.account, self.cents / 100, self.currency, self.country, self.requested_by,
                self.note or None]


def make_rows(rng: random.Random) -> list[Row]:
    """All data rows in file order: ordinary corrections, the special rows spread among them."""
    numbers = rng.sample(range(10_000, 100_000), 2 * ROWS)
    keys = [f"INV{n:08d}" for n in numbers[:ROWS]]
    references = [f"INV{n:08d}" for n in numbers[ROWS:]]  # replacement invoices, never a key
    accounts = {customer: f"A{rng.randrange(10_000_000, 100_000_000)}"
                for *_, customers in COUNTRIES for customer in customers}
    positions = sorted(rng.sample(range(12, ROWS), len(SPECIAL_KINDS)))
    kinds = list(SPECIAL_KINDS)
    rng.shuffle(kinds)
    special_at = dict(zip(positions, kinds, strict=True))
    counters = {"not_found": 0, "cancelled": 0}
    rows: list[Row] = []
    for index in range(ROWS):
        kind = special_at.get(index)
        row = ordinary_row(rng, keys[index], references[index], accounts,
                           mexico_01=kind == "invalid_reference")
        if kind is not None:
            if kind in counters:
                counters[kind] += 1
            row = special_row(rng, kind, row, rows, counters.get(kind, 0))
        rows.append(row)
    return rows


def ordinary_row(rng: random.Random, key: str, reference: str, accounts: dict[str, str],
                 mexico_01: bool = False) -> Row:
    """A correction that cancels fine: Mexican rows mostly 01 with the replacing invoice."""
    if mexico_01:
        country, currency, _, customers = next(c for c in COUNTRIES if c[0] == "MX")
    else:
        country, currency, _, customers = rng.choices(COUNTRIES, [c[2] for c in COUNTRIES])[0]
    customer = rng.choice(customers)
    if country == "MX" and (mexico_01 or rng.random() < 0.7):
        code = "01"
    else:
        code = rng.choices(("02", "03", "04"), (50, 35, 15))[0]
        reference = ""
    # About a third of the reason cells are Excel numbers (1, 2, 3, 4); the rest text ("02").
    reason: int | str = int(code) if rng.random() < 0.35 else code
    note = rng.choice(NOTES[code]).format(ref=reference) if rng.random() < 0.6 else ""
    return Row(
        key=key,
        date=dt.date(2026, 1, 1) + dt.timedelta(days=rng.randrange(31)),
        reason=reason,
        reference=reference,
        customer=customer,
        account=accounts[customer],
        cents=rng.randrange(4_900, 2_500_000) if currency != "MXN" else rng.randrange(
            90_000, 45_000_000),
        currency=currency,
        country=country,
        requested_by=rng.choice(REQUESTERS),
        note=note,
    )


def special_row(rng: random.Random, kind: str, row: Row, earlier: list[Row], number: int) -> Row:
    """One of the rows that are there on purpose; its Note says what it shows."""
    key = row.key
    if kind == "invalid_space":
        return replace(row, key=f"{key[:7]} {key[7:]}",
                       note="ON PURPOSE invalid: a space inside the invoice number")
    if kind == "invalid_empty":
        return replace(row, key="", note="ON PURPOSE invalid: the invoice number is missing")
    if kind == "invalid_reason":
        return replace(row, reason="05", reference="",
                       note="ON PURPOSE invalid: reason 05 is not a reason code (01-04)")
    if kind == "invalid_reference":  # `row` is a Mexican 01 row with its document reference
        return replace(row, reason="02",
                       note="ON PURPOSE invalid: a document reference with reason 02 "
                            "(only reason 01 takes one)")
    if kind == "invalid_slash":
        return replace(row, key=f"{key}/2",
                       note="ON PURPOSE invalid: a slash in the invoice number")
    if kind == "invalid_non_ascii":
        # U+0406 CYRILLIC CAPITAL LETTER BYELORUSSIAN-UKRAINIAN I looks exactly like a Latin I.
        return replace(row, key="\u0406" + key[1:],
                       note="ON PURPOSE invalid: the I is a Cyrillic І (pasted from a PDF)")
    if kind == "not_found":
        return replace(row, key=f"INV-NOTFOUND-{number:04d}",
                       note="ON PURPOSE fails in the simulator: a NOTFOUND key does not exist "
                            "(404)")
    if kind == "cancelled":
        return replace(row, key=f"INV-CANCELLED-{number:04d}",
                       note="ON PURPOSE skipped in the simulator: a CANCELLED key was "
                            "already cancelled before the run")
    # Duplicates: the same invoice as an earlier ordinary row, as people re-paste it.
    original = rng.choice([r for r in earlier if not r.note.startswith("ON PURPOSE")])
    note = f"ON PURPOSE duplicate: same invoice as an earlier row ({original.key})"
    if kind == "duplicate_same":
        return replace(original, note=f"{note}, pasted twice")
    if kind == "duplicate_lower_case":
        return replace(original, key=original.key.lower(),
                       note=f"{note}, in lower case (keys compare without case)")
    if kind == "duplicate_spaces":
        return replace(original, key=f"  {original.key} ",
                       note=f"{note}, with spaces around it (keys are trimmed)")
    assert kind == "duplicate_other_reason", kind
    other = "03" if original.reason_code() != "03" else "02"
    return replace(original, reason=other, reference="",
                   note=f"{note}, with another reason (still one cancel per invoice)")


def write_csv(path: Path, rows: list[Row]) -> None:
    """UTF-8 with a BOM (so Excel shows the accents), LF line ends, minimal quoting."""
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(row.csv_cells() for row in rows)


def write_xlsx(path: Path, rows: list[Row]) -> None:
    """A workbook as a person would keep it: typed cells, formats, blank rows in the middle."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Corrections"
    sheet.append(HEADER)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    sheet.freeze_panes = "A2"
    widths = (15, 13, 8, 22, 44, 15, 14, 10, 9, 17, 80)
    for column, width in enumerate(widths, start=1):
        sheet.column_dimensions[get_column_letter(column)].width = width
    line = 1
    for number, row in enumerate(rows, start=1):
        line += 1
        for column, value in enumerate(row.xlsx_cells(), start=1):
            cell = sheet.cell(row=line, column=column, value=value)
            if column == 2:
                cell.number_format = "yyyy-mm-dd"
            elif column == 7:
                cell.number_format = "#,##0.00"
        line += BLANK_AFTER.count(number)  # rows left without any cell: blank in Excel
    book.properties.creator = "Finance operations"
    book.properties.created = FIXED_TIME
    buffer = io.BytesIO()
    book.save(buffer)
    path.write_bytes(_fixed_timestamps(buffer.getvalue()))


def _fixed_timestamps(xlsx: bytes) -> bytes:
    """Re-zip a saved workbook with fixed entry times and a fixed 'modified' property
    (openpyxl stamps both with the current time on every save)."""
    stamp = FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ")
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(xlsx)) as source, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            data = source.read(entry.filename)
            if entry.filename == "docProps/core.xml":
                data = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*", rb"\g<1>" + stamp.encode(),
                              data)
            info = zipfile.ZipInfo(entry.filename, date_time=FIXED_TIME.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            target.writestr(info, data)
    return out.getvalue()


def main(argv: list[str] | None = None) -> None:
    """Write both samples into OUT_DIR (default: this script's folder)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=Path(__file__).resolve().parent,
                        help="folder to write the samples into (default: input_samples/)")
    out_dir: Path = parser.parse_args(argv).out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = make_rows(random.Random(SEED))
    write_csv(out_dir / f"{STEM}.csv", rows)
    write_xlsx(out_dir / f"{STEM}.xlsx", rows)
    print(f"wrote {len(rows)} rows to {out_dir / STEM}.csv and .xlsx")


if __name__ == "__main__":
    main()
