"""The committed samples in input_samples/: they run against the simulator exactly as their
README says, and `make_samples.py` regenerates them unchanged.

Each sample is copied into tmp_path first, so no report is ever written into input_samples/.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import openpyxl
import pytest
from click.testing import Result

from batch_cancel.model import Status
from tests.helpers import CliInvoker, RunningSimulator, read_report, resends_after_acceptance

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "input_samples"
README = SAMPLES_DIR / "README.md"
SAMPLES = ("month-end-corrections.csv", "month-end-corrections.xlsx")
#: The Note prefix of each row that is there on purpose, and the status it must end with.
NOTE_STATUS = (
    ("ON PURPOSE invalid", Status.INVALID),
    ("ON PURPOSE duplicate", Status.DUPLICATE),
    ("ON PURPOSE fails", Status.FAILED),
    ("ON PURPOSE skipped", Status.SKIPPED),
)


@dataclass
class InputRow:
    """One data row of a sample as the file holds it, read without batch-cancel's loader."""

    row: int
    key: str
    note: str


@dataclass
class SampleRun:
    """One sample run through the CLI against the `sim` fixture."""

    name: str
    result: Result
    report: list[dict[str, str]]
    inputs: list[InputRow]
    sim: RunningSimulator


def readme_counts() -> dict[str, dict[str, int]]:
    """The expected counts per status of each sample, from the table in input_samples/README.md."""
    columns: list[str] | None = None
    counts: dict[str, dict[str, int]] = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "File":
            columns = cells
        elif columns and (name := re.fullmatch(r"`([^`]+)`", cells[0])):
            counts[name.group(1)] = {c: int(v) for c, v in zip(columns[1:], cells[1:],
                                                                strict=True)}
        elif not line.startswith("|"):
            columns = None
    return counts


def input_rows(path: Path) -> list[InputRow]:
    """The non-blank data rows after the header, numbered as the sheet or file numbers them."""
    if path.suffix == ".xlsx":
        book = openpyxl.load_workbook(path)
        grid = [["" if v is None else str(v) for v in values]
                for values in book.active.iter_rows(values_only=True)]
    else:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            grid = list(csv.reader(handle))
    header, *records = [(n, cells) for n, cells in enumerate(grid, start=1)
                        if any(c.strip() for c in cells)]
    key_at, note_at = header[1].index("Invoice Number"), header[1].index("Note")
    return [InputRow(n, cells[key_at].strip(), cells[note_at]) for n, cells in records]


def expected_status(note: str) -> Status:
    """The status a row's Note announces: an ON PURPOSE row says how it ends, others succeed."""
    for prefix, status in NOTE_STATUS:
        if note.startswith(prefix):
            return status
    return Status.SUCCEEDED


@pytest.fixture(params=SAMPLES)
def sample_run(request: pytest.FixtureRequest, tmp_path: Path, sim: RunningSimulator,
               cli: CliInvoker) -> SampleRun:
    """Run one sample, copied into tmp_path, against the simulator and read its report."""
    sample = Path(shutil.copy(SAMPLES_DIR / request.param, tmp_path / request.param))
    report = tmp_path / "report.csv"
    # --rate only lifts the base-URL default pacing (100/s), which would just slow the test.
    result = cli("run", str(sample), "--base-url", sim.url, "--report", str(report),
                 "--no-progress", "--rate", "10000", env=sim.env)
    return SampleRun(request.param, result, read_report(report), input_rows(sample), sim)


#: What a run can write; `cancel_failed` only comes from `verify`.
RUN_STATUSES = {s.value for s in Status} - {Status.CANCEL_FAILED.value}


def test_readme_states_counts_for_every_sample_that_add_up_to_its_rows() -> None:
    """The README's table has a row per sample whose status counts sum to its data rows."""
    counts = readme_counts()
    assert set(counts) == set(SAMPLES)
    for name, expected in counts.items():
        rows = expected.pop("rows")
        assert set(expected) == RUN_STATUSES
        assert sum(expected.values()) == rows == len(input_rows(SAMPLES_DIR / name))


def test_sample_run_gives_the_readme_counts_and_exit_code_1(sample_run: SampleRun) -> None:
    """Each status count in the report equals the README's, and the run exits 1 (rows failed)."""
    expected = readme_counts()[sample_run.name]
    expected.pop("rows")
    seen = dict.fromkeys(RUN_STATUSES, 0)
    for line in sample_run.report:
        seen[line["status"]] += 1
    assert seen == expected
    assert sample_run.result.exit_code == 1, sample_run.result.output


def test_every_input_row_appears_exactly_once_in_the_report(sample_run: SampleRun) -> None:
    """The report holds each non-blank data row once, in file order, under its own row number."""
    reported = [(int(line["row"]), line["invoice_key"]) for line in sample_run.report]
    assert reported == [(r.row, r.key) for r in sample_run.inputs]


def test_each_on_purpose_row_ends_as_its_note_says(sample_run: SampleRun) -> None:
    """ON PURPOSE rows end invalid, duplicate or failed as their Note says; all others succeed."""
    notes = {r.row: r.note for r in sample_run.inputs}
    for line in sample_run.report:
        assert line["status"] == expected_status(notes[int(line["row"])]), line
        if "NOTFOUND" in line["invoice_key"]:
            assert (line["http_status"], line["error_code"]) == ("404", "59210040")
        if "CANCELLED" in line["invoice_key"]:
            assert line["error_message"] == "already Cancelled before this run; not sent again"


def test_simulator_accepted_one_cancel_per_succeeded_row(sample_run: SampleRun) -> None:
    """The simulator accepted a cancel for each succeeded invoice and none other, and no
    cancel was sent again for an invoice it had accepted."""
    accepted = sample_run.sim.stats.accepted_cancels
    succeeded = [line["invoice_key"] for line in sample_run.report
                 if line["status"] == Status.SUCCEEDED]
    assert not resends_after_acceptance(sample_run.sim.stats)
    assert sorted(accepted) == sorted(succeeded)


def test_make_samples_regenerates_the_committed_samples(tmp_path: Path) -> None:
    """make_samples.py writes a byte-identical CSV and a workbook with the same cells."""
    subprocess.run([sys.executable, str(SAMPLES_DIR / "make_samples.py"), str(tmp_path)],
                   check=True, capture_output=True)
    name = "month-end-corrections"
    assert (tmp_path / f"{name}.csv").read_bytes() == (SAMPLES_DIR / f"{name}.csv").read_bytes()
    assert workbook_cells(tmp_path / f"{name}.xlsx") == workbook_cells(
        SAMPLES_DIR / f"{name}.xlsx")


def workbook_cells(path: Path) -> list[tuple[str, object, str]]:
    """Every non-empty cell of the first sheet: coordinate, value and number format."""
    sheet = openpyxl.load_workbook(path).active
    return [(c.coordinate, c.value, c.number_format) for row in sheet.iter_rows() for c in row
            if c.value is not None]
