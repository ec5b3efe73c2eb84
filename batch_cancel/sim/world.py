"""An in-memory Zuora on virtual time, for running the real client and runner against seeds.

The world is the tenant, its other clients and the network between, behind the transport seam
of `sim.transport`: the real `ZuoraClient` (its token fetch, retries, refresh before expiry and
after a 401, its classification of every answer) talks to it as to an aiohttp session. What the
tenant answers comes from the rules both front ends share: `sim.rules` (e-invoice states, codes,
answer shapes), `sim.limits` (concurrency and rate windows, their 429s and headers) and
`sim.oauth` (tokens). The world adds what one seed decides (`Schedule`): latency, faults,
outages, other clients, tokens revoked early, a token endpoint that refuses for a while, and the
points where the process dies. Time is the loop's (`VirtualLoop`). Nothing on the runtime path
imports this module.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

import aiohttp

from ..model import Answer
from ..send.zuora import Credentials, ZuoraClient, classify, no_answer
from . import rules as tm
from .clock import HORIZON, Stuck, VirtualLoop
from .limits import Reading, TenantLimits
from .oauth import TokenBook, invalid_client, unauthorized
from .records import Accepted, Pending, Request, TokenRequest
from .rules import Reply, TenantModel
from .schedule import CANCEL_FAULTS, OUTAGE_MODES, Schedule
from .transport import BASE_URL, session_for, wire_headers

__all__ = [
    "CANCEL_FAULTS", "DAY", "HORIZON", "OUTAGE_MODES", "Accepted", "Crash", "Request",
    "Schedule", "Stuck", "TokenRequest", "VirtualLoop", "World", "client_secret",
]

#: Seconds an answer takes to travel back (every answer, the immediate 429s included).
RTT: Final = 0.001
DAY: Final = 86400
#: The client id the world knows (the secret is drawn per seed: the oracle greps for it).
CLIENT_ID: Final = "sim-client-id"

#: What an exchange ends in: an answer, or the exception aiohttp raises for none.
Outcome = Reply | aiohttp.ClientError | TimeoutError


def client_secret(seed: int) -> str:
    """The client secret of a seed's world (drawn, so a leak of it cannot be a coincidence)."""
    return f"sim-secret-{random.Random(f'secret|{seed}').getrandbits(64):016x}"


class Crash(BaseException):
    """The process dies here (BaseException: no `except Exception` of the runner sees it)."""


@dataclass(frozen=True, slots=True)
class _Rules:
    """The tenant model's and the limits' settings, as one seed has them."""

    seed: int
    cancel_delay: float
    cancel_failed_rate: float
    concurrency_limit: int | None
    concurrency_sample_interval: float
    rate_limit: int | None
    rate_extra_windows: tuple[tuple[float, float], ...]
    rate_retry_after: bool
    unknown_marker: str = "NOTFOUND"
    cancelled_marker: str = "CANCELLED"
    concurrency_retry_after: int = 120
    concurrency_headers: bool = True
    rate_window: float = 60.0
    rate_preused: int = 0
    rate_headers: bool = True

    @classmethod
    def of(cls, s: Schedule) -> _Rules:
        """The settings `s` draws: a minute rate window and a daily quota, each if any."""
        daily = () if s.daily_quota is None else ((float(s.daily_quota), float(DAY)),)
        return cls(s.seed, s.cancel_delay, s.cancel_failed_rate, s.concurrency_limit,
                   1.0 if s.sampled_remaining else 0.0, s.rate_limit, daily, s.rate_retry_after)


class World:
    """The tenant, its other clients and the network between, as the client's `Endpoint`."""

    def __init__(self, schedule: Schedule, loop: asyncio.AbstractEventLoop) -> None:
        self.schedule = schedule
        self._loop = loop
        rules = _Rules.of(schedule)
        self.model = TenantModel(rules, loop.time, self._on_accept)
        self.limits = TenantLimits(rules)
        issue = random.Random(f"tokens|{schedule.seed}|issue")
        self.tokens = TokenBook(loop.time, lambda: f"{issue.getrandbits(128):032x}")
        #: the client secret of this seed: no output of a run may hold it
        self.secret = client_secret(schedule.seed)
        self.requests: list[Request] = []
        self.accepted: list[Accepted] = []
        self.token_requests: list[TokenRequest] = []
        self.run = 0
        #: called when the process dies, before anything else happens (the journal snapshot)
        self.on_crash: Callable[[], None] | None = None
        #: whether the client has decided to stop its run (asked at each request)
        self.client_stopping: Callable[[], bool] = lambda: False
        self._rng = random.Random(f"world|{schedule.seed}")
        self._busy = 0  # requests of ours the tenant is working on (abandoned ones included)
        self._in_flight = 0  # requests of ours the client waits for
        self._cancel_tries: dict[str, int] = {}
        self._v1_tries: dict[str, int] = {}
        self._run_requests = 0
        self._dead = False
        self._pending: list[Pending] = []
        self._late = False
        self._accepting: Request | None = None

    def connect(self) -> ZuoraClient:
        """The real client of one process, its requests reaching this world."""
        return ZuoraClient(session_for(self), BASE_URL, Credentials(CLIENT_ID, self.secret),
                           self.schedule.settings, clock=self._loop.time)

    def next_run(self) -> None:
        """A new process starts (a resume): the dead one's requests are gone."""
        self.run += 1
        self._run_requests = 0
        self._dead = False

    # --- the endpoint -----------------------------------------------------------------------

    async def exchange(self, method: str, path: str, headers: Mapping[str, str],
                       body: str) -> Reply:
        """One request of the client: the token endpoint, an invoice read or a cancel."""
        self._check_alive()
        if path == "/oauth/token":
            return await self._token(body)
        key = unquote(path.split("/")[3])
        return await self._request("cancel" if method == "PUT" else "read", key, body, headers)

    async def _token(self, body: str) -> Reply:
        """POST /oauth/token: a token, unless the endpoint refuses now (OAuth has no outage
        of /v1's, nor its limits)."""
        at = self._loop.time()
        await asyncio.sleep(RTT)
        mode = self._token_refusal(at)
        self.token_requests.append(TokenRequest(self.run, at, mode or "granted"))
        if mode == "drop":
            raise aiohttp.ServerDisconnectedError()
        if mode == "503":
            return tm.outage_503()
        if mode == "429":
            return Reply(429, {"message": "Too many requests"}, headers=(("Retry-After", "1"),))
        if mode == "invalid_client":
            return invalid_client()
        s = self.schedule
        return self.tokens.grant(body, CLIENT_ID, self.secret, s.token_ttl, s.token_lifetime)

    def _token_refusal(self, now: float) -> str | None:
        for start, length, mode in self.schedule.token_refusals:
            if start <= now < start + length:
                return mode
        return None

    async def _request(self, kind: str, key: str, body: str,
                       headers: Mapping[str, str]) -> Reply:
        now = self._loop.time()
        self._in_flight += 1
        self._busy += 1
        request = Request(self.run, kind, key, now, self._in_flight,
                          after_stop=self.client_stopping())
        self.requests.append(request)
        pending = Pending(key, body, request) if kind == "cancel" else None
        if pending is not None:
            self._pending.append(pending)
        try:
            self._run_requests += 1
            if self._crash_point() == ("request", self._run_requests):
                self._crash(pending)
                raise Crash
            outcome = await self._answer(kind, key, body, headers, request, pending)
            await asyncio.sleep(RTT)
            request.answered = self._loop.time()
            request.answer = self._as_classified(outcome)
            if isinstance(outcome, Reply):
                return outcome
            raise outcome
        finally:
            self._in_flight -= 1
            if request.result != "timeout_before_apply":  # else the tenant is still at it
                self._busy -= 1
            if pending is not None:
                pending.done = True

    def _as_classified(self, outcome: Outcome) -> Answer:
        """The answer as the client classifies it, for the oracle's record."""
        if isinstance(outcome, Reply):
            return classify(outcome.status, wire_headers(outcome), outcome.body)
        return no_answer(outcome, self.schedule.settings.timeout)

    async def _answer(self, kind: str, key: str, body: str, headers: Mapping[str, str],
                      request: Request, pending: Pending | None) -> Outcome:
        """Zuora's order: outage, concurrency, authentication, rate window, storm, work."""
        s = self.schedule
        now = self._loop.time()
        outage = self._outage(now)
        if outage is not None:
            request.result = "outage"
            return await self._outage_answer(outage)
        reading = self.limits.admit(now, self._busy + self._others(now))
        track = headers.get("Zuora-Track-Id")
        refused = self._refusal(reading, key, headers.get("Authorization", ""))
        if refused is not None:
            request.result = "401" if refused.status == 401 else "429"
            return self._decorated(refused, reading, track)
        await asyncio.sleep(self._latency())
        if kind == "read":
            request.result = "read"
            tries = self._v1_tries[key]
            if random.Random(f"{s.seed}|readfault|{key}|{tries}").random() < s.read_faults:
                request.result = "fail_500"
                return self._decorated(tm.early_fault("fail_500"), reading, track)
            return self._decorated(self.model.read(key), reading, track)
        assert pending is not None
        return await self._cancel(key, body, reading, track, request, pending)

    def _refusal(self, reading: Reading, key: str, authorization: str) -> Reply | None:
        """The 429 or 401 that ends a request before any work, or None."""
        if reading.concurrency_exceeded:
            return self.limits.concurrency_429()
        if not self.tokens.authorized(authorization):
            return unauthorized()
        if reading.rate_exceeded:
            return self.limits.rate_429(reading)
        s = self.schedule
        tries = self._v1_tries[key] = self._v1_tries.get(key, 0) + 1
        if random.Random(f"{s.seed}|storm|{key}|{tries}").random() < s.storm:
            return tm.storm_429(s.storm_reset, reading.rate_window, s.storm_retry_after)
        return None

    async def _cancel(self, key: str, body: str, reading: Reading, track: str | None,
                      request: Request, pending: Pending) -> Outcome:
        tries = self._cancel_tries[key] = self._cancel_tries.get(key, 0) + 1
        fault = tm.draw_fault(self.schedule.seed, key, tries, self.schedule.faults)
        request.result = fault or ""
        if fault == "drop":
            pending.done = True
            return aiohttp.ServerDisconnectedError()
        if fault in tm.EARLY_FAULTS:
            pending.done = True
            return self._decorated(tm.early_fault(fault), reading, track)
        timeout = self.schedule.settings.timeout
        if fault == "timeout_before_apply":
            # the tenant works on, the client gives up; the cancel lands a little later
            pending.done = True
            late = Pending(key, body, request)
            self._loop.call_later(timeout * 1.5, self._late_apply, late)
            await asyncio.sleep(timeout)
            return TimeoutError()
        reply = self._process(pending)
        if not request.result:
            request.result = "accepted" if reply.payload == {"success": True} else "refused"
        return await self._after_apply(fault, reply, reading, track)

    async def _after_apply(self, fault: str | None, reply: Reply, reading: Reading,
                           track: str | None) -> Outcome:
        """What reaches the client of a cancel the tenant processed: its answer, or a fault's."""
        if fault == "drop_after_apply":
            return aiohttp.ServerDisconnectedError()
        if fault == "truncated_after_apply":
            return self._decorated(tm.truncated_200(), reading, track)
        if fault == "html_504_after_apply":
            return self._decorated(tm.html(504, tm.HTML_504), reading, track)
        if fault == "timeout_after_apply":
            await asyncio.sleep(self.schedule.settings.timeout)
            return TimeoutError()
        return self._decorated(reply, reading, track)

    def _decorated(self, reply: Reply, reading: Reading, track: str | None) -> Reply:
        """Zuora's per-answer headers (a proxy page has none: no request id is drawn)."""
        request_id = "" if reply.status in (502, 504) else f"{self._rng.getrandbits(64):016x}"
        return self.limits.decorate(reply, reading, request_id, track)

    # --- acceptances and crashes ------------------------------------------------------------

    def _process(self, pending: Pending, late: bool = False) -> Reply:
        pending.done = True
        self._accepting, self._late = pending.request, late
        try:
            return self.model.cancel(pending.key, pending.body)
        finally:
            self._accepting, self._late = None, False

    def _late_apply(self, pending: Pending) -> None:
        self._busy -= 1
        self._process(pending, late=True)

    def _on_accept(self, key: str) -> None:
        invoice = self.model.invoices[key]
        request = self._accepting
        sent_at = request.arrived if request is not None else self._loop.time()
        run = request.run if request is not None else self.run
        self.accepted.append(Accepted(key, self._loop.time(), run, sent_at, self._late,
                                      invoice.will_fail))

    def arm(self) -> None:
        """A run starts: set its timed crash, if the schedule has one."""
        point = self._crash_point()
        if point is not None and point[0] == "time":
            self._loop.call_later(point[1], self._crash_if, self.run)

    def _crash_point(self) -> tuple[str, float] | None:
        crashes = self.schedule.crashes
        return crashes[self.run] if self.run < len(crashes) else None

    def _crash_if(self, run: int) -> None:
        if run == self.run and not self._dead:
            self._crash(None)

    def _crash(self, current: Pending | None) -> None:
        """The process dies: the request it dies on reaches Zuora or not (the schedule says),
        other cancels already sent are processed or not (a draw each), the rest is lost."""
        if current is not None and not self.schedule.crash_delivers:
            current.done = True  # it never left the machine
        for pending in self._pending:
            if not pending.done and (pending is current or self._rng.random() < 0.5):
                self._process(pending)
            pending.done = True
        self._pending.clear()
        self._dead = True
        if self.on_crash is not None:
            self.on_crash()

    def _check_alive(self) -> None:
        if self._dead:
            raise Crash

    # --- other clients and the network ------------------------------------------------------

    def _others(self, now: float) -> int:
        """Places other clients of the tenant hold now (seeded, piecewise constant)."""
        s = self.schedule
        slot = math.floor(now / s.others_period)
        return random.Random(f"{s.seed}|others|{slot}").randint(0, s.others_peak)

    def _latency(self) -> float:
        s = self.schedule
        return s.latency * (1 + self._rng.uniform(-s.jitter, s.jitter))

    def _outage(self, now: float) -> str | None:
        for start, length, mode in self.schedule.outages:
            if start <= now < start + length:
                return mode
        return None

    async def _outage_answer(self, mode: str) -> Outcome:
        """The service is down: the request never reaches the tenant (no Zuora headers)."""
        timeout = self.schedule.settings.timeout
        if mode == "hang":
            await asyncio.sleep(timeout)
            return TimeoutError()
        await asyncio.sleep(min(self.schedule.latency, timeout) / 10)
        if mode == "drop":
            return aiohttp.ServerDisconnectedError()
        return tm.html(502, tm.HTML_502) if mode == "html_502" else tm.outage_503()
