"""Ctrl-C in a real process: in-flight rows finish, the rest are reported, exit 130."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import (
    BIN,
    SimulatorProcess,
    read_report,
    resends_after_acceptance,
    server_stats,
    wait_for_server,
)


@pytest.fixture
def sim_process(simulator_process: Callable[..., SimulatorProcess]) -> str:
    """`batch-cancel simulate` as its own process, slow enough to interrupt mid-run."""
    return simulator_process("--latency", "0.05").url


def test_sigint_stops_cleanly_with_every_row_reported_and_exit_130(sim_process: str,
                                                                   tmp_path: Path) -> None:
    """After Ctrl-C: exit 130, every row once, no row sent twice, re-run finishes the rest."""
    path = tmp_path / "big.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["invoice", "reason"])
        writer.writerows([f"INV{n:05d}", "02"] for n in range(400))
    env = {**os.environ, "ZUORA_CLIENT_ID": "sim-client-id",
           "ZUORA_CLIENT_SECRET": "sim-client-secret"}
    command = [str(BIN), "run", str(path), "--base-url", sim_process, "--concurrency", "2",
               "--no-progress", "--log-format", "json"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    wait_for_server(sim_process, lambda stats: len(stats.accepted_cancels) >= 10)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, out + err
    report = read_report(tmp_path / "big.report.csv")
    counts = Counter(r["status"] for r in report)
    assert len(report) == 400 and set(counts) == {"succeeded", "not_attempted"}
    assert 0 < counts["succeeded"] < 400
    assert "interrupted" in out

    rerun = subprocess.run([*command[:2], str(tmp_path / "big.report.csv"), *command[3:],
                            "--report", str(tmp_path / "second.csv"), "--concurrency", "20"],
                           env=env, capture_output=True, text=True, timeout=60, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert Counter(r["status"] for r in read_report(tmp_path / "second.csv")) == {
        "succeeded": 400}
    stats = server_stats(sim_process)
    assert len(stats.accepted_cancels) == 400
    assert not resends_after_acceptance(stats)


@pytest.fixture
def slow_sim_process(simulator_process: Callable[..., SimulatorProcess]) -> str:
    """A simulator whose every answer takes 3 s: requests are surely in flight at Ctrl-C."""
    return simulator_process("--latency", "3").url


def test_grace_period_bounds_the_wait_and_resume_checks_rows_left_in_doubt(
        slow_sim_process: str, tmp_path: Path) -> None:
    """Ctrl-C with slow answers: stop after --grace, rows in flight are in doubt, resume checks."""
    path = tmp_path / "rows.csv"
    path.write_text("invoice,reason\n" + "".join(f"INV{n:05d},02\n" for n in range(6)))
    env = {**os.environ, "ZUORA_CLIENT_ID": "sim-client-id",
           "ZUORA_CLIENT_SECRET": "sim-client-secret"}
    command = [str(BIN), "run", str(path), "--base-url", slow_sim_process, "--concurrency", "3",
               "--no-progress", "--log-format", "json", "--grace", "0.5"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    # three requests in flight, each answered 3 s after it arrived
    wait_for_server(slow_sim_process, lambda stats: stats.cancel_requests == 3)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, out + err
    # the run ended after --grace, before the answers: had it waited for them, these three
    # rows would read succeeded, not failed in doubt
    report = {r["row"]: r for r in read_report(tmp_path / "rows.report.csv")}
    in_doubt = [r for r in report.values() if r["status"] == "failed"]
    assert len(in_doubt) == 3 and all("in doubt" in r["error_message"] for r in in_doubt)
    assert [r["status"] for r in report.values()].count("not_attempted") == 3

    # the server finishes the three cancels it was given
    wait_for_server(slow_sim_process, lambda stats: len(stats.accepted_cancels) == 3)
    resumed = subprocess.run([*command, "--resume", "--concurrency", "6"], env=env,
                             capture_output=True, text=True, timeout=60, check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    report = {r["row"]: r for r in read_report(tmp_path / "rows.report.csv")}
    assert all(r["status"] == "succeeded" for r in report.values())
    verified = [r for r in report.values() if "verified after resume" in r["error_message"]]
    assert len(verified) == 3
    stats = server_stats(slow_sim_process)
    assert len(stats.accepted_cancels) == 6
    assert not resends_after_acceptance(stats)
