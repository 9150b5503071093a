"""pyproject.toml's dependency lists match the code, and constraints/lowest.txt pins each lower bound.

Every declared dependency is imported by transferd; every third-party module transferd imports comes from a
declared dependency (or something one of them requires), so a plain `pip install transferd` has it; the
sandbox's modules from the `sandbox` extra. `make test-lowest` then runs the byte paths on those lowest pins.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "transferd"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
RUNTIME_EXTRAS = ("sandbox", "uvloop")  # what users install; `test` is ours


def _requirements(names: Iterable[str]) -> list[Requirement]:
    return [Requirement(r) for r in names]


def _imports(files: Iterable[Path]) -> dict[str, set[str]]:
    """Top-level third-party module -> the files importing it."""
    out: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top != "transferd" and top not in sys.stdlib_module_names and top != "__future__":
                    out.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return out


def _closure(reqs: Iterable[Requirement]) -> set[str]:
    """Canonical names of the distributions these requirements install, transitively (as installed here)."""
    seen: set[str] = set()
    todo = [(r.name, frozenset(r.extras)) for r in reqs]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in seen and not extras:
            continue
        seen.add(key)
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (*extras, "")):
                todo.append((req.name, frozenset(req.extras)))
    return seen


def _dists_of(module: str) -> set[str]:
    return {canonicalize_name(d) for d in metadata.packages_distributions().get(module, [])}


SANDBOX_FILES = sorted((PACKAGE / "sandbox").rglob("*.py"))
CORE_FILES = sorted(set(PACKAGE.rglob("*.py")) - set(SANDBOX_FILES))
CORE = _requirements(PROJECT["dependencies"])
EXTRAS = {name: _requirements(PROJECT["optional-dependencies"][name]) for name in RUNTIME_EXTRAS}


def test_every_declared_dependency_is_imported() -> None:
    imported = set().union(*map(_dists_of, _imports(PACKAGE.rglob("*.py"))))
    unused = [str(r) for r in CORE + EXTRAS["uvloop"] if canonicalize_name(r.name) not in imported]
    assert not unused, f"declared in pyproject.toml but never imported by transferd: {unused}"


@pytest.mark.parametrize(("files", "allowed"), [
    (CORE_FILES, CORE + EXTRAS["uvloop"]),  # uvloop: imported only when TRANSFERD_EVENT_LOOP=uvloop asks for it
    (SANDBOX_FILES, CORE + EXTRAS["sandbox"]),
], ids=["core", "sandbox"])  # fmt: skip
def test_every_imported_module_comes_from_a_declared_dependency(files: list[Path], allowed: list[Requirement]) -> None:
    installed = _closure(allowed)
    stray = {m: sorted(where) for m, where in _imports(files).items() if not _dists_of(m) & installed}
    assert not stray, f"imported but not installed by pyproject's dependencies {[str(r) for r in allowed]}: {stray}"


def test_lowest_constraints_pin_every_lower_bound() -> None:
    pins = {}
    for line in (REPO / "constraints" / "lowest.txt").read_text().splitlines():
        if line := line.split("#", 1)[0].strip():
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    for req in CORE + EXTRAS["sandbox"] + EXTRAS["uvloop"]:
        lower = [s.version for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{req}: one >= lower bound expected"
        pin = pins.get(canonicalize_name(req.name))
        assert pin and Version(pin) == Version(lower[0]), f"constraints/lowest.txt: want {req.name}=={lower[0]}"
    assert re.search(r"^test-lowest:", (REPO / "Makefile").read_text(), re.M)
