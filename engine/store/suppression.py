"""The suppression list: addresses that must never be emailed again (unsubscribed, bounced)."""

from __future__ import annotations

from datetime import datetime
from typing import Iterable

from sqlalchemy import delete, func, select

from engine.store import dialect as sql_dialect
from engine.store.schema import Repository


class Suppressions(Repository):
    """Suppressed addresses, lower-cased."""

    def blocked(self, addresses: Iterable[str]) -> set[str]:
        """Lower-cased addresses among `addresses` that are suppressed or belong to an unsubscribed contact."""
        wanted = sorted({a.strip().lower() for a in addresses if a})
        if not wanted:
            return set()
        s, c = self.schema.suppressions, self.schema.contacts
        out = {r[0] for r in self.conn.execute(select(s.c.email).where(s.c.email.in_(wanted)))}
        out |= {r[0].lower() for r in self.conn.execute(
            select(c.c.email).where(func.lower(c.c.email).in_(wanted), c.c.unsubscribed.is_(True)))}
        return out

    def add(self, email: str, reason: str, now: datetime, detail: str | None = None) -> None:
        """Suppress an address (idempotent: the first reason is kept)."""
        ins = sql_dialect.insert(self.schema.suppressions, self.dialect)
        self.conn.execute(ins.on_conflict_do_nothing(index_elements=["email"]),
                          [dict(email=email.strip().lower(), reason=reason, at=now, detail=detail)])

    def remove(self, email: str) -> int:
        """Take an address off the list (resubscribe)."""
        s = self.schema.suppressions
        return self.conn.execute(delete(s).where(s.c.email == email.strip().lower())).rowcount or 0

    def list(self) -> list[dict]:
        """Every suppressed address, newest first."""
        s = self.schema.suppressions
        return [dict(r) for r in self.conn.execute(select(s).order_by(s.c.at.desc())).mappings()]
