"""Seeded schedules: the real runner, journal and report writer against the in-memory world on
virtual time, every schedule judged by the oracle (see batch_cancel/sim/oracle.py).

`pytest tests/test_simulation.py --sim-seeds 20000` searches more; `--sim-seed N` replays one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib
import random
from pathlib import Path
from typing import Any

import pytest

from batch_cancel.config import Settings, Target
from batch_cancel.model import Answer, CancelJob, Outcome, Status, StopKind
from batch_cancel.read import earlier_report, frames
from batch_cancel.send.limits import Limits, limits_for
from batch_cancel.send.pool import Runner
from batch_cancel.send.reads import InvoiceReads
from batch_cancel.send.zuora import TOKEN_TRIES, AuthenticationError
from batch_cancel.sim import readonly
from batch_cancel.sim.clock import LoopClock
from batch_cancel.sim.oracle import NEVER_LEFT, RESENT_AFTER_401, check_seed, run_schedule, shrink
from batch_cancel.sim.schedule import ALGORITHMS
from batch_cancel.sim.world import Schedule, Stuck, VirtualLoop, World, client_secret

#: The verify and preflight modules (the package's names are their functions).
verify = importlib.import_module("batch_cancel.verify")
preflight = importlib.import_module("batch_cancel.preflight")

#: Seeds per test item: failures are reported together, a chunk at a time.
CHUNK = 100


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Cut the seeds to check (--sim-seeds, --sim-first, or one --sim-seed) into chunks."""
    if "seeds" not in metafunc.fixturenames:
        return
    config = metafunc.config
    one = config.getoption("--sim-seed")
    if one is not None:
        chunks = [range(one, one + 1)]
    else:
        first, count = config.getoption("--sim-first"), config.getoption("--sim-seeds")
        end = first + count
        chunks = [range(a, min(a + CHUNK, end)) for a in range(first, end, CHUNK)]
    metafunc.parametrize("seeds", chunks, ids=[f"seeds-{c[0]}-{c[-1]}" for c in chunks])


def test_seeded_schedules_keep_every_promise(seeds: range) -> None:
    """Under every seeded schedule of faults, limits, crashes and resumes, no promise breaks."""
    failures = [result for result in map(check_seed, seeds) if not result.ok]
    report = [result.explain() for result in failures]
    for result in failures[:2]:  # a small failing schedule reads faster than a big one
        small, checked = shrink(Schedule.draw(result.seed))
        report.append(f"seed {result.seed} shrunk (python -m batch_cancel.sim.oracle --seed "
                      f"{result.seed} --shrink):\n{checked.explain(small)}")
    assert not failures, "\n\n".join(report)


def test_the_mix_crashes_and_resumes_often_enough() -> None:
    """At least 300 of the first 2,000 schedules kill the process and resume it."""
    assert sum(bool(Schedule.draw(seed).crashes) for seed in range(2000)) >= 300


def test_a_seed_replays_the_same_run() -> None:
    """The same seed gives the same requests, statuses and exit code."""
    first, second = check_seed(52), check_seed(52)
    assert (first.requests, first.statuses, first.exit_code, first.virtual_seconds) == (
        second.requests, second.statuses, second.exit_code, second.virtual_seconds)


def test_virtual_loop_fast_forwards_to_the_next_timer() -> None:
    """An hour of asyncio.sleep passes at once, and the loop's clock says an hour passed."""
    loop = VirtualLoop()
    try:
        loop.run_until_complete(asyncio.sleep(3600))
        assert 3600 <= loop.time() < 3600.01
    finally:
        loop.close()


def test_virtual_loop_names_a_hang() -> None:
    """Waiting for something nothing will ever do raises Stuck instead of hanging the test."""
    loop = VirtualLoop()
    try:
        with pytest.raises(Stuck):
            loop.run_until_complete(loop.create_future())
    finally:
        loop.close()


def _world_answer(schedule: Schedule, call: str) -> Any:
    loop = VirtualLoop()
    try:
        world = World(schedule, loop)
        client = world.connect()  # the real client, its token code included
        job = CancelJob(2, "INV1", "02")
        if call == "cancel":
            return loop.run_until_complete(client.cancel(job, "t-2")), world
        return loop.run_until_complete(client.invoice_state("INV1", "t-2")), world
    finally:
        loop.close()


def _quiet(seed: int, **changes: Any) -> Schedule:
    """Seed's schedule with no limits, faults, outages or crashes, a CSV input and no run
    after the chain, then `changes`."""
    base = dataclasses.replace(
        Schedule.draw(seed), concurrency_limit=40, others_peak=0, rate_limit=None,
        daily_quota=None, faults=(), read_faults=0.0, storm=0.0, outages=(), crashes=(),
        latency=0.05, jitter=0.0, input_form="csv", feedback="", verify=False,
        preflight=False)
    return dataclasses.replace(base, **changes)


def test_world_answers_pass_through_the_clients_classification() -> None:
    """A cut-off 200 after the cancel took effect reaches the runner as zuora.classify reads
    it (in doubt, 'unreadable answer'), and the tenant model really applied the cancel."""
    answer, world = _world_answer(_quiet(1, faults=(("truncated_after_apply", 1.0),)), "cancel")
    assert answer.in_doubt and "unreadable answer" in answer.error_message
    assert answer.concurrency_limit == 40  # Zuora's headers were there to read
    assert world.model.status_of("INV1") == "CancelProcessing"


def test_world_reads_carry_the_tenant_models_status() -> None:
    """An invoice read answers the model's eInvoiceStatus, classified as a success."""
    state, _ = _world_answer(_quiet(1), "read")
    assert state.einvoice_status == "Success" and state.answer.http_status == 200


def test_workers_queued_at_the_window_wait_out_a_429_pause() -> None:
    """Seed 3 (a rate 429 while workers wait for a place in a window of 2) once sent a cancel
    1 ms into the 60 s pause: each place given back let the next queued worker send."""
    result = check_seed(3)
    assert not [v for v in result.violations if "during the pause" in v], result.explain()


def test_no_request_starts_after_the_run_stopped() -> None:
    """Seed 535: after the daily quota stops the run, reads queued at the window still go out."""
    result = check_seed(535)
    assert not [v for v in result.violations + result.known
                if "started after the run stopped" in v], result.explain()


def test_a_row_whose_request_never_left_is_not_in_doubt() -> None:
    """Seed 88: an invoice cancelled before the run, its row waiting for a window place when
    the grace ran out, came back in doubt; the resume read it and reported it `succeeded`."""
    result = check_seed(88)
    assert not [v for v in result.violations + result.known if NEVER_LEFT in v], (
        result.explain())


def test_oracle_catches_a_resend_without_a_read(tmp_path: Path) -> None:
    """A runner that resends after an in-doubt answer without reading first is caught."""

    schedule = _quiet(7, keys=tuple(f"INV{n}" for n in range(20)), reasons=("02",) * 20,
                      references=("",) * 20, faults=(("drop_after_apply", 0.5),),
                      settings=dataclasses.replace(Schedule.draw(7).settings, max_attempts=3))
    result = run_schedule(schedule, tmp_path, _never_read)
    assert any("was accepted at" in v and "with no read between" in v
               for v in result.violations), result.explain(schedule)
    assert any("after an in-doubt answer" in v for v in result.violations)


def test_oracle_catches_a_doubt_reported_as_a_plain_failure(tmp_path: Path) -> None:
    """A runner that drops the in-doubt mark of an unsettled row is caught: the cancel was
    accepted, and the report says failed with nothing to check."""

    def forget_doubts(runner: Runner) -> None:
        unsettled = runner.rows.outcomes.unsettled

        def plain(*args: Any) -> Outcome:
            return dataclasses.replace(unsettled(*args), in_doubt=False)
        runner.rows.outcomes.unsettled = plain  # type: ignore[method-assign]

    schedule = _quiet(8, keys=tuple(f"INV{n}" for n in range(20)), reasons=("02",) * 20,
                      references=("",) * 20, faults=(("drop_after_apply", 0.5),),
                      read_faults=1.0)
    result = run_schedule(schedule, tmp_path, forget_doubts)
    assert any("not in doubt, but our cancel was accepted" in v for v in result.violations), (
        result.explain(schedule))


def _never_read(runner: Runner) -> None:
    async def skip(*args: Any) -> None:
        return None
    runner.rows.settle_doubt = skip  # type: ignore[method-assign]


def test_oracle_catches_a_request_sent_before_its_journal_record(tmp_path: Path) -> None:
    """Without the write-ahead `sent` record, a crash loses what was sent, the resume sends it
    again without a read, and the oracle names the second cancel."""

    def unjournaled(runner: Runner) -> None:
        runner.rows.on_sent = None

    schedule = _quiet(9, keys=tuple(f"INV{n}" for n in range(20)), reasons=("02",) * 20,
                      references=("",) * 20, latency=0.5, crashes=(("request", 12),),
                      crash_delivers=True,
                      settings=dataclasses.replace(Schedule.draw(9).settings, concurrency=4))
    control, mutant = tmp_path / "control", tmp_path / "mutant"
    control.mkdir()
    mutant.mkdir()
    assert run_schedule(schedule, control, None).ok  # with its journal the runner is safe
    result = run_schedule(schedule, mutant, unjournaled)
    assert result.crashes == 1
    assert any("with no read between" in v for v in result.violations), result.explain(schedule)


def test_a_failure_shrinks_to_a_smaller_schedule() -> None:
    """Shrinking keeps cutting rows and faults while the failure stays."""
    schedule = _quiet(7, keys=tuple(f"INV{n}" for n in range(40)), reasons=("02",) * 40,
                      references=("",) * 40,
                      faults=(("drop_after_apply", 0.4), ("fail_500", 0.1)),
                      storm=0.2, settings=dataclasses.replace(Schedule.draw(7).settings,
                                                              max_attempts=3))
    small, checked = shrink(schedule, _never_read)
    assert not checked.ok
    assert small.rows < schedule.rows and small.storm == 0


def test_oracle_catches_a_pool_that_ignores_a_429_pause(tmp_path: Path) -> None:
    """A pause gate that never pauses lets requests start inside Retry-After: caught."""

    def no_pause(runner: Runner) -> None:
        runner.limiter.pause = lambda answer: None  # type: ignore[method-assign]

    schedule = _quiet(10, keys=tuple(f"INV{n}" for n in range(30)), reasons=("02",) * 30,
                      references=("",) * 30, storm=0.3, storm_retry_after=3)
    result = run_schedule(schedule, tmp_path, no_pause)
    assert any("during the pause" in v for v in result.violations), result.explain(schedule)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_oracle_catches_a_window_past_the_tenant_share(tmp_path: Path, algorithm: str) -> None:
    """A window that takes the whole tenant when --tenant-share says half: caught, whichever
    algorithm sizes it (`--concurrency-algorithm`, drawn by a fifth of the seeds)."""

    def greedy(runner: Runner) -> None:
        assert type(runner.limiter.window).__name__ == {"window": "Window",
                                                        "gradient2": "Gradient2"}[algorithm]
        runner.limiter.window.share = 1.0

    settings = dataclasses.replace(Schedule.draw(11).settings, concurrency=20, tenant_share=0.5,
                                   rate=None, concurrency_algorithm=algorithm)
    schedule = _quiet(11, keys=tuple(f"INV{n}" for n in range(200)), reasons=("02",) * 200,
                      references=("",) * 200, concurrency_limit=20, settings=settings,
                      latency=0.5)
    result = run_schedule(schedule, tmp_path, greedy)
    assert any("past --tenant-share" in v for v in result.violations), result.explain(schedule)


def test_a_resend_after_a_401_never_leaves_inside_a_pause_that_came_with_its_token() -> None:
    """Seed 5733 (20,000-seed search, Gradient2 sizing the window): a read resent after a
    401 fetched its token while another row's 429 paused the pool, then went out 1 ms into
    the pause. The token now comes before the last look at the limits."""
    result = check_seed(5733)
    assert not result.violations, result.explain()


def test_a_used_up_daily_quota_as_small_as_the_minute_one_stops_the_run() -> None:
    """Seed 34798 (seeds 20,000-59,999): a minute quota and a daily quota of 1 each, sent as
    `1, 1;w=60, 1;w=86400`; the client read the counted window as the minute one, so it never
    stopped for the quota and paced one request a day until the search's 30 days ran out.
    Reset (86400) now tells the day apart: the run stops with exit 4."""
    result = check_seed(34798)
    assert not result.violations, result.explain()
    assert result.exit_code == 4


@pytest.mark.parametrize("seed", [3231, 5630])
def test_a_429_that_lands_while_the_journal_takes_a_record_holds_that_request(seed: int) -> None:
    """Seeds 3231 and 5630 (10,000-seed search): a worker holding a window place wrote its
    `sent` record while another row's 429 paused the pool, then sent into the pause; it now
    gives its place back and waits the pause out."""
    result = check_seed(seed)
    assert not [v for v in result.violations if "during the pause" in v], result.explain()


@pytest.mark.parametrize("seed", [10248, 20019, 34977, 59790, 86636])
def test_a_resume_never_calls_a_cancel_of_the_run_it_resumes_already_done_before(
        seed: int) -> None:
    """Seeds of the 100,000-seed search: a request timed out, a read said not applied, the
    run stopped; the late request then landed, and the resume called the invoice `skipped`.
    The journal remembers the request was in doubt, so the resume says `succeeded`."""
    result = check_seed(seed)
    assert not [v for v in result.violations if "skipped, but" in v], result.explain()


def test_a_token_revoked_early_meets_a_401_and_the_client_refreshes(tmp_path: Path) -> None:
    """Tokens that stop working long before their expires_in: the real client's requests meet
    401s mid-run, it drops the token and says so (`token_refused`), the caller sends again
    with a new one, and the run completes."""
    schedule = _quiet(12, keys=tuple(f"INV{n}" for n in range(30)), reasons=("02",) * 30,
                      references=("",) * 30, latency=0.5, token_ttl=3600.0,
                      token_lifetime=2.0, token_refusals=(), interrupt=None,
                      settings=dataclasses.replace(Schedule.draw(12).settings, concurrency=2,
                                                   rate=None))
    loop = VirtualLoop()
    world = World(schedule, loop)
    client = world.connect()
    try:
        for n in range(6):
            job = CancelJob(n + 2, f"INV{n}", "02")
            answer = loop.run_until_complete(client.cancel(job, f"t-{n}"))
            if answer.token_refused:
                assert answer.http_status == 401
                answer = loop.run_until_complete(client.cancel(job, f"t-{n}"))
            assert answer.http_status == 200
            loop.run_until_complete(asyncio.sleep(1.0))
    finally:
        loop.close()
    assert [r.result for r in world.requests].count("401") >= 2
    assert len(world.token_requests) >= 3
    result = run_schedule(schedule, tmp_path)
    assert result.ok and result.exit_code == 0, result.explain(schedule)


@pytest.mark.parametrize("mode", ["503", "429", "drop", "invalid_client"])
def test_a_refusing_token_endpoint_stops_the_run_for_auth_and_a_resume_finishes(
        tmp_path: Path, mode: str) -> None:
    """The token endpoint refuses for ten minutes from the start: the client tries three times
    (invalid_client: once), the run stops for authentication with every row reported, and the
    resume after the refusal sends them all."""
    schedule = _quiet(13, keys=tuple(f"INV{n}" for n in range(10)), reasons=("02",) * 10,
                      references=("",) * 10, interrupt=None,
                      token_refusals=((0.0, 600.0, mode),))
    result = run_schedule(schedule, tmp_path)
    assert result.ok, result.explain(schedule)
    assert result.runs == 2 and result.exit_code == 0
    tries = 1 if mode == "invalid_client" else 3
    assert result.token_requests == tries + 1


def test_oracle_catches_the_client_secret_in_an_output(tmp_path: Path) -> None:
    """A run whose stop reason carries the client secret is caught by the secrets check."""
    schedule = _quiet(14, keys=("INV1", "INV2"), reasons=("02", "02"), references=("", ""),
                      interrupt=None, token_refusals=())

    def leak(runner: Runner) -> None:
        runner.stop(f"debug: {client_secret(schedule.seed)}", StopKind.INTERRUPTED)

    result = run_schedule(schedule, tmp_path, leak)
    assert any("the client secret appears" in v for v in result.violations), (
        result.explain(schedule))


@pytest.mark.parametrize("seed", [3803, 6726, 11778])
def test_the_clients_resend_after_a_401_waits_for_the_pool(seed: int) -> None:
    """Seeds 3803 and 11778 (20,000-seed search): a request answered 401 while another row's
    429 paused the pool was resent at once with a new token, inside the pause; seed 6726: one
    waiting for the token lock when the run stopped for auth was resent after the stop. The
    client now hands the 401 back (`token_refused`) and the row sends again through the
    limits."""
    result = check_seed(seed)
    assert not [v for v in result.violations + result.known if RESENT_AFTER_401 in v], (
        result.explain())


def test_oracle_catches_an_access_token_in_an_output(tmp_path: Path) -> None:
    """A run whose stop reason carries the bearer token in use is caught by the secrets check."""
    schedule = _quiet(15, keys=("INV1", "INV2"), reasons=("02", "02"), references=("", ""),
                      interrupt=None, token_refusals=())

    # the world's first token, drawn as the world draws it (tokens|seed|issue)
    token = f"{random.Random(f'tokens|{schedule.seed}|issue').getrandbits(128):032x}"

    def leak(runner: Runner) -> None:
        runner.stop(f"debug: bearer {token}", StopKind.INTERRUPTED)

    result = run_schedule(schedule, tmp_path, leak)
    assert any("access tokens appear" in v for v in result.violations), (
        result.explain(schedule))


def test_a_token_fetch_that_failed_for_good_is_not_repeated_by_waiting_callers() -> None:
    """Seed 6726's second finding: workers queued on the token lock when the fetch failed for
    good each started their own three tries. Now they all get the same failure: the token
    endpoint is asked exactly TOKEN_TRIES times, however many requests were waiting."""
    schedule = _quiet(16, token_refusals=((0.0, 600.0, "503"),), interrupt=None)
    loop = VirtualLoop()
    world = World(schedule, loop)
    client = world.connect()

    async def many() -> list[BaseException | Answer]:
        return await asyncio.gather(*(client.cancel(CancelJob(n, f"INV{n}", "02"), f"t-{n}")
                                      for n in range(2, 10)), return_exceptions=True)
    try:
        results = loop.run_until_complete(many())
    finally:
        loop.close()
    assert all(isinstance(r, AuthenticationError) for r in results)
    assert len(world.token_requests) == TOKEN_TRIES
    assert not [r for r in world.requests if r.kind == "cancel"]


def _fed_back(seed: int, keys: tuple[str, ...], **changes: Any) -> Schedule:
    """A quiet schedule of `keys` whose last report is fed back in after the chain."""
    n = len(keys)
    return _quiet(seed, keys=keys, reasons=("02",) * n, references=("",) * n,
                  interrupt=None, token_refusals=(), **{"feedback": "rerun", **changes})


def test_the_mix_takes_the_other_user_paths_often_enough() -> None:
    """Of the first 2,000 schedules, a fifth to a third feed their last report back in (some
    with --include-final), some read a DataFrame or a Parquet file instead of the CSV, some
    run `verify` or `preflight` after the chain, and a fifth size their window by Gradient2."""
    drawn = [Schedule.draw(seed) for seed in range(2000)]
    fed = [s for s in drawn if s.feedback]
    assert 400 <= len(fed) <= 600
    assert 100 <= sum(s.feedback == "include_final" for s in fed) <= len(fed) - 100
    assert sum(s.input_form == "frame" for s in drawn) >= 100
    assert sum(s.input_form == "parquet" for s in drawn) >= 100
    assert sum(s.verify for s in drawn) >= 300 and sum(s.preflight for s in drawn) >= 250
    assert 300 <= sum(s.settings.concurrency_algorithm == "gradient2" for s in drawn) <= 500
    assert "fed back in with --include-final" in next(
        s for s in drawn if s.feedback == "include_final").describe()


def test_the_new_paths_leave_every_earlier_draw_as_it_was() -> None:
    """The user paths come from their own generator, so every field drawn before them is as
    it was and a regression seed still means what it meant: the schedules of seeds 0-299,
    described without the paths line, hash as they did before the paths were added."""
    text = "\n".join("\n".join(line for line in Schedule.draw(seed).describe().splitlines()
                               if not line.startswith("  input:")) for seed in range(300))
    assert hashlib.sha256(text.encode()).hexdigest() == (
        "a55fc35efb659d616fead5725359bea2d20f8e164a7931865e885411b6237a3d")


def test_oracle_catches_a_cancelled_invoice_reported_failed_when_fed_back(
        tmp_path: Path) -> None:
    """Invoices cancelled before the run, half of them refused with a retryable
    `success: false` and --max-attempts 1: the fed-back run sends those again, Zuora refuses
    them for their state and the read says Cancelled. A runner that then reports `failed`
    instead of `skipped` is caught; the real one passes."""
    schedule = _fed_back(17, tuple(f"INV{n}CANCELLED" for n in range(20)),
                         faults=(("retryable_false", 0.5),),
                         settings=dataclasses.replace(Schedule.draw(17).settings,
                                                      max_attempts=1))
    runners: list[Runner] = []

    def skipped_as_failed(runner: Runner) -> None:
        runners.append(runner)
        if len(runners) == 1:
            return  # the chain's run is the real one; the fed-back run's is not
        read = runner.rows.outcomes.read

        def failed(job: Any, state: Any, invoice: Any, status: Any, message: str) -> Outcome:
            wrong = Status.FAILED if status == Status.SKIPPED else status
            return read(job, state, invoice, wrong, message)
        runner.rows.outcomes.read = failed  # type: ignore[method-assign]

    control, mutant = tmp_path / "control", tmp_path / "mutant"
    control.mkdir()
    mutant.mkdir()
    assert run_schedule(schedule, control).ok
    result = run_schedule(schedule, mutant, skipped_as_failed)
    assert result.runs == 2
    assert any("fed-back run" in v and "failed and not in doubt, but its invoice was "
               "cancelled" in v for v in result.violations), result.explain(schedule)


def test_oracle_catches_final_failures_sent_again(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows Zuora refused for good (invoice not found) are left out when the report is fed
    back in, and the plan counts them; a loader that leaves none out is caught twice: the
    plan's count, and a cancel sent for each."""
    keys = tuple(f"INV{n}NOTFOUND" if n % 3 == 0 else f"INV{n}" for n in range(12))
    schedule = _fed_back(18, keys)
    control, mutant = tmp_path / "control", tmp_path / "mutant"
    control.mkdir()
    mutant.mkdir()
    assert run_schedule(schedule, control).ok
    monkeypatch.setattr(earlier_report, "final_failure", lambda values: False)
    result = run_schedule(schedule, mutant)
    assert any("the plan leaves out 0 final failures, but the earlier report has 4" in v
               for v in result.violations), result.explain(schedule)
    assert sum("a final failure left out, was sent a cancel" in v
               for v in result.violations) == 4


def test_include_final_sends_the_final_failures_again(tmp_path: Path) -> None:
    """With --include-final the fed-back run sends the not-found rows again (four more
    cancels than without it), and every promise holds both ways."""
    keys = tuple(f"INV{n}NOTFOUND" if n % 3 == 0 else f"INV{n}" for n in range(12))
    (tmp_path / "rerun").mkdir()
    (tmp_path / "final").mkdir()
    rerun = run_schedule(_fed_back(19, keys), tmp_path / "rerun")
    again = run_schedule(_fed_back(19, keys, feedback="include_final"), tmp_path / "final")
    assert rerun.ok and again.ok, (rerun.explain(), again.explain())
    assert again.requests - rerun.requests == 4


def test_oracle_catches_a_dataframe_read_without_its_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DataFrame's rows are numbered by its index labels (0, 1, ...); a loader that numbers
    them by position from 1, as for a Parquet file, is caught: the report's rows are not the
    input's."""
    schedule = _quiet(20, keys=tuple(f"INV{n}" for n in range(5)), reasons=("02",) * 5,
                      references=("",) * 5, interrupt=None, token_refusals=(),
                      input_form="frame")
    control, mutant = tmp_path / "control", tmp_path / "mutant"
    control.mkdir()
    mutant.mkdir()
    assert run_schedule(schedule, control).ok
    load_frame = frames.load_frame

    def positional(frame: Any, options: Any, numbers_as_text: bool = False,
                   source: Path | None = None) -> Any:
        return load_frame(frame, options, numbers_as_text, source or Path("frame.parquet"))

    monkeypatch.setattr(frames, "load_frame", positional)
    result = run_schedule(schedule, mutant)
    assert any("not every input row once" in v for v in result.violations), (
        result.explain(schedule))


def _verified(seed: int, rows: int, **changes: Any) -> Schedule:
    """A quiet schedule of `rows` plain invoices, `verify` after the chain."""
    return _quiet(seed, keys=tuple(f"INV{n}" for n in range(rows)), reasons=("02",) * rows,
                  references=("",) * rows, interrupt=None, token_refusals=(),
                  **{"verify": True, **changes})


def test_oracle_catches_verify_reading_past_the_concurrency(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`verify` reads under the run's limits: a reader that takes 30 places when
    --concurrency says 2 is caught in verify's own run (the chain's is the real one)."""
    schedule = _verified(21, 30, latency=0.5, settings=dataclasses.replace(
        Schedule.draw(21).settings, concurrency=2, rate=None))
    control, mutant = tmp_path / "control", tmp_path / "mutant"
    control.mkdir()
    mutant.mkdir()
    checked = run_schedule(schedule, control)
    assert checked.ok and checked.runs == 1, checked.explain(schedule)
    real = readonly.limits_for

    def greedy(settings: Settings, target: Target) -> Limits:
        return real(dataclasses.replace(settings, concurrency=30), target)

    monkeypatch.setattr(readonly, "limits_for", greedy)
    result = run_schedule(schedule, mutant)
    assert any(v.startswith("run 1: ") and "past --concurrency 2" in v
               for v in result.violations), result.explain(schedule)
    assert not [v for v in result.violations if v.startswith("run 0: ")]


def test_oracle_catches_verify_losing_a_row(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`verify` rewrites the report with every row once; one that drops the last row is
    caught, and the states it wrote are the world's (settled ones equal, CancelFailed rows
    `cancel_failed`)."""
    schedule = _verified(22, 8, cancel_delay=1.0, cancel_failed_rate=0.5)
    control, mutant = tmp_path / "control", tmp_path / "mutant"
    control.mkdir()
    mutant.mkdir()
    assert run_schedule(schedule, control).ok
    written = (control / "verified.csv").read_text("utf-8-sig")
    assert "cancel_failed" in written and "Cancelled" in written
    write_report = verify.write_report

    def one_less(path: Path, columns: list[str], rows: list[Any], *args: Any,
                 **kwargs: Any) -> Any:
        return write_report(path, columns, rows[:-1], *args, **kwargs)

    monkeypatch.setattr(verify, "write_report", one_less)
    result = run_schedule(schedule, mutant)
    assert "verify's output does not have every row of the report once, in order" in (
        result.violations), result.explain(schedule)


def test_oracle_catches_preflight_calling_a_cancelled_invoice_cancelable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`preflight --check-invoices` after the chain reads the same world without sending a
    cancel; one whose verdict ignores the e-invoice status calls the invoices the chain just
    cancelled `cancelable`, and is caught."""
    schedule = _verified(23, 6, verify=False, preflight=True)
    control, mutant = tmp_path / "control", tmp_path / "mutant"
    control.mkdir()
    mutant.mkdir()
    checked = run_schedule(schedule, control)
    assert checked.ok, checked.explain(schedule)
    plan = (control / "preflight.csv").read_text("utf-8-sig")
    assert plan.count("already_cancelled_or_in_progress") == 6
    monkeypatch.setattr(preflight, "verdict_of", lambda state: (preflight.CANCELABLE, ""))
    result = run_schedule(schedule, mutant)
    assert sum("cancelable, but the invoice was cancelled" in v
               for v in result.violations) == 6, result.explain(schedule)


def test_a_fed_back_run_is_judged_on_its_own_requests() -> None:
    """Seed 596 (5,000-seed search): the oracle took preflight's read after the fed-back run
    for the fed-back run's own and called its `failed` row (a refusal whose read met a 500)
    untrue; the fed-back run's promises now look at its own processes only."""
    result = check_seed(596)
    assert not [v for v in result.violations if "fed-back run" in v], result.explain()


def test_a_fed_back_row_read_while_its_cancel_is_processing_may_be_skipped() -> None:
    """Seed 2167 (5,000-seed search): a cancel of the chain landed after the client gave up,
    and the fed-back run read the invoice while CancelProcessing: `skipped` is true, though
    the tax authority refused it later; the oracle no longer calls it a lie."""
    result = check_seed(2167)
    assert not [v for v in result.violations if "fed-back run" in v], result.explain()


def test_reads_end_when_the_token_is_refused_for_good_mid_read() -> None:
    """Found by the search (seeds 3163, 4175, 4837): a reader worker that died (its process
    crashed, or its token was refused for good) left `InvoiceReads.read` waiting forever to
    feed a full queue. Now the error ends the read: 100 invoices, two readers, the token
    revoked after 2 s and the token endpoint refusing the client from 1 s on."""
    schedule = _quiet(24, latency=0.5, token_ttl=3600.0, token_lifetime=2.0,
                      token_refusals=((1.0, 600.0, "invalid_client"),),
                      settings=dataclasses.replace(Schedule.draw(24).settings, concurrency=2,
                                                   rate=None))
    loop = VirtualLoop()
    world = World(schedule, loop)

    async def read_all() -> dict[int, Any]:
        client = world.connect()
        await client.authenticate()
        reads = InvoiceReads(client, limits_for(schedule.settings, Target("", "simulator")),
                             clock=LoopClock(loop), rng=random.Random(24))
        return await reads.read((n, f"INV{n}") for n in range(100))
    try:
        with pytest.raises(AuthenticationError):
            loop.run_until_complete(read_all())
    finally:
        loop.close()
    assert len([r for r in world.requests if r.kind == "read"]) < 100


@pytest.mark.parametrize("seed", [3163, 4175, 4837])
def test_a_crash_during_preflight_ends_it(seed: int) -> None:
    """Seeds 3163, 4175 and 4837 (5,000-seed search): the process died during preflight's
    reads, and the reader hung on its queue instead of ending."""
    result = check_seed(seed)
    assert not [v for v in result.violations if "hangs" in v], result.explain()
