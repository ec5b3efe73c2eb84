"""Behaviour of the Zuora simulator, exercised over real HTTP with an aiohttp client.

The simulator is the stand-in every other test and benchmark trusts, so each Zuora behaviour the
client depends on is pinned here: tokens, limits, the cancel lifecycle, and every injected fault.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from yarl import URL

from batch_cancel.sim.server import Simulator, SimulatorConfig

StartSim = Callable[..., Awaitable[tuple[Simulator, str]]]


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    """Start simulators on an ephemeral port with the given config; stop them all afterwards."""
    started: list[Simulator] = []

    async def _start(**settings: Any) -> tuple[Simulator, str]:
        sim = Simulator(SimulatorConfig(**settings))
        url = await sim.start()
        started.append(sim)
        return sim, url

    yield _start
    for sim in started:
        await sim.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client session, as batch-cancel itself would use."""
    async with aiohttp.ClientSession() as session:
        yield session


async def get_token(http: aiohttp.ClientSession, url: str) -> str:
    """Fetch a token with the default simulator credentials."""
    form = {
        "client_id": "sim-client-id",
        "client_secret": "sim-client-secret",
        "grant_type": "client_credentials",
    }
    async with http.post(f"{url}/oauth/token", data=form) as response:
        assert response.status == 200
        token: str = (await response.json())["access_token"]
        return token


def auth(token: str, **extra: str) -> dict[str, str]:
    """Bearer header plus any extra headers."""
    return {"Authorization": f"Bearer {token}", **extra}


async def cancel(
    http: aiohttp.ClientSession, url: str, token: str, key: str, body: str = '{"reason": "02"}'
) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
    """PUT a cancel for an already-encoded key; return status, JSON body and the response."""
    target = URL(f"{url}/v1/invoices/{key}/e-invoice/cancel", encoded=True)
    headers = auth(token, **{"Content-Type": "application/json"})
    async with http.put(target, data=body, headers=headers) as response:
        return response.status, await response.json(content_type=None), response


async def read(
    http: aiohttp.ClientSession, url: str, token: str, key: str
) -> tuple[int, dict[str, Any]]:
    """GET an invoice by an already-encoded key."""
    target = URL(f"{url}/v1/invoices/{key}", encoded=True)
    async with http.get(target, headers=auth(token)) as response:
        return response.status, await response.json()


def code_of(body: dict[str, Any]) -> int:
    """The first reason code of a Zuora failure body."""
    code: int = body["reasons"][0]["code"]
    return code


async def test_token_issued_for_right_credentials(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """Right client credentials get a bearer token with Zuora's response fields."""
    _, url = await start_sim(token_ttl=3598.7)
    form = {"client_id": "sim-client-id", "client_secret": "sim-client-secret"}
    async with http.post(
        f"{url}/oauth/token", data={**form, "grant_type": "client_credentials"}
    ) as response:
        body = await response.json()
    assert response.status == 200
    assert re.fullmatch(r"[0-9a-f]{32,}", body["access_token"])
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3598
    assert "platform.write" in body["scope"] and "tenant.1" in body["scope"]
    assert re.fullmatch(r"[0-9a-f]+", body["jti"])


async def test_bad_credentials_refused_without_echoing_secret(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """Wrong secret or grant type is 401 invalid_client; missing fields are 400 invalid_request."""
    sim, url = await start_sim()
    wrong = {"client_id": "sim-client-id", "client_secret": "s3cr3t-guess", "grant_type": "x"}
    for form in (
        {**wrong, "grant_type": "client_credentials"},
        {**wrong, "client_secret": "sim-client-secret"},
    ):
        async with http.post(f"{url}/oauth/token", data=form) as response:
            text = await response.text()
        assert response.status == 401
        assert '"invalid_client"' in text and "s3cr3t-guess" not in text
    async with http.post(f"{url}/oauth/token", data={"client_id": "sim-client-id"}) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_request"
    assert sim.stats.token_requests == 3


async def test_v1_without_token_is_401(start_sim: StartSim, http: aiohttp.ClientSession) -> None:
    """A /v1 call with no or an unknown bearer token gets 401 Authentication error."""
    sim, url = await start_sim()
    for headers in ({}, auth("not-a-token")):
        async with http.get(f"{url}/v1/invoices/INV1", headers=headers) as response:
            assert response.status == 401
            assert await response.json() == {"message": "Authentication error"}
            assert response.headers["Concurrency-Limit-Type"] == "Default"
            assert response.headers["Zuora-Request-Id"]
    assert sim.invoice_status("INV1") == "Success"


async def test_expired_token_is_401_until_refreshed(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """After expire_tokens the old token is refused and a new one works."""
    sim, url = await start_sim()
    token = await get_token(http, url)
    assert (await read(http, url, token, "INV1"))[0] == 200
    sim.expire_tokens()
    assert (await read(http, url, token, "INV1"))[0] == 401
    fresh = await get_token(http, url)
    assert (await read(http, url, fresh, "INV1"))[0] == 200


async def test_token_ttl_expires(start_sim: StartSim, http: aiohttp.ClientSession) -> None:
    """A token older than token_ttl is refused."""
    _, url = await start_sim(token_ttl=0.05)
    token = await get_token(http, url)
    await asyncio.sleep(0.08)
    assert (await read(http, url, token, "INV1"))[0] == 401


async def test_second_cancel_refused_with_category_30(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """The first cancel is applied; the second gets HTTP 200 success:false category 30."""
    sim, url = await start_sim()
    token = await get_token(http, url)
    status, body, _ = await cancel(http, url, token, "INV1")
    assert (status, body) == (200, {"success": True})
    assert sim.invoice_status("INV1") == "CancelProcessing"
    status, body, _ = await cancel(http, url, token, "INV1")
    assert status == 200 and body["success"] is False
    assert code_of(body) == 59210030 and code_of(body) % 100 == 30
    assert "CancelProcessing" in body["reasons"][0]["message"]
    assert re.fullmatch(r"[0-9A-F]{16}", body["processId"])
    assert sim.stats.accepted_cancels == {"INV1": 1}
    assert sim.stats.cancel_requests == 2


async def test_cancel_reaches_cancelled_after_delay(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """eInvoiceStatus goes CancelProcessing then Cancelled once cancel_delay has passed."""
    sim, url = await start_sim(cancel_delay=0.05)
    token = await get_token(http, url)
    await cancel(http, url, token, "INV1")
    status, body = await read(http, url, token, "INV1")
    assert status == 200 and body["eInvoiceStatus"] == "CancelProcessing"
    await asyncio.sleep(0.07)
    status, body = await read(http, url, token, "INV1")
    assert body["eInvoiceStatus"] == "Cancelled"
    assert body["eInvoiceErrorCode"] is None and body["invoiceNumber"] == "INV1"
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"])
    assert sim.stats.invoice_reads == 2
    refused = await cancel(http, url, token, "INV1")
    assert "Cancelled" in refused[1]["reasons"][0]["message"]


async def test_cancel_failed_share_sets_error_fields(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """With cancel_failed_rate=1 the cancel ends CancelFailed with the tax authority's error."""
    _, url = await start_sim(cancel_delay=0.0, cancel_failed_rate=1.0)
    token = await get_token(http, url)
    await cancel(http, url, token, "INV1")
    _, body = await read(http, url, token, "INV1")
    assert body["eInvoiceStatus"] == "CancelFailed"
    assert body["eInvoiceErrorCode"] == "TAX-301"
    assert body["eInvoiceErrorMessage"] == "The tax authority rejected the cancellation"


async def test_unknown_key_is_404_category_40(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """Keys with the unknown marker are 404 with a category 40 code, on PUT and on GET."""
    sim, url = await start_sim()
    token = await get_token(http, url)
    huge = "NOTFOUND-" + "x" * 500
    status, body, _ = await cancel(http, url, token, huge)
    assert status == 404 and code_of(body) == 59210040
    assert len(body["reasons"][0]["message"]) < 100
    status, body = await read(http, url, token, "INV-NOTFOUND")
    assert status == 404 and code_of(body) == 50000040
    assert sim.invoice_status("INV-NOTFOUND") is None
    assert sim.stats.accepted_cancels == {}


async def test_cancelled_marker_key_refused(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """Keys with the cancelled marker start Cancelled, so a cancel is refused with category 30."""
    _, url = await start_sim()
    token = await get_token(http, url)
    status, body, _ = await cancel(http, url, token, "INV-CANCELLED-1")
    assert status == 200 and code_of(body) == 59210030


async def test_percent_encoded_slash_is_one_key(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """INV%2F1 addresses invoice key "INV/1" and the record keeps the raw path."""
    sim, url = await start_sim()
    token = await get_token(http, url)
    status, body, _ = await cancel(http, url, token, "INV%2F1")
    assert (status, body) == (200, {"success": True})
    assert sim.invoice_status("INV/1") == "CancelProcessing"
    record = sim.stats.cancels()[0]
    assert record.path == "/v1/invoices/INV%2F1/e-invoice/cancel"
    assert record.key == "INV/1"
    assert sim.stats.accepted_cancels == {"INV/1": 1}
    status, read_body = await read(http, url, token, "INV%2F1")
    assert read_body["invoiceNumber"] == "INV/1"


async def test_concurrency_limit_gives_429_with_retry_after(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """Above concurrency_limit in flight, the extra requests get 429, 50000070, Retry-After."""
    sim, url = await start_sim(concurrency_limit=2, latency=0.15)
    token = await get_token(http, url)

    async def one(key: str) -> tuple[int, dict[str, Any], str | None, str | None]:
        target = f"{url}/v1/invoices/{key}"
        async with http.get(target, headers=auth(token)) as response:
            headers = response.headers
            return (
                response.status,
                await response.json(),
                headers.get("Retry-After"),
                headers.get("Concurrency-Limit-Limit"),
            )

    results = await asyncio.gather(*(one(f"INV{i}") for i in range(4)))
    refused = [r for r in results if r[0] == 429]
    assert len(refused) == 2
    for _, body, retry_after, limit in refused:
        assert code_of(body) == 50000070 and body["success"] is False
        assert retry_after == "120" and limit == "2"
    assert 3 <= sim.stats.max_in_flight <= 4  # a refused request leaves at once


async def test_concurrency_remaining_exact_by_default(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """With no sample interval, Concurrency-Limit-Remaining is the free places at arrival."""
    _, url = await start_sim(concurrency_limit=5, latency=0.2)
    token = await get_token(http, url)

    async def remaining(key: str) -> str | None:
        async with http.get(f"{url}/v1/invoices/{key}", headers=auth(token)) as response:
            return response.headers.get("Concurrency-Limit-Remaining")

    first = asyncio.ensure_future(remaining("HOLD"))
    await asyncio.sleep(0.05)  # HOLD is in flight: the next one sees 5 - 2 free
    assert await remaining("NEXT") == "3"
    assert await first == "4"


async def test_concurrency_remaining_sampled_at_interval(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """concurrency_sample_interval > 0 advertises a stale sample, refreshed at most that often."""
    _, url = await start_sim(concurrency_limit=5, latency=0.8, concurrency_sample_interval=0.4)
    token = await get_token(http, url)

    async def remaining(key: str) -> str | None:
        async with http.get(f"{url}/v1/invoices/{key}", headers=auth(token)) as response:
            assert response.status == 200
            return response.headers.get("Concurrency-Limit-Remaining")

    first = asyncio.ensure_future(remaining("FIRST"))  # sampled at arrival: 4 free
    await asyncio.sleep(0.05)
    # exact values would be 3, 2, 1: the sample is still the one FIRST took
    held = [asyncio.ensure_future(remaining(f"HOLD{i}")) for i in range(3)]
    await asyncio.sleep(0.5)  # past the interval, all four still in flight
    assert await remaining("FRESH") == "0"  # a new sample: 5 in flight
    assert await first == "4"
    assert await asyncio.gather(*held) == ["4", "4", "4"]


def test_negative_sample_interval_is_refused() -> None:
    """A negative interval is a configuration mistake, refused at once."""
    with pytest.raises(ValueError, match="concurrency_sample_interval"):
        SimulatorConfig(concurrency_sample_interval=-1)


async def test_rate_limit_gives_429_with_reset(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """Past rate_limit in the window: 429 with RateLimit-Remaining 0, Reset and category 70."""
    sim, url = await start_sim(rate_limit=2)
    token = await get_token(http, url)
    remaining = []
    for _ in range(3):
        async with http.get(f"{url}/v1/invoices/INV1", headers=auth(token)) as response:
            remaining.append(response.headers["RateLimit-Remaining"])
            last_status, last_headers = response.status, response.headers
            last_body = await response.json()
    assert remaining == ["1", "0", "0"]
    assert last_status == 429
    assert last_headers["RateLimit-Limit"] == "2, 2;w=60"
    assert 1 <= int(last_headers["RateLimit-Reset"]) <= 60
    assert "Retry-After" not in last_headers
    assert code_of(last_body) % 100 == 70
    sim.config.rate_retry_after = True
    async with http.get(f"{url}/v1/invoices/INV1", headers=auth(token)) as response:
        assert response.headers["Retry-After"] == response.headers["RateLimit-Reset"]


async def test_rate_window_resets(start_sim: StartSim, http: aiohttp.ClientSession) -> None:
    """A new fixed window gives the full quota back."""
    _, url = await start_sim(rate_limit=1, rate_window=0.1)
    token = await get_token(http, url)
    assert (await read(http, url, token, "INV1"))[0] == 200
    assert (await read(http, url, token, "INV1"))[0] == 429
    await asyncio.sleep(0.12)
    assert (await read(http, url, token, "INV1"))[0] == 200


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("fail_500", 500, 59210060),
        ("fail_503", 503, 59210061),
        ("retryable_false", 200, 59210050),
    ],
)
async def test_json_faults_do_not_apply_cancel(
    start_sim: StartSim, http: aiohttp.ClientSession, fault: str, status: int, code: int
) -> None:
    """500, 503 and lock-contention faults answer a Zuora JSON failure and leave Success."""
    sim, url = await start_sim(**{fault: 1.0})
    token = await get_token(http, url)
    got_status, body, _ = await cancel(http, url, token, "INV1")
    assert got_status == status and body["success"] is False and code_of(body) == code
    assert sim.invoice_status("INV1") == "Success"
    assert sim.stats.accepted_cancels == {}


async def test_html_502_fault_is_a_proxy_page(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """html_502 answers 502 with a text/html body and does not apply the cancel."""
    sim, url = await start_sim(html_502=1.0)
    token = await get_token(http, url)
    target = f"{url}/v1/invoices/INV1/e-invoice/cancel"
    async with http.put(target, json={}, headers=auth(token)) as response:
        assert response.status == 502
        assert response.content_type == "text/html"
        assert "502 Bad Gateway" in await response.text()
    assert sim.invoice_status("INV1") == "Success"


async def test_drop_fault_gives_client_exception_without_applying(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """drop closes the connection: the client raises and the cancel is not applied."""
    sim, url = await start_sim(drop=1.0)
    token = await get_token(http, url)
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await cancel(http, url, token, "INV1")
    assert sim.invoice_status("INV1") == "Success"
    assert sim.stats.cancels()[0].status is None
    assert set(sim.stats.cancel_statuses) == {"None"}  # no answer is counted as such


async def test_drop_after_apply_fault_applies_then_disconnects(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """drop_after_apply applies the cancel and then drops: the in-doubt case."""
    sim, url = await start_sim(drop_after_apply=1.0)
    token = await get_token(http, url)
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await cancel(http, url, token, "INV1")
    assert sim.invoice_status("INV1") == "CancelProcessing"
    assert sim.stats.accepted_cancels == {"INV1": 1}
    sim.config.drop_after_apply = 0.0
    status, body, _ = await cancel(http, url, token, "INV1")
    assert status == 200 and code_of(body) == 59210030
    assert sim.stats.accepted_cancels == {"INV1": 1}


async def test_slow_fault_applies_then_answers_late(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """slow applies at once but answers after slow_seconds, so a hasty client times out."""
    sim, url = await start_sim(slow=1.0, slow_seconds=0.15)
    token = await get_token(http, url)
    with pytest.raises(asyncio.TimeoutError):
        async with asyncio.timeout(0.05):
            await cancel(http, url, token, "INV1")
    assert sim.invoice_status("INV1") == "CancelProcessing"
    status, body, _ = await cancel(http, url, token, "INV2")
    assert (status, body) == (200, {"success": True})
    late = sim.stats.cancels()[-1]
    assert late.finished - late.started >= 0.15


async def test_body_validation_errors(start_sim: StartSim, http: aiohttp.ClientSession) -> None:
    """Malformed JSON, a bad reason, a misplaced documentReferenceID, unknown fields: 400."""
    sim, url = await start_sim()
    token = await get_token(http, url)
    cases = [
        ("{not json", 59210090),
        ("[]", 59210090),
        ('{"reason": "05"}', 59210020),
        ('{"reason": 1}', 59210020),
        ('{"reason": "02", "documentReferenceID": "DM1"}', 59210020),
        ('{"reason": "01", "colour": "red"}', 59210021),
    ]
    for body, code in cases:
        status, answer, _ = await cancel(http, url, token, "INV1", body)
        assert (status, code_of(answer)) == (400, code), body
    status, answer, _ = await cancel(
        http, url, token, "INV1", '{"reason": "01", "documentReferenceID": "DM1"}'
    )
    assert answer == {"success": True}
    assert sim.stats.accepted_cancels == {"INV1": 1}


async def test_seeded_faults_are_reproducible(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """The same seed gives the same fault sequence; another seed gives a different one."""

    async def outcomes(seed: int) -> list[int]:
        _, url = await start_sim(seed=seed, fail_500=0.3, retryable_false=0.3)
        token = await get_token(http, url)
        codes = []
        for i in range(20):
            _, answer, _ = await cancel(http, url, token, f"INV{i}")
            codes.append(0 if answer.get("success") else code_of(answer))
        return codes

    first, again, other = await outcomes(7), await outcomes(7), await outcomes(8)
    assert first == again
    assert first != other
    assert {59210060, 59210050, 0} <= set(first)


async def test_max_in_flight_measured(start_sim: StartSim, http: aiohttp.ClientSession) -> None:
    """max_in_flight records the peak number of overlapping /v1 requests."""
    sim, url = await start_sim(latency=0.1)
    token = await get_token(http, url)
    await asyncio.gather(*(read(http, url, token, f"INV{i}") for i in range(5)))
    assert sim.stats.max_in_flight == 5


async def test_track_id_echoed_and_request_id_fresh(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """Zuora-Track-Id is echoed and every answer has its own Zuora-Request-Id."""
    _, url = await start_sim(concurrency_limit=40)
    token = await get_token(http, url)
    _, _, first = await cancel(http, url, token, "INV1")
    _, _, second = await cancel(http, url, token, "INV2")
    assert first.headers["Zuora-Request-Id"] != second.headers["Zuora-Request-Id"]
    async with http.get(
        f"{url}/v1/invoices/INV1", headers=auth(token, **{"Zuora-Track-Id": "row-17"})
    ) as response:
        assert response.headers["Zuora-Track-Id"] == "row-17"
        assert response.headers["Concurrency-Limit-Limit"] == "40"
        assert response.headers["Concurrency-Limit-Remaining"] == "39"


async def test_requests_are_recorded(start_sim: StartSim, http: aiohttp.ClientSession) -> None:
    """Every request, the token call included, is recorded with headers, body and status."""
    sim, url = await start_sim()
    token = await get_token(http, url)
    await cancel(http, url, token, "INV1", '{"reason": "03"}')
    token_record, cancel_record = sim.stats.requests
    assert (token_record.method, token_record.path, token_record.status) == (
        "POST",
        "/oauth/token",
        200,
    )
    assert cancel_record.body == '{"reason": "03"}'
    assert cancel_record.headers["Authorization"] == f"Bearer {token}"
    assert cancel_record.finished >= cancel_record.started


async def test_stats_endpoint_reports_counters(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """GET /_sim/stats returns the counters as JSON for subprocess tests, and when each
    accepted cancel was applied."""
    sim, url = await start_sim()
    token = await get_token(http, url)
    await cancel(http, url, token, "INV1")
    await read(http, url, token, "INV1")
    async with http.get(f"{url}/_sim/stats") as response:
        stats = await response.json()
    (key, accepted_at), = stats.pop("acceptances")
    cancel_record = next(r for r in sim.stats.requests if r.method == "PUT")
    assert key == "INV1" and cancel_record.started <= accepted_at <= cancel_record.finished
    assert stats == {
        "token_requests": 1,
        "cancel_requests": 1,
        "accepted_cancels": {"INV1": 1},
        "invoice_reads": 1,
        "max_in_flight": 1,
        "total_requests": 3,
        "cancel_statuses": {"200": 1},
    }


async def test_counters_only_without_keep_requests(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """keep_requests=False keeps no request record nor acceptance time, only the counters,
    cancel statuses and accepted cancels per key (what a million-row benchmark reads)."""
    sim, url = await start_sim(keep_requests=False)
    token = await get_token(http, url)
    assert (await cancel(http, url, token, "INV1"))[0] == 200
    assert (await cancel(http, url, token, "INV1"))[0] == 200  # refused: success false
    assert (await cancel(http, url, token, "INV-NOTFOUND"))[0] == 404
    assert (await read(http, url, token, "INV1"))[0] == 200
    async with http.get(f"{url}/_sim/stats") as response:
        stats = await response.json()
    async with http.get(f"{url}/_sim/requests") as response:
        records = (await response.json())["requests"]
    assert sim.stats.requests == [] and records == []
    assert stats == {
        "token_requests": 1,
        "cancel_requests": 3,
        "accepted_cancels": {"INV1": 1},
        "acceptances": [],
        "invoice_reads": 1,
        "max_in_flight": 1,
        "total_requests": 5,
        "cancel_statuses": {"200": 2, "404": 1},
    }


def test_requests_are_kept_by_default() -> None:
    """The record of every request stays on unless a config turns it off (tests rely on it)."""
    assert SimulatorConfig().keep_requests is True


async def test_unknown_route_is_json_404(start_sim: StartSim, http: aiohttp.ClientSession) -> None:
    """Routes the simulator does not know answer a JSON 404."""
    _, url = await start_sim()
    token = await get_token(http, url)
    for method, path in (("GET", "/nowhere"), ("POST", "/v1/invoices/INV1/e-invoice/cancel")):
        async with http.request(method, f"{url}{path}", headers=auth(token)) as response:
            assert response.status == 404
            assert (await response.json())["success"] is False


async def test_outage_fails_every_v1_call_but_not_oauth(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """start_outage: cancel and read get a JSON 503 and nothing is applied; OAuth stays up."""
    sim, url = await start_sim()
    token = await get_token(http, url)
    sim.start_outage(0.3)
    assert sim.outage_mode() == "503"
    status, body, response = await cancel(http, url, token, "INV1")
    assert status == 503 and body["success"] is False and code_of(body) == 59210061
    assert "RateLimit-Remaining" not in response.headers
    assert (await read(http, url, token, "INV1"))[0] == 503
    assert await get_token(http, url)
    assert sim.invoice_status("INV1") == "Success" and sim.stats.accepted_cancels == {}
    await asyncio.sleep(0.35)
    assert sim.outage_mode() is None
    status, body, _ = await cancel(http, url, token, "INV1")
    assert (status, body) == (200, {"success": True})


@pytest.mark.parametrize("mode", ["drop", "html_502"])
async def test_outage_modes_drop_or_answer_a_proxy_page(
    start_sim: StartSim, http: aiohttp.ClientSession, mode: str
) -> None:
    """An outage can close every connection or answer the proxy's HTML 502; nothing applied."""
    sim, url = await start_sim()
    token = await get_token(http, url)
    sim.start_outage(5.0, mode)
    if mode == "drop":
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            await cancel(http, url, token, "INV1")
        assert sim.stats.cancels()[-1].status is None
    else:
        target = f"{url}/v1/invoices/INV1"
        async with http.get(target, headers=auth(token)) as response:
            assert response.status == 502 and response.content_type == "text/html"
    assert sim.invoice_status("INV1") == "Success" and sim.stats.accepted_cancels == {}
    sim.end_outage()
    assert (await read(http, url, token, "INV1"))[0] == 200


async def test_configured_outage_counts_from_start(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """outage_after/outage_for put an outage at a fixed time after start() (subprocess use)."""
    sim, url = await start_sim(outage_after=0.2, outage_for=0.3, outage_mode="html_502")
    token = await get_token(http, url)
    assert (await read(http, url, token, "INV1"))[0] == 200
    await asyncio.sleep(0.25)
    assert sim.outage_mode() == "html_502"
    target = f"{url}/v1/invoices/INV1/e-invoice/cancel"
    async with http.put(target, json={"reason": "02"}, headers=auth(token)) as response:
        assert response.status == 502
    await asyncio.sleep(0.3)
    assert (await cancel(http, url, token, "INV1"))[0] == 200
    assert sim.stats.accepted_cancels == {"INV1": 1}


def test_unknown_outage_mode_is_refused() -> None:
    """An outage mode or a negative length the server does not know is a ValueError."""
    with pytest.raises(ValueError, match="503, drop, html_502"):
        SimulatorConfig(outage_mode="slow")
    with pytest.raises(ValueError, match="outage mode"):
        Simulator().start_outage(1.0, "504")
    with pytest.raises(ValueError, match=">= 0"):
        Simulator().start_outage(-1.0)
    with pytest.raises(ValueError, match="storm_429"):
        SimulatorConfig(storm_429=1.5)


async def test_storm_429_with_retry_after(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """A storm 429 has Zuora's rate body, Retry-After, RateLimit-Remaining 0; nothing applied."""
    sim, url = await start_sim(storm_429=1.0, storm_retry_after=2, storm_reset=2)
    token = await get_token(http, url)
    status, body, response = await cancel(http, url, token, "INV1")
    assert status == 429 and code_of(body) == 70
    assert body["reasons"][0]["message"] == (
        "API Rate limit exceeded for the minute, retry after 2 seconds"
    )
    assert response.headers["Retry-After"] == "2"
    assert response.headers["RateLimit-Remaining"] == "0"
    assert response.headers["RateLimit-Reset"] == "2"
    assert (await read(http, url, token, "INV1"))[0] == 429
    assert sim.invoice_status("INV1") == "Success" and sim.stats.accepted_cancels == {}


async def test_storm_429_without_retry_after_names_the_reset(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """storm_retry_after=None: no Retry-After; RateLimit-Remaining 0 and RateLimit-Reset only."""
    _, url = await start_sim(storm_429=1.0, storm_retry_after=None, storm_reset=3,
                             rate_limit=1000)
    token = await get_token(http, url)
    status, body, response = await cancel(http, url, token, "INV1")
    assert status == 429 and code_of(body) % 100 == 70
    assert "Retry-After" not in response.headers
    assert response.headers["RateLimit-Remaining"] == "0"
    assert response.headers["RateLimit-Reset"] == "3"
    assert response.headers["RateLimit-Limit"] == "1000, 1000;w=60"


async def test_storm_429_share_is_seeded_and_partial(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """At storm_429=0.3 some requests get 429 and the rest work; the same seed replays."""

    async def statuses(seed: int) -> list[int]:
        sim, url = await start_sim(seed=seed, storm_429=0.3)
        token = await get_token(http, url)
        got = [(await cancel(http, url, token, f"INV{i}"))[0] for i in range(30)]
        assert len(sim.stats.accepted_cancels) == got.count(200)
        return got

    first, again = await statuses(3), await statuses(3)
    assert first == again
    assert set(first) == {200, 429}


async def test_daily_quota_names_its_window(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """A daily quota: RateLimit-Limit "N, N;w=86400", Reset in seconds, 429 "for the day"."""
    _, url = await start_sim(rate_limit=2, rate_window=86400)
    token = await get_token(http, url)
    for _ in range(3):
        async with http.get(f"{url}/v1/invoices/INV1", headers=auth(token)) as response:
            headers, status, body = response.headers, response.status, await response.json()
    assert status == 429
    assert headers["RateLimit-Limit"] == "2, 2;w=86400"
    assert headers["RateLimit-Remaining"] == "0"
    assert 3600 < int(headers["RateLimit-Reset"]) <= 86400
    assert body["reasons"][0]["message"].startswith("API Rate limit exceeded for the day")


async def test_requests_and_tokens_endpoints_serve_other_processes(
    start_sim: StartSim, http: aiohttp.ClientSession
) -> None:
    """/_sim/requests lists each request without headers; /_sim/tokens lists issued tokens."""
    sim, url = await start_sim(drop=1.0)
    token = await get_token(http, url)
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await cancel(http, url, token, "INV1")
    async with http.get(f"{url}/_sim/requests") as response:
        records = (await response.json())["requests"]
    # a plain aiohttp session resends a PUT once on a dropped keep-alive connection
    assert [(r["method"], r["key"], r["status"]) for r in records[:2]] == [
        ("POST", None, 200),
        ("PUT", "INV1", None),
    ]
    assert records[1]["finished"] >= records[1]["started"]
    assert token not in str(records)
    async with http.get(f"{url}/_sim/tokens") as response:
        assert await response.json() == {"tokens": [token]}
    assert len(sim.stats.requests) == len(records)  # the control calls are not recorded
