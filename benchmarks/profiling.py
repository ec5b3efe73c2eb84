"""`run.py --profile SCENARIO`: batch-cancel's processes of one scenario under cProfile.

Issue 14 asks for every benchmark target to pass "or its miss explained with a profile". While
a scenario runs inside `profiled()`, every batch-cancel process it starts is started as
`python -m cProfile -o FILE batch-cancel ...` instead (the raw loops and the simulator are left
alone), and `print_profiles()` prints the top functions of each by cumulative and by own time.
cProfile slows the profiled process (every Python call is counted, often 1.5-2x), so the
figures of a profiled scenario are for finding where time goes, not for its targets.

Not named `profile.py`: run from this directory, that would hide the standard library's
`profile` module, which `cProfile` imports.
"""

from __future__ import annotations

import contextlib
import io
import pstats
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

#: Functions printed per ordering.
TOP = 25


@dataclass
class Profiles:
    """Where the profiles of one scenario go, and the files written so far (by process name)."""

    directory: Path
    program: str
    files: dict[str, Path] = field(default_factory=dict)

    def wrap(self, cmd: list[str], name: str) -> list[str]:
        """`cmd` under cProfile if it starts batch-cancel; else unchanged."""
        if not cmd or cmd[0] != self.program:
            return cmd
        out = self.directory / f"{name}.prof"
        self.files[name] = out
        return [sys.executable, "-m", "cProfile", "-o", str(out), *cmd]


#: The profiles being collected in this context (None: no scenario is being profiled).
_ACTIVE: ContextVar[Profiles | None] = ContextVar("profiles", default=None)


def wrap(cmd: list[str], name: str) -> list[str]:
    """`cmd`, under cProfile when a profiled scenario runs it (see `Profiles.wrap`)."""
    active = _ACTIVE.get()
    return cmd if active is None else active.wrap(cmd, name)


@contextlib.contextmanager
def profiled(enabled: bool, directory: Path, program: str) -> Iterator[Profiles | None]:
    """Profile the batch-cancel processes started inside the block (when `enabled`)."""
    if not enabled:
        yield None
        return
    profiles = Profiles(directory, program)
    token = _ACTIVE.set(profiles)
    try:
        yield profiles
    finally:
        _ACTIVE.reset(token)


def print_profiles(profiles: Profiles, top: int = TOP) -> None:
    """The top functions of every profiled process, by cumulative and by own (tottime) time,
    then its own time by where the code lives (`print_by_part`)."""
    for name, path in profiles.files.items():
        if not path.exists():
            print(f"\n== profile of {name}: no profile written ({path})")
            continue
        for order, label in (("cumulative", "cumulative time"), ("tottime", "own time")):
            text = io.StringIO()
            stats = pstats.Stats(str(path), stream=text)
            stats.strip_dirs().sort_stats(order).print_stats(top)
            print(f"\n== profile of {name} (under cProfile, {path}): top {top} by {label}")
            print(_trimmed(text.getvalue(), str(path)))
        print_by_part(name, path)


#: Where a function's own time is counted, by the first of these its file path contains.
PARTS = (("batch_cancel/record/", "batch_cancel record/ (report, journal)"),
         ("batch_cancel/send/", "batch_cancel send/ (limits, retries, answers)"),
         ("batch_cancel/", "batch_cancel, the rest (load, plan, CLI)"),
         ("/aiohttp/", "aiohttp"), ("/yarl/", "yarl, multidict"), ("/multidict/",
         "yarl, multidict"), ("/asyncio/", "asyncio"), ("<built-in", "built-ins (sockets, "
         "json, csv...)"), ("<method", "built-ins (sockets, json, csv...)"))


def part_of(filename: str) -> str:
    """The `PARTS` label of a profiled function's file ("other" if none matches)."""
    return next((label for key, label in PARTS if key in filename), "other")


def print_by_part(name: str, path: Path) -> None:
    """Own time summed by part: how much of the process is aiohttp's and asyncio's work,
    which any client pays (the raw loop too), and how much is batch-cancel's own."""
    stats = pstats.Stats(str(path))
    parts: dict[str, float] = {}
    for (filename, _, function), row in stats.stats.items():  # type: ignore[attr-defined]
        where = filename if filename != "~" else function
        parts[part_of(where)] = parts.get(part_of(where), 0.0) + row[2]
    total = sum(parts.values()) or 1.0
    print(f"\n== profile of {name}: own time by part (under cProfile, {total:.2f} s in all)")
    for label, seconds in sorted(parts.items(), key=lambda item: -item[1]):
        print(f"  {label:<48} {seconds:8.2f} s  {seconds / total:6.1%}")


def _trimmed(text: str, path: str) -> str:
    """pstats' table without its blank lines and its header (the date and the file name)."""
    return "\n".join(line for line in text.splitlines()
                     if line.strip() and path not in line
                     and not line.lstrip().startswith(("Ordered by", "List reduced")))
