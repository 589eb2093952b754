"""The import graph of src/ has no cycle: no two modules import each other, directly or through others.

Imports are read statically, inside functions too (tests/test_dvc_deps.py's walk), so a lazy import that
only hides a cycle from Python still counts. A cycle is how a stage ends up depending on code it never
runs (predict.py and serving.py used to import each other, so every training stage depended on both).
"""
from __future__ import annotations

import ast

from test_dvc_deps import PACKAGE, SRC, _imported_modules, _module_file


def import_graph() -> dict[str, set[str]]:
    """{module: the catdog_lab modules it imports}, package `__init__` modules included."""
    graph = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        imported = _imported_modules(ast.parse(path.read_text()), name, is_package)
        graph[name] = {module for module in imported if module != name and _module_file(module)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, colouring the modules on the path)."""
    on_path: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> list[str] | None:
        if module in on_path:
            return on_path[on_path.index(module):] + [module]
        if module in done:
            return None
        on_path.append(module)
        for imported in sorted(graph.get(module, ())):
            cycle = visit(imported)
            if cycle:
                return cycle
        on_path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_no_module_of_src_imports_another_that_imports_it_back():
    graph = import_graph()
    assert {"catdog_lab.predict", "catdog_lab.serving", "catdog_lab.model_registry"} <= graph.keys()
    assert "catdog_lab.model_registry" in graph["catdog_lab.predict"]       # the walk sees lazy imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in src/: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle_of_three_and_of_two():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"a"}, "c": set()}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
