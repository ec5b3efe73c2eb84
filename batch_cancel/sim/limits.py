"""The tenant's limits, one implementation for both front ends of the simulated Zuora.

Zuora charges every /v1 request (429s and failures included) to each of its rate windows,
refuses a request that finds the tenant's concurrent places taken (429, code 50000070) or a
window used up (429, category 70), and adds its limit headers to every answer it writes itself
(`Concurrency-Limit-*`, `RateLimit-*`; none on a proxy's 502/504 page, no limit ones on a 500).
The aiohttp `Simulator` and the in-memory `World` both call `TenantLimits`, so what a client
learns from the headers cannot differ between the two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from . import rules
from .rules import Reply

__all__ = ["LimitRules", "Reading", "TenantLimits"]


class LimitRules(Protocol):
    """The limit settings, read live (a test may change them while a server runs)."""

    @property
    def concurrency_limit(self) -> int | None: ...
    @property
    def concurrency_retry_after(self) -> int: ...
    @property
    def concurrency_sample_interval(self) -> float: ...
    @property
    def concurrency_headers(self) -> bool: ...
    @property
    def rate_limit(self) -> int | None: ...
    @property
    def rate_window(self) -> float: ...
    @property
    def rate_extra_windows(self) -> Sequence[Sequence[float]]: ...
    @property
    def rate_preused(self) -> int: ...
    @property
    def rate_retry_after(self) -> bool: ...
    @property
    def rate_headers(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Reading:
    """The limit verdict and header values for one /v1 request, fixed at its arrival."""

    concurrency_exceeded: bool
    concurrency_limit: int | None
    concurrency_remaining: int | None
    rate_exceeded: bool
    rate_limit: int | None
    rate_remaining: int
    rate_reset: int
    rate_window: float
    #: RateLimit-Limit as sent (every window, the closest one's quota first)
    rate_policy: str = ""


class TenantLimits:
    """The rate windows' counts and the sampled free places of one tenant.

    `epoch` is when the windows started counting on the front end's clock (fixed windows, as
    Zuora's are).
    """

    def __init__(self, config: LimitRules, epoch: float = 0.0) -> None:
        self.config = config
        self._epoch = epoch
        #: per rate window: the index of its current window and the requests counted in it
        self._window_state: list[list[int]] = []
        #: (when sampled, free places then) for concurrency_sample_interval > 0
        self._remaining_sample: tuple[float, int] | None = None

    def admit(self, now: float, in_use: int) -> Reading:
        """Charge a request to every rate window and read the limits for its answer.

        `in_use` counts the tenant's places taken now, this request's included.
        """
        concurrency = self.config.concurrency_limit
        free = None if concurrency is None else max(0, concurrency - in_use)
        if free is not None:
            free = self._advertised_remaining(now, free)
        exceeded, closest, remaining, reset = self._charge(now)
        policy = ""
        if closest is not None:
            policy = ", ".join([str(closest[0]), *(f"{q};w={rules.seconds(w)}"
                                                   for q, w in self.windows())])
        return Reading(
            concurrency_exceeded=concurrency is not None and in_use > concurrency,
            concurrency_limit=concurrency,
            concurrency_remaining=free,
            rate_exceeded=exceeded,
            rate_limit=None if closest is None else closest[0],
            rate_remaining=remaining,
            rate_reset=reset,
            rate_window=self.config.rate_window if closest is None else closest[1],
            rate_policy=policy,
        )

    def _charge(self, now: float) -> tuple[bool, tuple[int, float] | None, int, int]:
        """Count the request in each window: (any exceeded, closest window, its left, reset).

        The closest window is the one with the fewest requests left; of windows used up, the
        longest, since its wait is the one that holds (a spent daily quota outlasts a minute).
        """
        exceeded, closest, remaining, reset = False, None, 0, 1
        windows = self.windows()
        states = self._window_state
        while len(states) < len(windows):  # the first window starts with rate_preused used
            states.append([0, 0 if states else self.config.rate_preused])
        for (quota, window), state in zip(windows, states, strict=False):
            index = math.floor((now - self._epoch) / window)
            if index != state[0]:
                state[0], state[1] = index, 0
            state[1] += 1  # every request counts, 429s and failures included
            exceeded = exceeded or state[1] > quota
            left = max(0, quota - state[1])
            longer_spent = closest is not None and left == remaining == 0 and window > closest[1]
            if closest is None or left < remaining or longer_spent:
                closest, remaining = (quota, window), left
                reset = max(1, math.ceil(self._epoch + (index + 1) * window - now))
        return exceeded, closest, remaining, reset

    def windows(self) -> list[tuple[int, float]]:
        """Every enforced rate window as (quota, seconds), read from the (mutable) config."""
        config = self.config
        windows = [] if config.rate_limit is None else [(config.rate_limit, config.rate_window)]
        windows += [(int(q), float(w)) for q, w in config.rate_extra_windows]
        return windows

    def _advertised_remaining(self, now: float, free: int) -> int:
        """Concurrency-Limit-Remaining as advertised: exact, or a sample at most interval old."""
        interval = self.config.concurrency_sample_interval
        if interval <= 0:
            return free
        sample = self._remaining_sample
        if sample is None or now - sample[0] >= interval:
            sample = self._remaining_sample = (now, free)
        return sample[1]

    # --- the answers of the limits ------------------------------------------------------------

    def refusal(self, reading: Reading) -> Reply | None:
        """The concurrency 429, else the rate 429, else None (the request goes on)."""
        if reading.concurrency_exceeded:
            return self.concurrency_429()
        if reading.rate_exceeded:
            return self.rate_429(reading)
        return None

    def concurrency_429(self) -> Reply:
        """The tenant concurrency 429: code 50000070 and a fixed Retry-After, as Zuora sends."""
        return rules.concurrency_429(self.config.concurrency_retry_after)

    def rate_429(self, reading: Reading) -> Reply:
        """The rate 429: category 70 body; Retry-After only if configured (UNCONFIRMED)."""
        reply = rules.rate_429(reading.rate_reset, reading.rate_window,
                               self.config.rate_retry_after)
        if self.config.rate_headers:
            reply = reply.with_headers(("RateLimit-Remaining", "0"),
                                       ("RateLimit-Reset", str(reading.rate_reset)))
        return reply

    def decorate(self, reply: Reply, reading: Reading, request_id: str,
                 track_id: str | None) -> Reply:
        """Zuora's per-answer headers; a proxy 502/504 has none, a 500 lacks the limit ones.

        A header the answer already has (a rate or storm 429's own Remaining/Reset) is kept.
        """
        if reply.status in (502, 504):  # the gateway's page: Zuora never saw it
            return reply
        own = {name.lower() for name, _ in reply.headers}
        if not self.config.rate_headers:
            reply = _without(reply, ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"))
            own = {name.lower() for name, _ in reply.headers}
        added: list[tuple[str, str]] = [("Zuora-Request-Id", request_id)]
        if track_id is not None:
            added.append(("Zuora-Track-Id", track_id))
        if reply.status != 500:
            added += self._limit_headers(reading)
        return reply.with_headers(*(h for h in added if h[0].lower() not in own))

    def _limit_headers(self, reading: Reading) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        if self.config.concurrency_headers:
            headers.append(("Concurrency-Limit-Type", "Default"))
            if reading.concurrency_limit is not None and reading.concurrency_remaining is not None:
                headers.append(("Concurrency-Limit-Limit", str(reading.concurrency_limit)))
                headers.append(("Concurrency-Limit-Remaining",
                                str(reading.concurrency_remaining)))
        if self.config.rate_headers and reading.rate_policy:
            # every window, the quota of the one closest to exhaustion first, Remaining and
            # Reset for that one (a daily quota alone reads "N, N;w=86400")
            headers.append(("RateLimit-Limit", reading.rate_policy))
            headers.append(("RateLimit-Remaining", str(reading.rate_remaining)))
            headers.append(("RateLimit-Reset", str(reading.rate_reset)))
        return headers


def _without(reply: Reply, names: tuple[str, ...]) -> Reply:
    """The answer without the headers named (lower case)."""
    kept = tuple(h for h in reply.headers if h[0].lower() not in names)
    return Reply(reply.status, reply.payload, reply.text, reply.raw, reply.content_type, kept)
