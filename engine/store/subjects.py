"""Reading subject records (account, contact, goal rows) for rendering, explain and recipients."""

from __future__ import annotations

from datetime import date
from typing import Any, Iterable

from sqlalchemy import Connection, select

from engine.store.schema import Schema

CHUNK = 500


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(ids), CHUNK):
        yield ids[i:i + CHUNK]


def _public(conn: Connection, table: Any, where: Any, *order: Any) -> Iterable[dict[str, Any]]:
    """The rows of `table` matching `where` as dicts, without the sync bookkeeping column."""
    cols = [c for c in table.c if c.name != "synced_at"]
    keys = [c.name for c in cols]
    for row in conn.execute(select(*cols).where(*where).order_by(*order)):
        yield dict(zip(keys, row))


def records(conn: Connection, schema: Schema, subject: str, ids: Iterable[str]) -> dict[str, dict[str, dict]]:
    """subject id -> {'account': row, 'contact'|'goal': row} (removed rows included: resolves need them)."""
    ids = sorted(set(ids))
    out: dict[str, dict[str, dict]] = {}
    a = schema.accounts
    if subject == "account":
        for chunk in _chunks(ids):
            for row in _public(conn, a, [a.c.id.in_(chunk)]):
                out[row["id"]] = {"account": row}
        return out
    t = schema.contacts if subject == "contact" else schema.goals
    account_ids: dict[str, str] = {}
    for chunk in _chunks(ids):
        for row in _public(conn, t, [t.c.id.in_(chunk)]):
            out[row["id"]] = {subject: row}
            account_ids[row["id"]] = row["account_id"]
    accounts: dict[str, dict] = {}
    for chunk in _chunks(sorted(set(account_ids.values()))):
        for row in _public(conn, a, [a.c.id.in_(chunk)]):
            accounts[row["id"]] = row
    for sid, aid in account_ids.items():
        out[sid]["account"] = accounts.get(aid, {})
    return out


def contacts_with_roles(conn: Connection, schema: Schema, account_ids: Iterable[str],
                        roles: list[str]) -> dict[str, list[dict]]:
    """account id -> its live contacts with one of `roles`, unsubscribed ones left out, in id order."""
    c = schema.contacts
    out: dict[str, list[dict]] = {}
    for chunk in _chunks(sorted(set(account_ids))):
        live = [c.c.account_id.in_(chunk), c.c.role.in_(roles), c.c.removed_at.is_(None), c.c.unsubscribed.isnot(True)]
        for row in _public(conn, c, live, c.c.id):
            out.setdefault(row["account_id"], []).append(row)
    return out


def usage_rows(conn: Connection, schema: Schema, account_id: str, since: date, until: date) -> dict[str, dict]:
    """metric -> {day: value} of one account over a date range (for explain's Python evaluation)."""
    u = schema.usage
    q = select(u.c.metric, u.c.day, u.c.value).where(u.c.account_id == account_id, u.c.day >= since,
                                                      u.c.day <= until)
    out: dict[str, dict] = {}
    for metric, day, value in conn.execute(q):
        out.setdefault(metric, {})[day] = value
    return out


def find_subject(conn: Connection, schema: Schema, subject_id: str) -> list[tuple[str, str]]:
    """Which subject types hold this id: [('account', 'A1'), …]."""
    found = []
    for stype, table in (("account", schema.accounts), ("contact", schema.contacts), ("goal", schema.goals)):
        if conn.execute(select(table.c.id).where(table.c.id == subject_id)).first():
            found.append((stype, subject_id))
    return found
