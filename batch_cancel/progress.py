"""The live progress display for people at a terminal (rich), and the plan/summary texts.

The display knows the run only by its events (`events.py`): each `pool.load` counts a row and
tells the pool's load, each `pool.paused` for a 429 starts a countdown. Its time is the
runner's clock, so a pause is counted down on the clock that set it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from itertools import islice
from operator import attrgetter
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .config import Target
from .events import Event, PoolLoad, PoolPausedRateLimited
from .model import Status, Summary
from .read.loader import LoadedInput
from .record.journal import JournalState
from .send.clock import Clock
from .send.pace import Source


class RichProgress:
    """done/total, rows/s, ETA, counts per status, in flight, and a pause when one is on."""

    def __init__(self, console: Console, clock: Clock | None = None) -> None:
        self.console = console
        self._clock = clock or Clock()
        self._progress = Progress(
            TextColumn("[bold]cancelling"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>7.1f} rows/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[detail]}"),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None
        self._counts: Counter[str] = Counter()
        self._started = self._clock.now()
        self._paused_until = 0.0

    def start(self, total: int, to_send: int) -> None:
        """Show the bar for the rows to send."""
        self._started = self._clock.now()
        self._task = self._progress.add_task("send", total=to_send, rate=0.0, detail="")
        self._progress.start()

    def on_event(self, event: Event) -> None:
        """Follow the run: a 429 pause starts a countdown, a finished row moves the bar."""
        if isinstance(event, PoolPausedRateLimited):
            self._paused_until = max(self._paused_until, self._clock.now() + event.seconds)
        elif isinstance(event, PoolLoad) and event.status is not None:
            self._advance(event)

    def _advance(self, load: PoolLoad) -> None:
        """Count one finished row and show the pool's load."""
        if self._task is None or load.status is None:
            return
        self._counts[load.status] += 1
        done = sum(self._counts.values())
        now = self._clock.now()
        elapsed = max(now - self._started, 1e-6)
        detail = " ".join(f"{status}={n}" for status, n in self._counts.items())
        detail += f" in_flight={load.in_flight} window={load.window}"
        detail += f" pace={pace_text(load.pace, load.pace_source)}"
        pause = self._paused_until - now
        if pause > 0:
            detail += f" [yellow]paused {pause:.0f}s (429)[/]"
        self._progress.update(self._task, completed=done, rate=done / elapsed, detail=detail)

    def stop(self) -> None:
        """Leave the last state on screen."""
        self._progress.stop()


class ConsoleLines:
    """A text stream for log lines that prints through a rich console, above its live display."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._buffer = ""

    def write(self, text: str) -> int:
        """Buffer until a full line, then print it above the progress bar."""
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self._console.print(line, markup=False, highlight=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        """Lines are printed as they complete."""

    def isatty(self) -> bool:
        """Colours follow the console."""
        return self._console.is_terminal


def pace_text(rate: float | None, source: str) -> str:
    """A pace as the plan and the progress line show it: `150/s (tenant_policy)`."""
    if rate is not None:
        return f"{rate:.4g}/s ({source})"
    return "unpaced" if source == Source.UNPACED else f"unpaced ({source})"


def plan_pace(rate_flag: float | None, default: float | None) -> str:
    """The plan's `Pace:` line: where the run starts, and what it will listen to."""
    if rate_flag is not None:
        start = pace_text(rate_flag, Source.FLAG)
    else:
        start = pace_text(default, Source.DEFAULT if default is not None else Source.UNPACED)
    ceiling = " (--rate is the ceiling)" if rate_flag is not None else ""
    return (f"Pace: {start} until the tenant's RateLimit headers say otherwise, then "
            f"--tenant-share of the tightest window{ceiling}")


def plan_text(loaded: LoadedInput, target: Target, base_url: str,
              resume: JournalState | None = None, pace: str = "",
              report: Path | None = None, no_report: str = "") -> str:
    """What a run is about to do: the tenant, the pace, and the rows per status and reason.

    The first 10 invalid rows are shown; the rest are in `report` (or, with none, the
    `no_report` hint says how to get one).
    """
    # map/attrgetter count in C: the plan of a million-row dry run is printed in a blink
    to_send = [row for row in loaded.to_send()
               if resume is None or not resume.is_finished(row.row)]
    by_status = Counter(map(attrgetter("status"), loaded.rows))
    del by_status[None]
    by_reason = Counter(map(attrgetter("reason"), to_send))
    lines = [
        f"Input:  {loaded.path} ({len(loaded.rows)} rows"
        + (", an earlier report" if loaded.is_report else "") + ")",
        f"Target: {target.name} {base_url}".rstrip(),
        f"To send: {len(to_send)}"
        + (" (reasons: " + ", ".join(f"{r}={n}" for r, n in sorted(by_reason.items())) + ")"
           if by_reason else ""),
    ]
    lines.extend(f"Note: {note}" for note in loaded.notes)
    if pace:
        lines.append(pace)
    if resume is not None:
        doubt = sum(1 for row in to_send if row.row in resume.in_doubt)
        lines.append(f"Resuming: {len(resume.finished)} rows already finished are kept; "
                     f"{doubt} in doubt will be checked before any resend")
    for status, count in sorted(by_status.items(), key=lambda kv: kv[0].value):
        label = "carried over" if loaded.is_report and status not in (
            Status.INVALID, Status.DUPLICATE) else "not sent"
        lines.append(f"{status.value}: {count} ({label})")
    invalid = list(islice((row for row in loaded.rows if row.status is Status.INVALID),
                          min(10, by_status[Status.INVALID])))
    for row in invalid:
        lines.append(f"  row {row.row}: {row.message}")
    if by_status[Status.INVALID] > len(invalid):
        where = f" (every invalid row is in {report})" if report else no_report
        lines.append(f"  ... and {by_status[Status.INVALID] - len(invalid)} more invalid rows"
                     + where)
    warned = [row for row in to_send if row.warning]
    if warned:
        lines.append(f"warning: {len(warned)} rows: {warned[0].warning} (--require-reference "
                     "makes them invalid)")
        lines.extend(f"  row {row.row}: {row.invoice_key}" for row in warned[:10])
        if len(warned) > 10:
            lines.append(f"  ... and {len(warned) - 10} more")
    return "\n".join(lines)


def summary_text(summary: Summary) -> str:
    """The closing summary: counts per status, top errors, time and rate."""
    lines = [f"Done: {summary.total} rows in {summary.elapsed:.1f} s "
             f"({summary.sent_rows} sent, {summary.rate:.1f} rows/s)"]
    if summary.stop_kind:
        lines.append(f"Stopped early: {summary.stop_reason}")
    lines.extend(_counts(summary.counts.items()))
    if summary.top_errors:
        lines.append("Top errors:")
        for code, count, message in summary.top_errors:
            lines.append(f"  {code:<12} x{count:<6} {message[:120]}")
    if summary.report_path and summary.report_error:
        lines.append(f"Report: NOT WRITTEN to {summary.report_path}")
    elif summary.report_path:
        lines.append(f"Report: {summary.report_path}")
    return "\n".join(lines)


def _counts(items: Iterable[tuple[Status, int]]) -> list[str]:
    return [f"  {status.value:<14}{count:>8}" for status, count in items if count]


def make_console(stream: TextIO) -> Console:
    """A console on the given stream (stderr: stdout stays for the plan and the summary)."""
    return Console(file=stream)
