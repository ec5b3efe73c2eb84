"""The rules a row must pass to be sent: the invoice key, the reason code, the document
reference. Each rule says, in the row's message, which one a row broke and how to fix it.

`CLEAN_KEY` and `REASON_SPELLINGS` are the same rules folded into one match each, for the
loader's fast path (`rows`): they accept only what the rule-by-rule checks accept.
"""

from __future__ import annotations

import re
from dataclasses import replace
from itertools import compress, count
from operator import attrgetter

from ..model import SourceRow, Status
from .loaded import InputError

MAX_KEY_LENGTH = 255
REASONS = ("01", "02", "03", "04")
EXCEL_ERRORS = {"#N/A", "#VALUE!", "#REF!", "#DIV/0!", "#NUM!", "#NAME?", "#NULL!", "#SPILL!",
                "#CALC!", "#GETTING_DATA"}
_REASON_NUMBER = re.compile(r"^0*([0-9]+)(?:\.0*)?$")
_SCIENTIFIC = re.compile(r"^[0-9](?:[.,][0-9]+)?[eE]\+?[0-9]+$")  # 1,23E+15: decimal comma
#: A key every rule of `key_problem` accepts, in one match: 1-255 printable ASCII characters
#: without space, / ? # % (every Excel error value starts with #) or "..", and not scientific
#: notation. Most keys are like this; any other key goes through `key_problem`, rule by rule.
_KEY_CHARACTERS = "".join(re.escape(chr(c)) for c in range(0x21, 0x7F) if chr(c) not in "/?#%")
CLEAN_KEY = re.compile(rf"(?![0-9](?:[.,][0-9]+)?[eE]\+?[0-9]+\Z)(?!.*\.\.)"
                       rf"[{_KEY_CHARACTERS}]{{1,{MAX_KEY_LENGTH}}}")
#: The usual spellings of a reason cell and their code ("2" and "02" mean "02"); any other
#: cell goes through `normalise_reason`.
REASON_SPELLINGS = {spelling: code for code in REASONS for spelling in (code, code[1:])}


def normalise_reason(text: str) -> str:
    """`1`, `1.0`, `01` and ` 01 ` all mean reason `01`; anything else is kept for the message."""
    text = text.strip()
    match = _REASON_NUMBER.match(text)
    if match:
        return f"{int(match.group(1)):02d}"
    return text


def key_problem(key: str) -> str:
    """Why a (trimmed) invoice key cannot be sent, or "" if it can."""
    if not key:
        return "invoice key is empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"invoice key is longer than {MAX_KEY_LENGTH} characters ({len(key)})"
    if key in EXCEL_ERRORS:
        return f"invoice key is the Excel error value {key}; fix the formula or the cell"
    if _SCIENTIFIC.match(key):
        return ("invoice key looks like a number Excel turned into scientific notation "
                f"({key}), which loses digits; format the column as Text and re-enter the keys")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        return "invoice key contains control characters"
    if any(ch.isspace() for ch in key):
        return "invoice key has whitespace inside"
    if not key.isascii():
        return "invoice key contains non-ASCII characters"
    for bad in ("/", "?", "#", "%"):
        if bad in key:
            return f"invoice key contains {bad!r}, which no Zuora invoice key has"
    if ".." in key:
        return "invoice key contains '..'"
    return ""


def row_problem(key: str, reason: str, reference: str) -> str:
    """The first rule a row breaks, or "" if it can be sent."""
    problem = key_problem(key)
    if problem:
        return problem
    if not reason:
        return "reason is empty; fill the reason column (01-04) or pass --reason CODE"
    if reason not in REASONS:
        return f"reason {reason[:20]!r} is not one of 01, 02, 03, 04"
    if reference and reason != "01":
        return (f"documentReferenceID is given with reason {reason}; "
                "Zuora accepts it only with reason 01 (Mexico)")
    if reference and problem_in_reference(reference):
        return problem_in_reference(reference)
    return ""


def problem_in_reference(reference: str) -> str:
    """A document reference goes in a JSON body, so only length and control characters matter."""
    if len(reference) > MAX_KEY_LENGTH:
        return f"documentReferenceID is longer than {MAX_KEY_LENGTH} characters"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in reference):
        return "documentReferenceID contains control characters"
    return ""


def make_row(number: int, key: str, reason: str, reference: str, cells: tuple[str, ...],
             columns: tuple[str, ...]) -> SourceRow:
    """A normalised row, marked `invalid` with the broken rule if it cannot be sent."""
    key = key.strip()
    reason = normalise_reason(reason)
    reference = reference.strip()
    problem = row_problem(key, reason, reference)
    return SourceRow(row=number, invoice_key=key, reason=reason,
                     document_reference_id=reference, cells=cells, columns=columns,
                     status=Status.INVALID if problem else None, message=problem)


_MOTIVE_01 = "01"
_REASON = attrgetter("reason")
#: Why a reason-01 row without a documentReferenceID is flagged.
MISSING_REFERENCE = ("reason 01 without a documentReferenceID: Zuora accepts it, but Mexico's "
                     "SAT requires the replacing document for motive 01")


def reference_rule(rows: list[SourceRow], require: bool) -> list[SourceRow]:
    """Flag reason-01 rows that name no replacing document: a warning the plan and the
    report carry, or (`--require-reference`) `invalid`, never sent.

    Reason-01 rows are found in C (`map`, `compress`), and only they are looked at in
    Python: most files have few of them, and a loop over a million rows costs a tenth of a
    second for nothing. Returns a new list; `rows` is left as it was.
    """
    out = list(rows)
    for index in compress(count(), map(_MOTIVE_01.__eq__, map(_REASON, out))):
        row = out[index]
        if row.status is None and not row.document_reference_id:
            out[index] = (replace(row, status=Status.INVALID, message=MISSING_REFERENCE
                                  + "; fill the reference column or drop --require-reference")
                          if require else replace(row, warning=MISSING_REFERENCE))
    return out



def default_reason(code: str | None) -> str:
    """The reason code `--reason` gives rows with a blank reason cell ("" without it); a code
    that is not one is refused before any row is read."""
    if code is None:
        return ""
    reason = normalise_reason(code)
    if reason not in REASONS:
        raise InputError(f"--reason {code!r} is not a reason code; use 01, 02, 03 or 04")
    return reason
