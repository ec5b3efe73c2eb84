"""The Zuora client: what each answer means, what is sent, and the shared token's life."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from batch_cancel.config import Settings
from batch_cancel.model import Answer, CancelJob, Verdict
from batch_cancel.send import answers
from batch_cancel.send.answers import classify, retry_after
from batch_cancel.send.zuora import (
    FRESH_TOKEN,
    AuthenticationError,
    Credentials,
    ZuoraClient,
    invoice_path,
    open_session,
)
from tests.helpers import FakeClock


def body(data: object) -> bytes:
    return json.dumps(data).encode()


def failure(code: int, message: str = "m") -> bytes:
    return body({"success": False, "processId": "P1", "reasons": [{"code": code,
                                                                   "message": message}]})


# --- classification -------------------------------------------------------------------------


def test_success_true_in_a_2xx_body_is_succeeded() -> None:
    """Only `"success": true` in a 2xx body means the cancel was accepted."""
    answer = classify(200, {"Zuora-Request-Id": "R1"}, body({"success": True}))
    assert answer.verdict is Verdict.SUCCEEDED
    assert answer.zuora_request_id == "R1"


def test_http_200_with_success_false_is_not_success() -> None:
    """HTTP 200 with `success: false` is read by its reason code, not taken as success."""
    answer = classify(200, {}, failure(59210030, "already cancelled"))
    assert answer.verdict is Verdict.FINAL
    assert (answer.error_code, answer.error_message, answer.process_id) == (
        "59210030", "already cancelled", "P1")


@pytest.mark.parametrize("code", [59210050, 59210060, 59210061, 59210070, 59210099])
def test_retryable_categories_are_retried(code: int) -> None:
    """Categories 50, 60, 61, 70 and 99 can succeed later."""
    assert classify(200, {}, failure(code)).verdict is Verdict.RETRY


@pytest.mark.parametrize("code", [59210010, 59210011, 59210020, 59210021, 59210022, 59210030,
                                  59210040, 59210045, 59210090])
def test_business_refusals_are_final_at_once(code: int) -> None:
    """Permission, validation, business-rule and not-found codes are final."""
    assert classify(200, {}, failure(code)).verdict is Verdict.FINAL


def test_reason_code_given_as_string_is_categorised() -> None:
    """Zuora's SDK types the code as a string; the category is computed all the same."""
    data = body({"success": False, "reasons": [{"code": "59210050", "message": "lock"}]})
    assert classify(200, {}, data).verdict is Verdict.RETRY


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_gateway_and_server_errors_are_retried_and_in_doubt(status: int) -> None:
    """5xx answers are retried, after checking whether the cancel was applied."""
    answer = classify(status, {}, failure(59210060))
    assert answer.verdict is Verdict.RETRY
    assert answer.in_doubt


def test_html_proxy_page_is_handled_not_a_crash() -> None:
    """A proxy's HTML page becomes a readable message."""
    answer = classify(502, {}, b"<html><body><h1>502 Bad Gateway</h1></body></html>")
    assert answer.verdict is Verdict.RETRY
    assert "502 Bad Gateway" in answer.error_message
    assert "<" not in answer.error_message


def test_429_is_rate_limited_with_retry_after() -> None:
    """A 429 names the pause: Retry-After first."""
    answer = classify(429, {"Retry-After": "120", "RateLimit-Reset": "7"}, failure(50000070))
    assert answer.rate_limited and answer.verdict is Verdict.RETRY and not answer.in_doubt
    assert answer.retry_after == 120


@pytest.mark.parametrize("payload", [b"", b"<html><body>429 Too Many Requests</body></html>",
                                     body({"message": "slow down"})])
def test_a_429_without_zuoras_reason_code_is_still_a_rate_limit_to_retry(payload: bytes) -> None:
    """A bare 429 (a proxy's, or a body without `reasons`) is retried after a pause, by its
    HTTP status alone, and leaves nothing in doubt."""
    answer = classify(429, {"Retry-After": "3"}, payload)
    assert (answer.verdict, answer.rate_limited, answer.in_doubt) == (Verdict.RETRY, True, False)
    assert answer.retry_after == 3.0 and answer.error_code == ""


def test_429_without_retry_after_uses_ratelimit_reset() -> None:
    """Without Retry-After, RateLimit-Reset (with Remaining 0) names the pause."""
    headers = {"RateLimit-Remaining": "0", "RateLimit-Reset": "7"}
    assert classify(429, headers, b"").retry_after == 7


def test_retry_after_as_http_date_is_understood() -> None:
    """Retry-After may be an HTTP date; a date in the past means no wait."""
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


def test_retry_after_as_a_future_http_date_is_the_seconds_until_then(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A Retry-After date 90 s ahead of the wall clock means a 90 s wait, not none."""
    monkeypatch.setattr(answers.time, "time", lambda: 1445412480.0 - 90)  # 07:26:30 GMT
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 90.0


@pytest.mark.parametrize("headers", [
    {"Retry-After": "-5"},
    {"Retry-After": "-0.5", "RateLimit-Reset": "9"},
    {"RateLimit-Remaining": "0", "RateLimit-Reset": "-3"},
], ids=["retry_after", "retry_after_over_reset", "reset"])
def test_a_negative_wait_is_clamped_to_zero(headers: dict[str, str]) -> None:
    """A negative Retry-After or RateLimit-Reset (a skewed proxy) means go now, never a wait
    of negative length that would move the pool's pause deadline into the past."""
    assert retry_after(headers) == 0.0


@pytest.mark.parametrize(("key", "segment"), [
    ("INV/1", "INV%2F1"),
    ("../admin", "..%2Fadmin"),
    ("INV?x=1#y", "INV%3Fx%3D1%23y"),
    ("INV 100%", "INV%20100%25"),
    ("ÉTÉ-1", "%C3%89T%C3%89-1"),
])
def test_an_invoice_key_becomes_one_fully_escaped_path_segment(key: str, segment: str) -> None:
    """Every character that could change the route, `/` included, is percent-encoded."""
    assert invoice_path(key) == segment


async def test_a_key_with_a_slash_is_cancelled_as_that_one_invoice(live_sim) -> None:
    """`2024/INV-7` reaches Zuora as one key (one path segment), not as a longer route."""
    async with open_session() as session:
        answer = await client_for(session, live_sim).cancel(
            CancelJob(2, "2024/INV-7", "02"), "t-2")
    assert answer.verdict is Verdict.SUCCEEDED, answer
    (record,) = live_sim.stats.cancels()
    assert record.path == "/v1/invoices/2024%2FINV-7/e-invoice/cancel"
    assert live_sim.stats.accepted_cancels == {"2024/INV-7": 1}


def test_2xx_without_success_field_is_in_doubt_not_a_verdict() -> None:
    """An unexpected 2xx shape is neither success nor failure: the invoice must be read."""
    answer = classify(200, {}, body({"id": "x"}))
    assert (answer.verdict, answer.in_doubt) == (Verdict.RETRY, True)
    assert "success" in answer.error_message


@pytest.mark.parametrize("raw", [b"", b'{"success": tr', b"<html>OK</html>", b"[true]",
                                 b'{"success": "true"}', b"null"])
def test_2xx_we_cannot_read_leaves_the_cancel_in_doubt(raw: bytes) -> None:
    """Empty, cut-off, HTML, or JSON without a boolean success: in doubt, retried after a read."""
    answer = classify(200, {}, raw)
    assert (answer.verdict, answer.in_doubt) == (Verdict.RETRY, True)
    assert answer.error_message.startswith("unreadable answer, the cancel may have been applied")


def test_2xx_success_false_without_reasons_is_zuoras_refusal() -> None:
    """`success: false` is Zuora's word: final, and not in doubt."""
    answer = classify(200, {}, body({"success": False}))
    assert (answer.verdict, answer.in_doubt) == (Verdict.FINAL, False)


@pytest.mark.parametrize("status", [301, 302, 418, 451])
def test_a_status_without_a_zuora_code_that_means_nothing_known_is_in_doubt(status: int) -> None:
    """An answer the client cannot classify (odd status, no reason code) is in doubt."""
    answer = classify(status, {}, b"<html>moved</html>")
    assert answer.in_doubt is True


def test_a_known_refusal_status_without_a_code_is_not_in_doubt() -> None:
    """A plain 404 or 400 says the request was refused, body or not."""
    assert classify(404, {}, b"").in_doubt is False
    assert classify(400, {}, b"<html>bad</html>").in_doubt is False


def test_empty_or_odd_json_bodies_do_not_crash() -> None:
    """Empty bodies, JSON lists and strings classify by status."""
    assert classify(404, {}, b"").verdict is Verdict.FINAL
    assert classify(503, {}, b"[1, 2]").verdict is Verdict.RETRY
    assert classify(400, {}, b'"oops"').error_message == "HTTP 400"


# --- the client over loopback -------------------------------------------------------------


def client_for(session: aiohttp.ClientSession, live_sim, **settings: object) -> ZuoraClient:
    credentials = Credentials(live_sim.config.client_id, live_sim.config.client_secret)
    return ZuoraClient(session, live_sim.url, credentials, Settings(**settings))  # type: ignore[arg-type]


async def test_cancel_sends_zuoras_headers_and_a_minimal_body(live_sim) -> None:
    """Bearer token, JSON headers, track id, optional Zuora headers, and only reason + ref."""
    async with open_session() as session:
        client = client_for(session, live_sim, entity_ids="E1", org_ids="O1,O2",
                            zuora_version="2025-08-12")
        answer = await client.cancel(CancelJob(2, "INV001", "01", "DM1"), "bc-run-2")
        plain = await client.cancel(CancelJob(3, "INV002", "02", ""), "bc-run-3")
    assert answer.verdict is Verdict.SUCCEEDED and plain.verdict is Verdict.SUCCEEDED
    first, second = live_sim.stats.cancels()
    headers = first.headers
    assert headers["Authorization"].startswith("Bearer ")
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "application/json"
    assert headers["Zuora-Track-Id"] == "bc-run-2"
    assert (headers["Zuora-Entity-Ids"], headers["Zuora-Org-Ids"], headers["Zuora-Version"]) == (
        "E1", "O1,O2", "2025-08-12")
    assert json.loads(first.body) == {"reason": "01", "documentReferenceID": "DM1"}
    assert json.loads(second.body) == {"reason": "02"}
    assert "Zuora-Entity-Ids" in headers and answer.zuora_request_id


@pytest.mark.parametrize("reason", ["02", "03", "04"])
async def test_a_document_reference_id_is_sent_only_with_reason_01(live_sim,
                                                                   reason: str) -> None:
    """A job with a reference but another reason (the loader refuses such rows; this is the
    client's own guard) sends the reason alone, which Zuora accepts."""
    async with open_session() as session:
        answer = await client_for(session, live_sim).cancel(
            CancelJob(2, "INV001", reason, "DM1"), "t-2")
    (record,) = live_sim.stats.cancels()
    assert json.loads(record.body) == {"reason": reason}
    assert answer.verdict is Verdict.SUCCEEDED, answer


async def test_optional_headers_are_absent_when_not_given(live_sim) -> None:
    """Zuora says not to send entity/org headers unless needed."""
    async with open_session() as session:
        await client_for(session, live_sim).cancel(CancelJob(2, "INV001", "02"), "t-2")
    headers = live_sim.stats.cancels()[0].headers
    assert not {"Zuora-Entity-Ids", "Zuora-Org-Ids", "Zuora-Version"} & set(headers)


async def test_key_is_percent_encoded_as_one_path_segment(live_sim) -> None:
    """Characters such as + & = : @ stay inside the key's segment."""
    async with open_session() as session:
        answer = await client_for(session, live_sim).cancel(CancelJob(2, "A+B&C=D:E@F", "02"),
                                                           "t-2")
    record = live_sim.stats.cancels()[0]
    assert answer.verdict is Verdict.SUCCEEDED
    assert record.path == "/v1/invoices/A%2BB%26C%3DD%3AE%40F/e-invoice/cancel"
    assert record.key == "A+B&C=D:E@F"


async def test_one_token_serves_every_concurrent_request(live_sim) -> None:
    """Concurrent workers share one token: the token endpoint is asked once."""
    async with open_session() as session:
        client = client_for(session, live_sim)
        await asyncio.gather(*(client.cancel(CancelJob(n, f"INV{n}", "02"), f"t-{n}")
                               for n in range(2, 32)))
    assert live_sim.stats.token_requests == 1


async def test_expired_token_is_refreshed_once_for_all_workers(live_sim) -> None:
    """After expiry, the 401s of many workers lead to exactly one new token."""
    async with open_session() as session:
        client = client_for(session, live_sim)
        await client.authenticate()
        live_sim.simulator.expire_tokens()
        first = await asyncio.gather(*(client.cancel(CancelJob(n, f"INV{n}", "02"), f"t-{n}")
                                       for n in range(2, 22)))
        again = await asyncio.gather(*(client.cancel(CancelJob(n, f"INV{n}", "02"), f"u-{n}")
                                       for n in range(2, 22)))
    assert all(a.token_refused and a.verdict is Verdict.RETRY for a in first)
    assert all(a.verdict is Verdict.SUCCEEDED and not a.token_refused for a in again)
    assert live_sim.stats.token_requests == 2


async def test_a_401_comes_back_to_the_caller_and_is_not_resent_by_the_client(live_sim) -> None:
    """A 401 drops the token and comes back as `token_refused`: the resend is the runner's,
    through its limits (a pause that began meanwhile is waited out, a stop is obeyed), and
    the new token is fetched as that request leaves."""
    async with open_session() as session:
        client = client_for(session, live_sim)
        await client.authenticate()
        live_sim.simulator.expire_tokens()
        answer = await client.cancel(CancelJob(2, "INV2", "02"), "t-2")
        assert answer.token_refused and answer.http_status == 401
        assert answer.verdict is Verdict.RETRY and not answer.in_doubt
        assert [r.status for r in live_sim.stats.cancels()] == [401]
        assert live_sim.stats.token_requests == 1  # the new token comes with the next request
        state = await client.invoice_state("INV2", "r-2")
        assert state.einvoice_status is not None and not state.answer.token_refused
        assert live_sim.stats.token_requests == 2


@pytest.mark.parametrize(("lifetime", "renewed_at"), [(3600, 3300.0), (1000, 900.0),
                                                      (100, 90.0)])
async def test_token_is_renewed_ahead_of_expiry(live_sim, lifetime: int,
                                                renewed_at: float) -> None:
    """A token is replaced before use once a tenth of its life (at most 300 s) is left, on the
    client's own clock: not a moment sooner, and never after a 401."""
    live_sim.config.token_ttl = float(lifetime)
    clock = FakeClock(start=0.0)
    async with open_session() as session:
        credentials = Credentials(live_sim.config.client_id, live_sim.config.client_secret)
        client = ZuoraClient(session, live_sim.url, credentials, Settings(), clock=clock.now)
        await client.cancel(CancelJob(2, "INV2", "02"), "t-2")
        clock.t = renewed_at - 0.001
        await client.cancel(CancelJob(3, "INV3", "02"), "t-3")
        assert live_sim.stats.token_requests == 1
        clock.t = renewed_at
        await client.cancel(CancelJob(4, "INV4", "02"), "t-4")
        assert live_sim.stats.token_requests == 2
    assert all(r.status != 401 for r in live_sim.stats.requests)


async def test_the_session_never_resends_a_request_on_its_own(live_sim) -> None:
    """aiohttp's silent retry of an idempotent request (a PUT) on a dropped connection is
    switched off: the dropped cancel reached the server once and comes back in doubt; a
    resend is the runner's decision, after a check."""
    live_sim.config.drop = 1.0
    async with open_session() as session:
        answer = await client_for(session, live_sim).cancel(CancelJob(2, "INV2", "02"), "t-2")
    assert answer.in_doubt and answer.http_status is None
    assert [r.method for r in live_sim.stats.cancels()] == ["PUT"]


async def test_bad_credentials_raise_authentication_error_without_the_secret(live_sim) -> None:
    """Refused credentials stop the run; the message never holds the secret."""
    async with open_session() as session:
        client = ZuoraClient(session, live_sim.url,
                             Credentials("wrong-id", "s3cr3t-value-xyz"), Settings())
        with pytest.raises(AuthenticationError) as caught:
            await client.authenticate()
    assert "s3cr3t-value-xyz" not in str(caught.value)
    assert "ZUORA_CLIENT_ID" in str(caught.value)
    assert "s3cr3t" not in repr(Credentials("a", "s3cr3t-value-xyz"))


async def test_401_with_a_fresh_token_aborts(live_sim) -> None:
    """A 401 even after a refresh is an authentication failure, not a retry loop."""
    live_sim.config.token_ttl = 0.0  # every token is dead on arrival
    async with open_session() as session:
        client = client_for(session, live_sim)
        first = await client.cancel(CancelJob(2, "INV2", "02"), "t-2")
        assert first.token_refused
        with pytest.raises(AuthenticationError):
            await client.cancel(CancelJob(2, "INV2", "02"), "t-2")
    assert live_sim.stats.cancel_requests == 2
    assert live_sim.stats.accepted_cancels == {}


async def test_dropped_connection_is_retryable_and_in_doubt(live_sim) -> None:
    """A dropped connection may have applied the cancel: retry, but check first."""
    live_sim.config.drop = 1.0
    async with open_session() as session:
        answer = await client_for(session, live_sim).cancel(CancelJob(2, "INV2", "02"), "t-2")
    assert answer.verdict is Verdict.RETRY and answer.in_doubt and answer.http_status is None


async def test_timeout_is_retryable_and_in_doubt(live_sim) -> None:
    """A request with no answer in time is retried after a check."""
    live_sim.config.slow = 1.0
    live_sim.config.slow_seconds = 2.0
    async with open_session() as session:
        answer = await client_for(session, live_sim, timeout=0.2).cancel(
            CancelJob(2, "INV2", "02"), "t-2")
    assert answer.verdict is Verdict.RETRY and answer.in_doubt
    assert "0.2 s" in answer.error_message


async def test_invoice_state_reads_einvoice_status(live_sim) -> None:
    """The in-doubt check reads eInvoiceStatus with GET /v1/invoices/{key}."""
    async with open_session() as session:
        client = client_for(session, live_sim)
        before = await client.invoice_state("INV9", "t-9")
        await client.cancel(CancelJob(9, "INV9", "02"), "t-9")
        after = await client.invoice_state("INV9", "t-9")
        missing = await client.invoice_state("INV-NOTFOUND-1", "t-10")
    assert (before.einvoice_status, after.einvoice_status) == ("Success", "CancelProcessing")
    assert missing.einvoice_status is None and missing.answer.verdict is Verdict.FINAL


async def _refused_twice(live_sim, seconds_after_fetch: float, success_between: bool) -> Answer:
    """A 401, a new token, then (optionally a success with it, then) a 401 on that new token
    `seconds_after_fetch` after it was fetched, on the client's own clock."""
    clock = FakeClock(start=0.0)
    credentials = Credentials(live_sim.config.client_id, live_sim.config.client_secret)
    async with open_session() as session:
        client = ZuoraClient(session, live_sim.url, credentials, Settings(), clock=clock.now)
        await client.authenticate()
        live_sim.simulator.expire_tokens()
        first = await client.cancel(CancelJob(2, "INV2", "02"), "t-2")
        assert first.token_refused
        await client.authenticate()  # the new token, fetched at 0.0
        if success_between:
            assert (await client.cancel(CancelJob(3, "INV3", "02"), "t-3")).http_status == 200
        live_sim.simulator.expire_tokens()
        clock.t = seconds_after_fetch
        return await client.cancel(CancelJob(4, "INV4", "02"), "t-4")


async def test_a_401_on_the_token_fetched_for_a_401_moments_before_stops_the_run(
        live_sim) -> None:
    """Within FRESH_TOKEN seconds of its fetch, a refused new token is a permissions problem."""
    with pytest.raises(AuthenticationError):
        await _refused_twice(live_sim, FRESH_TOKEN, success_between=False)


async def test_a_401_on_a_new_token_used_later_is_a_token_revoked_meanwhile(live_sim) -> None:
    """Past FRESH_TOKEN seconds the new token may have been revoked while the run waited: it
    is dropped and the request goes again, the run goes on."""
    answer = await _refused_twice(live_sim, FRESH_TOKEN + 0.001, success_between=False)
    assert answer.token_refused and answer.http_status == 401


async def test_a_new_token_that_worked_once_clears_the_refusal(live_sim) -> None:
    """Once a request got through with the new token, a later 401 is a stale token again."""
    answer = await _refused_twice(live_sim, 1.0, success_between=True)
    assert answer.token_refused and answer.http_status == 401
