"""Reading Zuora's answers: what one HTTP answer (or its absence) means for a cancel.

Pure functions over status, headers and body, shared by the client and the in-memory world,
so a simulated answer goes through the same classification as a real one.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import aiohttp
import orjson

from ..model import Answer, InvoiceState, Verdict

#: HTTP statuses worth another try: the tenant's limits and the gateway's transient failures.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Zuora error categories (`code % 100`) worth another try: lock contention, internal and
#: temporary errors, limits, and an external system (the tax authority's provider) failing.
RETRY_CATEGORIES = frozenset({50, 60, 61, 70, 99})
#: Zuora's code for a request refused because the tenant has too many requests in flight.
CONCURRENCY_LIMIT_CODE = "50000070"
#: Categories after which the cancel may have been applied, so it is checked before a resend.
DOUBT_CATEGORIES = frozenset({60, 99})
_TAGS = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"\s+")


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


_UNPARSED: Any = object()


def classify(status: int, headers: Mapping[str, str], body: bytes,
             data: Any = _UNPARSED) -> Answer:
    """Turn one HTTP answer into a verdict: succeeded, worth a retry, or final.

    HTTP 200 is not success: only `"success": true` in a 2xx body is. Otherwise the first
    `reasons[].code` decides by its category (`code % 100`), then the HTTP status. `data` is
    the body already parsed, when the caller has it.
    """
    if data is _UNPARSED:
        data = parse_json(body)
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
    # a 5xx without a Zuora code came from something between (a proxy's 520-524, a 501 or
    # 505 page): the request may have reached Zuora and been applied
    bare_5xx = status >= 500 and category is None
    retry = status in RETRY_STATUSES or bare_5xx or category in RETRY_CATEGORIES
    in_doubt = status in RETRY_STATUSES - {429} or bare_5xx or category in DOUBT_CATEGORIES
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

    Remaining and the closest window are None unless Remaining is a number. The window is
    the policy item whose quota is the policy's first number; when several have that quota
    (`1, 1;w=60, 1;w=86400`), the shortest that Reset fits in: a Reset of 86400 s counts a
    day, not a minute, down.
    """
    first, windows = parse_policy(headers.get("RateLimit-Limit", ""))
    reset = _float(headers.get("RateLimit-Reset"))
    try:
        remaining = int(headers.get("RateLimit-Remaining", ""))
    except ValueError:
        return None, None, reset, windows
    named = [seconds for limit, seconds in windows if limit == first]
    if not named:
        return remaining, None, reset, windows
    fits = [seconds for seconds in named if reset is None or seconds >= reset]
    return remaining, int(min(fits) if fits else max(named)), reset, windows


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
        return "", f"HTTP {status} with a non-JSON body: {short(body)}"
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


def parse_json(body: bytes) -> Any:
    """The parsed body, or None if it is not JSON (a proxy's HTML page, say)."""
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def short(body: bytes, limit: int = 200) -> str:
    """A one-line excerpt of a body, tags stripped (a proxy's HTML page reads as its text)."""
    text = body[:4000].decode("utf-8", errors="replace")
    text = _SPACES.sub(" ", _TAGS.sub(" ", text)).strip()
    return text[:limit] or "(empty)"
