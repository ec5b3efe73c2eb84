"""The input a seed's first command reads, in the form the seed drew: a CSV file, a pandas
DataFrame (what `batch_cancel.cancel(frame, report=...)` takes), or a Parquet file.

All three hold the same rows; only the row numbers the report gives them differ, as the README
says: a file's line numbers (the header is line 1), a DataFrame's index labels (0, 1, ... for a
frame read with `pandas.read_csv(..., dtype=str)`), a Parquet file's positions from 1.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from .schedule import Schedule

if TYPE_CHECKING:
    import pandas

__all__ = ["HEADER", "row_numbers", "write_input"]

#: The input's columns.
HEADER = ("Invoice Number", "Reason", "Document Reference ID")

def write_input(schedule: Schedule, folder: Path) -> Path | pandas.DataFrame:
    """Write the schedule's rows in `folder` and give the run's input in the drawn form."""
    path = folder / "input.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(zip(schedule.keys, schedule.reasons, schedule.references, strict=True))
    if schedule.input_form == "csv":
        return path
    import pandas

    # as the README has users read a sheet for the library: every cell text, blanks blank
    frame = pandas.read_csv(path, dtype=str, keep_default_na=False)
    if schedule.input_form == "frame":
        return frame
    parquet = folder / "input.parquet"
    frame.to_parquet(parquet, index=False)
    return parquet


def row_numbers(schedule: Schedule) -> list[str]:
    """The report's `row` of each input row, in order, for the schedule's input form."""
    first = {"csv": 2, "frame": 0, "parquet": 1}[schedule.input_form]
    return [str(first + n) for n in range(schedule.rows)]
