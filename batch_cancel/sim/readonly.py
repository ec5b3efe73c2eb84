"""The commands that only read, after the chain: `preflight --check-invoices` of the input and
`verify` of the final report, each the real command reading the same world through the
client's session seam, under the run's limits.

Each is a process of its own in the world's record (a run number after the chain's), so the
oracle's limits checks (`promises`) hold for their reads as for any run: no read during a 429
pause, none past the concurrency allowed. This module runs them and names what they must
keep: no cancel sent; every row once in what they write; preflight's verdicts true to the
world when it read; verify's e-invoice states the world's, `cancel_failed` exactly where the
tax authority refused.
"""

from __future__ import annotations

import asyncio
import csv
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Settings, Target
from ..events import Events
from ..model import SETTLED_STATUSES, Status
from ..preflight import ALREADY, CANCELABLE, NOT_FOUND, PreflightOptions, preflight_async
from ..read.loader import LoadOptions
from ..send.limits import limits_for
from ..send.reads import InvoiceReads, ReadsOpener
from ..send.zuora import AuthenticationError
from ..verify import VerifyOptions, verify_async
from .clock import LoopClock
from .inputs import row_numbers
from .records import Ledger
from .schedule import Schedule
from .world import Crash, World

if TYPE_CHECKING:
    import pandas

__all__ = ["Previewed", "Verified", "judge_preflight", "judge_verify", "run_preflight",
           "run_verify"]

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


def _world_reads(world: World, label: str) -> ReadsOpener:
    """A command's invoice reader on the world: a new client, the command's limits on the
    loop's time; the world asks it whether it has stopped."""

    @asynccontextmanager
    async def reads(settings: Settings, events: Events | None) -> AsyncIterator[InvoiceReads]:
        client = world.connect()
        await client.authenticate()
        loop = asyncio.get_running_loop()
        reader = InvoiceReads(client, limits_for(settings, Target("", "simulator")),
                              clock=LoopClock(loop),
                              rng=random.Random(f"{label}|{world.schedule.seed}"),
                              events=events)
        world.client_stopping = lambda: bool(reader.stop_reason)
        yield reader

    return reads


def _new_process(world: World) -> int:
    """A new process on the world, not stopping until its reader says so."""
    world.next_run()
    world.on_crash = None
    world.client_stopping = lambda: False
    return world.run


async def run_verify(world: World, settings: Settings, folder: Path, last: Ledger
                     ) -> Verified:
    """`verify` of the chain's final report against the world, in a process of its own."""
    verified = Verified(_new_process(world), report=last.rows)
    reads = _world_reads(world, "verify")
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


@dataclass(slots=True)
class Previewed:
    """What `preflight --check-invoices` read and wrote, for the oracle."""

    #: the world's number of preflight's process
    run: int
    #: when it started (an invoice cancelled before then is not cancelable)
    started: float
    #: when it ended (an invoice it calls cancelled was cancelled by then)
    ended_at: float = 0.0
    #: the plan report's rows (none if preflight could not finish)
    rows: list[dict[str, str]] = field(default_factory=list)
    ended: str = ""


async def run_preflight(world: World, schedule: Schedule, source: Path | pandas.DataFrame,
                        folder: Path) -> Previewed:
    """`preflight --check-invoices` of the chain's input against the world."""
    previewed = Previewed(_new_process(world), asyncio.get_running_loop().time())
    plan = folder / "preflight.csv"
    options = PreflightOptions(source, Target("", "simulator"), report_path=plan,
                               load=LoadOptions(), settings=schedule.settings,
                               check_invoices=True, reads=_world_reads(world, "preflight"))
    try:
        await preflight_async(options)
    except (AuthenticationError, Crash) as exc:
        previewed.ended = type(exc).__name__
        return previewed
    finally:
        previewed.ended_at = asyncio.get_running_loop().time()
    with plan.open(encoding="utf-8-sig", newline="") as handle:
        previewed.rows = list(csv.DictReader(handle))
    return previewed


def judge_preflight(schedule: Schedule, world: World, previewed: Previewed | None
                    ) -> list[str]:
    """What preflight must keep; broken promises as sentences (none if no preflight)."""
    if previewed is None:
        return []
    return list(_preflight_promises(schedule, world, previewed))


def _preflight_promises(schedule: Schedule, world: World, previewed: Previewed
                        ) -> Iterator[str]:
    sent = [r for r in world.requests if r.run == previewed.run and r.kind == "cancel"]
    if sent:
        yield f"preflight sent {len(sent)} cancels (first: {sent[0].key})"
    if not previewed.rows:
        return
    if [r["row"] for r in previewed.rows] != row_numbers(schedule):
        yield "preflight's plan does not have every input row once, in order"
    before = {a.key for a in world.accepted if a.at < previewed.started}
    by_end = {a.key for a in world.accepted if a.at <= previewed.ended_at}
    for row in previewed.rows:
        key, verdict = row["invoice_key"], row["preflight"]
        cancelled = "CANCELLED" in key or key in before
        where = f"preflight: row {row['row']} ({key}) {verdict}"
        if verdict == CANCELABLE and (cancelled or "NOTFOUND" in key):
            yield f"{where}, but the invoice was {'cancelled' if cancelled else 'unknown'}"
        elif verdict == ALREADY and not cancelled and key not in by_end:
            yield f"{where}, but no cancel of it was accepted before preflight ended"
        elif verdict == NOT_FOUND and "NOTFOUND" not in key:
            yield f"{where}, but the invoice exists"


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
