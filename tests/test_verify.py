"""verify: accepted cancels followed to the tax authority's answer, end to end."""

from __future__ import annotations

from tests.helpers import limited_to, read_report, reads_inside_a_pause, run_args

ROWS = [["Invoice Number", "Reason"], *[[f"INV{n:05d}", "2"] for n in range(1, 21)],
        ["INV-NOTFOUND-1", "2"]]


def test_verify_follows_accepted_cancels_until_cancelled_or_cancel_failed(sim, cli, make_csv
                                                                           ) -> None:
    """Succeeded rows gain e-invoice columns; CancelFailed rows become cancel_failed."""
    sim.config.cancel_delay = 0.3
    sim.config.cancel_failed_rate = 0.3
    sim.config.seed = 4
    path = make_csv(ROWS)
    report = path.with_name("r.csv")
    assert cli(*run_args(sim, path, "--report", str(report)), env=sim.env).exit_code == 1
    reads_before = sim.stats.invoice_reads
    result = cli("verify", str(report), "--base-url", sim.url, "--until", "30", env=sim.env)
    rows = read_report(report)
    by_status = {r["status"] for r in rows}
    assert result.exit_code == 1, result.output  # some ended CancelFailed
    assert "cancel_failed" in by_status and "succeeded" in by_status
    for row in rows:
        key = row["invoice_key"]
        if row["status"] == "succeeded":
            assert row["einvoice_status"] == "Cancelled" and row["verified_at"]
            assert sim.simulator.invoice_status(key) == "Cancelled"
        elif row["status"] == "cancel_failed":
            assert row["einvoice_status"] == "CancelFailed"
            assert row["einvoice_error_code"] == "TAX-301"
            assert "rejected" in row["einvoice_error_message"]
        else:
            assert row["einvoice_status"] == ""  # the failed NOTFOUND row is not read
    assert sim.stats.invoice_reads - reads_before >= 20
    assert "Verified 20 accepted cancels" in result.output

    failed = sum(r["status"] == "cancel_failed" for r in rows)
    plan = cli(*run_args(sim, report, "--only", "cancel_failed", "--dry-run",
                         "--report", str(path.with_name("again.csv"))), env=sim.env)
    assert f"To send: {failed} " in plan.output, plan.output


def test_verify_exits_0_when_every_cancel_reached_cancelled(sim, cli, make_csv) -> None:
    """All Cancelled: exit 0; the report is written again in place."""
    sim.config.cancel_delay = 0.1
    path = make_csv(ROWS[:6])
    report = path.with_name("r.csv")
    assert cli(*run_args(sim, path, "--report", str(report)), env=sim.env).exit_code == 0
    result = cli("verify", str(report), "--base-url", sim.url, "--until", "20", env=sim.env)
    assert result.exit_code == 0, result.output
    assert {r["einvoice_status"] for r in read_report(report)} == {"Cancelled"}


def test_verify_refuses_a_file_that_is_not_a_report(sim, cli, make_csv) -> None:
    """Only a batch-cancel report can be verified; nothing is read from Zuora."""
    result = cli("verify", str(make_csv(ROWS)), "--base-url", sim.url, env=sim.env)
    assert result.exit_code == 2 and "report" in result.output
    assert sim.stats.requests == []


HEADERS = ("--entity-ids", "E-1", "--org-ids", "O-1", "--zuora-version", "211.0")


def test_verify_sends_zuoras_headers_and_keeps_to_the_runs_entity(sim, cli, make_csv) -> None:
    """verify takes the run's Zuora headers; another entity than the run's is refused."""
    sim.config.cancel_delay = 0.1
    path = make_csv(ROWS[:4])
    report = path.with_name("r.csv")
    assert cli(*run_args(sim, path, "--report", str(report), *HEADERS),
               env=sim.env).exit_code == 0
    other = cli("verify", str(report), "--base-url", sim.url, "--entity-ids", "E-2",
                env=sim.env)
    assert other.exit_code == 2 and "entity" in other.output, other.output
    sent = len(sim.stats.requests)
    result = cli("verify", str(report), "--base-url", sim.url, "--until", "20", *HEADERS,
                 env=sim.env)
    assert result.exit_code == 0, result.output
    reads = [r for r in sim.stats.requests[sent:] if r.method == "GET"]
    assert len(reads) >= 3
    assert {(r.headers["Zuora-Entity-Ids"], r.headers["Zuora-Org-Ids"],
             r.headers["Zuora-Version"]) for r in reads} == {("E-1", "O-1", "211.0")}


def test_verify_simulate_reads_a_fresh_built_in_simulator(cli, make_csv) -> None:
    """`verify --simulate` needs no credentials: the simulator it starts has never seen the
    cancels, so each e-invoice is still Success (pending, exit 6)."""
    path = make_csv(ROWS[:4])
    report = path.with_name("r.csv")
    assert cli("run", str(path), "--simulate", "--no-progress", "--report",
               str(report)).exit_code == 0
    result = cli("verify", str(report), "--simulate", "--until", "0", *HEADERS,
                 env={"ZUORA_CLIENT_ID": "", "ZUORA_CLIENT_SECRET": ""})
    assert result.exit_code == 6, result.output
    assert "Verified 3 accepted cancels: Success=3" in result.output
    assert {r["einvoice_status"] for r in read_report(report)} == {"Success"}


def test_verify_under_429s_reads_every_row_and_holds_off_during_each_pause(
        sim, cli, make_csv) -> None:
    """A tenant answering 429 with Retry-After: every accepted cancel is followed to
    Cancelled all the same, no read reaches Zuora inside a pause, at most --concurrency
    reads in flight."""
    path = make_csv([ROWS[0], *[[f"INV{n:05d}", "2"] for n in range(1, 49)]])
    report = path.with_name("r.csv")
    assert cli(*run_args(sim, path, "--report", str(report)), env=sim.env).exit_code == 0
    limited_to(sim, 12)
    sent = len(sim.stats.requests)
    sim.stats.max_in_flight = 0
    result = cli("verify", str(report), "--base-url", sim.url, "--concurrency", "4",
                 "--until", "30", env=sim.env)
    assert result.exit_code == 0, result.output
    assert "Verified 48 accepted cancels: Cancelled=48" in result.output
    assert {r["einvoice_status"] for r in read_report(report)} == {"Cancelled"}
    reads = sim.stats.requests[sent:]
    assert any(r.status == 429 for r in reads)
    early = reads_inside_a_pause(reads)
    assert not early, early
    assert sim.stats.max_in_flight <= 4
