"""The seam between the real Zuora client and the in-memory world: an aiohttp session's shape.

`ZuoraClient` talks to an `aiohttp.ClientSession` through two calls, `post` (the token) and
`request` (the /v1 calls), each an async context manager giving a response with `status`,
`headers` and `read()`. `WorldSession` offers exactly that over an `Endpoint` (the world), so the
client's own code runs unchanged on virtual time: the token fetch and its retries, the refresh
before expiry and after a 401 (one caller at a time), the headers it sends, the classification
of every answer. Only the sockets are missing.

An exchange ends in a `Reply`, or in the exception aiohttp would raise: a dropped connection
(`aiohttp.ServerDisconnectedError`) or the client's timeout (`TimeoutError`). The world applies
the client's timeout itself (it knows `--timeout`), so the seam adds none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol, cast
from urllib.parse import urlencode

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .rules import Reply

__all__ = ["BASE_URL", "Endpoint", "WorldSession", "session_for", "wire_headers"]

#: The base URL the client is given: never resolved, only its path reaches the world.
BASE_URL = "http://zuora.sim"


class Endpoint(Protocol):
    """What answers the client's requests: the simulated tenant behind the network."""

    async def exchange(self, method: str, path: str, headers: Mapping[str, str],
                       body: str) -> Reply: ...


def wire_headers(reply: Reply) -> CIMultiDictProxy[str]:
    """The headers an answer arrives with: its content type, then its own headers."""
    headers: CIMultiDict[str] = CIMultiDict({"Content-Type": reply.content_type})
    for name, value in reply.headers:
        headers[name] = value
    return CIMultiDictProxy(headers)


class _Response:
    """The part of `aiohttp.ClientResponse` the client reads."""

    __slots__ = ("_body", "headers", "status")

    def __init__(self, reply: Reply) -> None:
        self.status = reply.status
        self.headers = wire_headers(reply)
        self._body = reply.body

    async def read(self) -> bytes:
        """The body's bytes, as `aiohttp.ClientResponse.read` gives them."""
        return self._body


class _Exchange(contextlib.AbstractAsyncContextManager["_Response"]):
    """One request in flight: entering it sends the request and waits for the answer."""

    def __init__(self, endpoint: Endpoint, method: str, url: str | URL, data: Any,
                 headers: Mapping[str, str] | None) -> None:
        self._endpoint = endpoint
        self._method = method
        self._path = (url if isinstance(url, URL) else URL(url, encoded=True)).raw_path
        self._body = _body(data)
        self._headers = dict(headers or {})

    async def __aenter__(self) -> _Response:
        reply = await self._endpoint.exchange(self._method, self._path, self._headers,
                                              self._body)
        return _Response(reply)

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        return None


class WorldSession:
    """An `aiohttp.ClientSession` look-alike whose every request goes to an `Endpoint`."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    def post(self, url: str | URL, *, data: Any = None,
             headers: Mapping[str, str] | None = None, timeout: Any = None) -> _Exchange:
        """POST (the token request: a form)."""
        return _Exchange(self._endpoint, "POST", url, data, headers)

    def request(self, method: str, url: str | URL, *, data: Any = None,
                headers: Mapping[str, str] | None = None, timeout: Any = None) -> _Exchange:
        """Any method (the /v1 calls: a JSON body or none)."""
        return _Exchange(self._endpoint, method, url, data, headers)


def session_for(endpoint: Endpoint) -> aiohttp.ClientSession:
    """A session for `ZuoraClient` whose requests reach `endpoint` (typed as what the client
    takes: it only ever calls `post` and `request`)."""
    return cast(aiohttp.ClientSession, WorldSession(endpoint))


def _body(data: Any) -> str:
    """The request body as text: a form is URL-encoded, as aiohttp sends it."""
    if data is None:
        return ""
    if isinstance(data, Mapping):
        return urlencode(data)
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)
