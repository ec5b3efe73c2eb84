"""Text files: CSV/TSV (delimiter sniffed, codec guessed) and a JSON-lines report, read as
numbered rows of cell text.

The file is decoded once to find its codec and delimiter, then read as a stream: a million-row
file is never held as text, as cell lists and as rows at the same time.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import TextIO

from . import guard, table
from .excel import OLE2_MAGIC
from .loaded import InputError
from .sheetfacts import Block, CsvDialect, SheetFacts

#: Longest line of a CSV file read (see `_check_lines`).
MAX_LINE_BYTES = 1 * 2**20


def decode_text(path: Path, raw: bytes, encoding: str | None) -> tuple[str, str]:
    """The text and the codec that gave it: `--encoding`, else by BOM, else UTF-8, else
    cp1252, else latin-1. A file that does not decode raises here, naming the byte."""
    if encoding:
        try:
            codecs.lookup(encoding)
            text = raw.decode(encoding)
            return text.removeprefix("\ufeff"), encoding  # utf-8, utf-16-le/-be keep the BOM
        except LookupError as exc:
            raise InputError(f"--encoding {encoding!r} is not an encoding Python knows") from exc
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: cannot be read as {encoding} ({exc.reason} at byte "
                             f"{exc.start}); try another --encoding") from exc
    if raw.startswith(codecs.BOM_UTF8):
        return raw[len(codecs.BOM_UTF8):].decode("utf-8", errors="strict"), "utf-8-sig"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16"), "utf-16"
    if b"\x00" in raw[:4096]:
        raise InputError(f"{path}: holds NUL bytes, so it is probably UTF-16 without a "
                         "byte-order mark; pass --encoding utf-16-le (or utf-16-be), or save "
                         "it again as CSV UTF-8")
    for candidate in ("utf-8", "cp1252", "latin-1"):
        try:
            return raw.decode(candidate), candidate
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


def sniff_delimiter(text: str) -> str:
    """The delimiter of the header line: whichever of `,` `;` tab it holds most."""
    first = first_nonblank_line(text)
    counts = {d: first.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def first_nonblank_line(text: str) -> str:
    """`next(line for line in text.splitlines() if line.strip())`, without splitting the
    whole text: a growing head of it is split, less its last (maybe cut) line."""
    size = 1 << 16
    while True:
        head = text[:size]
        lines = head.splitlines()
        whole = size >= len(text)
        for line in lines if whole else lines[:-1]:
            if line.strip():
                return line
        if whole:
            return ""
        size *= 4


def read_csv(path: Path, encoding: str | None, delimiter: str | None,
             facts: SheetFacts | None = None) -> Iterator[Block]:
    """CSV/TSV rows as text, in blocks; a row is a record, so a quoted field may span lines.
    `facts.dialect` gets the delimiter and codec, for a report that opens the same way."""
    try:
        raw = guard.read_bounded(path)
    except guard.HostileFile as exc:
        raise InputError(str(exc)) from None
    if not raw or raw.isspace():
        raise InputError(f"{path}: the file is empty (no header row, no data)")
    if raw.startswith(b"PK\x03\x04") or raw.startswith(OLE2_MAGIC):
        raise InputError(f"{path}: this is an Excel workbook with a text extension; "
                         "rename it to .xlsx")
    _check_lines(path, raw)
    text, codec = decode_text(path, raw, encoding)
    sep = delimiter or sniff_delimiter(text)
    if facts is not None:
        facts.dialect = CsvDialect(sep, codec)
    # newline="": the reader sees line endings untranslated, as csv requires.
    lines: TextIO
    if encoding:  # any codec Python knows, BOM dropped: read the text as decoded
        lines = io.StringIO(text, newline="")
    else:  # a codec checked on the whole file above: decode again as read, not held twice
        lines = io.TextIOWrapper(io.BytesIO(raw), codec, newline="")
    del text
    # The stdlib reader, not pandas: pandas refuses blank lines above the header and rows
    # wider than the first line even when the extra cells are empty (trailing delimiters);
    # `split_header` decides about those.
    reader = csv.reader(lines, delimiter=sep, quotechar='"', strict=True)
    number = 1  # a row is a record: row numbers count records, not lines
    while True:
        rows: list[list[str]] = []
        try:
            rows.extend(islice(reader, table.BLOCK_ROWS))  # keeps the rows read before an error
        except csv.Error as exc:
            if rows:  # a bad row above the unreadable one is reported first, as row by row
                yield range(number, number + len(rows)), rows
            raise InputError(f"{path}: not a readable {'tab' if sep == chr(9) else repr(sep)}-"
                             f"separated file: {exc} (near line {reader.line_num}). "
                             "Check quotes and the delimiter") from exc
        if not rows:
            return
        yield range(number, number + len(rows)), rows
        number += len(rows)


def _check_lines(path: Path, raw: bytes) -> None:
    """Refuse a line of more than MAX_LINE_BYTES before the CSV reader splits it: millions
    of cells in one line would cost gigabytes as Python strings.

    Any line that long holds a whole aligned window of half that size without a line break,
    so looking at each window once (a few hundred `find`s in C for the largest file) is
    enough; a line between half and the whole limit may be refused too.
    """
    window = MAX_LINE_BYTES // 2
    for start in range(0, len(raw) - window + 1, window):
        end = start + window
        if raw.find(b"\n", start, end) < 0 and raw.find(b"\r", start, end) < 0:
            line = raw.count(b"\n", 0, start) + 1
            raise InputError(f"{path}: line {line} is longer than {MAX_LINE_BYTES // 2**10} KB"
                             "; no invoice row needs one. Check the file (is it CSV?)")


def read_jsonl(path: Path) -> Iterator[tuple[int, list[str]]]:
    """A JSON-lines report: the first line's keys are the header, one object per line.
    A line longer than MAX_LINE_BYTES is refused before any is parsed."""
    try:
        _check_lines(path, guard.read_bounded(path))
    except guard.HostileFile as exc:
        raise InputError(str(exc)) from None
    columns: list[str] | None = None
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: line {number} is not JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise InputError(f"{path}: line {number} is not a JSON object")
            if columns is None:
                columns = list(record)
                yield 1, columns
            yield number + 1, ["" if record.get(c) is None else str(record.get(c))
                               for c in columns]
    if columns is None:
        raise InputError(f"{path}: the file is empty (no header row, no data)")
