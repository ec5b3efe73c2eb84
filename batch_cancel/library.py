"""The Python face: one keyword call per command, typed results, the report as a DataFrame.

`cancel`, `preflight` and `verify` take the same words as the command line, as keyword
arguments, and return a `CommandResult`: a `summary` (counts by
status name, the exit code the CLI would give, why a run stopped, the report path) and `rows`,
the report read back as a `pandas.DataFrame` whose every column is text, exactly as written.

Credentials default to `ZUORA_CLIENT_ID`/`ZUORA_CLIENT_SECRET` and the target to
`ZUORA_BASE_URL`, as for the CLI. Nothing is logged unless the caller configured logging
(`batch_cancel.configure_logging`). pandas is imported only when `rows` is first read.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from . import api
from .config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_GRACE,
    DEFAULT_TENANT_SHARE,
    DEFAULT_TIMEOUT,
    ConfigError,
    Settings,
    Target,
    resolve_target,
)
from .model import Status, Summary, exit_code
from .plan import RunError, RunOptions, prepare
from .preflight import PreflightOptions
from .preflight import preflight as make_plan
from .read.loader import InputError, LoadOptions
from .record.paths import ReportError
from .send.zuora import Credentials
from .verify import (
    VERIFY_CONCURRENCY,
    VERIFY_UNTIL,
    VerifyOptions,
    VerifySummary,
    verify_async,
)

if TYPE_CHECKING:
    import pandas

#: Keyword arguments of `cancel` that set how it sends (the CLI's limit flags).
LIMIT_NAMES = frozenset({"concurrency", "rate", "max_attempts", "timeout", "tenant_share",
                         "outage_window", "concurrency_429", "concurrency_algorithm",
                         "track_id_prefix", "entity_ids", "org_ids", "zuora_version"})


class UsageError(ValueError):
    """The call cannot run as asked (bad input, options or target); nothing was sent."""


@dataclass(frozen=True, slots=True)
class CommandSummary:
    """What a command did, in plain values a scheduler can log or branch on."""

    counts: Mapping[str, int]
    exit_code: int
    report_path: str
    stop_reason: str = ""
    #: why the report could not be written ("" when it was): exit code 5
    report_error: str = ""
    elapsed: float = 0.0


@dataclass(slots=True)
class CommandResult:
    """A command's summary and its report, read back as text columns on first use."""

    summary: CommandSummary
    _rows: Any = field(default=None, repr=False)

    @property
    def rows(self) -> pandas.DataFrame:
        """The report as a DataFrame: every column text, exactly as written."""
        if self._rows is None:
            from .read.frames import read_report

            self._rows = read_report(self.summary.report_path)
        return self._rows

    @property
    def exit_code(self) -> int:
        """The exit code the CLI would give (see the README's table)."""
        return self.summary.exit_code


def cancel(source: str | Path | pandas.DataFrame, *, env: str | None = None,
           base_url: str | None = None, simulate: bool = False,
           report: str | Path | None = None, credentials: Credentials | None = None,
           resume: bool = False, overwrite: bool = False, dry_run: bool = False,
           only: str | list[str] | None = None, key_column: str | None = None,
           reason_column: str | None = None, reference_column: str | None = None,
           default_reason: str | None = None, sheet: str | None = None,
           require_reference: bool = False, include_final: bool = False,
           include_hidden: bool = False, header_row: int | None = None,
           numbers_as_text: bool = False, grace: float = DEFAULT_GRACE, **limits: Any
           ) -> CommandResult:
    """Cancel the e-invoices of `source` (a file path or a DataFrame) and write the report.

    A DataFrame goes through the same column names, normalisation and validation as a file;
    its object/string columns are text, a numeric key or reason column is refused unless
    `numbers_as_text`, and row numbers in the report are its index labels (see `frames`).

    `limits` are the CLI's sending options as keywords: `concurrency`, `rate`, `max_attempts`,
    `timeout`, `tenant_share`, `outage_window`, `concurrency_429`, `concurrency_algorithm`,
    `track_id_prefix`, `entity_ids`, `org_ids`, `zuora_version`. Bad input or options raise
    `UsageError` before anything is sent; once sending starts the report is written whatever
    happens, and the summary's `exit_code` says how it ended.
    """
    target = _target(env, base_url, simulate)
    options = RunOptions(
        input_path=_source(source, report), target=target,
        credentials=None if simulate or dry_run else credentials or _env_credentials(),
        report_path=None if report is None else Path(report),
        load=LoadOptions(sheet=sheet, key_column=key_column, reason_column=reason_column,
                         reference_column=reference_column, default_reason=default_reason,
                         only=_statuses(only), require_reference=require_reference,
                         include_final=include_final, include_hidden=include_hidden,
                         header_row=header_row, numbers_as_text=numbers_as_text),
        settings=_settings(limits), dry_run=dry_run, overwrite=overwrite, resume=resume,
        grace=grace, handle_signals=False)
    try:
        plan = prepare(options)
    except (InputError, ReportError, RunError) as exc:
        raise UsageError(str(exc)) from None
    summary = api.run(options, plan)
    return CommandResult(_command_summary(summary, exit_code(summary)))


def preflight(source: str | Path | pandas.DataFrame, *, env: str | None = None,
              base_url: str | None = None, simulate: bool = False, check_invoices: bool = False,
              report: str | Path | None = None, credentials: Credentials | None = None,
              key_column: str | None = None, reason_column: str | None = None,
              reference_column: str | None = None, default_reason: str | None = None,
              sheet: str | None = None, require_reference: bool = False,
              include_hidden: bool = False, header_row: int | None = None,
              numbers_as_text: bool = False, concurrency: int = DEFAULT_CONCURRENCY,
              tenant_share: float = DEFAULT_TENANT_SHARE, rate: float | None = None,
              entity_ids: str = "", org_ids: str = "", zuora_version: str = ""
              ) -> CommandResult:
    """What `cancel` would do with `source`, written as a plan report; nothing is cancelled.

    With `check_invoices` every sendable invoice is read (needs credentials, unless
    `simulate`): cancelable rows are `not_attempted`, already cancelled ones `skipped`, the
    rest `failed` with the reason, so `cancel(plan, only="not_attempted")` sends exactly the
    cancelable ones. Exit code 1 when some rows are invalid, else 0.
    """
    target = _target(env, base_url, simulate)
    needs_credentials = check_invoices and not simulate
    try:
        options = PreflightOptions(
            _source(source, report), target,
            credentials=(credentials or _env_credentials()) if needs_credentials else None,
            report_path=None if report is None else Path(report),
            load=LoadOptions(sheet=sheet, key_column=key_column, reason_column=reason_column,
                             reference_column=reference_column, default_reason=default_reason,
                             require_reference=require_reference,
                             include_hidden=include_hidden, header_row=header_row,
                             numbers_as_text=numbers_as_text),
            settings=Settings(concurrency=concurrency, tenant_share=tenant_share, rate=rate,
                              entity_ids=entity_ids, org_ids=org_ids,
                              zuora_version=zuora_version),
            check_invoices=check_invoices)
        result = make_plan(options)
    except (ConfigError, InputError, ReportError) as exc:
        raise UsageError(str(exc)) from None
    plan = result.plan
    counts = {s.value: n for s, n in plan.counts.items()} if plan else {}
    return CommandResult(CommandSummary(counts=counts, exit_code=result.exit_code,
                                        report_path=str(options.report)))


@overload
def verify(report: VerifyOptions) -> VerifySummary: ...


@overload
def verify(report: str | Path, *, env: str | None = None, base_url: str | None = None,
           simulate: bool = False, credentials: Credentials | None = None,
           output: str | Path | None = None, until: float = VERIFY_UNTIL,
           concurrency: int = VERIFY_CONCURRENCY, rate: float | None = None,
           timeout: float = DEFAULT_TIMEOUT, entity_ids: str = "", org_ids: str = "",
           zuora_version: str = "") -> CommandResult: ...


def verify(report: str | Path | VerifyOptions, *, env: str | None = None,
           base_url: str | None = None, simulate: bool = False,
           credentials: Credentials | None = None, output: str | Path | None = None,
           until: float = VERIFY_UNTIL, concurrency: int = VERIFY_CONCURRENCY,
           rate: float | None = None, timeout: float = DEFAULT_TIMEOUT, entity_ids: str = "",
           org_ids: str = "", zuora_version: str = "") -> CommandResult | VerifySummary:
    """Follow the accepted cancels of `report` until the tax authority answered (or `until`
    seconds pass); the report is written again with the e-invoice columns.

    Exit code 0: all Cancelled; 1: some CancelFailed; 6: some still pending. The 0.1 form,
    `verify(VerifyOptions(...))` returning a `VerifySummary`, still works (deprecated).
    """
    import asyncio

    if isinstance(report, VerifyOptions):
        warnings.warn("verify(VerifyOptions) is deprecated: call verify(report_path, ...) "
                      "with keyword arguments", DeprecationWarning, stacklevel=2)
        return asyncio.run(verify_async(report))

    target = _target(env, base_url, simulate)
    settings = _settings({"concurrency": concurrency, "timeout": timeout,
                          "rate": target.start_rate(rate), "entity_ids": entity_ids,
                          "org_ids": org_ids, "zuora_version": zuora_version})
    options = VerifyOptions(Path(report), target,
                            None if simulate else credentials or _env_credentials(),
                            None if output is None else Path(output), settings, until)
    try:
        result = asyncio.run(verify_async(options))
    except (InputError, ReportError) as exc:
        raise UsageError(str(exc)) from None
    return CommandResult(CommandSummary(counts=dict(result.counts),
                                        exit_code=result.exit_code,
                                        report_path=result.report_path))


def _command_summary(summary: Summary, exit_code: int) -> CommandSummary:
    return CommandSummary(counts={s.value: n for s, n in summary.counts.items()},
                          exit_code=exit_code, report_path=summary.report_path,
                          stop_reason=summary.stop_reason, report_error=summary.report_error,
                          elapsed=summary.elapsed)


def _target(env: str | None, base_url: str | None, simulate: bool) -> Target:
    try:
        return resolve_target(env, base_url, os.environ.get("ZUORA_BASE_URL"), simulate)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _env_credentials() -> Credentials:
    client_id = os.environ.get("ZUORA_CLIENT_ID", "")
    secret = os.environ.get("ZUORA_CLIENT_SECRET", "")
    if not client_id or not secret:
        raise UsageError("no credentials: pass credentials=Credentials(...) or set "
                         "ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET")
    return Credentials(client_id, secret)


def _settings(limits: Mapping[str, Any]) -> Settings:
    unknown = sorted(set(limits) - LIMIT_NAMES)
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {', '.join(unknown)} "
                        f"(limits are {', '.join(sorted(LIMIT_NAMES))})")
    try:
        return Settings(**limits)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _statuses(only: str | list[str] | None) -> frozenset[Status] | None:
    if only is None:
        return None
    names = only.split(",") if isinstance(only, str) else list(only)
    try:
        return frozenset(Status(name.strip()) for name in names if name.strip())
    except ValueError:
        raise UsageError(f"only={only!r}: use status names among "
                         f"{', '.join(s.value for s in Status)}") from None


def _source(source: str | Path | pandas.DataFrame, report: str | Path | None
            ) -> Path | pandas.DataFrame:
    """The input as the run reads it: a path, or the DataFrame itself (which needs a report:
    the report and its journal are the record of what was filed)."""
    if isinstance(source, str | Path):
        return Path(source)
    if report is None:
        raise UsageError("a DataFrame source needs report=PATH: the report and its journal "
                         "are the record of what was filed")
    return source
