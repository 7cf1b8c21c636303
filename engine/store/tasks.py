"""The built-in task list: tasks created by playbooks, closed when their episode resolves."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from engine.store.bulk import execute_many
from engine.store.schema import Schema


def create(conn: Connection, schema: Schema, row: dict[str, Any]) -> int:
    """Insert a task once per dedup key; returns its id (the existing one on a retry)."""
    t = schema.tasks
    ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(t)
    conn.execute(ins.on_conflict_do_nothing(index_elements=["dedup_key"]), [row])
    return int(conn.execute(select(t.c.id).where(t.c.dedup_key == row["dedup_key"])).scalar_one())


def create_many(conn: Connection, schema: Schema, rows: list[dict[str, Any]]) -> None:
    """Insert tasks; a dedup key already present is left alone (a retried batch)."""
    execute_many(conn, _create(schema, conn.dialect.name), rows)


@lru_cache(maxsize=32)
def _create(schema: Schema, dialect: str) -> Any:
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(schema.tasks)
    return ins.on_conflict_do_nothing(index_elements=["dedup_key"])


def open_for_episodes(conn: Connection, schema: Schema, playbook_id: str, subject_type: str,
                      episodes: list[tuple[str, int]]) -> list[dict]:
    """Open tasks these (subject id, episode) pairs created that should close when they resolve, in id order."""
    t = schema.tasks
    out: list[dict] = []
    for i in range(0, len(episodes), 500):
        part = episodes[i:i + 500]
        q = select(t).where(t.c.playbook_id == playbook_id, t.c.subject_type == subject_type,
                            t.c.subject_id.in_([sid for sid, _ in part]), tuple_(t.c.subject_id, t.c.episode).in_(part),
                            t.c.status == "open", t.c.close_on_resolve.is_(True)).order_by(t.c.id)
        out += [dict(r) for r in conn.execute(q).mappings()]
    return out


def close(conn: Connection, schema: Schema, dedup_key: str, now: datetime) -> bool:
    """Close one task by the dedup key of the action that created it."""
    t = schema.tasks
    res = conn.execute(update(t).where(t.c.dedup_key == dedup_key, t.c.status == "open")
                       .values(status="closed", closed_at=now))
    return (res.rowcount or 0) > 0


def set_external_id(conn: Connection, schema: Schema, dedup_key: str, external_id: str) -> None:
    conn.execute(update(schema.tasks).where(schema.tasks.c.dedup_key == dedup_key).values(external_id=external_id))


def list_tasks(conn: Connection, schema: Schema, *, status: str | None = "open", assignee: str | None = None,
               limit: int = 100) -> list[dict]:
    t = schema.tasks
    q = select(t).order_by(t.c.due_at.is_(None), t.c.due_at, t.c.id).limit(limit)
    if status:
        q = q.where(t.c.status == status)
    if assignee:
        q = q.where(t.c.assignee == assignee)
    return [dict(r) for r in conn.execute(q).mappings()]


