"""pandas at the edges: a DataFrame or a Parquet file as input, a report read back as a
DataFrame (the Parquet report sink is `record.sinks.ParquetSink`).

Every column is text, exactly as written: a reason `04` stays `04`, an invoice number with
leading zeros keeps them, an empty cell is "" (never NaN). A DataFrame goes through the very
rules a file does (`loader.load_table`): the same column names, normalisation, validation and
duplicates. pandas and pyarrow are imported here only, and only when one of these is used, so
a CSV run does not pay their start-up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .columns import KEY_ALIASES, REASON_ALIASES, ColumnError, resolve_column
from .loaded import InputError, LoadedInput, LoadOptions
from .loader import load_table, read_table
from .table import in_blocks, records_of

if TYPE_CHECKING:
    import pandas

def read_report(path: str | Path) -> pandas.DataFrame:
    """A batch-cancel report (.csv, .xlsx, .jsonl or .parquet) as a DataFrame of text.

    CSV, Excel and JSONL are read by the same reader `run` uses for an input, so what you
    see is what a re-run would read; Parquet reports are text columns already.
    """
    import pandas

    path = Path(path)
    if path.suffix.lower() == ".parquet":
        frame = pandas.read_parquet(path)
        return frame.astype("string").fillna("").astype(object)
    header, _, blocks = read_table(path, LoadOptions(header_row=1))
    records = [cells for _, cells in records_of(blocks)]
    return pandas.DataFrame(records, columns=pandas.Index(header, dtype=object), dtype=object)


def load_frame(frame: pandas.DataFrame, options: LoadOptions, numbers_as_text: bool = False,
               source: Path | None = None) -> LoadedInput:
    """The rows of a DataFrame, read exactly as a file's would be.

    Object and string columns are taken as text. A numeric key or reason column is refused
    unless `numbers_as_text`: a number has already lost what the user typed (0042 became 42,
    reason 04 became 4). Row numbers in the report are the frame's index labels when they
    are unique integers, else positions from 1; for a Parquet file (`source`), positions
    from 1.
    """
    path = source or Path("<DataFrame>")
    header = [str(column) for column in frame.columns]
    if not numbers_as_text:
        _refuse_numbers(frame, header, options, path)
    numbers = _row_numbers(frame, positional=source is not None)
    records = ((number, [_text(value) for value in values]) for number, values
               in zip(numbers, frame.itertuples(index=False, name=None), strict=True))
    return load_table(path, header, in_blocks(records), options)


def load_parquet(path: Path, options: LoadOptions, numbers_as_text: bool = False
                 ) -> LoadedInput:
    """A Parquet file (a warehouse export, or a report written by batch-cancel) as input."""
    import pandas

    try:
        frame = pandas.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from None
    return load_frame(frame, options, numbers_as_text, source=path)


def frame_digest(frame: pandas.DataFrame) -> str:
    """A SHA-256 of a frame's columns, index and cells: what `--resume` checks is unchanged."""
    import pandas

    digest = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    digest.update(pandas.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()


def _refuse_numbers(frame: pandas.DataFrame, header: list[str], options: LoadOptions,
                    path: Path) -> None:
    import pandas

    for what, aliases, override in (("invoice key", KEY_ALIASES, options.key_column),
                                    ("reason", REASON_ALIASES, options.reason_column)):
        try:
            name = resolve_column(path, header, what, aliases, override, what).column
        except ColumnError:
            continue  # load_table says what is wrong with the columns
        if name is None:
            continue
        column = frame.iloc[:, header.index(name)]
        if pandas.api.types.is_numeric_dtype(column) and not pandas.api.types.is_bool_dtype(
                column):
            raise InputError(
                f"{path}: the {what} column {name!r} holds numbers ({column.dtype}), which "
                f"have lost what was typed: leading zeros (0042 became 42) and reason 04 "
                f"(became 4). Read the source with dtype=str, or convert with "
                f"df[{name!r}] = df[{name!r}].astype(str) where the numbers are exact; or "
                "pass numbers_as_text=True to send them as they print")


def _row_numbers(frame: pandas.DataFrame, positional: bool) -> Iterator[int]:
    import pandas

    index = frame.index
    if (not positional and pandas.api.types.is_integer_dtype(index.dtype)
            and index.is_unique):
        return (int(label) for label in index)
    return iter(range(1, len(frame) + 1))


def _text(value: object) -> str:
    """A cell as the text it stands for: missing values are empty, integral floats have no
    ".0", dates are ISO 8601."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    text = str(value)
    return "" if text in ("<NA>", "NaT", "nan") else text
