"""The client's OAuth token over real loopback HTTP: a token endpoint that fails the ways
Zuora's does (5xx, 429, refused credentials, HTML pages, cut-off JSON, dropped connections,
slowness) before it serves, the token's life on the client's own clock, and what a 401 leads
to. The client's sleep is injected, so the pauses are asserted exactly and never waited out."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from batch_cancel.config import Settings
from batch_cancel.model import Answer, CancelJob, InvoiceState, Verdict
from batch_cancel.send.answers import no_answer
from batch_cancel.send.zuora import AuthenticationError, Credentials, ZuoraClient, open_session

CLIENT_ID, CLIENT_SECRET = "client-1", "s3cr3t-value-xyz"
GATEWAY_TIMEOUT = b"<html><head><title>504</title></head><body><h1>Gateway Timeout</h1></body>"


@dataclass
class Reply:
    """One scripted answer: a status and body, or a connection closed without an answer."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    delay: float = 0.0


def token(name: str, expires_in: object = 3600) -> Reply:
    """A good token answer."""
    data = {"access_token": name, "token_type": "bearer", "expires_in": expires_in}
    return Reply(200, json.dumps(data).encode())


@dataclass
class FakeZuora:
    """`/oauth/token` and `/v1/...` answering from their scripts first, then normally: a
    numbered token that lives `lifetime` seconds, and `{"success": true}`."""

    token_script: list[Reply] = field(default_factory=list)
    call_script: list[Reply] = field(default_factory=list)
    lifetime: object = 3600
    token_forms: list[dict[str, str]] = field(default_factory=list)
    token_headers: list[dict[str, str]] = field(default_factory=list)
    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    issued: int = 0

    async def oauth(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        self.token_forms.append({name: str(value) for name, value in form.items()})
        self.token_headers.append(dict(request.headers))
        if self.token_script:
            return await answer(request, self.token_script.pop(0))
        self.issued += 1
        return await answer(request, token(f"tok-{self.issued}", self.lifetime))

    async def api(self, request: web.Request) -> web.StreamResponse:
        self.calls.append((request.method, request.raw_path, dict(request.headers)))
        reply = self.call_script.pop(0) if self.call_script else Reply(
            200, b'{"success": true, "eInvoiceStatus": "Success"}')
        return await answer(request, reply)

    def bearers(self) -> list[str]:
        return [headers["Authorization"] for _, _, headers in self.calls]


async def answer(request: web.Request, reply: Reply) -> web.StreamResponse:
    """Send a scripted reply, or close the connection without one."""
    if reply.delay:
        await asyncio.sleep(reply.delay)
    if reply.drop:
        assert request.transport is not None
        request.transport.close()
    return web.Response(status=reply.status, body=reply.body, headers=reply.headers)


@pytest.fixture
async def zuora() -> AsyncIterator[tuple[FakeZuora, str]]:
    """The fake Zuora on 127.0.0.1 and its base URL."""
    fake = FakeZuora()
    app = web.Application()
    app.router.add_post("/oauth/token", fake.oauth)
    app.router.add_route("*", "/v1/{tail:.*}", fake.api)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield fake, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@dataclass
class Pauses:
    """The client's sleep, recorded instead of waited."""

    seconds: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.seconds.append(delay)


def client(session: aiohttp.ClientSession, url: str, pauses: Pauses | None = None,
           now: list[float] | None = None, **settings: object) -> ZuoraClient:
    clock = (lambda: now[0]) if now is not None else (lambda: 0.0)
    return ZuoraClient(session, url, Credentials(CLIENT_ID, CLIENT_SECRET),
                       Settings(**settings),  # type: ignore[arg-type]
                       clock=clock, sleep=pauses or Pauses())


JOB = CancelJob(2, "INV1", "02")


# --- a token endpoint that fails, then serves ------------------------------------------------


async def test_a_token_endpoint_failing_twice_is_asked_again_after_1_s_then_2_s(
        zuora: tuple[FakeZuora, str]) -> None:
    """Two passing failures, then a token: three requests, 1 s and 2 s apart, and the token
    the third one got is the one used."""
    fake, url = zuora
    fake.token_script = [Reply(503, b"Service Unavailable"), Reply(500, b'{"message": "oops"}'),
                         token("tok-good")]
    pauses = Pauses()
    async with open_session() as session:
        answer = await client(session, url, pauses).cancel(JOB, "t-2")
    assert answer.verdict is Verdict.SUCCEEDED
    assert pauses.seconds == [1.0, 2.0]
    assert len(fake.token_forms) == 3
    assert fake.bearers() == ["Bearer tok-good"]


async def test_a_token_endpoint_failing_three_times_stops_the_run_after_exactly_three_tries(
        zuora: tuple[FakeZuora, str]) -> None:
    """Three passing failures stop the run with the last one's reason; no fourth request,
    no cancel sent."""
    fake, url = zuora
    fake.token_script = [Reply(503), Reply(502), Reply(504, GATEWAY_TIMEOUT)]
    pauses = Pauses()
    async with open_session() as session:
        with pytest.raises(AuthenticationError) as caught:
            await client(session, url, pauses).cancel(JOB, "t-2")
    assert str(caught.value) == ("could not get a token after 3 tries: token endpoint "
                                 "answered HTTP 504: 504 Gateway Timeout")
    assert pauses.seconds == [1.0, 2.0]
    assert len(fake.token_forms) == 3
    assert fake.calls == []


@pytest.mark.parametrize("reply", [
    Reply(500, b'{"message": "Internal Server Error"}'),
    Reply(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
    Reply(503, b""),
    Reply(504, GATEWAY_TIMEOUT),
    Reply(404, b"<html>Not Found</html>"),
    Reply(200, b'{"access_token": "tok-cut'),
    Reply(200, b"<html><body>Maintenance</body></html>"),
    Reply(200, b""),
    Reply(200, b'{"token_type": "bearer", "expires_in": 3600}'),
    Reply(200, b'{"access_token": "", "expires_in": 3600}'),
    Reply(200, b'{"access_token": null, "expires_in": 3600}'),
    Reply(200, b'{"access_token": 12345, "expires_in": 3600}'),
    Reply(200, b'["tok-in-a-list"]'),
    Reply(drop=True),
], ids=["500", "502-html", "503-empty", "504-html", "404", "200-cut-off-json", "200-html",
        "200-empty", "200-no-token", "200-empty-token", "200-null-token", "200-number-token",
        "200-list", "dropped"])
async def test_a_passing_token_failure_is_tried_again_after_1_s(
        zuora: tuple[FakeZuora, str], reply: Reply) -> None:
    """Whatever the token endpoint's passing failure, the client waits 1 s and asks again,
    and the token it then gets is the one used."""
    fake, url = zuora
    fake.token_script = [reply, token("tok-second")]
    pauses = Pauses()
    async with open_session() as session:
        answer = await client(session, url, pauses).cancel(JOB, "t-2")
    assert answer.verdict is Verdict.SUCCEEDED
    assert (pauses.seconds, len(fake.token_forms)) == ([1.0], 2)
    assert fake.bearers() == ["Bearer tok-second"]


async def test_a_token_endpoint_slower_than_the_timeout_is_tried_again(
        zuora: tuple[FakeZuora, str]) -> None:
    """A token request without an answer within --timeout counts as a passing failure."""
    fake, url = zuora
    fake.token_script = [dataclasses.replace(token("tok-late"), delay=30.0),
                         token("tok-second")]
    pauses = Pauses()
    async with open_session() as session:
        answer = await client(session, url, pauses, timeout=0.5).cancel(JOB, "t-2")
    assert answer.verdict is Verdict.SUCCEEDED
    assert (pauses.seconds, len(fake.token_forms)) == ([1.0], 2)
    assert fake.bearers() == ["Bearer tok-second"]


async def test_a_429_from_the_token_endpoint_is_a_pause_not_a_refusal(
        zuora: tuple[FakeZuora, str]) -> None:
    """The token endpoint's own limit (100 requests a minute per IP) is waited out and asked
    again; it never stops the run as bad credentials would. (The pause is the client's own
    1 s: Retry-After is not read on this endpoint.)"""
    fake, url = zuora
    fake.token_script = [Reply(429, b'{"message": "Too many requests"}', {"Retry-After": "1"})]
    pauses = Pauses()
    async with open_session() as session:
        await client(session, url, pauses).authenticate()
    assert (pauses.seconds, len(fake.token_forms)) == ([1.0], 2)


async def test_an_unreachable_token_endpoint_stops_the_run_after_three_tries() -> None:
    """Nothing listening at the base URL: three tries, 1 s and 2 s apart, then exit 3."""
    url = f"http://127.0.0.1:{closed_port()}"
    pauses = Pauses()
    async with open_session() as session:
        with pytest.raises(AuthenticationError) as caught:
            await client(session, url, pauses).authenticate()
    assert str(caught.value) == ("could not get a token after 3 tries: "
                                 "token endpoint unreachable: ClientConnectorError")
    assert pauses.seconds == [1.0, 2.0]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(("reply", "said"), [
    (Reply(400, b'{"error": "invalid_request"}'), 'HTTP 400: {"error": "invalid_request"}'),
    (Reply(401, b'{"error": "invalid_client", "error_description": "Bad client"}'),
     'HTTP 401: {"error": "invalid_client", "error_description": "Bad client"}'),
    (Reply(403, b"<html><body><h1>Forbidden</h1></body></html>"), "HTTP 403: Forbidden"),
])
async def test_refused_credentials_stop_the_run_at_once(zuora: tuple[FakeZuora, str],
                                                        reply: Reply, said: str) -> None:
    """400, 401 and 403 from the token endpoint are a refusal: no second try, no pause, the
    endpoint's words in the message, the secret nowhere."""
    fake, url = zuora
    fake.token_script = [reply]
    pauses = Pauses()
    async with open_session() as session:
        with pytest.raises(AuthenticationError) as caught:
            await client(session, url, pauses).authenticate()
    assert str(caught.value) == (
        f"Zuora refused the client credentials ({said}); check ZUORA_CLIENT_ID and "
        "ZUORA_CLIENT_SECRET and the target environment")
    assert (pauses.seconds, len(fake.token_forms), fake.calls) == ([], 1, [])


async def test_the_token_request_is_a_client_credentials_form(
        zuora: tuple[FakeZuora, str]) -> None:
    """The token is asked for with the OAuth client-credentials grant, JSON accepted."""
    fake, url = zuora
    async with open_session() as session:
        await client(session, url).authenticate()
    assert fake.token_forms == [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                                 "grant_type": "client_credentials"}]
    assert fake.token_headers[0]["Accept"] == "application/json"


# --- the token's life -------------------------------------------------------------------------


@pytest.mark.parametrize(("expires_in", "renewed_at"), [
    (45, 40.5),
    (3600, 3300.0),
    ("3600", 3300.0),
    (None, 3300.0),
    ("soon", 3300.0),
    ([60], 3300.0),
    ("missing", 3300.0),
])
async def test_a_token_is_renewed_at_nine_tenths_of_its_life_or_300_s_before_the_end(
        zuora: tuple[FakeZuora, str], expires_in: object, renewed_at: float) -> None:
    """The renewal time follows `expires_in` (a tenth of the life kept in reserve, at most
    300 s); without a readable `expires_in` a token is taken to live an hour."""
    fake, url = zuora
    if expires_in == "missing":
        fake.token_script = [Reply(200, b'{"access_token": "tok-1"}')]
    else:
        fake.lifetime = expires_in
    now = [0.0]
    async with open_session() as session:
        zuora_client = client(session, url, now=now)
        await zuora_client.cancel(JOB, "t-2")
        now[0] = renewed_at - 0.001
        await zuora_client.cancel(JOB, "t-3")
        assert len(fake.token_forms) == 1
        now[0] = renewed_at
        await zuora_client.cancel(JOB, "t-4")
        assert len(fake.token_forms) == 2


async def test_a_token_found_long_expired_is_renewed_before_use(
        zuora: tuple[FakeZuora, str]) -> None:
    """Well past its renewal time (a machine back from sleep), the token is renewed first."""
    fake, url = zuora
    now = [0.0]
    async with open_session() as session:
        zuora_client = client(session, url, now=now)
        await zuora_client.cancel(JOB, "t-2")
        now[0] = 100_000.0
        await zuora_client.cancel(JOB, "t-3")
    assert len(fake.token_forms) == 2
    assert fake.bearers() == ["Bearer tok-1", "Bearer tok-2"]


async def test_a_token_that_lives_zero_seconds_is_renewed_for_every_call(
        zuora: tuple[FakeZuora, str]) -> None:
    """`expires_in: 0` leaves nothing to reuse, even at the same instant."""
    fake, url = zuora
    fake.lifetime = 0
    async with open_session() as session:
        zuora_client = client(session, url, now=[5.0])
        await zuora_client.cancel(JOB, "t-2")
        await zuora_client.cancel(JOB, "t-3")
    assert fake.bearers() == ["Bearer tok-1", "Bearer tok-2"]


# --- what a 401 leads to ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 403, 404, 409, 429, 500])
async def test_an_answer_other_than_401_is_returned_without_a_new_token(
        zuora: tuple[FakeZuora, str], status: int) -> None:
    """Only a 401 renews the token and resends; any other answer is the call's answer."""
    fake, url = zuora
    fake.call_script = [Reply(status, b"")]
    async with open_session() as session:
        answer = await client(session, url).cancel(JOB, "t-2")
    assert answer.http_status == status
    assert (len(fake.token_forms), len(fake.calls)) == (1, 1)


@pytest.mark.parametrize("status", [403, 404, 500])
async def test_a_401_is_a_refused_token_and_the_next_call_gets_a_new_one(
        zuora: tuple[FakeZuora, str], status: int) -> None:
    """A 401 comes back as a retry with the token refused (the client never resends on its
    own); the next call fetches a new token and its answer, whatever it is, stands."""
    fake, url = zuora
    fake.call_script = [Reply(401, b""), Reply(status, b"")]
    async with open_session() as session:
        zuora_client = client(session, url)
        refused = await zuora_client.cancel(JOB, "t-2")
        answer = await zuora_client.cancel(JOB, "t-2")
    assert (refused.verdict, refused.token_refused, refused.http_status) == (
        Verdict.RETRY, True, 401)
    assert answer.http_status == status
    assert fake.bearers() == ["Bearer tok-1", "Bearer tok-2"]


async def test_a_401_on_a_read_is_a_refused_token_and_the_next_read_gets_a_new_one(
        zuora: tuple[FakeZuora, str]) -> None:
    """The in-doubt read is treated like a cancel on a 401; a GET sends no Content-Type."""
    fake, url = zuora
    fake.call_script = [Reply(401, b"")]
    async with open_session() as session:
        zuora_client = client(session, url)
        refused = await zuora_client.invoice_state("INV/7", "t-7")
        state = await zuora_client.invoice_state("INV/7", "t-7")
    assert (refused.einvoice_status, refused.answer.token_refused) == (None, True)
    assert state.einvoice_status == "Success"
    assert [(method, path) for method, path, _ in fake.calls] == [
        ("GET", "/v1/invoices/INV%2F7"), ("GET", "/v1/invoices/INV%2F7")]
    assert fake.bearers() == ["Bearer tok-1", "Bearer tok-2"]
    assert "Content-Type" not in fake.calls[0][2]


# --- the session, and a connection never made -----------------------------------------------


async def test_a_connection_never_made_is_retried_and_not_in_doubt() -> None:
    """A refused connection cannot have reached Zuora: retry without reading the invoice."""
    async with open_session() as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await session.get(f"http://127.0.0.1:{closed_port()}/v1/invoices/INV1")
    answer = no_answer(caught.value, 30.0)
    assert (answer.verdict, answer.in_doubt, answer.http_status) == (Verdict.RETRY, False, None)
    assert answer.error_message == f"cannot connect: {caught.value.os_error}"


async def test_the_session_holds_as_many_connections_as_asked() -> None:
    """100 connections unless told otherwise: the pool, not the session, bounds concurrency."""
    async with open_session() as session:
        assert session.connector is not None and session.connector.limit == 100
    async with open_session(7) as session:
        assert session.connector is not None and session.connector.limit == 7


def test_credentials_cannot_be_changed_and_keep_the_secret_out_of_vars() -> None:
    """Credentials are frozen, and slotted: no `__dict__` for a debugger or a crash dump to
    print the secret from."""
    credentials = Credentials(CLIENT_ID, CLIENT_SECRET)
    with pytest.raises(dataclasses.FrozenInstanceError):
        credentials.client_secret = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        vars(credentials)


def test_an_invoice_state_cannot_be_changed() -> None:
    """A read's result is a value: frozen and slotted like the answers it carries."""
    state = InvoiceState("Success", Answer(Verdict.SUCCEEDED))
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.einvoice_status = "Failed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        vars(state)


async def test_a_cancel_dropped_on_a_reused_connection_is_sent_once(
        zuora: tuple[FakeZuora, str]) -> None:
    """aiohttp would silently resend a PUT whose kept-alive connection drops; the client's
    session does not: the dropped cancel reached Zuora once and comes back in doubt."""
    fake, url = zuora
    fake.call_script = [Reply(200, b'{"success": true}'), Reply(drop=True)]
    async with open_session() as session:
        zuora_client = client(session, url)
        first = await zuora_client.cancel(JOB, "t-2")
        second = await zuora_client.cancel(CancelJob(3, "INV3", "02"), "t-3")
    assert first.verdict is Verdict.SUCCEEDED
    assert (second.verdict, second.in_doubt, second.http_status) == (Verdict.RETRY, True, None)
    assert [path for _, path, _ in fake.calls] == ["/v1/invoices/INV1/e-invoice/cancel",
                                                  "/v1/invoices/INV3/e-invoice/cancel"]
