"""The package's shape: every module sits in a stage subpackage, and a stage imports only the
stages below it (``STAGES``, bottom first), counting imports inside functions too (they run
when called). Within a stage no module imports another in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "opssat"
#: Bottom first: a stage may import the stages before it, never one after it.
STAGES = ("core", "onboard", "data", "judge", "train", "uplink")
#: Modules allowed at the package root besides ``__init__``.
ROOT_MODULES = {"make_image_classifier"}


def opssat_imports(source: str) -> set[str]:
    """The ``opssat`` modules (dotted, below ``opssat``) that ``source`` imports anywhere."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from opssat.judge import infer`` imports the module opssat.judge.infer.
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name.removeprefix("opssat.") for name in names if name.startswith("opssat.")}
    return found


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module as ``stage.name`` (or ``name`` at the root), packages' ``__init__`` aside."""
    return {".".join(path.relative_to(package).with_suffix("").parts): path
            for path in package.rglob("*.py") if path.stem != "__init__"}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    found = modules(package)
    return {name: opssat_imports(path.read_text(encoding="utf-8")) & found.keys() - {name}
            for name, path in found.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for each import of a module from a later stage (or from the root)."""
    def rank(module: str) -> int:
        stage = module.split(".")[0]
        return STAGES.index(stage) if stage in STAGES else len(STAGES)
    return sorted(f"{source} -> {target}" for source, targets in graph.items()
                  for target in targets if rank(target) > rank(source))


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


def test_every_module_sits_in_a_stage():
    loose = {name for name in modules() if "." not in name} - ROOT_MODULES
    assert not loose, f"modules outside a stage subpackage: {sorted(loose)}"
    assert {path.parent.name for path in PACKAGE.glob("*/__init__.py")} == set(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_says_what_it_holds_and_may_import(stage):
    doc = ast.get_docstring(ast.parse((PACKAGE / stage / "__init__.py").read_text()))
    assert doc and "May import" in doc
    allowed = [f"opssat.{below}" for below in STAGES[:STAGES.index(stage)]]
    assert all(name in doc for name in allowed) or stage == "uplink"


def test_no_stage_imports_a_later_stage():
    graph = import_graph()
    assert {"data.images", "judge.infer", "judge.metrics", "onboard.smartcam"} <= graph.keys()
    assert upward_imports(graph) == []


def test_no_import_cycle_in_opssat():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_checks_see_function_level_and_upward_imports():
    inner = "def f():\n    from opssat.train import trainer\n"
    assert opssat_imports(inner) == {"train", "train.trainer"}
    assert upward_imports({"data.images": {"train.trainer"}}) == ["data.images -> train.trainer"]
    assert upward_imports({"train.trainer": {"data.images"}}) == []
    graph = {"images": {"smartcam"}, "smartcam": {"metrics"}, "metrics": {"infer"},
             "infer": {"images"}}
    assert find_cycle(graph) == ["images", "smartcam", "metrics", "infer", "images"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_direction_check_fails_on_a_planted_upward_import(tmp_path):
    for stage in ("data", "train"):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "__init__.py").write_text("")
    (tmp_path / "train" / "trainer.py").write_text("x = 1\n")
    (tmp_path / "data" / "images.py").write_text("from opssat.train import trainer\n")
    assert upward_imports(import_graph(tmp_path)) == ["data.images -> train.trainer"]


def test_smartcam_holds_constants_only():
    source = (PACKAGE / "onboard" / "smartcam.py").read_text(encoding="utf-8")
    assert opssat_imports(source) == set()


# --- short functions -------------------------------------------------------------------

#: The longest a function in ``opssat/`` may be, in lines from ``def`` to its end.
MAX_FUNCTION_LINES = 60


def long_functions(package: Path = PACKAGE,
                   limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """``module.function`` (``module.Class.method`` for methods) -> its length in lines,
    for each function in ``package`` longer than ``limit``; nested functions count
    on their own as well as within their parent."""
    found = {}
    for name, path in modules(package).items():
        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    qualified = f"{prefix}.{child.name}"
                    length = child.end_lineno - child.lineno + 1
                    if not isinstance(child, ast.ClassDef) and length > limit:
                        found[qualified] = length
                    visit(child, qualified)
                else:
                    visit(child, prefix)
        visit(ast.parse(path.read_text(encoding="utf-8")), name)
    return found


def test_no_function_in_opssat_is_over_60_lines():
    found = long_functions()
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines (split them): {found}"


def test_the_length_check_sees_long_methods_and_nested_functions(tmp_path):
    (tmp_path / "judge").mkdir()
    body = "".join(f"        x{i} = {i}\n" for i in range(60))  # 60 lines, indented twice
    (tmp_path / "judge" / "page.py").write_text(
        f"def short():\n    return 1\n\n\nclass Page:\n    def render(self):\n{body}"
        f"\n\ndef outer():\n    def inner():\n{body}")
    assert long_functions(tmp_path) == {"judge.page.Page.render": 61, "judge.page.outer": 62,
                                        "judge.page.outer.inner": 61}
