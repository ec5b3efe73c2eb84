"""The loader's fast path gives exactly what its rule-by-rule path gives.

A block of plain rows (clean key, usual reason spelling, no reference) is built column by
column in C; any other block goes row by row through `make_row`. These tests feed files mixing
both kinds (tricky keys, case-only duplicates across blocks, blank and short rows) through the
loader twice, once with the fast path switched off, and compare every field of every row. They
also pin the pieces the fast path rests on: the one-match key pattern, the reason spellings,
the streamed CSV reading and the order in which errors are reported.
"""

from __future__ import annotations

import csv
import gc
import io
import random
from pathlib import Path
from typing import Any

import pytest

from batch_cancel.model import SourceRow, Status
from batch_cancel.read import rows as plain_rows
from batch_cancel.read import table as tables
from batch_cancel.read import text as text_files
from batch_cancel.read.loader import InputError, LoadedInput, LoadOptions, load
from batch_cancel.read.table import records_of
from batch_cancel.read.validate import (
    CLEAN_KEY,
    EXCEL_ERRORS,
    REASON_SPELLINGS,
    key_problem,
    normalise_reason,
)

TRICKY_KEYS = [
    "INV-0001", "inv-0001", "INV-0001 ", " INV-0002", "INV 0003", "INV\t0004", "INV\u00a00005",
    "INV\u20030006", "INV\x7f0008", "ÍNV-0009", "INV/0010", "INV?0011", "INV#12",
    "INV%13", "INV..14", "INV.15", ".INV16", "INV17.", "..", ".", "1E+15", "1,23E+15", "1.5e3",
    "9e9", "e9", "1E+", "12345", "00001234", "#N/A", "#VALUE!", "=A1", "+1", "-1", "@x", "'x",
    '"q"', "a" * 255, "a" * 256, "", " ", "\u200b", "INV-ß", "INV-ﬁ", "Inv-0001", "INV-0001",
]
REASON_CELLS = ["01", "1", "02", "2", "03", "3", "04", "4", " 2", "2.0", "002", "", "5", "00",
                "x", "٢", "2 "]


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    """A UTF-8 CSV written by the csv module (quotes where a cell needs them)."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def load_both(path: Path, monkeypatch: pytest.MonkeyPatch, **options: Any
              ) -> tuple[LoadedInput, LoadedInput, int]:
    """The file loaded with the fast path, then without; and how many blocks took it."""
    monkeypatch.setattr(tables, "BLOCK_ROWS", 5)  # many blocks, fast and slow ones mixed
    fast_blocks = 0
    real = plain_rows.fast_block

    def counting(*args: Any) -> bool:
        nonlocal fast_blocks
        taken = real(*args)
        fast_blocks += taken
        return taken

    monkeypatch.setattr(plain_rows, "fast_block", counting)
    fast = load(path, LoadOptions(**options))
    monkeypatch.setattr(plain_rows, "fast_block", lambda *args: False)
    slow = load(path, LoadOptions(**options))
    return fast, slow, fast_blocks


def assert_same(fast: LoadedInput, slow: LoadedInput) -> None:
    assert (fast.columns, fast.key_column, fast.reason_column, fast.reference_column) == (
        slow.columns, slow.key_column, slow.reason_column, slow.reference_column)
    assert len(fast.rows) == len(slow.rows)
    for mine, theirs in zip(fast.rows, slow.rows, strict=True):
        assert mine == theirs, (mine, theirs)
        assert mine.extra == theirs.extra


def mixed_rows(seed: int, count: int) -> list[list[str]]:
    """Mostly plain rows, with tricky keys and reasons and case-only duplicates among them."""
    rng = random.Random(seed)
    rows = []
    for number in range(count):
        if rng.random() < 0.7:
            key, reason = f"INV-{rng.randrange(count):05d}", rng.choice(["02", "2", "01"])
        else:
            key, reason = rng.choice(TRICKY_KEYS), rng.choice(REASON_CELLS)
        if rng.random() < 0.1:
            key = key.lower()
        rows.append([key, reason, f"note {number}"])
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mixed_file_gives_the_same_rows_with_and_without_the_fast_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rows = mixed_rows(seed, 300)
    rows[40:40] = [["", "", ""], ["INV-SHORT"], ["  ", " ", ""]]  # blank and short rows
    path = write_csv(tmp_path / "mixed.csv", [["Invoice Number", "Reason", "Note"], *rows])
    fast, slow, fast_blocks = load_both(path, monkeypatch)
    assert_same(fast, slow)
    assert fast_blocks > 0
    statuses = {row.status for row in fast.rows}
    assert {None, Status.INVALID, Status.DUPLICATE} <= statuses


def test_case_only_duplicates_across_fast_and_slow_blocks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [[f"INV-{n}", "02"] for n in range(5)]  # a fast block
    rows += [["inv-1", "02"], [" INV-2 ", "1"], ["INV-9", "9"], ["INV-3", "02"], ["bad key", "1"]]
    rows += [["Inv-9", "02"], ["INV-0", "02"], ["iNv-4", "2"], ["INV-10", "03"], ["INV-11", "04"]]
    path = write_csv(tmp_path / "dups.csv", [["invoiceKey", "reason"], *rows])
    fast, slow, fast_blocks = load_both(path, monkeypatch)
    assert_same(fast, slow)
    assert fast_blocks == 2  # rows 2-6 and 12-16; rows 7-11 go row by row
    marks = {row.row: (row.status, row.duplicate_of) for row in fast.rows}
    assert marks[7] == (Status.DUPLICATE, 3) and marks[8] == (Status.DUPLICATE, 4)
    assert marks[10] == (Status.DUPLICATE, 5) and marks[13] == (Status.DUPLICATE, 2)
    assert marks[9] == (Status.INVALID, None)
    assert marks[12] == (None, None)  # INV-9's earlier row is invalid: this one claims it
    assert marks[14] == (Status.DUPLICATE, 6)


@pytest.mark.parametrize("options", [
    {"key_column": "Id", "reason_column": "Code", "default_reason": "3"},
    {"key_column": "Id", "reason_column": "Code", "reference_column": "Ref"},
    {"key_column": "Id"},  # the reason column is then "reason " (every cell "x")
])
def test_options_give_the_same_rows_with_and_without_the_fast_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: dict[str, str]) -> None:
    rng = random.Random(7)
    rows = [[key, reason, rng.choice(["", "", " ", "MX-1"]), "x"]
            for key, reason, _ in mixed_rows(7, 120)]
    path = write_csv(tmp_path / "opts.csv", [["Id", "Code", "Ref", "reason "], *rows])
    fast, slow, _ = load_both(path, monkeypatch, **options)
    assert_same(fast, slow)


def test_no_reason_column_takes_the_default_on_both_paths(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [[key] for key, _, _ in mixed_rows(9, 60)]
    path = write_csv(tmp_path / "keys.csv", [["invoiceKey"], *rows])
    fast, slow, fast_blocks = load_both(path, monkeypatch, default_reason="04")
    assert_same(fast, slow)
    assert fast_blocks > 0 and {r.reason for r in fast.rows if r.status is None} == {"04"}


def test_columns_renamed_onto_each_other_keep_the_last_cell_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'reason' is renamed 'input_reason' in the report, beside an input_reason column."""
    path = write_csv(tmp_path / "clash.csv", [["invoiceKey", "Code", "reason", "input_reason"],
                                              ["INV1", "01", "a", "b"], ["INV2", "02", "c", "d"]])
    fast, slow, _ = load_both(path, monkeypatch, reason_column="Code")
    assert_same(fast, slow)
    assert fast.columns == ["invoiceKey", "Code", "input_reason", "input_reason"]
    assert fast.rows[0].extra == {"invoiceKey": "INV1", "Code": "01", "input_reason": "b"}


def test_clean_key_pattern_accepts_only_keys_every_rule_accepts() -> None:
    rng = random.Random(11)
    alphabet = "AZaz09-_./?#%eE+, \t\x00\x7fé\u00a0"
    samples = TRICKY_KEYS + sorted(EXCEL_ERRORS) + [
        "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 8))) for _ in range(20000)]
    for key in samples:
        if CLEAN_KEY.fullmatch(key):
            assert key_problem(key) == "" and key.strip() == key, repr(key)
    assert all(CLEAN_KEY.fullmatch(k) for k in ("INV-0001", "00001234", "a" * 255, "A.B"))


def test_reason_spellings_are_what_normalise_reason_makes_of_them() -> None:
    assert {cell: normalise_reason(cell) for cell in REASON_SPELLINGS} == REASON_SPELLINGS


def random_csv(rng: random.Random, rows: int) -> str:
    """CSV text with every line ending, quoted fields spanning lines, blank lines."""
    endings = ["\n", "\r\n", "\r"]
    lines = []
    for number in range(rows):
        cells = [f"K{number}", rng.choice(["01", '"0\r\n2"', '"a,b"', ""]), "x" * rng.randrange(60)]
        lines.append(",".join(cells) + rng.choice(endings))
        if rng.random() < 0.05:
            lines.append(rng.choice(endings))
    return "".join(lines)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252", "utf-16"])
def test_streamed_csv_reads_the_rows_the_whole_text_gives(tmp_path: Path,
                                                          encoding: str) -> None:
    """Line endings cut by the decoder's chunk boundaries change nothing, nor the codec."""
    rng = random.Random(encoding)
    text = "invoiceKey,reason,note\r\n" + random_csv(rng, 3000)
    path = tmp_path / "lines.csv"
    path.write_bytes(text.encode(encoding))
    expected = list(enumerate(csv.reader(io.StringIO(text, newline="")), start=1))
    assert list(records_of(text_files.read_csv(path, None, None))) == expected


def test_first_nonblank_line_matches_splitting_the_whole_text() -> None:
    rng = random.Random(5)
    for _ in range(200):
        blank = "".join(rng.choice([" ", "\t", "\r\n", "\n", "\r", "\x0c", "\u2028"])
                        for _ in range(rng.randrange(0, 40000)))
        text = blank + rng.choice(["a;b", "a,b\tc", "", " x "]) + rng.choice(["\r\n", "\n", ""])
        expected = next((line for line in text.splitlines() if line.strip()), "")
        assert text_files.first_nonblank_line(text) == expected


def test_a_bad_row_above_an_unreadable_one_is_reported_first(tmp_path: Path) -> None:
    path = tmp_path / "both.csv"
    path.write_text('invoiceKey,reason\nINV1,01\nINV2,01,extra\nINV3,"0"1\n', encoding="utf-8")
    with pytest.raises(InputError, match="row 3 has 3 cells"):
        load(path)


def test_a_damaged_row_is_reported_before_a_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "title.csv"
    path.write_text("Corrections\ninvoiceKey,reason\nINV1,01\n", encoding="utf-8")
    with pytest.raises(InputError, match="title above the real header"):
        load(path, LoadOptions(header_row=1))  # the title forced as the header
    path.write_text("invoice,note\nINV1,x\n" + "INV2,y\n" * 5000 + "INV3,z,1\n")
    with pytest.raises(InputError, match="row 5003 has 3 cells"):
        load(path)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_left_as_it_was(tmp_path: Path, enabled: bool) -> None:
    """Loading touches no process-wide GC state: not on or off, no threshold, no freeze."""
    path = write_csv(tmp_path / "gc.csv", [["invoiceKey", "reason"],
                                           *([f"INV{n}", "01"] for n in range(5000))])
    was, frozen, threshold = gc.isenabled(), gc.get_freeze_count(), gc.get_threshold()
    try:
        (gc.enable if enabled else gc.disable)()
        load(path)
        assert gc.isenabled() is enabled
        assert (gc.get_freeze_count(), gc.get_threshold()) == (frozen, threshold)
    finally:
        (gc.enable if was else gc.disable)()


def test_rows_share_reason_text_and_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "share.csv", [["invoiceKey", "reason"],
                                              *[[f"INV{n}", "02"] for n in range(50)]])
    rows = load(path).rows
    assert len({id(row.cells[1]) for row in rows}) == 1
    assert len({id(row.columns) for row in rows}) == 1


def test_source_row_extra_and_values_for() -> None:
    row = SourceRow(2, "INV1", "02", "", ("a", "b"), columns=("x", "y"))
    assert row.extra == {"x": "a", "y": "b"}
    assert row.values_for(("x", "y")) == ["a", "b"]
    assert row.values_for(("y", "z", "x")) == ["b", "", "a"]
    changed = row.with_extra({**row.extra, "z": "c"})
    assert (changed.cells, changed.columns, row.cells) == (("a", "b", "c"), ("x", "y", "z"),
                                                            ("a", "b"))
