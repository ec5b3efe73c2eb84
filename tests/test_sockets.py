"""The promises over real sockets: the CLI as a process, the aiohttp simulator, a real SIGKILL.

A seed draws a fault mix (drops and slow answers before and after the cancel took effect,
cut-off 200s, gateway pages, 5xx, 429s) and a kill point (after the simulator accepted the
K-th cancel, SIGKILL reaches the `batch-cancel run` process from inside the simulator, so the
kill lands mid-run whatever the machine's speed). Then `--resume` runs to the end and the
oracle checks the server's records against the report: every row once, no cancel sent after
one was accepted without a read between, `succeeded` exactly when our cancel was accepted
(or a row still in doubt says so), `skipped` only for invoices cancelled before, an exit
code that matches the report, and the secret and tokens in no output, report or journal.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers import BIN, RunningSimulator, read_report, resends_after_acceptance

ROWS = 40
CANCEL_ACCEPTED = frozenset({"CancelProcessing", "Cancelled"})
FAULTS = ("drop", "drop_after_apply", "truncated_after_apply", "html_504_after_apply",
          "fail_503", "html_502", "slow", "slow_before_apply", "retryable_false")


def draw(seed: int) -> tuple[dict[str, float], int]:
    """The fault shares and the kill point (accepted cancels before SIGKILL) of a seed."""
    rng = random.Random(seed)
    chosen = rng.sample(FAULTS, rng.randint(1, 4))
    shares = {name: round(rng.uniform(0.02, 0.12), 3) for name in chosen}
    return shares, rng.randint(1, ROWS - 10)


def sheet(tmp_path: Path, seed: int) -> Path:
    """Ordinary invoices, a few cancelled before the run, one unknown, one duplicate."""
    path = tmp_path / "input.csv"
    lines = ["Invoice Number,Reason"]
    for n in range(1, ROWS + 1):
        key = f"S{seed}-INV{n:04d}"
        if n % 13 == 0:
            key = f"S{seed}-CANCELLED-{n}"
        elif n == 17:
            key = f"S{seed}-NOTFOUND-{n}"
        elif n == 21:
            key = f"S{seed}-INV0001"
        lines.append(f"{key},02")
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(args: list[str], env: dict[str, str], sim: RunningSimulator | None = None,
            kill_after: int | None = None) -> subprocess.CompletedProcess[str]:
    """`batch-cancel ARGS` as a process; SIGKILLed after `kill_after` accepted cancels."""
    process = subprocess.Popen([str(BIN), *args], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    if sim is not None and kill_after is not None:
        accepted = len(sim.stats.accepted_cancels)

        def kill(_key: str) -> None:
            if len(sim.stats.accepted_cancels) - accepted == kill_after:
                os.kill(process.pid, signal.SIGKILL)

        sim.simulator.on_accept = kill
    try:
        out, err = process.communicate(timeout=120)
    finally:
        if sim is not None:
            sim.simulator.on_accept = None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.parametrize("seed", range(30))
def test_a_killed_run_resumed_keeps_every_promise_over_real_sockets(
        seed: int, sim: RunningSimulator, tmp_path: Path) -> None:
    """Seeded faults and a real SIGKILL mid-run, then --resume: the oracle holds."""
    shares, kill_after = draw(seed)
    for name, share in shares.items():
        setattr(sim.config, name, share)
    sim.config.seed, sim.config.slow_seconds = seed, 1.2
    env = {**os.environ, **sim.env}
    path = sheet(tmp_path, seed)
    report = tmp_path / "report.csv"
    args = ["run", str(path), "--base-url", sim.url, "--report", str(report), "--no-progress",
            "--rate", "10000", "--timeout", "1", "--max-attempts", "8", "--concurrency", "4"]
    first = run_cli(args, env, sim, kill_after)
    outputs = [first.stdout, first.stderr]
    runs = [first.returncode]
    result = first
    for _ in range(3):  # resume until the run ends on its own
        result = run_cli([*args, "--resume"], env)
        outputs += [result.stdout, result.stderr]
        runs.append(result.returncode)
        if result.returncode not in (4, 130, -signal.SIGKILL):
            break
    replay = f"replay: pytest tests/test_sockets.py -k 'over_real_sockets and {seed}]'"
    assert runs[0] == -signal.SIGKILL or kill_after > ROWS - 5, (runs, replay)
    rows = read_report(report)

    # every input row exactly once, in order
    assert [int(r["row"]) for r in rows] == list(range(2, ROWS + 2)), replay
    # never a cancel after an accepted one without a read of the invoice between
    assert not resends_after_acceptance(sim.stats), (resends_after_acceptance(sim.stats), replay)
    accepted = sim.stats.accepted_cancels
    assert set(accepted.values()) == {1}, replay
    done = {"succeeded", "skipped"}
    for row in rows:
        key, status = row["invoice_key"], row["status"]
        state = sim.simulator.invoice_status(key)
        if status == "succeeded":
            # an invoice cancelled before the run whose request of ours was in doubt reads
            # the same as one ours cancelled: no client can tell them apart (README)
            assert state in CANCEL_ACCEPTED and (
                key in accepted or "verified after" in row["error_message"]), (row, replay)
        elif status == "skipped":
            assert key not in accepted and state in CANCEL_ACCEPTED, (row, replay)
        elif status in ("failed", "not_attempted") and row["in_doubt"] != "yes":
            assert key not in accepted, (row, replay)
    in_scope_done = all(r["status"] in done or r["status"] == "duplicate" for r in rows)
    assert (result.returncode == 0) == in_scope_done, (result.returncode, replay)
    # the secret and the tokens appear nowhere
    secret = sim.config.client_secret
    texts = [*outputs, report.read_text(encoding="utf-8-sig"),
             report.with_name(report.name + ".journal.jsonl").read_text()]
    for text in texts:
        assert secret not in text, replay
        assert not [t for t in sim.simulator.issued_tokens() if t in text], replay
