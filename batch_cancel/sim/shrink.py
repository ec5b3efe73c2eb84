"""Shrinking a failing schedule: the smallest one found that still breaks a promise.

A failure of 120 rows, six faults and two crashes reads slowly; each cut (fewer rows, one fault,
outage, crash or limit less, no run after the chain, a CSV input) is kept only if the run still
fails, greedily, so the same failure always shrinks to the same schedule.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from .chain import Checked, RunnerPatch, check_schedule
from .schedule import Schedule

__all__ = ["SHRINK_TRIES", "shrink"]

#: Schedules tried at most while shrinking one failure.
SHRINK_TRIES = 300


def shrink(schedule: Schedule, runner_patch: RunnerPatch | None = None
           ) -> tuple[Schedule, Checked]:
    """A smaller schedule that still breaks a promise: fewer rows, faults, outages, crashes
    and limits, each cut kept only if the run still fails (greedy, so deterministic)."""
    best = check_schedule(schedule, runner_patch)
    tries = 0
    improved = True
    while improved and tries < SHRINK_TRIES:
        improved = False
        for candidate in _smaller(schedule):
            tries += 1
            result = check_schedule(candidate, runner_patch)
            if not result.ok:
                schedule, best, improved = candidate, result, True
                break
            if tries >= SHRINK_TRIES:
                break
    return schedule, best


def _smaller(s: Schedule) -> Iterator[Schedule]:
    """Schedules one cut smaller than `s`, the biggest cuts first."""
    n = s.rows
    for keep in dict.fromkeys((n // 2, n - 1)):
        if 0 < keep < n:
            yield replace(s, keys=s.keys[:keep], reasons=s.reasons[:keep],
                          references=s.references[:keep])
    for i in range(len(s.faults)):
        yield replace(s, faults=s.faults[:i] + s.faults[i + 1:])
    for i in range(len(s.outages)):
        yield replace(s, outages=s.outages[:i] + s.outages[i + 1:])
    if s.crashes:
        yield replace(s, crashes=s.crashes[:-1])
    if s.storm:
        yield replace(s, storm=0.0)
    if s.read_faults:
        yield replace(s, read_faults=0.0)
    if s.rate_limit is not None:
        yield replace(s, rate_limit=None)
    if s.daily_quota is not None:
        yield replace(s, daily_quota=None)
    if s.others_peak:
        yield replace(s, others_peak=0)
    if s.cancel_failed_rate:
        yield replace(s, cancel_failed_rate=0.0)
    if s.jitter:
        yield replace(s, jitter=0.0)
    if s.token_refusals:
        yield replace(s, token_refusals=())
    if s.token_lifetime < s.token_ttl:
        yield replace(s, token_lifetime=s.token_ttl)
    if s.feedback or s.verify or s.preflight:  # the chain alone reads more easily
        yield replace(s, feedback="", verify=False, preflight=False)
    if s.input_form != "csv":
        yield replace(s, input_form="csv")
