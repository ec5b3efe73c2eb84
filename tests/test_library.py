"""The Python API mirrors the CLI: a scheduler calls `batch_cancel.run` and reads a summary."""

from __future__ import annotations

from pathlib import Path

import batch_cancel
from batch_cancel import Credentials, RunOptions, Settings, Status, resolve_target


def test_run_from_python_returns_a_summary(sim, make_csv) -> None:
    """`batch_cancel.run(RunOptions(...))` sends, writes the report and returns counts."""
    path: Path = make_csv([["invoice", "reason"], ["A1", "2"], ["A2", "3"]])
    summary = batch_cancel.run(RunOptions(
        input_path=path,
        target=resolve_target(None, sim.url, None, False),
        credentials=Credentials(sim.config.client_id, sim.config.client_secret),
        settings=Settings(rate=1000),
        handle_signals=False,
    ))
    assert summary.counts[Status.SUCCEEDED] == 2
    assert batch_cancel.exit_code(summary) == 0
    assert Path(summary.report_path).exists()
    assert sim.stats.accepted_cancels == {"A1": 1, "A2": 1}


def test_public_names_are_declared() -> None:
    """The package re-exports a small public surface and its version."""
    assert set(batch_cancel.__all__) >= {"run", "verify", "RunOptions", "Summary", "__version__"}
    assert batch_cancel.__version__
