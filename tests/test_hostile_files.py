"""Files that attack the reader: refused with exit 2, nothing sent, in bounded time and memory.

Each test writes the hostile file itself: a workbook whose parts expand to over a gigabyte,
XML that declares entities (a billion laughs, an external file), a path that is a device or a
FIFO, a cell or a line of tens of megabytes. The bounds are the reader's own limits
(`batch_cancel.read.guard`); no test measures time.
"""

from __future__ import annotations

import base64
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from batch_cancel.read import guard

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">'
              for i in range(1, 10))
    + ']>\n'
)
EXTERNAL = ('<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY secret SYSTEM '
            '"file:///etc/passwd">]>\n')


def small_xlsx(path: Path) -> Path:
    """A valid workbook to start from."""
    book = openpyxl.Workbook()
    book.active.append(["Invoice Number", "Reason"])
    book.active.append(["INV-1", "01"])
    book.save(path)
    return path


def rewrite(path: Path, member: str, change: Callable[[bytes], bytes]) -> Path:
    """The zip at `path` with one member's bytes changed."""
    with zipfile.ZipFile(path) as archive:
        parts = {i.filename: archive.read(i.filename) for i in archive.infolist()}
    parts[member] = change(parts[member])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return path


def with_doctype(doctype: str, entity: str) -> Callable[[bytes], bytes]:
    """Put a DOCTYPE before the root element and use `entity` in the first cell's text."""
    def change(data: bytes) -> bytes:
        text = data.decode("utf-8")
        text = text.split("?>", 1)[1] if text.startswith("<?xml") else text
        return (doctype + text.replace("INV-1", entity, 1)).encode("utf-8")
    return change


def gigabyte_part(path: Path, template: Path, member: str) -> Path:
    """A copy of `template` with `member` replaced by 1.1 GB of spaces (about 1 MB zipped)."""
    with zipfile.ZipFile(template) as archive:
        parts = {i.filename: archive.read(i.filename) for i in archive.infolist()}
    chunk = b" " * (1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            if name == member:
                with archive.open(name, "w", force_zip64=True) as handle:
                    for _ in range(1100):
                        handle.write(chunk)
            else:
                archive.writestr(name, data)
    return path


def small_ods(tmp: Path) -> Path:
    """The committed LibreOffice .ods fixture, copied."""
    source = Path(__file__).parent / "fixtures" / "spanish.ods"
    path = tmp / "in.ods"
    path.write_bytes(source.read_bytes())
    return path


def refused(cli: Any, sim: Any, path: Path, *fragments: str) -> None:
    """Exit 2, the fragments in the message, and not one request."""
    result = cli("run", str(path), "--base-url", sim.url, "--report",
                 str(path.parent / "r.csv"), "--no-progress", env=sim.env)
    assert result.exit_code == 2, result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)
    assert sim.stats.requests == []


def test_an_xlsx_whose_part_expands_to_a_gigabyte_is_refused(cli: Any, sim: Any,
                                                             tmp_path: Path) -> None:
    """A zip bomb is refused from its declared sizes, before any XML is inflated."""
    template = small_xlsx(tmp_path / "t.xlsx")
    path = gigabyte_part(tmp_path / "bomb.xlsx", template, "xl/worksheets/sheet1.xml")
    assert path.stat().st_size < 10 * 2**20
    refused(cli, sim, path, "bomb.xlsx", "expand to 1100 MB", "zip bomb")


def test_an_ods_whose_part_expands_far_is_refused(cli: Any, sim: Any, tmp_path: Path) -> None:
    """A .ods content.xml that inflates a thousand times is refused."""
    template = small_ods(tmp_path)
    path = tmp_path / "bomb.ods"
    with zipfile.ZipFile(template) as archive:
        parts = {i.filename: archive.read(i.filename) for i in archive.infolist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, b" " * (50 * 2**20) + data if name == "content.xml" else data)
    refused(cli, sim, path, "bomb.ods", "expands", "zip bomb")


@pytest.mark.parametrize("doctype,entity", [(BILLION_LAUGHS, "&lol9;"),
                                            (EXTERNAL, "&secret;")])
@pytest.mark.parametrize("member", ["xl/worksheets/sheet1.xml", "xl/workbook.xml"])
def test_xlsx_xml_with_entities_is_refused(doctype: str, entity: str, member: str, cli: Any,
                                           sim: Any, tmp_path: Path) -> None:
    """A DOCTYPE (entity expansion, an external file) in any part is refused unparsed."""
    path = rewrite(small_xlsx(tmp_path / "entities.xlsx"), member,
                   with_doctype(doctype, entity))
    refused(cli, sim, path, "entities.xlsx", "declares a DOCTYPE")


@pytest.mark.parametrize("doctype,entity", [(BILLION_LAUGHS, "&lol9;"),
                                            (EXTERNAL, "&secret;")])
def test_ods_xml_with_entities_is_refused(doctype: str, entity: str, cli: Any, sim: Any,
                                          tmp_path: Path) -> None:
    """The same in an .ods content.xml."""
    def change(data: bytes) -> bytes:
        text = data.decode("utf-8").split("?>", 1)[1]
        return (doctype + text.replace("FAC-001", entity, 1)).encode("utf-8")
    path = rewrite(small_ods(tmp_path), "content.xml", change)
    refused(cli, sim, path, "in.ods", "declares a DOCTYPE")


def test_a_utf16_part_cannot_hide_its_doctype(cli: Any, sim: Any, tmp_path: Path) -> None:
    """A DOCTYPE in a UTF-16 part is found too."""
    def change(data: bytes) -> bytes:
        text = with_doctype(BILLION_LAUGHS, "&lol9;")(data).decode("utf-8")
        return text.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>'
                            ).encode("utf-16")
    path = rewrite(small_xlsx(tmp_path / "utf16.xlsx"), "xl/worksheets/sheet1.xml", change)
    refused(cli, sim, path, "utf16.xlsx", "declares a DOCTYPE")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_a_device_is_refused_unopened(device: str, cli: Any, sim: Any, tmp_path: Path) -> None:
    """A device behind a .csv name (an endless stream) is refused without reading it."""
    path = tmp_path / "in.csv"
    path.symlink_to(device)
    refused(cli, sim, path, "in.csv", "not a regular file")


def test_a_fifo_is_refused_without_blocking(cli: Any, sim: Any, tmp_path: Path) -> None:
    """A named pipe nobody writes to is refused, not opened (which would wait forever)."""
    path = tmp_path / "in.xlsx"
    os.mkfifo(path)
    refused(cli, sim, path, "in.xlsx", "not a regular file")


def test_a_folder_is_refused(cli: Any, sim: Any, tmp_path: Path) -> None:
    """A folder named like a workbook is refused."""
    path = tmp_path / "folder.ods"
    path.mkdir()
    refused(cli, sim, path, "folder.ods", "is a folder")


def test_a_file_over_the_size_limit_is_refused_unread(cli: Any, sim: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A file bigger than the limit is refused from its size (the limit lowered here)."""
    monkeypatch.setattr(guard, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.csv"
    path.write_text("Invoice Number,Reason\n" + "INV-1,01\n" * 200)
    refused(cli, sim, path, "big.csv", "the most read is")


def test_a_line_of_tens_of_megabytes_is_refused(cli: Any, sim: Any, tmp_path: Path) -> None:
    """A 30 MB line (millions of cells) is refused before the CSV reader splits it."""
    path = tmp_path / "wide.csv"
    path.write_bytes(b"Invoice Number,Reason\nINV-1,01\n" + b"," * (30 * 2**20) + b"\n")
    refused(cli, sim, path, "wide.csv", "line 3 is longer than 1024 KB")


def test_a_jsonl_line_of_tens_of_megabytes_is_refused(cli: Any, sim: Any,
                                                      tmp_path: Path) -> None:
    """An earlier report as JSON lines gets the same line limit."""
    path = tmp_path / "old.jsonl"
    path.write_bytes(b'{"row": "2", "invoice_key": "' + b"K" * (30 * 2**20) + b'"}\n')
    refused(cli, sim, path, "old.jsonl", "line 1 is longer than 1024 KB")


def test_a_csv_cell_of_megabytes_is_refused(cli: Any, sim: Any, tmp_path: Path) -> None:
    """A quoted cell spanning many short lines is stopped by the cell limit."""
    path = tmp_path / "cell.csv"
    path.write_bytes(b'Invoice Number,Reason,Note\nINV-1,01,"' + b"x\n" * (2 * 2**20)
                     + b'"\n')
    refused(cli, sim, path, "cell.csv", "field larger than field limit")


@pytest.mark.parametrize("suffix", ["xlsx", "ods"])
def test_a_spreadsheet_cell_of_megabytes_is_refused(suffix: str, cli: Any, sim: Any,
                                                    tmp_path: Path) -> None:
    """A cell far beyond any spreadsheet's own limit is refused, naming the row."""
    # incompressible (a repeated letter would be refused as a zip bomb first); openpyxl cuts
    # what it writes at 32,767 characters, so the XML is patched
    huge = base64.b64encode(os.urandom(3 * 2**20)).decode()
    if suffix == "xlsx":
        book = openpyxl.Workbook()
        book.active.append(["Invoice Number", "Reason", "Note"])
        book.active.append(["INV-1", "01", "PLACEHOLDER"])
        path = tmp_path / "cell.xlsx"
        book.save(path)
        rewrite(path, "xl/worksheets/sheet1.xml",
                lambda data: data.replace(b"PLACEHOLDER", huge.encode()))
    else:
        path = rewrite(small_ods(tmp_path), "content.xml",
                       lambda data: data.replace(b"Comercial Pe", huge.encode(), 1))
    refused(cli, sim, path, path.name, "row 2 has a cell of more than")
