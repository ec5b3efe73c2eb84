"""The library entry point: one call runs a whole job, file → jobs → outcomes → report.

The CLI is a thin skin over `run()`; a scheduler (Airflow, a script) calls it directly with the
same options and gets a `Summary` back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from .config import Settings, Target, tenant_identity
from .logs import get_logger
from .model import CancelJob, ExitCode, Outcome, Status, Summary
from .read.dialect import plan_note, report_dialect
from .read.loader import LoadedInput, LoadOptions, load
from .record.journal import Journal, JournalState, check_same_tenant, read_journal
from .record.paths import check_report_path, default_report_path, journal_path
from .record.writer import ReportWriter
from .send.runner import Limits, Runner, Sender, StopKind
from .send.zuora import (
    AuthenticationError,
    Credentials,
    ZuoraClient,
    open_session,
)

if TYPE_CHECKING:
    import pandas

#: Seconds between `run.progress` events when no progress display is shown.
PROGRESS_EVERY = 10.0


class RunError(Exception):
    """The run cannot start (a usage problem); nothing was sent."""


class ProgressSink(Protocol):
    """What the run tells a progress display."""

    def start(self, total: int, to_send: int) -> None: ...
    def advance(self, outcome: Outcome, runner: Runner) -> None: ...
    def stop(self) -> None: ...


@dataclass(slots=True)
class RunOptions:
    """Everything one run needs; the CLI fills it from flags and environment variables."""

    #: a file, or a pandas DataFrame (which then needs `report_path`)
    input_path: Path | pandas.DataFrame
    target: Target
    credentials: Credentials | None = None
    report_path: Path | None = None
    load: LoadOptions = field(default_factory=LoadOptions)
    settings: Settings = field(default_factory=Settings)
    dry_run: bool = False
    overwrite: bool = False
    resume: bool = False
    #: seconds in-flight requests may take after Ctrl-C / SIGTERM before the run stops at once
    grace: float = 30.0
    handle_signals: bool = True
    progress: ProgressSink | None = None
    simulator_config: object | None = None  # a SimulatorConfig for target "simulator"

    @property
    def report(self) -> Path:
        """Where the report goes."""
        if self.report_path is not None:
            return self.report_path
        if not isinstance(self.input_path, Path):
            raise RunError("a DataFrame input needs a report path: the report and its journal "
                           "are the record of what was filed")
        return default_report_path(self.input_path)

    @property
    def input_label(self) -> str:
        """The input as logs and the report name it (never a DataFrame's contents)."""
        return str(self.input_path) if isinstance(self.input_path, Path) else "<DataFrame>"

    @property
    def journal(self) -> Path:
        """The write-ahead journal beside the report."""
        return journal_path(self.report)

    @property
    def tenant(self) -> dict[str, str]:
        """The tenant this run acts on, as the journal records it."""
        client_id = self.credentials.client_id if self.credentials else ""
        return tenant_identity(self.target, self.settings, client_id)


@dataclass(slots=True)
class Plan:
    """What a run will do: the rows read, and for a resume what the journal already settled."""

    loaded: LoadedInput
    input_sha256: str
    journal: JournalState | None = None

    def jobs(self) -> Iterator[CancelJob]:
        """The cancels still to send, in input order; rows in doubt are checked first."""
        state = self.journal
        for row in self.loaded.to_send():
            if state is None:
                yield row.job
            elif not state.is_finished(row.row):
                yield replace(row.job, in_doubt=row.in_doubt or row.row in state.in_doubt,
                              doubted_before=row.row in state.doubted)

    def in_doubt_fallbacks(self) -> dict[int, Outcome]:
        """The report's word for each row in doubt that gets no outcome in this run (a hard
        stop before its worker reached it): still in doubt, never plain not_attempted."""
        doubtful = {row.row for row in self.loaded.to_send() if row.in_doubt}
        if self.journal is not None:
            doubtful |= {n for n in self.journal.in_doubt if not self.journal.is_finished(n)}
        message = ("in doubt: the run stopped before the earlier request could be checked; "
                   "--resume reads it first")
        return {n: Outcome(n, Status.FAILED, error_message=message, in_doubt=True)
                for n in doubtful}

    def settled(self) -> dict[int, Outcome]:
        """Outcomes a resume keeps from the journal."""
        return dict(self.journal.finished) if self.journal else {}

    def to_send(self) -> tuple[int, int]:
        """How many cancels `jobs()` yields, and how many of those are in doubt."""
        state = self.journal
        if state is None:
            return sum(1 for row in self.loaded.rows if row.status is None), 0
        pending = [row.row for row in self.loaded.to_send() if not state.is_finished(row.row)]
        return len(pending), sum(1 for number in pending if number in state.in_doubt)


def prepare(options: RunOptions) -> Plan:
    """Read and validate the input, check the report and journal: all done before sending.

    Raises `InputError`, `ReportError` or `RunError`; nothing is sent in any case.
    """
    source = options.input_path
    if isinstance(source, str):
        source = options.input_path = Path(source)
    if isinstance(source, Path):
        loaded = load(source, options.load)
    else:
        from .read.frames import load_frame

        loaded = load_frame(source, options.load, options.load.numbers_as_text)
    report, journal = options.report, options.journal
    if not options.dry_run or options.report_path is not None:
        note = plan_note(loaded.dialect, report)
        loaded.notes.extend([note] if note else [])
    if isinstance(source, Path) and report.resolve() == source.resolve():
        raise RunError(f"--report {report} is the input file; name another report file")
    check_report_path(report)
    if isinstance(source, Path):
        digest = _sha256(source)
    else:
        from .read.frames import frame_digest

        digest = frame_digest(source)
    if options.dry_run:
        return Plan(loaded, digest)
    if options.resume and options.overwrite:
        raise RunError("--resume and --overwrite contradict each other; pass one")
    if options.resume:
        return Plan(loaded, digest, _journal_to_resume(journal, options.input_label, digest,
                                                       options.tenant))
    existing = [str(p) for p in (report, journal) if p.exists()]
    if existing and not options.overwrite:
        raise RunError(
            f"{' and '.join(existing)} already exist: pass --resume to continue that run "
            "(finished rows are kept, rows in doubt are checked first), or --overwrite to "
            "start again and replace them, or choose another --report"
        )
    return Plan(loaded, digest)


def _journal_to_resume(journal: Path, input_path: str, digest: str,
                       tenant: dict[str, str]) -> JournalState:
    if not journal.exists():
        raise RunError(f"nothing to resume: no journal at {journal}. Was --report the same as "
                       "in the run to resume?")
    state = read_journal(journal)
    check_same_tenant(journal, state.header, tenant, "--resume")
    if state.header.get("input_sha256") not in (None, digest):
        raise RunError(
            f"{input_path} changed since the run recorded in {journal} started; resuming "
            "could send rows nobody checked. Restore the file, or start a new run with "
            "another --report"
        )
    return state


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    log = get_logger("batch_cancel")
    to_send, in_doubt = plan.to_send()
    log.info("run.started", input=options.input_label, report=str(options.report),
             target=options.target.name, base_url=options.target.base_url or "(simulator)",
             rows=len(plan.loaded.rows), to_send=to_send, resume=options.resume,
             in_doubt=in_doubt, dry_run=options.dry_run)
    if options.dry_run:
        return dry_run(options, plan.loaded)
    started = time.monotonic()
    started_at = _utc_now()
    if options.target.name != "simulator" and options.credentials is None:
        raise RunError("no credentials: set ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET")
    if options.overwrite:
        options.journal.unlink(missing_ok=True)
    report = ReportWriter(options.report, plan.loaded.columns, plan.loaded.rows,
                          report_dialect(plan.loaded.dialect))
    settled = plan.settled()
    tally = _Progress(settled=len(settled), to_send=to_send)
    for outcome in settled.values():
        report.add(outcome)
    runner: Runner | None = None
    try:
        journal = Journal(options.journal, {
            "run_id": run_id, "input": options.input_label,
            "input_sha256": plan.input_sha256, "report": str(options.report),
            "target": options.target.name, "base_url": options.target.base_url,
            "tenant": options.tenant, "resumed": options.resume, "started_at": started_at,
        })
    except BaseException:
        report.abort()
        raise
    try:
        async with _target(options) as (base_url, credentials), open_session(
                options.settings.concurrency * 2) as session:
            client = ZuoraClient(session, base_url, credentials, options.settings)
            runner = _runner(client, options, run_id, journal)
            await _send_all(options, plan, runner, client, journal, report, tally, log)
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
        log.info("run.finished", report=str(options.report), elapsed=round(summary.elapsed, 3),
                 rate=round(summary.rate, 1), stop=summary.stop_kind or None,
                 **{f"count_{s.value}": n for s, n in summary.counts.items()})
    return summary


def _runner(client: ZuoraClient, options: RunOptions, run_id: str, journal: Journal) -> Runner:
    return Runner(client, runner_limits(options), run_id, options.settings.track_id_prefix,
                  on_sent=journal.sent, on_withdrawn=journal.withdrawn)


def runner_limits(options: RunOptions) -> Limits:
    """The runner's share of a run's settings (the target's default rate if none is set)."""
    settings = options.settings
    return Limits(concurrency=settings.concurrency, rate=settings.rate,
                  default_rate=options.target.default_rate if settings.rate is None else None,
                  max_attempts=settings.max_attempts, outage_window=settings.outage_window,
                  tenant_share=settings.tenant_share,
                  pause_on_concurrency_429=settings.concurrency_429 == "pause")


class Client(Sender, Protocol):
    """What a run needs of the Zuora client: the runner's `Sender`, and a token up front."""

    async def authenticate(self) -> None: ...


@dataclass(slots=True)
class _Progress:
    """Rows finished so far (resumed ones included) and rows sent, for events and the summary."""

    settled: int
    to_send: int
    done: int = 0
    sent: int = 0


async def _send_all(options: RunOptions, plan: Plan, runner: Runner, client: Client,
                    journal: Journal, report: ReportWriter, tally: _Progress,
                    log: structlog.typing.FilteringBoundLogger) -> None:
    """Authenticate, then let the runner send every row, journalling each outcome.

    If authentication fails the runner still takes every row, stopped: each gets its outcome
    (not_attempted, or failed and still in doubt) in the journal and the report.
    """
    progress = options.progress
    try:
        await client.authenticate()
    except AuthenticationError as exc:
        runner.stop(f"authentication failed: {exc}", StopKind.AUTH)
        log.error("run.auth_failed", error=str(exc))
        progress = None

    def on_outcome(outcome: Outcome) -> None:
        journal.record(outcome)
        report.add(outcome)
        tally.done += 1
        tally.sent += outcome.attempts > 0
        if progress is not None:
            progress.advance(outcome, runner)

    if progress is not None:
        progress.start(tally.settled + tally.to_send, tally.to_send)
    ticker = asyncio.create_task(_progress_events(runner, tally, log))
    try:
        with _signals(runner, options.grace, enabled=options.handle_signals):
            await runner.run(plan.jobs(), on_outcome, total=tally.to_send)
    except asyncio.CancelledError:
        runner.stop("interrupted: stopped at once", StopKind.INTERRUPTED)
    finally:
        ticker.cancel()
        if progress is not None:
            progress.stop()
    if runner.auth_error is not None:
        log.error("run.auth_failed", error=str(runner.auth_error))


async def _progress_events(runner: Runner, tally: _Progress,
                           log: structlog.typing.FilteringBoundLogger) -> None:
    """A `run.progress` event every PROGRESS_EVERY seconds, for logs without a display."""
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        log.info("run.progress", done=tally.settled + tally.done, to_send=tally.to_send,
                 in_flight=runner.window.in_flight, window=runner.window.size,
                 pace=None if runner.pace.rate is None else round(runner.pace.rate, 2),
                 pace_source=runner.pace.source)


@contextlib.contextmanager
def _signals(runner: Runner, grace: float, enabled: bool) -> Iterator[None]:
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
        get_logger("batch_cancel").warning(
            "run.interrupting", grace=grace,
            hint=f"in-flight requests get {grace:g} s; press Ctrl-C again to stop at once")
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


@contextlib.asynccontextmanager
async def _target(options: RunOptions) -> AsyncIterator[tuple[str, Credentials]]:
    """The base URL and credentials to use; for --simulate, a simulator started on loopback."""
    if options.target.name != "simulator":
        assert options.credentials is not None  # checked before the journal was opened
        yield options.target.base_url, options.credentials
        return
    from .sim.server import Simulator, SimulatorConfig  # never imported on a real run

    config = options.simulator_config
    simulator = Simulator(config if isinstance(config, SimulatorConfig) else None)
    base_url = await simulator.start("127.0.0.1", 0)
    try:
        yield base_url, Credentials(simulator.config.client_id, simulator.config.client_secret)
    finally:
        await simulator.stop()


def dry_run(options: RunOptions, loaded: LoadedInput) -> Summary:
    """A dry run is the plan, as `preflight` without `--check-invoices` makes it (one code
    path): with `--report` the plan report is written, every row with what would happen.

    Complete (exit 0) when no row is invalid, the rule `preflight` follows too.
    """
    from .plan import plan_summary, unchecked  # preflight reads Zuora: not on every run

    settings = options.settings
    rate = settings.rate if settings.rate is not None else options.target.default_rate
    unchecked(loaded, settings, rate, options.report_path)
    summary = plan_summary(loaded)
    summary.report_path = str(options.report_path or "")
    return summary


#: Exit codes for runs that stopped early, by `StopKind`.
STOP_EXIT_CODES = {StopKind.INTERRUPTED: ExitCode.INTERRUPTED, StopKind.AUTH: ExitCode.AUTH,
                   StopKind.OUTAGE: ExitCode.STOPPED, StopKind.QUOTA: ExitCode.STOPPED}


def exit_code(summary: Summary) -> int:
    """The process exit code a summary stands for (see the README's table)."""
    if summary.report_error:
        return ExitCode.REPORT_UNWRITTEN
    if summary.stop_kind:
        return STOP_EXIT_CODES[StopKind(summary.stop_kind)]
    return ExitCode.OK if summary.complete else ExitCode.ROWS_FAILED

