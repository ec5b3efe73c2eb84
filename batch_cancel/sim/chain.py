"""One seed's chain of runs: the real job, process after process, against the world.

For one seed: draw a `Schedule`, write its input file, then run the real pieces of a job (the
plan and resume logic of `api`, the `Journal`, the `ReportWriter`, the `Runner` with its pool,
pacer, window, pause gate, breaker, retries and in-doubt reads, and the `ZuoraClient` with its
token code) against the in-memory `World` on a `VirtualLoop`. If the schedule kills the process,
only the journal lines that had reached the OS survive, and the same command runs again with
`--resume` on the same world; a run that stopped for an outage, the daily quota or a refusing
token endpoint is resumed later the same way. Then `promises.judge` names every broken promise.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import api
from ..config import Target
from ..events import Event, Events
from ..model import StopKind, exit_code
from ..plan import Plan, RunOptions, prepare
from ..read.dialect import report_dialect
from ..read.loader import LoadOptions
from ..record.journal import Journal
from ..record.writer import ReportWriter
from ..send.limits import limits_for
from ..send.pool import Runner
from .clock import LoopClock, Stuck, VirtualLoop
from .feedback import FedBack
from .inputs import write_input
from .promises import is_known, judge
from .readonly import Previewed, Verified, run_preflight, run_verify
from .records import Ledger
from .schedule import Schedule
from .world import DAY, Crash, World

if TYPE_CHECKING:
    import pandas

__all__ = ["Checked", "RunnerPatch", "check_seed", "run_schedule"]

#: How a failing seed is replayed (printed with every failure).
REPLAY = ("pytest tests/test_simulation.py --sim-seed {seed}  "
          "(or: python -m batch_cancel.sim.oracle --seed {seed})")
#: Virtual seconds between a dead process and its resume.
RESTART = 5.0
#: Virtual seconds the world runs on after the last run (late landings, settles).
AFTERMATH = 600.0
#: Runs of one chain at most (first run, resumes after crashes and after stops).
MAX_RUNS = 6

RunnerPatch = Callable[[Runner], None]


@dataclass(slots=True)
class Checked:
    """One seed's verdict: the broken promises (none: it passed) and what the run did."""

    seed: int
    violations: list[str]
    runs: int = 0
    crashes: int = 0
    requests: int = 0
    virtual_seconds: float = 0.0
    exit_code: int | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    late_landings: int = 0
    #: violations of KNOWN kinds (not counted against the seed)
    known: list[str] = field(default_factory=list)
    token_requests: int = 0

    @property
    def ok(self) -> bool:
        """No promise broken."""
        return not self.violations

    def explain(self, schedule: Schedule | None = None) -> str:
        """The failure as a person reads it: schedule, violations, replay command."""
        schedule = schedule or Schedule.draw(self.seed)
        lines = [schedule.describe(), *(f"  VIOLATION: {v}" for v in self.violations[:20])]
        if len(self.violations) > 20:
            lines.append(f"  ... and {len(self.violations) - 20} more")
        lines.append("  replay: " + REPLAY.format(seed=self.seed))
        return "\n".join(lines)


def check_seed(seed: int, runner_patch: RunnerPatch | None = None) -> Checked:
    """Run seed's schedule in a fresh folder and judge it."""
    return check_schedule(Schedule.draw(seed), runner_patch)


def check_schedule(schedule: Schedule, runner_patch: RunnerPatch | None = None) -> Checked:
    """Run a schedule in a fresh folder (RAM-backed when there is one) and judge it."""
    with tempfile.TemporaryDirectory(prefix="bc-sim-", dir=_fast_tmp()) as folder:
        return run_schedule(schedule, Path(folder), runner_patch)


def run_schedule(schedule: Schedule, folder: Path,
                 runner_patch: RunnerPatch | None = None) -> Checked:
    """Run a schedule's chain of runs in `folder` (then the last report fed back in, and
    `preflight` of the input and `verify` of the chain's report, if the schedule says so),
    then the oracle."""
    source = write_input(schedule, folder)
    loop = VirtualLoop()
    world = World(schedule, loop)
    ledgers: list[Ledger] = []
    fed = FedBack(schedule.feedback) if schedule.feedback else None
    verified: Verified | None = None
    previewed: Previewed | None = None
    violations: list[str] = []
    try:
        loop.run_until_complete(_chain(schedule, world, Leg(source, folder / "report.csv"),
                                       ledgers, runner_patch))
        if fed is not None and ledgers and not ledgers[-1].crashed:
            loop.run_until_complete(_feed_back(schedule, world, folder, ledgers, fed,
                                               runner_patch))
        if schedule.preflight:
            previewed = loop.run_until_complete(
                run_preflight(world, schedule, source, folder))
        if schedule.verify and ledgers and not ledgers[-1].crashed:
            verified = loop.run_until_complete(
                run_verify(world, schedule.settings, folder, ledgers[-1]))
        loop.run_until_complete(asyncio.sleep(AFTERMATH))
    except Stuck as exc:
        violations.append(f"the run hangs: {exc}")
    finally:
        _close(loop)
    known: list[str] = []
    if not violations:
        found = judge(schedule, world, ledgers, fed, verified, previewed)
        violations = [v for v in found if not is_known(v)]
        known = [v for v in found if is_known(v)]
    final = ledgers[-1] if ledgers else Ledger(-1)
    statuses: dict[str, int] = {}
    for row in final.rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    every = ledgers + (fed.ledgers if fed is not None else [])
    return Checked(schedule.seed, violations, runs=len(every),
                   crashes=sum(ledger.crashed for ledger in every),
                   requests=len(world.requests), virtual_seconds=loop.time(),
                   exit_code=final.exit_code, statuses=statuses,
                   late_landings=sum(a.late for a in world.accepted), known=known,
                   token_requests=len(world.token_requests))


def _close(loop: VirtualLoop) -> None:
    """Close a loop that may hold tasks of a dead or stuck run, without their noise."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.unbounded()
        with contextlib.suppress(Stuck, RuntimeError):
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.close()


def _fast_tmp() -> str | None:
    """A RAM-backed folder when there is one: journal fsyncs then cost nothing."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


# --------------------------------------------------------------------- the chain of runs


@dataclass(frozen=True, slots=True)
class Leg:
    """One command and its resumes: the input it reads, the report it writes, how it loads."""

    source: Path | pandas.DataFrame
    report: Path
    load: LoadOptions = field(default_factory=LoadOptions)


async def _chain(schedule: Schedule, world: World, leg: Leg, ledgers: list[Ledger],
                 runner_patch: RunnerPatch | None, first_run: int = 0,
                 plans: list[Plan] | None = None) -> None:
    """The first run, then `--resume` after every crash, and later after a stop. Runs are
    numbered on from `first_run` (the world's count of processes)."""
    for run in range(first_run, first_run + MAX_RUNS):
        if run:
            world.next_run()
        ledger = await _one_run(schedule, world, leg, run, run > first_run, runner_patch,
                                plans)
        ledgers.append(ledger)
        wait = _until_resume(schedule, ledger, asyncio.get_running_loop().time())
        if wait is None:
            return
        await asyncio.sleep(wait)


async def _feed_back(schedule: Schedule, world: World, folder: Path, ledgers: list[Ledger],
                     fed: FedBack, runner_patch: RunnerPatch | None) -> None:
    """The user runs the last report again as a new command's input (its own report and
    journal, resumed like any run), on the same world, a while after the chain ended."""
    await asyncio.sleep(RESTART)
    fed.rows = ledgers[-1].rows
    fed.first_run = len(ledgers)
    leg = Leg(folder / "report.csv", folder / "feedback.csv",
              LoadOptions(include_final=fed.include_final))
    await _chain(schedule, world, leg, fed.ledgers, runner_patch, fed.first_run, fed.plans)


def _until_resume(schedule: Schedule, ledger: Ledger, now: float) -> float | None:
    """Seconds until the run is resumed, or None when the chain is over."""
    if ledger.crashed or ledger.stop_kind == StopKind.INTERRUPTED:
        return RESTART
    if ledger.stop_kind == StopKind.QUOTA:
        return DAY - now % DAY + 1  # the quota is back tomorrow
    if ledger.stop_kind == StopKind.OUTAGE:
        return 5000.0
    if ledger.stop_kind == StopKind.AUTH and schedule.token_refusals:
        # once the token endpoint answers again (a stop with no refusal is the oracle's)
        ends = [start + length - now + 1 for start, length, _ in schedule.token_refusals]
        return max(RESTART, *ends)
    return None


async def _one_run(schedule: Schedule, world: World, leg: Leg, run: int, resume: bool,
                   runner_patch: RunnerPatch | None, plans: list[Plan] | None) -> Ledger:
    """One process: the plan, the journal, the report, the client and the runner, as
    `api.run` has them."""
    loop = asyncio.get_running_loop()
    options = RunOptions(input_path=leg.source, target=Target("", "simulator"),
                         report_path=leg.report, load=leg.load, settings=schedule.settings,
                         resume=resume, handle_signals=False)
    plan = prepare(options)
    if plans is not None:
        plans.append(plan)
    run_id = f"s{schedule.seed}r{run}"
    report = ReportWriter(options.report, plan.loaded.columns, plan.loaded.rows,
                          report_dialect(plan.loaded.dialect))
    settled = plan.settled()
    to_send, _ = plan.to_send()
    tally = api.Progress(settled=len(settled), to_send=to_send)
    for outcome in settled.values():
        report.add(outcome)
    journal = Journal(options.journal, {
        "run_id": run_id, "input": options.input_label, "input_sha256": plan.input_sha256,
        "report": str(options.report), "target": "simulator", "base_url": "",
        "tenant": options.tenant, "resumed": options.resume}, clock=loop.time)
    snapshot: list[bytes] = []
    said: list[Event] = []  # every event, kept for the oracle's grep for secrets
    events = Events(said.append)
    client = world.connect()
    runner = Runner(client, limits_for(options.settings, options.target), run_id,
                    options.settings.track_id_prefix,
                    clock=LoopClock(loop), rng=random.Random(f"runner|{schedule.seed}|{run}"),
                    events=events, on_sent=journal.sent, on_withdrawn=journal.withdrawn)
    if runner_patch is not None:
        runner_patch(runner)
    sending = asyncio.ensure_future(
        api.send_all(options, plan, runner, client, journal, report, tally, events))

    def die() -> None:  # everything stops here: what the OS has of the journal is what stays
        snapshot.append(options.journal.read_bytes())
        sending.cancel()

    world.on_crash = die
    world.client_stopping = lambda: runner.stopping
    world.arm()
    hard_stops: list[float] = []
    ended_at_start_up = False
    ctrl_c = _interrupt(schedule, runner, sending, hard_stops) if run == 0 else None
    try:
        await sending
    except (Crash, asyncio.CancelledError):
        if not snapshot and not hard_stops:
            raise
        ended_at_start_up = True
        # a hard stop that escapes `send_all` came while the client was still getting its
        # first token, outside the run's signal handlers: the process ends there (exit 130)
    finally:
        journal.close()
        if ctrl_c is not None:
            ctrl_c.cancel()
    text = f"{said!r}\n{runner.stop_reason}\n{runner.auth_error}"
    if ended_at_start_up and not snapshot:  # the journal has all it got; no report
        report.abort()
        return Ledger(run, crashed=True, outputs=f"{options.journal.read_bytes()!r}\n{text}")
    if snapshot:  # the process died: no report, and only what reached the OS is journaled
        report.abort()
        options.journal.write_bytes(snapshot[0])
        return Ledger(run, crashed=True, outputs=f"{snapshot[0]!r}\n{text}")
    ledger = _finished(options, plan, runner, report, run)
    ledger.outputs = "\n".join((options.report.read_text("utf-8-sig"),
                                options.journal.read_text("utf-8", "replace"), text))
    return ledger



def _interrupt(schedule: Schedule, runner: Runner, sending: asyncio.Future[None],
               hard_stops: list[float]) -> asyncio.TimerHandle | None:
    """Ctrl-C as `api._signals` handles it: stop, then after --grace stop at once (noted in
    `hard_stops`)."""
    if schedule.interrupt is None:
        return None
    at, grace = schedule.interrupt
    loop = asyncio.get_running_loop()

    def hard_stop() -> None:
        if not sending.done():
            hard_stops.append(loop.time())
            sending.cancel()

    def ctrl_c() -> None:
        if not sending.done() and not runner.stopping:
            runner.stop("interrupted (SIGINT)", StopKind.INTERRUPTED)
            loop.call_later(grace, hard_stop)

    return loop.call_later(at, ctrl_c)


def _finished(options: RunOptions, plan: Plan, runner: Runner, report: ReportWriter,
              run: int) -> Ledger:
    summary = report.finish({"run": str(run)}, plan.in_doubt_fallbacks())
    if runner.stop_kind is not None:
        summary.stop_kind = runner.stop_kind.value
        summary.stop_reason = runner.stop_reason
    with options.report.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return Ledger(run, exit_code=exit_code(summary), stop_kind=summary.stop_kind, rows=rows)
