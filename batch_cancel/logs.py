"""structlog set-up: console lines for people, JSON lines for schedulers.

Events go to stderr so stdout stays for the plan and the summary. Every event carries the
run's `run_id`. A last processor masks any configured secret that reaches an event anyway.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Protocol, TextIO, cast

import structlog

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
