"""One HTTP call to Zuora at a time: the OAuth token, the headers and the body.

What an answer means is `answers.py`'s business. This module never loops over rows and never
sleeps; the runner decides when to call again.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from .._version import __version__
from ..config import Settings
from ..model import Answer, CancelJob, InvoiceState, Verdict
from .answers import classify as classify
from .answers import invoice_state_from as invoice_state_from
from .answers import no_answer as no_answer
from .answers import parse_json, retry_after, short

#: Refresh a token this long before Zuora says it expires (Zuora's own samples use 300 s).
REFRESH_MARGIN = 300.0
#: A token refused with a 401 this soon after it was fetched (for an earlier 401) is not
#: stale: the credentials lack permission. Older, it may have been revoked meanwhile (a run
#: paused for minutes): it is renewed again.
FRESH_TOKEN = 5.0
#: Tries of one token request when the token endpoint fails in a way that may pass.
TOKEN_TRIES = 3
#: The longest wait a token endpoint's Retry-After is obeyed for: the endpoint counts 100
#: requests a minute per IP (shared with every other client on the machine), so a minute
#: always frees it; a longer ask is cut to this.
TOKEN_RETRY_AFTER_CAP = 60.0


class AuthenticationError(Exception):
    """Zuora refused the credentials or a fresh token: the run must stop (exit 3)."""


class TokenUnavailable(Exception):
    """The token endpoint failed in a way that may pass (429, 5xx, network); `retry_after`
    is the wait it asked for, if it named one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Credentials:
    """OAuth client credentials. The secret never appears in `repr` (and so in no traceback)."""

    client_id: str
    client_secret: str = field(repr=False)

    def __str__(self) -> str:
        return f"Credentials(client_id={self.client_id!r}, client_secret=***)"


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
        #: a 401 refused the token of this generation, and no request with a newer token has
        #: got through since (None: no such refusal stands)
        self._refused_at: int | None = None
        self._fetched_at = 0.0
        #: a token fetch that failed for good: every later caller gets it, none asks again
        self._failed: AuthenticationError | None = None
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
        """Fetch a new token unless another caller already replaced the stale one.

        Callers queue on one lock (single flight). A fetch that failed for good is kept and
        raised to every caller after it: the run is stopping, and the token endpoint (100
        requests a minute per IP) is not asked again by each waiting worker.
        """
        async with self._lock:
            if self._failed is not None:
                raise self._failed
            if self._generation != stale_generation and self._clock() < self._expires_at:
                return
            try:
                token, lifetime = await self._fetch_token_patiently()
            except AuthenticationError as exc:
                self._failed = exc
                raise
            self._token = token
            margin = min(REFRESH_MARGIN, lifetime / 10)
            self._fetched_at = self._clock()
            self._expires_at = self._fetched_at + max(lifetime - margin, 0.0)
            self._generation += 1

    async def _fetch_token_patiently(self) -> tuple[str, float]:
        """A few tries, 1 s then 2 s apart, as Zuora's SDK does; then the run stops (exit 3).

        The token endpoint allows 100 requests a minute per IP: workers wait on the refresh
        lock meanwhile instead of asking for tokens of their own. A 429 or 503 that names a
        Retry-After is waited out (up to TOKEN_RETRY_AFTER_CAP): asking again sooner only
        spends another of those hundred requests on a second refusal.
        """
        for attempt in range(1, TOKEN_TRIES + 1):
            try:
                return await self._fetch_token()
            except TokenUnavailable as exc:
                if attempt == TOKEN_TRIES:
                    raise AuthenticationError(
                        f"could not get a token after {attempt} tries: {exc}") from None
                await self._sleep(token_wait(attempt, exc.retry_after))
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
                status, headers = response.status, response.headers
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TokenUnavailable(f"token endpoint unreachable: {type(exc).__name__}") from None
        if status in (400, 401, 403):
            raise AuthenticationError(
                f"Zuora refused the client credentials (HTTP {status}: {short(body)}); "
                "check ZUORA_CLIENT_ID and ZUORA_CLIENT_SECRET and the target environment"
            )
        if status != 200:
            wait = retry_after(headers) if status in (429, 503) else None
            raise TokenUnavailable(f"token endpoint answered HTTP {status}: {short(body)}", wait)
        data = parse_json(body)
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

    async def ready(self) -> None:
        """Hold a live token, fetching one if none is: a request whose caller awaited this
        leaves at once when sent, with no token fetch (a round trip or a Retry-After) between
        the caller's last look at the limits and the wire."""
        await self._bearer()

    async def cancel(self, job: CancelJob, track_id: str) -> Answer:
        """Send one cancel and classify the answer (a 401: a new token, `token_refused`)."""
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
        """One request; on a 401, the token dropped and an answer saying so, never a resend.

        The resend is the caller's: it goes through the limits like any request, so it waits
        out a pool-wide pause and never leaves after a stop; the new token is fetched when
        that request is about to leave (a token fetched at the 401 could die while the run
        waits). A 401 on a token fetched after an earlier 401 and used within FRESH_TOKEN
        seconds of its fetch is not a stale token: the credentials lack permission for this
        tenant or entity.
        """
        token, generation = await self._bearer()
        answer, data = await self._send(method, url, track_id, body, token)
        if answer.http_status != 401:
            if self._refused_at is not None and generation > self._refused_at:
                self._refused_at = None  # a token newer than the refused one works
            return answer, data
        if (self._refused_at is not None and self._refused_at < generation == self._generation
                and self._clock() - self._fetched_at <= FRESH_TOKEN):
            raise AuthenticationError(
                "Zuora answered 401 Unauthorized even with a fresh token; the credentials "
                "may lack permission for this tenant or entity (check --entity-ids)"
            )
        self._refused_at = (generation if self._refused_at is None
                            else max(self._refused_at, generation))
        if generation == self._generation:
            # the next request fetches a new one (single flight), whatever the clock reads:
            # a monotonic clock's zero is undefined, so 0.0 is not "long ago"
            self._expires_at = -math.inf
        return replace(answer, verdict=Verdict.RETRY, token_refused=True), data

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
                data = parse_json(raw)
                return classify(response.status, response.headers, raw, data), data
        except (TimeoutError, aiohttp.ClientError) as exc:
            return no_answer(exc, self._settings.timeout), None


def token_wait(attempt: int, asked: float | None) -> float:
    """Seconds before token try `attempt` + 1: 1 s, then 2 s, or the endpoint's Retry-After
    when it asked for longer (at most TOKEN_RETRY_AFTER_CAP)."""
    backoff = 2.0 ** (attempt - 1)
    return backoff if asked is None else max(backoff, min(asked, TOKEN_RETRY_AFTER_CAP))


def cancel_body(job: CancelJob) -> str:
    """The cancel PUT's JSON body: the reason, and the replacing document only for reason 01."""
    body: dict[str, str] = {"reason": job.reason}
    if job.reason == "01" and job.document_reference_id:
        body["documentReferenceID"] = job.document_reference_id
    return orjson.dumps(body).decode()
