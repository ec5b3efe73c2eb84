"""pandas at the edges: a report read back as a DataFrame, and the Parquet report sink.

Every column is text, exactly as written: a reason `04` stays `04`, an invoice number with
leading zeros keeps them, an empty cell is "" (never NaN). pandas and pyarrow are imported
here only, and only when one of these is used, so a CSV run does not pay their start-up.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .loader import InputError, LoadOptions, read_table, records_of

if TYPE_CHECKING:
    import pandas

#: Rows per Parquet row group: large enough for columnar compression, small enough that a
#: million-row report never sits in memory whole.
PARQUET_BATCH = 10_000


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


class ParquetSink:
    """Writes report rows to Parquet in row groups, every column a string column."""

    spreadsheet = False

    def __init__(self, path: Path, header: list[str]) -> None:
        try:
            import pyarrow
            import pyarrow.parquet
        except ImportError as exc:  # pragma: no cover - pyarrow is a dependency
            raise InputError("a .parquet report needs pyarrow: pip install pyarrow") from exc
        self._pa: Any = pyarrow
        self._header = header
        self._schema = pyarrow.schema([(name, pyarrow.string()) for name in header])
        self._writer = pyarrow.parquet.ParquetWriter(str(path), self._schema)
        self._batch: list[list[str]] = []

    def write(self, values: list[str]) -> None:
        self._batch.append(values)
        if len(self._batch) >= PARQUET_BATCH:
            self._flush()

    def close(self, summary_lines: Iterable[tuple[list[object], bool]]) -> None:
        self._flush()
        self._writer.close()

    def discard(self) -> None:
        self._batch.clear()
        self._writer.close()

    def _flush(self) -> None:
        if not self._batch:
            return
        columns = list(zip(*self._batch, strict=True))
        arrays = [self._pa.array(column, type=self._pa.string()) for column in columns]
        self._writer.write_table(self._pa.Table.from_arrays(arrays, schema=self._schema))
        self._batch.clear()
