"""A local stand-in for the Zuora endpoints that batch-cancel talks to.

Why it exists: a real tenant cannot be hammered, made to fail on demand or rewound. This server
reproduces the parts of Zuora's behaviour a bulk client has to survive (see
/work/shared/zuora-api-notes.md, sections 1, 2, 4, 5 and 6):

* OAuth tokens that expire, and a 401 ``{"message": "Authentication error"}`` when they do;
* the tenant concurrency limit (429, code 50000070, ``Retry-After: 120``) and a fixed-window
  rate limit (429, category 70, ``RateLimit-*`` headers), both counting failed requests too;
* HTTP 200 answers that are not successes (``success: false`` with 8-digit reason codes);
* the asynchronous ``Success -> CancelProcessing -> Cancelled | CancelFailed`` lifecycle, and the
  server-side refusal of a second cancel (the only guard there is: the PUT has no idempotency key);
* seeded, reproducible faults, including the in-doubt case where the cancel is applied but the
  answer is lost;
* whole-service outages (every /v1 call 503, dropped or a proxy 502 for a while; OAuth stays up)
  and 429 storms (rate 429s on a share of /v1 calls, with or without ``Retry-After``).

The rules themselves (e-invoice states, codes, answer shapes) live in `sim.rules`, shared with
the in-memory world of `sim.world`; this module is their HTTP front end: routing, OAuth, limits,
faults and outages. It imports only the standard library, aiohttp and `sim.rules`, and it
keeps all state on the ``Simulator`` instance so tests can run several independent servers side
by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import secrets
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, unquote

from aiohttp import web

from . import rules as model
from .rules import Invoice, Reply, TenantModel
from .rules import seconds as _seconds

__all__ = [
    "OUTAGE_MODES",
    "RequestRecord",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStats",
    "serve",
]

_SHUTDOWN_TIMEOUT: Final = 0.25

#: How every /v1 request fails during an outage: a Zuora JSON 503, a closed connection with no
#: answer, or the HTML 502 page of the proxy in front of Zuora. None of them applies anything.
OUTAGE_MODES: Final = ("503", "drop", "html_502")

# Route kinds, decided from method and raw path only.
_TOKEN: Final = "token"
_CANCEL: Final = "cancel"
_READ: Final = "read"
_V1_OTHER: Final = "v1"
_CONTROL: Final = "control"
_OTHER: Final = "other"

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
        _check_outage_mode(self.outage_mode)

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

    def cancels(self) -> list[RequestRecord]:
        """The cancel PUT records, in arrival order."""
        return [r for r in self.requests if _classify(r.method, r.path) == _CANCEL]

    def as_json(self) -> dict[str, Any]:
        """The counters for /_sim/stats (subprocess tests cannot reach this object)."""
        return {
            "token_requests": self.token_requests,
            "cancel_requests": self.cancel_requests,
            "accepted_cancels": dict(self.accepted_cancels),
            "acceptances": [list(item) for item in self.acceptances],
            "invoice_reads": self.invoice_reads,
            "max_in_flight": self.max_in_flight,
            "total_requests": len(self.requests),
        }


@dataclass(frozen=True)
class _Limits:
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


class _Dropped(Exception):
    """Raised inside a handler to end the exchange with no answer at all."""


class Simulator:
    """A fake Zuora tenant served over real HTTP by aiohttp."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        """All state lives on the instance, so several simulators can run in one process."""
        self.config = config if config is not None else SimulatorConfig()
        self.stats = SimulatorStats()
        #: called with the key after each accepted cancel: lets a test change the world at a
        #: chosen point of a run (take the report's place, stop the process ...)
        self.on_accept: Callable[[str], None] | None = None
        self.model = TenantModel(self.config, time.monotonic, self._accepted)
        self._tokens: dict[str, float] = {}
        self._cancel_attempts: dict[str, int] = {}
        self._v1_counts: dict[str, int] = {}
        self._started_at: float | None = None
        # (start, end, mode) of an outage begun by start_outage; one tuple so that a test thread
        # replacing it can never be seen half-written by the server's loop
        self._outage: tuple[float, float, str] | None = None
        self._jitter_rng = random.Random(f"{self.config.seed}|jitter")
        self._in_flight = 0
        self._epoch = time.monotonic()
        # per rate window (see _rate_windows): the index of its current window and its count
        self._window_state: list[list[int]] = []
        # (when sampled, free places then) for concurrency_sample_interval > 0
        self._remaining_sample: tuple[float, int] | None = None
        self._entity = str(uuid.uuid4())
        self._user = secrets.token_hex(16)
        self._runner: web.AppRunner | None = None

    # ----------------------------------------------------------------- public surface

    @property
    def config(self) -> SimulatorConfig:
        """The tenant's knobs; the tenant model reads the same object, so changes reach it."""
        return self._config

    @config.setter
    def config(self, config: SimulatorConfig) -> None:
        self._config = config
        model: TenantModel | None = getattr(self, "model", None)
        if model is not None:
            model.rules = config

    def app(self) -> web.Application:
        """A fresh aiohttp app bound to this simulator's state (an app can only be run once)."""
        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", self._handle)
        return application

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in the running loop and return the base URL with the port actually bound."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runner = runner
        self._started_at = time.monotonic()
        bound_host, bound_port = runner.addresses[0][:2]
        return f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        """Stop serving; requests still sleeping (slow faults) are cut short quickly."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def invoice_status(self, key: str) -> str | None:
        """Current eInvoiceStatus of ``key`` (None if the key does not exist)."""
        return self.model.status_of(key)

    def set_status(self, key: str, status: str) -> None:
        """Put an invoice's e-invoice in any status, one Zuora may add included (tests)."""
        self.model.set_status(key, status)

    def issued_tokens(self) -> list[str]:
        """Every access token issued so far (tests grep outputs for them)."""
        return list(self._tokens)

    def expire_tokens(self) -> None:
        """Make every issued token expired now, to test refresh in the middle of a run."""
        now = time.monotonic()
        self._tokens = dict.fromkeys(self._tokens, now)

    def start_outage(self, seconds: float, mode: str = "503") -> None:
        """Fail every /v1 request (cancel and read) for ``seconds`` from now; OAuth stays up.

        ``mode`` is one of OUTAGE_MODES. Safe to call from another thread (a timer in a test)
        while the server runs; a new call replaces an outage still going on.
        """
        _check_outage_mode(mode)
        if seconds < 0:
            raise ValueError(f"outage seconds must be >= 0, got {seconds}")
        now = time.monotonic()
        self._outage = (now, now + seconds, mode)

    def end_outage(self) -> None:
        """End an outage begun by start_outage now (a configured outage_after one is kept)."""
        self._outage = None

    def outage_mode(self) -> str | None:
        """The mode of the outage going on now, or None when the service is up."""
        now = time.monotonic()
        outage = self._outage
        if outage is not None and outage[0] <= now < outage[1]:
            return outage[2]
        after, started = self.config.outage_after, self._started_at
        if after is not None and started is not None:
            begins = started + after
            if begins <= now < begins + self.config.outage_for:
                return self.config.outage_mode
        return None

    # ----------------------------------------------------------------- dispatch

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """Single entry point: routing on the raw path keeps ``INV%2F1`` one key, not two."""
        path = _raw_path(request)
        kind = _classify(request.method, path)
        if kind == _CONTROL:
            return self._control(request.method, path)
        record = self._record_arrival(request, path, kind)
        try:
            record.body = (await request.read()).decode("utf-8", "replace")
            response = await self._route(request, kind, path, record.body)
        except _Dropped:
            _drop_connection(request)
            return web.Response(status=204)  # never written: the transport is closed
        except web.HTTPException as exc:
            record.status = exc.status
            raise
        else:
            record.status = response.status
            return response
        finally:
            record.finished = time.monotonic()

    def _record_arrival(self, request: web.Request, path: str, kind: str) -> RequestRecord:
        """Log the request and bump the per-kind counters the moment it arrives."""
        now = time.monotonic()
        record = RequestRecord(
            method=request.method,
            path=path,
            key=_invoice_key(path),
            headers=dict(request.headers),
            body="",
            started=now,
            finished=now,
            status=None,
        )
        self.stats.requests.append(record)
        if kind == _TOKEN:
            self.stats.token_requests += 1
        elif kind == _CANCEL:
            self.stats.cancel_requests += 1
        elif kind == _READ:
            self.stats.invoice_reads += 1
        return record

    async def _route(
        self, request: web.Request, kind: str, path: str, body: str
    ) -> web.StreamResponse:
        """Send the request to the token endpoint, the /v1 pipeline or a JSON 404."""
        if kind == _TOKEN:
            return self._issue_token(body)
        if kind in (_CANCEL, _READ, _V1_OTHER):
            return await self._v1(request, kind, path, body)
        return _route_not_found(path)

    def _control(self, method: str, path: str) -> web.Response:
        """Simulator-only endpoints; not recorded, so they never skew the counters.

        ``/_sim/requests`` and ``/_sim/tokens`` let a test in another process check the order
        of requests per invoice and grep files for tokens; neither echoes a request's headers.
        """
        if method == "GET" and path == "/_sim/stats":
            return web.json_response(self.stats.as_json())
        if method == "GET" and path == "/_sim/requests":
            return web.json_response({"requests": [_record_json(r) for r in self.stats.requests]})
        if method == "GET" and path == "/_sim/tokens":
            return web.json_response({"tokens": self.issued_tokens()})
        return _route_not_found(path)

    # ----------------------------------------------------------------- OAuth

    def _issue_token(self, body: str) -> web.Response:
        """Client-credentials grant; the answer never echoes the secret that was sent."""
        form = {name: values[0] for name, values in parse_qs(body, keep_blank_values=True).items()}
        wanted = ("client_id", "client_secret", "grant_type")
        missing = [name for name in wanted if not form.get(name)]
        if missing:
            description = "Missing required parameter(s): " + ", ".join(missing)
            return web.json_response(
                {"error": "invalid_request", "error_description": description}, status=400
            )
        if not self._credentials_ok(form):
            return web.json_response(
                {"error": "invalid_client", "error_description": "Invalid client credentials"},
                status=401,
            )
        return web.json_response(self._new_token())

    def _credentials_ok(self, form: dict[str, str]) -> bool:
        """Constant-time comparison, as a real identity provider would do."""
        id_ok = _same(form["client_id"], self.config.client_id)
        secret_ok = _same(form["client_secret"], self.config.client_secret)
        return id_ok and secret_ok and form["grant_type"] == "client_credentials"

    def _new_token(self) -> dict[str, Any]:
        """Mint an opaque token valid for token_ttl seconds from now."""
        token = secrets.token_hex(16)
        self._tokens[token] = time.monotonic() + self.config.token_ttl
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": int(self.config.token_ttl),
            "scope": f"entity.{self._entity} platform.write service.usage.update tenant.1 "
            f"user.{self._user}",
            "jti": secrets.token_hex(16),
        }

    def _authorized(self, request: web.Request) -> bool:
        """True when the request carries a bearer token that is issued and not expired."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expiry = self._tokens.get(token.strip())
        return scheme.lower() == "bearer" and expiry is not None and time.monotonic() < expiry

    # ----------------------------------------------------------------- /v1 pipeline

    async def _v1(self, request: web.Request, kind: str, path: str, body: str) -> web.Response:
        """Count the request in flight for its whole life, then check limits and route it.

        During an outage the request never reaches the tenant: no limit is charged, no header
        of Zuora's is added, nothing is applied.
        """
        outage = self.outage_mode()
        if outage is not None:
            return _outage_answer(outage)
        self._in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
        try:
            limits = self._admit(time.monotonic())
            response = await self._v1_checked(request, kind, path, body, limits)
            self._decorate(request, response, limits)
            return response
        finally:
            self._in_flight -= 1

    async def _v1_checked(
        self, request: web.Request, kind: str, path: str, body: str, limits: _Limits
    ) -> web.Response:
        """Zuora's order: concurrency, then authentication, then the rate window, then work."""
        if limits.concurrency_exceeded:
            return self._concurrency_429()
        if not self._authorized(request):
            return web.json_response({"message": "Authentication error"}, status=401)
        if limits.rate_exceeded:
            return self._rate_429(limits)
        if self._draw_storm(path):
            return self._storm_429(limits)
        await self._latency()
        key = _invoice_key(path)
        if kind == _READ and key is not None:
            return self._read_invoice(key)
        if kind == _CANCEL and key is not None:
            return await self._cancel(key, body)
        return _route_not_found(path)

    def _admit(self, now: float) -> _Limits:
        """Charge this request to the rate window and take the limit readings for its headers."""
        concurrency = self.config.concurrency_limit
        free = None if concurrency is None else max(0, concurrency - self._in_flight)
        if free is not None:
            free = self._advertised_remaining(now, free)
        exceeded, closest, remaining, reset = False, None, 0, 1
        windows = self._rate_windows()
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
            if closest is None or left < remaining:
                closest, remaining = (quota, window), left
                reset = max(1, math.ceil(self._epoch + (index + 1) * window - now))
        policy = ""
        if closest is not None:
            policy = ", ".join([str(closest[0]), *(f"{q};w={_seconds(w)}"
                                                   for q, w in windows)])
        return _Limits(
            concurrency_exceeded=concurrency is not None and self._in_flight > concurrency,
            concurrency_limit=concurrency,
            concurrency_remaining=free,
            rate_exceeded=exceeded,
            rate_limit=None if closest is None else closest[0],
            rate_remaining=remaining,
            rate_reset=reset,
            rate_window=self.config.rate_window if closest is None else closest[1],
            rate_policy=policy,
        )

    def _rate_windows(self) -> list[tuple[int, float]]:
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

    def _concurrency_429(self) -> web.Response:
        """The tenant concurrency 429: code 50000070 and a fixed Retry-After, as Zuora sends."""
        return _response(model.concurrency_429(self.config.concurrency_retry_after))

    def _rate_429(self, limits: _Limits) -> web.Response:
        """The rate 429: category 70 body; Retry-After only if configured (UNCONFIRMED upstream)."""
        reply = model.rate_429(limits.rate_reset, limits.rate_window, self.config.rate_retry_after)
        if self.config.rate_headers:
            reply = reply.with_headers(("RateLimit-Remaining", "0"),
                                       ("RateLimit-Reset", str(limits.rate_reset)))
        return _response(reply)

    def _draw_storm(self, path: str) -> bool:
        """Whether this /v1 request is caught in the 429 storm.

        Seeded from (seed, key, how many /v1 requests that key has had) like the cancel faults,
        so the same requests get the same 429s whatever order concurrent workers arrive in.
        """
        if self.config.storm_429 <= 0:
            return False
        slot = _invoice_key(path) or path
        count = self._v1_counts.get(slot, 0) + 1
        self._v1_counts[slot] = count
        draw = random.Random(f"{self.config.seed}|storm|{slot}|{count}").random()
        return draw < self.config.storm_429

    def _storm_429(self, limits: _Limits) -> web.Response:
        """A storm 429: Zuora's rate 429 body, RateLimit-Remaining 0, Retry-After if configured."""
        return _response(model.storm_429(self.config.storm_reset, limits.rate_window,
                                         self.config.storm_retry_after))

    async def _latency(self) -> None:
        """Simulated service time, which is what makes the concurrency limit bite."""
        delay = self.config.latency
        if self.config.latency_jitter > 0:
            jitter = self.config.latency_jitter
            delay += self._jitter_rng.uniform(-jitter, jitter)
        if delay > 0:
            await asyncio.sleep(delay)

    def _decorate(self, request: web.Request, response: web.Response, limits: _Limits) -> None:
        """Add Zuora's per-response headers; a proxy 502 has none, a 500 lacks the limit ones."""
        if response.status in (502, 504):  # the gateway's page: Zuora never saw it
            return
        headers = response.headers
        headers["Zuora-Request-Id"] = str(uuid.uuid4())
        track_id = request.headers.get("Zuora-Track-Id")
        if track_id is not None:
            headers["Zuora-Track-Id"] = track_id
        if response.status == 500:
            return
        if self.config.concurrency_headers:
            headers["Concurrency-Limit-Type"] = "Default"
            if limits.concurrency_limit is not None and limits.concurrency_remaining is not None:
                headers["Concurrency-Limit-Limit"] = str(limits.concurrency_limit)
                headers["Concurrency-Limit-Remaining"] = str(limits.concurrency_remaining)
        if not self.config.rate_headers:
            for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
                headers.popall(name, None)
        elif limits.rate_policy:
            # every window, the quota of the one closest to exhaustion first, Remaining and
            # Reset for that one (a daily quota alone reads "N, N;w=86400"); a rate or storm
            # 429 keeps its own Remaining/Reset
            headers["RateLimit-Limit"] = limits.rate_policy
            headers.setdefault("RateLimit-Remaining", str(limits.rate_remaining))
            headers.setdefault("RateLimit-Reset", str(limits.rate_reset))

    # ----------------------------------------------------------------- invoices

    def _lookup(self, key: str) -> Invoice | None:
        """Find or lazily create the invoice (the tenant model's rules)."""
        return self.model.lookup(key)

    def _settle(self, invoice: Invoice) -> str:
        """Move a due CancelProcessing to its outcome (the tenant model's rules)."""
        return self.model.settle(invoice)

    def _read_invoice(self, key: str) -> web.Response:
        """GET /v1/invoices/{key}: the fields a client polls to learn a cancel's outcome."""
        return _response(self.model.read(key))

    async def _cancel(self, key: str, body: str) -> web.Response:
        """PUT .../e-invoice/cancel with the drawn fault wrapped around the real processing."""
        fault = self._draw_fault(key)
        if fault == "drop":
            raise _Dropped
        if fault in model.EARLY_FAULTS:
            return _response(model.early_fault(fault))
        if fault == "slow_before_apply":
            await asyncio.sleep(self.config.slow_seconds)
        response = self._process_cancel(key, body)
        if fault == "drop_after_apply":
            raise _Dropped  # processed (applied if valid), answer lost: the in-doubt case
        if fault == "truncated_after_apply":
            return _response(model.truncated_200())
        if fault == "html_504_after_apply":
            return _response(model.html(504, model.HTML_504))
        if fault == "slow":
            await asyncio.sleep(self.config.slow_seconds)
        return response

    def _draw_fault(self, key: str) -> str | None:
        """Draw at most one fault for this cancel PUT from one uniform number.

        The generator is seeded from (seed, key, attempt number for that key) rather than shared:
        the same requests then get the same faults whatever order concurrent workers reach the
        server in, so a failing run or a benchmark replays exactly.
        """
        attempt = self._cancel_attempts.get(key, 0) + 1
        self._cancel_attempts[key] = attempt
        draw = random.Random(f"{self.config.seed}|fault|{key}|{attempt}").random()
        threshold = 0.0
        for name, share in self.config.fault_shares():
            threshold += share
            if draw < threshold:
                return name
        return None

    def _process_cancel(self, key: str, body: str) -> web.Response:
        """Validate, look up, check state, apply: Zuora's own refusal of a second cancel."""
        return _response(self.model.cancel(key, body))

    def _apply_cancel(self, key: str, invoice: Invoice) -> None:
        """Accept the cancel; its outcome is fixed now (seeded per key) and revealed later."""
        self.model.apply_cancel(key, invoice)

    def _accepted(self, key: str) -> None:
        """Count an accepted cancel and tell the test that asked (the model calls this)."""
        self.stats.accepted_cancels[key] = self.stats.accepted_cancels.get(key, 0) + 1
        self.stats.acceptances.append((key, time.monotonic()))
        if self.on_accept is not None:
            self.on_accept(key)


# --------------------------------------------------------------------- helpers


def _raw_path(request: web.Request) -> str:
    """The request path still percent-encoded, without the query string."""
    raw = request.raw_path
    if not raw.startswith("/"):  # absolute-form request target
        raw = request.rel_url.raw_path
    return raw.partition("?")[0]


def _classify(method: str, path: str) -> str:
    """Which endpoint a (method, raw path) pair addresses."""
    if path.startswith("/_sim/"):
        return _CONTROL
    if path == "/oauth/token":
        return _TOKEN if method == "POST" else _OTHER
    if path != "/v1" and not path.startswith("/v1/"):
        return _OTHER
    parts = path.split("/")
    if _invoice_key(path) is not None:
        if len(parts) == 4 and method == "GET":
            return _READ
        if len(parts) == 6 and parts[4:] == ["e-invoice", "cancel"] and method == "PUT":
            return _CANCEL
    return _V1_OTHER


def _invoice_key(path: str) -> str | None:
    """Decoded key of a /v1/invoices/{key}/... path: exactly one raw segment, then unquoted."""
    parts = path.split("/")
    if len(parts) >= 4 and parts[1] == "v1" and parts[2] == "invoices" and parts[3]:
        return unquote(parts[3])
    return None


def _response(reply: Reply) -> web.Response:
    """The tenant model's answer as an aiohttp response (JSON as json_response writes it)."""
    if reply.payload is not None:
        response = web.json_response(reply.payload, status=reply.status)
    elif reply.text is not None:
        response = web.Response(status=reply.status, text=reply.text,
                                content_type=reply.content_type)
    else:
        response = web.Response(status=reply.status, body=reply.raw or b"",
                                content_type=reply.content_type)
    for name, value in reply.headers:
        response.headers[name] = value
    return response


def _validate_cancel_body(body: str) -> web.Response | None:
    """The 400 a malformed or invalid cancel body gets, or None when it is acceptable."""
    invalid = model.validate_cancel_body(body)
    return None if invalid is None else _response(invalid)


def _record_json(record: RequestRecord) -> dict[str, Any]:
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


def _outage_answer(mode: str) -> web.Response:
    """What a /v1 request gets while the service is down (see OUTAGE_MODES)."""
    if mode == "drop":
        raise _Dropped
    if mode == "html_502":
        return _response(model.html(502, model.HTML_502))
    return _response(model.outage_503())


def _check_outage_mode(mode: str) -> None:
    """Refuse an outage mode the server does not know, naming the ones it does."""
    if mode not in OUTAGE_MODES:
        raise ValueError(f"outage mode must be one of {', '.join(OUTAGE_MODES)}, got {mode!r}")


def _route_not_found(path: str) -> web.Response:
    """A JSON 404 for anything that is not a simulated endpoint."""
    return _response(model.route_not_found(path))


def _same(given: str, expected: str) -> bool:
    """Compare credentials in constant time, tolerating non-ASCII input."""
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _drop_connection(request: web.Request) -> None:
    """Close the socket so the client sees a disconnect instead of any HTTP answer."""
    transport = request.transport
    if transport is not None:
        transport.close()


# --------------------------------------------------------------------- command line


def serve(config: SimulatorConfig, host: str, port: int) -> None:
    """Run a simulator in the foreground until Ctrl+C or SIGTERM (``batch-cancel simulate``).

    Not ``web.run_app``: that prints the requested port, useless with port 0, while scripts need
    the port actually bound, so the URL is printed after binding.
    """
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_stopped(Simulator(config), host, port))


async def _serve_until_stopped(simulator: Simulator, host: str, port: int) -> None:
    """Start, print how to connect, and wait for a stop signal."""
    base_url = await simulator.start(host, port)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stopped.set)
    print(f"Zuora simulator listening on {base_url}", flush=True)
    print(f"  client_id:     {simulator.config.client_id}", flush=True)
    print(f"  client_secret: {simulator.config.client_secret}", flush=True)
    print(f"  stats:         {base_url}/_sim/stats", flush=True)
    print("Press Ctrl+C to stop.", flush=True)
    try:
        await stopped.wait()
    finally:
        await simulator.stop()
