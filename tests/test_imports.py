"""The package's import graph has no cycle — counting imports inside functions and under TYPE_CHECKING."""

from __future__ import annotations

import ast
import os
from pathlib import Path

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PACKAGES = ("hf_async_mtl", "glue_tasks", "cli")


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((Path(REPO_ROOT) / package).rglob("*.py")):
            parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module → the package modules it imports anywhere in its source (absolute or relative)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets.add(source)
                # `from package import module` imports that submodule.
                targets.update(f"{source}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_sees_lazy_and_type_checking_imports(tmp_path):
    # The finder itself: a lazy import inside a function closes a cycle as much as a top-level one.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    graph = import_graph()
    assert "hf_async_mtl.async_kd.callback" in graph["hf_async_mtl.trainer"]
    assert not any(m.startswith("hf_async_mtl.trainer") for m in graph["hf_async_mtl.async_kd.callback"])


def test_glue_tasks_never_imported_by_the_library():
    graph = import_graph()
    offenders = sorted(
        m for m, targets in graph.items() if m.startswith("hf_async_mtl") and any(t.startswith("glue_tasks") for t in targets)
    )
    assert offenders == []


def test_the_library_and_glue_tasks_never_import_the_command_line():
    graph = import_graph()
    offenders = sorted(
        m for m, targets in graph.items() if not m.startswith("cli") and any(t == "cli" or t.startswith("cli.") for t in targets)
    )
    assert offenders == []
