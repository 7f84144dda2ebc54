"""The package's imports run one way: the module import graph of src/ticketlens is acyclic.

Every `import` of a ticketlens module counts, at the top of a module, inside a function or under
`if TYPE_CHECKING:`, so a circle cannot hide behind a function-level import. A function-level import of
another ticketlens module is allowed only where start-up cost demands it, and the function says why in a
`# lazy:` comment. (Importing `a.b` also runs `a/__init__.py`; that implicit edge is Python's mechanics,
not a dependency, and is not counted.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of every package under `root`."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict) -> set[str]:
    """The modules an import statement depends on: `from a import b` is module a.b if there is one, else a."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    if node.level:  # relative import
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    return {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}


def import_graph(
    root: Path, package: str = "ticketlens"
) -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """(module -> the package modules it imports, [(module, imported, line)] of function-level imports)."""
    modules = module_files(root)
    graph: dict[str, set[str]] = {m: set() for m in modules if m.split(".")[0] == package}
    lazy: list[tuple[str, str, int]] = []
    for module in graph:
        path = modules[module]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        inside = {id(n) for f in functions for n in ast.walk(f)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = _imported(node, module, path.name == "__init__.py", modules)
            for target in targets - {module}:
                if target not in modules or target.split(".")[0] != package:
                    continue
                graph[module].add(target)
                if id(node) in inside:
                    lazy.append((module, target, node.lineno))
    return graph, lazy


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_circle() -> None:
    graph, _ = import_graph(SRC)
    assert len(graph) > 40  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_function_level_imports_of_the_package_say_why() -> None:
    _, lazy = import_graph(SRC)
    modules = module_files(SRC)
    unexplained = []
    for module, target, line in lazy:
        tree = ast.parse(modules[module].read_text(encoding="utf-8"))
        lines = modules[module].read_text(encoding="utf-8").splitlines()
        function = min(
            (
                f
                for f in ast.walk(tree)
                if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and f.lineno <= line <= f.end_lineno
            ),
            key=lambda f: f.end_lineno - f.lineno,
        )
        if not any("# lazy:" in text for text in lines[function.lineno - 1 : function.end_lineno]):
            unexplained.append(f"{modules[module].relative_to(SRC)}:{line} imports {target}")
    assert not unexplained, "function-level imports without a `# lazy:` reason: " + "; ".join(unexplained)


@pytest.mark.parametrize("lazy_import", [False, True])
def test_a_planted_circle_is_found(tmp_path: Path, lazy_import: bool) -> None:
    package = tmp_path / "ticketlens"
    (package / "analysis").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "analysis" / "__init__.py").write_text("")
    (package / "analysis" / "summary.py").write_text("from ticketlens.analysis import findings\n")
    (package / "analysis" / "findings.py").write_text("from ticketlens.analysis.tables import x\n")
    circle_back = "from ticketlens.analysis.summary import y\n"
    if lazy_import:
        circle_back = "def f():\n    " + circle_back
    (package / "analysis" / "tables.py").write_text("import numpy\n" + circle_back)
    graph, lazy = import_graph(tmp_path)
    assert find_cycle(graph) == [
        "ticketlens.analysis.findings",
        "ticketlens.analysis.tables",
        "ticketlens.analysis.summary",
        "ticketlens.analysis.findings",
    ]
    assert bool(lazy) is lazy_import
