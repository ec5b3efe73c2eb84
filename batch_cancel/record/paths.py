"""Where a report and its journal go, and whether they can be written there.

Checked before anything is sent: a report that could only fail to be written would leave the
user with cancels done and no file saying which.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPORT_FORMATS = (".csv", ".xlsx", ".jsonl", ".parquet")


class ReportError(Exception):
    """The report cannot be written where asked; the message says what to change."""


def default_report_path(input_path: Path) -> Path:
    """`<input stem>.report.csv` beside the input (a report fed back gets a new name)."""
    stem = input_path.stem
    return input_path.with_name(f"{stem}.report.csv")


def journal_path(report_path: Path) -> Path:
    """The journal lives beside the report it belongs to."""
    return report_path.with_name(report_path.name + ".journal.jsonl")


def check_report_path(path: Path) -> None:
    """Refuse a report path we could only fail to write, before anything is sent."""
    if path.suffix.lower() not in REPORT_FORMATS:
        raise ReportError(f"--report {path}: unsupported format {path.suffix or '(none)'!r}; "
                          "use a name ending in .csv, .xlsx, .jsonl or .parquet")
    if not path.parent.exists():
        raise ReportError(f"--report {path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise ReportError(f"--report {path}: is a folder; name a file")
    try:  # try it rather than ask os.access: root, ACLs and network shares all lie to it
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ReportError(f"--report {path}: cannot write in the folder {path.parent} "
                          f"({exc.strerror or exc}); choose another --report") from None
    if path.exists():
        try:  # a report open in Excel on Windows is locked: find out now, not after the run
            with path.open("ab"):
                pass
        except OSError as exc:
            raise ReportError(f"--report {path}: the file cannot be written "
                              f"({exc.strerror or exc}); is it open in another program? "
                              "Close it, or choose another --report") from None
