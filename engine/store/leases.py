"""Named leases in the database: the leader lease `playbook start` processes compete for."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from engine.store.schema import Repository


class Leases(Repository):
    """Leases by name, each with its holder, a fencing token and an expiry."""

    def acquire(self, name: str, owner: str, now: datetime, ttl_s: float) -> int | None:
        """Take or renew the lease; returns the fencing token when `owner` holds it, else None."""
        conn, lt = self.conn, self.schema.leases
        until = now + timedelta(seconds=ttl_s)
        res = conn.execute(update(lt).where(lt.c.name == name, lt.c.owner == owner, lt.c.until >= now)
                           .values(until=until))
        if res.rowcount == 1:
            return conn.execute(select(lt.c.token).where(lt.c.name == name)).scalar_one()
        res = conn.execute(update(lt).where(lt.c.name == name, (lt.c.until < now) | (lt.c.owner == owner))
                           .values(owner=owner, token=lt.c.token + 1, until=until))
        if res.rowcount == 1:
            return conn.execute(select(lt.c.token).where(lt.c.name == name)).scalar_one()
        if conn.execute(select(lt.c.name).where(lt.c.name == name)).first() is None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(lt).values(name=name, owner=owner, token=1, until=until))
                return 1
            except IntegrityError:
                return None
        return None

    def release(self, name: str, owner: str) -> None:
        """Give the lease up at once (clean shutdown) so another process takes over without waiting."""
        lt = self.schema.leases
        self.conn.execute(update(lt).where(lt.c.name == name, lt.c.owner == owner).values(until=datetime(1970, 1, 1)))

    def holder(self, name: str) -> dict | None:
        """The lease row (owner, token, until), or None if never taken."""
        lt = self.schema.leases
        row = self.conn.execute(select(lt).where(lt.c.name == name)).mappings().first()
        return dict(row) if row else None
