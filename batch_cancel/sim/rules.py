"""The rules of a simulated Zuora tenant, with no transport: one model, two front ends.

The aiohttp `Simulator` (real HTTP on loopback) and the in-memory `sim.world` (virtual time,
seeded schedules) both ask this module what Zuora would answer: the e-invoice state machine
(``Success -> CancelProcessing -> Cancelled | CancelFailed``), the validation of a cancel body,
the refusal of a second cancel, and the exact status, body and headers of each answer shape
(failures with 8-digit codes, the limit 429s, the proxy's HTML pages). An answer is a `Reply`,
plain data each front end turns into its own kind of response, so the two cannot drift apart.

It imports only the standard library and `model` (the e-invoice states, one spelling).
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from ..model import EInvoiceStatus

__all__ = [
    "STATUS_CANCELLED",
    "STATUS_CANCEL_FAILED",
    "STATUS_CANCEL_PROCESSING",
    "STATUS_SUCCESS",
    "Invoice",
    "Reply",
    "TenantModel",
    "TenantRules",
    "draw_fault",
]

# the e-invoice states are the client's own vocabulary (`model.EInvoiceStatus`): one spelling
STATUS_SUCCESS: Final = EInvoiceStatus.SUCCESS.value
STATUS_CANCEL_PROCESSING: Final = EInvoiceStatus.CANCEL_PROCESSING.value
STATUS_CANCELLED: Final = EInvoiceStatus.CANCELLED.value
STATUS_CANCEL_FAILED: Final = EInvoiceStatus.CANCEL_FAILED.value

CANCEL_FAILED_CODE: Final = "TAX-301"
CANCEL_FAILED_MESSAGE: Final = "The tax authority rejected the cancellation"

CODE_CONCURRENCY: Final = 50000070
CODE_RATE: Final = 70
CODE_INVALID_VALUE: Final = 59210020
CODE_UNKNOWN_FIELD: Final = 59210021
CODE_STATE: Final = 59210030
CODE_CANCEL_NOT_FOUND: Final = 59210040
CODE_LOCK: Final = 59210050
CODE_INTERNAL: Final = 59210060
CODE_TEMPORARY: Final = 59210061
CODE_MALFORMED: Final = 59210090
CODE_READ_NOT_FOUND: Final = 50000040
CODE_NO_ROUTE: Final = 50000040

CONCURRENCY_MESSAGE: Final = (
    "The total number of concurrent requests has exceeded the limit allowed by the system. "
    "Please resubmit your request later."
)
OUTAGE_MESSAGE: Final = "Service temporarily unavailable. Please retry later."
HTML_502: Final = "<html><body><h1>502 Bad Gateway</h1></body></html>"
HTML_504: Final = "<html><body><h1>504 Gateway Time-out</h1></body></html>"
#: What a proxy that cut a 200 short leaves of Zuora's answer (not JSON).
TRUNCATED_200: Final = b'{"success": tr'
VALID_REASONS: Final = frozenset({"01", "02", "03", "04"})
ALLOWED_FIELDS: Final = frozenset({"reason", "documentReferenceID"})
MAX_SHOWN: Final = 64
WINDOW_NAMES: Final = {60.0: "minute", 3600.0: "hour", 86400.0: "day"}

#: Faults that end the cancel PUT before the cancel is looked at (so it is never applied).
EARLY_FAULTS: Final = frozenset({"fail_500", "fail_503", "html_502", "drop", "retryable_false"})


class TenantRules(Protocol):
    """The settings the model reads, live (a test may change them while a server runs)."""

    @property
    def seed(self) -> int: ...
    @property
    def cancel_delay(self) -> float: ...
    @property
    def cancel_failed_rate(self) -> float: ...
    @property
    def unknown_marker(self) -> str: ...
    @property
    def cancelled_marker(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer as Zuora (or the proxy in front of it) would send it, before any transport.

    Exactly one of `payload` (a JSON object), `text` (an HTML page) or `raw` (bytes that are
    not what they claim, e.g. a cut-off JSON body) is the body.
    """

    status: int
    payload: dict[str, Any] | None = None
    text: str | None = None
    raw: bytes | None = None
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def body(self) -> bytes:
        """The body's bytes as they go on the wire (JSON as aiohttp's json_response writes it)."""
        if self.payload is not None:
            return json.dumps(self.payload).encode()
        if self.text is not None:
            return self.text.encode()
        return self.raw or b""

    def with_headers(self, *headers: tuple[str, str]) -> Reply:
        """The same answer with more headers."""
        return Reply(self.status, self.payload, self.text, self.raw, self.content_type,
                     self.headers + headers)


@dataclass
class Invoice:
    """Server-side e-invoice state; the CancelProcessing outcome is settled lazily on read."""

    status: str
    settles_at: float | None = None
    will_fail: bool = False
    error_code: str | None = None
    error_message: str | None = None


@dataclass
class TenantModel:
    """The invoices of one tenant and what Zuora answers about them.

    `clock` is the front end's time (the monotonic clock over HTTP, the loop's virtual time in
    the simulated world); `on_accept` is told the key of every accepted cancel.
    """

    rules: TenantRules
    clock: Callable[[], float] = time.monotonic
    on_accept: Callable[[str], None] | None = None
    invoices: dict[str, Invoice] = field(default_factory=dict)

    def lookup(self, key: str) -> Invoice | None:
        """Find or lazily create the invoice, so any number of keys costs only what is touched."""
        unknown = self.rules.unknown_marker
        if unknown and unknown in key:
            return None
        invoice = self.invoices.get(key)
        if invoice is None:
            marker = self.rules.cancelled_marker
            status = STATUS_CANCELLED if marker and marker in key else STATUS_SUCCESS
            invoice = self.invoices[key] = Invoice(status)
        return invoice

    def settle(self, invoice: Invoice) -> str:
        """Move a due CancelProcessing to its outcome; timestamps instead of timers scale freely."""
        due = invoice.settles_at
        if invoice.status != STATUS_CANCEL_PROCESSING or due is None:
            return invoice.status
        if self.clock() >= due:
            if invoice.will_fail:
                invoice.status = STATUS_CANCEL_FAILED
                invoice.error_code = CANCEL_FAILED_CODE
                invoice.error_message = CANCEL_FAILED_MESSAGE
            else:
                invoice.status = STATUS_CANCELLED
        return invoice.status

    def status_of(self, key: str) -> str | None:
        """Current eInvoiceStatus of ``key`` (None if the key does not exist)."""
        invoice = self.lookup(key)
        return None if invoice is None else self.settle(invoice)

    def set_status(self, key: str, status: str) -> None:
        """Put an invoice's e-invoice in any status, one Zuora may add included."""
        invoice = self.lookup(key)
        if invoice is None:
            raise KeyError(key)
        invoice.status, invoice.settles_at = status, None

    def read(self, key: str) -> Reply:
        """GET /v1/invoices/{key}: the fields a client polls to learn a cancel's outcome."""
        invoice = self.lookup(key)
        if invoice is None:
            return failure(404, CODE_READ_NOT_FOUND, f"Invoice {shown(key)} not found")
        status = self.settle(invoice)
        return Reply(200, {
            "success": True,
            "id": hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:32],
            "invoiceNumber": key,
            "status": "Posted",
            "eInvoiceStatus": status,
            "eInvoiceErrorCode": invoice.error_code,
            "eInvoiceErrorMessage": invoice.error_message,
        })

    def cancel(self, key: str, body: str) -> Reply:
        """PUT .../e-invoice/cancel: validate, look up, check state, apply (Zuora's own
        refusal of a second cancel is the only guard: the PUT has no idempotency key)."""
        invalid = validate_cancel_body(body)
        if invalid is not None:
            return invalid
        invoice = self.lookup(key)
        if invoice is None:
            return failure(404, CODE_CANCEL_NOT_FOUND, f"Invoice {shown(key)} not found")
        status = self.settle(invoice)
        if status != STATUS_SUCCESS:
            message = f"Cannot cancel the e-invoice: its status is {status}."
            return failure(200, CODE_STATE, message)
        self.apply_cancel(key, invoice)
        return Reply(200, {"success": True})

    def apply_cancel(self, key: str, invoice: Invoice) -> None:
        """Accept the cancel; its outcome is fixed now (seeded per key) and revealed later."""
        invoice.status = STATUS_CANCEL_PROCESSING
        invoice.settles_at = self.clock() + self.rules.cancel_delay
        outcome_draw = random.Random(f"{self.rules.seed}|outcome|{key}").random()
        invoice.will_fail = outcome_draw < self.rules.cancel_failed_rate
        if self.on_accept is not None:
            self.on_accept(key)


def draw_fault(seed: int, key: str, attempt: int,
               shares: tuple[tuple[str, float], ...]) -> str | None:
    """At most one fault for a cancel PUT, from one uniform number.

    The generator is seeded from (seed, key, attempt number for that key) rather than shared:
    the same requests then get the same faults whatever order concurrent workers reach the
    tenant in, so a failing run or a benchmark replays exactly.
    """
    draw = random.Random(f"{seed}|fault|{key}|{attempt}").random()
    threshold = 0.0
    for name, share in shares:
        threshold += share
        if draw < threshold:
            return name
    return None


# --------------------------------------------------------------------- answer shapes


def validate_cancel_body(body: str) -> Reply | None:
    """The 400 a malformed or invalid cancel body gets, or None when it is acceptable."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        payload = None
    if not isinstance(payload, dict):
        message = "Malformed JSON: the request body must be a JSON object."
        return failure(400, CODE_MALFORMED, message)
    reason = payload.get("reason")
    if reason is not None and (not isinstance(reason, str) or reason not in VALID_REASONS):
        return failure(400, CODE_INVALID_VALUE, "Invalid value for reason")
    reference = payload.get("documentReferenceID")
    if reference is not None and not isinstance(reference, str):
        return failure(400, CODE_INVALID_VALUE, "Invalid value for documentReferenceID")
    if reference is not None and reason != "01":
        message = "documentReferenceID is only allowed with reason 01"
        return failure(400, CODE_INVALID_VALUE, message)
    unknown = sorted(set(payload) - ALLOWED_FIELDS)
    if unknown:
        return failure(400, CODE_UNKNOWN_FIELD, f"Unknown field: {shown(unknown[0])}")
    return None


def failure(status: int, code: int, message: str) -> Reply:
    """Zuora's CommonResponse failure shape; processId is what support asks for."""
    return Reply(status, {
        "success": False,
        "processId": secrets.token_hex(8).upper(),
        "reasons": [{"code": code, "message": message}],
    })


def early_fault(fault: str | None) -> Reply:
    """Answers for the faults that leave the cancel unapplied (all of EARLY_FAULTS but drop)."""
    if fault == "fail_500":
        return failure(500, CODE_INTERNAL, "Internal error")
    if fault == "fail_503":
        return failure(503, CODE_TEMPORARY, OUTAGE_MESSAGE)
    if fault == "html_502":
        return html(502, HTML_502)
    message = "Operation failed due to lock contention. Please retry."
    return failure(200, CODE_LOCK, message)


def html(status: int, page: str) -> Reply:
    """A gateway's HTML page: Zuora never saw the request, or its answer never came back."""
    return Reply(status, text=page, content_type="text/html")


def truncated_200() -> Reply:
    """A 200 whose JSON body a proxy cut off (after the cancel took effect)."""
    return Reply(200, raw=TRUNCATED_200)


def concurrency_429(retry_after: int) -> Reply:
    """The tenant concurrency 429: code 50000070 and a fixed Retry-After, as Zuora sends."""
    return failure(429, CODE_CONCURRENCY, CONCURRENCY_MESSAGE).with_headers(
        ("Retry-After", str(retry_after)))


def rate_429(reset: int, window: float, retry_after: bool) -> Reply:
    """The rate 429: category 70 body; Retry-After only if asked (UNCONFIRMED upstream)."""
    message = f"API Rate limit exceeded for the {window_name(window)}, retry after {reset} seconds"
    reply = Reply(429, {"reasons": [{"code": CODE_RATE, "message": message}]})
    return reply.with_headers(("Retry-After", str(reset))) if retry_after else reply


def storm_429(reset: int, window: float, retry_after: int | None) -> Reply:
    """A storm 429: Zuora's rate 429 body, RateLimit-Remaining 0, Retry-After if given."""
    message = f"API Rate limit exceeded for the {window_name(window)}, retry after {reset} seconds"
    reply = Reply(429, {"reasons": [{"code": CODE_RATE, "message": message}]}).with_headers(
        ("RateLimit-Remaining", "0"), ("RateLimit-Reset", str(reset)))
    if retry_after is not None:
        reply = reply.with_headers(("Retry-After", str(retry_after)))
    return reply


def outage_503() -> Reply:
    """What a /v1 request gets while the service is down and answers with Zuora's JSON."""
    return failure(503, CODE_TEMPORARY, OUTAGE_MESSAGE)


def route_not_found(path: str) -> Reply:
    """A JSON 404 for anything that is not a simulated endpoint."""
    return failure(404, CODE_NO_ROUTE, f"No route for {shown(path)}")


def window_name(window: float) -> str:
    """The window as a rate 429 message names it: minute, hour, day, else its length."""
    return WINDOW_NAMES.get(window, f"{seconds(window)}-second window")


def seconds(window: float) -> str:
    """A window length as Zuora writes it: whole seconds without a decimal point or exponent."""
    return str(int(window)) if float(window).is_integer() else f"{window:g}"


def shown(text: str) -> str:
    """Keys as they appear in messages: capped so hostile input cannot bloat the answers."""
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "..."
