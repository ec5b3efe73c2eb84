"""Shared fixtures: the simulator on loopback, real input files, and the CLI driven in-process."""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import itertools
import json
import math
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from batch_cancel.cli import main
from batch_cancel.model import Answer, CancelJob
from batch_cancel.send.clock import Clock
from batch_cancel.send.row import Sender
from batch_cancel.send.zuora import InvoiceState
from batch_cancel.sim.server import RequestRecord, Simulator, SimulatorConfig, SimulatorStats


def pytest_addoption(parser: pytest.Parser) -> None:
    """Options of the seeded simulation (tests/test_simulation.py)."""
    group = parser.getgroup("simulation", "seeded schedules against the in-memory world")
    group.addoption("--sim-seeds", type=int, default=int(os.environ.get("SIM_SEEDS", "2000")),
                    help="how many seeded schedules to check (default 2000, or $SIM_SEEDS)")
    group.addoption("--sim-first", type=int, default=int(os.environ.get("SIM_FIRST", "0")),
                    help="the first seed to check (default 0, or $SIM_FIRST)")
    group.addoption("--sim-seed", type=int, default=None,
                    help="check only this seed (replays a failure the search printed)")


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


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    """The project's Zuora simulator on 127.0.0.1, in its own thread and event loop."""
    loop = asyncio.new_event_loop()
    simulator = Simulator(SimulatorConfig(cancel_delay=0.05))
    started = threading.Event()
    holder: dict[str, str] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        holder["url"] = loop.run_until_complete(simulator.start("127.0.0.1", 0))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10), "simulator did not start"
    try:
        yield RunningSimulator(simulator, holder["url"])
    finally:
        asyncio.run_coroutine_threadsafe(simulator.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
async def live_sim() -> Any:
    """The simulator in the test's own event loop, for async tests of the client and runner."""
    simulator = Simulator(SimulatorConfig(cancel_delay=0.05))
    url = await simulator.start("127.0.0.1", 0)
    try:
        yield RunningSimulator(simulator, url)
    finally:
        await simulator.stop()


CliInvoker = Callable[..., Result]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> CliInvoker:
    """Run `batch-cancel ARGS...` in-process; returns click's Result (exit code, output)."""
    for name in ("ZUORA_CLIENT_ID", "ZUORA_CLIENT_SECRET", "ZUORA_BASE_URL"):
        monkeypatch.delenv(name, raising=False)

    def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        runner = CliRunner()
        return runner.invoke(main, list(args), env=env, input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def make_csv(tmp_path: Path) -> Callable[..., Path]:
    """Write a real CSV file: rows of strings, with a chosen delimiter and encoding."""

    def write(rows: Sequence[Sequence[str]], name: str = "input.csv", delimiter: str = ",",
              encoding: str = "utf-8") -> Path:
        path = tmp_path / name
        with path.open("w", encoding=encoding, newline="") as handle:
            csv.writer(handle, delimiter=delimiter).writerows(rows)
        return path

    return write


@pytest.fixture
def make_xlsx(tmp_path: Path) -> Callable[..., Path]:
    """Write a real .xlsx workbook: rows of cell values, optional {cell: number format}."""

    def write(rows: Sequence[Sequence[object]], name: str = "input.xlsx",
              formats: dict[str, str] | None = None, sheet: str = "Sheet1",
              extra_sheets: dict[str, Sequence[Sequence[object]]] | None = None) -> Path:
        import openpyxl

        book = openpyxl.Workbook()
        first = book.active
        first.title = sheet
        for row in rows:
            first.append(list(row))
        for cell, number_format in (formats or {}).items():
            first[cell].number_format = number_format
        for title, more in (extra_sheets or {}).items():
            other = book.create_sheet(title)
            for row in more:
                other.append(list(row))
        path = tmp_path / name
        book.save(path)
        return path

    return write


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


class VirtualClock(Clock):
    """Runner time that moves only when someone sleeps; concurrent sleeps overlap.

    A sleeper wakes with the clock at least at its own deadline (never earlier), and two
    workers sleeping at once do not add up their waits, so a schedule is asserted exactly and
    the machine's load cannot change it. Every sleep is recorded.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        deadline = self.t + seconds
        await asyncio.sleep(0)
        self.t = max(self.t, deadline)


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


def server_stats(url: str) -> SimulatorStats:
    """What a simulator running in another process saw, from its /_sim/ endpoints."""
    with urllib.request.urlopen(f"{url}/_sim/stats") as answer:
        counters = json.load(answer)
    with urllib.request.urlopen(f"{url}/_sim/requests") as answer:
        seen = json.load(answer)["requests"]
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
