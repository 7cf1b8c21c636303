"""What changed since an earlier tick, read from the row stamps syncs write (`synced_at`).

Every row a sync writes, and every row it marks removed, carries that sync's stamp, and stamps of a
table grow in commit order (store/entities.py: next_stamp, lock_entity). So the newest stamp of
each table, read before a tick evaluates, is a mark: the rows changed after it are exactly the rows
stamped later. engine/scope.py decides from these marks which subjects a tick must evaluate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, DateTime, String, Table, cast, func, select, type_coerce

from engine.datamodel import ENTITIES, ENTITY_OF
from engine.store.dialect import in_list
from engine.store.schema import Repository, Schema


@dataclass(frozen=True)
class ChangeMarks:
    """The newest row stamp of every synced table (None: no stamped rows), and of the latest usage
    sync that deleted rows."""

    stamps: dict[str, datetime | None]
    usage_removed: datetime | None

    def as_json(self) -> dict[str, str | None]:
        return {e: (v.isoformat() if v else None) for e, v in self.stamps.items()}



class Changes(Repository):
    """The change marks of the synced tables."""

    def marks(self) -> ChangeMarks:
        """The current marks (each an index lookup). The usage mark counts the latest sync that deleted usage
        rows too: a sync that only deleted rows stamped none."""
        stamps = {entity: newest_stamp(self.conn, self.schema.entity(entity)) for entity in ENTITIES}
        st = self.schema.sync_state
        removed = self.conn.scalar(select(st.c.removed_stamp).where(st.c.entity == "usage"))
        stamps["usage"] = _later(stamps["usage"], removed)
        return ChangeMarks(stamps, removed)

    def changed_at_least(self, entity: str, since: datetime, cap: int) -> bool:
        """Whether at least `cap` rows of the table were stamped after `since` (reads at most `cap`)."""
        t = self.schema.entity(entity)
        probe = select(t.c.synced_at).where(t.c.synced_at > since).limit(cap).subquery()
        return (self.conn.scalar(select(func.count()).select_from(probe)) or 0) >= cap

    def estimate_rows(self, entity: str) -> int:
        """About how many rows an entity's table holds (dialect.estimate_rows)."""
        from engine.store.dialect import estimate_rows
        return estimate_rows(self.conn, self.schema.entity(entity))


def usage_mark(conn: Connection, schema: Schema) -> datetime | None:
    """The newest usage stamp, or the latest sync that deleted usage rows if that is later."""
    st = schema.sync_state
    removed = conn.scalar(select(st.c.removed_stamp).where(st.c.entity == "usage"))
    return _later(newest_stamp(conn, schema.usage), removed)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def newest_stamp(conn: Connection, table: Table) -> datetime | None:
    """The newest `synced_at` of a table (an index lookup), typed on every driver."""
    return conn.scalar(select(type_coerce(func.max(table.c.synced_at), DateTime)))


def usage_written(conn: Connection, schema: Schema, since: datetime | None) -> dict[str, tuple[set[str], set[str]]]:
    """metric -> (accounts, ISO days) of the usage rows stamped after `since`."""
    u = schema.usage.c
    newer = u.synced_at > since if since is not None else u.synced_at.is_not(None)
    written: dict[str, tuple[set[str], set[str]]] = {}
    # read through the synced_at index; deduplicated here (a DISTINCT lets the planner prefer a full scan);
    # days as text: thousands of rows, a few distinct days
    for account_id, metric, day in conn.execute(select(u.account_id, u.metric, cast(u.day, String)).where(newer)):
        accounts, days = written.setdefault(metric, (set(), set()))
        accounts.add(account_id)
        days.add(day)
    return written


class Touched:
    """The subjects whose data was stamped after some marks. The accounts touched (own row or usage) are
    read once per set of marks and shared by the account, contact and goal scans of a tick; the usage
    rows the metric-window refresh read (`usage_written`) are not read again."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self._accounts: dict[tuple[datetime, datetime | None], set[str]] = {}
        self._usage: dict[datetime | None, set[str]] = {}

    def usage_written(self, conn: Connection, since: datetime | None) -> dict[str, tuple[set[str], set[str]]]:
        """changes.usage_written, remembering the accounts for a later `accounts(...)` with the same mark."""
        written = usage_written(conn, self.schema, since)
        self._usage[since] = {a for accounts, _ in written.values() for a in accounts}
        return written

    def accounts(self, conn: Connection, since: dict[str, datetime], usage: bool) -> set[str]:
        """Accounts whose own row or (with `usage`) usage rows were stamped after `since`."""
        key = (since["accounts"], since["usage"] if usage else None)
        if key not in self._accounts:
            a, u = self.schema.accounts, self.schema.usage
            found = set(conn.execute(select(a.c.id).where(a.c.synced_at > since["accounts"])).scalars())
            if usage:
                read = self._usage.get(since["usage"])     # by the metric-window refresh, with the same mark
                found.update(read if read is not None else
                             conn.execute(select(u.c.account_id).where(u.c.synced_at > since["usage"])).scalars())
            self._accounts[key] = found
        return self._accounts[key]

    def ids(self, tx: Any, subject: str, since: dict[str, datetime], usage: bool) -> set[str]:
        """Ids of the `subject`s whose own row, account row or (with `usage`) account usage was stamped
        after `since`."""
        conn = tx.conn
        accounts = self.accounts(conn, since, usage)
        if subject == "account":
            found = set(accounts)
        else:
            entity = ENTITY_OF[subject]
            t = self.schema.entity(entity)
            found = set(conn.execute(select(t.c.id).where(t.c.synced_at > since[entity])).scalars())
            owned = select(t.c.id).where(in_list(t.c.account_id, "owners", conn.dialect.name))
            found.update(conn.execute(owned, {"owners": sorted(accounts)}).scalars())
        return found
