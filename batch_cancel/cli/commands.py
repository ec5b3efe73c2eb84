"""`run`, `preflight` and `verify`: each reads its option groups, makes one library call, and
turns what came back into lines on the terminal and an exit code."""

from __future__ import annotations

import asyncio
import gc
import os
import shlex
import sys
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from .. import api
from ..config import DEFAULT_GRACE, Settings, Target
from ..model import ExitCode, Summary, exit_code
from ..plan import Plan, RunError, RunOptions, prepare
from ..preflight import PreflightOptions, PreflightResult, load_input, pace_line, preflight_async
from ..progress import ConsoleLines, RichProgress, make_console, plan_pace, plan_text, summary_text
from ..read.loader import InputError, LoadOptions
from ..record.paths import ReportError
from ..send.zuora import AuthenticationError
from ..verify import VERIFY_CONCURRENCY, VERIFY_UNTIL, VerifyOptions, load_report, verify_async
from .options import (
    LogChoice,
    UsageFailure,
    credentials,
    input_column_options,
    output_options,
    profile_options,
    profile_path,
    settings_options,
    target_options,
)

T = TypeVar("T")

#: Every limit `run` takes (preflight and verify read Zuora under a few of them).
RUN_LIMITS = ("concurrency", "tenant_share", "concurrency_429", "concurrency_algorithm",
              "rate", "max_attempts", "timeout", "outage_window", "track_id_prefix")


def _client_secret() -> str:
    return os.environ.get("ZUORA_CLIENT_SECRET", "")


def _authenticated(call: Coroutine[Any, Any, T]) -> T:
    """Run a command's library call; a refused login is exit 3, said on stderr."""
    try:
        return asyncio.run(call)
    except AuthenticationError as exc:
        click.echo(f"authentication failed: {exc}", err=True)
        sys.exit(ExitCode.AUTH)


@click.command("run")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--report", "report_path", type=click.Path(path_type=Path),
              help="The outcome report: .csv, .xlsx, .jsonl or .parquet "
                   "(default: <input stem>.report.csv beside the input).")
@target_options
@settings_options(*RUN_LIMITS)
@input_column_options(rerun=True)
@click.option("--dry-run", is_flag=True, help="Read, validate and print the plan; send nothing.")
@click.option("--yes", is_flag=True,
              help="Do not ask for confirmation (asked before cancelling on a production env).")
@click.option("--resume", is_flag=True,
              help="Continue the run recorded in the report's journal (same INPUT and "
                   "--report): finished rows are kept, rows in doubt are checked first.")
@click.option("--overwrite", is_flag=True,
              help="Start again, replacing an existing report and its journal.")
@click.option("--grace", type=float, default=DEFAULT_GRACE, show_default=True,
              help="Seconds in-flight requests may take after Ctrl-C / SIGTERM.")
@output_options
@click.option("--no-progress", is_flag=True, help="No live progress display.")
@profile_options
def run_command(input_path: Path, report_path: Path | None, target: Target, settings: Settings,
                load: LoadOptions, dry_run: bool, yes: bool, resume: bool, overwrite: bool,
                grace: float, logging: LogChoice, no_progress: bool) -> None:
    """Cancel the e-invoices listed in INPUT and write a report of every row.

    INPUT is a .csv, .tsv, .txt, .xlsx, .xlsm, .ods or .parquet file, or an earlier report
    (.csv, .xlsx, .jsonl, .parquet). Rows hidden or filtered out in the sheet are skipped
    unless --include-hidden.
    Credentials come from ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET only.
    """
    interactive = sys.stdout.isatty() and sys.stderr.isatty()
    console = make_console(sys.stderr)
    progress = RichProgress(console) if interactive and not no_progress and not dry_run else None
    stream = ConsoleLines(console) if progress else sys.stderr
    logging.configure([_client_secret()], stream)
    folder = profile_path("report_folder")
    if report_path is None and folder is not None:
        report_path = folder / f"{input_path.stem}.report.csv"
    keys = None if target.name == "simulator" or dry_run else credentials()
    if keys is not None and keys.client_secret != _client_secret():
        logging.configure([keys.client_secret], stream)  # the secrets file's: mask it too
    options = RunOptions(input_path=input_path, target=target, credentials=keys,
                         report_path=report_path, load=load, settings=settings,
                         dry_run=dry_run, overwrite=overwrite, resume=resume, grace=grace,
                         progress=progress)
    plan = _prepare(options)
    if dry_run:
        _dry_run(options, plan)
    if target.is_production and not yes:
        _confirm_production(target.base_url, settings.entity_ids)
    try:
        summary = api.run(options, plan)
    except KeyboardInterrupt:  # a Ctrl-C outside the run's own handlers (start-up, shutdown)
        click.echo(f"Interrupted; the report, if written, is at {options.report}", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    _closing_lines(options, summary)
    sys.exit(exit_code(summary))


@contextmanager
def _collector_held() -> Iterator[None]:
    """Hold the cyclic garbage collector while a file becomes rows, then freeze those rows.

    The command line owns its process, so it may do what a library call must not (the library
    leaves the collector alone): at 1,000,000 rows the collector would otherwise walk the
    growing rows about 17 times while they are built (twice the load time), and again in every
    full collection of the run. The frozen rows live until the process ends anyway.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _prepare(options: RunOptions) -> Plan:
    """The plan, printed; a problem with the input, report or journal is exit 2."""
    try:
        with _collector_held():
            plan = prepare(options)
    except (InputError, ReportError, RunError) as exc:
        raise UsageFailure(str(exc)) from None
    target, rate = options.target, options.settings.rate
    click.echo(plan_text(plan.loaded, target, target.base_url or "(built-in simulator)",
                         plan.journal, plan_pace(rate, target.default_rate),
                         report=options.report_path if options.dry_run else options.report,
                         no_report=" (pass --report FILE to list every one)"))
    return plan


def _dry_run(options: RunOptions, plan: Plan) -> NoReturn:
    summary = api.run(options, plan)
    click.echo("Dry run: nothing sent.")
    if options.report_path is not None:
        click.echo(f"Plan report: {options.report_path} (every row and what a run would do; "
                   f"`run {options.report_path} --only not_attempted` sends exactly those rows)")
    sys.exit(exit_code(summary))


def _closing_lines(options: RunOptions, summary: Summary) -> None:
    """The summary, and what to do next when the run did not finish."""
    click.echo(summary_text(summary))
    if summary.report_error:
        click.echo(f"Could not write the report {options.report} ({summary.report_error}). "
                   f"Every outcome is in the journal {options.journal}; rebuild the report "
                   f"(nothing is sent again) with: {_resume_command()}")
    elif summary.stop_kind in ("outage", "quota", "interrupted"):
        click.echo("To continue later, run the same command with --resume.")


def _resume_command() -> str:
    """The command as typed, with --resume instead of --overwrite (secrets are never flags)."""
    ctx = click.get_current_context()
    argv = [a for a in ctx.meta.get("batch_cancel.argv", []) if a != "--overwrite"]
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join([ctx.find_root().info_name or "batch-cancel", *argv])


def _confirm_production(base_url: str, entity_ids: str) -> None:
    """Ask before cancelling on production; refuse when nobody can answer."""
    if not sys.stdin.isatty():
        raise UsageFailure("refusing to cancel on a production tenant without confirmation: "
                           "stdin is not a terminal; pass --yes to confirm")
    entity = f" (entity {entity_ids})" if entity_ids else ""
    if not click.confirm(f"Cancel these e-invoices on PRODUCTION {base_url}{entity}?"):
        raise UsageFailure("not confirmed; nothing sent")


@click.command("preflight")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--check-invoices", is_flag=True,
              help="Also read each invoice from Zuora and say whether it can be cancelled.")
@click.option("--report", "report_path", type=click.Path(path_type=Path),
              help="The preflight report (default: <input stem>.preflight.csv beside the input).")
@target_options
@input_column_options()
@settings_options("concurrency", "tenant_share", "rate")
@output_options
@profile_options
def preflight_command(input_path: Path, check_invoices: bool, report_path: Path | None,
                      target: Target, load: LoadOptions, settings: Settings,
                      logging: LogChoice) -> None:
    """Say what `run` would do with INPUT, without cancelling anything.

    Validates the file as run does and, with --check-invoices, reads every invoice: cancelable,
    already cancelled or in progress, not found, or not cancelable. Prints counts, the tenant
    and the estimated duration; writes a report whose cancelable rows are not_attempted, so
    `run REPORT --only not_attempted` sends exactly those.
    """
    logging.configure([_client_secret()])
    options = PreflightOptions(input_path, target, report_path=report_path, load=load,
                               settings=settings, check_invoices=check_invoices)
    try:
        with _collector_held():
            loaded = load_input(options)
    except InputError as exc:
        raise UsageFailure(str(exc)) from None
    click.echo(plan_text(loaded, target, target.base_url or "(built-in simulator)",
                         report=options.report))
    if check_invoices and target.name != "simulator":
        options.credentials = credentials()
    result = _authenticated(preflight_async(options, loaded))
    _preflight_lines(options, result)
    sys.exit(result.exit_code)


def _preflight_lines(options: PreflightOptions, result: PreflightResult) -> None:
    for verdict, count in sorted(result.counts.items()):
        click.echo(f"  {verdict:<34}{count:>8}")
    click.echo(pace_line(result))
    rate = result.rate
    click.echo(f"Would send {result.to_send} cancels; estimated {result.estimated_seconds:.0f} s "
               f"at {options.settings.concurrency} in flight at most"
               + (f", {rate:g}/s" if rate else ""))
    click.echo(f"Report: {options.report}")


@click.command("verify")
@click.argument("report_path", metavar="REPORT", type=click.Path(path_type=Path))
@click.option("--report", "output_path", type=click.Path(path_type=Path),
              help="Write the verified report here (default: rewrite REPORT in place).")
@target_options
@click.option("--until", type=float, default=VERIFY_UNTIL, show_default=True,
              help="Seconds to keep polling before writing what is known.")
@settings_options("concurrency", "rate", "timeout", concurrency=VERIFY_CONCURRENCY)
@output_options
@profile_options
def verify_command(report_path: Path, output_path: Path | None, target: Target, until: float,
                   settings: Settings, logging: LogChoice) -> None:
    """Follow the succeeded rows of REPORT until the tax authority has answered.

    Reads each accepted cancel's e-invoice until it is Cancelled or CancelFailed (or --until
    passes) and writes the report again with einvoice_status, einvoice_error_code,
    einvoice_error_message and verified_at. CancelFailed rows get the status cancel_failed:
    send them again with `run REPORT --only cancel_failed`. Exit 0 when all reached Cancelled,
    1 when some ended CancelFailed, 6 when some are still pending (run verify again later).
    """
    logging.configure([_client_secret()])
    settings = _with_rate(settings, target)
    try:
        loaded = load_report(report_path)
    except InputError as exc:
        raise UsageFailure(str(exc)) from None
    keys = None if target.name == "simulator" else credentials()
    options = VerifyOptions(report_path, target, keys, output_path, settings, until)
    try:
        summary = _authenticated(verify_async(options, loaded))
    except ReportError as exc:
        raise UsageFailure(str(exc)) from None
    counts = ", ".join(f"{k}={v}" for k, v in sorted(summary.counts.items())) or "none"
    click.echo(f"Verified {summary.checked} accepted cancels: {counts}")
    click.echo(f"Report: {summary.report_path}")
    if summary.pending and not summary.any_refused:
        click.echo(f"{summary.pending} still pending: run verify again later.")
    sys.exit(summary.exit_code)


def _with_rate(settings: Settings, target: Target) -> Settings:
    """`verify` paces its reads at the target's default rate unless --rate names one."""
    return replace(settings, rate=target.start_rate(settings.rate))
