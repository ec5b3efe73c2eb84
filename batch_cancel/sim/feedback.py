"""An earlier report fed back in: what the new run must keep of the rows it was given.

Users re-run the failed rows of a report by giving the report as the input: the chain's last
report becomes a new command's input on the same world (`chain._feed_back`). Besides the
promises every run keeps (`promises.judge`: rows once, exit code, limits, no second cancel
without a read across every run), the new run keeps these: every row of the fed-back report
once in the new report; a row whose invoice is cancelled (by anyone, before or during the new
run) never reported `failed` without doubt; `succeeded` only where a cancel of ours was
accepted, `skipped` never for a cancel of the new run's own; the final failures left out
(unless --include-final) counted in the plan as the earlier report has them, and never sent;
a row in doubt still in doubt until a read of its invoice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..model import Status
from ..plan import Plan
from ..read.earlier_report import DEFAULT_RERUN, FINAL_CATEGORIES
from .records import Ledger
from .world import World

__all__ = ["FedBack", "carried_rows", "judge_feedback", "left_out_in_plan", "left_out_of"]

#: The plan's note on final failures not sent again (see `read.earlier_report`).
_LEFT_OUT = re.compile(r"left out: ([0-9]+) failed rows")
#: What the world did with a request that tells the client an invoice's state: a read
#: answered, or a cancel accepted (a refusal's words are not read as a state: the runner
#: reads the invoice to learn it, and a refusal stands when that read meets a 429).
_TOLD = frozenset({"read", "accepted"})


@dataclass(slots=True)
class FedBack:
    """The chain's last report fed back in as a new command's input, and what became of it."""

    #: "rerun" (default rows) or "include_final" (see `schedule.FEEDBACK`)
    mode: str
    #: the fed-back report's rows, as the chain's last run wrote them
    rows: list[dict[str, str]] = field(default_factory=list)
    #: the world's number of the new command's first process
    first_run: int = 0
    ledgers: list[Ledger] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)

    @property
    def runs(self) -> range:
        """The world's numbers of the new command's processes (not those of a `preflight` or
        `verify` that follows)."""
        return range(self.first_run, self.first_run + len(self.ledgers))

    @property
    def include_final(self) -> bool:
        """Whether the new command passes --include-final."""
        return self.mode == "include_final"


def left_out_of(rows: list[dict[str, str]], include_final: bool) -> list[dict[str, str]]:
    """The rows of a report a re-run leaves out: `failed`, not in doubt, with an error code
    whose category no resend can change (none with --include-final)."""
    if include_final:
        return []
    return [row for row in rows
            if row["status"] == Status.FAILED and row.get("in_doubt") != "yes"
            and row["error_code"].isdigit() and int(row["error_code"]) % 100 in FINAL_CATEGORIES]


def carried_rows(fed: FedBack) -> set[str]:
    """The fed-back rows the new command carries over as they were (by row number): every
    status but the ones re-run by default, and the final failures left out."""
    left = {row["row"] for row in left_out_of(fed.rows, fed.include_final)}
    return {row["row"] for row in fed.rows if row["status"] not in DEFAULT_RERUN} | left


def left_out_in_plan(plan: Plan) -> int:
    """How many final failures the plan says it leaves out (its note; 0 without one)."""
    for note in plan.loaded.notes:
        found = _LEFT_OUT.search(note)
        if found:
            return int(found.group(1))
    return 0


def judge_feedback(world: World, fed: FedBack | None) -> list[str]:
    """The promises of a report fed back in, broken ones as sentences (none if not fed)."""
    if fed is None or not fed.plans:
        return []
    finished = [ledger for ledger in fed.ledgers if not ledger.crashed]
    if not finished:
        return ["no run of the fed-back report finished"]
    problems = list(_left_out_kept(world, fed, finished[-1]))
    problems += _truthful_again(world, fed, finished[-1])
    problems += _doubt_kept(world, fed, finished[-1])
    return problems


def _left_out_kept(world: World, fed: FedBack, ledger: Ledger) -> Iterator[str]:
    """The plan counts the final failures left out as the earlier report has them, the new
    report carries them as they were, and no cancel of theirs is sent."""
    left = left_out_of(fed.rows, fed.include_final)
    said = left_out_in_plan(fed.plans[0])
    if said != len(left):
        yield (f"fed-back report: the plan leaves out {said} final failures, but the earlier "
               f"report has {len(left)} ({'with' if fed.include_final else 'without'} "
               "--include-final)")
    now = {row["row"]: row for row in ledger.rows}
    resent = {row["invoice_key"] for row in fed.rows if row not in left}
    sent = {r.key for r in world.requests if r.kind == "cancel" and r.run in fed.runs}
    for row in left:
        after = now.get(row["row"], {})
        if (after.get("status"), after.get("error_code")) != (row["status"], row["error_code"]):
            yield (f"fed-back row {row['row']} ({row['invoice_key']}), a final failure left "
                   f"out, reads {after.get('status')} {after.get('error_code')} in the new "
                   "report, not as it was")
        if row["invoice_key"] in sent and row["invoice_key"] not in resent:
            yield (f"fed-back row {row['row']} ({row['invoice_key']}), a final failure left "
                   "out, was sent a cancel")


def _truthful_again(world: World, fed: FedBack, ledger: Ledger) -> Iterator[str]:
    """Each row of the new report against what the tenant did, before and during the new
    command: a row whose invoice the tenant told the new command about after it was
    cancelled is never a plain failure (a 429 or no answer tells nothing: such a failure is
    true), `succeeded` needs a cancel of ours accepted, `skipped` never hides the new
    command's own cancel."""
    accepted: dict[str, list[Any]] = {}
    for acceptance in world.accepted:
        accepted.setdefault(acceptance.key, []).append(acceptance)
    told: dict[str, list[float]] = {}
    for request in world.requests:
        if request.run in fed.runs and request.result in _TOLD:
            told.setdefault(request.key, []).append(request.arrived)
    for row in ledger.rows:
        key, status, doubt = row["invoice_key"], row["status"], row["in_doubt"] == "yes"
        ours = accepted.get(key, [])
        mine = [a for a in ours if a.run in fed.runs]
        since = 0.0 if "CANCELLED" in key else min(
            (a.at for a in ours if not a.will_fail), default=None)
        where = f"fed-back run: row {row['row']} ({key or 'no key'}) {status}"
        if status == Status.FAILED and not doubt and since is not None and any(
                at >= since for at in told.get(key, ())):
            yield (f"{where} and not in doubt, but its invoice was cancelled at {since:.3f} s "
                   "and the tenant said so to the new run")
        elif status == Status.SUCCEEDED and not ours and "CANCELLED" not in key:
            yield f"{where}, but no cancel of ours was ever accepted for it"
        elif status == Status.SKIPPED and mine:
            yield f"{where}, but the new run's own cancel was accepted at {mine[0].at:.3f} s"
        elif status == Status.SKIPPED and not ours and "CANCELLED" not in key:
            # a cancel the tax authority later refuses was accepted all the same: an invoice
            # read while CancelProcessing is rightly `skipped`
            yield f"{where}, but no cancel of it was ever accepted"


def _doubt_kept(world: World, fed: FedBack, ledger: Ledger) -> Iterator[str]:
    """A row in doubt in the fed-back report stays in doubt in the new one unless the new
    command read its invoice (the read settles the doubt one way or the other)."""
    now = {row["row"]: row for row in ledger.rows}
    read = {r.key for r in world.requests if r.kind == "read" and r.run in fed.runs}
    for row in fed.rows:
        after = now.get(row["row"])
        if (row.get("in_doubt") == "yes" and after is not None
                and after["status"] in (Status.FAILED, Status.NOT_ATTEMPTED)
                and after.get("in_doubt") != "yes" and row["invoice_key"] not in read):
            yield (f"fed-back row {row['row']} ({row['invoice_key']}) was in doubt, and the "
                   f"new report says {after['status']} with no doubt though its invoice was "
                   "never read")
