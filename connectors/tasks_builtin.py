"""The built-in task list: tasks live in the engine's own database (`playbook tasks`)."""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from connectors.base import BaseConnector, Delivery, Outcome
from engine.store import tasks
from engine.store.db import Database
from engine.store.outbox import Claimed


class BuiltinTasks(BaseConnector):
    """Creates and closes tasks in the `tasks` table; idempotent per dedup key, so resending is safe."""

    name = "builtin"
    on_ambiguous = "resend"
    batch_safe = True

    def __init__(self, db: Database, clock: Callable[[], datetime]):
        self.db, self.clock = db, clock

    def deliver(self, item: Claimed) -> Delivery:
        p = item.payload
        now = self.clock()
        with self.db.engine.begin() as conn:
            if item.kind == "task_close":
                closed = tasks.close(conn, self.db.schema, p["task_key"], now)
                return Delivery(Outcome.SENT, "closed" if closed else "already closed")
            due = datetime.fromisoformat(p["due_at"]).replace(tzinfo=None) if p.get("due_at") else None
            task_id = tasks.create(conn, self.db.schema, dict(
                dedup_key=item.dedup_key, connector="builtin", external_id=None, playbook_id=item.playbook_id,
                subject_type=item.subject_type, subject_id=item.subject_id, episode=item.episode,
                title=p["title"], description=p.get("description"), assignee=p.get("assignee"),
                priority=p.get("priority", "normal"), due_at=due, status="open",
                close_on_resolve=bool(p.get("close_on_resolve", True)), created_at=now, closed_at=None))
        return Delivery(Outcome.SENT, f"task #{task_id}", result={"task_id": task_id})
