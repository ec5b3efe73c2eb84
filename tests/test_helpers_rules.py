"""The tests' own house rules, checked on their source: shared helpers come from
`tests/helpers.py` only, and no test reaches into a private name.

A test that imports another test module runs that module's tests' imports and couples the
two; one that imports conftest gets a second copy of it (pytest loads conftest itself). A
test that reads or patches `obj._name` pins how the code is built, not what it does, and
breaks on every refactor that keeps the behaviour.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
#: Underscore names that are public API: namedtuple's methods and fields.
ALLOWED = frozenset({"_replace", "_asdict", "_fields", "_make"})
#: Calls whose string argument names an attribute to get or set.
BY_NAME = frozenset({"getattr", "setattr", "hasattr", "delattr"})


def private(name: str) -> bool:
    """A `_name` that is neither a dunder nor in ALLOWED."""
    dunder = name.startswith("__") and name.endswith("__")
    return name.startswith("_") and not dunder and name not in ALLOWED


def a_test_module(name: str) -> bool:
    """`tests.x` but tests.helpers, or a bare `conftest` / `test_x` (as from the rootdir)."""
    if name.startswith("tests."):
        return not (name == "tests.helpers" or name.startswith("tests.helpers."))
    return name.split(".")[0] == "conftest" or name.startswith("test_")


def imports_of_tests(tree: ast.Module) -> list[str]:
    """Imports of a test module or conftest (anything in `tests` but `tests.helpers`)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = "tests." * bool(node.level) + (node.module or "")
            if module in ("tests", "tests."):
                found += [n for alias in node.names if a_test_module(n := f"tests.{alias.name}")]
            elif a_test_module(module):
                found.append(module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if a_test_module(alias.name)]
    return found


def private_touches(tree: ast.Module) -> list[str]:
    """`x._name` (but `self._name`: an object's own), `from m import _name`, and
    getattr/setattr/monkeypatch.setattr with a `"_name"` string."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append((node.lineno, f".{node.attr}"))
        elif isinstance(node, ast.ImportFrom):
            found += [(node.lineno, f"import {alias.name}") for alias in node.names
                      if private(alias.name)]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in BY_NAME:
                found += [(node.lineno, f"{name}(..., {arg.value!r})") for arg in node.args
                          if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                          and private(arg.value)]
    return [f"line {line}: {what}" for line, what in sorted(found)]


SOURCES = sorted(TESTS.glob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_no_test_imports_another_test_module_or_conftest(path: Path) -> None:
    """Shared code is imported from tests.helpers, never from a test module or conftest."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    assert imports_of_tests(tree) == [], f"{path.name}: move what it needs to tests/helpers.py"


@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_no_test_touches_a_private_name(path: Path) -> None:
    """Tests drive objects through their public methods and read public attributes only."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    assert private_touches(tree) == [], f"{path.name}: test the behaviour instead"


def test_the_rules_catch_what_they_forbid() -> None:
    """The scan itself finds each kind of breach (so a clean scan means something)."""
    source = (
        "from tests.test_cli import ROWS\n"
        "from tests.conftest import read_report\n"
        "from tests import conftest\n"
        "from .test_loader import patch_cells\n"
        "import tests.test_flow\n"
        "import conftest\n"
        "from . import helpers\n"
        "from tests.helpers import jobs\n"
        "from batch_cancel.read.text import _first\n"
        "window._peak = 3\n"
        "self._own = 1\n"
        "row._replace(key='x')\n"
        "type(x).__name__\n"
        "monkeypatch.setattr(rows, '_fast_block', None)\n"
        "getattr(session, '_retry_connection')\n"
    )
    tree = ast.parse(source)
    assert imports_of_tests(tree) == ["tests.test_cli", "tests.conftest", "tests.conftest",
                                      "tests.test_loader", "tests.test_flow", "conftest"]
    assert private_touches(tree) == ["line 9: import _first", "line 10: ._peak",
                                     "line 14: setattr(..., '_fast_block')",
                                     "line 15: getattr(..., '_retry_connection')"]
