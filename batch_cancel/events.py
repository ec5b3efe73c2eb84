"""What happens during a run, as typed records: the one place event names and keys are set.

The runner, its limits and the api emit these frozen records on an `Events` bus they are
given (there is no global one); the structlog renderer (`logs.LogSubscriber`) and the progress
display subscribe. A logged event is written with its `name` and its fields as keys, in field
order, so names and keys are an API: schedulers parse them, and the README's table of events
is `schema_table()` (a test compares the two). An event whose `level` is None is for
subscribers only (the progress display) and never logged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

Level = Literal["debug", "info", "warning", "error"]

#: The values `pool.pace_changed` names as `source` (the pace's `Source`).
PACE_SOURCES = ("rate_flag", "target_default", "tenant_policy", "quota_left", "quota_reset",
                "rate_429", "unpaced")


def _doc(text: str) -> Any:
    """A field documented in the README's table: `key` (text)."""
    return field(metadata={"doc": text})


def _each(prefix: str, doc: str) -> Any:
    """A mapping field written as one key per entry, `prefix<entry>`."""
    return field(metadata={"prefix": prefix, "doc": doc})


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened; subclasses name it and list its keys as fields."""

    name: ClassVar[str] = ""
    #: the log level it is written at; None: not logged (for subscribers only)
    level: ClassVar[Level | None] = "info"
    #: when it is written, for the README's table ("every 10 s")
    when: ClassVar[str] = ""
    #: for an event with several shapes, the `reason` this shape has
    variant: ClassVar[str] = ""

    def as_dict(self) -> dict[str, Any]:
        """The event's keys and values, in the documented order."""
        keys: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            prefix = item.metadata.get("prefix")
            if prefix is None:
                keys[item.name] = value
            else:
                keys.update({f"{prefix}{entry}": count for entry, count in value.items()})
        return keys

    @classmethod
    def keys(cls) -> list[str]:
        """The documented keys, as the README's table shows them (`key` (note))."""
        shown = []
        for item in fields(cls):
            doc = item.metadata.get("doc", "")
            prefix = item.metadata.get("prefix")
            key = f"`{prefix}<{item.name}>`" if prefix is not None else f"`{item.name}`"
            shown.append(f"{key} {doc}" if prefix is not None else
                         f"{key} ({doc})" if doc else key)
        return shown


# --- the run (api) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunStarted(Event):
    """A run read its input and is about to send (or, dry, to plan)."""

    name = "run.started"
    input: str
    report: str
    target: str
    base_url: str
    rows: int
    to_send: int
    resume: bool
    in_doubt: int
    dry_run: bool


@dataclass(frozen=True, slots=True)
class RunAuthFailed(Event):
    """Zuora refused the credentials: the run stops (exit 3)."""

    name = "run.auth_failed"
    level = "error"
    error: str


@dataclass(frozen=True, slots=True)
class RunInterrupting(Event):
    """Ctrl-C or SIGTERM: no new row starts; in-flight ones get `grace` seconds."""

    name = "run.interrupting"
    level = "warning"
    grace: float
    hint: str


@dataclass(frozen=True, slots=True)
class RunProgress(Event):
    """Where a run stands, for logs without a progress display."""

    name = "run.progress"
    when = "every 10 s"
    done: int
    to_send: int
    in_flight: int
    window: int
    pace: float | None
    pace_source: str


@dataclass(frozen=True, slots=True)
class RunFinished(Event):
    """The report is written."""

    name = "run.finished"
    report: str
    elapsed: float
    rate: float
    stop: str | None
    status: Mapping[str, int] = _each("count_", "for each status")


# --- one row ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowRetryScheduled(Event):
    """A row's answer is worth another try; it waits `delay` seconds (0 while the pool is
    paused or an outage holds it: the pool's wait is the row's)."""

    name = "row.retry_scheduled"
    row: int
    attempt: int
    delay: float
    http_status: int | None
    error_code: str
    error_message: str


@dataclass(frozen=True, slots=True)
class RowFinished(Event):
    """A row a worker took got its outcome."""

    name = "row.finished"
    level = "debug"
    when = "at `--log-level debug`"
    row: int
    status: str
    attempts: int
    http_status: int | None
    error_code: str


# --- the pool and its limits ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolLoad(Event):
    """The pool's load: when the run starts, and each time a row got its outcome (stopped
    ones too), with that row's `status`. What a progress display shows; not logged."""

    name = "pool.load"
    level = None
    status: str | None
    in_flight: int
    window: int
    pace: float | None
    pace_source: str


@dataclass(frozen=True, slots=True)
class PoolPausedRateLimited(Event):
    """A 429: nobody starts before `seconds` from now."""

    name = "pool.paused"
    level = "warning"
    variant = "rate_limited"
    reason: str
    seconds: float
    limit: str = _doc("`rate` or `concurrency`")
    http_status: int | None = None
    error_code: str = ""


@dataclass(frozen=True, slots=True)
class PoolPausedOutage(Event):
    """Outage-like failures in a row opened the breaker: one probe at a time until answered."""

    name = "pool.paused"
    level = "warning"
    variant = "outage"
    reason: str
    failures: int
    http_status: int | None
    error_message: str


@dataclass(frozen=True, slots=True)
class PoolResumed(Event):
    """The outage is over: a probe got an answer."""

    name = "pool.resumed"
    reason: str


@dataclass(frozen=True, slots=True)
class PoolWindowChanged(Event):
    """The number of requests allowed in flight changed."""

    name = "pool.window_changed"
    old: int
    new: int
    reason: str
    ceiling: int


@dataclass(frozen=True, slots=True)
class PoolPaceChanged(Event):
    """The starts per second changed by at least 10 % (or its source changed)."""

    name = "pool.pace_changed"
    old: float | None
    new: float | None = _doc("starts per second, `null` = unpaced")
    source: str = _doc(", ".join(f"`{source}`" for source in PACE_SOURCES))
    in_flight: int = 0


@dataclass(frozen=True, slots=True)
class PoolStopping(Event):
    """No new row starts; rows not started become `not_attempted`."""

    name = "pool.stopping"
    level = "warning"
    reason: str
    kind: str = _doc("`interrupted`, `auth`, `outage`, `quota`")


@dataclass(frozen=True, slots=True)
class QuotaLow(Event):
    """The day's quota left will not cover the rows left (warned once)."""

    name = "quota.low"
    level = "warning"
    remaining: int
    rows_left: int
    window: int


# --- the report and verify (written by their modules) ------------------------------------


@dataclass(frozen=True, slots=True)
class ReportEncodingChanged(Event):
    """A value did not fit the report's encoding: the report is re-encoded as UTF-8."""

    name = "report.encoding_changed"
    level = "warning"
    old: str
    new: str
    reason: str


@dataclass(frozen=True, slots=True)
class VerifyStarted(Event):
    """`verify` begins following accepted cancels."""

    name = "verify.started"
    report: str
    to_check: int


@dataclass(frozen=True, slots=True)
class VerifyRound(Event):
    """One round of invoice reads."""

    name = "verify.round"
    pending: int
    checked: int


@dataclass(frozen=True, slots=True)
class VerifyFinished(Event):
    """`verify` wrote its report."""

    name = "verify.finished"
    report: str
    status: Mapping[str, int] = _each("count_", "for each outcome")


#: Every event, in the README's order.
SCHEMA: tuple[type[Event], ...] = (
    RunStarted, RowRetryScheduled, PoolPausedRateLimited, PoolPausedOutage, PoolResumed,
    PoolWindowChanged, PoolPaceChanged, PoolStopping, QuotaLow, RunProgress, RowFinished,
    RunAuthFailed, RunInterrupting, RunFinished, ReportEncodingChanged, VerifyStarted,
    VerifyRound, VerifyFinished, PoolLoad,
)


def schema_table() -> str:
    """The README's table of logged events and their keys, in markdown."""
    lines = ["| event | keys |", "| --- | --- |"]
    names = list(dict.fromkeys(kind.name for kind in SCHEMA if kind.level is not None))
    for name in names:
        shapes = [kind for kind in SCHEMA if kind.name == name]
        when = f" ({shapes[0].when})" if shapes[0].when else ""
        lines.append(f"| `{name}`{when} | {_keys_cell(shapes)} |")
    return "\n".join(lines)


def _keys_cell(shapes: list[type[Event]]) -> str:
    """One shape's keys; several shapes as `reason` (`variant`: its other keys; ...)."""
    if len(shapes) == 1:
        return ", ".join(shapes[0].keys())
    variants = "; ".join(f"`{kind.variant}`: " + ", ".join(kind.keys()[1:]) for kind in shapes)
    return f"`reason` ({variants})"


Subscriber = Callable[[Event], None]


def _wanted_by(subscriber: Subscriber, kind: type[Event]) -> bool:
    """Whether `subscriber` wants events of `kind`: it says so with a `wants(kind)` method;
    a plain callable wants everything."""
    wants = getattr(subscriber, "wants", None)
    return True if wants is None else bool(wants(kind))


class Events:
    """The bus a run's parts emit on; each subscriber gets every event, in emit order.

    `wants(kind)` lets an emitter skip building a per-row event nobody takes (a `row.finished`
    below the log level, with no other subscriber): it is asked once per kind and remembered
    until the next `subscribe`.
    """

    __slots__ = ("_subscribers", "_wanted")

    def __init__(self, *subscribers: Subscriber) -> None:
        self._subscribers = list(subscribers)
        self._wanted: dict[type[Event], bool] = {}

    def subscribe(self, subscriber: Subscriber) -> None:
        """Deliver every later event to `subscriber` too."""
        self._subscribers.append(subscriber)
        self._wanted.clear()

    def wants(self, kind: type[Event]) -> bool:
        """Whether any subscriber wants events of `kind` (emitting one anyway is harmless)."""
        wanted = self._wanted.get(kind)
        if wanted is None:
            wanted = self._wanted[kind] = any(_wanted_by(s, kind) for s in self._subscribers)
        return wanted

    def emit(self, event: Event) -> None:
        """Hand `event` to each subscriber."""
        for subscriber in self._subscribers:
            subscriber(event)
