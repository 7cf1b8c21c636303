"""The built-in task list: tasks created by playbooks, closed when their episode resolves."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from engine.store.bulk import execute_many, in_list
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
    if not episodes:
        return []
    wanted = set(episodes)
    found = conn.execute(_open_of_subjects(schema, conn.dialect.name),
                         {"b_pb": playbook_id, "b_type": subject_type, "b_ids": sorted({sid for sid, _ in wanted})})
    return [dict(r) for r in found.mappings() if (r["subject_id"], r["episode"]) in wanted]


@lru_cache(maxsize=32)
def _open_of_subjects(schema: Schema, dialect: str) -> Any:
    """The open tasks to close on resolve of one (playbook, subject type) among some subject ids, in id order
    (through ix_tasks_episode: a lookup per subject)."""
    t = schema.tasks
    return (select(t).where(t.c.playbook_id == bindparam("b_pb"), t.c.subject_type == bindparam("b_type"),
                            in_list(t.c.subject_id, "b_ids", dialect), t.c.status == "open",
                            t.c.close_on_resolve.is_(True)).order_by(t.c.id))


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


