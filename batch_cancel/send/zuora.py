"""One HTTP call to Zuora at a time: the OAuth token, headers, body, and what an answer means.

This module never loops over rows and never sleeps; the runner decides when to call again.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from .. import __version__
from ..config import Settings
from ..model import Answer, CancelJob, Verdict

#: HTTP statuses worth another try: the tenant's limits and the gateway's transient failures.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Zuora error categories (`code % 100`) worth another try: lock contention, internal and
#: temporary errors, limits, and an external system (the tax authority's provider) failing.
RETRY_CATEGORIES = frozenset({50, 60, 61, 70, 99})
#: Zuora's code for a request refused because the tenant has too many requests in flight.
CONCURRENCY_LIMIT_CODE = "50000070"
#: Categories after which the cancel may have been applied, so it is checked before a resend.
DOUBT_CATEGORIES = frozenset({60, 99})
#: Refresh a token this long before Zuora says it expires (Zuora's own samples use 300 s).
REFRESH_MARGIN = 300.0
#: Tries of one token request when the token endpoint fails in a way that may pass.
TOKEN_TRIES = 3

_TAGS = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"\s+")


class AuthenticationError(Exception):
    """Zuora refused the credentials or a fresh token: the run must stop (exit 3)."""


class TokenUnavailable(Exception):
    """The token endpoint failed in a way that may pass (429, 5xx, network)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """OAuth client credentials. The secret never appears in `repr` (and so in no traceback)."""

    client_id: str
    client_secret: str = field(repr=False)

    def __str__(self) -> str:
        return f"Credentials(client_id={self.client_id!r}, client_secret=***)"


@dataclass(frozen=True, slots=True)
class InvoiceState:
    """What `GET /v1/invoices/{key}` says of an invoice's e-invoice."""

    einvoice_status: str | None
    answer: Answer
    einvoice_error_code: str = ""
    einvoice_error_message: str = ""


def open_session(connections: int = 100) -> aiohttp.ClientSession:
    """An aiohttp session that never resends a request on its own.

    aiohttp silently retries an idempotent method (PUT included) once when a reused
    keep-alive connection drops, with no public switch (aio-libs/aiohttp#10790). For a cancel
    that is a second filing sent without the in-doubt check, so the private flag aiohttp's own
    test utilities use is turned off, and an aiohttp without it is refused rather than trusted.
    """
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections))
    if not hasattr(session, "_retry_connection"):
        raise RuntimeError("this aiohttp version may resend requests on its own; "
                           "pin aiohttp to a version batch-cancel was tested with")
    session._retry_connection = False
    return session


def invoice_path(key: str) -> str:
    """The key as one percent-encoded path segment: nothing in it can change the route."""
    return quote(key, safe="")


class ZuoraClient:
    """Sends cancels with one shared OAuth token, refreshed by one caller at a time."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, credentials: Credentials,
                 settings: Settings, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._credentials = credentials
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._token: str | None = None
        self._expires_at = 0.0
        self._generation = 0
        self._lock = asyncio.Lock()
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout)
        self._static_headers = self._optional_headers(settings)

    @staticmethod
    def _optional_headers(settings: Settings) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"batch-cancel/{__version__}",
        }
        for name, value in (("Zuora-Entity-Ids", settings.entity_ids),
                            ("Zuora-Org-Ids", settings.org_ids),
                            ("Zuora-Version", settings.zuora_version)):
            if value:
                headers[name] = value
        return headers

    # --- the token ------------------------------------------------------------------------

    async def authenticate(self) -> None:
        """Get a token now, so bad credentials stop the run before any cancel is sent."""
        await self._refresh(self._generation)

    async def _bearer(self) -> tuple[str, int]:
        """A live token and its generation, refreshing it first if it is about to expire."""
        if self._token is None or self._clock() >= self._expires_at:
            await self._refresh(self._generation)
        assert self._token is not None
        return self._token, self._generation

    async def _refresh(self, stale_generation: int) -> None:
        """Fetch a new token unless another caller already replaced the stale one."""
        async with self._lock:
            if self._generation != stale_generation and self._clock() < self._expires_at:
                return
            token, lifetime = await self._fetch_token_patiently()
            self._token = token
            margin = min(REFRESH_MARGIN, lifetime / 10)
            self._expires_at = self._clock() + max(lifetime - margin, 0.0)
            self._generation += 1

    async def _fetch_token_patiently(self) -> tuple[str, float]:
        """A few tries, 1 s then 2 s apart, as Zuora's SDK does; then the run stops (exit 3).

        The token endpoint allows 100 requests a minute per IP: workers wait on the refresh
        lock meanwhile instead of asking for tokens of their own.
        """
        for attempt in range(1, TOKEN_TRIES + 1):
            try:
                return await self._fetch_token()
            except TokenUnavailable as exc:
                if attempt == TOKEN_TRIES:
                    raise AuthenticationError(
                        f"could not get a token after {attempt} tries: {exc}") from None
                await self._sleep(2.0 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fetch_token(self) -> tuple[str, float]:
        form = {
            "client_id": self._credentials.client_id,
            "client_secret": self._credentials.client_secret,
            "grant_type": "client_credentials",
        }
        try:
            async with self._session.post(f"{self._base}/oauth/token", data=form,
                                          timeout=self._timeout,
                                          headers={"Accept": "application/json"}) as response:
                status = response.status
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TokenUnavailable(f"token endpoint unreachable: {type(exc).__name__}") from None
        if status in (400, 401, 403):
            raise AuthenticationError(
                f"Zuora refused the client credentials (HTTP {status}: {_short(body)}); "
                "check ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET and the target environment"
            )
        if status != 200:
            raise TokenUnavailable(f"token endpoint answered HTTP {status}: {_short(body)}")
        data = _json(body)
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise TokenUnavailable("token endpoint answered 200 without an access_token")
        assert isinstance(data, dict)
        try:
            lifetime = float(data.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        return token, lifetime

    # --- calls ---------------------------------------------------------------------------

    async def cancel(self, job: CancelJob, track_id: str) -> Answer:
        """Send one cancel and classify the answer (on a 401: new token, one more try)."""
        url = f"{self._base}/v1/invoices/{invoice_path(job.invoice_key)}/e-invoice/cancel"
        answer, _ = await self._call("PUT", url, track_id, cancel_body(job))
        return answer

    async def invoice_state(self, key: str, track_id: str) -> InvoiceState:
        """Read an invoice's `eInvoiceStatus`, to learn whether an in-doubt cancel was applied."""
        url = f"{self._base}/v1/invoices/{invoice_path(key)}"
        answer, data = await self._call("GET", url, track_id, None)
        return invoice_state_from(answer, data)

    async def _call(self, method: str, url: str, track_id: str,
                    body: str | None) -> tuple[Answer, Any]:
        token, generation = await self._bearer()
        answer, data = await self._send(method, url, track_id, body, token)
        if answer.http_status == 401:
            await self._refresh(generation)
            token, _ = await self._bearer()
            answer, data = await self._send(method, url, track_id, body, token)
            if answer.http_status == 401:
                raise AuthenticationError(
                    "Zuora answered 401 Unauthorized even with a fresh token; the credentials "
                    "may lack permission for this tenant or entity (check --entity-ids)"
                )
        return answer, data

    async def _send(self, method: str, url: str, track_id: str, body: str | None,
                    token: str) -> tuple[Answer, Any]:
        headers = {**self._static_headers, "Authorization": f"Bearer {token}",
                   "Zuora-Track-Id": track_id}
        if body is None:
            headers.pop("Content-Type")
        try:
            async with self._session.request(method, URL(url, encoded=True), data=body,
                                             headers=headers, timeout=self._timeout) as response:
                raw = await response.read()
                data = _json(raw)
                return classify(response.status, response.headers, raw, data), data
        except (TimeoutError, aiohttp.ClientError) as exc:
            return no_answer(exc, self._settings.timeout), None


def cancel_body(job: CancelJob) -> str:
    """The cancel PUT's JSON body: the reason, and the replacing document only for reason 01."""
    body: dict[str, str] = {"reason": job.reason}
    if job.reason == "01" and job.document_reference_id:
        body["documentReferenceID"] = job.document_reference_id
    return orjson.dumps(body).decode()


def no_answer(exc: TimeoutError | aiohttp.ClientError, timeout: float) -> Answer:
    """What a request that got no HTTP answer means: worth a retry, and in doubt unless the
    connection was never made (then the request cannot have reached Zuora)."""
    if isinstance(exc, TimeoutError):
        return Answer(Verdict.RETRY, in_doubt=True, error_message=f"no answer within {timeout:g} s")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Answer(Verdict.RETRY, error_message=f"cannot connect: {exc.os_error}")
    return Answer(Verdict.RETRY, in_doubt=True,
                  error_message=f"connection dropped: {type(exc).__name__}")


def invoice_state_from(answer: Answer, data: Any) -> InvoiceState:
    """An invoice read's `eInvoiceStatus` and error fields from its parsed body (None: no
    status could be read, whatever the reason)."""
    if not isinstance(data, dict):
        return InvoiceState(None, answer)
    status = data.get("eInvoiceStatus")
    return InvoiceState(status if isinstance(status, str) else None, answer,
                        str(data.get("eInvoiceErrorCode") or ""),
                        str(data.get("eInvoiceErrorMessage") or ""))


# --- classifying answers ---------------------------------------------------------------------


_UNPARSED: Any = object()


def classify(status: int, headers: Mapping[str, str], body: bytes,
             data: Any = _UNPARSED) -> Answer:
    """Turn one HTTP answer into a verdict: succeeded, worth a retry, or final.

    HTTP 200 is not success: only `"success": true` in a 2xx body is. Otherwise the first
    `reasons[].code` decides by its category (`code % 100`), then the HTTP status. `data` is
    the body already parsed, when the caller has it.
    """
    if data is _UNPARSED:
        data = _json(body)
    request_id = headers.get("Zuora-Request-Id", "")
    process_id = str(data.get("processId") or "") if isinstance(data, dict) else ""
    remaining, window, reset, windows = rate_headers(headers)
    limit, free = _int(headers.get("Concurrency-Limit-Limit")), _int(
        headers.get("Concurrency-Limit-Remaining"))
    if 200 <= status < 300 and isinstance(data, dict) and data.get("success") is True:
        return Answer(Verdict.SUCCEEDED, http_status=status, zuora_request_id=request_id,
                      process_id=process_id, quota_remaining=remaining, quota_window=window,
                      concurrency_limit=limit, concurrency_remaining=free, quota_reset=reset,
                      rate_windows=windows)
    code, message = _reason(data, body, status)
    category = int(code) % 100 if code.isdigit() else None
    retry = status in RETRY_STATUSES or category in RETRY_CATEGORIES
    in_doubt = status in RETRY_STATUSES - {429} or category in DOUBT_CATEGORIES
    if not _readable(status, data, category):
        # a 2xx we cannot read (cut off, HTML, no boolean `success`) may well be a cancel that
        # took effect; so may any answer that carries neither a Zuora code nor a known status
        retry, in_doubt = retry or 200 <= status < 300, True
        message = f"unreadable answer, the cancel may have been applied: {message}"
    return Answer(
        Verdict.RETRY if retry else Verdict.FINAL,
        http_status=status,
        error_code=code,
        error_message=message,
        zuora_request_id=request_id,
        process_id=process_id,
        retry_after=retry_after(headers) if status == 429 or category == 70 else None,
        rate_limited=status == 429 or category == 70,
        concurrency_limited=code == CONCURRENCY_LIMIT_CODE,
        in_doubt=in_doubt,
        quota_remaining=remaining,
        quota_window=window,
        concurrency_limit=limit,
        concurrency_remaining=free,
        quota_reset=reset,
        rate_windows=windows,
    )


#: HTTP statuses whose meaning is known without a body: the request was not applied.
_KNOWN_REFUSALS = frozenset({400, 401, 403, 404, 405, 409, 413, 414, 415, 422, 429})


def _readable(status: int, data: Any, category: int | None) -> bool:
    """Whether an answer says for sure what became of the request.

    A 2xx must be a JSON object with a boolean `success`; anything else must carry a Zuora
    reason code or a status that means "refused" (a 5xx is already treated as in doubt).
    """
    if 200 <= status < 300:
        return isinstance(data, dict) and isinstance(data.get("success"), bool)
    return category is not None or status in _KNOWN_REFUSALS or status >= 500


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def quota(headers: Mapping[str, str]) -> tuple[int | None, int | None]:
    """Requests left and the length in seconds of the window closest to exhaustion.

    `RateLimit-Limit` is a policy such as `2250000, 50000;w=60, 2250000;w=3600`: its first
    number is the quota of the window `RateLimit-Remaining` counts down, named by `w=`.
    """
    remaining, window, _, _ = rate_headers(headers)
    return remaining, window


def rate_headers(headers: Mapping[str, str]) -> tuple[
        int | None, int | None, float | None, tuple[tuple[int, float], ...]]:
    """`RateLimit-*` as the pacer needs them: Remaining, the closest window's length in
    seconds, Reset in seconds, and every `(quota, seconds)` window of the policy.

    Remaining and the closest window are None unless Remaining is a number (the window is
    the first policy item whose quota is the policy's first number).
    """
    first, windows = parse_policy(headers.get("RateLimit-Limit", ""))
    reset = _float(headers.get("RateLimit-Reset"))
    try:
        remaining = int(headers.get("RateLimit-Remaining", ""))
    except ValueError:
        return None, None, reset, windows
    for limit, seconds in windows:
        if limit == first:
            return remaining, int(seconds), reset, windows
    return remaining, None, reset, windows


@lru_cache(maxsize=64)
def parse_policy(policy: str) -> tuple[int | None, tuple[tuple[int, float], ...]]:
    """`RateLimit-Limit` → (the closest window's quota, ((quota, seconds), ...)).

    `2250000, 50000;w=60, 2250000;w=3600` gives (2250000, ((50000, 60.0), (2250000,
    3600.0))). Items that do not parse are skipped: a policy half understood still bounds
    the pace by the windows that are. Cached: a tenant sends the same string every time.
    """
    first: int | None = None
    windows: list[tuple[int, float]] = []
    for index, item in enumerate(policy.split(",")):
        number, _, params = item.strip().partition(";")
        try:
            limit = int(number.strip())
        except ValueError:
            continue
        if index == 0:
            first = limit
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            seconds = _float(value) if name.strip() == "w" else None
            if seconds is not None and seconds > 0 and limit >= 0:
                windows.append((limit, seconds))
    return first, tuple(windows)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _reason(data: Any, body: bytes, status: int) -> tuple[str, str]:
    """The error code and a readable message from any error body Zuora or a proxy may send."""
    if isinstance(data, dict):
        reasons = data.get("reasons")
        if isinstance(reasons, list) and reasons:
            first = reasons[0] if isinstance(reasons[0], dict) else {}
            messages = [str(r.get("message", "")) for r in reasons if isinstance(r, dict)]
            return str(first.get("code", "")).strip(), "; ".join(m for m in messages if m)
        for key in ("message", "error_description", "error", "Errors"):
            if data.get(key):
                return str(data.get("code", "") or ""), str(data[key])[:500]
        if 200 <= status < 300:
            return "", "answer without \"success\": true; check the invoice in Zuora"
    if data is None and body.strip():
        return "", f"HTTP {status} with a non-JSON body: {_short(body)}"
    return "", f"HTTP {status}"


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait: `Retry-After` (seconds or HTTP date), else `RateLimit-Reset` at 0 left."""
    value = headers.get("Retry-After")
    if value:
        try:
            return max(float(value), 0.0)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None and when.tzinfo is not None:
                return max(when.timestamp() - time.time(), 0.0)
    remaining, reset = headers.get("RateLimit-Remaining"), headers.get("RateLimit-Reset")
    if reset and (remaining is None or remaining.strip() == "0"):
        try:
            return max(float(reset), 0.0)
        except ValueError:
            return None
    return None


def _json(body: bytes) -> Any:
    """The parsed body, or None if it is not JSON (a proxy's HTML page, say)."""
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def _short(body: bytes, limit: int = 200) -> str:
    """A one-line excerpt of a body, tags stripped (a proxy's HTML page reads as its text)."""
    text = body[:4000].decode("utf-8", errors="replace")
    text = _SPACES.sub(" ", _TAGS.sub(" ", text)).strip()
    return text[:limit] or "(empty)"
