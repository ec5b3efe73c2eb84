"""The command line end to end: targets, exit codes, reports, re-runs and secrets."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from batch_cancel.model import REPORT_COLUMNS
from batch_cancel.record.paths import journal_path
from tests.helpers import MIXED_ROWS, read_report, resends_after_acceptance, run_args


def test_a_run_writes_every_row_once_in_input_order(sim, cli, make_csv) -> None:
    """Each input row appears once, in order, with its own columns and the report columns."""
    path = make_csv(MIXED_ROWS)
    result = cli(*run_args(sim, path), env=sim.env)
    assert result.exit_code == 1, result.output
    report = read_report(path.with_name("input.report.csv"))
    assert list(report[0]) == [*MIXED_ROWS[0], *REPORT_COLUMNS]
    assert [r["row"] for r in report] == ["2", "3", "4", "5", "6"]
    assert [r["status"] for r in report] == ["succeeded", "succeeded", "failed", "duplicate",
                                             "invalid"]
    assert report[0]["Customer"] == "Acme MX" and report[0]["reason"] == "01"
    assert report[3]["error_message"] == "duplicate of row 3 (same invoice key)"
    assert sim.stats.cancel_requests == 3
    assert "succeeded" in result.output and "59210040" in result.output


def test_exit_code_is_0_when_every_row_succeeded_or_duplicates_one(sim, cli, make_csv) -> None:
    """Duplicates of succeeded rows do not spoil a clean run."""
    path = make_csv([["invoiceKey", "reason"], ["A1", "2"], ["a1", "2"], ["A2", "4"]])
    result = cli(*run_args(sim, path), env=sim.env)
    assert result.exit_code == 0, result.output
    assert sim.stats.accepted_cancels == {"A1": 1, "A2": 1}


def test_no_target_is_refused_with_a_clear_message(cli, make_csv) -> None:
    """Without --env, --base-url, ZUORA_BASE_URL or --simulate nothing runs (exit 2)."""
    result = cli("run", str(make_csv(MIXED_ROWS)))
    assert result.exit_code == 2
    assert "--env" in result.output and "--simulate" in result.output


def test_two_targets_are_refused(cli, make_csv) -> None:
    """Naming two targets is ambiguous: refused."""
    result = cli("run", str(make_csv(MIXED_ROWS)), "--env", "sandbox", "--simulate")
    assert result.exit_code == 2 and "exactly one target" in result.output


def test_env_var_target_beside_a_flag_is_refused(cli, make_csv) -> None:
    """ZUORA_BASE_URL left exported plus --env is two targets: refused, nothing sent."""
    env = {"ZUORA_CLIENT_ID": "x", "ZUORA_CLIENT_SECRET": "y",
           "ZUORA_BASE_URL": "https://rest.apisandbox.zuora.com"}
    result = cli("run", str(make_csv(MIXED_ROWS)), "--env", "production", "--yes", env=env)
    assert result.exit_code == 2 and "ZUORA_BASE_URL" in result.output


def test_plain_http_is_refused_except_for_loopback(cli, make_csv) -> None:
    """Credentials never travel unencrypted to another host."""
    env = {"ZUORA_CLIENT_ID": "x", "ZUORA_CLIENT_SECRET": "y"}
    result = cli("run", str(make_csv(MIXED_ROWS)), "--base-url", "http://zuora.example.com",
                 env=env)
    assert result.exit_code == 2 and "https://" in result.output


def test_env_var_base_url_is_a_target(sim, cli, make_csv) -> None:
    """ZUORA_BASE_URL names the target when no flag does."""
    path = make_csv([["invoice", "reason"], ["A1", "2"]])
    result = cli("run", str(path), "--no-progress", env={**sim.env, "ZUORA_BASE_URL": sim.url})
    assert result.exit_code == 0, result.output


def test_missing_credentials_are_refused_before_any_request(sim, cli, make_csv) -> None:
    """Credentials come from the environment only; without them nothing is sent."""
    result = cli(*run_args(sim, make_csv(MIXED_ROWS)))
    assert result.exit_code == 2 and "ZUORA_CLIENT_SECRET" in result.output
    assert sim.stats.requests == []


def test_bad_credentials_exit_3_and_send_no_cancel(sim, cli, make_csv) -> None:
    """Refused credentials abort before any cancel; the report lists every row."""
    path = make_csv(MIXED_ROWS)
    env = {**sim.env, "ZUORA_CLIENT_SECRET": "wrong-secret-123"}
    result = cli(*run_args(sim, path), env=env)
    assert result.exit_code == 3, result.output
    assert sim.stats.cancel_requests == 0
    statuses = [r["status"] for r in read_report(path.with_name("input.report.csv"))]
    assert statuses == ["not_attempted", "not_attempted", "not_attempted", "duplicate", "invalid"]


def test_dry_run_sends_nothing(sim, cli, make_csv) -> None:
    """--dry-run validates and prints the plan; no request, no report."""
    path = make_csv(MIXED_ROWS)
    result = cli(*run_args(sim, path, "--dry-run"), env=sim.env)
    assert result.exit_code == 1  # an invalid row is in the file
    assert "To send: 3" in result.output and "row 6: invoice key has whitespace" in result.output
    assert sim.stats.requests == []
    assert not path.with_name("input.report.csv").exists()


def test_report_fed_back_with_only_failed_reruns_just_those_rows(sim, cli, make_csv) -> None:
    """`run REPORT --only failed` sends only the failed rows and carries the rest over."""
    path = make_csv(MIXED_ROWS)
    first = path.with_name("first.report.csv")
    cli(*run_args(sim, path, "--report", str(first)), env=sim.env)
    before = sim.stats.cancel_requests
    second = path.with_name("second.report.csv")
    result = cli(*run_args(sim, first, "--only", "failed", "--include-final",
                           "--report", str(second)), env=sim.env)
    assert result.exit_code == 1, result.output
    assert sim.stats.cancel_requests - before == 1
    assert sim.stats.cancels()[-1].key == "INV-NOTFOUND-3"
    old, new = read_report(first), read_report(second)
    assert [r["row"] for r in new] == [r["row"] for r in old]
    assert list(new[0]) == [*MIXED_ROWS[0], *REPORT_COLUMNS]
    assert [r["status"] for r in new] == [r["status"] for r in old]
    assert new[0] == old[0]  # a carried-over row is unchanged, request id and all
    assert new[2]["track_id"] != old[2]["track_id"]
    assert not resends_after_acceptance(sim.stats)


def test_only_succeeded_is_refused(sim, cli, make_csv) -> None:
    """Re-sending succeeded rows would be a second cancel: refused with exit 2."""
    path = make_csv(MIXED_ROWS)
    cli(*run_args(sim, path), env=sim.env)
    before = sim.stats.cancel_requests
    result = cli(*run_args(sim, path.with_name("input.report.csv"), "--only", "succeeded",
                           "--report", str(path.with_name("again.csv"))), env=sim.env)
    assert result.exit_code == 2 and "already cancelled" in result.output
    assert sim.stats.cancel_requests == before


@pytest.mark.parametrize("suffix", [".xlsx", ".jsonl"])
def test_xlsx_and_jsonl_reports_round_trip(sim, cli, make_csv, suffix: str) -> None:
    """Every report format can be read back as INPUT for --only."""
    path = make_csv(MIXED_ROWS)
    report = path.with_name(f"out{suffix}")
    assert cli(*run_args(sim, path, "--report", str(report)), env=sim.env).exit_code == 1
    before = sim.stats.cancel_requests
    again = path.with_name("again.report.csv")
    result = cli(*run_args(sim, report, "--only", "failed", "--include-final",
                           "--report", str(again)), env=sim.env)
    assert result.exit_code == 1, result.output
    assert sim.stats.cancel_requests - before == 1
    assert [r["status"] for r in read_report(again)] == [
        "succeeded", "succeeded", "failed", "duplicate", "invalid"]


def test_report_and_journal_are_private(sim, cli, make_csv) -> None:
    """Report and journal are readable by their owner only."""
    path = make_csv(MIXED_ROWS)
    cli(*run_args(sim, path), env=sim.env)
    report = path.with_name("input.report.csv")
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    assert stat.S_IMODE(journal_path(report).stat().st_mode) == 0o600


def test_an_existing_report_or_journal_blocks_the_run_until_resume_or_overwrite(
        sim, cli, make_csv) -> None:
    """An earlier run's record is never silently replaced."""
    path = make_csv(MIXED_ROWS)
    report = path.with_name("input.report.csv")
    journal_path(report).write_text('{"event": "outcome", "row": 2}\n')
    refused = cli(*run_args(sim, path), env=sim.env)
    assert refused.exit_code == 2
    assert "--resume" in refused.output and "--overwrite" in refused.output
    assert sim.stats.requests == []
    assert cli(*run_args(sim, path, "--overwrite"), env=sim.env).exit_code == 1
    again = cli(*run_args(sim, path), env=sim.env)
    assert again.exit_code == 2 and "already exist" in again.output


def test_production_without_yes_is_refused_when_stdin_is_not_a_terminal(cli, make_csv) -> None:
    """Nobody can confirm: refused before any request (the target is never contacted)."""
    env = {"ZUORA_CLIENT_ID": "x", "ZUORA_CLIENT_SECRET": "y"}
    result = cli("run", str(make_csv(MIXED_ROWS)), "--env", "production", "--no-progress", env=env)
    assert result.exit_code == 2 and "--yes" in result.output


def test_server_text_is_neutralised_in_csv_reports(tmp_path: Path) -> None:
    """A server message starting with = + - @ cannot become a formula in Excel."""
    from batch_cancel.model import Outcome, SourceRow, Status
    from batch_cancel.record.writer import write_report

    rows = [SourceRow(2, "INV1", "02", "", ("=SUM(A1)",), columns=("Note",))]
    outcome = Outcome(2, Status.FAILED, 200, "59210030", "=HYPERLINK(\"http://x\")", 1)
    write_report(tmp_path / "r.csv", ["Note"], rows, {2: outcome})
    row = read_report(tmp_path / "r.csv")[0]
    assert row["error_message"] == "'=HYPERLINK(\"http://x\")"
    assert row["Note"] == "=SUM(A1)"  # the user's own text passes through untouched


def test_secrets_never_appear_in_logs_or_reports(sim, cli, make_csv) -> None:
    """At debug level, neither the client secret nor any bearer token is printed or saved."""
    sim.config.fail_500 = 0.3
    sim.config.seed = 5
    path = make_csv([["invoice", "reason"], *[[f"INV{n:04d}", "2"] for n in range(40)]])
    result = cli(*run_args(sim, path, "--log-level", "debug", "--log-format", "json"),
                 env=sim.env)
    report_text = path.with_name("input.report.csv").read_text(encoding="utf-8-sig")
    everything = result.output + (result.stderr if result.stderr_bytes else "") + report_text
    assert "row.retry_scheduled" in everything  # the debug run really logged
    secrets = [sim.config.client_secret, *sim.simulator.issued_tokens()]
    assert secrets[1:]
    for secret in secrets:
        assert secret not in everything


def test_json_log_events_carry_the_run_id(sim, cli, make_csv) -> None:
    """JSON logs: one object per line, each with the run id; run.started and run.finished."""
    path = make_csv([["invoice", "reason"], ["A1", "2"]])
    result = cli(*run_args(sim, path, "--log-format", "json"), env=sim.env)
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "run.started" in names and "run.finished" in names
    assert len({e["run_id"] for e in events}) == 1


def test_python_dash_m_and_the_console_script_both_work() -> None:
    """`python -m batch_cancel --help` works in a real process."""
    result = subprocess.run([sys.executable, "-m", "batch_cancel", "run", "--help"],
                            capture_output=True, text=True, check=False,
                            env={**os.environ, "COLUMNS": "100"})
    assert result.returncode == 0
    assert "--concurrency" in result.stdout and "ZUORA_CLIENT_SECRET" in result.stdout


def test_simulate_flag_runs_in_process(cli, make_csv) -> None:
    """--simulate needs no credentials and no server of ours."""
    path = make_csv(MIXED_ROWS)
    result = cli("run", str(path), "--simulate", "--no-progress")
    assert result.exit_code == 1, result.output
    assert "Report:" in result.output


def test_readme_usage_block_is_the_run_help() -> None:
    """The README's usage block is exactly `batch-cancel run --help`."""
    from click.testing import CliRunner

    from batch_cancel.cli import main

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("<!-- usage:run -->\n```text\n", 1)[1].split("\n```", 1)[0]
    help_text = CliRunner().invoke(main, ["run", "--help"], terminal_width=100,
                                   prog_name="batch-cancel").output
    assert block == help_text.rstrip()


#: The documented keys of each event (README, "Log events"); events may carry more.
EVENT_KEYS = {
    "run.started": {"run_id", "input", "report", "target", "rows", "to_send", "resume"},
    "row.retry_scheduled": {"run_id", "row", "attempt", "delay", "http_status", "error_code"},
    "pool.paused": {"run_id", "reason"},
    "pool.window_changed": {"run_id", "old", "new", "reason", "ceiling"},
    "pool.pace_changed": {"run_id", "old", "new", "source", "in_flight"},
    "row.finished": {"run_id", "row", "status", "attempts", "http_status", "error_code"},
    "run.finished": {"run_id", "report", "elapsed", "rate", "count_succeeded", "count_failed"},
}


def test_log_events_follow_the_documented_schema(sim, cli, make_csv) -> None:
    """A run with 429s logs each documented event, with its documented keys, as JSON lines."""
    sim.config.storm_429 = 0.2
    sim.config.storm_retry_after = 0
    sim.config.seed = 2
    sim.config.rate_limit = 100_000  # a policy: the pace moves from --rate to the tenant's share
    path = make_csv([["invoice", "reason"], *[[f"INV{n:04d}", "2"] for n in range(60)]])
    result = cli(*run_args(sim, path, "--log-format", "json", "--log-level", "debug",
                           "--rate", "1000"), env=sim.env)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    seen = {e["event"] for e in events}
    assert set(EVENT_KEYS) <= seen
    for event in events:
        assert event.get("level") and event.get("timestamp")
        missing = EVENT_KEYS.get(event["event"], set()) - set(event)
        assert not missing, (event["event"], missing)


def test_without_a_terminal_progress_is_a_periodic_log_event(sim, cli, make_csv,
                                                             monkeypatch) -> None:
    """No progress display off a terminal: a run.progress event every PROGRESS_EVERY seconds."""
    from batch_cancel import api

    monkeypatch.setattr(api, "PROGRESS_EVERY", 0.05)
    sim.config.latency = 0.02
    path = make_csv([["invoice", "reason"], *[[f"INV{n:04d}", "2"] for n in range(40)]])
    result = cli(*run_args(sim, path, "--log-format", "json", "--concurrency", "2"), env=sim.env)
    progress = [json.loads(line) for line in result.output.splitlines()
                if '"run.progress"' in line]
    assert len(progress) >= 3
    assert {"done", "to_send", "in_flight", "window"} <= set(progress[0])
    done = [event["done"] for event in progress]
    assert done == sorted(done) and all(0 <= n <= 40 for n in done), done
    assert {e["to_send"] for e in progress} == {40}
    assert "━" not in result.output  # no progress bar off a terminal


def test_the_exit_code_table_covers_every_way_a_run_ends() -> None:
    """One table in `model`: each StopKind, an unwritten report, done or not done."""
    from batch_cancel.model import STOP_EXIT_CODES, ExitCode, StopKind, Summary, exit_code

    assert set(STOP_EXIT_CODES) == {kind.value for kind in StopKind}
    expected = {"interrupted": 130, "auth": 3, "outage": 4, "quota": 4}
    for kind, code in expected.items():
        assert exit_code(Summary(stop_kind=kind, complete=True)) == code
    assert exit_code(Summary(report_error="disk full", stop_kind="auth")) == 5
    assert exit_code(Summary(complete=True)) == ExitCode.OK == 0
    assert exit_code(Summary(complete=False)) == ExitCode.ROWS_FAILED == 1
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme.split("## Exit codes", 1)[1]
    for code in ExitCode:  # the README's table names every code
        assert f"\n| {int(code)} | " in table, code
