"""Log set-up: the secret mask is the last guard between a stray secret and a log file."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path

import pytest
import structlog

from batch_cancel.events import (
    PACE_SOURCES,
    SCHEMA,
    Events,
    PoolLoad,
    PoolPausedRateLimited,
    RunFinished,
    schema_table,
)
from batch_cancel.logs import LogSubscriber, SecretMask, configure
from batch_cancel.send.pace import Source

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


def test_the_readme_event_table_is_the_schema_in_events() -> None:
    """The README's table of events is exactly what `events.schema_table()` generates."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("| event | keys |")
    assert readme[start:readme.index("\n\n", start)] == schema_table()


def test_every_logged_event_literal_in_the_package_is_in_the_schema() -> None:
    """A module that still logs by name (the report, verify) uses a name events.py owns."""
    names = {kind.name for kind in SCHEMA}
    package = Path(__file__).parent.parent / "batch_cancel"
    pattern = re.compile(r"\.(?:debug|info|warning|error)\(\s*\"([a-z_]+\.[a-z_]+)\"")
    found = {name for path in package.rglob("*.py")
             for name in pattern.findall(path.read_text(encoding="utf-8"))}
    assert found <= names, found - names


def test_the_pace_sources_the_schema_documents_are_the_pacer_s() -> None:
    """`pool.pace_changed`'s documented sources are every `pace.Source` value."""
    sources = {value for key, value in vars(Source).items() if key.isupper()}
    assert set(PACE_SOURCES) == sources


def test_the_log_subscriber_writes_name_level_and_keys_in_order() -> None:
    """An event is logged under its name at its level with its fields as keys, in order;
    a mapping field becomes one key per entry; an unlogged event writes nothing."""
    with structlog.testing.capture_logs() as logs:
        events = Events(LogSubscriber(structlog.get_logger("test")))
        events.emit(PoolPausedRateLimited("rate_limited", 2.5, "rate", 429, "70"))
        events.emit(RunFinished("r.csv", 1.5, 2.0, None, {"succeeded": 3, "failed": 1}))
        events.emit(PoolLoad("succeeded", 1, 4, None, "unpaced"))
    assert logs == [
        {"event": "pool.paused", "log_level": "warning", "reason": "rate_limited",
         "seconds": 2.5, "limit": "rate", "http_status": 429, "error_code": "70"},
        {"event": "run.finished", "log_level": "info", "report": "r.csv", "elapsed": 1.5,
         "rate": 2.0, "stop": None, "count_succeeded": 3, "count_failed": 1},
    ]
    assert list(logs[1]) == ["report", "elapsed", "rate", "stop", "count_succeeded",
                             "count_failed", "event", "log_level"]


def test_run_progress_is_a_heartbeat_that_slows_down_while_nothing_moves() -> None:
    """`run.progress` every 10 s while rows finish; while nothing changes (an hour's pause,
    a quota spread over a day) the gap doubles up to 300 s, and a change brings it back to
    10 s. Asserted on virtual time."""
    from batch_cancel import api
    from batch_cancel.events import Events, PoolLoad, RunProgress
    from batch_cancel.sim.clock import VirtualLoop

    loop = VirtualLoop()
    said: list[float] = []
    events = Events(lambda e: said.append(loop.time()) if isinstance(e, RunProgress) else None)
    tally = api.Progress(settled=0, to_send=5)

    async def scenario() -> None:
        ticker = api.progress_events(events, tally)
        events.emit(PoolLoad(None, 0, 4, 10.0, "default"))
        await asyncio.sleep(925)
        tally.done = 1  # a row finished: back to every 10 s
        await asyncio.sleep(330)
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)

    start = loop.time()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert [round(t - start) for t in said] == [10, 20, 40, 80, 160, 320, 620, 920, 1220, 1230,
                                                 1250]
