"""Where a report and its journal go, and each reason a report path is refused before
anything is sent, with the message the user reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_cancel.record.paths import (
    REPORT_FORMATS,
    ReportError,
    check_report_path,
    default_report_path,
    journal_path,
)


def refusal(path: Path) -> str:
    """The message `check_report_path` refuses `path` with."""
    with pytest.raises(ReportError) as caught:
        check_report_path(path)
    return str(caught.value)


def test_the_default_report_and_the_journal_sit_beside_their_files() -> None:
    """`<stem>.report.csv` beside the input; the journal beside the report, named after it."""
    assert default_report_path(Path("/d/in.xlsx")) == Path("/d/in.report.csv")
    assert default_report_path(Path("/d/in.report.csv")) == Path("/d/in.report.report.csv")
    assert journal_path(Path("/d/out.xlsx")) == Path("/d/out.xlsx.journal.jsonl")


@pytest.mark.parametrize("name", ["r.csv", "r.XLSX", "r.jsonl", "r.parquet"])
def test_a_writable_report_path_passes_and_leaves_nothing_behind(
        tmp_path: Path, name: str) -> None:
    """Each format passes, in any case; the probe file is gone; an existing file is kept."""
    check_report_path(tmp_path / name)
    (tmp_path / "old.csv").write_text("kept")
    check_report_path(tmp_path / "old.csv")
    assert [p.name for p in tmp_path.iterdir()] == ["old.csv"]
    assert (tmp_path / "old.csv").read_text() == "kept"
    assert REPORT_FORMATS == (".csv", ".xlsx", ".jsonl", ".parquet")


def test_each_unwritable_report_path_is_refused_with_what_to_change(tmp_path: Path) -> None:
    """Unknown or no suffix, a missing folder, a folder, a folder that is a file, a file
    that cannot be opened for writing: each says so."""
    assert refusal(tmp_path / "r.txt") == (
        f"--report {tmp_path / 'r.txt'}: unsupported format '.txt'; use a name ending in "
        ".csv, .xlsx, .jsonl or .parquet")
    assert refusal(tmp_path / "r") == (
        f"--report {tmp_path / 'r'}: unsupported format '(none)'; use a name ending in "
        ".csv, .xlsx, .jsonl or .parquet")
    missing = tmp_path / "nowhere" / "r.csv"
    assert refusal(missing) == (
        f"--report {missing}: the folder {tmp_path / 'nowhere'} does not exist")
    (tmp_path / "d.csv").mkdir()
    assert refusal(tmp_path / "d.csv") == f"--report {tmp_path / 'd.csv'}: is a folder; name a file"
    (tmp_path / "f").write_text("")
    inside_a_file = tmp_path / "f" / "r.csv"
    assert refusal(inside_a_file) == (
        f"--report {inside_a_file}: cannot write in the folder {tmp_path / 'f'} (Not a "
        "directory); choose another --report")
    locked = tmp_path / "locked.csv"
    locked.symlink_to("/proc/version")  # opens for reading only, even for root
    assert refusal(locked) == (
        f"--report {locked}: the file cannot be written (Invalid argument); is it open in "
        "another program? Close it, or choose another --report")
