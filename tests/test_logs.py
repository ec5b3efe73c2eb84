"""Log set-up: the secret mask is the last guard between a stray secret and a log file."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from batch_cancel.logs import SecretMask, configure

SECRET = "sim-client-secret"
TOKEN = "eyJ0b2tlbi1vZi10ZXN0"


def test_the_mask_replaces_every_secret_in_every_string_value() -> None:
    """Each configured secret becomes *** wherever it appears; other values pass untouched."""
    mask = SecretMask([SECRET, TOKEN])
    event = {"event": "http.failed", "error_message": f"refused {SECRET} and Bearer {TOKEN}",
             "url": f"https://x/?s={SECRET}", "row": 7, "other": "harmless"}
    assert mask(None, "info", dict(event)) == {
        "event": "http.failed", "error_message": "refused *** and Bearer ***",
        "url": "https://x/?s=***", "row": 7, "other": "harmless"}


def test_the_mask_leaves_secrets_too_short_to_mask_safely() -> None:
    """A secret under 4 characters (an empty or test value) is not masked: *** everywhere
    would destroy the log without protecting anything."""
    assert SecretMask(["", "ab"])(None, "info", {"event": "ab"}) == {"event": "ab"}


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_configured_logger_never_writes_the_secret(log_format: str) -> None:
    """Through the real processor chain, an event that carries the secret is written masked."""
    stream = io.StringIO()
    configure(log_format, "info", secrets=[SECRET], stream=stream)
    try:
        structlog.get_logger("test").warning("token.refused",
                                             error_message=f"client_secret={SECRET}")
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    assert SECRET not in text and "client_secret=***" in text, text
    if log_format == "json":
        assert json.loads(text)["error_message"] == "client_secret=***"
