"""The CPU-bound scenario for several checkouts of batch-cancel, alternated in one session.

    .venv/bin/python benchmarks/trees.py ROWS ROUNDS /path/to/tree[,/path/to/other...]

Each tree needs its own venv (`TREE/.venv/bin/batch-cancel`). Every round runs each tree's
batch-cancel, then the raw aiohttp loop, each against a fresh simulator of this checkout (the
same process kind for all), exactly as `run.py`'s scenario 3 does; the fastest run of each
counts, since a neighbour on a shared machine moves single runs by a third. Used for issue 11's
"the CPU-bound ratio must not get worse than before the redesign" and issue 14's speed work.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import run as bench  # benchmarks/run.py, beside this file


def main() -> None:
    rows, rounds, trees = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")
    work = Path(tempfile.mkdtemp(prefix="bc-trees-"))
    data = bench.write_csv(work / "s3.csv", rows)
    runs: dict[str, list[dict[str, Any]]] = {}
    for round_no in range(rounds):
        for tree in [*trees, "raw"]:
            name = f"{Path(tree).name}-{round_no}"
            if tree == "raw":
                result = bench.run_raw("aiohttp", data, 64, bench.FAST, work, name)
            else:
                bench.BC = str(Path(tree) / ".venv" / "bin" / "batch-cancel")
                result = bench.run_bc(data, bench.FAST, work, name, "--concurrency", "64",
                                      "--tenant-share", "1", "--rate", "100000")
            runs.setdefault(tree, []).append(result)
            print(f"{round_no} {Path(tree).name:<14} ok={result['ok']} wall={result['wall']:.2f} "
                  f"run={result['elapsed']:.2f} cpu_us/row={result['cpu_us_per_row']:.0f}",
                  flush=True)
    raw_wall = min(r["wall"] for r in runs["raw"])
    raw_cpu = min(r["cpu_us_per_row"] for r in runs["raw"])
    for tree in trees:
        wall = min(r["wall"] for r in runs[tree] if r["ok"] == rows)
        cpu = min(r["cpu_us_per_row"] for r in runs[tree])
        print(f"{Path(tree).name}: wall to wall {raw_wall / wall:.3f} of raw (best of {rounds}),"
              f" CPU {cpu:.0f} vs raw {raw_cpu:.0f} us/row")


if __name__ == "__main__":
    main()
