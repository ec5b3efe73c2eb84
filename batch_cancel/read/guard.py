"""Refuse, quickly and in bounded memory, files that attack the reader.

A spreadsheet is a zip of XML parts: a few kilobytes can declare gigabytes of XML (a zip
bomb), and XML can define entities that expand a billion times or fetch other files. A path
can also be a device (`/dev/zero`), a FIFO or a folder, which never end or never start. Each
check here runs before the file is parsed, so none of these reaches a parser:

* the path must be a regular file of at most MAX_FILE_BYTES;
* a zip (.xlsx, .xlsm, .ods) may hold at most MAX_MEMBERS parts, declare at most
  MAX_UNZIPPED_BYTES in all, and no part may expand more than MAX_RATIO times (above
  RATIO_FLOOR bytes); Python's zipfile never inflates a part past its declared size;
* no XML part may declare a DOCTYPE (entities live there; spreadsheets never need one);
* a cell may hold at most MAX_CELL_CHARS characters (see the loader).
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

#: Largest input file read.
MAX_FILE_BYTES = 200 * 2**20
#: Most parts in a workbook zip.
MAX_MEMBERS = 10_000
#: Most bytes all parts of a workbook may expand to.
MAX_UNZIPPED_BYTES = 1 * 2**30
#: Most a part may expand, compressed to uncompressed (real sheets: 5 to 50).
MAX_RATIO = 200
#: Parts smaller than this are not held to MAX_RATIO (tiny parts compress oddly).
RATIO_FLOOR = 1 * 2**20
#: Most bytes before an XML part's root element (declaration, comments) that are read.
MAX_PROLOG_BYTES = 64 * 2**10
#: Longest cell accepted, in characters (Excel's own limit is 32,767).
MAX_CELL_CHARS = 131_072


class HostileFile(Exception):
    """The file is refused before parsing; the message says why and what to do."""


def check_path(path: Path) -> None:
    """A regular file, not too big; refused without opening it (a FIFO would block)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise HostileFile(f"{path}: no such file; check the path") from None
    except OSError as exc:
        raise HostileFile(f"{path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise HostileFile(f"{path}: is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise HostileFile(f"{path}: is not a regular file (a device, a pipe or a socket); "
                          "save the rows to a file and pass its path")
    if info.st_size > MAX_FILE_BYTES:
        raise HostileFile(f"{path}: is {info.st_size / 2**20:.0f} MB; the most read is "
                          f"{MAX_FILE_BYTES // 2**20} MB. Split it into smaller files")


def read_bounded(path: Path) -> bytes:
    """The file's bytes, refusing one that grows past MAX_FILE_BYTES while it is read."""
    with path.open("rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise HostileFile(f"{path}: holds more than {MAX_FILE_BYTES // 2**20} MB; split it "
                          "into smaller files")
    return data


def check_zip(path: Path, kind: str) -> None:
    """Refuse a workbook zip whose declared sizes make a bomb, or whose XML has a DOCTYPE.

    A file that is not a zip at all is left to the reader, whose message names the fix.
    """
    if os.path.getsize(path) < 4:
        return
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError):
        return
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise _bomb(path, kind, f"it holds {len(members)} parts")
        total = sum(m.file_size for m in members)
        if total > MAX_UNZIPPED_BYTES:
            raise _bomb(path, kind, f"its parts expand to {total / 2**20:.0f} MB")
        for member in members:
            ratio = member.file_size / max(member.compress_size, 1)
            if member.file_size > RATIO_FLOOR and ratio > MAX_RATIO:
                raise _bomb(path, kind, f"the part {member.filename} expands {ratio:.0f} times")
        for member in members:
            if member.filename.endswith((".xml", ".rels")):
                _check_prolog(path, archive, member)


def _bomb(path: Path, kind: str, why: str) -> HostileFile:
    return HostileFile(f"{path}: refused: {why} (a zip bomb, or not a {kind} saved by a "
                       "spreadsheet program). Open it in your spreadsheet program and save "
                       "it again, or export the rows as CSV")


def _check_prolog(path: Path, archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> None:
    """Refuse an XML part that declares a DOCTYPE before its root element."""
    try:
        with archive.open(member) as handle:
            head = handle.read(MAX_PROLOG_BYTES)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # damaged: the reader says so
    if b"\x00" in head[:4]:  # UTF-16: look at the text, not at every other byte
        codec = "utf-16-be" if head[:1] == b"\x00" else "utf-16-le"
        head = head.decode(codec, errors="ignore").lstrip("\ufeff").encode()
    position = 0
    while True:
        position = head.find(b"<", position)
        if position < 0 or position + 1 >= len(head):
            if len(head) >= MAX_PROLOG_BYTES:
                raise HostileFile(f"{path}: refused: the part {member.filename} has no XML "
                                  f"element in its first {MAX_PROLOG_BYTES // 1024} KB")
            return
        if head.startswith(b"<!DOCTYPE", position) or head.startswith(b"<!ENTITY", position):
            raise HostileFile(f"{path}: refused: the part {member.filename} declares a "
                              "DOCTYPE (XML entities, which can expand without end or read "
                              "other files). Open it in your spreadsheet program and save it "
                              "again")
        if head.startswith(b"<?", position) or head.startswith(b"<!--", position):
            end = head.find(b"?>" if head[position + 1] == ord("?") else b"-->", position)
            if end < 0:
                raise HostileFile(f"{path}: refused: the part {member.filename} has no XML "
                                  f"element in its first {MAX_PROLOG_BYTES // 1024} KB")
            position = end + 2
            continue
        return  # the root element: no DOCTYPE can follow
