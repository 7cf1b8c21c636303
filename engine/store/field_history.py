"""Field history (§18): accounts, contacts, goals and usage as they were synced at any past moment.

How it is kept. A sync rewrites only the rows whose values changed (engine/store/entities.py), so a row's
`synced_at` is when its current values were synced: the current version is valid from `synced_at` on. When a
sync changes a row, marks it removed, or (usage) deletes it, the version it replaces is copied to
`<entity>_history` with `valid_from` (the `synced_at` it had) and `valid_to` (the stamp of the sync that
replaced it). The record grows with changes, not with rows × syncs. The interval is half-open: a version is
valid at moment m when valid_from <= m < valid_to (the current one: valid_from <= m).

Reading it — each one statement, a plain selectable to run, join, or fill a table from:

- `as_of(schema, entity, moment)`: the entity's rows at `moment`, with the entity table's own columns
  (`synced_at` is when that version was synced). Removed rows are there with `removed_at` set, exactly as the
  live table has them then: filter `removed_at IS NULL` as the tick does. Usage rows count from when they were
  synced: a row synced after `moment` is absent, a revised value applies from its revision, a row a snapshot
  deleted is there until it was deleted. (Usage days are data: a row for day d synced at s is seen from s on.)
- `versions(schema, entity)`: every version, current ones included: the entity's columns without `synced_at`,
  plus `valid_from` and `valid_to` (NULL while current).
- `at_moments(schema, entity, moments)`: set-based over many moments: one row per (moment, version valid
  then), the columns of `as_of` plus `moment`. `moments` is any selectable with a column `moment` (naive UTC
  datetimes), e.g. `moments_table(...)`. A backtest evaluates many days with one statement per entity.
- `tx.field_history.snapshot(moment)` fills temporary tables `asof_accounts`, `asof_contacts`,
  `asof_goals`, `asof_usage` with `as_of` each (one INSERT … SELECT per entity, on the transaction's
  connection) and returns a copy of the Schema whose entity tables are those: code that builds its SQL from
  a Schema (the compiled expressions, store/scans.py, store/subjects.py) then reads the past unchanged.

Times are naive UTC, like every stored time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (Column, DateTime, Index, MetaData, Table, and_, false, func, literal, null, or_, select,
                        union_all)

from engine.datamodel import ENTITIES
from engine.store.schema import Repository, Schema

SNAPSHOT_PREFIX = "asof_"


def as_of(schema: Schema, entity: str, moment: datetime) -> Any:
    """SELECT of the entity's rows as they were at `moment` (the entity table's columns)."""
    table, past = schema.entity(entity), schema.history[entity]
    current = select(table).where(or_(table.c.synced_at.is_(None), table.c.synced_at <= moment))
    replaced = (select(*(past.c[c.name] if c.name != "synced_at" else past.c.valid_from.label("synced_at")
                         for c in table.c))
                .where(past.c.valid_from <= moment, past.c.valid_to > moment))
    return union_all(current, replaced)


def versions(schema: Schema, entity: str) -> Any:
    """SELECT of every version of the entity's rows: its fields (and removed_at), valid_from, valid_to (NULL:
    the current version)."""
    table, past = schema.entity(entity), schema.history[entity]
    fields = [c.name for c in table.c if c.name != "synced_at"]
    current = select(*(table.c[n] for n in fields), table.c.synced_at.label("valid_from"),
                     null().cast(DateTime).label("valid_to"))
    replaced = select(*(past.c[n] for n in fields), past.c.valid_from, past.c.valid_to)
    return union_all(current, replaced)


def at_moments(schema: Schema, entity: str, moments: Any) -> Any:
    """SELECT of (moment, the entity's columns as `as_of` has them) for every moment of `moments` (a selectable
    with a column `moment`): the versions valid at each moment."""
    v = versions(schema, entity).subquery("v")
    m = moments.subquery("m") if hasattr(moments, "subquery") else moments
    table = schema.entity(entity)
    cols = [v.c[c.name] if c.name != "synced_at" else v.c.valid_from.label("synced_at") for c in table.c]
    valid = and_(or_(v.c.valid_from.is_(None), v.c.valid_from <= m.c.moment),
                 or_(v.c.valid_to.is_(None), v.c.valid_to > m.c.moment))
    return select(m.c.moment, *cols).select_from(m.join(v, valid))


def change_moments(conn: Any, schema: Schema, after: datetime, until: datetime) -> list[datetime]:
    """The distinct moments in (after, until] at which any entity's data changed: a current version's
    `synced_at` or a replaced version's `valid_to` (one statement per table)."""
    found: set[datetime] = set()
    for entity in ENTITIES:
        table, past = schema.entity(entity), schema.history[entity]
        for col in (table.c.synced_at, past.c.valid_to):
            found.update(m for (m,) in conn.execute(select(col).distinct().where(col > after, col <= until)))
    return sorted(found)


def moments_table(moments: Iterable[datetime]) -> Any:
    """A selectable of the given moments (column `moment`), to pass to `at_moments`."""
    rows = [select(literal(m, DateTime).label("moment")) for m in moments]
    if not rows:
        return select(literal(None, DateTime).label("moment")).where(false())
    return rows[0] if len(rows) == 1 else union_all(*rows)


class FieldHistory(Repository):
    """The field history on one connection (tx.field_history): snapshots of the past in temporary tables."""

    def snapshot(self, moment: datetime, entities: Iterable[str] = ENTITIES) -> Schema:
        """Fill temporary tables `asof_<entity>` with the entities as of `moment` (replacing what they held);
        a copy of the schema whose entity tables are those. They live as long as the connection."""
        tables: dict[str, Table] = {}
        md = MetaData()
        for entity in entities:
            temp = _temporary_copy(md, self.schema.entity(entity))
            temp.drop(self.conn, checkfirst=True)
            temp.create(self.conn)
            self.conn.execute(temp.insert().from_select([c.name for c in temp.c], as_of(self.schema, entity, moment)))
            tables[entity] = temp
        return dataclasses.replace(self.schema, **tables)

    def drop_snapshot(self, entities: Iterable[str] = ENTITIES) -> None:
        """Drop the temporary tables of `snapshot`."""
        md = MetaData()
        for entity in entities:
            _temporary_copy(md, self.schema.entity(entity)).drop(self.conn, checkfirst=True)

    def first_synced(self, entity: str = "accounts") -> datetime | None:
        """The earliest moment the entity's data is known from (naive UTC): the oldest version kept, or the oldest
        current row; None when nothing was ever synced."""
        live, past = self.schema.entity(entity), self.schema.history[entity]
        oldest = [self.conn.scalar(select(func.min(live.c.synced_at))),
                  self.conn.scalar(select(func.min(past.c.valid_from)))]
        known = [at for at in oldest if at is not None]
        return min(known) if known else None

    def count(self, entity: str) -> int:
        """How many replaced versions of the entity's rows are kept."""
        return int(self.conn.scalar(select(func.count()).select_from(self.schema.history[entity])) or 0)


def _temporary_copy(md: MetaData, table: Table) -> Table:
    """A temporary table with the columns and key of `table`, named `asof_<name>`, indexed by account."""
    cols = [Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable) for c in table.c]
    temp = Table(SNAPSHOT_PREFIX + table.name, md, *cols, prefixes=["TEMPORARY"])
    if "account_id" in temp.c and table.name != "usage":
        Index(f"ix_{temp.name}_account", temp.c.account_id)
    if table.name == "usage":
        Index(f"ix_{temp.name}_metric", temp.c.metric, temp.c.account_id, temp.c.day, temp.c.value)
    return temp

