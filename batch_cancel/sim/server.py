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

The rules themselves live in modules shared with the in-memory world of `sim.world`:
`sim.rules` (e-invoice states, codes, answer shapes), `sim.limits` (the concurrency and rate
limits, their 429s and headers) and `sim.oauth` (tokens). This module is their HTTP front end:
routing, faults, latency and outages around them. It imports only the standard library, aiohttp
and `sim`, and it keeps all state on the ``Simulator`` instance so tests can run several
independent servers side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
import uuid
from collections.abc import Callable

from aiohttp import web

from . import oauth
from . import rules as model
from .limits import Reading, TenantLimits
from .routes import (
    CANCEL,
    CONTROL,
    READ,
    TOKEN,
    V1_OTHER,
    drop_connection,
    invoice_key,
    raw_path,
    response,
    route_of,
)
from .rules import Reply, TenantModel
from .server_config import OUTAGE_MODES, SimulatorConfig, check_outage_mode
from .stats import RequestRecord, SimulatorStats, record_json

__all__ = [
    "OUTAGE_MODES",
    "RequestRecord",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStats",
    "serve",
]

_SHUTDOWN_TIMEOUT = 0.25


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
        self._epoch = time.monotonic()
        self.limits = TenantLimits(self.config, self._epoch)
        self.tokens = oauth.TokenBook(time.monotonic)
        self._cancel_attempts: dict[str, int] = {}
        self._v1_counts: dict[str, int] = {}
        self._started_at: float | None = None
        # (start, end, mode) of an outage begun by start_outage; one tuple so that a test thread
        # replacing it can never be seen half-written by the server's loop
        self._outage: tuple[float, float, str] | None = None
        self._jitter_rng = random.Random(f"{self.config.seed}|jitter")
        self._in_flight = 0
        self._runner: web.AppRunner | None = None

    # ----------------------------------------------------------------- public surface

    @property
    def config(self) -> SimulatorConfig:
        """The tenant's knobs; the tenant model and the limits read the same object."""
        return self._config

    @config.setter
    def config(self, config: SimulatorConfig) -> None:
        self._config = config
        model: TenantModel | None = getattr(self, "model", None)
        if model is not None:
            model.rules = config
        limits: TenantLimits | None = getattr(self, "limits", None)
        if limits is not None:
            limits.config = config

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
        return self.tokens.issued()

    def expire_tokens(self) -> None:
        """Make every issued token expired now, to test refresh in the middle of a run."""
        self.tokens.expire_all()

    def start_outage(self, seconds: float, mode: str = "503") -> None:
        """Fail every /v1 request (cancel and read) for ``seconds`` from now; OAuth stays up.

        ``mode`` is one of OUTAGE_MODES. Safe to call from another thread (a timer in a test)
        while the server runs; a new call replaces an outage still going on.
        """
        check_outage_mode(mode)
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
        path = raw_path(request)
        kind = route_of(request.method, path)
        if kind == CONTROL:
            return self._control(request.method, path)
        record = self._record_arrival(request, path, kind)
        try:
            record.body = (await request.read()).decode("utf-8", "replace")
            response = await self._route(request, kind, path, record.body)
        except _Dropped:
            drop_connection(request)
            return web.Response(status=204)  # never written: the transport is closed
        except web.HTTPException as exc:
            record.status = exc.status
            raise
        else:
            record.status = response.status
            return response
        finally:
            record.finished = time.monotonic()
            if kind == CANCEL:
                self.stats.count_cancel_answer(record.status)

    def _record_arrival(self, request: web.Request, path: str, kind: str) -> RequestRecord:
        """Log the request and bump the per-kind counters the moment it arrives.

        Without `keep_requests` the record lives only as long as the exchange (it carries the
        status to the counters) and holds no headers.
        """
        now = time.monotonic()
        keep = self.config.keep_requests
        record = RequestRecord(
            method=request.method,
            path=path,
            key=invoice_key(path),
            headers=dict(request.headers) if keep else {},
            body="",
            started=now,
            finished=now,
            status=None,
        )
        if keep:
            self.stats.requests.append(record)
        self.stats.total_requests += 1
        if kind == TOKEN:
            self.stats.token_requests += 1
        elif kind == CANCEL:
            self.stats.cancel_requests += 1
        elif kind == READ:
            self.stats.invoice_reads += 1
        return record

    async def _route(
        self, request: web.Request, kind: str, path: str, body: str
    ) -> web.StreamResponse:
        """Send the request to the token endpoint, the /v1 pipeline or a JSON 404."""
        if kind == TOKEN:
            config = self.config
            return response(self.tokens.grant(body, config.client_id, config.client_secret,
                                              config.token_ttl))
        if kind in (CANCEL, READ, V1_OTHER):
            return await self._v1(request, kind, path, body)
        return response(model.route_not_found(path))

    def _control(self, method: str, path: str) -> web.Response:
        """Simulator-only endpoints; not recorded, so they never skew the counters.

        ``/_sim/requests`` and ``/_sim/tokens`` let a test in another process check the order
        of requests per invoice and grep files for tokens; neither echoes a request's headers.
        """
        if method == "GET" and path == "/_sim/stats":
            return web.json_response(self.stats.as_json())
        if method == "GET" and path == "/_sim/requests":
            return web.json_response({"requests": [record_json(r) for r in self.stats.requests]})
        if method == "GET" and path == "/_sim/tokens":
            return web.json_response({"tokens": self.issued_tokens()})
        return response(model.route_not_found(path))

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
            reading = self.limits.admit(time.monotonic(), self._in_flight)
            reply = await self._v1_checked(request, kind, path, body, reading)
            track_id = request.headers.get("Zuora-Track-Id")
            return response(self.limits.decorate(reply, reading, str(uuid.uuid4()), track_id))
        finally:
            self._in_flight -= 1

    async def _v1_checked(self, request: web.Request, kind: str, path: str, body: str,
                          reading: Reading) -> Reply:
        """Zuora's order: concurrency, then authentication, then the rate window, then work."""
        if reading.concurrency_exceeded:
            return self.limits.concurrency_429()
        if not self.tokens.authorized(request.headers.get("Authorization", "")):
            return oauth.unauthorized()
        if reading.rate_exceeded:
            return self.limits.rate_429(reading)
        if self._draw_storm(path):
            config = self.config
            return model.storm_429(config.storm_reset, reading.rate_window,
                                   config.storm_retry_after)
        await self._latency()
        key = invoice_key(path)
        if kind == READ and key is not None:
            return self.model.read(key)
        if kind == CANCEL and key is not None:
            return await self._cancel(key, body)
        return model.route_not_found(path)

    def _draw_storm(self, path: str) -> bool:
        """Whether this /v1 request is caught in the 429 storm.

        Seeded from (seed, key, how many /v1 requests that key has had) like the cancel faults,
        so the same requests get the same 429s whatever order concurrent workers arrive in.
        """
        if self.config.storm_429 <= 0:
            return False
        slot = invoice_key(path) or path
        count = self._v1_counts.get(slot, 0) + 1
        self._v1_counts[slot] = count
        draw = random.Random(f"{self.config.seed}|storm|{slot}|{count}").random()
        return draw < self.config.storm_429

    async def _latency(self) -> None:
        """Simulated service time, which is what makes the concurrency limit bite."""
        delay = self.config.latency
        if self.config.latency_jitter > 0:
            jitter = self.config.latency_jitter
            delay += self._jitter_rng.uniform(-jitter, jitter)
        if delay > 0:
            await asyncio.sleep(delay)

    # ----------------------------------------------------------------- invoices

    async def _cancel(self, key: str, body: str) -> Reply:
        """PUT .../e-invoice/cancel with the drawn fault wrapped around the real processing.

        The fault is drawn from (seed, key, attempt number for that key), so the same requests
        get the same faults whatever order concurrent workers arrive in.
        """
        attempt = self._cancel_attempts[key] = self._cancel_attempts.get(key, 0) + 1
        fault = model.draw_fault(self.config.seed, key, attempt, self.config.fault_shares())
        if fault == "drop":
            raise _Dropped
        if fault in model.EARLY_FAULTS:
            return model.early_fault(fault)
        if fault == "slow_before_apply":
            await asyncio.sleep(self.config.slow_seconds)
        reply = self.model.cancel(key, body)
        if fault == "drop_after_apply":
            raise _Dropped  # processed (applied if valid), answer lost: the in-doubt case
        if fault == "truncated_after_apply":
            return model.truncated_200()
        if fault == "html_504_after_apply":
            return model.html(504, model.HTML_504)
        if fault == "slow":
            await asyncio.sleep(self.config.slow_seconds)
        return reply

    def _accepted(self, key: str) -> None:
        """Count an accepted cancel and tell the test that asked (the model calls this)."""
        self.stats.accepted_cancels[key] = self.stats.accepted_cancels.get(key, 0) + 1
        if self.config.keep_requests:
            self.stats.acceptances.append((key, time.monotonic()))
        if self.on_accept is not None:
            self.on_accept(key)


def _outage_answer(mode: str) -> web.Response:
    """What a /v1 request gets while the service is down (see OUTAGE_MODES)."""
    if mode == "drop":
        raise _Dropped
    if mode == "html_502":
        return response(model.html(502, model.HTML_502))
    return response(model.outage_503())


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
