"""The knobs of one simulated tenant served over HTTP: limits, faults, outages, tokens.

Mutable while the server runs, so a test can flip a fault or a limit mid-run; the tenant model,
the limits and the token book all read the same object. Checked once at construction so a bad
setting fails loudly instead of surfacing later as odd server behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

__all__ = ["OUTAGE_MODES", "SimulatorConfig", "check_outage_mode"]

#: How every /v1 request fails during an outage: a Zuora JSON 503, a closed connection with no
#: answer, or the HTML 502 page of the proxy in front of Zuora. None of them applies anything.
OUTAGE_MODES: Final = ("503", "drop", "html_502")


@dataclass
class SimulatorConfig:
    """Knobs for one simulated tenant; mutable while the server runs so tests can flip faults."""

    client_id: str = "sim-client-id"
    client_secret: str = "sim-client-secret"
    token_ttl: float = 3600.0
    latency: float = 0.0
    latency_jitter: float = 0.0
    rate_limit: int | None = None
    rate_window: float = 60.0
    rate_retry_after: bool = False
    #: more rate windows beside (rate_limit, rate_window), as [quota, seconds] pairs: all are
    #: enforced, and RateLimit-Limit lists them all, like Zuora's
    #: `2250000, 50000;w=60, 2250000;w=3600, 27000000;w=86400`, the first number and
    #: Remaining/Reset naming the window closest to exhaustion
    rate_extra_windows: list[list[float]] = field(default_factory=list)
    #: requests already counted in the first (rate_limit, rate_window) window when the
    #: simulator starts: another integration used them (a window with little left)
    rate_preused: int = 0
    #: False: no RateLimit-* header at all (a proxy strips them, an older API version); a
    #: rate 429 then carries at most Retry-After
    rate_headers: bool = True
    #: False: no Concurrency-Limit-* header at all; the limit still holds (429, 50000070)
    concurrency_headers: bool = True
    concurrency_limit: int | None = None
    concurrency_retry_after: int = 120
    #: seconds between two samples of the advertised Concurrency-Limit-Remaining: 0 advertises
    #: the exact free places on every answer; >0 advertises the value sampled at most that
    #: often (Zuora refreshes it about once a second). The 429 verdict itself stays exact.
    concurrency_sample_interval: float = 0.0
    cancel_delay: float = 2.0
    cancel_failed_rate: float = 0.0
    seed: int = 0
    fail_500: float = 0.0
    fail_503: float = 0.0
    html_502: float = 0.0
    drop: float = 0.0
    drop_after_apply: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 30.0
    retryable_false: float = 0.0
    #: the cancel is applied, then a 200 whose body was cut off by a proxy (not JSON)
    truncated_after_apply: float = 0.0
    #: the cancel is applied, then the gateway's HTML 504 page instead of Zuora's answer
    html_504_after_apply: float = 0.0
    #: the answer takes slow_seconds and only then is the cancel applied (a client that gave up
    #: waiting sees nothing applied yet, and the cancel lands later)
    slow_before_apply: float = 0.0
    #: share of /v1 requests (cancel and read) answered with a rate 429 before any work
    storm_429: float = 0.0
    #: Retry-After seconds on a storm 429; None sends no Retry-After (RateLimit-Reset only)
    storm_retry_after: int | None = 1
    #: RateLimit-Reset seconds on a storm 429
    storm_reset: int = 1
    #: an outage of outage_for seconds starting outage_after seconds after start() (None: none)
    outage_after: float | None = None
    outage_for: float = 0.0
    outage_mode: str = "503"
    #: False: keep counters only (/_sim/stats: per-kind counts, cancel statuses, accepted cancels
    #: per key) instead of a record of every request (headers and body included, about 2 KB
    #: each: several GB at a million requests) and the time of every acceptance; /_sim/requests
    #: then lists nothing. For runs of hundreds of thousands of rows (the scale benchmark).
    keep_requests: bool = True
    unknown_marker: str = "NOTFOUND"
    cancelled_marker: str = "CANCELLED"

    def __post_init__(self) -> None:
        """Reject settings that would otherwise surface later as odd server behaviour."""
        shares = (
            *self.fault_shares(),
            ("cancel_failed_rate", self.cancel_failed_rate),
            ("storm_429", self.storm_429),
        )
        for name, share in shares:
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {share}")
        if sum(share for _, share in self.fault_shares()) > 1.0 + 1e-9:
            raise ValueError("the fault probabilities must add up to at most 1")
        if self.rate_window <= 0:
            raise ValueError("rate_window must be positive")
        if self.rate_limit is not None and self.rate_limit < 0:
            raise ValueError("rate_limit must be >= 0 or None")
        for extra in self.rate_extra_windows:
            if len(extra) != 2 or extra[0] < 0 or extra[1] <= 0:
                raise ValueError(f"rate_extra_windows items are [quota >= 0, seconds > 0], "
                                 f"got {extra}")
        if self.rate_preused < 0:
            raise ValueError("rate_preused must be >= 0")
        if self.concurrency_limit is not None and self.concurrency_limit < 0:
            raise ValueError("concurrency_limit must be >= 0 or None")
        if self.concurrency_sample_interval < 0:
            raise ValueError("concurrency_sample_interval must be >= 0")
        if self.storm_retry_after is not None and self.storm_retry_after < 0:
            raise ValueError("storm_retry_after must be >= 0 or None")
        if self.storm_reset < 0:
            raise ValueError("storm_reset must be >= 0")
        if self.outage_after is not None and self.outage_after < 0:
            raise ValueError("outage_after must be >= 0 or None")
        if self.outage_for < 0:
            raise ValueError("outage_for must be >= 0")
        check_outage_mode(self.outage_mode)

    def fault_shares(self) -> tuple[tuple[str, float], ...]:
        """The cancel-PUT faults in the fixed order they are drawn in (keeps runs reproducible)."""
        return (
            ("fail_500", self.fail_500),
            ("fail_503", self.fail_503),
            ("html_502", self.html_502),
            ("drop", self.drop),
            ("drop_after_apply", self.drop_after_apply),
            ("slow", self.slow),
            ("retryable_false", self.retryable_false),
            ("truncated_after_apply", self.truncated_after_apply),
            ("html_504_after_apply", self.html_504_after_apply),
            ("slow_before_apply", self.slow_before_apply),
        )


def check_outage_mode(mode: str) -> None:
    """Refuse an outage mode the server does not know, naming the ones it does."""
    if mode not in OUTAGE_MODES:
        raise ValueError(f"outage mode must be one of {', '.join(OUTAGE_MODES)}, got {mode!r}")
