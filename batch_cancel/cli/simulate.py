"""`simulate`: serve the built-in Zuora simulator for manual trials (not a real tenant)."""

from __future__ import annotations

import click

from ..config import is_loopback
from .options import UsageFailure


@click.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port (0: any free).")
@click.option("--latency", type=float, default=0.0, show_default=True,
              help="Seconds added to each /v1 answer.")
@click.option("--latency-jitter", type=float, default=0.0, show_default=True,
              help="Uniform +- seconds around --latency.")
@click.option("--rate-limit", type=int, help="Max /v1 requests per --rate-window.")
@click.option("--rate-window", type=float, default=60.0, show_default=True,
              help="Seconds of a rate window.")
@click.option("--concurrency-limit", type=int, help="Max /v1 requests in flight.")
@click.option("--retry-after", "concurrency_retry_after", type=int, default=120,
              show_default=True, help="Retry-After seconds on a concurrency 429.")
@click.option("--token-ttl", type=float, default=3600.0, show_default=True,
              help="Token lifetime in seconds.")
@click.option("--fail-500", type=float, default=0.0, help="Share of cancels answered 500.")
@click.option("--html-502", type=float, default=0.0, help="Share answered 502 with HTML.")
@click.option("--drop", type=float, default=0.0, help="Share of connections dropped.")
@click.option("--retryable-false", type=float, default=0.0,
              help="Share answered 200 success:false (lock contention).")
@click.option("--drop-after-apply", type=float, default=0.0,
              help="Share of cancels applied, then the connection dropped.")
@click.option("--truncated-after-apply", type=float, default=0.0,
              help="Share of cancels applied, then a 200 with a cut-off body.")
@click.option("--html-504-after-apply", type=float, default=0.0,
              help="Share of cancels applied, then a gateway's HTML 504 page.")
@click.option("--slow", type=float, default=0.0,
              help="Share of cancels applied, then answered after --slow-seconds.")
@click.option("--slow-before-apply", type=float, default=0.0,
              help="Share of cancels answered after --slow-seconds, applied only then.")
@click.option("--slow-seconds", type=float, default=30.0, show_default=True,
              help="How slow a slow answer is.")
@click.option("--cancel-delay", type=float, default=2.0, show_default=True,
              help="Seconds from an accepted cancel to Cancelled (or CancelFailed).")
@click.option("--seed", type=int, default=0, show_default=True, help="Fault injection seed.")
def simulate_command(host: str, port: int, **knobs: float | int | None) -> None:
    """Serve the built-in Zuora simulator for manual trials (not a real tenant)."""
    from ..sim.server import SimulatorConfig, serve

    if not is_loopback(host):
        raise UsageFailure("the simulator serves loopback only (e.g. --host 127.0.0.1)")
    try:
        config = SimulatorConfig(**{k: v for k, v in knobs.items() if v is not None})  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise UsageFailure(str(exc)) from None
    serve(config, host, port)
