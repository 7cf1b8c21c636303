"""Per-playbook bookkeeping: when it was last evaluated, with what outcome (for status and catch-up)."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from engine.store.bulk import execute_many
from engine.store.schema import Schema


def record(conn: Connection, schema: Schema, playbook_id: str, *, evaluated_at: datetime, now: datetime,
           status: str, detail: dict[str, Any] | None, source_hash: str | None,
           scan: dict[str, Any] | None = None) -> None:
    """Upsert the latest evaluation of one playbook (`scan`: what its scan saw, engine/scan_plan.py)."""
    execute_many(conn, _upsert(schema, conn.dialect.name), [dict(   # compiled once (bulk.py)
        playbook_id=playbook_id, last_evaluated_at=evaluated_at, last_now=now, status=status, detail=detail,
        source_hash=source_hash, scan=scan)])


@lru_cache(maxsize=32)
def _upsert(schema: Schema, dialect: str) -> Any:
    t = schema.playbook_state
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(t)
    return ins.on_conflict_do_update(index_elements=["playbook_id"],
                                     set_={c.name: ins.excluded[c.name] for c in t.c if c.name != "playbook_id"})


def all_states(conn: Connection, schema: Schema) -> dict[str, dict]:
    t = schema.playbook_state
    return {r["playbook_id"]: dict(r) for r in conn.execute(select(t)).mappings()}


def last_synced(conn: Connection, schema: Schema) -> dict[str, datetime]:
    """entity -> when it was last synced."""
    s = schema.sync_state
    return {e: at for e, at in conn.execute(select(s.c.entity, s.c.synced_at))}
