"""SQL for synced entities (accounts, contacts, usage, goals) and the sync bookkeeping.

The sync runner validates rows and calls `Entities` inside one transaction per entity. Rows a sync
inserts or changes carry a stamp in `synced_at`: each source of the sync its own, one microsecond after
the previous source's; stamps strictly increase per table (see `next_stamp`), so a tick reads the rows
changed since its last scan from them (store/changes.py). A row whose values did not change is not
rewritten: its `synced_at` stays when its values were synced, which makes it the start of the current
version in the field history (store/field_history.py); each version a sync replaces or removes is
copied to `<entity>_history` first.

The keys a sync named are kept in a temporary table for the sync's length (`begin_load`): a key its
source already named is a duplicate, and the rows of a snapshot's entity whose keys are not there were
absent from it. So memory does not grow with the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import repeat
from operator import add, itemgetter
from typing import Any

from sqlalchemy import (Column, Connection, DateTime, Integer, MetaData, Table, and_, bindparam, exists, false, func,
                        literal, null, or_, select, true, tuple_, update)
from sqlalchemy.schema import CreateTable, DropTable

from engine.datamodel import KEYS
from engine.store import dialect as sql_dialect
from engine.store.bulk import execute_many
from engine.store.changes import newest_stamp
from engine.store.dialect import in_list
from engine.store.schema import Repository, Schema

EPOCH = datetime(1970, 1, 1)     # the start of a version whose row has no stamp (written before stamps existed)
Repeated = tuple[int, tuple[Any, ...], int]     # (line, key, the earlier line of the key) of a repeated row


class Entities(Repository):
    """The synced tables, as one entity's sync writes them (in one transaction, see engine/sync/runner.py)."""

    def lock(self, entity: str) -> None:
        """One sync of an entity at a time (PostgreSQL; SQLite's write transactions already serialise),
        so row stamps grow in commit order and a tick's change marks miss nothing."""
        sql_dialect.lock(self.conn, f"sync:{entity}")

    def next_stamp(self, entity: str, now: datetime) -> datetime:
        """The stamp for this sync of `entity`: `now`, or just after the newest stamp (of a row, or of a sync
        that removed rows) if that is not older."""
        stamp = next_stamp(self.conn, self.schema.entity(entity), now)
        st = self.schema.sync_state
        removed = self.conn.scalar(select(st.c.removed_stamp).where(st.c.entity == entity))
        return removed + timedelta(microseconds=1) if removed is not None and removed >= stamp else stamp

    def count(self, entity: str) -> int:
        """Rows of the entity's table (removed ones included)."""
        return sql_dialect.count_rows(self.conn, self.schema.entity(entity))

    def count_live(self, entity: str, total: int | None = None) -> int:
        """Rows of the entity that are not marked removed (usage rows are deleted, never marked: all of them,
        `total` when the caller just counted them)."""
        table = self.schema.entity(entity)
        if "removed_at" not in table.c:
            return total if total is not None else sql_dialect.count_rows(self.conn, table)
        return int(self.conn.scalar(select(func.count()).select_from(table).where(table.c.removed_at.is_(None)))
                   or 0)

    def last_synced(self, entity: str) -> datetime | None:
        """When the entity was last synced successfully (naive UTC), or None if never."""
        table = self.schema.sync_state
        return self.conn.scalar(select(table.c.synced_at).where(table.c.entity == entity))

    def existing_accounts(self, ids: Iterable[str]) -> dict[str, datetime | None]:
        """Those of these account ids that the store has, removed ones included, each with its `removed_at`
        (one statement, a lookup per id)."""
        ids = sorted(set(ids))
        if not ids:
            return {}
        return {i: r for i, r in self.conn.execute(_existing_accounts(self.schema, self.dialect), {"ids": ids})}

    def begin_load(self, entity: str) -> None:
        """Create the temporary tables one sync of `entity` writes through (see `write_rows` and, for usage,
        `compare_accounts`)."""
        for temp in (*_load_tables(self.schema, entity, self.dialect), *_grouped_tables(self.schema, entity)):
            self.conn.execute(DropTable(temp, if_exists=True))
            self.conn.execute(CreateTable(temp))

    def end_load(self, entity: str) -> None:
        """Drop the temporary tables of `begin_load`."""
        for temp in (*_load_tables(self.schema, entity, self.dialect), *_grouped_tables(self.schema, entity)):
            self.conn.execute(DropTable(temp, if_exists=True))

    def stored_forms(self, entity: str) -> dict[str, Callable[[Any], Any]]:
        """How the driver is given each column's values of the entity (`write_rows`, `keep`): the column type's
        bind processor where it has one (SQLite: dates and times as text); values of other columns go as
        they are."""
        return stored_forms(self.schema.entity(entity), self.conn.dialect)

    def write_rows(self, entity: str, fields: tuple[str, ...], rows: Sequence[tuple[Any, ...]], source: int,
                   first: datetime, stamp: datetime, compare: bool = True) -> tuple[int, list[Repeated]]:
        """See `write_rows`."""
        return write_rows(self.conn, self.schema, entity, fields, rows, source, first, stamp, compare)

    def stored_usage(self, values: Sequence[str], accounts: Sequence[str]) -> list[tuple[Any, ...]]:
        """The stored usage rows of these accounts in key order (one range read of the key per account), each a
        tuple of the key's fields and then of `values`, as the driver gives them (which is `stored_forms`)."""
        return stored_usage(self.conn, values, accounts)

    def insert_rows(self, entity: str, fields: tuple[str, ...], rows: Sequence[tuple[Any, ...]],
                    stamp: datetime) -> int:
        """Insert rows whose keys the table does not have (tuples as `write_rows` takes them), stamped."""
        return insert_rows(self.conn, self.schema.entity(entity), fields, rows, stamp)

    def replace_rows(self, entity: str, fields: tuple[str, ...], rows: Sequence[tuple[Any, ...]],
                     first: datetime, stamp: datetime) -> int:
        """Write rows of distinct keys the caller found changed (tuples as `write_rows` takes them): the versions
        they replace to the field history, then upserted (only the named fields)."""
        return replace_rows(self.conn, self.schema, entity, fields, rows, first, stamp)

    def drop_indexes(self, entity: str) -> None:
        """Drop the secondary indexes of the entity's table, for a load into the empty table (`create_indexes`
        then builds each from the rows at once, cheaper than growing it row by row). On PostgreSQL this locks
        the table until the transaction ends."""
        for index in sorted(self.schema.entity(entity).indexes, key=lambda i: str(i.name)):
            index.drop(self.conn)

    def create_indexes(self, entity: str) -> None:
        """Create the secondary indexes `drop_indexes` dropped."""
        for index in sorted(self.schema.entity(entity).indexes, key=lambda i: str(i.name)):
            index.create(self.conn)

    def note_accounts(self, accounts: Iterable[str], gone: Iterable[tuple[Any, ...]]) -> None:
        """Remember the accounts a grouped usage snapshot named, and the keys of their stored rows it did not
        name (removed by `delete_gone_usage`)."""
        named, absent = _grouped_tables(self.schema, "usage")
        rows = [(a,) for a in accounts]
        if rows:
            self.conn.exec_driver_sql(_driver_insert(self.conn, named, ["account_id"]), rows)
        keys = list(gone)
        if keys:
            self.conn.exec_driver_sql(_driver_insert(self.conn, absent, KEYS["usage"]), keys)

    def delete_gone_usage(self, stamp: datetime, unnamed_accounts: bool) -> int:
        """Delete the usage rows `note_accounts` found absent and, when `unnamed_accounts`, the rows of the
        accounts it did not name, their values kept in the field history until `stamp`; returns how many."""
        table = self.schema.usage
        named, absent = _grouped_tables(self.schema, "usage")
        keys = KEYS["usage"]
        # (looked up from the few absent keys, not per stored row)
        gone = tuple_(*(table.c[k] for k in keys)).in_(select(*(absent.c[k] for k in keys)))
        if unnamed_accounts:
            gone = or_(gone, ~exists().where(named.c.account_id == table.c.account_id))
        _keep_versions(self.conn, self.schema, "usage", gone, stamp)
        return int(self.conn.execute(table.delete().where(gone)).rowcount or 0)

    def keep(self, entity: str, keys: Iterable[tuple[Any, ...]]) -> None:
        """Count these keys (in `stored_forms`) as present in the snapshot without writing their rows (rows
        skipped as invalid: a snapshot does not remove them)."""
        seen = _load_tables(self.schema, entity, self.dialect)[1]
        names = [*KEYS[entity], "source", "line"]
        rows = [(*key, -1, 0) for key in set(keys)]
        if rows:
            self.conn.exec_driver_sql(_driver_insert(self.conn, seen, names, conflict=KEYS[entity]), rows)

    def all_named(self, entity: str, rows: int) -> bool:
        """Whether this sync named every row of the entity's table (of `rows` rows, counted by the caller) — when
        each key it named is a row of the table (no `keep`): then the counts tell, without looking for absent
        rows one by one."""
        seen = _load_tables(self.schema, entity, self.dialect)[1]
        named = self.conn.scalar(select(func.count()).select_from(seen))
        return named == rows

    def mark_absent_removed(self, entity: str, stamp: datetime, now: datetime) -> int:
        """Mark removed (removed_at = now, synced_at = stamp) the present rows this sync did not name (found in
        `begin_load`'s table of keys), their versions kept in the field history; returns how many."""
        table = self.schema.entity(entity)
        absent = and_(table.c.removed_at.is_(None), ~_seen(self.schema, entity, self.dialect, table))
        _keep_versions(self.conn, self.schema, entity, absent, stamp)
        result = self.conn.execute(update(table).where(absent).values(removed_at=now, synced_at=stamp))
        return int(result.rowcount or 0)

    def cascade_removed_accounts(self, now: datetime) -> dict[str, int]:
        """Mark removed (and stamp) the present contacts and goals of removed accounts; entity -> rows marked."""
        conn, schema = self.conn, self.schema
        accounts = schema.accounts
        removed_ids = select(accounts.c.id).where(accounts.c.removed_at.is_not(None)).scalar_subquery()
        counts = {}
        for table in (schema.contacts, schema.goals):
            live = and_(table.c.removed_at.is_(None), table.c.account_id.in_(removed_ids))
            stamp = next_stamp(conn, table, now)
            _keep_versions(conn, schema, table.name, live, stamp)
            result = conn.execute(update(table).where(live).values(removed_at=now, synced_at=stamp))
            counts[table.name] = int(result.rowcount or 0)
        return counts

    def delete_absent_usage(self, stamp: datetime) -> int:
        """Delete the usage rows this sync did not name (absent from a full usage snapshot), their values kept
        in the field history until `stamp`."""
        table = self.schema.usage
        absent = ~_seen(self.schema, "usage", self.dialect, table)
        _keep_versions(self.conn, self.schema, "usage", absent, stamp)
        result = self.conn.execute(table.delete().where(absent))
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
    return select(a.c.id, a.c.removed_at).where(in_list(a.c.id, "ids", dialect))


def next_stamp(conn: Connection, table: Table, now: datetime) -> datetime:
    """The sync stamp for this sync of `table`: `now`, or just after the newest stamp if that is not older."""
    newest = newest_stamp(conn, table)
    if newest is not None and newest >= now:
        return newest + timedelta(microseconds=1)
    return now


def write_rows(conn: Connection, schema: Schema, entity: str, fields: tuple[str, ...], rows: Sequence[tuple[Any, ...]],
               source: int, first: datetime, stamp: datetime, compare: bool = True) -> tuple[int, list[Repeated]]:
    """Write one chunk of rows of one source (distinct keys; each a tuple of the values of `fields` in
    `stored_forms`, then the row's line number; chunks numbered upwards) with the source's `stamp`, within the
    sync whose first stamp is `first`; returns (rows inserted or changed, [(line, key, earlier line)] of the rows
    whose key an earlier row of this source had — those are not written; keys in `stored_forms`).

    The rows go to a temporary table first (COPY on PostgreSQL, the driver's executemany elsewhere); set
    statements then find the keys this source already named (the table of keys `begin_load` made, which a
    snapshot's removal reads), take out the rows equal to the stored ones, copy the versions the others replace
    to the field history, and upsert. Only the named fields are set; a row whose named fields all equal the
    stored ones (and that is not removed) is left alone: not rewritten, not restamped — its `synced_at` stays
    when its values were synced. Writing clears `removed_at` unless the row sets it. `compare=False` (the
    entity's table was empty when the sync began: no row of it is older than the sync) skips the comparison
    and the history."""
    if not rows:
        return 0, []
    dialect = conn.dialect.name
    stage, seen = _load_tables(schema, entity, dialect)
    keys = KEYS[entity]
    if dialect == "postgresql":
        conn.exec_driver_sql(f'TRUNCATE "{stage.name}"')
    else:
        conn.exec_driver_sql(f'DELETE FROM "{stage.name}"')
    _fill(conn, stage, (*fields, "line"), rows)
    # the keys of this source: a key it already named is a duplicate (its first row stays)
    params = [{"source": source}]
    claimed = execute_many(conn, _claim_statement(stage, seen, dialect), params)
    duplicates: list[Repeated] = []
    if claimed != len(rows):
        duplicates = [(line, tuple(key), earlier) for *key, line, earlier in
                      conn.exec_driver_sql(_repeated_sql(stage, seen, keys, "SELECT", source))]
        conn.exec_driver_sql(_repeated_sql(stage, seen, keys, "DELETE", source))
    if compare:
        # the rows equal to the stored ones leave the stage (they are neither kept in the history nor written)
        unchanged = conn.execute(_unchanged_statement(schema, entity, stage, fields)).rowcount
        if unchanged == len(rows) - len(duplicates):
            return 0, duplicates
        # the versions these rows replace, to the field history (versions written earlier in this sync are not
        # kept)
        execute_many(conn, _history_statement(schema, entity, stage, fields), [{"first": first, "stamp": stamp}])
    written = execute_many(conn, _upsert_statement(schema.entity(entity), stage, fields, dialect), [{"stamp": stamp}])
    return max(written, 0), duplicates


def stored_usage(conn: Connection, values: Sequence[str], accounts: Sequence[str]) -> list[tuple[Any, ...]]:
    """See `Entities.stored_usage`."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    names = ", ".join(f'"{c}"' for c in (*KEYS["usage"], *values))
    # in the order Python sorts the values (code points: PostgreSQL's "C" collation; SQLite's binary one)
    text = ' COLLATE "C"' if conn.dialect.name == "postgresql" else ""
    sql = (f'SELECT {names} FROM "usage" WHERE "account_id" IN ({", ".join([mark] * len(accounts))}) '
           f'ORDER BY "account_id"{text}, "metric"{text}, "day"')
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, list(accounts))
        return cursor.fetchall()
    finally:
        cursor.close()


def insert_rows(conn: Connection, table: Table, fields: tuple[str, ...], rows: Sequence[tuple[Any, ...]],
                stamp: datetime) -> int:
    """See `Entities.insert_rows`."""
    form = stored_forms(table, conn.dialect).get("synced_at")
    at = form(stamp) if form is not None else stamp
    # (each row's fields, then the stamp instead of its line)
    _fill(conn, table, (*fields, "synced_at"), list(map(add, map(itemgetter(slice(-1)), rows), repeat((at,)))))
    return len(rows)


def replace_rows(conn: Connection, schema: Schema, entity: str, fields: tuple[str, ...],
                 rows: Sequence[tuple[Any, ...]], first: datetime, stamp: datetime) -> int:
    """See `Entities.replace_rows`."""
    if not rows:
        return 0
    dialect = conn.dialect.name
    stage = _load_tables(schema, entity, dialect)[0]
    conn.exec_driver_sql(f'DELETE FROM "{stage.name}"')
    _fill(conn, stage, (*fields, "line"), rows)
    execute_many(conn, _history_statement(schema, entity, stage, fields), [{"first": first, "stamp": stamp}])
    return max(execute_many(conn, _upsert_statement(schema.entity(entity), stage, fields, dialect),
                            [{"stamp": stamp}]), 0)


def _repeated_sql(stage: Table, seen: Table, keys: tuple[str, ...], what: str, source: int) -> str:
    """SELECT (key, line, the earlier line) of the staged rows whose key this source named on another line, or
    DELETE them from the stage."""
    same = " AND ".join(f'n."{k}" = s."{k}"' for k in keys)
    repeated = f"n.source = {int(source)} AND n.line != s.line"
    if what == "SELECT":
        names = ", ".join(f's."{k}"' for k in keys)
        return f'SELECT {names}, s.line, n.line FROM "{stage.name}" s JOIN "{seen.name}" n ON {same} WHERE {repeated}'
    return (f'DELETE FROM "{stage.name}" WHERE EXISTS (SELECT 1 FROM "{seen.name}" n, "{stage.name}" s '
            f'WHERE s.line = "{stage.name}".line AND {same} AND {repeated})')


@lru_cache(maxsize=64)
def _unchanged_statement(schema: Schema, entity: str, stage: Table, fields: tuple[str, ...]) -> Any:
    """DELETE from the stage the rows whose stored row has the same named fields (and is not removed)."""
    table, keys = schema.entity(entity), KEYS[entity]
    same = and_(*(table.c[k] == stage.c[k] for k in keys))
    return stage.delete().where(exists().where(same, ~_changed(table, stage.c, fields)))


def stored_forms(table: Table, dialect: Any) -> dict[str, Callable[[Any], Any]]:
    """Each column's bind processor on this dialect, for the columns that have one."""
    forms = {}
    for column in table.c:
        proc = column.type.dialect_impl(dialect).bind_processor(dialect)
        if proc is not None:
            forms[column.name] = proc
    return forms


def _driver_insert(conn: Connection, table: Table, columns: Sequence[str], conflict: Sequence[str] = ()) -> str:
    """INSERT INTO table (columns) VALUES (one placeholder each) [ON CONFLICT (conflict) DO NOTHING], in the
    driver's parameter style, for rows of plain values."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    names = ", ".join(f'"{c}"' for c in columns)
    sql = f'INSERT INTO "{table.name}" ({names}) VALUES ({", ".join([mark] * len(columns))})'
    if conflict:
        sql += f' ON CONFLICT ({", ".join(conflict)}) DO NOTHING'
    return sql


@lru_cache(maxsize=64)
def _history_statement(schema: Schema, entity: str, stage: Table, fields: tuple[str, ...]) -> Any:
    """INSERT into the field history the stored versions the staged rows change (stamped before `first`),
    valid until `stamp`."""
    table, past, keys = schema.entity(entity), schema.history[entity], KEYS[entity]
    same = and_(*(table.c[k] == stage.c[k] for k in keys))
    replaced = and_(or_(table.c.synced_at.is_(None), table.c.synced_at < bindparam("first", type_=DateTime)),
                    _changed(table, stage.c, fields))
    kept = [c.name for c in past.c if c.name not in ("valid_from", "valid_to")]
    return past.insert().from_select(
        [*kept, "valid_from", "valid_to"],
        select(*(table.c[n] for n in kept), func.coalesce(table.c.synced_at, EPOCH),
               bindparam("stamp", type_=DateTime)).select_from(table.join(stage, same)).where(replaced))


def _changed(table: Table, new: Any, fields: Sequence[str]) -> Any:
    """Whether a stored row differs from a new one (`new[name]`: the staged row's or the upsert's `excluded`
    columns) in the named non-key fields, or is removed and named again."""
    keys = KEYS[table.name]
    differs = [table.c[f].is_distinct_from(new[f]) for f in fields if f not in keys]
    if "removed_at" in table.c and "removed_at" not in fields:
        differs.append(table.c.removed_at.is_not(None))
    return or_(*differs) if differs else false()


@lru_cache(maxsize=64)
def _upsert_statement(table: Table, stage: Table, fields: tuple[str, ...], dialect: str) -> Any:
    """INSERT … SELECT from the staged rows … ON CONFLICT DO UPDATE the named fields WHERE they changed."""
    stmt = sql_dialect.insert(table, dialect).from_select(
        [*fields, "synced_at"], select(*(stage.c[f] for f in fields), bindparam("stamp", type_=DateTime))
        .where(true()))
    excluded = stmt.excluded
    updates: dict[str, Any] = {c: excluded[c] for c in fields if c not in KEYS[table.name]}
    if "removed_at" in table.c and "removed_at" not in fields:
        updates["removed_at"] = null()
    updates["synced_at"] = excluded.synced_at
    return stmt.on_conflict_do_update(index_elements=list(KEYS[table.name]), set_=updates,
                                      where=_changed(table, excluded, fields))


@lru_cache(maxsize=64)
def _claim_statement(stage: Table, seen: Table, dialect: str) -> Any:
    """Name the staged rows' keys for a source: a key new to the sync, or last named by another source, takes
    the row's source and line (the first row's, when the stage has the key twice); a key this source
    already named is left alone (not counted: a duplicate)."""
    keys = [c.name for c in seen.primary_key.columns]
    rows = select(*(stage.c[k] for k in keys), bindparam("source", type_=Integer), stage.c.line).where(true())
    if dialect == "postgresql":     # (one statement may not update a row twice: the first line of each key)
        rows = rows.distinct(*(stage.c[k] for k in keys)).order_by(*(stage.c[k] for k in keys), stage.c.line)
    stmt = sql_dialect.insert(seen, dialect).from_select([*keys, "source", "line"], rows)
    return stmt.on_conflict_do_update(index_elements=[c.name for c in seen.primary_key.columns],
                                      set_={"source": stmt.excluded.source, "line": stmt.excluded.line},
                                      where=seen.c.source != stmt.excluded.source)


@lru_cache(maxsize=64)
def _load_tables(schema: Schema, entity: str, dialect: str) -> tuple[Table, Table]:
    """The temporary tables of one entity's sync: the staged rows of a chunk (the entity's fields and the row's
    line), and the keys the sync named so far (with the source and line that named each)."""
    table, keys = schema.entity(entity), KEYS[entity]
    md = MetaData()
    fields = [Column(c.name, c.type) for c in table.c if c.name != "synced_at"]
    stage = Table(f"_stage_{entity}", md, *fields, Column("line", Integer), prefixes=["TEMPORARY"])
    seen = Table(f"_seen_{entity}", md, *(Column(k, table.c[k].type, primary_key=True) for k in keys),
                 Column("source", Integer, nullable=False), Column("line", Integer, nullable=False),
                 prefixes=["TEMPORARY"], sqlite_with_rowid=False)
    return stage, seen


@lru_cache(maxsize=64)
def _grouped_tables(schema: Schema, entity: str) -> tuple[Table, ...]:
    """The temporary tables of a grouped usage sync (see `Entities.note_accounts`): the accounts it named, and
    the keys of their stored rows it did not name; none for the other entities."""
    if entity != "usage":
        return ()
    table, md = schema.usage, MetaData()
    named = Table("_named_accounts", md, Column("account_id", table.c.account_id.type, primary_key=True),
                  prefixes=["TEMPORARY"], sqlite_with_rowid=False)
    absent = Table("_absent_usage", md, *(Column(k, table.c[k].type, primary_key=True) for k in KEYS["usage"]),
                   prefixes=["TEMPORARY"], sqlite_with_rowid=False)
    return named, absent


def _seen(schema: Schema, entity: str, dialect: str, table: Table) -> Any:
    """Whether a row of `table` has a key this sync named."""
    seen = _load_tables(schema, entity, dialect)[1]
    return exists().where(*(seen.c[k] == table.c[k] for k in KEYS[entity]))


def _keep_versions(conn: Connection, schema: Schema, entity: str, where: Any, stamp: datetime) -> None:
    """Copy the rows of the entity matching `where` to its field history, valid until `stamp`."""
    table, past = schema.entity(entity), schema.history[entity]
    kept = [c.name for c in past.c if c.name not in ("valid_from", "valid_to")]
    conn.execute(past.insert().from_select(
        [*kept, "valid_from", "valid_to"],
        select(*(table.c[n] for n in kept), func.coalesce(table.c.synced_at, EPOCH), literal(stamp, DateTime))
        .where(where)))


def _fill(conn: Connection, table: Table, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert rows (tuples of plain values in the order of `columns`) into a temporary table: COPY on PostgreSQL
    (psycopg), the driver's executemany elsewhere."""
    if sql_dialect.psycopg(conn):
        names = ", ".join(f'"{c}"' for c in columns)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)
        finally:
            cursor.close()
        return
    conn.exec_driver_sql(_driver_insert(conn, table, columns), rows)


def _key_matches(table: Table, keys: Iterable[tuple[Any, ...]], names: tuple[str, ...], step: int = 500
                 ) -> Iterator[Any]:
    """Conditions matching the rows of `table` with these keys (values of `names`), `step` keys each (bounded
    IN lists)."""
    batch = list(keys)
    for start in range(0, len(batch), step):
        part = batch[start:start + step]
        if len(names) == 1:
            yield table.c[names[0]].in_([k[0] for k in part])
        else:
            yield tuple_(*(table.c[n] for n in names)).in_([tuple(k) for k in part])
