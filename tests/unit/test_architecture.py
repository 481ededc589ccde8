"""The folders are the architecture: the dependency rules in pyproject.toml's import-linter
contracts hold, no module of ours takes part in an import cycle (imports inside functions count),
ruff is clean, and the lock pins every tool the checks run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PACKAGES = ("server", "projector", "orders_client", "bench")
PATHS = ("server", "projector", "clients/python", "bench")


def test_the_dependency_rules_hold() -> None:
    result = subprocess.run([BIN / "lint-imports", "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module) & modules:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles() -> None:
    graph = grimp.build_graph(*PACKAGES)
    ours = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    assert cycles(graph, ours) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "a.b", "a.c", "a.d"):
        graph.add_module(module)
    graph.add_import(importer="a.b", imported="a.c", line_number=1, line_contents="")
    graph.add_import(importer="a.c", imported="a.b", line_number=1, line_contents="")
    graph.add_import(importer="a.d", imported="a.b", line_number=1, line_contents="")
    assert cycles(graph, {"a", "a.b", "a.c", "a.d"}) == [["a.b", "a.c"]]


def test_ruff_is_clean() -> None:
    result = subprocess.run([BIN / "ruff", "check", *PATHS, "tests"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_lock_pins_every_checking_tool_exactly() -> None:
    lock = (ROOT / "requirements.lock").read_text()
    for tool in ("mypy", "types-protobuf", "ruff", "import-linter", "pytest", "grpcio-tools", "buf-bin"):
        assert re.search(rf"^{re.escape(tool)}==[\w.]+ ", lock, re.MULTILINE), f"{tool} is not pinned in requirements.lock"
