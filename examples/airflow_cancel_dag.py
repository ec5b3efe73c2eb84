"""An Airflow DAG that cancels the e-invoices of several (tenant, file) pairs with batch-cancel.

One mapped task per (tenant, file), with Airflow's dynamic task mapping; an Airflow pool per
tenant (`zuora_<tenant>`, one slot) keeps two runs from sharing one tenant's concurrency
limit at once. Each task calls the library and fails on the exit codes that need a person:

* 0: done (every row succeeded or was skipped) - the task succeeds;
* 1: some rows failed or were invalid - the task fails, the report says which;
* 4: stopped by an outage or the daily quota - the task fails and Airflow's retry, which runs
  the same call with `resume=True`, carries on where it stopped;
* 5: the report could not be written - the task fails; the retry rebuilds it from the journal.

Credentials come from the environment of the worker (`ZUORA_CLIENT_ID`,
`ZUORA_CLIENT_SECRET`), never from task arguments, so they appear in no rendered template.

`cancel_file` is plain Python: it imports without Airflow, and the project's tests run it
against the built-in simulator. The DAG itself is defined only where Airflow is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import batch_cancel

#: Where each tenant's base URL comes from: an `--env` name, or a base URL for a proxy.
TENANTS: dict[str, dict[str, str]] = {
    "eu-sandbox": {"env": "sandbox-eu"},
    "mx-production": {"env": "production"},
}
#: The files to cancel, per tenant (in practice: listed from a bucket by an upstream task).
WORK: list[dict[str, str]] = [
    {"tenant": "eu-sandbox", "path": "/data/corrections/2026-10-eu.xlsx"},
    {"tenant": "mx-production", "path": "/data/corrections/2026-10-mx.xlsx"},
]


class CancelFailed(RuntimeError):
    """The run ended with an exit code that needs a person (or a retry with resume)."""


def cancel_file(tenant: str, path: str, report_dir: str, resume: bool = False,
                tenants: dict[str, dict[str, str]] | None = None,
                **limits: Any) -> dict[str, Any]:
    """Cancel one file on one tenant; return the summary (an XCom), raise on a failing code.

    The report goes to `report_dir/<tenant>/<file stem>.report.csv`; a retry passes
    `resume=True` so rows already finished are kept and rows in doubt are read first.
    """
    target = (tenants or TENANTS)[tenant]
    report = Path(report_dir) / tenant / f"{Path(path).stem}.report.csv"
    report.parent.mkdir(parents=True, exist_ok=True)
    fresh = not resume and not report.exists()
    result = batch_cancel.cancel(path, report=report, resume=not fresh,
                                 env=target.get("env"), base_url=target.get("base_url"),
                                 **limits)
    summary = {"tenant": tenant, "path": path, "report": result.summary.report_path,
               "exit_code": result.exit_code, "counts": dict(result.summary.counts)}
    if result.exit_code != batch_cancel.ExitCode.OK:
        raise CancelFailed(f"{tenant} {path}: exit {result.exit_code} "
                           f"({result.summary.stop_reason or 'see the report'}): {summary}")
    return summary


try:  # the DAG needs Airflow; the callable above does not
    from airflow.sdk import dag, task
except ImportError:  # pragma: no cover - Airflow is not installed in the project's CI
    dag = None

if dag is not None:  # pragma: no cover - parsed only where Airflow is installed

    @dag(schedule="30 2 1 * *", catchup=False, tags=["zuora", "e-invoice"])
    def cancel_month_end_einvoices() -> None:
        """Cancel last month's corrections, one mapped task per (tenant, file)."""

        @task(retries=2, max_active_tis_per_dagrun=len(TENANTS))
        def cancel_one(item: dict[str, str], ti: Any = None) -> dict[str, Any]:
            resume = ti is not None and ti.try_number > 1
            return cancel_file(item["tenant"], item["path"], "/data/reports", resume=resume)

        # one pool per tenant, created by an admin: `airflow pools set zuora_<tenant> 1 ...`
        for tenant in TENANTS:
            items = [w for w in WORK if w["tenant"] == tenant]
            cancel_one.override(task_id=f"cancel_{tenant.replace('-', '_')}",
                                pool=f"zuora_{tenant}").expand(item=items)

    cancel_month_end_einvoices()
