"""The import graph of `shared/` has no circle, counting the imports made inside functions
(which hide a circle from Python at import time, never from a reader). A circle means two
modules each need the other: one of them holds a fact that belongs lower down."""

from __future__ import annotations

import ast
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The `shared` modules a file imports anywhere in it (top level or inside a function)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "shared":
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shared."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("shared.")}
    return found - {path.stem}


def graph() -> dict[str, set[str]]:
    files = {p.stem: p for p in SHARED.glob("*.py") if p.stem != "__init__"}
    return {name: imports_of(p, set(files)) for name, p in files.items()}


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                out.append(sorted(part))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_shared_has_no_import_circle() -> None:
    g = graph()
    assert len(g) > 30 and "store" in g["lifecycle"]  # the files were read
    assert circles(g) == []


def test_the_check_sees_a_circle_hidden_inside_a_function(tmp_path: Path) -> None:
    """The detector itself: a function-level import closing a loop is found."""
    (tmp_path / "a.py").write_text("from shared import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from shared import a\n")
    (tmp_path / "c.py").write_text("from shared.a import x\n")
    names = {"a", "b", "c"}
    g = {p.stem: imports_of(p, names) for p in tmp_path.glob("*.py")}
    assert g == {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert circles(g) == [["a", "b"]]
