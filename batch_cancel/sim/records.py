"""What a simulated run leaves behind, for the oracle to judge afterwards.

The world remembers every /v1 request (who sent it, when, how many of ours were in flight, what
the tenant did and what the client was told), every cancel the tenant accepted, and every token
request; the chain keeps a `Ledger` of each process (its report, exit code, and all it wrote).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import Answer

__all__ = ["Accepted", "Ledger", "Pending", "Request", "TokenRequest"]


@dataclass(slots=True)
class Request:
    """One request the world saw: who sent it, when, and what became of it."""

    run: int
    kind: str  # "cancel" or "read"
    key: str
    arrived: float
    #: our requests in flight at the tenant when it arrived, this one included
    ours: int
    answered: float | None = None
    #: the answer as the client classifies it (`zuora.classify`, or `no_answer` for none)
    answer: Answer | None = None
    #: what the tenant did: "accepted", "refused", "429", "401", "outage", a fault, "read"
    result: str = ""
    #: the client had already decided to stop its run when it sent this
    after_stop: bool = False


@dataclass(slots=True)
class Accepted:
    """A cancel the tenant accepted (whoever's request it was)."""

    key: str
    at: float
    run: int
    #: when the request that was accepted reached the tenant
    sent_at: float
    #: the client had already given up on the request (no answer within its timeout)
    late: bool
    will_fail: bool


@dataclass(slots=True)
class TokenRequest:
    """One request to the token endpoint and how it was answered."""

    run: int
    at: float
    #: "granted", or the refusal's mode (see `schedule.TOKEN_REFUSALS`)
    result: str


@dataclass(slots=True)
class Pending:
    """A cancel that reached the tenant and is not processed yet (a crash may cut it short)."""

    key: str
    body: str
    request: Request
    done: bool = False


@dataclass(slots=True)
class Ledger:
    """What one run (one process) of a chain left behind."""

    run: int
    crashed: bool = False
    exit_code: int | None = None
    stop_kind: str = ""
    rows: list[dict[str, str]] = field(default_factory=list)
    #: everything the run wrote or said: report, journal, log events, stop reason, errors
    outputs: str = ""
