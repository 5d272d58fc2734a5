"""The layering, read from the import graph of the source: web/ and worker/ stand on shared/,
neither imports the other, shared/ imports neither, and shared/ holds only what both use.
client/ speaks only the documented wire protocol: it imports none of them (the `ragq` CLI in
worker/ uses it), and nothing but that CLI imports it. Within each package, imports never go
in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("web", "worker", "shared", "client")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for package in PACKAGES
             for path in (ROOT / package).rglob("*.py")}
    modules = set(files)
    return {name: _imports(path, modules) - {name} for name, path in files.items()}


def _reached_from(package: str, graph: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = [name for name in graph if name.split(".")[0] == package]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    return seen


def _crossings(graph: dict[str, set[str]], source: str, target: str) -> list[str]:
    return sorted(f"{name} -> {imported}" for name, imports in graph.items()
                  if name.split(".")[0] == source
                  for imported in imports if imported.split(".")[0] == target)


def test_shared_imports_neither_web_nor_worker() -> None:
    graph = import_graph()
    assert _crossings(graph, "shared", "web") == []
    assert _crossings(graph, "shared", "worker") == []


def test_web_and_worker_do_not_import_each_other() -> None:
    graph = import_graph()
    assert _crossings(graph, "web", "worker") == []
    assert _crossings(graph, "worker", "web") == []


def _one_sided(graph: dict[str, set[str]]) -> list[str]:
    """The shared modules that web/ or worker/ does not reach through its imports."""
    both = _reached_from("web", graph) & _reached_from("worker", graph)
    return sorted(name for name in graph if name.startswith("shared.") and name not in both)


def test_shared_holds_only_modules_both_sides_import() -> None:
    assert _one_sided(import_graph()) == []


def test_a_web_only_module_in_shared_is_found() -> None:
    graph = import_graph()
    graph["shared.web_only"] = {"shared.settings"}
    graph["web.app"] = graph["web.app"] | {"shared.web_only"}
    assert _one_sided(graph) == ["shared.web_only"]


def _cycle_in(graph: dict[str, set[str]], package: str) -> list[str]:
    """One import cycle among `package`'s modules (a path back to where it started), or []."""
    inside = {name: {m for m in imports if m.split(".")[0] == package}
              for name, imports in graph.items() if name.split(".")[0] == package}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str]:
        for imported in sorted(inside[name]):
            if imported in path:
                return path[path.index(imported):] + [imported]
            if imported not in done:
                found = visit(imported, path + [imported])
                if found:
                    return found
        done.add(name)
        return []

    for name in sorted(inside):
        found = [] if name in done else visit(name, [name])
        if found:
            return found
    return []


def test_a_question_goes_downward_through_the_web() -> None:
    """From the routes (web/query.py, web/jobs.py) through web/submit.py to shared/'s task
    send, no web module imports one that imports it back (and shared/ imports no web module:
    test_shared_imports_neither_web_nor_worker)."""
    graph = import_graph()
    assert _cycle_in(graph, "web") == []
    assert "web.query" not in graph["web.jobs"] and "web.jobs" not in graph["web.query"]


@pytest.mark.parametrize("package", ["worker", "shared", "client"])
def test_no_module_imports_one_that_imports_it_back(package: str) -> None:
    """Imports under TYPE_CHECKING count too: a cycle that only type hints close still ties
    both modules together (web/: the test above)."""
    assert _cycle_in(import_graph(), package) == []


def test_a_cycle_is_found() -> None:
    graph = import_graph()
    graph["web.submit"] = graph["web.submit"] | {"web.query"}
    assert _cycle_in(graph, "web")[0] == _cycle_in(graph, "web")[-1]
    assert {"web.query", "web.submit"} <= set(_cycle_in(graph, "web"))


def test_client_imports_nothing_of_the_service() -> None:
    graph = import_graph()
    assert [crossing for package in ("web", "worker", "shared")
            for crossing in _crossings(graph, "client", package)] == []


def test_only_the_cli_imports_the_client() -> None:
    graph = import_graph()
    users = {name.split(" -> ")[0] for package in ("web", "worker", "shared")
             for name in _crossings(graph, package, "client")}
    assert users <= {"worker.cli"}
