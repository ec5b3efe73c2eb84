"""An earlier batch-cancel report fed back in: which rows to send again, and with what.

The rows the user asks for (by default failed, not attempted and invalid ones) are checked
again with the user's own cells, so a corrected cell is what goes out; every other row is
carried over with its earlier outcome, so the new report is whole.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from ..model import REPORT_COLUMNS, SourceRow, Status
from .columns import KEY_ALIASES, REASON_ALIASES, REFERENCE_ALIASES, ColumnError, resolve_column
from .duplicates import mark_duplicates
from .loaded import InputError, LoadedInput, LoadOptions, check_not_empty
from .validate import make_row, normalise_reason, reference_rule

#: Statuses re-run by default when a report is the input: never `succeeded` (a second cancel).
DEFAULT_RERUN = frozenset({Status.FAILED, Status.NOT_ATTEMPTED, Status.INVALID})
#: Zuora error categories no resend can change (not found, invalid value, not cancelable...):
#: such a `failed` row is sent again only once the user edits it, or with --include-final.
FINAL_CATEGORIES = frozenset({10, 11, 20, 21, 22, 23, 27, 30, 40, 45, 90})
_INPUT_PREFIX = "input_"


@dataclass(frozen=True, slots=True)
class _OwnColumns:
    """The user's own key, reason and reference columns in a report (names in the report)."""

    key: str | None
    reason: str | None
    reference: str | None


def _own_columns(path: Path, passthrough: list[str], options: LoadOptions) -> _OwnColumns:
    """Find, among a report's pass-through columns, the ones the original input had.

    They hold what the user sees and edits; the derived `invoice_key`/`reason`/
    `document_reference_id` are what batch-cancel made of them. A column renamed for the
    report (`reason` became `input_reason`) is found under its original name.
    """
    original = {(c[len(_INPUT_PREFIX):] if c.startswith(_INPUT_PREFIX)
                 and c[len(_INPUT_PREFIX):] in REPORT_COLUMNS else c): c for c in passthrough}
    names = list(original)

    def find(what: str, aliases: frozenset[str], override: str | None, flag: str
             ) -> str | None:
        """The report column holding the user's own `what`, or None if none (or two)."""
        try:
            found = resolve_column(path, names, what, aliases, override, flag).column
        except ColumnError as exc:
            if override is not None:
                raise InputError(str(exc)) from None
            return None  # two candidates: keep to the columns batch-cancel derived
        return None if found is None else original[found]

    return _OwnColumns(
        find("invoice key", KEY_ALIASES, options.key_column, "--key-column"),
        find("reason", REASON_ALIASES, options.reason_column, "--reason-column"),
        find("document reference", REFERENCE_ALIASES, options.reference_column,
             "--reference-column"))


def _user_fields(values: dict[str, str], own: _OwnColumns) -> tuple[str, str, str]:
    """Key, reason and reference of a report row: the user's own cells win over derived ones.

    An empty key or reason cell of the user's falls back to the derived value (the reason may
    have come from --reason; the derived key may be what the user corrected); an emptied
    reference is taken as meant (a reference given with the wrong reason is fixed so).
    """
    key = values[own.key] if own.key and values[own.key].strip() else values["invoice_key"]
    reason = (values[own.reason] if own.reason and values[own.reason].strip()
              else values.get("reason", ""))
    reference = (values[own.reference] if own.reference
                 else values.get("document_reference_id", ""))
    return key, reason, reference


def _edited(values: dict[str, str], key: str, reason: str, reference: str) -> bool:
    """Whether the user changed what a row sends since the report was written."""
    return (key.strip() != values["invoice_key"].strip()
            or normalise_reason(reason) != values.get("reason", "").strip()
            or reference.strip() != values.get("document_reference_id", "").strip())


def final_failure(values: dict[str, str]) -> bool:
    """A `failed` row whose answer no resend can change: Zuora refused it for good, and no
    request of ours is in doubt (timeouts, 5xx, stopped runs and in-doubt rows can change)."""
    if values.get("status", "").strip() != Status.FAILED or _was_in_doubt(values):
        return False
    code = values.get("error_code", "").strip()
    return code.isdigit() and int(code) % 100 in FINAL_CATEGORIES


def _was_in_doubt(values: dict[str, str]) -> bool:
    """The report marks rows whose last request may have been applied; reports written before
    the `in_doubt` column said so only in the message."""
    if "in_doubt" in values:
        return values["in_doubt"].strip() == "yes"
    return values.get("error_message", "").startswith("in doubt")


def load_report(path: Path, columns: list[str], records: list[tuple[int, list[str]]],
                options: LoadOptions) -> LoadedInput:
    """Rows of an earlier report: selected statuses are re-validated, the rest carried over.

    A selected row is re-sent with the user's own cells (so a corrected cell is what goes
    out), in doubt if the report says so; a `failed` row Zuora refused for good is left out
    unless the user edited it or passes --include-final.
    """
    only = options.only if options.only is not None else DEFAULT_RERUN
    if Status.SUCCEEDED in only:
        raise InputError("--only succeeded is refused: those invoices are already cancelled, "
                         "and a second cancel is what batch-cancel never sends")
    passthrough = [c for c in columns if c not in REPORT_COLUMNS]
    names = tuple(passthrough)
    own = _own_columns(path, passthrough, options)
    rows: list[SourceRow] = []
    left_out: Counter[str] = Counter()
    for number, cells in records:
        values = dict(zip(columns, cells, strict=True))
        extra = tuple(values[c] for c in passthrough)
        original = _row_number(values, number)
        earlier = _status(path, number, values)
        key, reason, reference = _user_fields(values, own)
        if earlier in only and (options.include_final or not final_failure(values)
                                or _edited(values, key, reason, reference)):
            row = make_row(original, key, reason, reference, extra, names)
            rows.append(replace(row, in_doubt=True)
                        if row.status is None and _was_in_doubt(values) else row)
            continue
        if earlier in only:
            left_out[values.get("error_code", "").strip()] += 1
        rows.append(_carried_row(original, earlier, values, extra, names))
    _check_rows(path, rows)
    return LoadedInput(path, passthrough,
                       mark_duplicates(reference_rule(rows, options.require_reference)),
                       is_report=True, key_column=own.key or "invoice_key",
                       reason_column=own.reason or "reason",
                       reference_column=own.reference or "document_reference_id",
                       notes=_left_out_notes(left_out))


def _row_number(values: dict[str, str], number: int) -> int:
    """The row number of the original input, as the report gives it (else the report's)."""
    try:
        return int(values["row"])
    except ValueError:
        return number


def _status(path: Path, number: int, values: dict[str, str]) -> Status:
    """The row's earlier status, or `InputError` if the report's cell names none."""
    try:
        return Status(values["status"].strip())
    except ValueError as exc:
        raise InputError(f"{path}: row {number} has status {values['status']!r}, which is "
                         f"not one of {', '.join(s.value for s in Status)}") from exc


def _carried_row(original: int, earlier: Status, values: dict[str, str],
                 extra: tuple[str, ...], names: tuple[str, ...]) -> SourceRow:
    """A row not sent again: its earlier outcome goes into the new report as it was."""
    carried = {c: values.get(c, "") for c in REPORT_COLUMNS}
    return SourceRow(row=original, invoice_key=values["invoice_key"].strip(),
                     reason=values.get("reason", "").strip(),
                     document_reference_id=values.get("document_reference_id", ""),
                     cells=extra, columns=names, status=earlier,
                     message=values.get("error_message", ""), carried=carried,
                     duplicate_of=duplicate_of(values) if earlier is Status.DUPLICATE else None)


#: How reports written so far say which row a duplicate repeats: only in the message.
_OLD_DUPLICATE_MESSAGE = re.compile(r"duplicate of row ([0-9]+)\b")


def duplicate_of(values: dict[str, str]) -> int | None:
    """The row a `duplicate` row of a report repeats, as data.

    A report with a `duplicate_of` column says it there. Reports without that column (all
    written so far) say it only in the message, "duplicate of row 12 (same invoice key)":
    this is the one place that reads it back from there, for such old reports.
    """
    if "duplicate_of" in values:
        cell = values["duplicate_of"].strip()
        return int(cell) if cell.isdigit() else None
    found = _OLD_DUPLICATE_MESSAGE.match(values.get("error_message", ""))
    return int(found.group(1)) if found else None


def _check_rows(path: Path, rows: list[SourceRow]) -> None:
    """A report with no rows, or whose row numbers repeat (an edited report), is refused."""
    check_not_empty(path, rows)
    numbers = [r.row for r in rows]
    if len(set(numbers)) != len(numbers):
        raise InputError(f"{path}: the report's 'row' column repeats a row number; "
                         "was the report edited? Restore unique row numbers")


def _left_out_notes(left_out: Counter[str]) -> list[str]:
    """A note for the plan on the final failures not sent again, by error code."""
    if not left_out:
        return []
    codes = ", ".join(f"{code} x{n}" for code, n in left_out.most_common(5))
    return [f"left out: {left_out.total()} failed rows whose answer was final "
            f"({codes}); edit them, or pass --include-final to send them again"]
