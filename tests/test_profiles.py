"""Named profiles in a TOML config file: target, limits, report folder and a secrets file."""

from __future__ import annotations

import os
from pathlib import Path

from batch_cancel.cli.commands import RUN_LIMITS
from batch_cancel.config import PROFILE_KEYS
from batch_cancel.library import LIMIT_NAMES
from tests.helpers import read_report

ROWS = [["invoice", "reason"], ["A1", "2"], ["A2", "2"]]


def write_config(tmp_path: Path, sim, secrets_mode: int = 0o600) -> Path:
    secrets = tmp_path / "zuora.secrets"
    secrets.write_text(f"ZUORA_CLIENT_ID={sim.config.client_id}\n"
                       f"ZUORA_CLIENT_SECRET={sim.config.client_secret}\n")
    os.chmod(secrets, secrets_mode)
    (tmp_path / "reports").mkdir(exist_ok=True)
    config = tmp_path / "config.toml"
    config.write_text(f"""
[profiles.nightly]
base_url = "{sim.url}"
concurrency = 3
rate = 500
track_id_prefix = "nightly"
report_folder = "{tmp_path / 'reports'}"
secrets_file = "{secrets}"
""")
    return config


def test_a_profile_supplies_target_limits_report_folder_and_credentials(sim, cli, make_csv,
                                                                        tmp_path: Path) -> None:
    """`--config F --profile P run INPUT` needs no other flag and no env var."""
    config = write_config(tmp_path, sim)
    path = make_csv(ROWS)
    result = cli("--config", str(config), "--profile", "nightly", "run", str(path),
                 "--no-progress")
    assert result.exit_code == 0, result.output
    report = read_report(tmp_path / "reports" / "input.report.csv")
    assert [r["status"] for r in report] == ["succeeded", "succeeded"]
    assert all(r["track_id"].startswith("nightly-") for r in report)


def test_a_flag_overrides_the_profile(sim, cli, make_csv, tmp_path: Path) -> None:
    """Command-line flags win over profile values, the target included."""
    config = write_config(tmp_path, sim)
    path = make_csv(ROWS)
    result = cli("--config", str(config), "--profile", "nightly", "run", str(path),
                 "--no-progress", "--track-id-prefix", "adhoc", "--simulate",
                 "--report", str(tmp_path / "sim.csv"))
    assert result.exit_code == 0, result.output
    assert "Target: simulator" in result.output
    assert sim.stats.requests == []  # the profile's tenant was not contacted
    assert read_report(tmp_path / "sim.csv")[0]["track_id"].startswith("adhoc-")


def test_a_secrets_file_readable_by_others_is_refused(sim, cli, make_csv, tmp_path: Path) -> None:
    """Credentials in a group/world-readable file are refused before any request."""
    config = write_config(tmp_path, sim, secrets_mode=0o644)
    result = cli("--config", str(config), "--profile", "nightly", "run", str(make_csv(ROWS)),
                 "--no-progress")
    assert result.exit_code == 2 and "chmod 600" in result.output
    assert sim.stats.requests == []


def test_an_unknown_profile_or_key_is_a_clear_error(sim, cli, make_csv, tmp_path: Path) -> None:
    """Typos in the config are named, with what exists."""
    config = write_config(tmp_path, sim)
    result = cli("--config", str(config), "--profile", "nighlty", "run", str(make_csv(ROWS)))
    assert result.exit_code == 2 and "nightly" in result.output
    config.write_text('[profiles.default]\nconcurency = 3\n')
    result = cli("--config", str(config), "run", str(make_csv(ROWS)))
    assert result.exit_code == 2 and "concurency" in result.output


def test_config_and_profile_are_accepted_after_the_command(sim, cli, make_csv,
                                                           tmp_path: Path) -> None:
    """`run INPUT --config F --profile P` works as `--config F --profile P run INPUT`."""
    config = write_config(tmp_path, sim)
    result = cli("run", str(make_csv(ROWS)), "--no-progress", "--config", str(config),
                 "--profile", "nightly")
    assert result.exit_code == 0, result.output
    report = read_report(tmp_path / "reports" / "input.report.csv")
    assert all(r["track_id"].startswith("nightly-") for r in report)


def test_a_profile_typed_after_the_command_wins_over_one_before(sim, cli, make_csv,
                                                               tmp_path: Path) -> None:
    """`--config F` before the command and `--profile P` after combine; after wins."""
    config = write_config(tmp_path, sim)
    result = cli("--config", str(config), "--profile", "nighlty", "run", str(make_csv(ROWS)),
                 "--no-progress", "--profile", "nightly")
    assert result.exit_code == 0, result.output
    assert len(sim.stats.cancels()) == 2


def test_preflight_and_verify_take_the_profile_after_the_command(sim, cli, make_csv,
                                                                tmp_path: Path) -> None:
    """The profile's target and secrets file serve `preflight` and `verify` too."""
    config = write_config(tmp_path, sim)
    path = make_csv(ROWS)
    plan = cli("preflight", str(path), "--check-invoices", "--report",
               str(tmp_path / "plan.csv"), "--config", str(config), "--profile", "nightly")
    assert plan.exit_code == 0, plan.output
    assert sim.stats.invoice_reads == 2 and sim.stats.cancel_requests == 0
    assert cli("run", str(path), "--no-progress", "--config", str(config),
               "--profile", "nightly").exit_code == 0
    report = tmp_path / "reports" / "input.report.csv"
    result = cli("verify", str(report), "--until", "20", "--config", str(config),
                 "--profile", "nightly")
    assert result.exit_code == 0, result.output
    assert "Verified 2 accepted cancels: Cancelled=2" in result.output


def test_every_sending_option_of_run_is_a_profile_key_and_a_library_keyword() -> None:
    """A limit one can type after `run` can be kept in a profile and passed to
    `batch_cancel.cancel` too: the three faces take the same words."""
    assert set(RUN_LIMITS) <= set(PROFILE_KEYS)
    assert set(RUN_LIMITS) <= LIMIT_NAMES


def test_a_profile_picks_the_concurrency_algorithm_and_a_bad_one_is_refused(
        sim, cli, make_csv, tmp_path: Path) -> None:
    config = write_config(tmp_path, sim)
    config.write_text(config.read_text() + 'concurrency_algorithm = "gradient2"\n'
                      'outage_window = 30\n')
    result = cli("--config", str(config), "--profile", "nightly", "run", str(make_csv(ROWS)),
                 "--no-progress")
    assert result.exit_code == 0, result.output
    config.write_text(config.read_text().replace('"gradient2"', '"vegas"'))
    result = cli("--config", str(config), "--profile", "nightly", "run", str(make_csv(ROWS)),
                 "--no-progress", "--overwrite")
    assert result.exit_code == 2 and "vegas" in result.output, result.output
    assert len(sim.stats.cancels()) == 2
