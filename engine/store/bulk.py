"""Many-row writes at the driver's speed: one statement, compiled once, sent with executemany.

For a few thousand rows per statement SQLAlchemy's per-row parameter handling costs more than the
database's own work (it compiles each row's parameter set separately). `execute_many` compiles the
statement for the connection's dialect (once: compiled forms are cached under SQLAlchemy's own cache
key, so a statement rebuilt with other bound values reuses them; statements SQLAlchemy will not cache,
such as SQLite's and PostgreSQL's INSERT … ON CONFLICT, are cached by identity, since the store builds
each of them once), converts each column's values with
that column type's bind processor (dates for SQLite, JSON, ...), exactly as SQLAlchemy would, and
hands the driver the plain parameter rows. Statements must use plain bound parameters (no IN lists
to expand); a statement over a long list of ids uses `dialect.in_list`, which binds the whole list as
one parameter.

On PostgreSQL (psycopg) an INSERT (with or without ON CONFLICT) goes as one statement whatever the number
of rows: INSERT … SELECT … FROM unnest(one array per column), the arrays sent in binary, so the server
plans and runs one statement instead of one per row. An ON CONFLICT DO UPDATE whose rows repeat a conflict
key keeps the row-by-row form (one statement may not update a row twice)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from types import NoneType
from typing import Any, Callable, Iterator, Sequence

from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql.dml import OnConflictDoUpdate
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert

from engine.store.dialect import psycopg

_COMPILED: dict[Any, Any] = {}       # SQLAlchemy's compiled-cache protocol: (dialect, key, columns, ...) -> Compiled
_UNCACHEABLE: dict[tuple[int, Any, tuple[str, ...]], tuple[Any, Any]] = {}  # (id(stmt), ...) -> (stmt, Compiled)
_BINDERS: dict[int, "_Binder"] = {}      # id(Compiled) -> how to turn rows into driver parameters
_ARRAYS: dict[tuple[int, tuple[str, ...]], tuple[Any, Any]] = {}  # (id(INSERT), keys) -> (INSERT, its unnest form)
_MAX_CACHED = 256


@dataclass(frozen=True)
class _Binder:
    """A compiled statement's parameters in driver order, with their bind processors."""

    compiled: SQLCompiler
    names: list[str]
    processors: list[Callable[[Any], Any] | None]
    keys: list[str] | None           # parameter names the driver sees (None: positional)


def execute_many(conn: Connection, stmt: Any, rows: Sequence[dict[str, Any]]) -> int:
    """Run `stmt` once per row (every row has the same keys); returns the rows the database changed."""
    if not rows:
        return 0
    return execute_columns(conn, stmt, {k: [r[k] for r in rows] for k in rows[0]})


def execute_columns(conn: Connection, stmt: Any, columns: dict[str, Sequence[Any]], converted: bool = True) -> int:
    """execute_many with the rows given column by column (each column's values in row order, all of one length):
    for many rows, no dictionary per row. Returns the rows the database changed. `converted=False`: the values are
    already what the driver takes (str, int, float, None), and go as they are, without the column types' bind
    processors."""
    keys = list(columns)
    n = len(columns[keys[0]]) if keys else 0
    if not n:
        return 0
    arrays = _unnest_form(conn, stmt, keys, columns, n)
    if arrays is not None:
        return _execute_arrays(conn, arrays, keys, columns)
    binder, extracted = _binder(conn, stmt, keys)
    fixed = binder.compiled.construct_params({k: columns[k][0] for k in keys}, extracted_parameters=extracted)
    values = []
    for name, proc in zip(binder.names, binder.processors):
        raw = columns[name] if name in columns else [fixed[name]] * n
        values.append(raw if proc is None or not converted else _converted(raw, proc))
    params: list[Any] = list(zip(*values))
    if binder.keys is not None:
        params = [dict(zip(binder.keys, row)) for row in params]
    return conn.exec_driver_sql(binder.compiled.string, params).rowcount


def _unnest_form(conn: Connection, stmt: Any, keys: list[str], columns: dict[str, Sequence[Any]], n: int) -> Any | None:
    """PostgreSQL (psycopg): the INSERT of these rows as INSERT … SELECT … FROM unnest(arrays), with the same
    ON CONFLICT clause and the column defaults of the columns the rows leave out (built once per statement and
    keys); None where the statement is not such an INSERT or its rows must go one at a time: a conflict key
    repeated under DO UPDATE, or a column whose values mix Python types (ints and floats: psycopg's arrays
    take one type)."""
    if not psycopg(conn) or not isinstance(stmt, Insert) \
            or stmt.select is not None or stmt._values or stmt._multi_values:
        return None
    conflict = getattr(stmt, "_post_values_clause", None)
    if isinstance(conflict, OnConflictDoUpdate):
        if conflict.constraint_target is not None or not conflict.inferred_target_elements:
            return None
        target = [c if isinstance(c, str) else c.name for c in conflict.inferred_target_elements]
        if not set(target) <= set(keys) or len(set(zip(*(columns[k] for k in target)))) < n:
            return None
    if any(len({type(v) for v in columns[k]} - {NoneType}) > 1 for k in keys):
        return None
    held = _ARRAYS.get((id(stmt), tuple(keys)))
    if held is not None and held[0] is stmt:
        return held[1]
    table_columns = stmt.table.c
    source = (func.unnest(*(bindparam(k, type_=ARRAY(table_columns[k].type)) for k in keys))
              .table_valued(*keys).render_derived(name="v"))
    arrays = stmt.from_select(keys, select(*source.c))
    _ARRAYS[(id(stmt), tuple(keys))] = (stmt, arrays)
    return arrays


def _execute_arrays(conn: Connection, stmt: Any, keys: list[str], columns: dict[str, Sequence[Any]]) -> int:
    """Run the unnest form of an INSERT: one array per column (through the ARRAY type's bind processor, which
    applies the column type's to each element)."""
    binder, extracted = _binder(conn, stmt, keys)
    bound = binder.compiled.construct_params({k: list(columns[k]) for k in keys}, extracted_parameters=extracted)
    values = [bound[n] if proc is None else proc(bound[n]) for n, proc in zip(binder.names, binder.processors)]
    assert binder.keys is not None              # psycopg: named parameters
    return conn.exec_driver_sql(_binary_placeholders(binder.compiled.string), dict(zip(binder.keys, values))).rowcount


@lru_cache(maxsize=64)
def _binary_placeholders(sql: str) -> str:
    """psycopg's %(name)s placeholders as %(name)b: parameters sent in binary. (With %s psycopg writes each
    array in text form, escaping every element in a Python loop: most of the time of an unnest INSERT.)"""
    return re.sub(r"(?<!%)%\((\w+)\)s", r"%(\1)b", sql)


def _binder(conn: Connection, stmt: Any, column_keys: list[str]) -> tuple[_Binder, Any]:
    """The statement compiled for this dialect and these row keys (cached), and its extracted bound values."""
    if len(_COMPILED) + len(_UNCACHEABLE) + len(_ARRAYS) > _MAX_CACHED:
        _COMPILED.clear()
        _UNCACHEABLE.clear()
        _BINDERS.clear()
        _ARRAYS.clear()
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
    binder = _BINDERS.get(id(compiled))
    if binder is None or binder.compiled is not compiled:
        names = (list(compiled.positiontup or ()) if compiled.positional
                 else list(compiled.construct_params(dict.fromkeys(column_keys), extracted_parameters=extracted)))
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        processors = [binds[n].type.dialect_impl(conn.dialect).bind_processor(conn.dialect) for n in names]
        keys = None if compiled.positional else [compiled.escaped_bind_names.get(n, n) for n in names]
        binder = _BINDERS[id(compiled)] = _Binder(compiled, names, processors, keys)
    return binder, extracted


def _converted(values: list[Any], proc: Callable[[Any], Any]) -> list[Any]:
    """proc(v) for each value; equal dates and timestamps (a column's shared stamp, the days of usage rows)
    are converted once."""
    memo: dict[Any, Any] = {}
    out = []
    for v in values:
        if type(v) in _MEMO_TYPES:
            done = memo.get(v, _MISSING)
            if done is _MISSING:
                done = memo[v] = proc(v)
            out.append(done)
        else:
            out.append(proc(v))
    return out


_MEMO_TYPES = (date, datetime)      # (exact types: a bool is not memoised with the int 1)
_MISSING = object()


def stream_rows(conn: Connection, stmt: Any, size: int) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of a SELECT in lists of up to `size`, as the driver gives them (tuples of its own values: on
    SQLite dates and times as the stored text), read as they are needed (PostgreSQL: a server-side cursor): for
    millions of rows, where building SQLAlchemy's rows costs more than the database's own work. The statement's
    values are written into its text (its bound values are dates, times, numbers and names, which SQLAlchemy
    renders as literals of the dialect)."""
    sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    if conn.dialect.paramstyle in ("format", "pyformat"):      # no parameters: a literal % is not doubled
        sql = sql.replace("%%", "%")
    dbapi = conn.connection.dbapi_connection
    server_side = conn.dialect.name == "postgresql"             # psycopg and psycopg2 alike
    cursor = dbapi.cursor(name="stream_rows") if server_side else dbapi.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(size):
            yield rows
    finally:
        cursor.close()
