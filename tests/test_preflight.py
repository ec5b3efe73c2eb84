"""preflight: the plan before a run, with each invoice's state read from Zuora."""

from __future__ import annotations

from batch_cancel.config import Settings
from batch_cancel.model import Status
from batch_cancel.preflight import NotChecked, estimate
from tests.helpers import (
    PAUSE,
    limited_to,
    read_report,
    reads_inside_a_pause,
    resent_inside_own_pause,
)

ROWS = [["Invoice Number", "Reason"], ["INV00001", "2"], ["INV00002", "2"],
        ["INV-CANCELLED-1", "2"], ["INV-NOTFOUND-1", "2"], ["INV 5", "2"]]


def test_preflight_reads_each_invoice_and_cancels_nothing(sim, cli, make_csv) -> None:
    """Verdicts per row, counts, an estimate; GETs only, never a cancel."""
    path = make_csv(ROWS)
    report = path.with_name("plan.csv")
    result = cli("preflight", str(path), "--check-invoices", "--base-url", sim.url,
                 "--report", str(report), env=sim.env)
    assert result.exit_code == 1, result.output  # "INV 5" is invalid
    assert sim.stats.cancel_requests == 0 and sim.stats.invoice_reads == 4
    assert "Would send 2 cancels" in result.output
    rows = {r["invoice_key"]: r for r in read_report(report)}
    assert rows["INV00001"]["preflight"] == "cancelable"
    assert rows["INV00001"]["status"] == "not_attempted"
    assert rows["INV-CANCELLED-1"]["preflight"] == "already_cancelled_or_in_progress"
    assert rows["INV-CANCELLED-1"]["status"] == "skipped"
    assert rows["INV-NOTFOUND-1"]["preflight"] == "not_found"
    assert rows["INV-NOTFOUND-1"]["status"] == "failed"
    assert rows["INV 5"]["status"] == "invalid"


def test_a_preflight_report_feeds_run_with_only_not_attempted(sim, cli, make_csv) -> None:
    """`run PLAN --only not_attempted` sends exactly the cancelable rows."""
    path = make_csv(ROWS)
    plan = path.with_name("plan.csv")
    cli("preflight", str(path), "--check-invoices", "--base-url", sim.url, "--report", str(plan),
        env=sim.env)
    result = cli("run", str(plan), "--only", "not_attempted", "--base-url", sim.url,
                 "--report", str(path.with_name("out.csv")), "--no-progress", env=sim.env)
    # the rows preflight found not cancelable stay as they were, outside this run's scope
    assert result.exit_code == 0, result.output
    assert sorted(sim.stats.accepted_cancels) == ["INV00001", "INV00002"]
    assert sim.stats.cancel_requests == 2


def test_preflight_without_checks_needs_no_credentials_and_sends_nothing(sim, cli, make_csv
                                                                         ) -> None:
    """Validation alone: no request at all."""
    result = cli("preflight", str(make_csv(ROWS)), "--base-url", sim.url)
    assert result.exit_code == 1, result.output  # "INV 5" is invalid
    assert "Would send 4 cancels" in result.output
    assert sim.stats.requests == []


def test_preflight_simulate_reads_the_built_in_simulator(cli, make_csv) -> None:
    """`preflight --simulate --check-invoices` needs no credentials and no server of ours."""
    path = make_csv(ROWS)
    report = path.with_name("plan.csv")
    result = cli("preflight", str(path), "--simulate", "--check-invoices",
                 "--report", str(report), env={"ZUORA_CLIENT_ID": "", "ZUORA_CLIENT_SECRET": ""})
    assert result.exit_code == 1, result.output  # "INV 5" is invalid
    assert "Target: simulator" in result.output and "Would send 2 cancels" in result.output
    verdicts = {r["invoice_key"]: r["preflight"] for r in read_report(report)}
    assert verdicts["INV00001"] == "cancelable"
    assert verdicts["INV-CANCELLED-1"] == "already_cancelled_or_in_progress"
    assert verdicts["INV-NOTFOUND-1"] == "not_found"


def test_preflight_sends_zuoras_headers_on_every_read(sim, cli, make_csv) -> None:
    """--entity-ids, --org-ids and --zuora-version reach every invoice read."""
    result = cli("preflight", str(make_csv(ROWS)), "--check-invoices", "--base-url", sim.url,
                 "--entity-ids", "E-1", "--org-ids", "O-1", "--zuora-version", "211.0",
                 env=sim.env)
    assert result.exit_code == 1, result.output
    reads = [r for r in sim.stats.requests if r.method == "GET"]
    assert len(reads) == 4
    for read in reads:
        assert (read.headers["Zuora-Entity-Ids"], read.headers["Zuora-Org-Ids"],
                read.headers["Zuora-Version"]) == ("E-1", "O-1", "211.0")


MANY = [["Invoice Number", "Reason"], *[[f"INV{n:05d}", "2"] for n in range(1, 49)]]


def test_preflight_under_429s_reads_every_row_and_holds_off_during_each_pause(
        sim, cli, make_csv) -> None:
    """A tenant answering 429 with Retry-After: every row is read all the same (again after
    the pause), no read reaches Zuora inside a pause, at most --concurrency in flight."""
    limited_to(sim, 12)
    path = make_csv(MANY)
    report = path.with_name("plan.csv")
    result = cli("preflight", str(path), "--check-invoices", "--base-url", sim.url,
                 "--concurrency", "4", "--report", str(report), env=sim.env)
    assert result.exit_code == 0, result.output
    assert "Would send 48 cancels" in result.output
    assert {r["preflight"] for r in read_report(report)} == {"cancelable"}
    assert any(r.status == 429 for r in sim.stats.requests if r.method == "GET")
    assert sim.stats.cancel_requests == 0
    early = resent_inside_own_pause(sim.stats, PAUSE) + reads_inside_a_pause(sim.stats.requests)
    assert not early, early
    assert sim.stats.max_in_flight <= 4


def test_preflight_reads_are_paced_at_the_rate(sim, cli, make_csv) -> None:
    """At --rate 3 against a tenant allowing 6 a second, no read meets a 429: the reads are
    paced, not sent in a burst (unpaced, the first 6 would use the window up at once)."""
    limited_to(sim, 6)
    path = make_csv(MANY[:9])
    result = cli("preflight", str(path), "--check-invoices", "--base-url", sim.url,
                 "--rate", "3", "--report", str(path.with_name("plan.csv")), env=sim.env)
    assert result.exit_code == 0, result.output
    reads = [r for r in sim.stats.requests if r.method == "GET"]
    assert len(reads) == 8 and {r.status for r in reads} == {200}


def policy_of_300_a_second(sim) -> None:
    """The tenant advertises `RateLimit-Limit: 18000, 18000;w=60` (300/s) on every answer."""
    sim.config.rate_limit = 18_000
    sim.config.rate_window = 60.0


def test_preflight_estimates_at_the_pace_learned_from_the_reads(sim, cli, make_csv) -> None:
    """The reads' answers carry the tenant's policy: the estimate and the plan's Pace line use
    --tenant-share (0.5 by default) of it, as a run would, not the base URL's 100/s."""
    policy_of_300_a_second(sim)
    path = make_csv(MANY[:9])
    result = cli("preflight", str(path), "--check-invoices", "--base-url", sim.url,
                 "--report", str(path.with_name("plan.csv")), env=sim.env)
    assert result.exit_code == 0, result.output
    assert ("Pace: 150/s (tenant_policy), learned from the answers to the invoice reads"
            in result.output)
    assert "Would send 8 cancels; estimated" in result.output
    assert result.output.split("Would send 8 cancels")[1].splitlines()[0].endswith(", 150/s")


def test_preflight_pace_keeps_rate_as_the_ceiling(sim, cli, make_csv) -> None:
    """--rate below the tenant's share is the pace the estimate assumes, named as the flag."""
    policy_of_300_a_second(sim)
    path = make_csv(MANY[:5])
    result = cli("preflight", str(path), "--check-invoices", "--base-url", sim.url,
                 "--rate", "40", "--tenant-share", "1",
                 "--report", str(path.with_name("plan.csv")), env=sim.env)
    assert result.exit_code == 0, result.output
    assert ("Pace: 40/s (rate_flag): --rate, below what the answers to the invoice reads allow"
            in result.output)


def test_preflight_pace_stays_the_default_when_no_answer_names_a_policy(sim, cli, make_csv
                                                                      ) -> None:
    """No RateLimit header on the reads' answers: the base URL's default, said as such."""
    path = make_csv(MANY[:5])
    result = cli("preflight", str(path), "--check-invoices", "--base-url", sim.url,
                 "--report", str(path.with_name("plan.csv")), env=sim.env)
    assert result.exit_code == 0, result.output
    assert ("Pace: 100/s (target_default): no answer to the invoice reads named a RateLimit "
            "policy" in result.output)


def test_preflight_without_reads_says_the_pace_was_not_learned(sim, cli, make_csv) -> None:
    """Without --check-invoices nothing is read: the plan names the starting pace only."""
    policy_of_300_a_second(sim)
    result = cli("preflight", str(make_csv(MANY[:5])), "--base-url", sim.url,
                 "--tenant-share", "1")
    assert result.exit_code == 0, result.output
    assert ("Pace: 100/s (target_default), not learned: no invoice read (--check-invoices "
            "reads them)" in result.output)
    assert sim.stats.requests == []


def test_the_estimate_is_bound_by_the_pace() -> None:
    """At a fast tenant (latency 1 ms, 20 in flight: 20,000/s) the pace sets the duration."""
    assert estimate(300, Settings(), 150.0, 0.001) == 2.0
    assert estimate(300, Settings(), 100.0, 0.001) == 3.0


def test_a_plan_makes_each_rows_outcome_only_when_the_report_asks() -> None:
    """The dry run's outcomes: rows to send (any order of numbers, as a DataFrame's index
    may be) are `not_attempted`, valid, not checked; any other row has none, so the report
    writes the loader's verdict for it."""
    plan = NotChecked(iter([7, 3, 12]))
    assert len(plan) == 3 and sorted(plan) == [3, 7, 12]
    outcome = plan[7]
    assert (outcome.row, outcome.status, outcome.error_message) == (
        7, Status.NOT_ATTEMPTED, "valid; not checked against Zuora")
    assert plan.get(4) is None and plan.get(13) is None and plan.get(0) is None
    assert 12 in plan and 2 not in plan
