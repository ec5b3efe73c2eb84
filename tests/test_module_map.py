"""The README's module map is the tree: every module listed, nothing listed that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "batch_cancel"
#: plumbing that holds no idea of its own
UNLISTED = {"__init__.py", "__main__.py", "_version.py", "read/__init__.py",
            "send/__init__.py", "record/__init__.py", "sim/__init__.py"}


def _listed() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Where a row goes: the module map"):]
    return set(re.findall(r"^\| `([a-z_/]+\.py)` \|", section, flags=re.M))


def _modules() -> set[str]:
    return {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")} - UNLISTED


def test_every_module_is_in_the_readme_map() -> None:
    assert sorted(_modules() - _listed()) == []


def test_the_readme_map_names_no_module_that_is_gone() -> None:
    assert sorted(_listed() - _modules()) == []


def test_every_module_stays_one_idea_of_reasonable_size() -> None:
    """Issue 11: modules under ~400 lines (a little slack for a docstring)."""
    sizes = {str(path.relative_to(PACKAGE)): len(path.read_text(encoding="utf-8").splitlines())
             for path in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 420} == {}
