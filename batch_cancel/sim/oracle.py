"""Seeded schedules through the real run, judged by the oracle: the search and its command.

`chain` runs one seed's chain of runs (the real client, runner, journal and report against the
in-memory world on virtual time, resumed after every crash or stop), `promises` judges it,
`shrink` cuts a failure down. This module searches many seeds, in worker processes, and
summarises them.

    python -m batch_cancel.sim.oracle --seed 1234          # replay one seed, verbosely
    python -m batch_cancel.sim.oracle --seed 1234 --shrink # and the smallest failing schedule
    python -m batch_cancel.sim.oracle --seeds 100000 --jobs 2 --summary sim-summary.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .chain import Checked, check_seed, run_schedule
from .promises import KNOWN, NEVER_LEFT, RESENT_AFTER_401, is_known, judge
from .schedule import Schedule
from .shrink import shrink

__all__ = [
    "KNOWN", "NEVER_LEFT", "RESENT_AFTER_401", "Checked", "check_many", "check_seed",
    "is_known", "judge", "main", "run_schedule", "shrink", "summarise",
]


def check_many(seeds: Iterable[int], jobs: int = 1) -> Iterator[Checked]:
    """Check seeds, in worker processes when jobs > 1 (results in completion order)."""
    if jobs <= 1:
        yield from map(check_seed, seeds)
        return
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap_unordered(check_seed, seeds, chunksize=16)


def summarise(results: list[Checked], seconds: float) -> dict[str, object]:
    """The numbers a nightly search reports."""
    statuses: dict[str, int] = {}
    for result in results:
        for status, n in result.statuses.items():
            statuses[status] = statuses.get(status, 0) + n
    failed = [r for r in results if not r.ok]
    return {
        "schedules": len(results),
        "failed": len(failed),
        "failed_seeds": [r.seed for r in failed][:1000],
        "first_failures": [r.explain() for r in failed[:10]],
        "seconds": round(seconds, 1),
        "schedules_per_second": round(len(results) / seconds, 1) if seconds else None,
        "with_crash_and_resume": sum(r.crashes > 0 for r in results),
        "crashes": sum(r.crashes for r in results),
        "runs": sum(r.runs for r in results),
        "requests": sum(r.requests for r in results),
        "virtual_hours": round(sum(r.virtual_seconds for r in results) / 3600, 1),
        "late_landings": sum(r.late_landings for r in results),
        "token_requests": sum(r.token_requests for r in results),
        "known_findings": {k: sum(any(k in v for v in r.known) for r in results) for k in KNOWN},
        "row_statuses": statuses,
        "exit_codes": _tally(str(r.exit_code) for r in results),
        "user_paths": _paths(results),
    }


def _paths(results: list[Checked]) -> dict[str, int]:
    """How many schedules took each user path besides a CSV and its resumes."""
    drawn = [Schedule.draw(r.seed) for r in results]
    return {
        "dataframe_input": sum(s.input_form == "frame" for s in drawn),
        "parquet_input": sum(s.input_form == "parquet" for s in drawn),
        "report_fed_back": sum(bool(s.feedback) for s in drawn),
        "fed_back_with_include_final": sum(s.feedback == "include_final" for s in drawn),
        "preflight_after": sum(s.preflight for s in drawn),
        "verify_after": sum(s.verify for s in drawn),
        "gradient2_window": sum(s.settings.concurrency_algorithm == "gradient2" for s in drawn),
    }


def _tally(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    """`python -m batch_cancel.sim.oracle`: replay one seed, or search many and summarise."""
    parser = argparse.ArgumentParser(prog="python -m batch_cancel.sim.oracle",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, help="replay this seed and explain it")
    parser.add_argument("--shrink", action="store_true",
                        help="with --seed: also print the smallest failing schedule found")
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds to search")
    parser.add_argument("--first", type=int, default=0, help="the first seed to search")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--summary", type=Path, help="write the summary as JSON here")
    args = parser.parse_args(argv)
    if args.seed is not None:
        result = check_seed(args.seed)
        print(result.explain())
        print(f"  {result.runs} runs, {result.crashes} crashes, {result.requests} requests, "
              f"{result.virtual_seconds:.1f} virtual s, exit {result.exit_code}, "
              f"{result.statuses}")
        print("  PASS" if result.ok else "  FAIL")
        if args.shrink and not result.ok:
            small, checked = shrink(Schedule.draw(args.seed))
            print(f"shrunk (replay: --seed {args.seed} --shrink):\n{checked.explain(small)}")
        return 0 if result.ok else 1
    started = time.monotonic()
    results: list[Checked] = []
    for result in check_many(range(args.first, args.first + args.seeds), args.jobs):
        results.append(result)
        if not result.ok:
            print(result.explain(), file=sys.stderr, flush=True)
    summary = summarise(results, time.monotonic() - started)
    text = json.dumps(summary, indent=2)
    if args.summary is not None:
        args.summary.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0 if not summary["failed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
