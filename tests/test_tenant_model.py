"""The tenant model alone: Zuora's rules with no transport, on a clock the test moves."""

from __future__ import annotations

import json
from dataclasses import dataclass

from batch_cancel.sim import rules as tenant_model
from batch_cancel.sim.rules import TenantModel
from tests.helpers import FakeClock


@dataclass
class Rules:
    seed: int = 0
    cancel_delay: float = 2.0
    cancel_failed_rate: float = 0.0
    unknown_marker: str = "NOTFOUND"
    cancelled_marker: str = "CANCELLED"


def test_second_cancel_is_refused_on_the_models_clock() -> None:
    """A cancel is accepted once; the second gets category 30; the status settles on time."""
    clock = FakeClock(start=100.0)
    accepted: list[str] = []
    model = TenantModel(Rules(), clock.now, accepted.append)
    first = model.cancel("INV1", '{"reason": "02"}')
    second = model.cancel("INV1", '{"reason": "02"}')
    assert (first.status, first.payload) == (200, {"success": True})
    assert second.status == 200 and second.payload is not None
    assert second.payload["reasons"][0]["code"] == tenant_model.CODE_STATE
    assert accepted == ["INV1"]
    assert model.status_of("INV1") == "CancelProcessing"
    clock.t += 2.0
    assert model.status_of("INV1") == "Cancelled"


def test_replies_carry_the_bytes_a_client_parses() -> None:
    """JSON, HTML and cut-off bodies come out as the bytes a transport would send."""
    assert json.loads(tenant_model.failure(500, 59210060, "x").body)["success"] is False
    assert tenant_model.html(502, tenant_model.HTML_502).body.startswith(b"<html>")
    assert tenant_model.truncated_200().body == b'{"success": tr'
    storm = dict(tenant_model.storm_429(3, 60.0, None).headers)
    assert storm == {"RateLimit-Remaining": "0", "RateLimit-Reset": "3"}


def test_markers_make_unknown_and_already_cancelled_invoices() -> None:
    """Keys with the markers are not found, or cancelled before anyone asked."""
    model = TenantModel(Rules())
    assert model.read("A-NOTFOUND").status == 404
    assert model.status_of("A-CANCELLED") == "Cancelled"
    assert model.cancel("A-NOTFOUND", '{"reason": "02"}').status == 404


def test_a_simulators_new_config_reaches_its_tenant_model() -> None:
    """Replacing a Simulator's config changes the rules its tenant model applies."""
    from batch_cancel.sim.server import Simulator, SimulatorConfig

    simulator = Simulator()
    simulator.config = SimulatorConfig(cancelled_marker="DONE")
    assert simulator.invoice_status("A-DONE") == "Cancelled"
