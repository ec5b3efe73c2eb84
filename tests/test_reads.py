"""Invoice reads under the run's limits (`send.reads`), as preflight and verify use them: real
HTTP to the simulator on loopback; schedules asserted on a virtual clock, never timed."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import pytest

from batch_cancel.config import Settings, Target
from batch_cancel.events import (
    Event,
    Events,
    PoolPausedOutage,
    PoolPausedRateLimited,
    PoolResumed,
    PoolStopping,
    QuotaLow,
)
from batch_cancel.model import Answer, InvoiceState, StopKind, Verdict
from batch_cancel.send import reads as reads_module
from batch_cancel.send.clock import Clock
from batch_cancel.send.limits import Limits, limits_for
from batch_cancel.send.reads import InvoiceReads, Key, open_reads
from batch_cancel.send.retry import Backoff
from batch_cancel.send.zuora import (
    AuthenticationError,
    Credentials,
    ZuoraClient,
    open_session,
)
from tests.helpers import FakeClock, SenderSpy, SpyEvent, starts_before_a_429_deadline


@pytest.mark.parametrize(("target", "settings"), [
    (Target("https://rest.zuora.com", "us-production"), Settings()),
    (Target("http://127.0.0.1:1", "custom"),
     Settings(concurrency=7, rate=3.5, max_attempts=9, outage_window=12.0, tenant_share=0.25,
              concurrency_429="pause")),
    (Target("", "simulator"), Settings(concurrency=2)),
])
def test_a_commands_limits_carry_its_settings_and_the_default_rate_only_without_rate(
        target: Target, settings: Settings) -> None:
    """One function makes the limits of a run's cancels and of preflight's and verify's
    reads: every limit from the settings, the target's default rate only while --rate names
    none."""
    limits = limits_for(settings, target)
    assert (limits.concurrency, limits.rate, limits.max_attempts, limits.outage_window,
            limits.tenant_share) == (settings.concurrency, settings.rate, settings.max_attempts,
                                     settings.outage_window, settings.tenant_share)
    assert limits.default_rate == (target.default_rate if settings.rate is None else None)
    assert limits.pause_on_concurrency_429 is (settings.concurrency_429 == "pause")


def keys(n: int) -> list[Key]:
    return [(row, f"INV{row:05d}") for row in range(2, 2 + n)]


async def read_all(live_sim: Any, wanted: list[Key], limits: Limits, clock: Clock | None = None,
                   events: list[Event] | None = None, on_event: Any = None,
                   ) -> tuple[dict[int, InvoiceState], list[SpyEvent], InvoiceReads]:
    """Read `wanted` through the reader, the client wrapped in a spy on the reader's clock."""
    clock = clock or Clock()
    seen = events if events is not None else []
    bus = Events(seen.append, *([on_event] if on_event else []))
    credentials = Credentials(live_sim.config.client_id, live_sim.config.client_secret)
    async with open_session() as session:
        client = ZuoraClient(session, live_sim.url, credentials, Settings(timeout=10.0))
        spy = SenderSpy(client, clock)
        reads = InvoiceReads(spy, limits, clock=clock, rng=random.Random(7), events=bus)
        states = await reads.read(wanted)
    return states, spy.events, reads


def most_in_flight(events: list[SpyEvent]) -> int:
    """The most reads the client had started and not yet seen answered, at any moment."""
    now = most = 0
    for event in events:
        now += 1 if event.kind == "start" else -1
        most = max(most, now)
    return most


async def test_a_429_storm_pauses_every_reader_and_every_key_is_read(live_sim) -> None:
    """30 % of reads met by a 429 naming 1 s: no read of any key starts before a deadline a
    429 named (on the reader's clock), the pool pauses for exactly that, every key is read."""
    live_sim.config.seed = 1
    live_sim.config.storm_429 = 0.3
    live_sim.config.storm_retry_after = 1
    seen: list[Event] = []
    states, calls, _ = await read_all(live_sim, keys(80), Limits(concurrency=20, rate=None,
                                                                  max_attempts=8),
                                      clock=FakeClock(overlap=True), events=seen)
    assert sorted(states) == [row for row, _ in keys(80)]
    assert {state.einvoice_status for state in states.values()} == {"Success"}
    assert sum(1 for e in calls if e.answer and e.answer.http_status == 429) > 10
    early = starts_before_a_429_deadline(calls)
    assert not early, f"{len(early)} reads started during a 429 pause: {early[:5]}"
    pauses = [e for e in seen if isinstance(e, PoolPausedRateLimited)]
    assert pauses and {(e.seconds, e.limit) for e in pauses} == {(1.0, "rate")}


async def test_a_key_whose_every_read_met_a_429_is_left_out(live_sim) -> None:
    """Out of attempts on 429s: the key is left out, as never read (preflight: `unknown`)."""
    live_sim.config.storm_429 = 1.0
    live_sim.config.storm_retry_after = 1
    states, calls, _ = await read_all(live_sim, keys(3), Limits(concurrency=2, rate=None,
                                                                 max_attempts=3),
                                      clock=FakeClock(overlap=True))
    assert states == {}
    assert sum(1 for e in calls if e.kind == "start") == 9  # 3 keys, 3 reads each


async def test_reads_are_paced_at_the_rate(live_sim) -> None:
    """At --rate 10 the reads start at least 0.1 s apart on the reader's clock, the first at
    once: no burst at the start."""
    clock = FakeClock(overlap=True)
    start = clock.now()
    _, calls, _ = await read_all(live_sim, keys(12), Limits(concurrency=4, rate=10.0,
                                                             max_attempts=3), clock=clock)
    starts = [e.at for e in calls if e.kind == "start"]
    assert len(starts) == 12 and starts[0] == start
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) >= 0.1 - 1e-9, gaps
    assert clock.now() - start >= 1.1 - 1e-9


async def test_at_most_the_window_is_in_flight(live_sim) -> None:
    """--concurrency 3: never more than 3 reads in flight, as the client and the server see."""
    live_sim.config.latency = 0.02
    states, calls, _ = await read_all(live_sim, keys(24), Limits(concurrency=3, rate=None,
                                                                  max_attempts=3))
    assert len(states) == 24
    assert most_in_flight(calls) <= 3
    assert 1 <= live_sim.stats.max_in_flight <= 3


async def test_an_outage_opens_the_breaker_and_reading_resumes_when_it_ends(live_sim) -> None:
    """Every read answered 503: the breaker opens after the threshold, one probe at a time
    goes through, and once the service is back every key is read (the failures while the
    breaker was open did not use up the keys' attempts)."""
    live_sim.config.outage_after = 0.0
    live_sim.config.outage_for = 1e6
    seen: list[Event] = []

    def service_back(event: Event) -> None:
        if isinstance(event, PoolPausedOutage):
            live_sim.config.outage_after = None

    limits = Limits(concurrency=4, rate=None, max_attempts=3, outage_threshold=3)
    states, _, _ = await read_all(live_sim, keys(10), limits, clock=FakeClock(overlap=True),
                                  events=seen, on_event=service_back)
    assert sorted(states) == [row for row, _ in keys(10)]
    assert {state.einvoice_status for state in states.values()} == {"Success"}
    kinds = [type(e) for e in seen if isinstance(e, PoolPausedOutage | PoolResumed)]
    assert kinds == [PoolPausedOutage, PoolResumed]


async def test_an_outage_past_the_outage_window_stops_reading(live_sim) -> None:
    """An outage that outlasts --outage-window stops the reading cleanly: no key is read,
    the reader says why, and no read starts after the stop."""
    live_sim.config.outage_after = 0.0
    live_sim.config.outage_for = 1e6
    seen: list[Event] = []
    reads_at_stop: list[int] = []

    def note_stop(event: Event) -> None:
        if isinstance(event, PoolStopping):
            reads_at_stop.append(live_sim.stats.invoice_reads)

    limits = Limits(concurrency=4, rate=None, max_attempts=3, outage_threshold=3,
                    outage_window=30.0)
    states, _, reads = await read_all(live_sim, keys(10), limits, clock=FakeClock(overlap=True),
                                      events=seen, on_event=note_stop)
    assert all(state.einvoice_status is None for state in states.values())
    assert "outage-window" in reads.stop_reason
    assert [e.kind for e in seen if isinstance(e, PoolStopping)] == ["outage"]
    assert reads_at_stop == [live_sim.stats.invoice_reads]


# --- the reader with an in-memory client: each rule of `_read_one`, exactly ------------------


SUCCESS = InvoiceState("Success", Answer(Verdict.SUCCEEDED, http_status=200))
DOWN = InvoiceState(None, Answer(Verdict.RETRY, http_status=503, error_message="down"))
REFUSED = InvoiceState(None, Answer(Verdict.RETRY, http_status=401, token_refused=True))
NOT_FOUND = InvoiceState(None, Answer(Verdict.FINAL, http_status=404))
LIMITED = InvoiceState(None, Answer(Verdict.RETRY, http_status=429, rate_limited=True,
                                    retry_after=3.0))


class Top(random.Random):
    """Draws the top of every range asked for: each backoff is its ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Script:
    """Answers each key's reads from its own script (the last answer repeating)."""

    def __init__(self, scripts: dict[str, list[InvoiceState]]) -> None:
        self.scripts = scripts
        self.calls: list[tuple[str, str]] = []

    async def ready(self) -> None:
        return None

    async def invoice_state(self, key: str, track_id: str) -> InvoiceState:
        self.calls.append((key, track_id))
        script = self.scripts[key]
        return script.pop(0) if len(script) > 1 else script[0]


def reader(client: Script, max_attempts: int = 3, seen: list[Event] | None = None,
           **kwargs: Any) -> tuple[InvoiceReads, FakeClock]:
    clock = FakeClock(overlap=True)
    limits = Limits(concurrency=1, rate=None, max_attempts=max_attempts,
                    backoff=Backoff(base=1.0, cap=8.0))
    bus = Events(seen.append) if seen is not None else Events()
    return InvoiceReads(client, limits, clock=clock, rng=Top(), events=bus, **kwargs), clock


async def test_each_read_carries_its_rows_track_id() -> None:
    client = Script({"A": [SUCCESS], "B": [SUCCESS]})
    reads, _ = reader(client)
    assert await reads.read([(2, "A"), (3, "B")]) == {2: SUCCESS, 3: SUCCESS}
    assert client.calls == [("A", "read-2"), ("B", "read-3")]
    own = Script({"A": [SUCCESS]})
    reads, _ = reader(own, track_id=lambda row: f"v-{row}")
    await reads.read([(7, "A")])
    assert own.calls == [("A", "v-7")]


async def test_a_failed_read_is_read_again_after_the_backoff_up_to_max_attempts() -> None:
    """503, 503, then Success: waits of exactly 1 and 2 s (the ceilings); three 503s in a
    row: the third is the answer, no wait after it."""
    client = Script({"A": [DOWN, DOWN, SUCCESS], "B": [DOWN]})
    reads, clock = reader(client)
    assert await reads.read([(2, "A")]) == {2: SUCCESS}
    assert clock.sleeps == [1.0, 2.0]
    reads, clock = reader(client)
    assert await reads.read([(3, "B")]) == {3: DOWN}
    assert clock.sleeps == [1.0, 2.0] and len(client.calls) == 6


async def test_a_refused_token_is_read_again_at_once_and_not_counted() -> None:
    client = Script({"A": [REFUSED, REFUSED, SUCCESS]})
    reads, clock = reader(client, max_attempts=1)
    assert await reads.read([(2, "A")]) == {2: SUCCESS}
    assert len(client.calls) == 3 and clock.sleeps == []


async def test_a_read_after_a_401_waits_out_a_pause_that_came_while_its_token_did() -> None:
    """After a 401 the next read fetches a token; a 429 pausing the pool meanwhile (another
    reader's, say) holds that read until the pause is over, not a moment sooner."""
    reads: InvoiceReads

    class PausedDuringToken(Script):
        paused = False

        async def ready(self) -> None:
            if len(self.calls) == 1 and not self.paused:  # the token for the read after the 401
                self.paused = True
                reads.limiter.pause(LIMITED.answer)

    client = PausedDuringToken({"A": [REFUSED, SUCCESS]})
    reads, clock = reader(client, max_attempts=1)
    assert await reads.read([(2, "A")]) == {2: SUCCESS}
    assert len(client.calls) == 2 and clock.sleeps == [4.0]  # 3 s and the resume spread


async def test_a_final_answer_or_a_known_status_ends_the_reads_of_a_key() -> None:
    failed = InvoiceState("Failed", Answer(Verdict.RETRY, http_status=200), "E1", "bad")
    client = Script({"A": [NOT_FOUND, SUCCESS], "B": [failed, SUCCESS]})
    reads, clock = reader(client)
    assert await reads.read([(2, "A"), (3, "B")]) == {2: NOT_FOUND, 3: failed}
    assert len(client.calls) == 2 and clock.sleeps == []


async def test_a_429_read_waits_for_the_pools_pause_only_and_is_left_out_at_the_end() -> None:
    """A 429 naming 3 s: the pool's pause is the only wait (3 s and the resume spread,
    here 1 s), not a backoff on top; a key whose every read met a 429 is left out."""
    client = Script({"A": [LIMITED, SUCCESS], "B": [LIMITED]})
    reads, clock = reader(client)
    assert await reads.read([(2, "A")]) == {2: SUCCESS}
    assert clock.sleeps == [4.0]
    reads, clock = reader(client, max_attempts=2)
    assert await reads.read([(3, "B")]) == {}
    assert clock.sleeps == [4.0]


async def test_a_stopped_reader_reads_nothing_more_and_says_why_once() -> None:
    seen: list[Event] = []
    client = Script({"A": [SUCCESS]})
    reads, _ = reader(client, seen=seen)
    assert reads.stop_reason == ""
    reads.stop("enough", StopKind.QUOTA)
    reads.stop("again")
    assert reads.stop_reason == "enough"
    assert await reads.read([(2, "A"), (3, "A")]) == {}
    assert client.calls == []
    assert seen == [PoolStopping("enough", "quota")]


async def test_the_daily_quota_is_weighed_against_the_keys_still_to_read() -> None:
    low = InvoiceState("Success", Answer(Verdict.SUCCEEDED, http_status=200, quota_remaining=1,
                                         quota_window=86400))
    seen: list[Event] = []
    reads, _ = reader(Script({"A": [SUCCESS], "B": [low]}), seen=seen)
    await reads.read([(2, "A"), (3, "B"), (4, "A")])
    assert seen == [QuotaLow(1, 2, 86400)]


async def test_a_client_error_gives_its_place_back_and_ends_the_reading() -> None:
    class Broken:
        async def ready(self) -> None:
            return None

        async def invoice_state(self, key: str, track_id: str) -> InvoiceState:
            raise ValueError("boom")

    clock = FakeClock(overlap=True)
    reads = InvoiceReads(Broken(), Limits(concurrency=2, rate=None, max_attempts=1),
                         clock=clock, events=Events())
    with pytest.raises(ValueError, match="boom"):
        await reads.read([(2, "A")])
    assert (reads.limiter.window.in_flight, reads.limiter.pace.in_flight) == (0, 0)


async def test_a_commands_reader_reads_the_target_it_names_under_its_settings() -> None:
    """open_reads on the built-in simulator: a client signed in, the command's limits."""
    settings = Settings(concurrency=2, max_attempts=4)
    async with open_reads(Target("", "simulator"), None, None, settings) as reads:
        states = await reads.read([(2, "INV00002"), (3, "INV00003")])
    assert {row: state.einvoice_status for row, state in states.items()} == {
        2: "Success", 3: "Success"}
    assert (reads.limiter.window.max_size, reads.limiter.pace.rate) == (2, None)


async def test_refused_credentials_end_the_reading_with_many_keys_left() -> None:
    """One reader, six keys: its client's AuthenticationError ends read() with that error
    (it used to leave the keys waiting for room in the queue, and read() never returned)."""
    class Refused:
        calls = 0

        async def ready(self) -> None:
            return None

        async def invoice_state(self, key: str, track_id: str) -> InvoiceState:
            Refused.calls += 1
            raise AuthenticationError("refused")

    reads = InvoiceReads(Refused(), Limits(concurrency=1, rate=None, max_attempts=1),
                         clock=FakeClock(overlap=True), events=Events())
    with pytest.raises(AuthenticationError, match="refused"):
        await asyncio.wait_for(reads.read(keys(6)), 30.0)  # a hang guard, not a timing
    assert Refused.calls == 1 and reads.limiter.window.in_flight == 0


async def test_an_answer_without_a_status_that_is_not_retried_ends_the_reads() -> None:
    """A 200 whose body names no eInvoiceStatus is the answer: not read again."""
    blank = InvoiceState(None, Answer(Verdict.SUCCEEDED, http_status=200))
    client = Script({"A": [blank, SUCCESS]})
    reads, _ = reader(client)
    assert await reads.read([(2, "A")]) == {2: blank}
    assert len(client.calls) == 1


async def test_a_reader_that_fails_waits_for_the_other_reads_to_give_their_places_back() -> None:
    """Two readers: one's client raises, the other's read is cut off and takes a few turns
    of the loop to give up; read() ends with the error once every place is given back."""
    stuck = asyncio.Event()

    class Half:
        async def ready(self) -> None:
            return None

        async def invoice_state(self, key: str, track_id: str) -> InvoiceState:
            if key == "A":
                await asyncio.sleep(0)
                raise AuthenticationError("refused")
            try:
                await stuck.wait()
            finally:
                for _ in range(3):
                    await asyncio.sleep(0)
            return SUCCESS

    reads = InvoiceReads(Half(), Limits(concurrency=2, rate=None, max_attempts=1),
                         clock=FakeClock(overlap=True), events=Events())
    with pytest.raises(AuthenticationError):
        await asyncio.wait_for(reads.read([(2, "A"), (3, "B")]), 30.0)  # a hang guard
    assert reads.limiter.window.in_flight == 0


async def test_a_commands_reader_keeps_two_connections_per_place_in_its_window(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The session holds 2 x --concurrency connections: a read never waits for one."""
    asked: list[int] = []

    def counted(connections: int) -> Any:
        asked.append(connections)
        return open_session(connections)

    monkeypatch.setattr(reads_module, "open_session", counted)
    async with open_reads(Target("", "simulator"), None, None, Settings(concurrency=3)):
        pass
    assert asked == [6]
