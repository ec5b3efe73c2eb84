"""The run: open the journal and the report, start the pool, answer signals, and keep the
report written whatever happens.

The CLI is a thin skin over `run()`; a scheduler (Airflow, a script) calls it directly with the
same options and gets a `Summary` back. What to send is decided before, in `plan.prepare`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog

from .config import open_target
from .events import (
    Event,
    Events,
    PoolLoad,
    RunAuthFailed,
    RunFinished,
    RunInterrupting,
    RunProgress,
    RunStarted,
)
from .logs import LogSubscriber, get_logger
from .model import Outcome, StopKind, Summary
from .plan import Plan, RunError, RunOptions, dry_run, prepare
from .read.dialect import report_dialect
from .record.journal import Journal
from .record.writer import ReportWriter
from .send.limits import limits_for
from .send.pool import Runner
from .send.row import Sender
from .send.zuora import AuthenticationError, ZuoraClient, open_session

#: Seconds between `run.progress` events when no progress display is shown.
PROGRESS_EVERY = 10.0
#: While nothing moves (a long pause, a quota spread over a day) the gap doubles up to this.
PROGRESS_QUIET_MAX = 300.0


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run(options: RunOptions, plan: Plan | None = None) -> Summary:
    """Run a whole job synchronously (see `run_async`)."""
    return asyncio.run(run_async(options, plan))


async def run_async(options: RunOptions, plan: Plan | None = None) -> Summary:
    """Send every row of the input and write the report; return what happened.

    Bad input raises before any request. Once sending starts, the report is written whatever
    happens; a run that stops early (`summary.stop_kind`) leaves unsent rows `not_attempted`
    and rows in doubt marked so, for `--resume`.
    """
    plan = plan or prepare(options)
    run_id = secrets.token_hex(6)
    # bound for this run only: a long-lived worker's later logs must not carry it
    with structlog.contextvars.bound_contextvars(run_id=run_id):
        return await _run(options, plan, run_id)


async def _run(options: RunOptions, plan: Plan, run_id: str) -> Summary:
    events = Events(LogSubscriber(get_logger("batch_cancel")))
    to_send, in_doubt = plan.to_send()
    events.emit(RunStarted(options.input_label, str(options.report), options.target.name,
                           options.target.base_url or "(simulator)", len(plan.loaded.rows),
                           to_send, options.resume, in_doubt, options.dry_run))
    if options.dry_run:
        return dry_run(options, plan.loaded)
    started = time.monotonic()
    started_at = _utc_now()
    if options.target.name != "simulator" and options.credentials is None:
        raise RunError("no credentials: set ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET")
    if options.overwrite:
        options.journal.unlink(missing_ok=True)
    report = ReportWriter(options.report, plan.loaded.columns, plan.loaded.rows,
                          report_dialect(plan.loaded.dialect), events)
    settled = plan.settled()
    tally = Progress(settled=len(settled), to_send=to_send)
    for outcome in settled.values():
        report.add(outcome)
    journal = _open_journal(options, plan, run_id, started_at, report)
    runner: Runner | None = None
    try:
        async with (open_target(options.target, options.credentials,
                                options.simulator_config) as (base_url, credentials),
                    open_session(options.settings.concurrency * 2) as session):
            client = ZuoraClient(session, base_url, credentials, options.settings)
            runner = _runner(client, options, run_id, journal, events)
            await send_all(options, plan, runner, client, journal, report, tally, events)
    finally:
        journal.close()
        context = {"input": options.input_label, "target": options.target.name,
                   "base_url": options.target.base_url or "(built-in simulator)",
                   "run_id": run_id, "started_at": started_at, "finished_at": _utc_now()}
        summary = report.finish(context, plan.in_doubt_fallbacks())
        summary.elapsed = time.monotonic() - started
        summary.sent_rows = tally.sent
        if runner is not None and runner.stop_kind is not None:
            summary.stop_kind = runner.stop_kind.value
            summary.stop_reason = runner.stop_reason
        events.emit(RunFinished(str(options.report), round(summary.elapsed, 3),
                                round(summary.rate, 1), summary.stop_kind or None,
                                {s.value: n for s, n in summary.counts.items()}))
    return summary


def _open_journal(options: RunOptions, plan: Plan, run_id: str, started_at: str,
                  report: ReportWriter) -> Journal:
    """The run's write-ahead journal; if it cannot be opened, the report is dropped too
    (nothing was sent, and a report without its journal could not be resumed)."""
    try:
        return Journal(options.journal, {
            "run_id": run_id, "input": options.input_label,
            "input_sha256": plan.input_sha256, "report": str(options.report),
            "target": options.target.name, "base_url": options.target.base_url,
            "tenant": options.tenant, "resumed": options.resume, "started_at": started_at,
        })
    except BaseException:
        report.abort()
        raise


def _runner(client: ZuoraClient, options: RunOptions, run_id: str, journal: Journal,
            events: Events) -> Runner:
    return Runner(client, limits_for(options.settings, options.target), run_id,
                  options.settings.track_id_prefix,
                  events=events, on_sent=journal.sent, on_withdrawn=journal.withdrawn)


class Client(Sender, Protocol):
    """What a run needs of the Zuora client: the runner's `Sender`, and a token up front."""

    async def authenticate(self) -> None: ...


@dataclass(slots=True)
class Progress:
    """Rows finished so far (resumed ones included) and rows sent, for events and the summary."""

    settled: int
    to_send: int
    done: int = 0
    sent: int = 0


async def send_all(options: RunOptions, plan: Plan, runner: Runner, client: Client,
                    journal: Journal, report: ReportWriter, tally: Progress,
                    events: Events) -> None:
    """Authenticate, then let the runner send every row, journalling each outcome.

    If authentication fails the runner still takes every row, stopped: each gets its outcome
    (not_attempted, or failed and still in doubt) in the journal and the report.
    """
    progress = options.progress
    try:
        await client.authenticate()
    except AuthenticationError as exc:
        runner.stop(f"authentication failed: {exc}", StopKind.AUTH)
        events.emit(RunAuthFailed(str(exc)))
        progress = None

    def on_outcome(outcome: Outcome) -> None:
        journal.record(outcome)
        report.add(outcome)
        tally.done += 1
        tally.sent += outcome.attempts > 0

    if progress is not None:
        progress.start(tally.settled + tally.to_send, tally.to_send)
        events.subscribe(progress.on_event)
    ticker = progress_events(events, tally)
    try:
        with _signals(runner, events, options.grace, enabled=options.handle_signals):
            await runner.run(plan.jobs(), on_outcome, total=tally.to_send)
    except asyncio.CancelledError:
        runner.stop("interrupted: stopped at once", StopKind.INTERRUPTED)
    finally:
        ticker.cancel()
        if progress is not None:
            progress.stop()
    if runner.auth_error is not None:
        events.emit(RunAuthFailed(str(runner.auth_error)))


def progress_events(events: Events, tally: Progress) -> asyncio.Task[None]:
    """A `run.progress` event every PROGRESS_EVERY seconds, for logs without a display: the
    pool's load as its last `pool.load` event told it (subscribed before the pool starts).
    While nothing changes the gap doubles, up to PROGRESS_QUIET_MAX: a heartbeat, not a
    line every 10 s through an hour's pause."""
    last: dict[str, PoolLoad] = {}

    def note(event: Event) -> None:
        if isinstance(event, PoolLoad):
            last["load"] = event

    async def tick() -> None:
        gap, said = PROGRESS_EVERY, None
        while True:
            await asyncio.sleep(gap)
            if (load := last.get("load")) is None:
                continue
            pace = None if load.pace is None else round(load.pace, 2)
            progress = RunProgress(tally.settled + tally.done, tally.to_send, load.in_flight,
                                   load.window, pace, load.pace_source)
            gap = min(gap * 2, PROGRESS_QUIET_MAX) if progress == said else PROGRESS_EVERY
            said = progress
            events.emit(progress)

    events.subscribe(note)
    return asyncio.create_task(tick())


@contextlib.contextmanager
def _signals(runner: Runner, events: Events, grace: float, enabled: bool) -> Iterator[None]:
    """Ctrl-C / SIGTERM: start no new row, let in-flight ones finish for up to `grace`
    seconds, then stop at once; a second signal stops at once."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    installed: list[signal.Signals] = []
    deadline: list[asyncio.TimerHandle] = []

    def handle(signum: signal.Signals) -> None:
        if task is None:
            return
        if runner.stopping:
            task.cancel()
            return
        runner.stop(f"interrupted ({signum.name})", StopKind.INTERRUPTED)
        events.emit(RunInterrupting(
            grace, f"in-flight requests get {grace:g} s; press Ctrl-C again to stop at once"))
        deadline.append(loop.call_later(grace, task.cancel))

    if enabled:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, handle, signum)
                installed.append(signum)
    try:
        yield
    finally:
        for handle_ in deadline:
            handle_.cancel()
        for signum in installed:
            loop.remove_signal_handler(signum)
