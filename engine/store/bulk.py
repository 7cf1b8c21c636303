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
    columns = []
    for name in names:
        proc = binds[name].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        raw = [r[name] for r in rows] if name in rows[0] else [fixed[name]] * len(rows)
        columns.append(raw if proc is None else _converted(raw, proc))
    if compiled.positional:
        params: list[Any] = list(zip(*columns))
    else:
        keys = [compiled.escaped_bind_names.get(n, n) for n in names]
        params = [dict(zip(keys, values)) for values in zip(*columns)]
    result = conn.exec_driver_sql(compiled.string, params)
    return result.rowcount


def _converted(values: list[Any], proc: Callable[[Any], Any]) -> list[Any]:
    """proc(v) for each value; a run of the same object (a column's shared timestamp) is converted once."""
    out = []
    last: Any = object()
    done: Any = None
    for v in values:
        if v is not last:
            last, done = v, proc(v)
        out.append(done)
    return out
