"""An in-memory Zuora on virtual time, for running the real runner against seeded schedules.

The world answers the runner's `Sender` calls as a tenant would: it asks the shared
`sim.rules` (the same rules the aiohttp simulator serves) for the status, body and headers,
adds the tenant's limit headers, and hands them to the client's own `zuora.classify`, so what
the runner sees went through the same classification as a real answer. Time is the event
loop's: `VirtualLoop` never sleeps, it moves its clock to the next timer, so a schedule of
hours runs in milliseconds and the same seed replays the same run.

A `Schedule` (drawn from one seed) decides everything: rows, latency, the tenant's limits,
other clients holding places, every fault, outages, the daily quota, and crash points.
Nothing on the runtime path imports this module.
"""

from __future__ import annotations

import asyncio
import math
import random
import selectors
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import orjson
from multidict import CIMultiDict

from ..config import Settings
from ..model import Answer, CancelJob
from ..send.zuora import InvoiceState, cancel_body, classify, invoice_state_from, no_answer
from . import rules as tm
from .rules import Reply, TenantModel

#: Faults a cancel PUT can meet, in the fixed order they are drawn in.
CANCEL_FAULTS: Final = (
    "fail_500", "fail_503", "html_502", "drop", "retryable_false",  # nothing applied
    "drop_after_apply", "truncated_after_apply", "html_504_after_apply",
    "timeout_after_apply",  # applied, then no answer within the client's timeout
    "timeout_before_apply",  # no answer in time; the cancel lands after the client gave up
)
#: How /v1 fails during an outage: Zuora's JSON 503, a dropped connection, the proxy's HTML
#: 502, or no answer at all until the client's timeout.
OUTAGE_MODES: Final = ("503", "drop", "html_502", "hang")
#: Seconds an answer takes to travel back (every answer, the immediate 429s included).
RTT: Final = 0.001
#: Virtual seconds one turn of the loop takes (so time always moves, as it does for real).
TICK: Final = 1e-6
#: Loop turns one schedule may take: more means tasks spin without time moving.
MAX_TURNS: Final = 3_000_000
#: A schedule that has not finished after this much virtual time is stuck.
HORIZON: Final = 30 * 86400.0
DAY: Final = 86400


class Stuck(RuntimeError):
    """The loop has nothing left to run and nothing that could wake it, or ran past HORIZON:
    some task waits for ever (a hang in the code under test)."""


class Crash(BaseException):
    """The process dies here (BaseException: no `except Exception` of the runner sees it)."""


# --------------------------------------------------------------------- virtual time


class _IdleSelector(selectors.BaseSelector):
    """A selector with no I/O behind it: waiting `timeout` moves the clock by that much."""

    def __init__(self) -> None:
        self.now = 0.0
        self.turns = 0
        self.horizon = HORIZON
        self.max_turns = MAX_TURNS
        self._keys: dict[Any, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.turns += 1
        if self.turns > self.max_turns:
            raise Stuck(f"{self.max_turns} loop turns: tasks spin without time moving")
        if timeout is None:
            raise Stuck("every task is waiting and no timer is set: the run hangs")
        # every turn takes a microsecond, as a real one does: code that waits for a deadline
        # (now >= until) must see time move, or it spins on a float one ulp short of it
        self.now += timeout if timeout > TICK else TICK
        if timeout > 0 and self.now > self.horizon:
            raise Stuck(f"still running after {self.horizon:.0f} s of virtual time")
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._keys

    def close(self) -> None:
        self._keys.clear()


class VirtualLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time: when nothing is ready it jumps to the next timer.

    Everything on the loop sees this time (`loop.time()`, `asyncio.sleep`, aiolimiter's
    pacer), so the schedule a run follows is the one real time would give, without the waits.
    """

    def __init__(self) -> None:
        self._idle = _IdleSelector()
        super().__init__(self._idle)

    def time(self) -> float:
        return self._idle.now

    def unbounded(self) -> None:
        """Lift the horizon and the turn limit (to let a stuck run's tasks be cancelled)."""
        self._idle.horizon = self._idle.now + HORIZON
        self._idle.turns = 0


# --------------------------------------------------------------------- the schedule


@dataclass(frozen=True, slots=True)
class Schedule:
    """Everything one seed decides about a run and the world it runs against."""

    seed: int
    keys: tuple[str, ...]
    reasons: tuple[str, ...]
    references: tuple[str, ...]
    latency: float
    jitter: float
    concurrency_limit: int
    sampled_remaining: bool
    others_peak: int
    others_period: float
    rate_limit: int | None
    rate_retry_after: bool
    daily_quota: int | None
    faults: tuple[tuple[str, float], ...]
    read_faults: float
    storm: float
    storm_retry_after: int | None
    storm_reset: int
    outages: tuple[tuple[float, float, str], ...]
    cancel_delay: float
    cancel_failed_rate: float
    settings: Settings
    #: per run of the chain, where the process dies: ("request", n) as its n-th request
    #: arrives, or ("time", t) t seconds after it started, wherever it is then
    crashes: tuple[tuple[str, float], ...]
    #: whether the request the process dies on (a "request" crash) still reaches Zuora
    crash_delivers: bool
    #: Ctrl-C in the first run: (seconds after it started, --grace); None: no interrupt
    interrupt: tuple[float, float] | None = None

    @property
    def rows(self) -> int:
        """Input rows."""
        return len(self.keys)

    @classmethod
    def draw(cls, seed: int) -> Schedule:
        """The schedule of `seed`: a mix of faults, limits and sizes, most of them modest."""
        rng = random.Random(f"schedule|{seed}")
        rows = rng.choice((1, 3, 8, 15, 25, 40)) if rng.random() < 0.9 else rng.randint(41, 120)
        keys: list[str] = []
        reasons: list[str] = []
        refs: list[str] = []
        for n in range(rows):
            kind = rng.random()
            key = f"INV{n:05d}"
            if kind < 0.08:
                key += "CANCELLED"  # cancelled before the run
            elif kind < 0.12:
                key += "NOTFOUND"
            elif kind < 0.15 and keys:
                key = rng.choice(keys)  # a duplicate row
            elif kind < 0.17:
                key = ""  # an invalid row
            keys.append(key)
            reason = rng.choice(("01", "02", "03", "04"))
            reasons.append(reason)
            refs.append(f"REF{n}" if reason == "01" and rng.random() < 0.7 else "")
        latency = rng.choice((0.005, 0.05, 0.2, 0.8, 2.0))
        limit = rng.choice((1, 2, 4, 10, 40))
        chosen = [name for name in CANCEL_FAULTS if rng.random() < 0.3]
        total = rng.choice((0.05, 0.2, 0.5)) if chosen else 0.0
        weights = [rng.random() + 0.1 for _ in chosen]
        faults = tuple((name, total * w / sum(weights)) for name, w in zip(chosen, weights,
                                                                           strict=True))
        timeout = rng.choice((1.0, 10.0, 60.0))
        outages = tuple(
            (rng.uniform(0, 60), rng.choice((0.5, 5.0, 40.0, 400.0, 4000.0)),
             rng.choice(OUTAGE_MODES))
            for _ in range(rng.choice((0, 0, 0, 1, 2))))
        settings = Settings(
            concurrency=rng.choice((1, 2, 4, 8, 20)),
            rate=rng.choice((None, None, 2.0, 20.0, 400.0)),
            max_attempts=rng.choice((1, 2, 3, 5, 8)),
            timeout=timeout,
            outage_window=rng.choice((30.0, 300.0, 1800.0)),
            tenant_share=rng.choice((0.5, 0.5, 1.0)),
            concurrency_429=rng.choice(("shrink", "shrink", "pause")),
        )
        crashes: list[tuple[str, float]] = []
        while rng.random() < (0.3 if not crashes else 0.35) and len(crashes) < 3:
            if rng.random() < 0.5:
                crashes.append(("request", rng.randint(1, max(2, int(rows * 1.5)))))
            else:
                crashes.append(("time", rng.uniform(0.0, max(0.05, rows * latency))))
        return cls(
            seed=seed, keys=tuple(keys), reasons=tuple(reasons), references=tuple(refs),
            latency=latency, jitter=rng.choice((0.0, 0.5, 0.9)),
            concurrency_limit=limit, sampled_remaining=rng.random() < 0.5,
            others_peak=rng.randint(0, limit), others_period=rng.choice((0.5, 3.0, 20.0)),
            rate_limit=rng.choice((None, None, None, max(1, rows // 2), rows * 3)),
            rate_retry_after=rng.random() < 0.5,
            daily_quota=rng.choice((None,) * 6 + (max(1, rows // 2), rows + 5)),
            faults=faults,
            read_faults=rng.choice((0.0, 0.0, 0.1, 0.4)),
            storm=rng.choice((0.0, 0.0, 0.0, 0.1, 0.4)),
            storm_retry_after=rng.choice((None, 0, 1, 3)),
            storm_reset=rng.choice((0, 1, 5)),
            outages=outages,
            cancel_delay=rng.choice((0.0, 1.0, 30.0)),
            cancel_failed_rate=rng.choice((0.0, 0.0, 0.2, 1.0)),
            settings=settings,
            crashes=tuple(crashes),
            crash_delivers=rng.random() < 0.5,
            interrupt=(rng.uniform(0.0, max(0.05, rows * latency)), rng.choice((0.0, 1.0, 30.0)))
            if rng.random() < 0.15 else None,
        )

    def _interrupt_text(self) -> str:
        if self.interrupt is None:
            return "none"
        at, grace = self.interrupt
        return f"at +{at:.3f} s of the first run, --grace {grace:g}"

    def describe(self) -> str:
        """A few lines a person can read: what this schedule throws at the run."""
        faults = ", ".join(f"{n} {s:.0%}" for n, s in self.faults) or "none"
        outages = ", ".join(f"{m} at {a:.1f} s for {d:g} s" for a, d, m in self.outages)
        s = self.settings
        crashes = ", ".join(f"at request {int(v)}" if k == "request" else f"at +{v:.3f} s"
                            for k, v in self.crashes)
        return "\n".join((
            f"seed {self.seed}: {self.rows} rows; latency {self.latency:g} s "
            f"(jitter {self.jitter:.0%}); tenant limit {self.concurrency_limit} "
            f"(others up to {self.others_peak}, "
            f"{'sampled' if self.sampled_remaining else 'exact'} Remaining)",
            f"  rate limit {self.rate_limit}/min (Retry-After {self.rate_retry_after}); "
            f"daily quota {self.daily_quota}; storm {self.storm:.0%} "
            f"(Retry-After {self.storm_retry_after}, reset {self.storm_reset})",
            f"  cancel faults: {faults}; read faults {self.read_faults:.0%}; "
            f"outages: {outages or 'none'}",
            f"  cancel settles after {self.cancel_delay:g} s, CancelFailed share "
            f"{self.cancel_failed_rate:.0%}; crashes: {crashes or 'none'} "
            f"(the request it dies on {'reaches' if self.crash_delivers else 'never reaches'} "
            "Zuora)",
            f"  Ctrl-C: {self._interrupt_text()}",
            f"  client: --concurrency {s.concurrency} --rate {s.rate} --max-attempts "
            f"{s.max_attempts} --timeout {s.timeout:g} --outage-window {s.outage_window:g} "
            f"--tenant-share {s.tenant_share:g} --concurrency-429 {s.concurrency_429}",
        ))


# --------------------------------------------------------------------- the world


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
    answer: Answer | None = None
    #: what the tenant did: "accepted", "refused", "429", "outage", a fault name, "read"
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
class _Rules:
    seed: int
    cancel_delay: float
    cancel_failed_rate: float
    unknown_marker: str = "NOTFOUND"
    cancelled_marker: str = "CANCELLED"


@dataclass(slots=True)
class _Pending:
    """A cancel that reached the tenant and is not processed yet (a crash may cut it short)."""

    key: str
    body: str
    request: Request
    done: bool = False


class World:
    """The tenant, its other clients and the network between, as the runner's `Sender`."""

    def __init__(self, schedule: Schedule, loop: asyncio.AbstractEventLoop) -> None:
        self.schedule = schedule
        self._loop = loop
        self._rules = _Rules(schedule.seed, schedule.cancel_delay, schedule.cancel_failed_rate)
        self.model = TenantModel(self._rules, loop.time, self._on_accept)
        self.requests: list[Request] = []
        self.accepted: list[Accepted] = []
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
        self._window = (-1, 0)
        self._day = 0
        self._sample: tuple[float, int] | None = None
        self._run_requests = 0
        self._dead = False
        self._pending: list[_Pending] = []
        self._late = False
        self._accepting: Request | None = None

    def next_run(self) -> None:
        """A new process starts (a resume): the dead one's requests are gone."""
        self.run += 1
        self._run_requests = 0
        self._dead = False

    async def authenticate(self) -> None:
        """Tokens are not modelled: the client's token code is not in this loop."""
        self._check_alive()

    # --- the Sender protocol ---------------------------------------------------------------

    async def cancel(self, job: CancelJob, track_id: str) -> Answer:
        """PUT /v1/invoices/{key}/e-invoice/cancel."""
        answer, _ = await self._request("cancel", job.invoice_key, cancel_body(job), track_id)
        return answer

    async def invoice_state(self, key: str, track_id: str) -> InvoiceState:
        """GET /v1/invoices/{key}."""
        answer, data = await self._request("read", key, "", track_id)
        return invoice_state_from(answer, data)

    # --- one request ----------------------------------------------------------------------

    async def _request(self, kind: str, key: str, body: str, track_id: str) -> tuple[Answer, Any]:
        self._check_alive()
        now = self._loop.time()
        self._in_flight += 1
        self._busy += 1
        request = Request(self.run, kind, key, now, self._in_flight,
                          after_stop=self.client_stopping())
        self.requests.append(request)
        pending = _Pending(key, body, request) if kind == "cancel" else None
        if pending is not None:
            self._pending.append(pending)
        try:
            self._run_requests += 1
            if self._crash_point() == ("request", self._run_requests):
                self._crash(pending)
                raise Crash
            answer, data = await self._answer(kind, key, body, track_id, request, pending)
            await asyncio.sleep(RTT)
            request.answered = self._loop.time()
            request.answer = answer
            return answer, data
        finally:
            self._in_flight -= 1
            if request.result != "timeout_before_apply":  # else the tenant is still at it
                self._busy -= 1
            if pending is not None:
                pending.done = True

    async def _answer(self, kind: str, key: str, body: str, track_id: str, request: Request,
                      pending: _Pending | None) -> tuple[Answer, Any]:
        s = self.schedule
        now = self._loop.time()
        outage = self._outage(now)
        if outage is not None:
            request.result = "outage"
            return await self._outage_answer(outage)
        headers = self._limit_headers(now)
        if self._busy + self._others(now) > s.concurrency_limit:
            request.result = "429"
            return self._answered(tm.concurrency_429(120), track_id, headers)
        rate_reply = self._rate_refusal(headers, now)
        if rate_reply is not None:
            request.result = "429"
            return self._answered(rate_reply, track_id, headers)
        tries = self._v1_tries[key] = self._v1_tries.get(key, 0) + 1
        if random.Random(f"{s.seed}|storm|{key}|{tries}").random() < s.storm:
            request.result = "429"
            reply = tm.storm_429(s.storm_reset, 60.0, s.storm_retry_after)
            return self._answered(reply, track_id, headers)
        await asyncio.sleep(self._latency())
        if kind == "read":
            request.result = "read"
            if random.Random(f"{s.seed}|readfault|{key}|{tries}").random() < s.read_faults:
                request.result = "fail_500"
                return self._answered(tm.early_fault("fail_500"), track_id, headers)
            return self._answered(self.model.read(key), track_id, headers)
        assert pending is not None
        return await self._cancel(key, body, track_id, headers, request, pending)

    async def _cancel(self, key: str, body: str, track_id: str, headers: CIMultiDict[str],
                      request: Request, pending: _Pending) -> tuple[Answer, Any]:
        fault = self._draw_fault(key)
        request.result = fault or ""
        if fault == "drop":
            pending.done = True
            return no_answer(aiohttp.ServerDisconnectedError(), self.schedule.settings.timeout
                             ), None
        if fault in tm.EARLY_FAULTS:
            pending.done = True
            return self._answered(tm.early_fault(fault), track_id, headers)
        timeout = self.schedule.settings.timeout
        if fault == "timeout_before_apply":
            # the tenant works on, the client gives up; the cancel lands a little later
            pending.done = True
            late = _Pending(key, body, request)
            self._loop.call_later(timeout * 1.5, self._late_apply, late)
            await asyncio.sleep(timeout)
            return no_answer(TimeoutError(), timeout), None
        reply = self._process(pending)
        if not request.result:
            request.result = "accepted" if reply.payload == {"success": True} else "refused"
        if fault == "drop_after_apply":
            return no_answer(aiohttp.ServerDisconnectedError(), timeout), None
        if fault == "truncated_after_apply":
            return self._answered(tm.truncated_200(), track_id, headers)
        if fault == "html_504_after_apply":
            return self._answered(tm.html(504, tm.HTML_504), track_id, headers)
        if fault == "timeout_after_apply":
            await asyncio.sleep(timeout)
            return no_answer(TimeoutError(), timeout), None
        return self._answered(reply, track_id, headers)

    def _process(self, pending: _Pending, late: bool = False) -> Reply:
        pending.done = True
        self._accepting, self._late = pending.request, late
        try:
            return self.model.cancel(pending.key, pending.body)
        finally:
            self._accepting, self._late = None, False

    def _late_apply(self, pending: _Pending) -> None:
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

    def _crash(self, current: _Pending | None) -> None:
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

    # --- the tenant's limits and the network ------------------------------------------------

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

    async def _outage_answer(self, mode: str) -> tuple[Answer, Any]:
        timeout = self.schedule.settings.timeout
        if mode == "hang":
            await asyncio.sleep(timeout)
            return no_answer(TimeoutError(), timeout), None
        await asyncio.sleep(min(self.schedule.latency, timeout) / 10)
        if mode == "drop":
            return no_answer(aiohttp.ServerDisconnectedError(), timeout), None
        reply = tm.html(502, tm.HTML_502) if mode == "html_502" else tm.outage_503()
        return self._classified(reply, CIMultiDict({"Content-Type": reply.content_type}))

    def _limit_headers(self, now: float) -> CIMultiDict[str]:
        """Charge the request to the rate windows; the headers Zuora adds to every answer."""
        s = self.schedule
        headers: CIMultiDict[str] = CIMultiDict()
        limit = s.concurrency_limit
        free = max(0, limit - self._busy - self._others(now))
        if s.sampled_remaining:
            if self._sample is None or now - self._sample[0] >= 1.0:
                self._sample = (now, free)
            free = self._sample[1]
        headers["Concurrency-Limit-Type"] = "Default"
        headers["Concurrency-Limit-Limit"] = str(limit)
        headers["Concurrency-Limit-Remaining"] = str(free)
        index = math.floor(now / 60.0)
        count = (self._window[1] if self._window[0] == index else 0) + 1
        self._window = (index, count)
        self._day += 1
        windows = []
        if s.rate_limit is not None:
            windows.append((s.rate_limit - count, s.rate_limit, 60,
                            max(1, math.ceil((index + 1) * 60.0 - now))))
        if s.daily_quota is not None:
            windows.append((s.daily_quota - self._day, s.daily_quota, DAY,
                            max(1, math.ceil(DAY - now % DAY))))
        if windows:
            left, quota, window, reset = min(windows)  # the window closest to exhaustion
            headers["RateLimit-Limit"] = f"{quota}, {quota};w={window}"
            headers["RateLimit-Remaining"] = str(max(0, left))
            headers["RateLimit-Reset"] = str(reset)
        return headers

    def _rate_refusal(self, headers: CIMultiDict[str], now: float) -> Reply | None:
        """The 429 of an exhausted daily quota or rate window (failed calls count too)."""
        s = self.schedule
        if s.daily_quota is not None and self._day > s.daily_quota:
            quota, window, reset = s.daily_quota, DAY, DAY - now % DAY
        elif s.rate_limit is not None and self._window[1] > s.rate_limit:
            quota, window, reset = s.rate_limit, 60, (self._window[0] + 1) * 60.0 - now
        else:
            return None
        seconds = max(1, math.ceil(reset))
        headers["RateLimit-Limit"] = f"{quota}, {quota};w={window}"
        headers["RateLimit-Remaining"] = "0"
        headers["RateLimit-Reset"] = str(seconds)
        return tm.rate_429(seconds, float(window), s.rate_retry_after)

    def _draw_fault(self, key: str) -> str | None:
        """At most one fault per cancel, seeded by (seed, key, attempt) as the simulator does."""
        tries = self._cancel_tries[key] = self._cancel_tries.get(key, 0) + 1
        draw = random.Random(f"{self.schedule.seed}|fault|{key}|{tries}").random()
        threshold = 0.0
        for name, share in self.schedule.faults:
            threshold += share
            if draw < threshold:
                return name
        return None

    def _answered(self, reply: Reply, track_id: str,
                  limit_headers: CIMultiDict[str]) -> tuple[Answer, Any]:
        """Zuora's per-answer headers (none on a proxy page, no limit ones on a 500), then the
        client's own classification."""
        headers: CIMultiDict[str] = CIMultiDict({"Content-Type": reply.content_type})
        for name, value in reply.headers:
            headers[name] = value
        if reply.status not in (502, 504):
            headers["Zuora-Request-Id"] = f"{self._rng.getrandbits(64):016x}"
            headers["Zuora-Track-Id"] = track_id
            if reply.status != 500:
                for name, value in limit_headers.items():
                    headers.setdefault(name, value)
        return self._classified(reply, headers)

    @staticmethod
    def _classified(reply: Reply, headers: CIMultiDict[str]) -> tuple[Answer, Any]:
        body = reply.body
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            data = None
        return classify(reply.status, headers, body, data), data


@dataclass(slots=True)
class Ledger:
    """What one run of a chain did, for the oracle."""

    run: int
    crashed: bool
    exit_code: int | None = None
    stop_kind: str = ""
    report: list[dict[str, str]] = field(default_factory=list)
