"""Duplicates: a second row with an invoice key an earlier row already claimed is never sent.

Keys compare without case: Zuora invoice numbers do not distinguish case, and a second cancel
of the same invoice is exactly what must never be sent. A duplicate row carries the row it
repeats as data (`SourceRow.duplicate_of`); the message says the same for people, and nothing
reads the number back out of it.
"""

from __future__ import annotations

from dataclasses import replace

from ..model import SourceRow, Status


def duplicate_message(owner: int) -> str:
    """What the report says about a duplicate of row `owner`."""
    return f"duplicate of row {owner} (same invoice key)"


def as_duplicate(row: SourceRow, owner: int) -> SourceRow:
    """`row` marked `duplicate` of row `owner`: never sent, pointing at the row that is."""
    return replace(row, status=Status.DUPLICATE, duplicate_of=owner,
                   message=duplicate_message(owner))


def mark_duplicates(rows: list[SourceRow]) -> list[SourceRow]:
    """A row to send whose key a `succeeded` or `skipped` row, or an earlier row to send,
    already has is `duplicate`, pointing at that row.

    Used for a report fed back in, where rows carried over as `succeeded` (or `skipped`)
    claim their key first, wherever they are: re-sending such a key would cancel twice (a
    row above it corrected to its key, or a report sorted by status, puts a row to send
    first). Rows to send then claim in order. A plain file claims keys in row order as it
    is read (`rows.build_rows`).
    """
    first: dict[str, int] = {}
    done = [row for row in rows if row.status in (Status.SUCCEEDED, Status.SKIPPED)]
    for row in (*done, *(row for row in rows if row.status is None)):
        first.setdefault(row.invoice_key.lower(), row.row)
    out = []
    for row in rows:
        owner = first.get(row.invoice_key.lower())
        if row.status is None and owner is not None and owner != row.row:
            row = as_duplicate(row, owner)
        out.append(row)
    return out
