"""The report's file formats, each through `open_sink`: what lands in the file, in which
encoding, which formats are spreadsheets, and Parquet's row groups."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import openpyxl
import pyarrow.parquet as pq
import pytest

from batch_cancel.read.sheetfacts import CsvDialect
from batch_cancel.record.paths import ReportError
from batch_cancel.record.sinks import PARQUET_BATCH, ParquetSink, open_sink

HEADER = ["row", "note"]
#: a workbook's Rows sheet colours its `status` column, so it needs one
XLSX_HEADER = ["row", "status"]


@pytest.mark.parametrize(("suffix", "spreadsheet"), [
    (".csv", True), (".CSV", True), (".xlsx", True), (".jsonl", False), (".parquet", False)])
def test_each_format_says_whether_it_opens_in_a_spreadsheet(
        tmp_path: Path, suffix: str, spreadsheet: bool) -> None:
    """Spreadsheet formats get server text made inert; the others keep it as sent."""
    header = XLSX_HEADER if suffix == ".xlsx" else HEADER
    sink = open_sink(tmp_path / f"r{suffix}", suffix, header, CsvDialect())
    assert sink.spreadsheet is spreadsheet
    sink.close([])


def test_a_csv_is_written_in_the_inputs_delimiter_and_encoding(tmp_path: Path) -> None:
    """cp1252 and `;` as the input had them; the default is comma and UTF-8 with a BOM."""
    legacy = open_sink(tmp_path / "a.csv", ".csv", HEADER, CsvDialect(";", "cp1252"))
    legacy.write(["2", "Peña"])
    legacy.close([])
    assert (tmp_path / "a.csv").read_bytes() == b"row;note\r\n2;Pe\xf1a\r\n"
    plain = open_sink(tmp_path / "b.csv", ".csv", HEADER, CsvDialect())
    plain.write(["2", "Peña"])
    plain.close([])
    assert (tmp_path / "b.csv").read_bytes() == "\ufeffrow,note\r\n2,Peña\r\n".encode()


@pytest.mark.parametrize("suffix", [".csv", ".CSV"])
def test_a_value_that_does_not_fit_switches_the_whole_csv_to_utf8(
        tmp_path: Path, suffix: str) -> None:
    """The rows already written are re-encoded, the delimiter stays, the switch is told once,
    and rows after it are written in UTF-8 too."""
    told: list[tuple[str, str]] = []
    path = tmp_path / f"r{suffix}"
    sink = open_sink(path, suffix, HEADER, CsvDialect(";", "cp1252"),
                     lambda old, new: told.append((old, new)))
    sink.write(["2", "Peña"])
    sink.write(["3", "請求書"])
    sink.write(["4", "ü"])
    sink.close([])
    assert told == [("cp1252", "utf-8-sig")]
    assert path.read_bytes() == "\ufeffrow;note\r\n2;Peña\r\n3;請求書\r\n4;ü\r\n".encode()


def test_a_csv_switches_to_utf8_without_anyone_to_tell(tmp_path: Path) -> None:
    """No listener: the switch happens all the same."""
    sink = open_sink(tmp_path / "r.csv", ".csv", HEADER, CsvDialect(",", "cp1252"))
    sink.write(["2", "請"])
    sink.close([])
    assert (tmp_path / "r.csv").read_bytes() == "\ufeffrow,note\r\n2,請\r\n".encode()


def test_json_lines_keep_text_as_it_is_and_refuse_a_row_of_the_wrong_width(
        tmp_path: Path) -> None:
    """One object per row keyed by the header, non-ASCII unescaped; a row with a missing or
    extra value is a bug, not a row to shorten."""
    sink = open_sink(tmp_path / "r.jsonl", ".jsonl", HEADER, CsvDialect(";", "cp1252"))
    sink.write(["2", "Peña =1"])
    with pytest.raises(ValueError, match="zip"):
        sink.write(["3"])
    sink.close([])
    assert (tmp_path / "r.jsonl").read_bytes() == '{"row": "2", "note": "Peña =1"}\n'.encode()
    assert json.loads((tmp_path / "r.jsonl").read_text(encoding="utf-8")) == {
        "row": "2", "note": "Peña =1"}


def test_a_discarded_text_sink_is_closed(tmp_path: Path) -> None:
    """`discard` closes the file (the writer then deletes it): what was written is there."""
    for suffix in (".csv", ".jsonl"):
        sink = open_sink(tmp_path / f"r{suffix}", suffix, HEADER, CsvDialect())
        sink.write(["2", "x"])
        sink.discard()
    with (tmp_path / "r.csv").open(encoding="utf-8-sig", newline="") as handle:
        assert list(csv.reader(handle)) == [HEADER, ["2", "x"]]
    assert (tmp_path / "r.jsonl").read_text(encoding="utf-8") == '{"row": "2", "note": "x"}\n'


def test_an_xlsx_sink_writes_the_rows_sheet(tmp_path: Path) -> None:
    """Rows as text cells under the header; `discard` leaves nothing to close."""
    sink = open_sink(tmp_path / "r.xlsx", ".xlsx", XLSX_HEADER, CsvDialect())
    sink.write(["2", "failed"])
    sink.discard()
    sink.close([])
    rows = openpyxl.load_workbook(tmp_path / "r.xlsx")["Rows"]
    assert [[c.value for c in row] for row in rows.iter_rows()] == [
        XLSX_HEADER, ["2", "failed"]]


def test_parquet_is_written_in_row_groups_of_parquet_batch_rows(tmp_path: Path) -> None:
    """A full batch becomes a row group at once, the rest at close; every column is text."""
    path = tmp_path / "r.parquet"
    sink = open_sink(path, ".parquet", HEADER, CsvDialect())
    for n in range(PARQUET_BATCH + 1):
        sink.write([str(n), "x"])
    sink.close([])
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [
        PARQUET_BATCH, 1]
    table = pq.read_table(path)
    assert [str(t) for t in table.schema.types] == ["string", "string"]
    assert table.column("row").to_pylist()[-2:] == [str(PARQUET_BATCH - 1), str(PARQUET_BATCH)]
    assert PARQUET_BATCH == 10_000


def test_a_parquet_sink_closed_with_nothing_pending_adds_no_row_group(tmp_path: Path) -> None:
    """Nothing batched, nothing written: no empty row group."""
    path = tmp_path / "r.parquet"
    ParquetSink(path, HEADER, CsvDialect()).close([])
    assert pq.ParquetFile(path).metadata.num_row_groups == 0


def test_a_discarded_parquet_sink_drops_its_batch(tmp_path: Path) -> None:
    """`discard` writes nothing still batched and closes the file."""
    path = tmp_path / "r.parquet"
    sink = ParquetSink(path, HEADER, CsvDialect())
    sink.write(["2", "x"])
    sink.discard()
    assert pq.read_table(path).num_rows == 0


def test_a_parquet_row_of_the_wrong_width_is_refused_not_cut(tmp_path: Path) -> None:
    """A row with a value too many is a bug: the batch fails rather than lose the value."""
    sink = ParquetSink(tmp_path / "r.parquet", HEADER, CsvDialect())
    sink.write(["2", "x", "extra"])
    sink.write(["3", "y"])
    with pytest.raises(ValueError, match="zip"):
        sink.close([])


def test_a_parquet_report_without_pyarrow_says_how_to_get_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow is a dependency, but an install without it gets a report error, not a trace."""
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ReportError) as caught:
        open_sink(tmp_path / "r.parquet", ".parquet", HEADER, CsvDialect())
    assert str(caught.value) == "a .parquet report needs pyarrow: pip install pyarrow"
