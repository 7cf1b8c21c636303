"""Many-row writes at the driver's speed: one statement, compiled once, sent with executemany.

For a few thousand rows per statement SQLAlchemy's per-row parameter handling costs more than the
database's own work (it compiles each row's parameter set separately). `execute_many` compiles the
statement once for the connection's dialect, converts each column's values with that column type's
bind processor (dates for SQLite, JSON, ...), exactly as SQLAlchemy would, and hands the driver the
plain parameter rows. Statements must use plain bound parameters (no IN lists to expand)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from sqlalchemy import Connection
from sqlalchemy.sql.compiler import SQLCompiler


def execute_many(conn: Connection, stmt: Any, rows: Sequence[dict[str, Any]]) -> int:
    """Run `stmt` once per row (every row has the same keys); returns the rows the database changed."""
    if not rows:
        return 0
    compiled = stmt.compile(dialect=conn.dialect, column_keys=list(rows[0]))
    assert isinstance(compiled, SQLCompiler)
    fixed = compiled.construct_params(rows[0])    # and the values the statement binds itself (`.values(x=1)`)
    names = list(compiled.positiontup or ()) if compiled.positional else list(fixed)
    binds = {name: bind for bind, name in compiled.bind_names.items()}
    plan: list[tuple[str, Callable[[Any], Any] | None, bool]] = [
        (n, binds[n].type.dialect_impl(conn.dialect).bind_processor(conn.dialect), n in rows[0]) for n in names]

    def values(row: dict[str, Any]) -> list[Any]:
        out = []
        for name, proc, own in plan:
            value = row[name] if own else fixed[name]
            out.append(value if proc is None else proc(value))
        return out

    if compiled.positional:
        params: list[Any] = [tuple(values(r)) for r in rows]
    else:
        keys = [compiled.escaped_bind_names.get(n, n) for n in names]
        params = [dict(zip(keys, values(r))) for r in rows]
    result = conn.exec_driver_sql(compiled.string, params)
    return result.rowcount
