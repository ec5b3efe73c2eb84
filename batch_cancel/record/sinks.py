"""The report's file formats: each sink takes the header, then rows of text, in order.

CSV (the input's delimiter and encoding), JSON lines, an Excel workbook and Parquet. A sink
writes to the temporary file `writer.ReportWriter` renames into place when the run is done;
`discard` gives it up. Heavy libraries (openpyxl, pyarrow) load only when their format is asked.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from ..read.sheetfacts import CsvDialect
from .paths import ReportError

#: Rows per Parquet row group: large enough for columnar compression, small enough that a
#: million-row report never sits in memory whole.
PARQUET_BATCH = 10_000

#: Told (old encoding, new encoding) when a CSV report switches to UTF-8 midway.
Reencoded = Callable[[str, str], None]


class Sink(Protocol):
    """Where report rows go, one format each. `spreadsheet`: the file opens in a spreadsheet,
    so server text must be made inert (`writer.neutralise`)."""

    spreadsheet: bool

    def write(self, values: list[str]) -> None: ...
    def close(self, summary_lines: Iterable[tuple[list[object], bool]]) -> None: ...
    def discard(self) -> None: ...


class _FileSink:
    """A text file written row by row; nothing to add at close."""

    spreadsheet = False

    def __init__(self, path: Path, encoding: str) -> None:
        self._handle = path.open("w", encoding=encoding, newline="")

    def close(self, summary_lines: Iterable[tuple[list[object], bool]]) -> None:
        self._handle.close()

    def discard(self) -> None:
        self._handle.close()


class _CsvSink(_FileSink):
    """CSV in the input's delimiter and encoding (`dialect`); UTF-8 with a BOM by default:
    Excel then opens non-ASCII text correctly, and the loader strips it.

    A value that does not fit a legacy encoding (a Zuora message in cp1252, say) switches
    the whole file to UTF-8 with BOM: the rows written so far are re-encoded, nothing lost.
    """

    spreadsheet = True

    def __init__(self, path: Path, header: list[str], dialect: CsvDialect,
                 on_reencoded: Reencoded | None = None) -> None:
        super().__init__(path, dialect.encoding)
        self._path = path
        self._dialect = dialect
        self._on_reencoded = on_reencoded
        self._writer = csv.writer(self._handle, delimiter=dialect.delimiter)
        self.write(header)

    def write(self, values: list[str]) -> None:
        try:
            self._writer.writerow(values)  # one write per row: a failed row writes nothing
        except UnicodeEncodeError:
            self._to_utf8()
            self._writer.writerow(values)

    def _to_utf8(self) -> None:
        """Re-encode what was written as UTF-8 with BOM and go on in it."""
        self._handle.close()
        text = self._path.read_bytes().decode(self._dialect.encoding)
        self._path.write_bytes(text.encode("utf-8-sig"))
        if self._on_reencoded is not None:
            self._on_reencoded(self._dialect.encoding, "utf-8-sig")
        self._dialect = CsvDialect(self._dialect.delimiter, "utf-8-sig")
        self._handle = self._path.open("a", encoding="utf-8-sig", newline="")
        self._writer = csv.writer(self._handle, delimiter=self._dialect.delimiter)


class _JsonlSink(_FileSink):
    """One JSON object per row, keyed by column: for scripts, `jq` and data tools."""

    def __init__(self, path: Path, header: list[str], dialect: CsvDialect) -> None:
        super().__init__(path, "utf-8")
        self._header = header

    def write(self, values: list[str]) -> None:
        self._handle.write(json.dumps(dict(zip(self._header, values, strict=True)),
                                      ensure_ascii=False) + "\n")


class _XlsxSink:
    """The workbook finance people open (`workbook`): its Summary sheet is filled at close."""

    spreadsheet = True

    def __init__(self, path: Path, header: list[str], dialect: CsvDialect) -> None:
        from .workbook import WorkbookWriter  # openpyxl only when asked

        self._book = WorkbookWriter(path, header)

    def write(self, values: list[str]) -> None:
        self._book.write(values)

    def close(self, summary_lines: Iterable[tuple[list[object], bool]]) -> None:
        self._book.close(summary_lines)

    def discard(self) -> None:
        pass


class ParquetSink:
    """Writes report rows to Parquet in row groups, every column a string column."""

    spreadsheet = False

    def __init__(self, path: Path, header: list[str], dialect: CsvDialect) -> None:
        try:  # pyarrow only when asked: a CSV run does not pay its start-up
            import pyarrow
            import pyarrow.parquet
        except ImportError as exc:  # pragma: no cover - pyarrow is a dependency
            raise ReportError("a .parquet report needs pyarrow: pip install pyarrow") from exc
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


_SINKS: dict[str, Callable[[Path, list[str], CsvDialect], Sink]] = {
    ".csv": _CsvSink, ".jsonl": _JsonlSink, ".xlsx": _XlsxSink, ".parquet": ParquetSink,
}


def open_sink(path: Path, suffix: str, header: list[str], dialect: CsvDialect,
              on_reencoded: Reencoded | None = None) -> Sink:
    """A sink for the format `suffix` names (one of `paths.REPORT_FORMATS`), writing `path`;
    a CSV sink tells `on_reencoded` when it switches to UTF-8."""
    if suffix.lower() == ".csv":
        return _CsvSink(path, header, dialect, on_reencoded)
    return _SINKS[suffix.lower()](path, header, dialect)
