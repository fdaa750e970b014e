"""The shape of the code, read from the source with ``ast`` (nothing is imported):

* no import cycle among the modules of ``service/`` (nor of ``jsocsim/``, ``jsoc_bulk/``),
  imports inside functions included (those under ``if TYPE_CHECKING:`` are not run, so they
  do not count);
* ``service/`` never imports ``jsocsim/`` and ``jsocsim/`` never imports ``service/``;
* no function in ``service/``, ``jsocsim/`` or ``jsoc_bulk/`` is longer than 60 lines.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.codebase import imported_names, source_modules

PACKAGES = ("service", "jsocsim", "jsoc_bulk")
MAX_FUNCTION_LINES = 60


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module among ``modules`` that importing ``name`` lands in (longest prefix)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported module among ``modules``: line of the first such import}."""
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module, path in modules.items():
        for name, line in imported_names(module, path):
            target = resolve(name, modules)
            if target is not None and target != module:
                graph[module].setdefault(target, line)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def one_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """A shortest cycle through the first module of ``component`` (breadth-first)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in graph[node]:
            if nxt == start:
                return [*paths[node], start]
            if nxt in members and nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover - SCCs have one


def describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    steps = [f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(cycle)]
    return " -> ".join([*steps, cycle[-1]])


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str) -> None:
    graph = import_graph(source_modules(package))
    cycles = [describe(graph, one_cycle(graph, c)) for c in strongly_connected(graph)]
    assert not cycles, f"import cycles in {package}/:\n" + "\n".join(cycles)


def test_cycle_finder_sees_function_level_imports(tmp_path: Path) -> None:
    """The checker itself: a cycle made by an import inside a function is found; one made by
    an import under ``if TYPE_CHECKING:`` is not."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import x\n")
    (tmp_path / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                   "    import a\nelse:\n    import b\n")
    modules = {p.stem: p for p in tmp_path.glob("*.py")}
    graph = import_graph(modules)
    assert graph == {"a": {"b": 1}, "b": {"a": 2}, "c": {"b": 5}}
    assert strongly_connected(graph) == [["a", "b"]]
    assert describe(graph, one_cycle(graph, ["a", "b"])) == "a (line 1) -> b (line 2) -> a"


@pytest.mark.parametrize(("package", "forbidden"), [("service", "jsocsim"),
                                                    ("jsocsim", "service"),
                                                    ("jsoc_bulk", "jsocsim")])
def test_packages_keep_apart(package: str, forbidden: str) -> None:
    """The daemon and its client never depend on the emulator, nor the emulator on them."""
    found = [f"{module} imports {name} (line {line})"
             for module, path in source_modules(package).items()
             for name, line in imported_names(module, path)
             if name == forbidden or name.startswith(forbidden + ".")]
    assert not found, "\n".join(found)


def long_functions(package: str) -> Iterator[str]:
    for module, path in source_modules(package).items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    yield f"{module}.{node.name} (line {node.lineno}): {lines} lines"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_over_60_lines(package: str) -> None:
    too_long = list(long_functions(package))
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(too_long)
