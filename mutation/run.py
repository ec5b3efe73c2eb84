"""Mutation testing of the modules that decide what is sent and what is reported.

Uses cosmic-ray on a private copy of the tracked files (cosmic-ray edits the source it
mutates, so the working tree stays untouched), one session per target, each target with the
tests that cover it. Every mutant is applied alone; a mutant is killed when its tests fail
or hang past the timeout. Prints each target's score and its survivors.

    python mutation/run.py                    # every target (hours on a small machine)
    python mutation/run.py zuora --sample 40  # one target, 40 mutants spread over the file
    nice -n 19 python mutation/run.py ...     # be kind to a shared machine
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """One module to mutate, the tests that must kill its mutants, optionally some functions."""

    module: str
    tests: tuple[str, ...]
    #: mutate only inside these functions or constants (all of the module when empty)
    functions: tuple[str, ...] = ()
    #: seconds one mutant's test run may take before it counts as killed by a hang
    timeout: float = 60.0


#: the report's own tests first (quick, exact), then the end-to-end report checks
_REPORT_TESTS = ("tests/test_record_report.py", "tests/test_report.py")
_LOADER_TESTS = ("tests/test_loader.py", "tests/test_loader_fastpath.py")
#: the client's tests: the pure functions first (quickest to fail), then the token over
#: loopback, then the client against the simulator
_ZUORA_TESTS = ("tests/test_zuora_answers.py", "tests/test_zuora_token.py",
                "tests/test_zuora.py")

TARGETS = {
    # the 401s of two token generations in flight first: quick, and the client's own
    "zuora": Target("batch_cancel/send/zuora.py",
                    ("tests/test_zuora_refusals.py", *_ZUORA_TESTS)),
    "answers": Target("batch_cancel/send/answers.py", _ZUORA_TESTS),
    "report": Target("batch_cancel/record/writer.py", _REPORT_TESTS),
    "tally": Target("batch_cancel/record/tally.py", _REPORT_TESTS),
    "journal": Target("batch_cancel/record/journal.py",
                      ("tests/test_journal.py", "tests/test_record_journal.py")),
    # the read stage's validation: keys, reasons, references; cell text as Excel shows it;
    # rows built and duplicates marked
    # (each with its direct tests first: exact values, the quickest to fail)
    "validate": Target("batch_cancel/read/validate.py",
                       ("tests/test_read_validate.py", *_LOADER_TESTS),
                       ("MAX_KEY_LENGTH", "_KEY_CHARACTERS", "CLEAN_KEY", "REASON_SPELLINGS",
                        "default_reason", "normalise_reason", "key_problem", "row_problem",
                        "problem_in_reference", "make_row")),
    "excel": Target("batch_cancel/read/excel.py", ("tests/test_read_excel.py", *_LOADER_TESTS),
                    ("_EXCEL_EXACT", "_GENERAL_DIGITS", "excel_text", "format_number", "_digits",
                     "_literal", "_general")),
    "rows": Target("batch_cancel/read/rows.py", ("tests/test_read_rows.py", *_LOADER_TESTS),
                   ("_checked_row", "_block_reasons", "fast_block")),
    "duplicates": Target("batch_cancel/read/duplicates.py",
                         ("tests/test_read_rows.py", *_LOADER_TESTS)),
    # one row driven directly first (a second), then the pool against the simulator
    "row": Target("batch_cancel/send/row.py",
                  ("tests/test_row.py", "tests/test_runner.py", "tests/test_reliability.py",
                   "tests/test_flow.py"), timeout=180.0),
    # the pool and its limits: their own unit tests on a fake clock, quickest first
    "limits": Target("batch_cancel/send/limits.py",
                     ("tests/test_limiter.py", "tests/test_limits.py"), timeout=20.0),
    "retry": Target("batch_cancel/send/retry.py",
                    ("tests/test_retry.py", "tests/test_row.py", "tests/test_runner.py",
                     "tests/test_reliability.py")),
    "outcomes": Target("batch_cancel/send/outcomes.py",
                       ("tests/test_outcomes.py", "tests/test_row.py", "tests/test_runner.py",
                        "tests/test_reliability.py")),
    # (these tests take under a second; a mutant that spins on the fake clock is cut at 20 s)
    "pool": Target("batch_cancel/send/pool.py", ("tests/test_pool.py", "tests/test_limits.py"),
                   timeout=20.0),
    "gate": Target("batch_cancel/send/gate.py", ("tests/test_gate.py", "tests/test_limits.py"),
                   timeout=20.0),
    "pace": Target("batch_cancel/send/pace.py",
                   ("tests/test_pace.py", "tests/test_pace_edges.py", "tests/test_limits.py"),
                   timeout=20.0),
    # the window's own edges first: a mutant they kill never reaches test_flow's simulator runs
    "flow": Target("batch_cancel/send/flow.py", ("tests/test_window.py", "tests/test_flow.py"),
                   timeout=180.0),
    "reads": Target("batch_cancel/send/reads.py", ("tests/test_reads.py",), timeout=20.0),
    "sinks": Target("batch_cancel/record/sinks.py",
                    ("tests/test_record_sinks.py", *_REPORT_TESTS)),
    "paths": Target("batch_cancel/record/paths.py",
                    ("tests/test_record_paths.py", *_REPORT_TESTS)),
}


def function_lines(path: Path, names: tuple[str, ...]) -> list[str]:
    """The line ranges ("start-end") of the named top-level functions in `path`, or of the
    assignments of named module constants (a limit such as `_EXCEL_EXACT = 10**15` is as
    much the behaviour as the function that compares with it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = {node.name: f"{node.lineno}-{node.end_lineno}" for node in tree.body
             if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        found.update({target.id: f"{node.lineno}-{node.end_lineno}" for target in targets
                      if isinstance(target, ast.Name)})
    missing = sorted(set(names) - set(found))
    if missing:
        raise SystemExit(f"{path}: no function named {', '.join(missing)}; update TARGETS")
    return [found[name] for name in names]


def copy_tree(into: Path) -> None:
    """The tracked files of the working tree (as they are now), into `into`."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)


def config_text(target: Target, workdir: Path) -> str:
    """A cosmic-ray configuration for one target."""
    tests = " ".join(target.tests)
    lines = [
        "[cosmic-ray]",
        f'module-path = "{target.module}"',
        f"timeout = {target.timeout}",
        "excluded-modules = []",
        f'test-command = "{sys.executable} -m pytest -x -q -p no:cacheprovider {tests}"',
        "",
        "[cosmic-ray.distributor]",
        'name = "local"',
    ]
    if target.functions:
        ranges = function_lines(workdir / target.module, target.functions)
        specs = ", ".join(f'"{r}"' for r in ranges)
        lines += ["", "[cosmic-ray.filters.line-filter.lines]", f'"{target.module}" = [{specs}]']
    return "\n".join(lines) + "\n"


def annotation_spans(path: Path) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions of every type annotation in `path`. The modules use
    `from __future__ import annotations`, so an annotation is never evaluated: a mutant
    inside one (`str | None` -> `str / None`) is equivalent and is not worth a test run."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    spans = []
    for node in ast.walk(tree):
        found: list[ast.expr | None] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append(node.returns)
        elif isinstance(node, ast.arg | ast.AnnAssign):
            found.append(node.annotation)
        for annotation in filter(None, found):
            spans.append(((annotation.lineno, annotation.col_offset),
                          (annotation.end_lineno or annotation.lineno,
                           annotation.end_col_offset or 0)))
    return spans


def skip_annotations(session: Path, module: Path) -> int:
    """Mark the session's mutants inside type annotations skipped; returns how many."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    spans = annotation_spans(module)
    with use_db(str(session), WorkDB.Mode.open) as db:
        inside = [item.job_id for item in db.pending_work_items
                  if any(start <= tuple(item.mutations[0].start_pos) <= end
                         for start, end in spans)]
        if inside:
            db.set_multiple_results(inside, WorkResult(
                worker_outcome=WorkerOutcome.SKIPPED, output="inside a type annotation"))
    return len(inside)


def sample(session: Path, count: int) -> None:
    """Keep `count` of the mutants still to run, spread evenly over the file; skip the rest."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(session), WorkDB.Mode.open) as db:
        items = sorted(db.pending_work_items,
                       key=lambda item: (tuple(item.mutations[0].start_pos),
                                         item.mutations[0].operator_name,
                                         item.mutations[0].occurrence))
        if count >= len(items):
            return
        keep = {items[int(n * len(items) / count)].job_id for n in range(count)}
        skipped = [item.job_id for item in items if item.job_id not in keep]
        db.set_multiple_results(skipped, WorkResult(worker_outcome=WorkerOutcome.SKIPPED,
                                                    output="sampled out"))


def score(session: Path) -> tuple[int, int, list[str]]:
    """Killed, run, and a line for each survivor (file:line operator)."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    with use_db(str(session), WorkDB.Mode.open) as db:
        specs = {item.job_id: item.mutations[0] for item in db.work_items}
        done = [(job, result) for job, result in db.results
                if result.worker_outcome == WorkerOutcome.NORMAL]
    killed = sum(1 for _, result in done if result.test_outcome == TestOutcome.KILLED)
    survivors = [f"{specs[job].module_path}:{specs[job].start_pos[0]} "
                 f"{specs[job].operator_name} #{specs[job].occurrence}"
                 for job, result in done if result.test_outcome == TestOutcome.SURVIVED]
    return killed, len(done), sorted(survivors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help=f"any of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--sample", type=int, default=0,
                        help="run only this many mutants per target, spread over the file")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    names = args.targets or list(TARGETS)
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="mutation-"))
    workdir.mkdir(parents=True, exist_ok=True)
    copy_tree(workdir)
    env = {**os.environ, "PYTHONPATH": str(workdir)}
    bin_dir = Path(sys.executable).parent

    def cosmic(*command: str) -> None:
        subprocess.run([str(bin_dir / command[0]), *command[1:]], cwd=workdir, env=env,
                       check=True)

    for name in names:
        target = TARGETS[name]
        config = workdir / f"mutation-{name}.toml"
        session = workdir / f"mutation-{name}.sqlite"
        config.write_text(config_text(target, workdir), encoding="utf-8")
        session.unlink(missing_ok=True)

        cosmic("cosmic-ray", "init", str(config), str(session))
        if target.functions:
            cosmic("cr-filter-lines", "--config", str(config), str(session))
        skip_annotations(session, workdir / target.module)
        if args.sample:
            sample(session, args.sample)
        cosmic("cosmic-ray", "baseline", str(config))
        cosmic("cosmic-ray", "exec", str(config), str(session))
        killed, run, survivors = score(session)
        percent = 100.0 * killed / run if run else 0.0
        print(f"{name}: {killed}/{run} mutants killed ({percent:.1f} %)")
        for line in survivors:
            print(f"  survived: {line}")
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
