"""SQL for synced entities (accounts, contacts, usage, goals) and the sync bookkeeping.

The sync runner validates rows and calls `Entities` inside one transaction per entity.
Rows written by a sync carry a stamp in `synced_at`: each source of the sync its own, one microsecond
after the previous source's. Rows of the entity with a stamp older than the sync's first were absent
from the snapshot. Stamps strictly increase per table (see `next_stamp`), so two syncs at the same
`now` still tell their rows apart, and a row already carrying its source's stamp is a duplicate key
in that source (`upsert_new_rows`), found without keeping the keys in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Table, and_, exists, func, null, or_, select, tuple_, update
from sqlalchemy import column as sa_column
from sqlalchemy import table as sa_table
from sqlalchemy.dialects import postgresql

from engine.datamodel import KEYS
from engine.store import dialect as sql_dialect
from engine.store.bulk import execute_many
from engine.store.changes import newest_stamp
from engine.store.dialect import in_list
from engine.store.schema import Repository, Schema


class Entities(Repository):
    """The synced tables, as one entity's sync writes them (in one transaction, see engine/sync/runner.py)."""

    def lock(self, entity: str) -> None:
        """One sync of an entity at a time (PostgreSQL; SQLite's write transactions already serialise),
        so row stamps grow in commit order and a tick's change marks miss nothing."""
        sql_dialect.lock(self.conn, f"sync:{entity}")

    def next_stamp(self, entity: str, now: datetime) -> datetime:
        """The stamp for this sync of `entity`: `now`, or just after the newest stamp if that is not older."""
        return next_stamp(self.conn, self.schema.entity(entity), now)

    def count(self, entity: str) -> int:
        """Rows of the entity's table (removed ones included)."""
        return sql_dialect.count_rows(self.conn, self.schema.entity(entity))

    def count_live(self, entity: str) -> int:
        """Rows of the entity that are not marked removed (usage rows are deleted, never marked)."""
        table = self.schema.entity(entity)
        if "removed_at" not in table.c:
            return sql_dialect.count_rows(self.conn, table)
        return int(self.conn.scalar(select(func.count()).select_from(table).where(table.c.removed_at.is_(None)))
                   or 0)

    def last_synced(self, entity: str) -> datetime | None:
        """When the entity was last synced successfully (naive UTC), or None if never."""
        table = self.schema.sync_state
        return self.conn.scalar(select(table.c.synced_at).where(table.c.entity == entity))

    def existing_accounts(self, ids: Iterable[str]) -> set[str]:
        """Those of these account ids that the store has, removed ones included (one statement, a lookup per
        id)."""
        ids = sorted(set(ids))
        if not ids:
            return set()
        return set(self.conn.execute(_existing_accounts(self.schema, self.dialect), {"ids": ids}).scalars())

    def upsert_new_rows(self, entity: str, rows: Sequence[dict[str, Any]]) -> set[tuple[Any, ...]]:
        """See `upsert_new_rows`."""
        return upsert_new_rows(self.conn, self.schema.entity(entity), rows)

    def touch(self, entity: str, keys: Iterable[tuple[Any, ...]], stamp: datetime) -> int:
        """Stamp existing rows by key without changing them (rows present in the source but skipped as
        invalid)."""
        table = self.schema.entity(entity)
        return sum(self.conn.execute(update(table).where(match).values(synced_at=stamp)).rowcount
                   for match in _key_matches(table, keys))

    def mark_absent_removed(self, entity: str, first: datetime, stamp: datetime, now: datetime) -> int:
        """Mark removed (removed_at = now) the present rows this sync did not stamp (none of its stamps, the
        first of which is `first`); returns how many. They get the sync's last stamp: a removal is a change
        the next tick must see (engine/scope.py)."""
        table = self.schema.entity(entity)
        absent = or_(table.c.synced_at.is_(None), table.c.synced_at < first)
        result = self.conn.execute(update(table).where(and_(table.c.removed_at.is_(None), absent))
                                   .values(removed_at=now, synced_at=stamp))
        return int(result.rowcount or 0)

    def cascade_removed_accounts(self, now: datetime) -> dict[str, int]:
        """Mark removed (and stamp) the present contacts and goals of removed accounts; entity -> rows marked."""
        conn, schema = self.conn, self.schema
        accounts = schema.accounts
        removed_ids = select(accounts.c.id).where(accounts.c.removed_at.is_not(None)).scalar_subquery()
        counts = {}
        for table in (schema.contacts, schema.goals):
            live = and_(table.c.removed_at.is_(None), table.c.account_id.in_(removed_ids))
            result = conn.execute(update(table).where(live).values(removed_at=now,
                                                                    synced_at=next_stamp(conn, table, now)))
            counts[table.name] = int(result.rowcount or 0)
        return counts

    def delete_absent_usage(self, first: datetime) -> int:
        """Delete the usage rows this sync did not stamp (older than its first stamp: absent from a full usage
        snapshot)."""
        table = self.schema.usage
        result = self.conn.execute(table.delete().where(or_(table.c.synced_at.is_(None), table.c.synced_at < first)))
        return int(result.rowcount or 0)

    def record_sync(self, entity: str, synced_at: datetime, rows: int, removed: int,
                    stamp: datetime | None = None) -> None:
        """Remember when an entity was last synced, how many rows it loaded and removed, and — when it
        removed any — its row stamp as `removed_stamp` (kept until a later sync removes rows again)."""
        table = self.schema.sync_state
        values = {"synced_at": synced_at, "rows": rows, "removed": removed}
        if removed:
            values["removed_stamp"] = stamp or synced_at
        stmt = sql_dialect.insert(table, self.dialect).values(entity=entity, **values)
        self.conn.execute(stmt.on_conflict_do_update(index_elements=["entity"], set_=values))

    def analyze(self, entity: str) -> None:
        """Refresh the planner's statistics of the entity's table after a bulk load."""
        sql_dialect.analyze(self.conn, self.schema.entity(entity))


@lru_cache(maxsize=8)
def _existing_accounts(schema: Schema, dialect: str) -> Any:
    a = schema.accounts
    return select(a.c.id).where(in_list(a.c.id, "ids", dialect))


def next_stamp(conn: Connection, table: Table, now: datetime) -> datetime:
    """The sync stamp for this sync of `table`: `now`, or just after the newest stamp if that is not older."""
    newest = newest_stamp(conn, table)
    if newest is not None and newest >= now:
        return newest + timedelta(microseconds=1)
    return now


def upsert_new_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """Upsert rows that carry one source's stamp and distinct keys, except those whose key already has
    that stamp (an earlier row of the same source wrote it): those are not written, and their keys
    are returned. Only the columns a row names are set (others keep their values); updating clears
    `removed_at`: a row that reappears is present again.

    An existing row is updated only when its stamp differs. PostgreSQL (psycopg) gets the rows by COPY
    into a temporary table and one INSERT … SELECT … ON CONFLICT whose RETURNING tells the rows it left
    alone. Elsewhere the driver's executemany runs inside a savepoint; when fewer rows changed than were
    given, the savepoint is rolled back, the keys already stamped are read and the other rows upserted
    again.
    """
    if not rows:
        return set()
    if sql_dialect.psycopg(conn):
        return {key for columns, group in _by_columns(rows).items()
                for key in _copy_upsert(conn, table, columns, group)}
    with conn.begin_nested() as savepoint:
        if sum(_executemany_upsert(conn, table, c, g) for c, g in _by_columns(rows).items()) == len(rows):
            return set()
        savepoint.rollback()
    names = KEYS[table.name]
    stamp = rows[0]["synced_at"]
    keys = [tuple(row[n] for n in names) for row in rows]
    stamped: set[tuple[Any, ...]] = set()
    for match in _key_matches(table, keys):
        query = select(*(table.c[n] for n in names)).where(match, table.c.synced_at == stamp)
        stamped.update(tuple(r) for r in conn.execute(query))
    rest = [row for row, key in zip(rows, keys) if key not in stamped]
    for columns, group in _by_columns(rest).items():
        _executemany_upsert(conn, table, columns, group)
    return stamped


def _by_columns(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Rows grouped by the columns they name (one statement per group)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    return groups


@lru_cache(maxsize=64)
def _upsert_statement(table: Table, columns: tuple[str, ...], dialect: str) -> Any:
    """The upsert of rows naming `columns` that leaves rows already carrying their stamp alone; built once,
    so `execute_many` compiles it once (SQLAlchemy does not cache INSERT … ON CONFLICT)."""
    stmt = sql_dialect.insert(table, dialect)
    return stmt.on_conflict_do_update(index_elements=list(KEYS[table.name]), set_=_updates(table, stmt, columns),
                                      where=_unstamped(table, stmt))


def _executemany_upsert(conn: Connection, table: Table, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> int:
    """The upsert run by the driver's executemany (engine/store/bulk.py); the rows changed (-1 where the
    driver cannot tell)."""
    return execute_many(conn, _upsert_statement(table, columns, conn.dialect.name), rows)


def _updates(table: Table, stmt: Any, columns: Sequence[str]) -> dict[str, Any]:
    """The SET of an upsert: the row's non-key columns, and `removed_at` cleared (the row is present)."""
    updates: dict[str, Any] = {c: stmt.excluded[c] for c in columns if c not in KEYS[table.name]}
    if "removed_at" in table.c and "removed_at" not in columns:
        updates["removed_at"] = null()
    return updates


def _unstamped(table: Table, stmt: Any) -> Any:
    """An upsert's condition to update only rows that do not carry the new row's stamp yet."""
    return table.c.synced_at.is_distinct_from(stmt.excluded.synced_at)


def _copy_upsert(conn: Connection, table: Table, columns: tuple[str, ...],
                 rows: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """PostgreSQL: COPY the rows into a temporary table, then one INSERT … SELECT … ON CONFLICT that
    returns the keys it left alone (already stamped). Much faster than executemany.

    No savepoint here: one per chunk (a subtransaction each, truncating the temporary table in it) makes a
    large sync many times slower."""
    keys = KEYS[table.name]
    temp = f"_sync_{table.name}"
    conn.exec_driver_sql(f'CREATE TEMPORARY TABLE IF NOT EXISTS "{temp}" '
                         f'(LIKE "{table.name}" INCLUDING DEFAULTS) ON COMMIT DROP')
    conn.exec_driver_sql(f'TRUNCATE "{temp}"')
    names = ", ".join(f'"{c}"' for c in columns)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(f'COPY "{temp}" ({names}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])
    finally:
        cursor.close()
    source = sa_table(temp, *(sa_column(c) for c in columns))
    stmt = postgresql.insert(table).from_select(list(columns), select(*source.c))
    stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=_updates(table, stmt, columns),
                                      where=_unstamped(table, stmt))
    written = stmt.returning(*(table.c[k] for k in keys)).cte("written")
    same = and_(*(written.c[k] == source.c[k] for k in keys))
    left_alone = select(*(source.c[k] for k in keys)).where(~exists().where(same))
    return {tuple(r) for r in conn.execute(left_alone)}


def _key_matches(table: Table, keys: Iterable[tuple[Any, ...]], step: int = 500) -> Iterator[Any]:
    """Conditions matching the rows with these keys, `step` keys each (bounded IN lists)."""
    names = KEYS[table.name]
    batch = list(keys)
    for start in range(0, len(batch), step):
        part = batch[start:start + step]
        if len(names) == 1:
            yield table.c[names[0]].in_([k[0] for k in part])
        else:
            yield tuple_(*(table.c[n] for n in names)).in_([tuple(k) for k in part])
