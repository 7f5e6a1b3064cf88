"""The package's shape: no module of ``opssat`` imports another in a circle,
counting imports inside functions too (they run up the same chain when called)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "opssat"


def opssat_imports(source: str) -> set[str]:
    """The ``opssat`` modules that ``source`` imports anywhere (module level or not)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from opssat import x`` imports the module opssat.x when x is one.
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name.split(".")[1] for name in names
                  if name.startswith("opssat.") and name.count(".") == 1}
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = {path.stem: path for path in package.glob("*.py") if path.stem != "__init__"}
    return {name: opssat_imports(path.read_text(encoding="utf-8")) & modules.keys() - {name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_opssat():
    graph = import_graph()
    assert {"images", "infer", "metrics", "smartcam", "contract"} <= graph.keys()
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_sees_function_level_imports():
    inner = "def f():\n    from opssat import images\n"
    assert opssat_imports(inner) == {"images"}
    assert opssat_imports("import opssat.metrics as m\nfrom opssat.cli import warn\n") == {
        "metrics", "cli"}
    graph = {"images": {"smartcam"}, "smartcam": {"metrics"}, "metrics": {"infer"},
             "infer": {"images"}}
    assert find_cycle(graph) == ["images", "smartcam", "metrics", "infer", "images"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_smartcam_holds_constants_only():
    assert opssat_imports((PACKAGE / "smartcam.py").read_text(encoding="utf-8")) == set()
