"""OAuth as the simulated Zuora does it, one implementation for both front ends.

`POST /oauth/token` with the client-credentials grant mints an opaque bearer token that works
for a while; a /v1 request whose token is unknown or expired gets 401 `Authentication error`.
A token may stop working before the `expires_in` it was announced with (the tenant revoked it),
which is how a client meets a 401 in the middle of a run. The answers never echo the secret.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from .rules import Reply

__all__ = ["TokenBook", "invalid_client", "unauthorized"]


class TokenBook:
    """The tokens one tenant issued and until when each works, on the front end's clock.

    `new_token` makes the opaque token (random over HTTP, seeded in the simulated world so a
    seed replays).
    """

    def __init__(self, clock: Callable[[], float],
                 new_token: Callable[[], str] = lambda: secrets.token_hex(16)) -> None:
        self._clock = clock
        self._new_token = new_token
        self._tokens: dict[str, float] = {}
        self._entity = secrets.token_hex(16)
        self._user = secrets.token_hex(16)

    def grant(self, body: str, client_id: str, client_secret: str, ttl: float,
              lifetime: float | None = None) -> Reply:
        """The client-credentials grant: a token announced for `ttl` seconds that works for
        `lifetime` (ttl unless given), or Zuora's 400 / 401 for a bad request."""
        form = {name: values[0]
                for name, values in parse_qs(body, keep_blank_values=True).items()}
        wanted = ("client_id", "client_secret", "grant_type")
        missing = [name for name in wanted if not form.get(name)]
        if missing:
            description = "Missing required parameter(s): " + ", ".join(missing)
            return Reply(400, {"error": "invalid_request", "error_description": description})
        if not _credentials_ok(form, client_id, client_secret):
            return invalid_client()
        return Reply(200, self._issue(ttl, ttl if lifetime is None else lifetime))

    def _issue(self, ttl: float, lifetime: float) -> dict[str, Any]:
        """Mint an opaque token that works for `lifetime` seconds from now."""
        token = self._new_token()
        self._tokens[token] = self._clock() + lifetime
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": int(ttl),
            "scope": f"entity.{self._entity} platform.write service.usage.update tenant.1 "
            f"user.{self._user}",
            "jti": secrets.token_hex(16),
        }

    def authorized(self, authorization: str) -> bool:
        """Whether an `Authorization` header carries a bearer token issued and not expired."""
        scheme, _, token = authorization.partition(" ")
        expiry = self._tokens.get(token.strip())
        return scheme.lower() == "bearer" and expiry is not None and self._clock() < expiry

    def issued(self) -> list[str]:
        """Every access token issued so far (tests grep outputs for them)."""
        return list(self._tokens)

    def expire_all(self) -> None:
        """Make every issued token expired now, to test refresh in the middle of a run."""
        self._tokens = dict.fromkeys(self._tokens, self._clock())


def unauthorized() -> Reply:
    """The 401 of a /v1 request with no live token."""
    return Reply(401, {"message": "Authentication error"})


def invalid_client() -> Reply:
    """The token endpoint's 401 for credentials it does not accept."""
    return Reply(401, {"error": "invalid_client",
                       "error_description": "Invalid client credentials"})


def _credentials_ok(form: dict[str, str], client_id: str, client_secret: str) -> bool:
    """Constant-time comparison, as a real identity provider would do."""
    id_ok = _same(form["client_id"], client_id)
    secret_ok = _same(form["client_secret"], client_secret)
    return id_ok and secret_ok and form["grant_type"] == "client_credentials"


def _same(given: str, expected: str) -> bool:
    """Compare credentials in constant time, tolerating non-ASCII input."""
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
