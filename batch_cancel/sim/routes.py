"""Routing for the HTTP simulator, from the method and the raw path only, and the way back.

Routing on the raw (still percent-encoded) path keeps `INV%2F1` one key instead of two path
segments, as Zuora's own router does. `response` turns a shared-model `Reply` into an aiohttp
response, the only place the HTTP front end spells an answer.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote

from aiohttp import web

from .rules import Reply

__all__ = [
    "CANCEL", "CONTROL", "OTHER", "READ", "TOKEN", "V1_OTHER", "drop_connection",
    "invoice_key", "raw_path", "response", "route_of",
]

TOKEN: Final = "token"
CANCEL: Final = "cancel"
READ: Final = "read"
V1_OTHER: Final = "v1"
CONTROL: Final = "control"
OTHER: Final = "other"


def raw_path(request: web.Request) -> str:
    """The request path still percent-encoded, without the query string."""
    raw = request.raw_path
    if not raw.startswith("/"):  # absolute-form request target
        raw = request.rel_url.raw_path
    return raw.partition("?")[0]


def route_of(method: str, path: str) -> str:
    """Which endpoint a (method, raw path) pair addresses."""
    if path.startswith("/_sim/"):
        return CONTROL
    if path == "/oauth/token":
        return TOKEN if method == "POST" else OTHER
    if path != "/v1" and not path.startswith("/v1/"):
        return OTHER
    parts = path.split("/")
    if invoice_key(path) is not None:
        if len(parts) == 4 and method == "GET":
            return READ
        if len(parts) == 6 and parts[4:] == ["e-invoice", "cancel"] and method == "PUT":
            return CANCEL
    return V1_OTHER


def invoice_key(path: str) -> str | None:
    """Decoded key of a /v1/invoices/{key}/... path: exactly one raw segment, then unquoted."""
    parts = path.split("/")
    if len(parts) >= 4 and parts[1] == "v1" and parts[2] == "invoices" and parts[3]:
        return unquote(parts[3])
    return None


def response(reply: Reply) -> web.Response:
    """The tenant model's answer as an aiohttp response (JSON as json_response writes it)."""
    if reply.payload is not None:
        answer = web.json_response(reply.payload, status=reply.status)
    elif reply.text is not None:
        answer = web.Response(status=reply.status, text=reply.text,
                              content_type=reply.content_type)
    else:
        answer = web.Response(status=reply.status, body=reply.raw or b"",
                              content_type=reply.content_type)
    for name, value in reply.headers:
        answer.headers[name] = value
    return answer


def drop_connection(request: web.Request) -> None:
    """Close the socket so the client sees a disconnect instead of any HTTP answer."""
    transport = request.transport
    if transport is not None:
        transport.close()
