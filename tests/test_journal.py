"""The write-ahead journal: what a resume reads back is what the run wrote."""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path

import pytest

from batch_cancel.model import CancelJob, Outcome, Status
from batch_cancel.record import journal as journal_module
from batch_cancel.record.journal import FSYNC_EVERY, Journal, read_journal


def test_every_outcome_field_survives_the_journal(tmp_path: Path) -> None:
    """An outcome read back from the journal equals the one written, field by field."""
    outcome = Outcome(row=7, status=Status.FAILED, http_status=500, error_code="53100020",
                      error_message="ünïcode, \"quoted\"\nand a newline", attempts=3,
                      track_id="bc-run-7", zuora_request_id="req-1", process_id="proc-1",
                      finished_at="2026-11-24T20:00:00.000Z", in_doubt=False)
    path = tmp_path / "j.jsonl"
    with Journal(path, {"run_id": "r"}) as journal:
        journal.sent(CancelJob(7, "INV-7", "02"), 1, "bc-run-7")
        journal.record(outcome)
    state = read_journal(path)
    assert state.finished[7] == outcome
    written = json.loads(path.read_text(encoding="utf-8").splitlines()[-1])
    assert list(written) == [  # the journal format: keys and their order
        "event", "row", "status", "http_status", "error_code", "error_message", "attempts",
        "track_id", "zuora_request_id", "process_id", "finished_at", "in_doubt",
        "ever_in_doubt"]
    # every field but the owner of a duplicate, a row that is never sent, so never journaled
    assert {f.name for f in fields(Outcome)} - set(written) == {"duplicate_of"}


def test_a_sent_record_reaches_the_file_before_the_request_goes_out(tmp_path: Path) -> None:
    """`sent` is flushed at once: a process killed right after it leaves the row in doubt."""
    path = tmp_path / "j.jsonl"
    journal = Journal(path, {"run_id": "r"})
    journal.record(Outcome(row=2, status=Status.SUCCEEDED, attempts=1))
    journal.sent(CancelJob(3, "INV-3", "02"), 1, "t")
    on_disk = read_journal(path)  # read while the journal is still open
    assert 2 in on_disk.finished and 3 in on_disk.in_doubt
    journal.close()


async def test_in_a_run_the_request_waits_until_its_sent_record_is_with_the_os(
        tmp_path: Path) -> None:
    """Records of one loop turn share one write, and every request waits for it."""
    path = tmp_path / "j.jsonl"
    journal = Journal(path, {"run_id": "r"})
    waits = [journal.sent(CancelJob(n, f"INV-{n}", "02"), 1, "t") for n in (2, 3, 4)]
    assert all(wait is not None for wait in waits)
    for wait in waits:
        assert wait is not None
        await wait
        assert {2, 3, 4} <= read_journal(path).in_doubt
    journal.close()


def test_the_journal_reaches_the_disk_every_fsync_every_records_and_on_close(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush only hands records to the OS; an fsync of the journal's own file follows every
    FSYNC_EVERY records and the close, so a power cut loses at most one batch."""
    path = tmp_path / "j.jsonl"
    synced: list[int] = []  # journal records on disk, counted at each fsync of its file
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        real_fsync(fd)
        if os.path.samestat(os.fstat(fd), path.stat()):
            synced.append(len(path.read_text(encoding="utf-8").splitlines()))

    monkeypatch.setattr(journal_module.os, "fsync", counting_fsync)
    journal = Journal(path, {"run_id": "r"})  # the `run` record is the first of the batch
    for n in range(FSYNC_EVERY - 2):
        journal.sent(CancelJob(n, f"INV-{n}", "02"), 1, "t")
    assert synced == []
    journal.sent(CancelJob(-1, "INV-LAST", "02"), 1, "t")
    assert synced == [FSYNC_EVERY]
    journal.record(Outcome(row=-1, status=Status.SUCCEEDED, attempts=1))
    journal.close()
    assert synced == [FSYNC_EVERY, FSYNC_EVERY + 1]


def test_a_journal_record_with_keys_it_does_not_know_still_reads_back(tmp_path: Path) -> None:
    """Keys that are not journal fields (a later version's, say) are ignored, not fatal."""
    path = tmp_path / "j.jsonl"
    path.write_text('{"event": "run", "run_id": "r"}\n'
                    '{"event": "outcome", "row": 4, "status": "succeeded", "attempts": 1, '
                    '"some_later_key": 3}\n', encoding="utf-8")
    assert read_journal(path).finished[4] == Outcome(4, Status.SUCCEEDED, attempts=1)
