"""The layout's rules (docs/architecture.md): no import cycle among eercf's modules (imports
inside functions count, ``if TYPE_CHECKING:`` blocks do not: they never run), packages import
only the packages below them, and no module grows past 450 lines."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "eercf"
MAX_LINES = 450
# Which top-level parts of eercf each part may import (besides itself): lower boxes never
# import higher ones. ``errors`` and ``paths`` are the floor everything stands on.
ALLOWED = {
    "errors": set(),
    "paths": set(),
    "model": {"errors"},
    "weights": {"errors", "paths", "model"},
    "data": {"errors", "model"},
    "synthetic": {"errors", "data"},
    "evaluation": {"errors", "model", "data", "index"},  # two-stage scores as an index does
    "index": {"errors", "model", "weights", "data"},
    "train": {"errors", "paths", "model", "weights", "data", "evaluation"},
    "serve": {"errors", "paths", "model", "data", "index", "__init__"},  # __init__: __version__
    "commands": {"errors", "paths", "model", "weights", "data", "synthetic", "evaluation",
                 "index", "train", "serve"},
    "cli": {"errors", "commands"},
    "__init__": {"errors"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The eercf modules ``name`` imports when it runs (at import time or in a function)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "eercf")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "eercf":
                for alias in node.names:  # ``from . import store`` imports the module store
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in known else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    edges = {}
    for name, path in mods.items():
        targets = set()
        for target in imports(name, path, known):
            # importing a.b.c runs a and a.b first: a package's __init__ is an edge too
            parts = target.split(".")
            targets.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
        edges[name] = {t for t in targets if t in known and t != name
                       and not name.startswith(t + ".")}  # a module's own parents run first
    return edges


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_packages_import_only_what_is_below_them():
    wrong = []
    for name, targets in graph().items():
        part = name.split(".")[1] if name != "eercf" else "__init__"
        for target in targets:
            other = target.split(".")[1] if target != "eercf" else "__init__"
            if other != part and other not in ALLOWED[part]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_module_over_450_lines():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_checker_sees_cycles_and_function_level_imports(tmp_path):
    """The rules above can fail: a function-level import is an edge, a TYPE_CHECKING one not."""
    source = tmp_path / "mod.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import x\n"
                      "def f():\n    from ..index import store\n    import eercf.model\n")
    known = {"eercf.index", "eercf.index.store", "eercf.model", "eercf.data.b"}
    assert imports("eercf.data.mod", source, known) == {"eercf.index.store", "eercf.model"}
    edges = graph()
    assert "eercf.model.tib" in edges["eercf.model.similarity"]
    assert {"eercf.data.sources", "eercf.model.encode"} <= edges["eercf.index.ingest"]  # in a function
