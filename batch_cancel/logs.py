"""structlog set-up: console lines for people, JSON lines for schedulers; silent in a library.

Events go to stderr so stdout stays for the plan and the summary. Every event carries the
run's `run_id`. A last processor masks any configured secret that reaches an event anyway.

As a library, batch-cancel logs nothing until logging is configured: by `configure_logging`
(the CLI does it for every command), or by the caller's own `structlog.configure`, whose
pipeline it then joins. A notebook or an Airflow task is not flooded with per-row lines.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Protocol, TextIO, cast

import structlog

from .events import Event, Events

LOG_FORMATS = ("console", "json")


class Stream(Protocol):
    """Where log lines go: a text file, or a display that prints lines above itself."""

    def write(self, text: str, /) -> int: ...
    def flush(self) -> None: ...
    def isatty(self) -> bool: ...


class SecretMask:
    """A structlog processor that replaces each secret with *** in every string value."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = [s for s in secrets if s and len(s) >= 4]

    def __call__(self, logger: Any, method: str,
                 event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if self._secrets:
            for key, value in event.items():
                if isinstance(value, str):
                    for secret in self._secrets:
                        value = value.replace(secret, "***")
                    event[key] = value
        return event


#: The logger a library call gets while nobody configured logging: every event is dropped.
_SILENT = structlog.wrap_logger(
    structlog.ReturnLogger(), processors=[],
    wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """The package's logger: structlog's when logging is configured, else a silent one."""
    if structlog.is_configured():
        return cast(structlog.typing.FilteringBoundLogger, structlog.get_logger(name))
    return cast(structlog.typing.FilteringBoundLogger, _SILENT)


#: structlog's numeric level of each event level.
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


class LogSubscriber:
    """Writes each logged event through structlog: its name, at its level, its keys.

    The logger is bound once: structlog's lazy proxy would rebuild a bound logger on every
    per-row event.
    """

    __slots__ = ("_log", "_writes")

    def __init__(self, log: structlog.typing.FilteringBoundLogger) -> None:
        self._log = log.bind()
        #: whether events of a kind are written, asked of the logger once per kind
        self._writes: dict[type[Event], bool] = {}

    def __call__(self, event: Event) -> None:
        writes = self._writes.get(type(event))
        if writes is None:
            writes = self.wants(type(event))
        if writes:  # an event below the level is not turned into keys only to be dropped
            getattr(self._log, str(event.level))(event.name, **event.as_dict())

    def wants(self, kind: type[Event]) -> bool:
        """Whether events of `kind` are written at all: logged, at or above the level (a
        logger that cannot say is taken to write everything)."""
        writes = self._writes.get(kind)
        if writes is None:
            enabled = getattr(self._log, "is_enabled_for", None)
            writes = kind.level is not None and (
                enabled is None or bool(enabled(_LEVELS[kind.level])))
            self._writes[kind] = writes
        return writes


def logged_events(name: str = "batch_cancel") -> Events:
    """A bus whose events go to the package's logger (silent until logging is configured)."""
    return Events(LogSubscriber(get_logger(name)))


def configure_logging(format: str = "json", level: str = "info",
                      stream: Stream | None = None, secrets: Iterable[str] = ()) -> None:
    """Turn batch-cancel's events on: `format` "json" (one object per line, for schedulers)
    or "console" (for people), events at `level` and above, written to `stream` (stderr by
    default), with each of `secrets` masked. This configures structlog for the process."""
    if format not in LOG_FORMATS:
        raise ValueError(f"format must be one of {', '.join(LOG_FORMATS)}, not {format!r}")
    configure(format, level, secrets, stream)


def configure(log_format: str = "console", level: str = "info", secrets: Iterable[str] = (),
              stream: Stream | None = None) -> None:
    """Configure structlog for this process (called once, by the CLI or a library user)."""
    stream = stream or sys.stderr
    renderer: Any
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            SecretMask(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, stream)),
        cache_logger_on_first_use=False,
    )
