"""`verify` after the chain: the real command follows the final report's accepted cancels,
reading the same world through the client's session seam, under the run's limits.

Its reads are a process of their own in the world's record (a run number after the chain's),
so the oracle's limits checks (`promises`) hold for them as for any run: no read during a 429
pause, none past the concurrency allowed. This module runs it and names what verify's output
must keep: every row of the report once, each e-invoice state it wrote the one the world has,
`cancel_failed` exactly where the tax authority refused, and no cancel sent.
"""

from __future__ import annotations

import asyncio
import csv
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Settings, Target
from ..events import Events
from ..model import SETTLED_STATUSES, Status
from ..send.limits import limits_for
from ..send.reads import InvoiceReads
from ..send.zuora import AuthenticationError
from ..verify import VerifyOptions, verify_async
from .clock import LoopClock
from .records import Ledger
from .world import Crash, World

__all__ = ["Verified", "judge_verify", "run_verify"]

#: Seconds of the world's time verify may poll (verify's own deadline is the machine's).
UNTIL = 600.0


@dataclass(slots=True)
class Verified:
    """What `verify` read and wrote, for the oracle."""

    #: the world's number of verify's process
    run: int
    #: the report's rows, as the chain's last run wrote them
    report: list[dict[str, str]] = field(default_factory=list)
    #: verify's output rows (none if it could not finish: a refused token, a crash)
    rows: list[dict[str, str]] = field(default_factory=list)
    ended: str = ""


async def run_verify(world: World, settings: Settings, folder: Path, last: Ledger
                     ) -> Verified:
    """`verify` of the chain's final report against the world, in a process of its own."""
    world.next_run()
    world.on_crash = None
    world.client_stopping = lambda: False  # until the reader is open
    verified = Verified(world.run, report=last.rows)

    @asynccontextmanager
    async def reads(settings: Settings, events: Events | None) -> AsyncIterator[InvoiceReads]:
        client = world.connect()
        await client.authenticate()
        loop = asyncio.get_running_loop()
        reader = InvoiceReads(client, limits_for(settings, Target("", "simulator")),
                              clock=LoopClock(loop),
                              rng=random.Random(f"verify|{world.schedule.seed}"), events=events)
        world.client_stopping = lambda: bool(reader.stop_reason)
        yield reader

    output = folder / "verified.csv"
    options = VerifyOptions(folder / "report.csv", Target("", "simulator"), None,
                            output_path=output, settings=settings, until=UNTIL, reads=reads)
    try:
        await verify_async(options)
    except (AuthenticationError, Crash) as exc:
        verified.ended = type(exc).__name__
        return verified
    with output.open(encoding="utf-8-sig", newline="") as handle:
        verified.rows = list(csv.DictReader(handle))
    return verified


def judge_verify(world: World, verified: Verified | None) -> list[str]:
    """What verify's output must keep; broken promises as sentences (none if no verify)."""
    if verified is None:
        return []
    return list(_verify_promises(world, verified))


def _verify_promises(world: World, verified: Verified) -> Iterator[str]:
    sent = [r for r in world.requests if r.run == verified.run and r.kind == "cancel"]
    if sent:
        yield f"verify sent {len(sent)} cancels (first: {sent[0].key})"
    if not verified.rows:
        return
    if [r["row"] for r in verified.rows] != [r["row"] for r in verified.report]:
        yield "verify's output does not have every row of the report once, in order"
    for row in verified.rows:
        read, key = row.get("einvoice_status", ""), row["invoice_key"]
        true = world.model.status_of(key) if key else None
        where = f"verify: row {row['row']} ({key})"
        if read in SETTLED_STATUSES and read != true:
            yield f"{where} says {read}, but the invoice is {true}"
        if (row["status"] == Status.CANCEL_FAILED) != (read == "CancelFailed"):
            yield f"{where} is {row['status']} with e-invoice status {read or 'unread'}"
        if read and row["status"] not in (Status.SUCCEEDED, Status.CANCEL_FAILED):
            yield f"{where} was read though the report says {row['status']}"
