"""Shared fixtures and pytest hooks: the simulator on loopback (in a thread, in the test's
loop, or as its own process), real input files, and the CLI driven in-process. What a test
imports lives in `tests/helpers.py`."""

from __future__ import annotations

import asyncio
import csv
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from batch_cancel.cli import main
from batch_cancel.sim.server import Simulator, SimulatorConfig
from tests.helpers import CliInvoker, RunningSimulator, SimulatorProcess


def pytest_addoption(parser: pytest.Parser) -> None:
    """Options of the seeded simulation (tests/test_simulation.py)."""
    group = parser.getgroup("simulation", "seeded schedules against the in-memory world")
    group.addoption("--sim-seeds", type=int, default=int(os.environ.get("SIM_SEEDS", "2000")),
                    help="how many seeded schedules to check (default 2000, or $SIM_SEEDS)")
    group.addoption("--sim-first", type=int, default=int(os.environ.get("SIM_FIRST", "0")),
                    help="the first seed to check (default 0, or $SIM_FIRST)")
    group.addoption("--sim-seed", type=int, default=None,
                    help="check only this seed (replays a failure the search printed)")


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


@pytest.fixture
def simulator_process() -> Iterator[Callable[..., SimulatorProcess]]:
    """Start `batch-cancel simulate --port 0 FLAGS...` as its own process (as many as the test
    asks for); each one is stopped after the test, SIGTERM then SIGKILL."""
    started: list[SimulatorProcess] = []

    def start(*flags: str) -> SimulatorProcess:
        started.append(SimulatorProcess(*flags))
        return started[-1]

    try:
        yield start
    finally:
        for process in started:
            process.stop()
