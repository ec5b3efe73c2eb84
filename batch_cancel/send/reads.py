"""Reading invoices under the run's own limits: how `preflight` and `verify` read Zuora.

A read counts against the tenant exactly as a cancel does, so it waits for the same things a
cancel waits for: the pace (learned from RateLimit headers), the flow-control window, the
pool-wide pause after a 429 and the outage breaker, all behind one `limits.Limiter`. A key
whose read met a 429, a 5xx or no answer is read again once the limits allow (the pause
Zuora named, else the retry policy's backoff), up to --max-attempts counted reads; reads
during an outage the breaker holds do not count. A fixed set of workers over one queue of the
keys does the reading: a million keys cost a million queue entries, not a million tasks.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from ..config import Settings, Target, open_target
from ..events import Events, PoolStopping
from ..logs import logged_events
from ..model import InvoiceState, StopKind, Verdict
from .clock import Clock, Stop
from .limits import Limiter, Limits, limits_for
from .zuora import Credentials, ZuoraClient, open_session

#: One invoice to read: the row it belongs to, and its key.
Key = tuple[int, str]
#: Opens a command's invoice reader for its settings and events (`open_reads` on a target).
ReadsOpener = Callable[[Settings, Events | None], AbstractAsyncContextManager["InvoiceReads"]]


class InvoiceReader(Protocol):
    """What reading needs from a Zuora client (`ready`: hold a live token)."""

    async def ready(self) -> None: ...
    async def invoice_state(self, key: str, track_id: str) -> InvoiceState: ...


def read_track_id(row: int) -> str:
    """The `Zuora-Track-Id` of a row's invoice read."""
    return f"read-{row}"


class InvoiceReads:
    """Reads invoices' states under one `Limiter`, kept across calls: `verify` reads in
    rounds, and a pause or a learned pace from one round holds in the next."""

    def __init__(self, client: InvoiceReader, limits: Limits, clock: Clock | None = None,
                 rng: random.Random | None = None, events: Events | None = None,
                 track_id: Callable[[int], str] = read_track_id) -> None:
        self._client = client
        self._limits = limits
        self._clock = clock or Clock()
        self._rng = rng or random.Random()
        self._events = events if events is not None else logged_events("batch_cancel")
        self._track_id = track_id
        self._stop = Stop(self._clock)
        self._left = 0
        self.limiter = Limiter(limits, self._clock, self._rng, self._events, self._stop,
                               self.stop, lambda: self._left)

    @property
    def pace(self) -> tuple[float | None, str]:
        """The pace (starts per second, None: unpaced) and its source (`pace.Source`) that
        the answers so far taught the limiter: the tenant's RateLimit policy times
        --tenant-share, --rate as ceiling, the quota left; what a run with the same settings
        would go at now. `preflight` estimates the run's duration from it."""
        pace = self.limiter.pace
        return pace.rate, pace.source

    @property
    def stop_reason(self) -> str:
        """Why reading stopped early: an outage past --outage-window, the day's quota gone
        ("" while reading goes on)."""
        return self._stop.reason

    def stop(self, reason: str, kind: StopKind = StopKind.INTERRUPTED) -> None:
        """Start no new read; keys not read yet are left out of the answer."""
        if self._stop.set(reason, kind):
            self.limiter.wake_all()
            self._events.emit(PoolStopping(reason, kind.value))

    async def read(self, keys: Iterable[Key]) -> dict[int, InvoiceState]:
        """Each key's invoice state, by row. Left out: keys whose every read met a 429
        (as if never read), and keys not reached because reading stopped."""
        keys = list(keys)
        self._left = len(keys)
        states: dict[int, InvoiceState] = {}
        workers = max(1, min(self._limits.concurrency, len(keys)))
        # every key queued at once (they are in a list already): a worker that dies of its
        # client's error (refused credentials) cannot leave the rest waiting for room
        queue: asyncio.Queue[Key | None] = asyncio.Queue()
        for item in [*keys, *[None] * workers]:
            queue.put_nowait(item)
        tasks = [asyncio.create_task(self._worker(queue, states), name=f"reader-{n}")
                 for n in range(workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return states

    async def _worker(self, queue: asyncio.Queue[Key | None],
                      states: dict[int, InvoiceState]) -> None:
        while (item := await queue.get()) is not None:
            row, key = item
            state = None if self._stop.is_set else await self._read_one(row, key)
            self._left -= 1
            if state is not None and not state.answer.rate_limited:
                states[row] = state

    async def _read_one(self, row: int, key: str) -> InvoiceState | None:
        """Read one invoice until an answer that is not worth another read, or out of
        attempts; None if reading stopped before any answer came."""
        policy = self._limits.retry
        counted = 0
        last: InvoiceState | None = None
        while True:
            ticket = await self.limiter.wait_can_start()
            if ticket is None:
                return last
            if not await self.limiter.may_leave(ticket, self._client.ready):
                continue  # a pause came while a token did: wait it out (or stop) first
            self.limiter.started(ticket)
            try:
                last = await self._client.invoice_state(key, self._track_id(row))
            except BaseException:
                self.limiter.finished(ticket, None)
                raise
            # a read's answer may close the breaker: here the read endpoint is the one in use
            self.limiter.finished(ticket, last.answer)
            answer = last.answer
            if answer.token_refused:
                continue  # a 401 and a new token: read again, not counted
            if last.einvoice_status is not None or answer.verdict is not Verdict.RETRY:
                return last
            counted += self.limiter.counts(answer)
            if counted >= policy.max_attempts:
                return last
            if self.limiter.holding(answer) is None:  # else the pool's pause is the wait
                await self._stop.nap(policy.delay(counted, self._rng))


@asynccontextmanager
async def open_reads(target: Target, credentials: Credentials | None,
                     simulator_config: object | None, settings: Settings,
                     events: Events | None = None) -> AsyncIterator[InvoiceReads]:
    """A command's reader of invoices: the target (the built-in simulator started if it is
    the one named), a session, an authenticated client and the command's limits."""
    async with (open_target(target, credentials, simulator_config) as (base_url, secret),
                open_session(settings.concurrency * 2) as session):
        client = ZuoraClient(session, base_url, secret, settings)
        await client.authenticate()
        yield InvoiceReads(client, limits_for(settings, target), events=events)
