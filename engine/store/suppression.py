"""The suppression list: addresses that must never be emailed again (unsubscribed, bounced)."""

from __future__ import annotations

from datetime import datetime
from typing import Iterable

from sqlalchemy import Connection, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from engine.store.schema import Schema


def blocked(conn: Connection, schema: Schema, addresses: Iterable[str]) -> set[str]:
    """Lower-cased addresses among `addresses` that are suppressed or belong to an unsubscribed contact."""
    wanted = sorted({a.strip().lower() for a in addresses if a})
    if not wanted:
        return set()
    s, c = schema.suppressions, schema.contacts
    out = {r[0] for r in conn.execute(select(s.c.email).where(s.c.email.in_(wanted)))}
    out |= {r[0].lower() for r in conn.execute(
        select(c.c.email).where(func.lower(c.c.email).in_(wanted), c.c.unsubscribed.is_(True)))}
    return out


def add(conn: Connection, schema: Schema, email: str, reason: str, now: datetime, detail: str | None = None) -> None:
    """Suppress an address (idempotent: the first reason is kept)."""
    ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(schema.suppressions)
    conn.execute(ins.on_conflict_do_nothing(index_elements=["email"]),
                 [dict(email=email.strip().lower(), reason=reason, at=now, detail=detail)])


def remove(conn: Connection, schema: Schema, email: str) -> int:
    res = conn.execute(delete(schema.suppressions).where(schema.suppressions.c.email == email.strip().lower()))
    return res.rowcount or 0


def list_all(conn: Connection, schema: Schema) -> list[dict]:
    s = schema.suppressions
    return [dict(r) for r in conn.execute(select(s).order_by(s.c.at.desc())).mappings()]
