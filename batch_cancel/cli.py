"""The command line: parse, read env vars, confirm, call the library, map results to exit codes.

Exit codes: 0 every row succeeded (or is a duplicate of a row that did); 1 the run finished and
some rows failed, were invalid or not attempted; 2 bad input or usage, nothing sent;
3 authentication failed, run aborted; 4 stopped early by a Zuora outage or an exhausted daily
quota (resume later); 130 interrupted.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from . import __version__, api, logs
from .config import (
    CONCURRENCY_429_MODES,
    DEFAULT_CONCURRENCY,
    DEFAULT_GRACE,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_OUTAGE_WINDOW,
    DEFAULT_TENANT_SHARE,
    DEFAULT_TIMEOUT,
    ENVIRONMENTS,
    PROFILE_EXTRAS,
    PROFILE_KEYS,
    ConfigError,
    Settings,
    Target,
    load_profile,
    read_secrets_file,
    resolve_target,
)
from .model import ExitCode, Status
from .progress import (
    ConsoleLines,
    RichProgress,
    make_console,
    plan_pace,
    plan_text,
    summary_text,
)
from .read.loader import InputError, LoadOptions
from .record.paths import ReportError
from .send.zuora import AuthenticationError, Credentials

EXIT_USAGE = ExitCode.USAGE
EXIT_INTERRUPTED = ExitCode.INTERRUPTED


class UsageFailure(click.ClickException):
    """A problem with the input or the options: exit 2, nothing sent."""

    exit_code = EXIT_USAGE


def _statuses(value: str | None) -> frozenset[Status] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    try:
        return frozenset(Status(name) for name in names)
    except ValueError:
        raise UsageFailure(f"--only {value!r}: use a comma-separated list of "
                           f"{', '.join(s.value for s in Status)}") from None


class _RecordingGroup(click.Group):
    """Keeps the arguments as typed, so a message can give the exact command to run next."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["batch_cancel.argv"] = list(args)
        return super().parse_args(ctx, args)


def _resume_command() -> str:
    """The command as typed, with --resume instead of --overwrite (secrets are never flags)."""
    ctx = click.get_current_context()
    argv = [a for a in ctx.meta.get("batch_cancel.argv", []) if a != "--overwrite"]
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join([ctx.find_root().info_name or "batch-cancel", *argv])


@click.group(cls=_RecordingGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="batch-cancel")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="TOML file of named profiles (default: config.toml in the user's config "
                   "folder, e.g. ~/.config/batch-cancel/).")
@click.option("--profile", help="Profile to use from the config file (default: 'default', "
                                "if the file has one).")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, profile: str | None) -> None:
    """Cancel Zuora e-invoices in bulk from a spreadsheet, with a per-invoice report."""
    path = config_path or Path(click.get_app_dir("batch-cancel")) / "config.toml"
    ctx.obj = {}
    if config_path is None and profile is None and not path.exists():
        return  # no config file: nothing to apply
    try:
        values = load_profile(path, profile)
    except ConfigError as exc:
        raise UsageFailure(str(exc)) from None
    defaults = {PROFILE_KEYS[key]: value for key, value in values.items() if key in PROFILE_KEYS}
    ctx.default_map = {name: dict(defaults) for name in ("run", "verify", "preflight")}
    ctx.obj = {key: Path(str(values[key])).expanduser() for key in PROFILE_EXTRAS
               if key in values}


def _target(env_name: str | None, base_url: str | None, simulate: bool) -> Target:
    """The target; a flag on the command line replaces the profile's target, never adds to it."""
    ctx = click.get_current_context()

    def from_profile(name: str) -> bool:
        return ctx.get_parameter_source(name) is ParameterSource.DEFAULT_MAP

    explicit = simulate or any(value and not from_profile(name) for name, value in
                               (("env_name", env_name), ("base_url", base_url)))
    if explicit:
        env_name = None if from_profile("env_name") else env_name
        base_url = None if from_profile("base_url") else base_url
    try:
        return resolve_target(env_name, base_url, os.environ.get("ZUORA_BASE_URL"), simulate)
    except ConfigError as exc:
        raise UsageFailure(str(exc)) from None


def _profile_path(key: str) -> Path | None:
    obj = click.get_current_context().find_root().obj or {}
    value = obj.get(key)
    return value if isinstance(value, Path) else None


@main.command("run")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--sheet", help="Sheet of a workbook to read (default: the first one not hidden).")
@click.option("--report", "report_path", type=click.Path(path_type=Path),
              help="The outcome report: .csv, .xlsx, .jsonl or .parquet "
                   "(default: <input stem>.report.csv beside the input).")
@click.option("--env", "env_name", type=click.Choice(list(ENVIRONMENTS)), metavar="NAME",
              help="A named Zuora environment: " + " | ".join(ENVIRONMENTS) + ".")
@click.option("--base-url", help="Any Zuora-compatible base URL (also env ZUORA_BASE_URL); "
                                 "OAuth at {base}/oauth/token.")
@click.option("--simulate", is_flag=True,
              help="Run against the built-in simulator, started in-process on loopback.")
@click.option("--concurrency", type=int, default=DEFAULT_CONCURRENCY, show_default=True,
              help="Most requests in flight (Zuora's default tenant limit is 40, shared with "
                   "every other integration).")
@click.option("--tenant-share", type=float, default=DEFAULT_TENANT_SHARE, show_default=True,
              help="Most of the tenant's advertised limits this run may use: of its "
                   "concurrency limit (Concurrency-Limit-Limit) and of the rate of its tightest "
                   "RateLimit window; the rest stays for other integrations.")
@click.option("--concurrency-429", "concurrency_429", type=click.Choice(CONCURRENCY_429_MODES),
              default="shrink", show_default=True,
              help="On a concurrency 429 (code 50000070): shrink the window and retry the row "
                   "soon (the pool pauses for Retry-After only at a window of 1), or pause the "
                   "whole pool for Retry-After (Zuora's 120 s) every time.")
@click.option("--rate", type=float, help="Most requests started per second, a ceiling: the "
              "pace follows the tenant's RateLimit headers below it, no start-up burst "
              "(without it, the run starts at the target's default until the first answer: "
              "sandbox 20, central-sandbox 100, production 400, base URL 100, simulator "
              "unpaced).")
@click.option("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS, show_default=True,
              help="Per row, the first try included.")
@click.option("--timeout", type=float, default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds per request.")
@click.option("--only", help="With a report as INPUT: re-run only rows whose status is in this "
              "comma-separated list (default: failed,not_attempted,invalid).")
@click.option("--include-final", is_flag=True,
              help="With a report as INPUT: also re-send failed rows whose answer was final "
              "(not found, not cancelable) that you did not edit.")
@click.option("--require-reference", is_flag=True,
              help="Reason 01 rows without a documentReferenceID are invalid (default: a "
              "warning).")
@click.option("--dry-run", is_flag=True, help="Read, validate and print the plan; send nothing.")
@click.option("--yes", is_flag=True,
              help="Do not ask for confirmation (asked before cancelling on a production env).")
@click.option("--resume", is_flag=True,
              help="Continue the run recorded in the report's journal (same INPUT and "
                   "--report): finished rows are kept, rows in doubt are checked first.")
@click.option("--overwrite", is_flag=True,
              help="Start again, replacing an existing report and its journal.")
@click.option("--outage-window", type=float, default=DEFAULT_OUTAGE_WINDOW, show_default=True,
              help="Seconds of Zuora outage to wait out, probing, before stopping cleanly.")
@click.option("--grace", type=float, default=DEFAULT_GRACE, show_default=True,
              help="Seconds in-flight requests may take after Ctrl-C / SIGTERM.")
@click.option("--key-column", help="Column holding the invoice key (default: found by name).")
@click.option("--reason-column", help="Column holding the reason code.")
@click.option("--reference-column", help="Column holding the documentReferenceID.")
@click.option("--reason", "default_reason", help="Reason code (01-04) for rows without one.")
@click.option("--encoding", help="Text encoding of a CSV (default: detected).")
@click.option("--header-row", type=click.IntRange(min=1), metavar="N",
              help="Row number of the header (default: the first row naming the key column).")
@click.option("--include-hidden", is_flag=True,
              help="Also send rows hidden or filtered out in the sheet (default: skipped).")
@click.option("--track-id-prefix", default="bc", show_default=True,
              help="Prefix of each row's Zuora-Track-Id (then the run id and the row number).")
@click.option("--entity-ids", default="", help="Zuora-Entity-Ids header (multi-entity).")
@click.option("--org-ids", default="", help="Zuora-Org-Ids header (multi-org).")
@click.option("--zuora-version", default="", help="Zuora-Version header.")
@click.option("--log-format", type=click.Choice(logs.LOG_FORMATS),
              help="console or json (default: console at a terminal, else json).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="Least severe event logged.")
@click.option("--no-progress", is_flag=True, help="No live progress display.")
def run_command(input_path: Path, sheet: str | None, report_path: Path | None,
                env_name: str | None, base_url: str | None, simulate: bool, concurrency: int,
                tenant_share: float, concurrency_429: str, rate: float | None,
                max_attempts: int, timeout: float, only: str | None,
                include_final: bool, require_reference: bool, dry_run: bool, yes: bool,
                resume: bool, overwrite: bool,
                outage_window: float, grace: float, key_column: str | None,
                reason_column: str | None, reference_column: str | None,
                default_reason: str | None, encoding: str | None, header_row: int | None,
                include_hidden: bool, track_id_prefix: str,
                entity_ids: str, org_ids: str, zuora_version: str, log_format: str | None,
                log_level: str, no_progress: bool) -> None:
    """Cancel the e-invoices listed in INPUT and write a report of every row.

    INPUT is a .csv, .tsv, .txt, .xlsx, .xlsm, .ods or .parquet file, or an earlier report
    (.csv, .xlsx, .jsonl, .parquet). Rows hidden or filtered out in the sheet are skipped
    unless --include-hidden.
    Credentials come from ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET only.
    """
    client_secret = os.environ.get("ZUORA_CLIENT_SECRET", "")
    interactive = sys.stdout.isatty() and sys.stderr.isatty()
    console = make_console(sys.stderr)
    progress = RichProgress(console) if interactive and not no_progress and not dry_run else None
    logs.configure(log_format or ("console" if sys.stderr.isatty() else "json"), log_level,
                   secrets=[client_secret],
                   stream=ConsoleLines(console) if progress else sys.stderr)
    target = _target(env_name, base_url, simulate)
    folder = _profile_path("report_folder")
    if report_path is None and folder is not None:
        report_path = folder / f"{input_path.stem}.report.csv"
    try:
        settings = Settings(concurrency=concurrency, rate=rate, max_attempts=max_attempts,
                            timeout=timeout, track_id_prefix=track_id_prefix,
                            entity_ids=entity_ids, org_ids=org_ids, zuora_version=zuora_version,
                            outage_window=outage_window, tenant_share=tenant_share,
                            concurrency_429=concurrency_429)
    except ConfigError as exc:
        raise UsageFailure(str(exc)) from None
    credentials = None if simulate or dry_run else _credentials()
    if credentials is not None and credentials.client_secret != client_secret:
        # read from the profile's secrets file: mask that secret in every log line too
        logs.configure(log_format or ("console" if sys.stderr.isatty() else "json"), log_level,
                       secrets=[credentials.client_secret],
                       stream=ConsoleLines(console) if progress else sys.stderr)
    options = api.RunOptions(
        input_path=input_path, target=target, credentials=credentials, report_path=report_path,
        load=LoadOptions(sheet=sheet, encoding=encoding, key_column=key_column,
                         reason_column=reason_column, reference_column=reference_column,
                         default_reason=default_reason, only=_statuses(only),
                         require_reference=require_reference, include_final=include_final,
                         include_hidden=include_hidden, header_row=header_row),
        settings=settings, dry_run=dry_run, overwrite=overwrite, resume=resume, grace=grace,
        progress=progress,
    )
    try:
        plan = api.prepare(options)
    except (InputError, ReportError, api.RunError) as exc:
        raise UsageFailure(str(exc)) from None
    plan_report = options.report if not dry_run else report_path
    click.echo(plan_text(plan.loaded, target, target.base_url or "(built-in simulator)",
                         plan.journal, plan_pace(rate, target.default_rate),
                         report=plan_report,
                         no_report=" (pass --report FILE to list every one)"))
    if dry_run:
        summary = api.run(options, plan)
        click.echo("Dry run: nothing sent.")
        if report_path is not None:
            click.echo(f"Plan report: {report_path} (every row and what a run would do; "
                       f"`run {report_path} --only not_attempted` sends exactly those rows)")
        sys.exit(api.exit_code(summary))
    if target.is_production and not yes:
        _confirm_production(target.base_url, entity_ids)
    try:
        summary = api.run(options, plan)
    except KeyboardInterrupt:  # a Ctrl-C outside the run's own handlers (start-up, shutdown)
        click.echo(f"Interrupted; the report, if written, is at {options.report}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    click.echo(summary_text(summary))
    if summary.report_error:
        click.echo(f"Could not write the report {options.report} ({summary.report_error}). "
                   f"Every outcome is in the journal {options.journal}; rebuild the report "
                   f"(nothing is sent again) with: {_resume_command()}")
    elif summary.stop_kind in ("outage", "quota", "interrupted"):
        click.echo("To continue later, run the same command with --resume.")
    sys.exit(api.exit_code(summary))


def _confirm_production(base_url: str, entity_ids: str) -> None:
    """Ask before cancelling on production; refuse when nobody can answer."""
    if not sys.stdin.isatty():
        raise UsageFailure("refusing to cancel on a production tenant without confirmation: "
                           "stdin is not a terminal; pass --yes to confirm")
    entity = f" (entity {entity_ids})" if entity_ids else ""
    if not click.confirm(f"Cancel these e-invoices on PRODUCTION {base_url}{entity}?"):
        raise UsageFailure("not confirmed; nothing sent")


@main.command("preflight")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--check-invoices", is_flag=True,
              help="Also read each invoice from Zuora and say whether it can be cancelled.")
@click.option("--report", "report_path", type=click.Path(path_type=Path),
              help="The preflight report (default: <input stem>.preflight.csv beside the input).")
@click.option("--env", "env_name", type=click.Choice(list(ENVIRONMENTS)), metavar="NAME",
              help="A named Zuora environment (as for run).")
@click.option("--base-url", help="Any Zuora-compatible base URL (also env ZUORA_BASE_URL).")
@click.option("--sheet", help="Sheet of a workbook to read (default: the first one not hidden).")
@click.option("--key-column", help="Column holding the invoice key.")
@click.option("--reason-column", help="Column holding the reason code.")
@click.option("--reference-column", help="Column holding the documentReferenceID.")
@click.option("--reason", "default_reason", help="Reason code (01-04) for rows without one.")
@click.option("--require-reference", is_flag=True,
              help="Reason 01 rows without a documentReferenceID are invalid (default: a "
              "warning).")
@click.option("--encoding", help="Text encoding of a CSV (default: detected).")
@click.option("--header-row", type=click.IntRange(min=1), metavar="N",
              help="Row number of the header (default: the first row naming the key column).")
@click.option("--include-hidden", is_flag=True,
              help="Also count rows hidden or filtered out in the sheet (default: skipped).")
@click.option("--concurrency", type=int, default=DEFAULT_CONCURRENCY, show_default=True,
              help="Most requests in flight.")
@click.option("--tenant-share", type=float, default=DEFAULT_TENANT_SHARE, show_default=True,
              help="Most of the tenant's concurrency limit to use.")
@click.option("--rate", type=float, help="Most requests started per second (default per target).")
@click.option("--log-format", type=click.Choice(logs.LOG_FORMATS),
              help="console or json (default: console at a terminal, else json).")
def preflight_command(input_path: Path, check_invoices: bool, report_path: Path | None,
                      env_name: str | None, base_url: str | None, sheet: str | None,
                      key_column: str | None, reason_column: str | None,
                      reference_column: str | None, default_reason: str | None,
                      require_reference: bool, encoding: str | None,
                      header_row: int | None, include_hidden: bool,
                      concurrency: int, tenant_share: float,
                      rate: float | None, log_format: str | None) -> None:
    """Say what `run` would do with INPUT, without cancelling anything.

    Validates the file as run does and, with --check-invoices, reads every invoice: cancelable,
    already cancelled or in progress, not found, or not cancelable. Prints counts, the tenant
    and the estimated duration; writes a report whose cancelable rows are not_attempted, so
    `run REPORT --only not_attempted` sends exactly those.
    """
    from .plan import PreflightOptions, load_input, plan_exit_code, preflight_async

    logs.configure(log_format or ("console" if sys.stderr.isatty() else "json"),
                   secrets=[os.environ.get("ZUORA_CLIENT_SECRET", "")])
    target = _target(env_name, base_url, False)
    try:
        options = PreflightOptions(
            input_path, target, report_path=report_path, check_invoices=check_invoices,
            settings=Settings(concurrency=concurrency, tenant_share=tenant_share, rate=rate),
            load=LoadOptions(sheet=sheet, encoding=encoding, key_column=key_column,
                             reason_column=reason_column, reference_column=reference_column,
                             default_reason=default_reason,
                             require_reference=require_reference,
                             include_hidden=include_hidden, header_row=header_row))
        loaded = load_input(options)
    except (ConfigError, InputError) as exc:
        raise UsageFailure(str(exc)) from None
    click.echo(plan_text(loaded, target, target.base_url, report=options.report))
    if check_invoices:
        options.credentials = _credentials()
    try:
        result = asyncio.run(preflight_async(options, loaded))
    except AuthenticationError as exc:
        click.echo(f"authentication failed: {exc}", err=True)
        sys.exit(ExitCode.AUTH)
    for verdict, count in sorted(result.counts.items()):
        click.echo(f"  {verdict:<34}{count:>8}")
    rate_used = options.rate
    click.echo(f"Would send {result.to_send} cancels; estimated {result.estimated_seconds:.0f} s "
               f"at {options.settings.concurrency} in flight at most"
               + (f", {rate_used:g}/s" if rate_used else ""))
    click.echo(f"Report: {options.report}")
    sys.exit(plan_exit_code(loaded))


@main.command("verify")
@click.argument("report_path", metavar="REPORT", type=click.Path(path_type=Path))
@click.option("--report", "output_path", type=click.Path(path_type=Path),
              help="Write the verified report here (default: rewrite REPORT in place).")
@click.option("--env", "env_name", type=click.Choice(list(ENVIRONMENTS)), metavar="NAME",
              help="A named Zuora environment (as for run).")
@click.option("--base-url", help="Any Zuora-compatible base URL (also env ZUORA_BASE_URL).")
@click.option("--until", type=float, default=600.0, show_default=True,
              help="Seconds to keep polling before writing what is known.")
@click.option("--concurrency", type=int, default=10, show_default=True,
              help="Most invoice reads in flight.")
@click.option("--rate", type=float, help="Most reads started per second (default per target).")
@click.option("--timeout", type=float, default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds per request.")
@click.option("--log-format", type=click.Choice(logs.LOG_FORMATS),
              help="console or json (default: console at a terminal, else json).")
def verify_command(report_path: Path, output_path: Path | None, env_name: str | None,
                   base_url: str | None, until: float, concurrency: int, rate: float | None,
                   timeout: float, log_format: str | None) -> None:
    """Follow the succeeded rows of REPORT until the tax authority has answered.

    Reads each accepted cancel's e-invoice until it is Cancelled or CancelFailed (or --until
    passes) and writes the report again with einvoice_status, einvoice_error_code,
    einvoice_error_message and verified_at. CancelFailed rows get the status cancel_failed:
    send them again with `run REPORT --only cancel_failed`. Exit 0 when all reached Cancelled,
    1 when some ended CancelFailed, 6 when some are still pending (run verify again later).
    """
    from .verify import VerifyOptions, load_report, verify_async

    client_secret = os.environ.get("ZUORA_CLIENT_SECRET", "")
    logs.configure(log_format or ("console" if sys.stderr.isatty() else "json"),
                   secrets=[client_secret])
    target = _target(env_name, base_url, False)
    try:
        settings = Settings(concurrency=concurrency, timeout=timeout,
                            rate=rate if rate is not None else target.default_rate)
    except ConfigError as exc:
        raise UsageFailure(str(exc)) from None
    try:
        loaded = load_report(report_path)
    except InputError as exc:
        raise UsageFailure(str(exc)) from None
    options = VerifyOptions(report_path, target, _credentials(), output_path, settings, until)
    try:
        summary = asyncio.run(verify_async(options, loaded))
    except ReportError as exc:
        raise UsageFailure(str(exc)) from None
    except AuthenticationError as exc:
        click.echo(f"authentication failed: {exc}", err=True)
        sys.exit(ExitCode.AUTH)
    counts = ", ".join(f"{k}={v}" for k, v in sorted(summary.counts.items())) or "none"
    click.echo(f"Verified {summary.checked} accepted cancels: {counts}")
    click.echo(f"Report: {summary.report_path}")
    if summary.pending and not summary.any_refused:
        click.echo(f"{summary.pending} still pending: run verify again later.")
    sys.exit(summary.exit_code)


def _credentials() -> Credentials:
    """Credentials from the environment only (a command line is visible to every user)."""
    client_id = os.environ.get("ZUORA_CLIENT_ID", "")
    client_secret = os.environ.get("ZUORA_CLIENT_SECRET", "")
    secrets_file = _profile_path("secrets_file")
    if (not client_id or not client_secret) and secrets_file is not None:
        try:
            client_id, client_secret = read_secrets_file(secrets_file)
        except ConfigError as exc:
            raise UsageFailure(str(exc)) from None
    if not client_id or not client_secret:
        raise UsageFailure("set ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET in the environment, "
                           "or secrets_file in a profile (never as flags: command lines are "
                           "visible to every user)")
    return Credentials(client_id, client_secret)


@main.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port (0: any free).")
@click.option("--latency", type=float, default=0.0, show_default=True,
              help="Seconds added to each /v1 answer.")
@click.option("--latency-jitter", type=float, default=0.0, show_default=True,
              help="Uniform +- seconds around --latency.")
@click.option("--rate-limit", type=int, help="Max /v1 requests per --rate-window.")
@click.option("--rate-window", type=float, default=60.0, show_default=True,
              help="Seconds of a rate window.")
@click.option("--concurrency-limit", type=int, help="Max /v1 requests in flight.")
@click.option("--retry-after", "concurrency_retry_after", type=int, default=120,
              show_default=True, help="Retry-After seconds on a concurrency 429.")
@click.option("--token-ttl", type=float, default=3600.0, show_default=True,
              help="Token lifetime in seconds.")
@click.option("--fail-500", type=float, default=0.0, help="Share of cancels answered 500.")
@click.option("--html-502", type=float, default=0.0, help="Share answered 502 with HTML.")
@click.option("--drop", type=float, default=0.0, help="Share of connections dropped.")
@click.option("--retryable-false", type=float, default=0.0,
              help="Share answered 200 success:false (lock contention).")
@click.option("--drop-after-apply", type=float, default=0.0,
              help="Share of cancels applied, then the connection dropped.")
@click.option("--truncated-after-apply", type=float, default=0.0,
              help="Share of cancels applied, then a 200 with a cut-off body.")
@click.option("--html-504-after-apply", type=float, default=0.0,
              help="Share of cancels applied, then a gateway's HTML 504 page.")
@click.option("--slow", type=float, default=0.0,
              help="Share of cancels applied, then answered after --slow-seconds.")
@click.option("--slow-before-apply", type=float, default=0.0,
              help="Share of cancels answered after --slow-seconds, applied only then.")
@click.option("--slow-seconds", type=float, default=30.0, show_default=True,
              help="How slow a slow answer is.")
@click.option("--cancel-delay", type=float, default=2.0, show_default=True,
              help="Seconds from an accepted cancel to Cancelled (or CancelFailed).")
@click.option("--seed", type=int, default=0, show_default=True, help="Fault injection seed.")
def simulate_command(host: str, port: int, **knobs: float | int | None) -> None:
    """Serve the built-in Zuora simulator for manual trials (not a real tenant)."""
    from .config import is_loopback
    from .sim.server import SimulatorConfig, serve

    if not is_loopback(host):
        raise UsageFailure("the simulator serves loopback only (e.g. --host 127.0.0.1)")
    try:
        config = SimulatorConfig(**{k: v for k, v in knobs.items() if v is not None})  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise UsageFailure(str(exc)) from None
    serve(config, host, port)
