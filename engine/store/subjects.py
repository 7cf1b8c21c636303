"""Reading subject records (account, contact, goal rows) for rendering, explain and recipients."""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from typing import Any, Callable, Iterable

from sqlalchemy import Connection, func, select

from engine.datamodel import ENTITY_OF, SUBJECT_TYPES
from engine.store.dialect import in_list
from engine.store.schema import Repository, Schema


@lru_cache(maxsize=32)
def _by_id(table: Any, dialect: str) -> tuple[Any, list[str]]:
    """SELECT of a table's rows (without synced_at) whose ids are in `b_ids`, and its column names."""
    cols = [c for c in table.c if c.name != "synced_at"]
    return select(*cols).where(in_list(table.c.id, "b_ids", dialect)), [c.name for c in cols]


@lru_cache(maxsize=32)
def _live_contacts(schema: Schema, dialect: str) -> tuple[Any, list[str]]:
    """SELECT of the live, subscribed contacts of the accounts in `b_ids`, in id order, and its column names."""
    c = schema.contacts
    cols = [col for col in c.c if col.name != "synced_at"]
    return (select(*cols).where(in_list(c.c.account_id, "b_ids", dialect), c.c.removed_at.is_(None),
                                c.c.unsubscribed.isnot(True)).order_by(c.c.id), [col.name for col in cols])


# rows per entity a RowCache holds: a 1M-account steady tick acts on ~12,000 accounts. Held as templates see
# them, an account row of 16 fields takes ~1.4 KB and a contact ~0.9 KB: with the role contacts of as many
# accounts, a full cache holds ~90 MB.
ROW_CACHE_LIMIT = 20_000


class RowCache:
    """Entity rows by id, read at most once while it lives (one tick: many playbooks act on the same changed
    accounts). Holds at most `limit` (default ROW_CACHE_LIMIT) rows per entity; beyond that it starts afresh.
    With `shape`, every row is stored as `shape(row)` (the tick keeps rows as templates see them, so each row
    is converted once per tick, not once per playbook and transition)."""

    def __init__(self, limit: int | None = None, shape: Callable[[dict], dict] | None = None):
        self.limit = ROW_CACHE_LIMIT if limit is None else limit
        self.shape = shape
        self._rows: dict[str, dict[str, dict | None]] = {}
        self._contacts: dict[str, list[dict]] = {}          # account id -> its live, subscribed contacts

    def rows(self, conn: Connection, table: Any, ids: Iterable[str]) -> dict[str, dict]:
        """id -> row (without synced_at) of the given ids that exist, removed rows included."""
        ids = list(ids)
        known = self._rows.setdefault(table.name, {})
        missing = self._to_read(known, ids)
        if missing:
            stmt, keys = _by_id(table, conn.dialect.name)
            found = {row[0]: self._shaped(dict(zip(keys, row))) for row in conn.execute(stmt, {"b_ids": missing})}
            for i in missing:
                known[i] = found.get(i)
        return {i: known[i] for i in ids if known.get(i) is not None}

    def contacts(self, conn: Connection, schema: Schema, account_ids: Iterable[str]) -> dict[str, list[dict]]:
        """account id -> its live contacts that did not unsubscribe, in id order."""
        account_ids = list(account_ids)
        missing = self._to_read(self._contacts, account_ids)
        if missing:
            stmt, keys = _live_contacts(schema, conn.dialect.name)
            for a in missing:
                self._contacts[a] = []
            for values in conn.execute(stmt, {"b_ids": missing}):
                row = self._shaped(dict(zip(keys, values)))
                self._contacts[row["account_id"]].append(row)
        return {a: self._contacts[a] for a in account_ids}

    def _shaped(self, row: dict) -> dict:
        return row if self.shape is None else self.shape(row)

    def _to_read(self, known: dict[str, Any], ids: list[str]) -> list[str]:
        """The ids to read, sorted: those not known yet; when they would overflow the bound, the cache starts
        afresh and everything asked for is read again."""
        missing = {i for i in ids if i not in known}
        if len(known) + len(missing) > self.limit:
            known.clear()
            missing = set(ids)
        return sorted(missing)


class Subjects(Repository):
    """Subject rows (accounts, contacts, goals) as templates, recipients and `explain` read them."""

    def records(self, subject: str, ids: Iterable[str], cache: RowCache | None = None) -> dict[str, dict[str, dict]]:
        """subject id -> {'account': row, 'contact'|'goal': row} (removed rows included: resolves need them)."""
        conn, schema = self.conn, self.schema
        cache = cache or RowCache()
        a = schema.accounts
        if subject == "account":
            return {i: {"account": row} for i, row in cache.rows(conn, a, ids).items()}
        own = cache.rows(conn, schema.entity(ENTITY_OF[subject]), ids)
        accounts = cache.rows(conn, a, {row["account_id"] for row in own.values()})
        return {i: {subject: row, "account": accounts.get(row["account_id"], {})} for i, row in own.items()}

    def contacts_with_roles(self, account_ids: Iterable[str], roles: list[str],
                            cache: RowCache | None = None) -> dict[str, list[dict]]:
        """account id -> its live contacts with one of `roles`, unsubscribed ones left out, in id order."""
        wanted = set(roles)
        found = (cache or RowCache()).contacts(self.conn, self.schema, set(account_ids))
        return {a: mine for a, rows in found.items() if (mine := [r for r in rows if r["role"] in wanted])}

    def usage_rows(self, account_id: str, since: date, until: date) -> dict[str, dict]:
        """metric -> {day: value} of one account over a date range (for explain's Python evaluation)."""
        u = self.schema.usage
        q = select(u.c.metric, u.c.day, u.c.value).where(u.c.account_id == account_id, u.c.day >= since,
                                                          u.c.day <= until)
        out: dict[str, dict] = {}
        for metric, day, value in self.conn.execute(q):
            out.setdefault(metric, {})[day] = value
        return out

    def usage_of(self, account_ids: list[str], metrics: list[str], since: date, until: date) -> dict[str, dict]:
        """account id -> metric -> {day: value}: these accounts' usage rows of these metrics over a date range
        (what templates' metric() calls read when actions are planned)."""
        u = self.schema.usage
        q = select(u.c.account_id, u.c.metric, u.c.day, u.c.value).where(
            in_list(u.c.account_id, "b_accounts", self.dialect), u.c.metric.in_(metrics), u.c.day >= since,
            u.c.day <= until)
        out: dict[str, dict] = {}
        for account, metric, day, value in self.conn.execute(q, {"b_accounts": account_ids}):
            out.setdefault(account, {}).setdefault(metric, {})[day] = value
        return out

    def metric_names(self) -> list[str]:
        """The distinct metrics of the usage rows, in name order: one index lookup per metric (a recursive
        `min(metric) > previous` over ix_usage_metric_account_day), not a scan of every row."""
        u = self.schema.usage
        found = select(func.min(u.c.metric).label("metric")).cte("found", recursive=True)
        following = select(func.min(u.c.metric)).where(u.c.metric > found.c.metric).scalar_subquery()
        found = found.union_all(select(following).where(found.c.metric.is_not(None)))
        return [m for (m,) in self.conn.execute(select(found.c.metric).where(found.c.metric.is_not(None)))]

    def find(self, subject_id: str) -> list[str]:
        """Which subject types hold this id: ['account', …]."""
        found = []
        for stype in SUBJECT_TYPES:
            t = self.schema.entity(ENTITY_OF[stype])
            if self.conn.execute(select(t.c.id).where(t.c.id == subject_id)).first() is not None:
                found.append(stype)
        return found
