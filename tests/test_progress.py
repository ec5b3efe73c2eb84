"""The progress display follows the run by its events alone, on the runner's clock."""

from __future__ import annotations

import io

from rich.console import Console

from batch_cancel.events import PoolLoad, PoolPausedRateLimited, PoolWindowChanged
from batch_cancel.progress import RichProgress
from tests.helpers import FakeClock


def test_the_display_counts_rows_and_shows_load_and_pause_from_events() -> None:
    """Each `pool.load` with a status counts a row and shows the load it carries; a 429's
    `pool.paused` counts down on the clock that set it; other events change nothing."""
    out = io.StringIO()
    clock = FakeClock(start=50.0, overlap=True)
    display = RichProgress(Console(file=out, width=200, color_system=None), clock)
    display.start(total=3, to_send=3)
    display.on_event(PoolLoad(None, 0, 4, 10.0, "rate_flag"))  # the run starts: no row
    display.on_event(PoolWindowChanged(4, 8, "slow start", 20))
    display.on_event(PoolPausedRateLimited("rate_limited", 30.0, "rate", 429, ""))
    clock.t += 10.0
    display.on_event(PoolLoad("succeeded", 2, 4, 10.0, "rate_flag"))
    display.on_event(PoolLoad("failed", 1, 4, 10.0, "rate_flag"))
    display.stop()
    text = out.getvalue()
    assert "2/3" in text and "0.2 rows/s" in text  # 2 rows in 10 s of the runner clock
    assert ("succeeded=1 failed=1 in_flight=1 window=4 pace=10/s (rate_flag) paused 20s (429)"
            in text), text
