"""The library entry point: one call runs a whole job, file → jobs → outcomes → report.

The CLI is a thin skin over `run()`; a scheduler (Airflow, a script) calls it directly with the
same options and gets a `Summary` back.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog

from .config import Settings, Target
from .loader import LoadedInput, LoadOptions, load
from .model import Outcome, Status, Summary
from .report import Journal, check_report_path, default_report_path, journal_path, write_report
from .runner import Limits, Runner
from .zuora import (
    AuthenticationError,
    Credentials,
    TokenUnavailable,
    ZuoraClient,
    open_session,
)

#: Tries of the first token request when the token endpoint fails in a way that may pass.
AUTH_TRIES = 3
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

    input_path: Path
    target: Target
    credentials: Credentials | None = None
    report_path: Path | None = None
    load: LoadOptions = field(default_factory=LoadOptions)
    settings: Settings = field(default_factory=Settings)
    dry_run: bool = False
    overwrite: bool = False
    handle_signals: bool = True
    progress: ProgressSink | None = None
    simulator_config: object | None = None  # a SimulatorConfig for target "simulator"

    @property
    def report(self) -> Path:
        """Where the report goes."""
        return self.report_path or default_report_path(self.input_path)


def prepare(options: RunOptions) -> LoadedInput:
    """Read and validate the input and check the report path: everything done before sending.

    Raises `InputError`, `ReportError` or `RunError`; nothing is sent in any case.
    """
    loaded = load(options.input_path, options.load)
    report = options.report
    if report.resolve() == options.input_path.resolve():
        raise RunError(f"--report {report} is the input file; name another report file")
    check_report_path(report)
    journal = journal_path(report)
    if journal.exists() and not options.overwrite and not options.dry_run:
        raise RunError(
            f"{journal} exists: an earlier run to this report did not finish, and its journal "
            "records which cancels were sent. Keep it and choose another --report, or pass "
            "--overwrite to discard it"
        )
    return loaded


def run(options: RunOptions, loaded: LoadedInput | None = None) -> Summary:
    """Run a whole job synchronously (see `run_async`)."""
    return asyncio.run(run_async(options, loaded))


async def run_async(options: RunOptions, loaded: LoadedInput | None = None) -> Summary:
    """Send every row of the input and write the report; return what happened.

    Bad input raises before any request. Once sending starts, the report is written whatever
    happens: an authentication failure (`summary.auth_failed`) or an interrupt
    (`summary.interrupted`) leaves unsent rows `not_attempted`.
    """
    loaded = loaded or prepare(options)
    log = structlog.get_logger("batch_cancel")
    run_id = secrets.token_hex(6)
    structlog.contextvars.bind_contextvars(run_id=run_id)
    to_send = sum(1 for _ in loaded.to_send())
    started = time.monotonic()
    log.info("run.started", input=str(options.input_path), report=str(options.report),
             target=options.target.name, base_url=options.target.base_url or "(simulator)",
             rows=len(loaded.rows), to_send=to_send, dry_run=options.dry_run)
    if options.dry_run:
        return _dry_summary(loaded)
    if options.target.name != "simulator" and options.credentials is None:
        raise RunError("no credentials: set ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET")
    outcomes: dict[int, Outcome] = {}
    summary_flags: dict[str, object] = {}
    journal = Journal(journal_path(options.report), run_id)
    try:
        async with _target(options) as (base_url, credentials), open_session(
                options.settings.concurrency * 2) as session:
            client = ZuoraClient(session, base_url, credentials, options.settings)
            runner = _runner(client, options, run_id)
            await _send_all(options, loaded, runner, client, journal, outcomes,
                            summary_flags, to_send, log)
    finally:
        journal.close()
        summary = write_report(options.report, loaded.columns, loaded.rows, outcomes)
        summary.elapsed = time.monotonic() - started
        summary.sent_rows = sum(1 for o in outcomes.values() if o.attempts)
        summary.interrupted = bool(summary_flags.get("interrupted"))
        summary.auth_failed = bool(summary_flags.get("auth_failed"))
        summary.stop_reason = str(summary_flags.get("stop_reason", ""))
        journal.path.unlink(missing_ok=True)  # the report now holds everything it recorded
        log.info("run.finished", report=str(options.report), elapsed=round(summary.elapsed, 3),
                 rate=round(summary.rate, 1), interrupted=summary.interrupted,
                 auth_failed=summary.auth_failed,
                 **{f"count_{s.value}": n for s, n in summary.counts.items()})
    return summary


def _runner(client: ZuoraClient, options: RunOptions, run_id: str) -> Runner:
    settings = options.settings
    rate = settings.rate if settings.rate is not None else options.target.default_rate
    limits = Limits(concurrency=settings.concurrency, rate=rate,
                    max_attempts=settings.max_attempts)
    return Runner(client, limits, run_id, settings.track_id_prefix)


async def _send_all(options: RunOptions, loaded: LoadedInput, runner: Runner,
                    client: ZuoraClient, journal: Journal, outcomes: dict[int, Outcome],
                    flags: dict[str, object], to_send: int,
                    log: structlog.typing.FilteringBoundLogger) -> None:
    """Authenticate, then let the runner send every row, journalling each outcome."""
    try:
        await _authenticate(client)
    except AuthenticationError as exc:
        log.error("run.auth_failed", error=str(exc))
        flags.update(auth_failed=True, stop_reason=str(exc))
        return
    progress = options.progress

    def on_outcome(outcome: Outcome) -> None:
        outcomes[outcome.row] = outcome
        journal.record(outcome)
        if progress is not None:
            progress.advance(outcome, runner)

    if progress is not None:
        progress.start(len(loaded.rows), to_send)
    ticker = asyncio.create_task(_progress_events(runner, outcomes, to_send, log))
    try:
        with _signals(runner, flags, enabled=options.handle_signals):
            await runner.run((row.job for row in loaded.to_send()), on_outcome)
    except asyncio.CancelledError:
        flags.update(interrupted=True, stop_reason="interrupted twice: stopped at once")
    finally:
        ticker.cancel()
        if progress is not None:
            progress.stop()
    if runner.auth_error is not None:
        log.error("run.auth_failed", error=str(runner.auth_error))
        flags.update(auth_failed=True, stop_reason=str(runner.auth_error))


async def _authenticate(client: ZuoraClient) -> None:
    """Get the first token; a token endpoint that keeps failing ends the run as an auth failure."""
    for attempt in range(1, AUTH_TRIES + 1):
        try:
            await client.authenticate()
            return
        except TokenUnavailable as exc:
            if attempt == AUTH_TRIES:
                raise AuthenticationError(f"could not get a token after {attempt} tries: "
                                          f"{exc}") from None
            await asyncio.sleep(2 ** (attempt - 1))


async def _progress_events(runner: Runner, outcomes: dict[int, Outcome], to_send: int,
                           log: structlog.typing.FilteringBoundLogger) -> None:
    """A `run.progress` event every PROGRESS_EVERY seconds, for logs without a display."""
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        log.info("run.progress", done=len(outcomes), to_send=to_send, in_flight=runner.in_flight)


@contextlib.contextmanager
def _signals(runner: Runner, flags: dict[str, object], enabled: bool) -> Iterator[None]:
    """Ctrl-C / SIGTERM: stop starting rows and let in-flight ones finish; twice: stop now."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    installed: list[signal.Signals] = []

    def handle(signum: signal.Signals) -> None:
        if flags.get("interrupted") and task is not None:
            task.cancel()
            return
        flags.update(interrupted=True, stop_reason=f"interrupted ({signum.name})")
        runner.stop(f"interrupted ({signum.name}); press Ctrl-C again to stop at once")

    if enabled:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, handle, signum)
                installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


@contextlib.asynccontextmanager
async def _target(options: RunOptions) -> AsyncIterator[tuple[str, Credentials]]:
    """The base URL and credentials to use; for --simulate, a simulator started on loopback."""
    if options.target.name != "simulator":
        assert options.credentials is not None  # checked before the journal was opened
        yield options.target.base_url, options.credentials
        return
    from .simulator import Simulator, SimulatorConfig  # never imported on a real run

    config = options.simulator_config
    simulator = Simulator(config if isinstance(config, SimulatorConfig) else None)
    base_url = await simulator.start("127.0.0.1", 0)
    try:
        yield base_url, Credentials(simulator.config.client_id, simulator.config.client_secret)
    finally:
        await simulator.stop()


def _dry_summary(loaded: LoadedInput) -> Summary:
    """A dry run is complete when every row could be sent (or is a duplicate of one that can)."""
    counts = {status: 0 for status in Status}
    for row in loaded.rows:
        counts[row.status or Status.NOT_ATTEMPTED] += 1
    complete = counts[Status.INVALID] == 0 and counts[Status.FAILED] == 0
    return Summary(counts=counts, complete=complete)


def exit_code(summary: Summary) -> int:
    """The process exit code a summary stands for (see the README's table)."""
    if summary.interrupted:
        return 130
    if summary.auth_failed:
        return 3
    return 0 if summary.complete else 1

