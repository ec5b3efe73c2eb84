"""Seeded schedules through the real run, and the oracle that checks every promise after each.

For one seed: draw a `Schedule`, write its input file, then run the real pieces of a job (the
plan and resume logic of `api`, the `Journal`, the `ReportWriter`, the `Runner` with its pool,
pacer, window, pause gate, breaker, retries and in-doubt reads) against the in-memory `World`
on a `VirtualLoop`. If the schedule kills the process, only the journal lines that had reached
the OS survive, and the same command runs again with `--resume` on the same world; a run that
stopped for an outage or the daily quota is resumed later the same way. Then the oracle reads
the report and the world's log and names every broken promise.

    python -m batch_cancel.sim.oracle --seed 1234          # replay one seed, verbosely
    python -m batch_cancel.sim.oracle --seeds 100000 --jobs 2 --summary sim-summary.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import api
from ..api import runner_limits
from ..config import Target
from ..events import Events
from ..model import DONE, STOP_EXIT_CODES, Status, StopKind, exit_code
from ..plan import Plan, RunOptions, prepare
from ..record.journal import Journal
from ..record.writer import ReportWriter
from ..send.clock import Clock
from ..send.pool import Runner
from .world import DAY, Crash, Schedule, Stuck, VirtualLoop, World

#: How a failing seed is replayed (printed with every failure).
REPLAY = ("pytest tests/test_simulation.py --sim-seed {seed}  "
          "(or: python -m batch_cancel.sim.oracle --seed {seed})")
#: Virtual seconds between a dead process and its resume.
RESTART = 5.0
#: Virtual seconds the world runs on after the last run (late landings, settles).
AFTERMATH = 600.0
#: Runs of one chain at most (first run, resumes after crashes and after stops).
MAX_RUNS = 6


class _LoopClock(Clock):
    """The runner's clock on the loop's (virtual) time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def now(self) -> float:
        return self._loop.time()


@dataclass(slots=True)
class Ledger:
    """What one run (one process) of a chain left behind."""

    run: int
    crashed: bool = False
    exit_code: int | None = None
    stop_kind: str = ""
    rows: list[dict[str, str]] = field(default_factory=list)


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


def check_seed(seed: int, runner_patch: Callable[[Runner], None] | None = None) -> Checked:
    """Run seed's schedule in a fresh folder and judge it."""
    schedule = Schedule.draw(seed)
    with tempfile.TemporaryDirectory(prefix="bc-sim-", dir=_fast_tmp()) as folder:
        return run_schedule(schedule, Path(folder), runner_patch)


def run_schedule(schedule: Schedule, folder: Path,
                 runner_patch: Callable[[Runner], None] | None = None) -> Checked:
    """Run a schedule's chain of runs in `folder`, then the oracle."""
    input_path = folder / "input.csv"
    _write_input(schedule, input_path)
    loop = VirtualLoop()
    world = World(schedule, loop)
    ledgers: list[Ledger] = []
    violations: list[str] = []
    try:
        loop.run_until_complete(_chain(schedule, world, input_path, ledgers, runner_patch))
        loop.run_until_complete(asyncio.sleep(AFTERMATH))
    except Stuck as exc:
        violations.append(f"the run hangs: {exc}")
    finally:
        _close(loop)
    known: list[str] = []
    if not violations:
        found = judge(schedule, world, ledgers)
        violations = [v for v in found if not is_known(v)]
        known = [v for v in found if is_known(v)]
    final = ledgers[-1] if ledgers else Ledger(-1)
    statuses: dict[str, int] = {}
    for row in final.rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    return Checked(schedule.seed, violations, runs=len(ledgers),
                   crashes=sum(ledger.crashed for ledger in ledgers),
                   requests=len(world.requests), virtual_seconds=loop.time(),
                   exit_code=final.exit_code, statuses=statuses,
                   late_landings=sum(a.late for a in world.accepted), known=known)


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


def _write_input(schedule: Schedule, path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Invoice Number", "Reason", "Document Reference ID"])
        writer.writerows(zip(schedule.keys, schedule.reasons, schedule.references, strict=True))


# --------------------------------------------------------------------- the chain of runs


async def _chain(schedule: Schedule, world: World, input_path: Path, ledgers: list[Ledger],
                 runner_patch: Callable[[Runner], None] | None) -> None:
    """The first run, then `--resume` after every crash, and later after a stop."""
    for run in range(MAX_RUNS):
        if run:
            world.next_run()
        ledger = await _one_run(schedule, world, input_path, run, runner_patch)
        ledgers.append(ledger)
        if ledger.crashed:
            await asyncio.sleep(RESTART)
        elif ledger.stop_kind == StopKind.QUOTA:
            now = asyncio.get_running_loop().time()
            await asyncio.sleep(DAY - now % DAY + 1)  # the quota is back tomorrow
        elif ledger.stop_kind == StopKind.OUTAGE:
            await asyncio.sleep(5000.0)
        elif ledger.stop_kind == StopKind.INTERRUPTED:
            await asyncio.sleep(RESTART)
        else:
            return


async def _one_run(schedule: Schedule, world: World, input_path: Path, run: int,
                   runner_patch: Callable[[Runner], None] | None) -> Ledger:
    """One process: the plan, the journal, the report and the runner, as `api.run` has them."""
    loop = asyncio.get_running_loop()
    options = RunOptions(input_path=input_path, target=Target("", "simulator"),
                         report_path=input_path.with_name("report.csv"),
                         settings=schedule.settings, resume=run > 0, handle_signals=False)
    plan = prepare(options)
    run_id = f"s{schedule.seed}r{run}"
    report = ReportWriter(options.report, plan.loaded.columns, plan.loaded.rows)
    settled = plan.settled()
    to_send, _ = plan.to_send()
    tally = api._Progress(settled=len(settled), to_send=to_send)
    for outcome in settled.values():
        report.add(outcome)
    journal = Journal(options.journal, {
        "run_id": run_id, "input": str(input_path), "input_sha256": plan.input_sha256,
        "report": str(options.report), "target": "simulator", "base_url": "",
        "tenant": options.tenant, "resumed": options.resume}, clock=loop.time)
    snapshot: list[bytes] = []
    events = Events()  # nobody listens: the oracle judges by the journal and the report
    runner = Runner(world, runner_limits(options), run_id, options.settings.track_id_prefix,
                    clock=_LoopClock(loop), rng=random.Random(f"runner|{schedule.seed}|{run}"),
                    events=events, on_sent=journal.sent, on_withdrawn=journal.withdrawn)
    if runner_patch is not None:
        runner_patch(runner)
    sending = asyncio.ensure_future(
        api._send_all(options, plan, runner, world, journal, report, tally, events))

    def die() -> None:  # everything stops here: what the OS has of the journal is what stays
        snapshot.append(options.journal.read_bytes())
        sending.cancel()

    world.on_crash = die
    world.client_stopping = lambda: runner.stopping
    world.arm()
    ctrl_c = _interrupt(schedule, run, runner, sending) if run == 0 else None
    try:
        await sending
    except (Crash, asyncio.CancelledError):
        if not snapshot:
            raise
    finally:
        journal.close()
        if ctrl_c is not None:
            ctrl_c.cancel()
    if snapshot:  # the process died: no report, and only what reached the OS is journaled
        report.abort()
        options.journal.write_bytes(snapshot[0])
        return Ledger(run, crashed=True)
    return _finished(options, plan, runner, report, run)


def _interrupt(schedule: Schedule, run: int, runner: Runner,
               sending: asyncio.Future[None]) -> asyncio.TimerHandle | None:
    """Ctrl-C as `api._signals` handles it: stop, then after --grace stop at once."""
    if schedule.interrupt is None:
        return None
    at, grace = schedule.interrupt
    loop = asyncio.get_running_loop()

    def hard_stop() -> None:
        if not sending.done():
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


# --------------------------------------------------------------------- the oracle


def judge(schedule: Schedule, world: World, ledgers: list[Ledger]) -> list[str]:
    """Every promise the report and the requests must keep; the broken ones, as sentences."""
    problems: list[str] = []
    finished = [ledger for ledger in ledgers if not ledger.crashed]
    if not finished:
        return ["no run of the chain finished"]
    for ledger in finished:
        problems += _rows_once(schedule, ledger)
        problems += _exit_code_matches(ledger)
    problems += _truthful(world, finished[-1], {x.run for x in ledgers if x.crashed})
    problems += _no_cancel_after_accept_without_read(world)
    problems += _no_resend_in_doubt_without_read(world)
    for run in range(len(ledgers)):
        problems += _limits_kept(schedule, world, run)
    problems += _nothing_sent_after_stop(world)
    return problems


#: Broken promises the search found that are not fixed yet: counted and printed, but a seed
#: that breaks only these passes `check_seed` (a strict xfail test keeps each one in view).
#: Empty now: both found so far (a request started after the stop, seed 535; a row marked in
#: doubt though its request never left, seed 88) are fixed and count as violations again.
NEVER_LEFT = "marked in doubt though no request of ours for it can have been applied"
KNOWN: tuple[str, ...] = ()


def is_known(violation: str) -> bool:
    """Whether a violation is one of KNOWN."""
    return any(known in violation for known in KNOWN)


def _nothing_sent_after_stop(world: World) -> Iterator[str]:
    """Once a run stops (Ctrl-C, outage, quota, auth), no request of it starts: a worker that
    was waiting for a place in the window when the stop came must not send either."""
    late = [r for r in world.requests if r.after_stop]
    if late:
        first = late[0]
        yield (f"{len(late)} requests started after the run stopped (first: run {first.run} "
               f"{first.kind} {first.key} at {first.arrived:.3f} s)")


def _rows_once(schedule: Schedule, ledger: Ledger) -> Iterator[str]:
    numbers = [row["row"] for row in ledger.rows]
    expected = [str(n + 2) for n in range(schedule.rows)]
    if numbers != expected:
        yield (f"run {ledger.run}: the report's rows are {numbers[:10]}..., not every input "
               f"row once in order ({len(numbers)} of {len(expected)})")


def _exit_code_matches(ledger: Ledger) -> Iterator[str]:
    statuses = [row["status"] for row in ledger.rows]
    if ledger.stop_kind:
        expected = int(STOP_EXIT_CODES[ledger.stop_kind])
    else:
        if Status.NOT_ATTEMPTED in statuses:
            yield f"run {ledger.run}: rows not_attempted although the run did not stop"
        by_row = {row["row"]: row["status"] for row in ledger.rows}
        done = all(
            status in DONE or (status == Status.DUPLICATE and _owner_done(row, by_row))
            for row, status in zip(ledger.rows, statuses, strict=True))
        expected = 0 if done else 1
    if ledger.exit_code != expected:
        yield (f"run {ledger.run}: exit code {ledger.exit_code}, but the report "
               f"({_count(statuses)}, stop {ledger.stop_kind or 'none'}) means {expected}")


def _owner_done(row: dict[str, str], by_row: dict[str, str]) -> bool:
    words = row["error_message"].split()
    owner = words[3] if len(words) > 3 else ""
    return by_row.get(owner) in DONE


def _truthful(world: World, ledger: Ledger, crashed: set[int]) -> Iterator[str]:
    """Each row's status against what the tenant really did over the whole chain."""
    accepted: dict[str, list[Any]] = {}
    for acceptance in world.accepted:
        accepted.setdefault(acceptance.key, []).append(acceptance)
    doubted = {r.key for r in world.requests if r.kind == "cancel" and (
        r.answer is None or r.answer.in_doubt or r.run in crashed)}
    for row in ledger.rows:
        key, status, doubt = row["invoice_key"], row["status"], row["in_doubt"] == "yes"
        ours = accepted.get(key, [])
        where = f"row {row['row']} ({key or 'no key'}) {status}"
        if status == Status.INVALID and any(r.key == key for r in world.requests):
            yield f"{where}, but a request was sent for it"
        if status == Status.SUCCEEDED and not ours and not (
                "CANCELLED" in key and (key in doubted or (crashed and "verified after resume"
                                        in row["error_message"]))):
            # allowed: cancelled before the run, then a request of ours went unanswered (or its
            # answer died with the process, or the process died between journaling it and
            # sending it): the read that follows cannot tell whose cancel it sees
            if "CANCELLED" in key:  # and no request of ours for it can have been applied
                yield (f"{where}, but no cancel of ours was accepted: it was {NEVER_LEFT} "
                       "and later read as cancelled")
            else:
                yield f"{where}, but no cancel of ours was ever accepted for it"
        elif status == Status.SKIPPED and (ours or "CANCELLED" not in key):
            yield (f"{where}, but it was {'cancelled by this run' if ours else 'not cancelled'}"
                   " before")
        elif status in (Status.FAILED, Status.NOT_ATTEMPTED) and not doubt:
            # a refusal by the tax authority makes a failure true only when the row says so
            refused = "CancelFailed" in row["error_message"]
            landed = [a for a in ours if not (a.will_fail and refused) and not a.late]
            if landed:
                yield (f"{where} and not in doubt, but our cancel was accepted at "
                       f"{landed[0].at:.3f} s (run {landed[0].run})")


def _no_cancel_after_accept_without_read(world: World) -> Iterator[str]:
    """The double-cancel risk: once a cancel of ours was accepted, no other cancel request
    for that invoice unless a read of it came between the two requests."""
    accepted: dict[str, list[Any]] = {}
    for acceptance in world.accepted:
        accepted.setdefault(acceptance.key, []).append(acceptance)
    reads: dict[str, list[float]] = {}
    for request in world.requests:  # in arrival order
        if request.kind == "read":
            reads.setdefault(request.key, []).append(request.arrived)
            continue
        for acceptance in accepted.get(request.key, ()):
            if acceptance.at < request.arrived and not any(
                    acceptance.sent_at < read < request.arrived
                    for read in reads.get(request.key, ())):
                yield (f"cancel of {request.key} sent at {request.arrived:.3f} s (run "
                       f"{request.run}) after ours sent at {acceptance.sent_at:.3f} s was "
                       f"accepted at {acceptance.at:.3f} s, with no read between")
                break


def _no_resend_in_doubt_without_read(world: World) -> Iterator[str]:
    """A cancel whose answer left it in doubt (or that got none: timeout, dropped, lost with
    the process) is never followed by another cancel of that invoice before a read."""
    doubt: dict[str, float] = {}
    events: list[tuple[float, int, Any]] = []
    for n, request in enumerate(world.requests):
        events.append((request.arrived, n, request))
        if request.kind == "cancel" and (request.answer is None or request.answer.in_doubt):
            events.append((request.answered or request.arrived, n, None))
    for at, n, request in sorted(events, key=lambda e: (e[0], e[1], e[2] is None)):
        original = world.requests[n]
        if request is None:  # the in-doubt answer (or its absence) reaches the client
            doubt[original.key] = at
        elif request.kind == "read":
            doubt.pop(request.key, None)
        elif request.key in doubt:
            yield (f"cancel of {request.key} resent at {request.arrived:.3f} s (run "
                   f"{request.run}) after an in-doubt answer at {doubt[request.key]:.3f} s, "
                   "with no read between")
            doubt.pop(request.key)


def _limits_kept(schedule: Schedule, world: World, run: int) -> Iterator[str]:
    """No request during a pool-wide pause; never more in flight than the settings allow."""
    settings = schedule.settings
    mine = [r for r in world.requests if r.run == run]
    advertised: float | None = None
    ceiling = max(1, math.floor(settings.tenant_share * schedule.concurrency_limit))
    for request in mine:
        if request.ours > settings.concurrency:
            yield (f"run {run}: {request.ours} requests in flight at {request.arrived:.3f} s, "
                   f"past --concurrency {settings.concurrency}")
        if advertised is not None and request.arrived > advertised and request.ours > ceiling:
            yield (f"run {run}: {request.ours} requests in flight at {request.arrived:.3f} s, "
                   f"past --tenant-share of the advertised limit ({ceiling})")
        answer = request.answer
        if answer is not None and answer.concurrency_limit is not None and advertised is None:
            advertised = request.answered
    pause_all = settings.concurrency_429 == "pause"
    for request in mine:
        answer = request.answer
        if answer is None or request.answered is None or not answer.rate_limited:
            continue
        if answer.concurrency_limited and not pause_all:
            continue  # the window shrinks instead (documented)
        if answer.quota_window is not None and answer.quota_window >= DAY:
            continue  # the daily quota is gone: the run stops instead of pausing
        until = request.answered + (answer.retry_after if answer.retry_after is not None
                                    else 5.0)
        early = [r for r in mine
                 if request.answered < r.arrived < until - 1e-9 and not r.after_stop]
        if early:
            yield (f"run {run}: {len(early)} requests started during the pause from "
                   f"{request.answered:.3f} s to {until:.3f} s after a 429 "
                   f"(first: {early[0].kind} {early[0].key} at {early[0].arrived:.3f} s)")


def _count(statuses: Iterable[str]) -> str:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def _fast_tmp() -> str | None:
    """A RAM-backed folder when there is one: journal fsyncs then cost nothing."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


# --------------------------------------------------------------------- shrinking

#: Schedules tried at most while shrinking one failure.
SHRINK_TRIES = 300


def shrink(schedule: Schedule, runner_patch: Callable[[Runner], None] | None = None
           ) -> tuple[Schedule, Checked]:
    """A smaller schedule that still breaks a promise: fewer rows, faults, outages, crashes
    and limits, each cut kept only if the run still fails (greedy, so deterministic)."""
    best = _check(schedule, runner_patch)
    tries = 0
    improved = True
    while improved and tries < SHRINK_TRIES:
        improved = False
        for candidate in _smaller(schedule):
            tries += 1
            result = _check(candidate, runner_patch)
            if not result.ok:
                schedule, best, improved = candidate, result, True
                break
            if tries >= SHRINK_TRIES:
                break
    return schedule, best


def _check(schedule: Schedule, runner_patch: Callable[[Runner], None] | None) -> Checked:
    with tempfile.TemporaryDirectory(prefix="bc-sim-", dir=_fast_tmp()) as folder:
        return run_schedule(schedule, Path(folder), runner_patch)


def _smaller(s: Schedule) -> Iterator[Schedule]:
    """Schedules one cut smaller than `s`, the biggest cuts first."""
    n = s.rows
    for keep in dict.fromkeys((n // 2, n - 1)):
        if 0 < keep < n:
            yield replace(s, keys=s.keys[:keep], reasons=s.reasons[:keep],
                          references=s.references[:keep])
    for i in range(len(s.faults)):
        yield replace(s, faults=s.faults[:i] + s.faults[i + 1:])
    for i in range(len(s.outages)):
        yield replace(s, outages=s.outages[:i] + s.outages[i + 1:])
    if s.crashes:
        yield replace(s, crashes=s.crashes[:-1])
    if s.storm:
        yield replace(s, storm=0.0)
    if s.read_faults:
        yield replace(s, read_faults=0.0)
    if s.rate_limit is not None:
        yield replace(s, rate_limit=None)
    if s.daily_quota is not None:
        yield replace(s, daily_quota=None)
    if s.others_peak:
        yield replace(s, others_peak=0)
    if s.cancel_failed_rate:
        yield replace(s, cancel_failed_rate=0.0)
    if s.jitter:
        yield replace(s, jitter=0.0)


# --------------------------------------------------------------------- many seeds


def check_many(seeds: Iterable[int], jobs: int = 1) -> Iterator[Checked]:
    """Check seeds, in worker processes when jobs > 1 (results in completion order)."""
    if jobs <= 1:
        yield from map(check_seed, seeds)
        return
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap_unordered(check_seed, seeds, chunksize=16)


def summarise(results: list[Checked], seconds: float) -> dict[str, object]:
    """The numbers a nightly search reports."""
    statuses: dict[str, int] = {}
    for result in results:
        for status, n in result.statuses.items():
            statuses[status] = statuses.get(status, 0) + n
    failed = [r for r in results if not r.ok]
    return {
        "schedules": len(results),
        "failed": len(failed),
        "failed_seeds": [r.seed for r in failed][:1000],
        "first_failures": [r.explain() for r in failed[:10]],
        "seconds": round(seconds, 1),
        "schedules_per_second": round(len(results) / seconds, 1) if seconds else None,
        "with_crash_and_resume": sum(r.crashes > 0 for r in results),
        "crashes": sum(r.crashes for r in results),
        "runs": sum(r.runs for r in results),
        "requests": sum(r.requests for r in results),
        "virtual_hours": round(sum(r.virtual_seconds for r in results) / 3600, 1),
        "late_landings": sum(r.late_landings for r in results),
        "known_findings": {k: sum(any(k in v for v in r.known) for r in results) for k in KNOWN},
        "row_statuses": statuses,
        "exit_codes": _tally(str(r.exit_code) for r in results),
    }


def _tally(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    """`python -m batch_cancel.sim.oracle`: replay one seed, or search many and summarise."""
    parser = argparse.ArgumentParser(prog="python -m batch_cancel.sim.oracle",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, help="replay this seed and explain it")
    parser.add_argument("--shrink", action="store_true",
                        help="with --seed: also print the smallest failing schedule found")
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds to search")
    parser.add_argument("--first", type=int, default=0, help="the first seed to search")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--summary", type=Path, help="write the summary as JSON here")
    args = parser.parse_args(argv)
    if args.seed is not None:
        result = check_seed(args.seed)
        print(result.explain())
        print(f"  {result.runs} runs, {result.crashes} crashes, {result.requests} requests, "
              f"{result.virtual_seconds:.1f} virtual s, exit {result.exit_code}, "
              f"{result.statuses}")
        print("  PASS" if result.ok else "  FAIL")
        if args.shrink and not result.ok:
            small, checked = shrink(Schedule.draw(args.seed))
            print(f"shrunk (replay: --seed {args.seed} --shrink):\n{checked.explain(small)}")
        return 0 if result.ok else 1
    started = time.monotonic()
    results: list[Checked] = []
    for result in check_many(range(args.first, args.first + args.seeds), args.jobs):
        results.append(result)
        if not result.ok:
            print(result.explain(), file=sys.stderr, flush=True)
    summary = summarise(results, time.monotonic() - started)
    text = json.dumps(summary, indent=2)
    if args.summary is not None:
        args.summary.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0 if not summary["failed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
