"""Many-row writes at the driver's speed: one statement, compiled once, sent with executemany.

For a few thousand rows per statement SQLAlchemy's per-row parameter handling costs more than the
database's own work (it compiles each row's parameter set separately). `execute_many` compiles the
statement for the connection's dialect (once: compiled forms are cached under SQLAlchemy's own cache
key, so a statement rebuilt with other bound values reuses them; statements SQLAlchemy will not cache,
such as SQLite's and PostgreSQL's INSERT … ON CONFLICT, are cached by identity, since the store builds
each of them once), converts each column's values with
that column type's bind processor (dates for SQLite, JSON, ...), exactly as SQLAlchemy would, and
hands the driver the plain parameter rows. Statements must use plain bound parameters (no IN lists
to expand; `execute_in` runs a statement over a long IN list, a chunk at a time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from sqlalchemy import Connection
from sqlalchemy.sql.compiler import SQLCompiler

_COMPILED: dict[Any, Any] = {}       # SQLAlchemy's compiled-cache protocol: (dialect, key, columns, ...) -> Compiled
_UNCACHEABLE: dict[tuple[int, Any, tuple[str, ...]], tuple[Any, Any]] = {}  # (id(stmt), ...) -> (stmt, Compiled)
_PLANS: dict[int, "_Plan"] = {}      # id(Compiled) -> how to turn rows into driver parameters
_MAX_CACHED = 256


@dataclass(frozen=True)
class _Plan:
    """A compiled statement's parameters in driver order, with their bind processors."""

    compiled: SQLCompiler
    names: list[str]
    processors: list[Callable[[Any], Any] | None]
    keys: list[str] | None           # parameter names the driver sees (None: positional)


def execute_many(conn: Connection, stmt: Any, rows: Sequence[dict[str, Any]]) -> int:
    """Run `stmt` once per row (every row has the same keys); returns the rows the database changed."""
    if not rows:
        return 0
    plan, extracted = _plan(conn, stmt, list(rows[0]))
    fixed = plan.compiled.construct_params(rows[0], extracted_parameters=extracted)   # values the statement binds
    columns = []
    for name, proc in zip(plan.names, plan.processors):
        raw = [r[name] for r in rows] if name in rows[0] else [fixed[name]] * len(rows)
        columns.append(raw if proc is None else _converted(raw, proc))
    params: list[Any] = list(zip(*columns))
    if plan.keys is not None:
        params = [dict(zip(plan.keys, values)) for values in params]
    return conn.exec_driver_sql(plan.compiled.string, params).rowcount


IN_CHUNK = 500   # values per expanding IN list: far below SQLite's and PostgreSQL's bound-parameter limits


def execute_in(conn: Connection, stmt: Any, name: str, values: Sequence[Any], params: dict[str, Any]) -> int:
    """Run `stmt`, whose bound parameter `name` is an expanding IN list, once per IN_CHUNK of `values` (with
    the other `params`); returns the rows the database changed."""
    total = 0
    for i in range(0, len(values), IN_CHUNK):
        total += conn.execute(stmt, {**params, name: list(values[i:i + IN_CHUNK])}).rowcount or 0
    return total


def _plan(conn: Connection, stmt: Any, column_keys: list[str]) -> tuple[_Plan, Any]:
    """The statement compiled for this dialect and these row keys (cached), and its extracted bound values."""
    if len(_COMPILED) + len(_UNCACHEABLE) > _MAX_CACHED:
        _COMPILED.clear()
        _UNCACHEABLE.clear()
        _PLANS.clear()
    by_identity = (id(stmt), conn.dialect, tuple(column_keys))
    held = _UNCACHEABLE.get(by_identity)
    if held is not None and held[0] is stmt:      # (the entry holds the statement, so its id is not reused)
        compiled, extracted = held[1], None
    else:
        compiled, extracted, hit = stmt._compile_w_cache(conn.dialect, compiled_cache=_COMPILED,
                                                         column_keys=column_keys)
        if hit is conn.dialect.NO_CACHE_KEY:
            _UNCACHEABLE[by_identity] = (stmt, compiled)
    assert isinstance(compiled, SQLCompiler)
    plan = _PLANS.get(id(compiled))
    if plan is None or plan.compiled is not compiled:
        names = (list(compiled.positiontup or ()) if compiled.positional
                 else list(compiled.construct_params(dict.fromkeys(column_keys), extracted_parameters=extracted)))
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        processors = [binds[n].type.dialect_impl(conn.dialect).bind_processor(conn.dialect) for n in names]
        keys = None if compiled.positional else [compiled.escaped_bind_names.get(n, n) for n in names]
        plan = _PLANS[id(compiled)] = _Plan(compiled, names, processors, keys)
    return plan, extracted


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
