"""Which 401 stops the run: requests of two token generations in flight when the 401s come.

A loopback Zuora holds every API request until the test answers it, so the order in which
answers reach the client is the test's: a 401 on an older token that was already replaced
must neither stop the run nor throw the new token away, and a success on an older token
must not clear the refusal of a newer one. The client's clock is the test's too, so the
documented 5 s within which a refused fresh token means "no permission" is pinned exactly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from batch_cancel.config import Settings
from batch_cancel.model import Answer, CancelJob, Verdict
from batch_cancel.send.zuora import (
    TOKEN_RETRY_AFTER_CAP,
    TOKEN_TRIES,
    AuthenticationError,
    Credentials,
    ZuoraClient,
    open_session,
)
from tests.helpers import FakeClock

#: a mutant that leaves a request or a wait hanging fails in seconds, not at the suite's
#: two minutes (nothing here runs on real time: a test takes milliseconds)
pytestmark = pytest.mark.timeout(10)

OK = b'{"success": true}'


@dataclass
class Held:
    """One API request the server holds: the token it carried, and its answer to come."""

    bearer: str
    reply: asyncio.Future[int]


@dataclass
class HeldZuora:
    """Tokens `tok-1`, `tok-2`, ... living `lifetime` seconds; every API call waits for the
    test to give its status."""

    lifetime: float = 3600.0
    issued: int = 0
    held: list[Held] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    #: refusals the token endpoint answers first, in order: (status, Retry-After or None)
    token_refusals: list[tuple[int, str | None]] = field(default_factory=list)
    token_requests: int = 0

    async def oauth(self, request: web.Request) -> web.Response:
        await request.post()
        self.token_requests += 1
        if self.token_refusals:
            status, wait = self.token_refusals.pop(0)
            headers = {} if wait is None else {"Retry-After": wait}
            return web.Response(status=status, body=b'{"message": "Too many requests"}',
                                content_type="application/json", headers=headers)
        self.issued += 1
        data = {"access_token": f"tok-{self.issued}", "expires_in": self.lifetime}
        return web.Response(body=json.dumps(data).encode(), content_type="application/json")

    async def api(self, request: web.Request) -> web.Response:
        call = Held(request.headers["Authorization"].removeprefix("Bearer "),
                    asyncio.get_running_loop().create_future())
        self.held.append(call)
        self.arrived.set()
        status = await call.reply
        return web.Response(status=status, body=OK if status == 200 else b"",
                            content_type="application/json")

    async def wait_for(self, count: int) -> None:
        """Until `count` requests have arrived in all."""
        while len(self.held) < count:
            self.arrived.clear()
            await self.arrived.wait()


@pytest.fixture
async def zuora() -> AsyncIterator[tuple[HeldZuora, str]]:
    fake = HeldZuora()
    app = web.Application()
    app.router.add_post("/oauth/token", fake.oauth)
    app.router.add_route("*", "/v1/{tail:.*}", fake.api)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield fake, str(server.make_url("")).rstrip("/")
    finally:
        for call in fake.held:
            if not call.reply.done():
                call.reply.set_result(200)
        await server.close()


@dataclass
class Scene:
    """A client on the held server, its clock, and the cancels it has on their way."""

    fake: HeldZuora
    client: ZuoraClient
    clock: FakeClock
    sent: list[asyncio.Task[Answer]] = field(default_factory=list)

    async def send(self) -> int:
        """Start a cancel; returns its index once the server holds it."""
        row = len(self.sent) + 2
        self.sent.append(asyncio.create_task(
            self.client.cancel(CancelJob(row, f"INV{row}", "02"), f"t-{row}")))
        await self.fake.wait_for(len(self.sent))
        return len(self.sent) - 1

    async def answer(self, index: int, status: int) -> Answer:
        """Let the server answer request `index` with `status`; the client's answer."""
        self.fake.held[index].reply.set_result(status)
        return await self.sent[index]

    def bearer(self, index: int) -> str:
        return self.fake.held[index].bearer


def scene(fake: HeldZuora, url: str, session: aiohttp.ClientSession) -> Scene:
    clock = FakeClock(start=0.0)
    client = ZuoraClient(session, url, Credentials("id", "secret"), Settings(), clock=clock.now)
    return Scene(fake, client, clock)


def refused(answer: Answer) -> bool:
    """A 401 answered as a retry with the token dropped (the run goes on)."""
    return answer.token_refused and answer.http_status == 401 and answer.verdict is Verdict.RETRY


@pytest.mark.parametrize(("seconds", "stops"), [(0.0, True), (4.9, True), (5.0, True),
                                                (5.1, False), (60.0, False)])
async def test_a_new_token_refused_within_5_s_of_its_fetch_stops_the_run(
        zuora: tuple[HeldZuora, str], seconds: float, stops: bool) -> None:
    """The documented 5 s: a token fetched for a 401 and refused up to 5 s after its fetch
    means the credentials lack permission; later, it may have been revoked meanwhile."""
    async with open_session() as session:
        s = scene(*zuora, session)
        assert refused(await s.answer(await s.send(), 401))
        s.clock.t = 100.0
        second = await s.send()  # fetches tok-2 at 100.0
        s.clock.t = 100.0 + seconds
        if stops:
            with pytest.raises(AuthenticationError):
                await s.answer(second, 401)
        else:
            assert refused(await s.answer(second, 401))
    assert (s.bearer(0), s.bearer(1), zuora[0].issued) == ("tok-1", "tok-2", 2)


async def test_a_second_401_on_the_token_already_refused_is_no_permission_problem(
        zuora: tuple[HeldZuora, str]) -> None:
    """Two requests on one token both meet a 401: the second is the same stale token, not a
    refused fresh one, and the next request fetches one new token."""
    async with open_session() as session:
        s = scene(*zuora, session)
        first, second = await s.send(), await s.send()
        assert refused(await s.answer(first, 401))
        assert refused(await s.answer(second, 401))
        third = await s.send()
        assert (await s.answer(third, 200)).verdict is Verdict.SUCCEEDED
    assert [call.bearer for call in zuora[0].held] == ["tok-1", "tok-1", "tok-2"]
    assert zuora[0].issued == 2


async def test_a_success_on_the_refused_token_does_not_clear_the_refusal(
        zuora: tuple[HeldZuora, str]) -> None:
    """A request on the refused token that was let through before the refusal proves nothing
    of a newer token: a 401 on the token fetched for the refusal still stops the run."""
    async with open_session() as session:
        s = scene(*zuora, session)
        early, late = await s.send(), await s.send()
        assert refused(await s.answer(late, 401))
        assert (await s.answer(early, 200)).verdict is Verdict.SUCCEEDED
        s.clock.t = 1.0
        fresh = await s.send()
        with pytest.raises(AuthenticationError):
            await s.answer(fresh, 401)
    assert s.bearer(fresh) == "tok-2"


async def test_a_success_on_an_older_token_than_the_refused_one_does_not_clear_it(
        zuora: tuple[HeldZuora, str]) -> None:
    """Refused tok-1, then tok-2 refused long after its fetch (revoked meanwhile): a success
    still arriving on tok-1 does not clear tok-2's refusal, so tok-3 refused moments after
    its fetch stops the run."""
    async with open_session() as session:
        s = scene(*zuora, session)
        oldest, first = await s.send(), await s.send()
        assert refused(await s.answer(first, 401))
        second = await s.send()  # tok-2, fetched at 0.0
        s.clock.t = 10.0
        assert refused(await s.answer(second, 401))
        assert (await s.answer(oldest, 200)).verdict is Verdict.SUCCEEDED
        third = await s.send()  # tok-3, fetched at 10.0
        s.clock.t = 11.0
        with pytest.raises(AuthenticationError):
            await s.answer(third, 401)
    assert [s.bearer(n) for n in (oldest, first, second, third)] == [
        "tok-1", "tok-1", "tok-2", "tok-3"]


async def test_a_401_on_a_token_replaced_since_keeps_the_new_token(
        zuora: tuple[HeldZuora, str]) -> None:
    """tok-2 expires by the clock and tok-3 replaces it while a tok-2 request is in flight;
    that request's 401 comes moments after tok-3's fetch: it is tok-2's stale answer, so the
    run goes on and tok-3 is kept for the next request."""
    zuora[0].lifetime = 10.0  # renewed 1 s before its end: at fetch + 9 s
    async with open_session() as session:
        s = scene(*zuora, session)
        assert refused(await s.answer(await s.send(), 401))
        on_tok2 = await s.send()  # tok-2, fetched at 0.0
        s.clock.t = 9.5
        on_tok3 = await s.send()  # tok-2 is due for renewal: tok-3, fetched at 9.5
        s.clock.t = 10.0
        assert refused(await s.answer(on_tok2, 401))
        assert (await s.answer(on_tok3, 200)).verdict is Verdict.SUCCEEDED
        after = await s.send()
        assert (await s.answer(after, 200)).verdict is Verdict.SUCCEEDED
    assert [call.bearer for call in zuora[0].held] == ["tok-1", "tok-2", "tok-3", "tok-3"]
    assert zuora[0].issued == 3


async def test_authenticate_always_fetches_a_token(zuora: tuple[HeldZuora, str]) -> None:
    """`authenticate` asks for a token now, even while the one held is still good: a
    preflight checks the credentials, not a cached token."""
    async with open_session() as session:
        s = scene(*zuora, session)
        await s.client.authenticate()
        await s.client.authenticate()
        only = await s.send()
        assert (await s.answer(only, 200)).verdict is Verdict.SUCCEEDED
    assert (zuora[0].issued, s.bearer(only)) == (2, "tok-2")


async def test_a_late_401_on_an_older_token_does_not_lower_the_refused_generation(
        zuora: tuple[HeldZuora, str]) -> None:
    """tok-2 refused (long after its fetch), then a late 401 on tok-1 and a late success on
    tok-2: the refusal is still tok-2's, which that success does not clear, so tok-3 refused
    moments after its fetch stops the run."""
    async with open_session() as session:
        s = scene(*zuora, session)
        first, late_on_1 = await s.send(), await s.send()
        assert refused(await s.answer(first, 401))
        refused_2, late_on_2 = await s.send(), await s.send()  # tok-2, fetched at 0.0
        s.clock.t = 10.0
        assert refused(await s.answer(refused_2, 401))
        assert refused(await s.answer(late_on_1, 401))
        assert (await s.answer(late_on_2, 200)).verdict is Verdict.SUCCEEDED
        third = await s.send()  # tok-3, fetched at 10.0
        s.clock.t = 11.0
        with pytest.raises(AuthenticationError):
            await s.answer(third, 401)
    assert [call.bearer for call in zuora[0].held] == ["tok-1", "tok-1", "tok-2", "tok-2",
                                                       "tok-3"]


@pytest.mark.parametrize("moving", [False, True])
async def test_a_caller_queued_for_the_refresh_fetches_again_if_the_new_token_is_dead(
        zuora: tuple[HeldZuora, str], moving: bool) -> None:
    """Tokens that live 0 s: two callers queue on the refresh; the second finds the token the
    first fetched already at (clock standing still) or past (clock moving) its end, so it
    fetches its own rather than send a dead one."""
    fake, url = zuora
    fake.lifetime = 0.0
    ticks = iter(range(1000))
    clock = (lambda: float(next(ticks))) if moving else (lambda: 50.0)
    async with open_session() as session:
        client = ZuoraClient(session, url, Credentials("id", "secret"), Settings(), clock=clock)
        calls = [asyncio.create_task(client.cancel(CancelJob(row, f"INV{row}", "02"), "t"))
                 for row in (2, 3)]
        await fake.wait_for(2)
        for call in fake.held:
            call.reply.set_result(200)
        await asyncio.gather(*calls)
    assert (fake.issued, sorted(call.bearer for call in fake.held)) == (2, ["tok-1", "tok-2"])


async def test_callers_queued_for_the_refresh_share_a_live_new_token(
        zuora: tuple[HeldZuora, str]) -> None:
    fake, url = zuora
    async with open_session() as session:
        client = ZuoraClient(session, url, Credentials("id", "secret"), Settings(),
                             clock=lambda: 50.0)
        calls = [asyncio.create_task(client.cancel(CancelJob(row, f"INV{row}", "02"), "t"))
                 for row in (2, 3, 4)]
        await fake.wait_for(3)
        for call in fake.held:
            call.reply.set_result(200)
        await asyncio.gather(*calls)
    assert (fake.issued, [call.bearer for call in fake.held]) == (1, ["tok-1"] * 3)


async def test_a_refused_token_is_replaced_whatever_the_clock_reads(
        zuora: tuple[HeldZuora, str]) -> None:
    """A monotonic clock's zero is undefined (it may read below it): a 401 still makes the
    next request fetch a new token, rather than resend the refused one."""
    fake, url = zuora
    clock = FakeClock(start=-100.0)
    async with open_session() as session:
        client = ZuoraClient(session, url, Credentials("id", "secret"), Settings(),
                             clock=clock.now)
        s = Scene(fake, client, clock)
        assert refused(await s.answer(await s.send(), 401))
        assert (await s.answer(await s.send(), 200)).verdict is Verdict.SUCCEEDED
    assert ([call.bearer for call in fake.held], fake.issued) == (["tok-1", "tok-2"], 2)


@pytest.mark.parametrize(("refusals", "waits"), [
    ([(429, "30")], [30.0]),                      # the endpoint's wait, not the 1 s backoff
    ([(503, "20"), (429, "45")], [20.0, 45.0]),
    ([(429, "600")], [TOKEN_RETRY_AFTER_CAP]),    # a minute frees a per-minute limit
    ([(429, None), (429, None)], [1.0, 2.0]),     # no wait named: the backoff, as before
    ([(429, "0"), (429, "1")], [1.0, 2.0]),       # a shorter ask never shortens the backoff
    ([(500, "30")], [1.0]),                       # only a 429 or 503 names a wait to obey
])
async def test_a_refused_token_request_waits_what_the_endpoint_asks_before_asking_again(
        zuora: tuple[HeldZuora, str], refusals: list[tuple[int, str | None]],
        waits: list[float]) -> None:
    """The token endpoint counts 100 requests a minute per IP, shared with every other
    client of the machine: a 429's Retry-After is waited out on the run's clock (capped),
    and the cancel then goes out with the token that came."""
    fake, url = zuora
    fake.token_refusals = list(refusals)
    clock = FakeClock(start=0.0)
    async with open_session() as session:
        client = ZuoraClient(session, url, Credentials("id", "secret"), Settings(),
                             clock=clock.now, sleep=clock.sleep)
        s = Scene(fake, client, clock)
        assert (await s.answer(await s.send(), 200)).verdict is Verdict.SUCCEEDED
    assert (clock.sleeps, fake.token_requests, s.bearer(0)) == (waits, len(waits) + 1, "tok-1")


async def test_a_token_endpoint_refusing_every_try_stops_the_run_after_its_waits(
        zuora: tuple[HeldZuora, str]) -> None:
    fake, url = zuora
    fake.token_refusals = [(429, "30")] * TOKEN_TRIES
    clock = FakeClock(start=0.0)
    async with open_session() as session:
        client = ZuoraClient(session, url, Credentials("id", "secret"), Settings(),
                             clock=clock.now, sleep=clock.sleep)
        with pytest.raises(AuthenticationError, match=r"after 3 tries: .*HTTP 429"):
            await client.authenticate()
    assert (clock.sleeps, fake.token_requests, fake.held) == ([30.0, 30.0], TOKEN_TRIES, [])
