"""Which column holds what: the names people and Zuora's exports give the key, reason and
document reference columns, and choosing among the columns of a header.

Names compare without case, accents, spaces and the separators `_ - . :`, so `Invoice Number`,
`invoice_number`, `Invoice.InvoiceNumber` (a Data Source export), `Invoice: Invoice Number`
(a report export) and `Número de factura` are all recognised. Two columns that could both be
the key are refused rather than guessed between: their values may differ, and a cancel cannot
be undone.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

#: Normalised names of the invoice key column: ours, Zuora export forms, Spanish.
KEY_ALIASES = frozenset({
    "invoicekey", "invoicenumber", "invoiceid", "invoice",
    "invoiceinvoicenumber",  # Invoice.InvoiceNumber, Invoice: Invoice Number
    "invoiceinvoicekey",
    "factura", "numerodefactura", "numerofactura", "folio", "foliodefactura",
})
#: Normalised names of the reason column.
REASON_ALIASES = frozenset({
    "reason", "reasoncode", "cancelreason", "cancellationreason",
    "invoicereason", "invoicereasoncode", "invoicecancelreason",  # Invoice.ReasonCode
    "motivo", "motivodecancelacion", "motivocancelacion",
})
#: Normalised names of the document reference column (reason 01, Mexico).
REFERENCE_ALIASES = frozenset({
    "documentreferenceid", "documentreference", "invoicedocumentreferenceid",
    "documentodereferencia", "foliodesustitucion", "foliosustitucion",
})

_SEPARATORS = re.compile(r"[\s_\-.:]+")
#: `Invoice.Id`, `Invoice: Invoice Number`: an object name, then its field.
_EXPORT_NAME = re.compile(r"^\s*(?P<object>[^.:]+?)\s*[.:]\s*(?P<field>[^.:]+?)\s*$")
#: A name `unique_names` made for the second or later column of one header ("X (2)").
_REPEATED = re.compile(r"^(?P<base>.*) \((?P<n>[0-9]+)\)$")


def normalise_name(name: str) -> str:
    """A header name without case, accents, spaces or the separators `_ - . :`."""
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _SEPARATORS.sub("", plain).casefold()


class ColumnError(Exception):
    """No column, or more than one, fits; the message names them and the flag to pass."""


@dataclass(frozen=True, slots=True)
class Choice:
    """The column chosen, and a sentence for the plan when the choice needs one."""

    column: str | None
    note: str = ""


def resolve_column(path: Path, columns: list[str], what: str, aliases: frozenset[str],
                   override: str | None, flag: str) -> Choice:
    """The one column holding `what`: the `flag` override, else the one alias match.

    Several alias matches are refused (`ColumnError`), except the id/number pair of one
    Zuora object in an export (`Invoice.Id` + `Invoice.InvoiceNumber`): the number is used.
    """
    if override is not None:
        return Choice(_overridden(path, columns, override, flag))
    matches = [c for c in columns if _matches(c, columns, aliases)]
    if len(matches) <= 1:
        return Choice(matches[0] if matches else None)
    number = _export_pair_number(matches)
    if number is not None:
        other = next(m for m in matches if m != number)
        return Choice(number, f"{what} column: {number} ({other} beside it names the same "
                              f"invoices by id; the number is used)")
    repeated = any(_REPEATED.match(m) for m in matches)
    twice = (" (the same header twice, or one header cell merged across columns: unmerge or "
             "rename them)") if repeated else ""
    raise ColumnError(f"{path}: several columns could be the {what}: {', '.join(matches)}"
                      f"{twice}; pass {flag} to choose one")


def _matches(column: str, columns: list[str], aliases: frozenset[str]) -> bool:
    """Whether `column` is named by an alias, or repeats (as "X (2)") a header that is."""
    if normalise_name(column) in aliases:
        return True
    repeated = _REPEATED.match(column)
    return bool(repeated and repeated["base"] in columns
                and normalise_name(repeated["base"]) in aliases)


def _overridden(path: Path, columns: list[str], override: str, flag: str) -> str:
    """The column an override names: the exact name first, then a look-alike."""
    if override in columns:  # an exact name wins over a look-alike earlier column
        return override
    wanted = normalise_name(override)
    for column in columns:
        if normalise_name(column) == wanted:
            return column
    hint = did_you_mean(override, columns)
    raise ColumnError(f"{path}: {flag} {override!r} names no column{hint}; saw: "
                      f"{', '.join(columns)}")


def did_you_mean(name: str, candidates: list[str]) -> str:
    """"; did you mean 'X'?" for the closest of `candidates` to a mistyped name, or ""."""
    by_normal = {normalise_name(c): c for c in reversed(candidates) if c.strip()}
    close = difflib.get_close_matches(normalise_name(name), list(by_normal), n=1, cutoff=0.6)
    return f"; did you mean {by_normal[close[0]]!r}?" if close else ""


def _export_pair_number(matches: list[str]) -> str | None:
    """The number column if `matches` are exactly `Obj.Id` and `Obj.InvoiceNumber` of one
    object as Zuora exports name them (`.` or `:` between object and field), else None."""
    if len(matches) != 2:
        return None
    parts = [_EXPORT_NAME.match(m) for m in matches]
    if not all(parts):
        return None
    objects = {normalise_name(p["object"]) for p in parts if p}
    fields = {normalise_name(p["field"]): m for p, m in zip(parts, matches, strict=True) if p}
    if len(objects) != 1 or set(fields) != {"id", "invoicenumber"}:
        return None
    return fields["invoicenumber"]


def key_found(cells: list[str], key_column: str | None) -> bool:
    """Whether a row can be the header: it names the key column (`--key-column`, or an
    alias). Used to find the header below titles and notes."""
    names = [c.strip() for c in cells if c.strip()]
    if key_column is not None:
        wanted = normalise_name(key_column)
        return key_column in names or any(normalise_name(n) == wanted for n in names)
    return any(normalise_name(n) in KEY_ALIASES for n in names)
