"""Where SQLite and PostgreSQL differ, in one place: insert-on-conflict, id lists, advisory locks, planner
hints and table statistics. Every other store module builds its statements through these."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, String, Table, TypeDecorator, any_, bindparam, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY


def insert(table: Table, dialect: str) -> Any:
    """An INSERT of `table` that takes `on_conflict_do_nothing` / `on_conflict_do_update` on this dialect."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"the store supports SQLite and PostgreSQL databases, not {dialect}")


class _JsonList(TypeDecorator):
    """A list bound as one JSON text (SQLite reads it back with json_each)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str:
        return json.dumps(list(value))


def in_list(column: Any, name: str, dialect: str) -> Any:
    """`column IN (the values of parameter `name`)`, the values bound as one parameter (a Python list), so the
    statement is the same for 10 or 100,000 values: no chunks, and one compile however many. PostgreSQL:
    `= ANY(array)`; SQLite: `IN (SELECT value FROM json_each(json text))`, which it plans like a literal IN
    list (a lookup per value)."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    values = func.json_each(bindparam(name, type_=_JsonList)).table_valued("value")
    return column.in_(select(values.c.value))


def skip_locked(query: Any, dialect: str) -> Any:
    """A SELECT that locks the rows it returns and skips those another transaction holds (PostgreSQL); SQLite's
    single writer needs no row locks."""
    return query.with_for_update(skip_locked=True) if dialect == "postgresql" else query


def filters_aggregates(dialect: str) -> bool:
    """Whether the database takes `agg(x) FILTER (WHERE …)` (PostgreSQL; SQLite since 3.30), else CASE."""
    if dialect != "sqlite":
        return True
    import sqlite3

    return sqlite3.sqlite_version_info >= (3, 30)


def psycopg(conn: Connection) -> bool:
    """PostgreSQL through psycopg, whose COPY and binary arrays the many-row writes use."""
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


def lock(conn: Connection, name: str) -> None:
    """Serialise the transactions that take the same named lock until they end (PostgreSQL advisory lock).
    SQLite needs none: a write transaction begins IMMEDIATE, which already admits one writer at a time."""
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def prefer_index_lookups(conn: Connection) -> None:
    """For this transaction, plan reads of a few thousand listed subjects as index lookups (PostgreSQL's
    default page costs prefer hashing whole tables, which cached rows make the slower choice)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL random_page_cost = 1.1"))


def without_jit(conn: Connection) -> None:
    """For this transaction, no JIT compilation (PostgreSQL): statements whose row estimates are far too high
    would otherwise spend longer compiling themselves than running."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL jit = off"))


@contextmanager
def page_cache(conn: Connection, kib: int) -> Iterator[None]:
    """SQLite: this connection's page cache at most `kib` KiB while the block runs, then as it was (for a long
    read whose own data structures need the memory more than rereading pages from the operating system's
    cache costs). PostgreSQL's cache is the server's."""
    if conn.dialect.name != "sqlite":
        yield
        return
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql(f"PRAGMA cache_size=-{int(kib)}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size={int(before)}")


def count_rows(conn: Connection, table: Table) -> int:
    """Number of rows in a table."""
    return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def estimate_rows(conn: Connection, table: Table) -> int:
    """About how many rows a table has, for sizing decisions, without reading it: PostgreSQL's statistics
    when it has any; on SQLite the largest rowid (rows are marked removed, not deleted); else a count."""
    if conn.dialect.name == "postgresql":
        counted = _reltuples(conn, table)
        if counted is not None and counted >= 0:
            return int(counted)
    elif conn.dialect.name == "sqlite" and table.dialect_kwargs.get("sqlite_with_rowid", True):
        return int(conn.scalar(text(f'SELECT max(rowid) FROM "{table.name}"')) or 0)
    return count_rows(conn, table)


def _reltuples(conn: Connection, table: Table) -> float | None:
    """PostgreSQL's row estimate for a table (-1 before its first ANALYZE or VACUUM), None if it has none."""
    return conn.scalar(text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table.name})


def analyze(conn: Connection, table: Table) -> None:
    """Refresh the planner's statistics after a bulk load (PostgreSQL plans badly without them)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f'ANALYZE "{table.name}"'))


def analyze_grown(conn: Connection, written: dict[Table, int]) -> list[str]:
    """ANALYZE (PostgreSQL) the tables that got many rows since their statistics were taken: at least
    1,000 and a tenth of what the statistics counted. Autovacuum would, but only a minute or more later,
    and until then the next tick is planned as if the tables were still small. Returns their names."""
    if conn.dialect.name != "postgresql":
        return []
    done = []
    for table, rows in written.items():
        if rows < 1000:
            continue
        counted = _reltuples(conn, table)
        if counted is None or rows >= max(counted, 0) / 10:
            analyze(conn, table)
            done.append(table.name)
    return done
