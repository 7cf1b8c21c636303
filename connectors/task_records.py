"""The engine's record of every task it created, in any system, so resolves can close them."""

from __future__ import annotations

from datetime import datetime

from engine.store import tasks
from engine.store.db import Database
from engine.store.outbox import Claimed


def task_row(item: Claimed, connector: str, external_id: str | None, now: datetime) -> dict:
    """The `tasks` row for a task a claimed action creates."""
    p = item.payload
    due = datetime.fromisoformat(p["due_at"]).replace(tzinfo=None) if p.get("due_at") else None
    return dict(dedup_key=item.dedup_key, connector=connector, external_id=external_id,
                playbook_id=item.playbook_id, subject_type=item.subject_type, subject_id=item.subject_id,
                episode=item.episode, title=p["title"], description=p.get("description"),
                assignee=p.get("assignee"), priority=p.get("priority", "normal"), due_at=due, status="open",
                close_on_resolve=bool(p.get("close_on_resolve", True)), created_at=now, closed_at=None)


def record_task(db: Database, item: Claimed, connector: str, external_id: str | None, now: datetime) -> int:
    """Record a task created in an external system in the `tasks` table (idempotent per dedup key)."""
    with db.engine.begin() as conn:
        task_id = tasks.create(conn, db.schema, task_row(item, connector, external_id, now))
        if external_id is not None:
            tasks.set_external_id(conn, db.schema, item.dedup_key, external_id)
    return task_id


def close_task(db: Database, task_key: str, now: datetime) -> bool:
    """Mark the task created by action `task_key` closed in the `tasks` table."""
    with db.engine.begin() as conn:
        return tasks.close(conn, db.schema, task_key, now)
