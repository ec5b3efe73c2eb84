"""What the HTTP simulator saw: every request, and counters tests assert properties with.

"Never cancel the same invoice twice", "no more than N in flight", "a read between two cancels":
`SimulatorStats` keeps what proves them, and serves it as JSON to a test in another process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .routes import CANCEL, route_of

__all__ = ["RequestRecord", "SimulatorStats", "record_json"]


@dataclass
class RequestRecord:
    """One request the server saw, so tests can assert on exactly what a client sent."""

    method: str
    path: str
    key: str | None
    headers: dict[str, str]
    body: str
    started: float
    finished: float
    status: int | None


@dataclass
class SimulatorStats:
    """Counters that let tests prove properties such as "never cancel the same invoice twice"."""

    requests: list[RequestRecord] = field(default_factory=list)
    token_requests: int = 0
    cancel_requests: int = 0
    accepted_cancels: dict[str, int] = field(default_factory=dict)
    #: (key, time.monotonic()) of each accepted cancel, when it was applied: with `requests`
    #: it shows whether a later cancel of that invoice was sent without a read in between
    acceptances: list[tuple[str, float]] = field(default_factory=list)
    invoice_reads: int = 0
    max_in_flight: int = 0
    #: every request but the control calls, counted even when no record of them is kept
    total_requests: int = 0
    #: how the cancel PUTs were answered, status (as text; "None" for no answer) -> count:
    #: what a benchmark checks without a record of every request
    cancel_statuses: dict[str, int] = field(default_factory=dict)

    def count_cancel_answer(self, status: int | None) -> None:
        """Count one cancel PUT's answer (None: the connection was dropped)."""
        name = str(status)
        self.cancel_statuses[name] = self.cancel_statuses.get(name, 0) + 1

    def cancels(self) -> list[RequestRecord]:
        """The cancel PUT records, in arrival order."""
        return [r for r in self.requests if route_of(r.method, r.path) == CANCEL]

    def as_json(self) -> dict[str, Any]:
        """The counters for /_sim/stats (subprocess tests cannot reach this object)."""
        return {
            "token_requests": self.token_requests,
            "cancel_requests": self.cancel_requests,
            "accepted_cancels": dict(self.accepted_cancels),
            "acceptances": [list(item) for item in self.acceptances],
            "invoice_reads": self.invoice_reads,
            "max_in_flight": self.max_in_flight,
            "total_requests": self.total_requests,
            "cancel_statuses": dict(self.cancel_statuses),
        }


def record_json(record: RequestRecord) -> dict[str, Any]:
    """A request record for /_sim/requests: what and when, never headers or body."""
    return {
        "method": record.method,
        "path": record.path,
        "key": record.key,
        "status": record.status,
        "started": record.started,
        "finished": record.finished,
        "track_id": record.headers.get("Zuora-Track-Id"),
    }
