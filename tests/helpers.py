"""What the tests share: one fake clock, one job builder, the simulator as a process or a
thread, spies on the runner's calls, the server-side checks, and readers of what a run wrote.

Fixtures live in `conftest.py` and build on these; a test module imports from here only,
never from another test module or from conftest (tests/test_helpers_rules.py checks it).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import io
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import Result

from batch_cancel.model import Answer, CancelJob, InvoiceState, Verdict
from batch_cancel.send.clock import Clock
from batch_cancel.send.row import Sender
from batch_cancel.sim.server import RequestRecord, Simulator, SimulatorConfig, SimulatorStats

#: The installed `batch-cancel` command, for tests that need a real process.
BIN = Path(sys.executable).with_name("batch-cancel")

#: `batch-cancel ARGS...` run in-process (the `cli` fixture); returns click's Result.
CliInvoker = Callable[..., Result]

#: An input with one row of each fate: two accepted, one not found, a duplicate, an invalid key.
MIXED_ROWS = [
    ["Invoice Number", "Reason", "Document Reference ID", "Customer"],
    ["INV00001", "1", "DM00001", "Acme MX"],
    ["INV00002", "02", "", "Beta"],
    ["INV-NOTFOUND-3", "03", "", "Gamma"],
    ["INV00002", "02", "", "Beta again"],
    ["INV 5", "02", "", "Bad key"],
]


def run_args(sim: RunningSimulator, path: Path, *extra: str) -> list[str]:
    """`batch-cancel run PATH` against the simulator, without the progress display."""
    return ["run", str(path), "--base-url", sim.url, "--no-progress", *extra]


def jobs(n: int, start: int = 2, prefix: str = "INV", reason: str = "02") -> list[CancelJob]:
    """`n` ordinary cancels from row `start` on, keyed `{prefix}{row:05d}` (INV00002, ...)."""
    return [CancelJob(row, f"{prefix}{row:05d}", reason) for row in range(start, start + n)]


class FakeClock(Clock):
    """Time that moves only when someone sleeps (or a test moves `t`), so a schedule is
    asserted exactly and the machine's load cannot change it. Every sleep is recorded.

    By default sleeps add up: a sleep moves the clock on by its length, then yields once,
    as when one sleeper follows another. With `overlap=True` concurrent sleeps overlap: a
    sleeper yields first, then wakes with the clock at its own deadline or later (never
    earlier), so two workers sleeping at once do not add up their waits. `on_sleep(clock)`
    runs once the clock has moved, for a test that changes the world at a given time.

    With `wakes=False` time stands still and a sleep never ends (`on_sleep` runs as it
    begins): only a cancel, such as the run's stop, wakes the sleeper, so a run that
    finishes proves the stop did it.
    """

    def __init__(self, start: float = 1000.0, *, overlap: bool = False,
                 on_sleep: Callable[[FakeClock], None] | None = None,
                 wakes: bool = True) -> None:
        self.t = start
        self.sleeps: list[float] = []
        self.overlap = overlap
        self.on_sleep = on_sleep
        self.wakes = wakes

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if not self.wakes:
            self._slept()
            await asyncio.Event().wait()
        if self.overlap:
            deadline = self.t + seconds
            await asyncio.sleep(0)
            self.t = max(self.t, deadline)
            self._slept()
        else:
            self.t += seconds
            self._slept()
            await asyncio.sleep(0)

    def _slept(self) -> None:
        if self.on_sleep is not None:
            self.on_sleep(self)


@dataclass(frozen=True)
class SpyEvent:
    """One call the runner made to its sender, or the answer it got, at a runner-clock time."""

    kind: str  # "start" or "answer"
    method: str  # "PUT" (cancel) or "GET" (read)
    key: str
    at: float
    answer: Answer | None = None


class SenderSpy:
    """Wraps the real Zuora client and records, on the runner's clock, each call and answer.

    Nothing runs between the spy seeing an answer and the runner acting on it, so a pause the
    runner takes on a 429 starts exactly at the answer's recorded time.
    """

    def __init__(self, inner: Sender, clock: Clock) -> None:
        self.inner = inner
        self.clock = clock
        self.events: list[SpyEvent] = []

    async def cancel(self, job: CancelJob, track_id: str) -> Answer:
        self.events.append(SpyEvent("start", "PUT", job.invoice_key, self.clock.now()))
        answer = await self.inner.cancel(job, track_id)
        self.events.append(SpyEvent("answer", "PUT", job.invoice_key, self.clock.now(), answer))
        return answer

    async def ready(self) -> None:
        return None

    async def invoice_state(self, key: str, track_id: str) -> InvoiceState:
        self.events.append(SpyEvent("start", "GET", key, self.clock.now()))
        state = await self.inner.invoice_state(key, track_id)
        self.events.append(SpyEvent("answer", "GET", key, self.clock.now(), state.answer))
        return state


def starts_before_a_429_deadline(events: list[SpyEvent], same_key_only: bool = False
                                 ) -> list[str]:
    """Calls that began, on the runner's clock, before the deadline an earlier 429 named (with
    `same_key_only`, a 429 counts only against later calls for its own invoice)."""
    pool_until = -math.inf
    key_until: dict[str, float] = {}
    early = []
    for event in events:
        answer = event.answer
        if event.kind == "answer" and answer is not None and answer.rate_limited:
            if answer.retry_after is not None:
                deadline = event.at + answer.retry_after
                pool_until = max(pool_until, deadline)
                key_until[event.key] = max(key_until.get(event.key, -math.inf), deadline)
        elif event.kind == "start":
            until = key_until.get(event.key, -math.inf) if same_key_only else pool_until
            if event.at < until:
                early.append(f"{event.method} {event.key} at {event.at:.3f} < {until:.3f}")
    return early


# --- the simulator, in a thread or in its own process ----------------------------------------


@dataclass
class RunningSimulator:
    """A simulator served from a background thread, for tests that call the sync CLI/API."""

    simulator: Simulator
    url: str

    @property
    def config(self) -> SimulatorConfig:
        return self.simulator.config

    @property
    def stats(self) -> SimulatorStats:
        return self.simulator.stats

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point the CLI at this simulator."""
        return {"ZUORA_CLIENT_ID": self.config.client_id,
                "ZUORA_CLIENT_SECRET": self.config.client_secret,
                "ZUORA_BASE_URL": ""}


def sim_json(url: str, name: str) -> Any:
    """A simulator control endpoint, `/_sim/NAME` (these are never recorded as requests)."""
    with urllib.request.urlopen(f"{url}/_sim/{name}", timeout=10) as answer:
        return json.load(answer)


class SimulatorProcess:
    """`batch-cancel simulate --port 0 FLAGS...` as its own process: started, its URL read
    from the line it prints once bound, stopped with SIGTERM (SIGKILL if that is ignored)."""

    def __init__(self, *flags: str) -> None:
        self.process = subprocess.Popen([str(BIN), "simulate", "--port", "0", *flags],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.url = line.strip().rsplit(" ", 1)[-1]
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise AssertionError(f"the simulator did not start: {line!r}")

    def get(self, name: str) -> Any:
        """The JSON of the control endpoint `/_sim/NAME` (stats, requests, tokens)."""
        return sim_json(self.url, name)

    def stats(self) -> SimulatorStats:
        """What the simulator saw so far, as the in-process simulator's stats."""
        return server_stats(self.url)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def server_stats(url: str) -> SimulatorStats:
    """What a simulator running in another process saw, from its /_sim/ endpoints."""
    counters = sim_json(url, "stats")
    seen = sim_json(url, "requests")["requests"]
    requests = [RequestRecord(r["method"], r["path"], r["key"], {}, "", r["started"],
                              r["finished"], r["status"]) for r in seen]
    return SimulatorStats(requests=requests, token_requests=counters["token_requests"],
                          cancel_requests=counters["cancel_requests"],
                          accepted_cancels=counters["accepted_cancels"],
                          acceptances=[(key, at) for key, at in counters["acceptances"]],
                          invoice_reads=counters["invoice_reads"],
                          max_in_flight=counters["max_in_flight"])


def wait_for_server(url: str, done: Callable[[SimulatorStats], bool],
                    limit: float = 30.0) -> SimulatorStats:
    """Poll a simulator in another process until `done(stats)`; fails after `limit` seconds
    (a bound for a hang, not a measurement)."""
    deadline = time.monotonic() + limit
    while not done(stats := server_stats(url)):
        assert time.monotonic() < deadline, "the simulator never reached the expected state"
        time.sleep(0.02)
    return stats


# --- what the server saw ----------------------------------------------------------------------


def requests_by_key(stats: SimulatorStats) -> dict[str, list[RequestRecord]]:
    """The /v1 requests the server saw for each invoice key, in arrival order."""
    grouped: dict[str, list[RequestRecord]] = {}
    for record in list(stats.requests):
        if record.key is not None:
            grouped.setdefault(record.key, []).append(record)
    return grouped


#: asyncio may fire a timer up to its clock resolution early; far below this
CLOCK_SLACK = 0.001


def resent_inside_own_pause(stats: SimulatorStats, pause: float) -> list[str]:
    """Requests for an invoice that reached the server less than `pause` seconds after the
    server had finished answering that invoice's previous request with a 429.

    Causal, so the machine's load cannot break it: the client reads the 429 only after the
    server finished it, then waits `pause` before that row's next request, which the server
    sees later still. (Whether OTHER rows also hold off is asserted on the runner's clock in
    tests/test_runner.py, where no real time is involved.)"""
    found = []
    for key, records in requests_by_key(stats).items():
        for before, after in itertools.pairwise(records):
            if before.status == 429 and after.started < before.finished + pause - CLOCK_SLACK:
                found.append(f"{after.method} {key} +{after.started - before.finished:.3f} s "
                             "after its own 429")
    return found


def limited_to(sim: RunningSimulator, per_second: int) -> None:
    """The simulator allows `per_second` requests per 1 s window, then answers 429 with
    Retry-After and no RateLimit headers (nothing to learn the pace from ahead of a 429)."""
    sim.config.rate_limit = per_second
    sim.config.rate_window = 1.0
    sim.config.rate_retry_after = True
    sim.config.rate_headers = False


#: Whole seconds a rate 429 of `limited_to`'s 1 s window names (at least 1, so always 1).
PAUSE = 1.0
#: A read the client sent before it saw a 429 may reach the server a little after that 429
#: left it; none can arrive this late into the pause unless the pause was not kept.
ON_THE_WAY = 0.25


def reads_inside_a_pause(requests: list[RequestRecord]) -> list[str]:
    """Invoice reads that reached the server well inside the pause an earlier 429 named:
    later than ON_THE_WAY after the 429 left the server, earlier than PAUSE after it."""
    reads = [r for r in requests if r.method == "GET" and r.key is not None]
    limited = [r.finished for r in reads if r.status == 429]
    return [f"GET {r.key} +{r.started - at:.3f} s after a 429" for r in reads for at in limited
            if at + ON_THE_WAY < r.started < at + PAUSE - CLOCK_SLACK]


def resends_after_acceptance(stats: SimulatorStats) -> list[str]:
    """Cancel PUTs that reached the server for an invoice after it had accepted a cancel of
    that invoice, with no GET of the invoice arriving between the acceptance and the PUT: a
    second filing made without checking first. (The simulator refuses a second cancel, as
    Zuora does, so counting accepted cancels cannot show this; the order of arrivals can.)

    A GET counts even if it was refused (a 429): the runner then resends by design, relying
    on Zuora's refusal of a second cancel, which it checks in turn."""
    timeline: list[tuple[float, str, str]] = [(at, "accepted", key)
                                              for key, at in stats.acceptances]
    timeline += [(r.started, r.method, r.key) for r in stats.requests
                 if r.key is not None and r.method in ("GET", "PUT")]
    accepted: set[str] = set()
    read: set[str] = set()
    found = []
    for at, what, key in sorted(timeline, key=lambda item: item[0]):
        if what == "accepted":
            accepted.add(key)
            read.discard(key)
        elif what == "GET":
            read.add(key)
        elif key in accepted and key not in read:
            found.append(f"{key}: cancel sent at {at:.3f} after one was accepted, unread")
    return found


# --- files: what a run wrote, and workbooks openpyxl cannot write -----------------------------


def read_report(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV report as dicts, in whatever dialect it speaks (the input's: UTF-8
    with BOM by default, UTF-16, cp1252; comma, semicolon or tab)."""
    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = raw.decode("utf-16")
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("cp1252")
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))


def patch_cells(path: Path, cells: dict[str, tuple[str | None, str]]) -> None:
    """Rewrite cells of the first sheet as raw XML: {ref: (t attribute, inner XML)}.

    openpyxl cannot write a formula's cached value, which is what Excel saves and what the
    loader must read; so the workbook is written with placeholders and its XML edited. The
    cell's style (its number format) is kept.
    """
    with zipfile.ZipFile(path) as archive:
        parts = {info.filename: archive.read(info.filename) for info in archive.infolist()}
    name = "xl/worksheets/sheet1.xml"
    xml = parts[name].decode("utf-8")
    for ref, (cell_type, inner) in cells.items():
        pattern = re.compile(rf'<c r="{ref}"(?P<style> s="\d+")?[^>]*>.*?</c>', re.DOTALL)
        type_attr = f' t="{cell_type}"' if cell_type else ""
        xml, count = pattern.subn(
            lambda m, t=type_attr, i=inner, r=ref: f'<c r="{r}"{m.group("style") or ""}{t}>{i}</c>',
            xml,
        )
        assert count == 1, f"placeholder cell {ref} not found"
    parts[name] = xml.encode("utf-8")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for part, data in parts.items():
            archive.writestr(part, data)


@contextlib.contextmanager
def disk_full(inside: Path) -> Iterator[None]:
    """Every write to the one file open at `inside` (that file, or the one file open in that
    folder) fails with ENOSPC until the block ends: its descriptor is pointed at /dev/full,
    then back at the file."""
    where = str(inside.resolve())
    fds = [int(fd) for fd in os.listdir("/proc/self/fd")
           if (target := os.path.realpath(f"/proc/self/fd/{fd}")) == where
           or target.startswith(where + "/")]
    assert len(fds) == 1
    saved = os.dup(fds[0])
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, fds[0])
    os.close(full)
    try:
        yield
    finally:
        os.dup2(saved, fds[0])
        os.close(saved)


def ok(**fields: object) -> Answer:
    """A clean 200 answer with the given fields (rate windows, quota ...)."""
    return Answer(Verdict.SUCCEEDED, http_status=200, **fields)  # type: ignore[arg-type]


def policy(quota: int, seconds: float, remaining: int | None = None,
           reset: float | None = None) -> Answer:
    """A clean answer advertising one rate window, as the simulator sends it."""
    return ok(rate_windows=((quota, seconds),), quota_remaining=remaining,
              quota_window=int(seconds) if remaining is not None else None, quota_reset=reset)
