"""The Python API mirrors the CLI: a scheduler calls `batch_cancel.run` and reads a summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


# --- one keyword call per command, results with the report as a DataFrame ---------------------


def test_cancel_returns_counts_by_status_name_and_the_report_as_text(sim, make_csv,
                                                                     tmp_path) -> None:
    """`cancel(path, ...)`: summary counts by status name, the CLI's exit code, and rows as a
    DataFrame whose every cell is the text written (reason 04 stays "04")."""
    path = make_csv([["Invoice Number", "Reason"], ["00123", "04"], ["INV-NOTFOUND-1", "04"]])
    result = batch_cancel.cancel(path, base_url=sim.url, report=tmp_path / "out.csv",
                                 credentials=Credentials(sim.config.client_id,
                                                         sim.config.client_secret), rate=1000)
    assert result.summary.counts["succeeded"] == 1 and result.summary.counts["failed"] == 1
    assert result.exit_code == 1 == batch_cancel.ExitCode.ROWS_FAILED
    rows = result.rows
    assert list(rows["invoice_key"]) == ["00123", "INV-NOTFOUND-1"]
    assert list(rows["reason"]) == ["04", "04"]
    assert {type(v) for v in rows["http_status"]} == {str}
    assert sim.stats.accepted_cancels == {"00123": 1}


def test_cancel_reads_credentials_and_target_from_the_environment(sim, make_csv, tmp_path,
                                                                  monkeypatch) -> None:
    """No credentials argument: ZUORA_CLIENT_ID/SECRET and ZUORA_BASE_URL are used."""
    monkeypatch.setenv("ZUORA_CLIENT_ID", sim.config.client_id)
    monkeypatch.setenv("ZUORA_CLIENT_SECRET", sim.config.client_secret)
    monkeypatch.setenv("ZUORA_BASE_URL", sim.url)
    path = make_csv([["invoice", "reason"], ["A1", "2"]])
    result = batch_cancel.cancel(path, report=tmp_path / "r.csv", rate=1000)
    assert result.exit_code == 0 and sim.stats.accepted_cancels == {"A1": 1}


def test_bad_input_raises_usage_error_before_any_request(sim, make_csv, tmp_path) -> None:
    """A file without a key column, or an unknown limit, is refused: nothing sent."""
    path = make_csv([["what", "reason"], ["A1", "2"]])
    creds = Credentials(sim.config.client_id, sim.config.client_secret)
    with pytest.raises(batch_cancel.UsageError, match="--key-column"):
        batch_cancel.cancel(path, base_url=sim.url, credentials=creds, report=tmp_path / "r.csv")
    with pytest.raises(TypeError, match="concurency"):
        batch_cancel.cancel(path, base_url=sim.url, credentials=creds, concurency=3)
    assert sim.stats.requests == []


def test_a_parquet_report_holds_text_columns_and_reads_back_exactly(sim, make_csv,
                                                                    tmp_path) -> None:
    """`.parquet` reports: string columns, read back by `read_report` as written."""
    import pyarrow.parquet

    path = make_csv([["Invoice Number", "Reason", "Amount"], ["007", "1", "0010.50"],
                     ["008", "04", ""]])
    report = tmp_path / "out.parquet"
    result = batch_cancel.cancel(path, simulate=True, report=report)
    assert result.exit_code == 0
    schema = pyarrow.parquet.read_schema(report)
    assert {str(t) for t in schema.types} == {"string"}
    rows = batch_cancel.read_report(report)
    assert list(rows["Amount"]) == ["0010.50", ""]
    assert list(rows["reason"]) == ["01", "04"]
    assert list(rows["status"]) == ["succeeded", "succeeded"]


@pytest.mark.parametrize("suffix", [".csv", ".xlsx", ".jsonl"])
def test_read_report_gives_text_for_every_report_format(make_csv, tmp_path, suffix) -> None:
    """`read_report` reads csv, xlsx and jsonl reports with every column as text."""
    path = make_csv([["Invoice Number", "Reason"], ["0001", "4"]])
    report = tmp_path / f"out{suffix}"
    batch_cancel.cancel(path, simulate=True, report=report)
    rows = batch_cancel.read_report(report)
    assert rows.loc[0, "Invoice Number"] == "0001" and rows.loc[0, "reason"] == "04"
    assert rows.loc[0, "attempts"] == "1"


def test_the_library_logs_nothing_unless_configured(sim, make_csv, tmp_path) -> None:
    """In a fresh process, a library call prints nothing; configure_logging turns JSON on."""
    import subprocess
    import sys

    path = make_csv([["invoice", "reason"], ["A1", "2"], ["A2", "2"]])
    script = (
        "import batch_cancel, sys\n"
        f"r = batch_cancel.cancel({str(path)!r}, simulate=True, report={str(tmp_path)!r} "
        "+ '/q.csv')\n"
        "assert r.exit_code == 0\n"
        "import io; buf = io.StringIO()\n"
        "batch_cancel.configure_logging(format='json', level='info', stream=buf)\n"
        f"batch_cancel.cancel({str(path)!r}, simulate=True, report={str(tmp_path)!r} "
        "+ '/l.csv')\n"
        "sys.stderr.write(buf.getvalue())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert lines[0]["event"] == "run.started"
    assert "run.finished" in [e["event"] for e in lines]


def test_verify_keyword_call_and_the_old_options_form(sim, make_csv, tmp_path) -> None:
    """`verify(report, ...)` gives a CommandResult; `verify(VerifyOptions)` still works, with
    a DeprecationWarning, and returns the 0.1 summary."""
    creds = Credentials(sim.config.client_id, sim.config.client_secret)
    path = make_csv([["invoice", "reason"], ["A1", "2"]])
    report = tmp_path / "r.csv"
    batch_cancel.cancel(path, base_url=sim.url, credentials=creds, report=report, rate=1000)
    result = batch_cancel.verify(report, base_url=sim.url, credentials=creds, until=5)
    assert result.exit_code == 0 and result.summary.counts == {"Cancelled": 1}
    assert list(result.rows["einvoice_status"]) == ["Cancelled"]
    with pytest.warns(DeprecationWarning):
        old = batch_cancel.verify(batch_cancel.VerifyOptions(
            report, resolve_target(None, sim.url, None, False), creds))
    assert old.all_cancelled


def test_the_airflow_example_callable_runs_a_file_and_fails_on_failing_codes(
        sim, make_csv, tmp_path, monkeypatch) -> None:
    """The example DAG's callable imports without Airflow, cancels one file per tenant, and
    raises on exit code 1; its retry (resume) keeps finished rows."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "airflow_cancel_dag", Path(__file__).parent.parent / "examples" / "airflow_cancel_dag.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("ZUORA_CLIENT_ID", sim.config.client_id)
    monkeypatch.setenv("ZUORA_CLIENT_SECRET", sim.config.client_secret)
    tenants = {"sim": {"base_url": sim.url}}
    good = make_csv([["invoice", "reason"], ["A1", "2"]], name="good.csv")
    summary = module.cancel_file("sim", str(good), str(tmp_path / "reports"), tenants=tenants,
                                 rate=1000)
    assert summary["exit_code"] == 0 and summary["counts"]["succeeded"] == 1
    bad = make_csv([["invoice", "reason"], ["B1", "2"], ["INV-NOTFOUND-1", "2"]],
                   name="bad.csv")
    with pytest.raises(module.CancelFailed, match="exit 1"):
        module.cancel_file("sim", str(bad), str(tmp_path / "reports"), tenants=tenants,
                           rate=1000)
    before = sim.stats.cancel_requests
    with pytest.raises(module.CancelFailed):  # the retry resumes: nothing is sent again
        module.cancel_file("sim", str(bad), str(tmp_path / "reports"), resume=True,
                           tenants=tenants, rate=1000)
    assert sim.stats.cancel_requests == before


def test_the_airflow_dag_parses_where_airflow_is_installed() -> None:
    """Only where Airflow is installed: the DAG file defines one DAG with mapped tasks."""
    pytest.importorskip("airflow")
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "airflow_cancel_dag", Path(__file__).parent.parent / "examples" / "airflow_cancel_dag.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.dag is not None
