"""The engine's record of every task its playbooks created, in any system (the built-in task list is this
table; CRM connectors record theirs here too), so that a resolve can close them."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, or_, select, update

from engine.store import dialect as sql_dialect
from engine.store.bulk import execute_many
from engine.store.dialect import in_list
from engine.store.schema import Repository, Schema

BUILTIN = "builtin"     # the connector of the built-in task list's own tasks (the others are in a CRM)


class Tasks(Repository):
    """Tasks by the dedup key of the action that created them."""

    def create(self, row: dict[str, Any]) -> int:
        """Insert a task once per dedup key; returns its id (the existing one on a retry)."""
        t = self.schema.tasks
        self.conn.execute(_create(self.schema, self.dialect), [row])
        return int(self.conn.execute(select(t.c.id).where(t.c.dedup_key == row["dedup_key"])).scalar_one())

    def create_many(self, rows: list[dict[str, Any]]) -> None:
        """Insert tasks; a dedup key already present is left alone (a retried batch)."""
        execute_many(self.conn, _create(self.schema, self.dialect), rows)

    def open_for_episodes(self, playbook_id: str, subject_type: str, episodes: list[tuple[str, int]]) -> list[dict]:
        """Open tasks these (subject id, episode) pairs created that should close when they resolve, in id
        order."""
        if not episodes:
            return []
        wanted = set(episodes)
        found = self.conn.execute(_open_of_subjects(self.schema, self.dialect), {
            "b_pb": playbook_id, "b_type": subject_type, "b_ids": sorted({sid for sid, _ in wanted})})
        return [dict(r) for r in found.mappings() if (r["subject_id"], r["episode"]) in wanted]

    def close(self, dedup_key: str, now: datetime) -> bool:
        """Close one task by the dedup key of the action that created it."""
        t = self.schema.tasks
        res = self.conn.execute(update(t).where(t.c.dedup_key == dedup_key, t.c.status == "open")
                                .values(status="closed", closed_at=now))
        return (res.rowcount or 0) > 0

    def set_external_id(self, dedup_key: str, external_id: str) -> None:
        """The id the external system gave the task."""
        t = self.schema.tasks
        self.conn.execute(update(t).where(t.c.dedup_key == dedup_key).values(external_id=external_id))

    def list(self, *, status: str | None = "open", assignee: str | None = None, awake_at: datetime | None = None,
             limit: int = 100) -> list[dict]:
        """Tasks by due date (undated last); with `awake_at`, not those snoozed past that instant."""
        t = self.schema.tasks
        q = select(t).order_by(t.c.due_at.is_(None), t.c.due_at, t.c.id).limit(limit)
        if status:
            q = q.where(t.c.status == status)
        if assignee:
            q = q.where(t.c.assignee == assignee)
        if awake_at is not None:
            q = q.where(or_(t.c.snoozed_until.is_(None), t.c.snoozed_until <= awake_at))
        return [dict(r) for r in self.conn.execute(q).mappings()]

    def get(self, task_id: int) -> dict | None:
        """One task by its id."""
        t = self.schema.tasks
        row = self.conn.execute(select(t).where(t.c.id == task_id)).mappings().first()
        return dict(row) if row else None

    def mark_done(self, task_id: int, now: datetime, note: str | None) -> bool:
        """A person did an open task: it is `done` (a resolve no longer closes it), with their note."""
        t = self.schema.tasks
        res = self.conn.execute(update(t).where(t.c.id == task_id, t.c.status == "open")
                                .values(status="done", closed_at=now, note=note))
        return (res.rowcount or 0) > 0

    def snooze(self, task_id: int, until: datetime) -> bool:
        """Leave an open task out of the open list until `until` (naive UTC)."""
        t = self.schema.tasks
        res = self.conn.execute(update(t).where(t.c.id == task_id, t.c.status == "open")
                                .values(snoozed_until=until))
        return (res.rowcount or 0) > 0


@lru_cache(maxsize=32)
def _create(schema: Schema, dialect: str) -> Any:
    return sql_dialect.insert(schema.tasks, dialect).on_conflict_do_nothing(index_elements=["dedup_key"])


@lru_cache(maxsize=32)
def _open_of_subjects(schema: Schema, dialect: str) -> Any:
    """The open tasks to close on resolve of one (playbook, subject type) among some subject ids, in id order
    (through ix_tasks_episode: a lookup per subject)."""
    t = schema.tasks
    return (select(t).where(t.c.playbook_id == bindparam("b_pb"), t.c.subject_type == bindparam("b_type"),
                            in_list(t.c.subject_id, "b_ids", dialect), t.c.status == "open",
                            t.c.close_on_resolve.is_(True)).order_by(t.c.id))
