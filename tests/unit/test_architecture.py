"""The shape of the code, checked: SQL only behind the store, no import cycles, plugins the core does not list.

Imports are read from the source (every `import` statement, those inside functions too), so a lazy import
cannot hide a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "connectors")
# SQLAlchemy stays behind the store, except the expression language's SQL back end and the `sql` sync source
# (which reads a user's warehouse).
SQL_ALLOWED = ("engine/store/", "engine/lang/sql.py", "engine/sync/sql_source.py")


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the engine and the built-in connectors."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


def imports(path: Path, known: set[str] = frozenset()) -> set[str]:
    """Every module an `import` statement of the file names (relative imports resolved; `from pkg import x` is
    pkg.x when that is one of the `known` modules, else pkg)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = path.relative_to(ROOT).with_suffix("").parts[:-node.level]
                base = ".".join([*here, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return found


def graph() -> dict[str, set[str]]:
    """module -> the engine and connector modules it imports."""
    mods = modules()
    return {name: {m for m in imports(path, set(mods)) if m in mods and m != name} for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_sqlalchemy_is_imported_only_behind_the_store() -> None:
    offenders = sorted(str(path.relative_to(ROOT)) for path in modules().values()
                       if any(m == "sqlalchemy" or m.startswith("sqlalchemy.") for m in imports(path))
                       and not str(path.relative_to(ROOT)).startswith(SQL_ALLOWED))
    assert offenders == []


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_lists_no_connector_or_source() -> None:
    """Built-in plugins are registered through entry points, like a third party's: no engine module imports one."""
    plugins = {m for m in modules() if m.startswith("connectors.")} | {"engine.sync.files", "engine.sync.sql_source"}
    importers = {name: sorted(deps & plugins) for name, deps in graph().items()
                 if name.startswith("engine.") and name not in plugins and deps & plugins}
    assert importers == {}
