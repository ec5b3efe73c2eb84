"""The CSV report speaks the input's dialect: same delimiter, same encoding where it can.

A French or Mexican Windows Excel saves CSV as `;`-separated cp1252; a report written back as
`,`-separated UTF-8 opens there as one column of mojibake. So a CSV report keeps the input's
delimiter and encoding: UTF-8 (with or without BOM) becomes UTF-8 with BOM (Excel needs the
BOM to read UTF-8), UTF-16 stays UTF-16 with BOM, and a legacy code page such as cp1252 stays
as it is. Every cell read from the input fits the code page it was decoded from, so only a
message from Zuora can fail to fit: the report then switches to UTF-8 with BOM (see
`record.sinks`) rather than lose a character.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from .sheetfacts import CsvDialect

#: What a report is written as when the input was not CSV.
DEFAULT = CsvDialect(",", "utf-8-sig")


def report_dialect(source: CsvDialect | None) -> CsvDialect:
    """The delimiter and encoding of a CSV report for an input read as `source`."""
    if source is None:
        return DEFAULT
    try:
        name = codecs.lookup(source.encoding).name
    except LookupError:
        return CsvDialect(source.delimiter, DEFAULT.encoding)
    if name.startswith("utf-8"):
        return CsvDialect(source.delimiter, "utf-8-sig")
    if name.startswith("utf-16") or name.startswith("utf-32"):
        return CsvDialect(source.delimiter, "utf-16")
    return CsvDialect(source.delimiter, name)


def describe(dialect: CsvDialect) -> str:
    """A sentence for the plan when the report differs from the default."""
    sep = {",": "comma", ";": "semicolon", "\t": "tab"}.get(dialect.delimiter,
                                                            repr(dialect.delimiter))
    text = f"the CSV report is {sep}-separated {_label(dialect.encoding)}, like the input"
    if not dialect.encoding.startswith("utf"):
        text += " (UTF-8 with BOM instead if a message from Zuora does not fit it)"
    return text


def _label(encoding: str) -> str:
    return {"utf-8-sig": "UTF-8 with BOM", "utf-16": "UTF-16"}.get(encoding, encoding)


def plan_note(source: CsvDialect | None, report: Path) -> str:
    """The plan's sentence about a CSV report written in the input's dialect, or ""."""
    dialect = report_dialect(source)
    if report.suffix.lower() != ".csv" or dialect == DEFAULT:
        return ""
    return describe(dialect)
