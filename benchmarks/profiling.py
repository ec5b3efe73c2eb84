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
    """The top functions of every profiled process, by cumulative and by own (tottime) time."""
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


def _trimmed(text: str, path: str) -> str:
    """pstats' table without its blank lines and its header (the date and the file name)."""
    return "\n".join(line for line in text.splitlines()
                     if line.strip() and path not in line
                     and not line.lstrip().startswith(("Ordered by", "List reduced")))
