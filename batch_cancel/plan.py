"""The plan of a run: its options, the input read and checked, the journal to resume, the
input's digest, and the dry run; everything decided before a single request is sent.

`prepare` does every check a run can fail before it sends (input, report path, journal), so a
run that starts sending has nothing left to refuse; `api.run` then only sends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .config import DEFAULT_GRACE, Settings, Target, tenant_identity
from .model import CancelJob, Outcome, Status, Summary
from .preflight import plan_summary, unchecked
from .read.dialect import plan_note
from .read.loader import LoadedInput, LoadOptions, load
from .record.journal import JournalState, check_same_tenant, read_journal
from .record.paths import check_report_path, default_report_path, journal_path
from .send.zuora import Credentials

if TYPE_CHECKING:
    import pandas

    from .events import Event


class RunError(Exception):
    """The run cannot start (a usage problem); nothing was sent."""


class ProgressSink(Protocol):
    """A progress display: started and stopped by the run, fed by the run's events."""

    def start(self, total: int, to_send: int) -> None: ...
    def on_event(self, event: Event) -> None: ...
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
    grace: float = DEFAULT_GRACE
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
    loaded = _load(source, options.load)
    report = options.report
    if not options.dry_run or options.report_path is not None:
        note = plan_note(loaded.dialect, report)
        loaded.notes.extend([note] if note else [])
    if isinstance(source, Path) and report.resolve() == source.resolve():
        raise RunError(f"--report {report} is the input file; name another report file")
    check_report_path(report)
    digest = input_digest(source)
    if options.dry_run:
        return Plan(loaded, digest)
    if options.resume and options.overwrite:
        raise RunError("--resume and --overwrite contradict each other; pass one")
    if options.resume:
        return Plan(loaded, digest, _journal_to_resume(options, digest))
    existing = [str(p) for p in (report, options.journal) if p.exists()]
    if existing and not options.overwrite:
        raise RunError(
            f"{' and '.join(existing)} already exist: pass --resume to continue that run "
            "(finished rows are kept, rows in doubt are checked first), or --overwrite to "
            "start again and replace them, or choose another --report"
        )
    return Plan(loaded, digest)


def _load(source: Path | pandas.DataFrame, options: LoadOptions) -> LoadedInput:
    """A file through the loader, a DataFrame through the same rules (pandas only then)."""
    if isinstance(source, Path):
        return load(source, options)
    from .read.frames import load_frame

    return load_frame(source, options, options.numbers_as_text)


def _journal_to_resume(options: RunOptions, digest: str) -> JournalState:
    """The journal of the run to continue, refused if it names another tenant or input."""
    journal = options.journal
    if not journal.exists():
        raise RunError(f"nothing to resume: no journal at {journal}. Was --report the same as "
                       "in the run to resume?")
    state = read_journal(journal)
    check_same_tenant(journal, state.header, options.tenant, "--resume")
    if state.header.get("input_sha256") not in (None, digest):
        raise RunError(
            f"{options.input_label} changed since the run recorded in {journal} started; "
            "resuming could send rows nobody checked. Restore the file, or start a new run "
            "with another --report"
        )
    return state


def input_digest(source: Path | pandas.DataFrame) -> str:
    """The input's SHA-256, which the journal records so a resume refuses a changed input."""
    if not isinstance(source, Path):
        from .read.frames import frame_digest

        return frame_digest(source)
    digest = hashlib.sha256()
    with source.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dry_run(options: RunOptions, loaded: LoadedInput) -> Summary:
    """A dry run is the plan, as `preflight` without `--check-invoices` makes it (one code
    path): with `--report` the plan report is written, every row with what would happen.

    Complete (exit 0) when no row is invalid, the rule `preflight` follows too.
    """
    rate = options.target.start_rate(options.settings.rate)
    unchecked(loaded, options.settings, rate, options.report_path)
    summary = plan_summary(loaded)
    summary.report_path = str(options.report_path or "")
    return summary
