"""The journal's promises, one by one: owner-only, appended to, flushed before a request
leaves, an outcome flushed within its delay, fsynced off the loop, a disk-full flush failing
the requests that wait, and a replay in which the last record of each row decides."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import threading
from pathlib import Path

import pytest

from batch_cancel.model import CancelJob, Outcome, Status
from batch_cancel.record import journal as journal_module
from batch_cancel.record.journal import (
    FSYNC_EVERY,
    OUTCOME_FLUSH_DELAY,
    Journal,
    check_same_tenant,
    read_journal,
    recorded_tenant,
)
from batch_cancel.record.paths import ReportError
from tests.helpers import FakeClock, disk_full


def lines_of(path: Path) -> list[dict[str, object]]:
    """The journal's records as the OS has them now."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def job(row: int) -> CancelJob:
    """One cancel of row `row`."""
    return CancelJob(row, f"INV-{row}", "02")


def test_a_journal_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """Journals name invoices and tenants: mode 0600, whatever the umask allows."""
    path = tmp_path / "j.jsonl"
    Journal(path, {"run_id": "r"}).close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_journal_reopened_by_a_resume_is_appended_to(tmp_path: Path) -> None:
    """A resume writes on after the first run's records; the first run's header stays the
    journal's header."""
    path = tmp_path / "j.jsonl"
    with Journal(path, {"run_id": "first"}) as journal:
        journal.sent(job(2), 1, "t-2")
    with Journal(path, {"run_id": "second"}) as journal:
        journal.record(Outcome(2, Status.SUCCEEDED, attempts=1))
    assert [(r["event"], r.get("run_id")) for r in lines_of(path)] == [
        ("run", "first"), ("sent", None), ("run", "second"), ("outcome", None)]
    state = read_journal(path)
    assert state.header == {"event": "run", "run_id": "first"}
    assert state.is_finished(2) and state.in_doubt == set()


def test_two_journals_on_one_file_never_write_over_each_other(tmp_path: Path) -> None:
    """Every write goes to the end of the file as it is then (O_APPEND), so two runs left
    on the same report by mistake interleave their records and lose none."""
    path = tmp_path / "j.jsonl"
    first = Journal(path, {"run_id": "a"})
    second = Journal(path, {"run_id": "b"})
    first.sent(job(2), 1, "t")
    second.sent(job(3), 1, "t")
    first.sent(job(4), 1, "t")
    first.close()
    second.close()
    assert [(r["event"], r.get("run_id", r.get("row"))) for r in lines_of(path)] == [
        ("run", "a"), ("run", "b"), ("sent", 2), ("sent", 3), ("sent", 4)]


def test_sent_and_withdrawn_records_have_their_keys_and_a_withdrawn_sent_is_unsent(
        tmp_path: Path) -> None:
    """Outside a loop a `sent` record is flushed at once (nothing to wait for); `withdrawn`
    voids it: the row reads back as never sent, neither in doubt nor finished."""
    path = tmp_path / "j.jsonl"
    journal = Journal(path, {"run_id": "r"})
    assert journal.sent(job(3), 2, "bc-3") is None
    assert lines_of(path)[1] == {"event": "sent", "row": 3, "invoice_key": "INV-3",
                                 "attempt": 2, "track_id": "bc-3"}
    journal.withdrawn(job(3), 2)
    journal.close()
    assert lines_of(path)[2] == {"event": "withdrawn", "row": 3, "attempt": 2}
    state = read_journal(path)
    assert (state.in_doubt, state.doubted, state.finished) == (set(), set(), {})


async def test_sent_records_of_one_turn_are_written_together_when_the_turn_ends(
        tmp_path: Path) -> None:
    """In a loop nothing is written until the turn ends; then one write hands over every
    `sent` record of that turn and all their requests may go; a next turn starts anew."""
    path = tmp_path / "j.jsonl"
    journal = Journal(path, {"run_id": "r"})
    first = [journal.sent(job(n), 1, "t") for n in (2, 3)]
    assert len(lines_of(path)) == 1  # the header only: the requests must wait
    assert all(wait is not None and not wait.done() for wait in first)
    for wait in first:
        assert wait is not None
        await wait
    assert [r.get("row") for r in lines_of(path)] == [None, 2, 3]
    second = journal.sent(job(4), 1, "t")
    assert second is not None and not second.done()
    await second
    assert [r.get("row") for r in lines_of(path)] == [None, 2, 3, 4]
    journal.close()


async def test_closing_with_a_turn_under_way_writes_it_and_lets_its_requests_go(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A close before the turn ends still hands the `sent` records over and releases their
    waiters; a second close does nothing."""
    path = tmp_path / "j.jsonl"
    journal = Journal(path, {"run_id": "r"})
    wait = journal.sent(job(2), 1, "t")
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        journal.close()
        assert wait is not None
        await wait
        await asyncio.sleep(0)  # the turn's own end, scheduled before the close, runs now
    journal.close()
    assert [r["event"] for r in lines_of(path)] == ["run", "sent"]
    assert caplog.records == []  # and finds nothing left to do: no error in a callback


async def test_a_flush_that_fails_fails_the_requests_of_its_turn(tmp_path: Path) -> None:
    """Disk full while a turn's `sent` records are handed over: every waiting request gets
    the error, so none goes out unrecorded."""
    path = tmp_path / "j.jsonl"
    journal = Journal(path, {"run_id": "r"})
    with disk_full(path):
        waits = [journal.sent(job(n), 1, "t") for n in (2, 3)]
        for wait in waits:
            assert wait is not None
            with pytest.raises(OSError) as caught:
                await wait
            assert caught.value.errno == errno.ENOSPC
    journal.close()  # the records still buffered reach the file once there is room
    assert [r.get("row") for r in lines_of(path)] == [None, 2, 3]


def test_an_outcome_is_flushed_once_its_delay_has_passed_since_the_last_flush(
        tmp_path: Path) -> None:
    """An outcome waits for the next flush unless more than OUTCOME_FLUSH_DELAY has passed
    since the last one (the injected clock decides; exactly the delay is not more)."""
    clock = FakeClock(start=0.0)
    path = tmp_path / "j.jsonl"
    journal = Journal(path, {"run_id": "r"}, clock=clock.now)
    clock.t = OUTCOME_FLUSH_DELAY
    journal.record(Outcome(2, Status.SUCCEEDED, attempts=1))
    assert len(lines_of(path)) == 1
    clock.t = 0.25
    journal.record(Outcome(3, Status.SUCCEEDED, attempts=1))
    assert [r.get("row") for r in lines_of(path)] == [None, 2, 3]
    clock.t = 0.375  # 0.125 after the last flush
    journal.record(Outcome(4, Status.SUCCEEDED, attempts=1))
    assert len(lines_of(path)) == 3
    journal.sent(job(5), 1, "t")  # a `sent` record takes the waiting outcome along
    assert [r.get("row") for r in lines_of(path)] == [None, 2, 3, 4, 5]
    journal.close()


class FsyncSpy:
    """os.fsync as the journal calls it: the thread it runs on and the journal's records on
    disk then; the first `fail` calls raise EIO after recording themselves."""

    def __init__(self, path: Path, fail: int = 0, hold: float = 0.0) -> None:
        self.path = path
        self.fail = fail
        self.hold = hold  # seconds a call on the journal's thread takes before it records
        self.calls: list[tuple[str, int]] = []
        self.called = threading.Event()
        self.real = os.fsync

    def __call__(self, fd: int) -> None:
        self.real(fd)
        if not os.path.samestat(os.fstat(fd), self.path.stat()):
            return
        if threading.current_thread() is not threading.main_thread():
            threading.Event().wait(self.hold)
        self.calls.append((threading.current_thread().name,
                           len(self.path.read_text(encoding="utf-8").splitlines())))
        self.called.set()
        if len(self.calls) <= self.fail:
            raise OSError(errno.EIO, "fsync failed")


async def test_in_a_run_the_fsync_runs_on_the_journals_own_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop does not wait for the disk: a batch's fsync runs on the journal's thread;
    the close's own fsync runs where close is called, after it."""
    path = tmp_path / "j.jsonl"
    spy = FsyncSpy(path)
    monkeypatch.setattr(journal_module.os, "fsync", spy)
    journal = Journal(path, {"run_id": "r"})
    for n in range(FSYNC_EVERY - 1):
        journal.sent(job(n), 1, "t")
    assert spy.calls == []
    wait = journal.sent(job(-1), 1, "t")
    assert wait is not None
    await wait
    journal.close()
    here = threading.current_thread().name
    assert [(name.startswith("journal-fsync"), lines) for name, lines in spy.calls] == [
        (True, FSYNC_EVERY + 1), (False, FSYNC_EVERY + 1)]
    assert spy.calls[1][0] == here
    assert FSYNC_EVERY == 200  # the README: "fsync batched every 200 records"


async def test_close_waits_for_the_fsync_under_way_before_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """However slow the disk, the batch's fsync on the journal's thread is over before the
    close syncs and closes the file."""
    path = tmp_path / "j.jsonl"
    spy = FsyncSpy(path, hold=0.3)
    monkeypatch.setattr(journal_module.os, "fsync", spy)
    journal = Journal(path, {"run_id": "r"})
    waits = [journal.sent(job(n), 1, "t") for n in range(FSYNC_EVERY)]
    assert waits[-1] is not None
    await waits[-1]
    journal.close()
    assert [(name.startswith("journal-fsync"), lines) for name, lines in spy.calls] == [
        (True, FSYNC_EVERY + 1), (False, FSYNC_EVERY + 1)]


async def test_a_failed_fsync_fails_the_next_batch_of_requests(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An fsync that fails on the journal's thread is not lost: the next batch's flush
    raises it, so those requests do not go out on a journal that cannot reach the disk."""
    path = tmp_path / "j.jsonl"
    spy = FsyncSpy(path, fail=1)
    monkeypatch.setattr(journal_module.os, "fsync", spy)
    journal = Journal(path, {"run_id": "r"})
    row = 0
    for _ in range(FSYNC_EVERY - 1):
        row += 1
        journal.sent(job(row), 1, "t")
    wait = journal.sent(job(0), 1, "t")
    assert wait is not None
    await wait
    assert await asyncio.to_thread(spy.called.wait, 30)
    failed: list[int] = []
    for _ in range(200):  # until the thread has set the failure (at the first try, mostly)
        await asyncio.sleep(0.05)
        for _ in range(FSYNC_EVERY):
            row += 1
            wait = journal.sent(job(row), 1, "t")
        assert wait is not None
        try:
            await wait
        except OSError as exc:
            failed.append(exc.errno or 0)
            break
    assert failed == [errno.EIO]
    assert len(spy.calls) == 1  # no fsync was started over the failed one
    journal.close()


def test_a_replay_lets_the_last_record_of_each_row_decide(tmp_path: Path) -> None:
    """The first header counts; lines that are not records of a row (torn, not objects,
    unknown events, a row that is not a number) are skipped; then per row the last record:
    `sent` is in doubt, `withdrawn` never sent, an outcome finished unless in doubt or
    `not_attempted`; an outcome ever in doubt is remembered as doubted."""
    path = tmp_path / "j.jsonl"
    records: list[object] = [
        {"event": "run", "run_id": "first"},
        {"event": "run", "run_id": "second"},
        [1, 2], 7, "text",
        {"event": "sent", "row": "9", "attempt": 1},
        {"event": "checked", "row": 10},
        {"event": "sent", "row": 2, "attempt": 1},
        {"event": "sent", "row": 3, "attempt": 1},
        {"event": "withdrawn", "row": 3, "attempt": 1},
        {"event": "outcome", "row": 4, "status": "succeeded", "ever_in_doubt": True},
        {"event": "outcome", "row": 5, "status": "failed", "in_doubt": True},
        {"event": "outcome", "row": 6, "status": "not_attempted"},
        {"event": "outcome", "row": 7, "status": "failed"},
        {"event": "sent", "row": 7, "attempt": 2},
        {"event": "outcome", "row": 8, "status": "skipped"},
    ]
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(text + '{"event": "outcome", "row": 11, "stat', encoding="utf-8")
    state = read_journal(path)
    assert state.header == {"event": "run", "run_id": "first"}
    assert sorted(state.finished) == [4, 8]
    assert state.finished[8] == Outcome(8, Status.SKIPPED)
    assert state.in_doubt == {2, 5, 7}
    assert state.doubted == {2, 4, 5, 7}
    assert [state.is_finished(row) for row in (4, 6, 11)] == [True, False, False]


def test_a_journal_without_a_header_reads_back_an_empty_one(tmp_path: Path) -> None:
    """No `run` record: the header is empty, so no tenant is recorded and any run may go on."""
    path = tmp_path / "j.jsonl"
    path.write_text('{"event": "sent", "row": 2, "attempt": 1}\n', encoding="utf-8")
    state = read_journal(path)
    assert (state.header, state.in_doubt) == ({}, {2})
    check_same_tenant(path, state.header, {"env": "production", "base_url": "https://x"}, "w")


def test_the_tenant_a_header_names_new_and_old_style() -> None:
    """A `tenant` object as text; an older header's target and base URL (no trailing
    slash); the simulator by name; nothing when no target is named."""
    assert recorded_tenant({"tenant": {"env": "sandbox", "entity_ids": 3}}) == {
        "env": "sandbox", "entity_ids": "3"}
    assert recorded_tenant({"target": "production",
                            "base_url": "https://rest.zuora.com//"}) == {
        "env": "production", "base_url": "https://rest.zuora.com"}
    assert recorded_tenant({"target": "custom"}) == {"env": "custom", "base_url": ""}
    assert recorded_tenant({"target": "simulator", "base_url": "http://x"}) == {
        "env": "simulator"}
    assert recorded_tenant({"target": "", "base_url": "https://x"}) == {}
    assert recorded_tenant({"tenant": "sandbox"}) == {}


def test_an_old_simulator_journal_read_back_names_the_simulator(tmp_path: Path) -> None:
    """The header as a resume reads it from the file (text parsed, not a literal in code)."""
    path = tmp_path / "j.jsonl"
    path.write_text('{"event": "run", "target": "simulator", "base_url": "http://127.0.0.1:1"}\n',
                    encoding="utf-8")
    assert recorded_tenant(read_journal(path).header) == {"env": "simulator"}


def test_a_journal_of_another_tenant_is_refused_and_one_of_this_tenant_is_not(
        tmp_path: Path) -> None:
    """One tenant's outcomes never carry over to another; the message names both and the
    fields they differ in."""
    journal = tmp_path / "r.csv.journal.jsonl"
    header: dict[str, object] = {"tenant": {"env": "sandbox", "base_url": "https://s"}}
    check_same_tenant(journal, header, {"env": "sandbox", "base_url": "https://s"}, "resume")
    with pytest.raises(ReportError) as caught:
        check_same_tenant(journal, header, {"env": "production", "base_url": "https://p"},
                          "resume")
    assert str(caught.value) == (
        f"resume: {journal} belongs to another tenant (sandbox https://s) than this run's "
        "(production https://p); they differ in env, base_url. Nothing was sent. For a run "
        "on this tenant, choose another --report (or pass --overwrite to replace that report "
        "and journal)")


def test_a_resume_after_a_torn_line_is_read_on_past_it(tmp_path: Path) -> None:
    """A crash tears the last line; the resume appends after it, so the torn line ends up
    in the middle: it is skipped, and the records after it count."""
    path = tmp_path / "j.jsonl"
    path.write_text('{"event": "run", "run_id": "first"}\n'
                    '{"event": "sent", "row": 2, "attempt": 1}\n'
                    '{"event": "outcome", "row": 2, "sta', encoding="utf-8")
    with Journal(path, {"run_id": "second"}) as journal:
        journal.sent(job(3), 1, "t")
        journal.record(Outcome(2, Status.SUCCEEDED, attempts=1))
    state = read_journal(path)
    assert state.header == {"event": "run", "run_id": "first"}
    assert (sorted(state.finished), state.in_doubt) == ([2], {3})


def test_every_batch_of_records_is_fsynced_not_only_the_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a loop the fsync runs at once, after each FSYNC_EVERY records."""
    path = tmp_path / "j.jsonl"
    spy = FsyncSpy(path)
    monkeypatch.setattr(journal_module.os, "fsync", spy)
    journal = Journal(path, {"run_id": "r"})
    for n in range(3 * FSYNC_EVERY - 1):
        journal.sent(job(n), 1, "t")
    assert [lines for _, lines in spy.calls] == [FSYNC_EVERY, 2 * FSYNC_EVERY, 3 * FSYNC_EVERY]
    journal.close()
