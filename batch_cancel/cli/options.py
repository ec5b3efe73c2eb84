"""The command line's options, each declared once, in the groups every command that needs
them shares: the target, Zuora's headers, the input's columns, the limits, the output, and
the config profile.

A group hands its command one value built from its flags (a `Target`, a `LoadOptions`, a
`Settings`, a `LogChoice`) instead of the flags themselves, so no command repacks a flag and
a flag means the same in every command that takes it.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from .. import logs
from ..config import (
    CONCURRENCY_429_MODES,
    CONCURRENCY_ALGORITHMS,
    DEFAULT_CONCURRENCY,
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
    default_rates_text,
    load_profile,
    read_secrets_file,
    resolve_target,
)
from ..model import ExitCode, Status
from ..read.loader import LoadOptions
from ..send.zuora import Credentials

#: A click decorator: options added to a command function.
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class UsageFailure(click.ClickException):
    """A problem with the input or the options: exit 2, nothing sent."""

    exit_code = ExitCode.USAGE


def option_group(into: str | None, build: Callable[..., Any],
                 options: Sequence[Decorator]) -> Decorator:
    """`options` as one group: the command gets `into=build(**their values)` in their place
    (nothing, for `into=None`). The options show in `--help` where the group is applied."""
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        names: list[str] = []

        @functools.wraps(command, updated=())
        def collapsed(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            if into is not None:
                kwargs[into] = build(**values)
            return command(*args, **kwargs)

        params: list[click.Parameter] = list(getattr(command, "__click_params__", []))
        setattr(collapsed, "__click_params__", params)  # noqa: B010 - click's own attribute
        known = len(params)
        for option in reversed(options):
            option(collapsed)
        names.extend(str(param.name) for param in params[known:])
        return collapsed
    return decorate


# --- target -----------------------------------------------------------------------------------

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


#: `--env`, `--base-url`, `--simulate`: the command gets `target: Target`.
target_options = option_group("target", _target, [
    click.option("--env", "env_name", type=click.Choice(list(ENVIRONMENTS)), metavar="NAME",
                 help="A named Zuora environment: " + " | ".join(ENVIRONMENTS) + "."),
    click.option("--base-url", help="Any Zuora-compatible base URL (also env ZUORA_BASE_URL); "
                                    "OAuth at {base}/oauth/token."),
    click.option("--simulate", is_flag=True,
                 help="Run against the built-in simulator, started in-process on loopback."),
])


# --- input columns ----------------------------------------------------------------------------

def statuses(value: str | None) -> frozenset[Status] | None:
    """`--only`'s comma-separated status names."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    try:
        return frozenset(Status(name) for name in names)
    except ValueError:
        raise UsageFailure(f"--only {value!r}: use a comma-separated list of "
                           f"{', '.join(s.value for s in Status)}") from None


def _load_options(only: str | None = None, **values: Any) -> LoadOptions:
    return LoadOptions(only=statuses(only), **values)


_INPUT_COLUMN_OPTIONS = [
    click.option("--sheet", help="Sheet of a workbook to read (default: the first one not "
                                 "hidden)."),
    click.option("--key-column", help="Column holding the invoice key (default: found by "
                                      "name)."),
    click.option("--reason-column", help="Column holding the reason code."),
    click.option("--reference-column", help="Column holding the documentReferenceID."),
    click.option("--reason", "default_reason",
                 help="Reason code (01-04) for rows without one."),
    click.option("--require-reference", is_flag=True,
                 help="Reason 01 rows without a documentReferenceID are invalid (default: a "
                      "warning)."),
    click.option("--encoding", help="Text encoding of a CSV (default: detected)."),
    click.option("--header-row", type=click.IntRange(min=1), metavar="N",
                 help="Row number of the header (default: the first row naming the key "
                      "column)."),
    click.option("--include-hidden", is_flag=True,
                 help="Also send rows hidden or filtered out in the sheet (default: skipped)."),
]
_RERUN_OPTIONS = [
    click.option("--only", help="With a report as INPUT: re-run only rows whose status is in "
                 "this comma-separated list (default: failed,not_attempted,invalid)."),
    click.option("--include-final", is_flag=True,
                 help="With a report as INPUT: also re-send failed rows whose answer was final "
                      "(not found, not cancelable) that you did not edit."),
]


def input_column_options(rerun: bool = False) -> Decorator:
    """How to read INPUT (and, with `rerun`, which rows of a report to send again): the
    command gets `load: LoadOptions`."""
    return option_group("load", _load_options,
                        [*_INPUT_COLUMN_OPTIONS, *(_RERUN_OPTIONS if rerun else [])])


# --- limits and Zuora's headers -------------------------------------------------------------

def _limit_options(concurrency: int) -> dict[str, Decorator]:
    """Every limit flag by its `Settings` field; `--concurrency`'s default is the command's."""
    return {
        "concurrency": click.option(
            "--concurrency", type=int, default=concurrency, show_default=True,
            help="Most requests in flight (Zuora's default tenant limit is 40, shared with "
                 "every other integration)."),
        "tenant_share": click.option(
            "--tenant-share", type=float, default=DEFAULT_TENANT_SHARE, show_default=True,
            help="Most of the tenant's advertised limits this run may use: of its "
                 "concurrency limit (Concurrency-Limit-Limit) and of the rate of its tightest "
                 "RateLimit window; the rest stays for other integrations."),
        "concurrency_429": click.option(
            "--concurrency-429", "concurrency_429", type=click.Choice(CONCURRENCY_429_MODES),
            default="shrink", show_default=True,
            help="On a concurrency 429 (code 50000070): shrink the window and retry the row "
                 "soon (the pool pauses for Retry-After only at a window of 1), or pause the "
                 "whole pool for Retry-After (Zuora's 120 s) every time."),
        "concurrency_algorithm": click.option(
            "--concurrency-algorithm", "concurrency_algorithm",
            type=click.Choice(CONCURRENCY_ALGORITHMS), default="window", show_default=True,
            help="How the requests in flight are learned: the window (AIMD on the tenant's "
                 "Concurrency-Limit headers and 429s) or gradient2 (Netflix's latency "
                 "gradient and 429s), under the same ceilings."),
        "rate": click.option(
            "--rate", type=float,
            help="Most requests started per second, a ceiling, no start-up burst (default "
                 f"per target: {default_rates_text()}); a run's pace follows the tenant's "
                 "RateLimit headers below it, from the default until the first answer."),
        "max_attempts": click.option(
            "--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS, show_default=True,
            help="Per row, the first try included."),
        "timeout": click.option(
            "--timeout", type=float, default=DEFAULT_TIMEOUT, show_default=True,
            help="Seconds per request."),
        "outage_window": click.option(
            "--outage-window", type=float, default=DEFAULT_OUTAGE_WINDOW, show_default=True,
            help="Seconds of Zuora outage to wait out, probing, before stopping cleanly."),
        "track_id_prefix": click.option(
            "--track-id-prefix", default="bc", show_default=True,
            help="Prefix of each row's Zuora-Track-Id (then the run id and the row number)."),
    }


_ZUORA_HEADER_OPTIONS = [
    click.option("--entity-ids", default="", help="Zuora-Entity-Ids header (multi-entity)."),
    click.option("--org-ids", default="", help="Zuora-Org-Ids header (multi-org)."),
    click.option("--zuora-version", default="", help="Zuora-Version header."),
]


def _settings(**values: Any) -> Settings:
    try:
        return Settings(**values)
    except ConfigError as exc:
        raise UsageFailure(str(exc)) from None


def settings_options(*limits: str, concurrency: int = DEFAULT_CONCURRENCY) -> Decorator:
    """The named limit flags and Zuora's headers: the command gets `settings: Settings`."""
    declared = _limit_options(concurrency)
    return option_group("settings", _settings,
                        [*(declared[name] for name in limits), *_ZUORA_HEADER_OPTIONS])


# --- output -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LogChoice:
    """`--log-format` and `--log-level`, applied once the secrets to mask are known."""

    log_format: str | None
    log_level: str

    def configure(self, secrets: Iterable[str], stream: logs.Stream | None = None) -> None:
        """Configure logging: console at a terminal, else JSON, unless a format was named."""
        fmt = self.log_format or ("console" if sys.stderr.isatty() else "json")
        logs.configure(fmt, self.log_level, secrets=list(secrets), stream=stream)


#: `--log-format`, `--log-level`: the command gets `logging: LogChoice`.
output_options = option_group("logging", LogChoice, [
    click.option("--log-format", type=click.Choice(logs.LOG_FORMATS),
                 help="console or json (default: console at a terminal, else json)."),
    click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
                 default="info", show_default=True, help="Least severe event logged."),
])


# --- profile ----------------------------------------------------------------------------------

def _choose_profile(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Once both `--config` and `--profile` of a command are parsed (they are eager: before
    every other option), load the profile as that command's defaults. Typed after the
    command, they win over the same option typed before it."""
    other = "profile" if param.name == "config_path" else "config_path"
    if isinstance(ctx.command, click.Group) or other not in ctx.params:
        return value
    root = ctx.find_root().params
    chosen = {param.name: value, other: ctx.params[other]}
    config_path = chosen["config_path"] or root.get("config_path")
    profile = chosen["profile"] or root.get("profile")
    _apply_profile(ctx, config_path, profile)
    return value


def _apply_profile(ctx: click.Context, config_path: Path | None, profile: str | None) -> None:
    """The profile's values as the command's option defaults; its report folder and secrets
    file kept for the command to read (`profile_path`)."""
    path = config_path or Path(click.get_app_dir("batch-cancel")) / "config.toml"
    if config_path is None and profile is None and not path.exists():
        return  # no config file: nothing to apply
    try:
        values = load_profile(path, profile)
    except ConfigError as exc:
        raise UsageFailure(str(exc)) from None
    ctx.default_map = {PROFILE_KEYS[key]: value for key, value in values.items()
                       if key in PROFILE_KEYS}
    ctx.ensure_object(dict).update({key: Path(str(values[key])).expanduser()
                                    for key in PROFILE_EXTRAS if key in values})


#: `--config`, `--profile`, accepted before the command and after it.
profile_options = option_group(None, dict, [
    click.option("--config", "config_path", type=click.Path(path_type=Path), is_eager=True,
                 callback=_choose_profile,
                 help="TOML file of named profiles (default: config.toml in the user's "
                      "config folder, e.g. ~/.config/batch-cancel/)."),
    click.option("--profile", is_eager=True, callback=_choose_profile,
                 help="Profile to use from the config file (default: 'default', if the file "
                      "has one)."),
])


def profile_path(key: str) -> Path | None:
    """A path the profile named (`report_folder`, `secrets_file`), if it did."""
    value = (click.get_current_context().obj or {}).get(key)
    return value if isinstance(value, Path) else None


def credentials() -> Credentials:
    """Credentials from the environment only (a command line is visible to every user), or
    the profile's secrets file."""
    client_id = os.environ.get("ZUORA_CLIENT_ID", "")
    client_secret = os.environ.get("ZUORA_CLIENT_SECRET", "")
    secrets_file = profile_path("secrets_file")
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
