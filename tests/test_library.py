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


# --- DataFrames and Parquet as input --------------------------------------------------------


def test_a_dataframe_goes_through_the_same_rules_as_a_file(sim, tmp_path) -> None:
    """Aliases, normalisation, validation and duplicates apply to a frame; its index labels
    are the report's row numbers; exactly the valid keys are sent."""
    import pandas as pd

    frame = pd.DataFrame({"Número de factura": [" INV1 ", "INV2", "inv1", "INV 4"],
                          "Motivo": ["4", "04", "02", "01"]}, index=[10, 11, 12, 13])
    creds = Credentials(sim.config.client_id, sim.config.client_secret)
    result = batch_cancel.cancel(frame, base_url=sim.url, credentials=creds,
                                 report=tmp_path / "r.csv", rate=1000)
    rows = result.rows
    assert list(rows["row"]) == ["10", "11", "12", "13"]
    assert list(rows["status"]) == ["succeeded", "succeeded", "duplicate", "invalid"]
    assert list(rows["reason"][:2]) == ["04", "04"]
    assert sorted(r.key for r in sim.stats.cancels()) == ["INV1", "INV2"]
    assert result.exit_code == 1


def test_a_numeric_key_column_is_refused_unless_numbers_as_text(sim, tmp_path) -> None:
    """An int key column has lost its leading zeros: refused with the fix named, or sent as
    it prints with numbers_as_text=True."""
    import pandas as pd

    frame = pd.DataFrame({"invoice": [42, 43], "reason": ["04", "04"]})
    with pytest.raises(batch_cancel.UsageError, match=r"astype\(str\)"):
        batch_cancel.cancel(frame, simulate=True, report=tmp_path / "r.csv")
    assert sim.stats.requests == []
    numeric_reason = pd.DataFrame({"invoice": ["A1"], "reason": [4]})
    with pytest.raises(batch_cancel.UsageError, match="reason 04"):
        batch_cancel.cancel(numeric_reason, simulate=True, report=tmp_path / "r2.csv")
    creds = Credentials(sim.config.client_id, sim.config.client_secret)
    result = batch_cancel.cancel(frame, base_url=sim.url, credentials=creds,
                                 report=tmp_path / "r3.csv", numbers_as_text=True, rate=1000)
    assert result.exit_code == 0
    assert sorted(r.key for r in sim.stats.cancels()) == ["42", "43"]


def test_a_dataframe_needs_a_report_path() -> None:
    """The report and its journal are the record of what was filed: no report, no run."""
    import pandas as pd

    with pytest.raises(batch_cancel.UsageError, match="report"):
        batch_cancel.cancel(pd.DataFrame({"invoice": ["A1"], "reason": ["04"]}), simulate=True)


def test_run_options_take_a_dataframe_too(sim, tmp_path) -> None:
    """The 0.1 API: `RunOptions(input_path=df)` runs instead of raising TypeError."""
    import pandas as pd

    summary = batch_cancel.run(RunOptions(
        input_path=pd.DataFrame({"invoice": ["A1"], "reason": ["02"]}),
        target=resolve_target(None, sim.url, None, False),
        credentials=Credentials(sim.config.client_id, sim.config.client_secret),
        report_path=tmp_path / "r.csv", settings=Settings(rate=1000), handle_signals=False))
    assert summary.counts[Status.SUCCEEDED] == 1


def test_a_parquet_file_is_an_input_with_positions_as_row_numbers(sim, tmp_path) -> None:
    """A warehouse export in Parquet: read as text, rows numbered from 1, keys sent."""
    import pandas as pd

    source = tmp_path / "export.parquet"
    pd.DataFrame({"Invoice.InvoiceNumber": ["INV-P1", "INV-P2"],
                  "Invoice.Id": ["8a1", "8a2"], "reason": ["03", "03"]}).to_parquet(source)
    creds = Credentials(sim.config.client_id, sim.config.client_secret)
    result = batch_cancel.cancel(source, base_url=sim.url, credentials=creds,
                                 report=tmp_path / "r.parquet", rate=1000)
    assert result.exit_code == 0
    assert list(result.rows["row"]) == ["1", "2"]
    assert sorted(r.key for r in sim.stats.cancels()) == ["INV-P1", "INV-P2"]


def test_preflight_call_writes_the_plan_and_sends_nothing(sim, tmp_path) -> None:
    """`preflight(df, check_invoices=True)`: already-cancelled rows skipped, not found failed,
    cancelable not_attempted; only reads reach Zuora."""
    import pandas as pd

    frame = pd.DataFrame({"invoice": ["A1", "INV-CANCELLED-1", "INV-NOTFOUND-1"],
                          "reason": ["02", "02", "02"]})
    creds = Credentials(sim.config.client_id, sim.config.client_secret)
    result = batch_cancel.preflight(frame, base_url=sim.url, credentials=creds,
                                    check_invoices=True, report=tmp_path / "plan.csv")
    assert list(result.rows["status"]) == ["not_attempted", "skipped", "failed"]
    assert result.summary.counts["skipped"] == 1 and result.exit_code == 0
    assert sim.stats.cancel_requests == 0 and sim.stats.invoice_reads == 3


def test_the_readme_notebook_example_runs_as_printed(tmp_path, monkeypatch, capsys) -> None:
    """The README's Python block runs against the simulator and prints what it shows."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("<!-- ci:python-example -->\n```python\n", 1)[1].split("\n```", 1)[0]
    expected = [line[2:] for line in block.splitlines() if line.startswith("# ")
                and not line.startswith("# the ") and not line.startswith("# correct ")]
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed == expected


def test_preflight_and_verify_calls_run_on_the_built_in_simulator(tmp_path, monkeypatch) -> None:
    """`simulate=True` serves `preflight` and `verify` as it serves `cancel`: no credentials."""
    monkeypatch.delenv("ZUORA_CLIENT_ID", raising=False)
    monkeypatch.delenv("ZUORA_CLIENT_SECRET", raising=False)
    path = tmp_path / "in.csv"
    path.write_text("invoice,reason\nA1,02\nINV-CANCELLED-1,02\n")
    plan = batch_cancel.preflight(path, simulate=True, check_invoices=True,
                                  report=tmp_path / "plan.csv", entity_ids="E-1")
    assert list(plan.rows["preflight"]) == ["cancelable", "already_cancelled_or_in_progress"]
    assert plan.exit_code == 0
    ran = batch_cancel.cancel(path, simulate=True, report=tmp_path / "r.csv")
    assert ran.exit_code == 0
    checked = batch_cancel.verify(tmp_path / "r.csv", simulate=True, until=0)
    assert checked.exit_code == 6  # a fresh simulator never saw the cancel: still Success
    assert checked.summary.counts == {"Success": 1}


def test_a_call_keeps_the_callers_log_context_and_takes_its_run_id_away(tmp_path) -> None:
    """The caller's bound context variables stay as they were; no run_id outlives a call."""
    import structlog

    path = tmp_path / "in.csv"
    path.write_text("invoice,reason\nA1,02\n")
    with structlog.contextvars.bound_contextvars(dag="nightly"):
        assert batch_cancel.cancel(path, simulate=True, report=tmp_path / "r.csv").exit_code == 0
        batch_cancel.verify(tmp_path / "r.csv", simulate=True, until=0)
        assert structlog.contextvars.get_contextvars() == {"dag": "nightly"}
    assert "run_id" not in structlog.contextvars.get_contextvars()


def test_cancel_takes_the_concurrency_algorithm_and_refuses_an_unknown_one(tmp_path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("invoice,reason\nA1,2\nA2,3\n")
    result = batch_cancel.cancel(path, simulate=True, report=tmp_path / "r.csv",
                                 concurrency_algorithm="gradient2")
    assert result.summary.counts["succeeded"] == 2
    with pytest.raises(batch_cancel.UsageError, match="concurrency-algorithm"):
        batch_cancel.cancel(path, simulate=True, report=tmp_path / "r2.csv",
                            concurrency_algorithm="vegas")
    assert not (tmp_path / "r2.csv").exists()
