"""The built-in task list: tasks live in the engine's own database (`playbook tasks`)."""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from connectors.base import BaseConnector, Delivery, Outcome
from connectors.task_records import close_task, record_task
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
        now = self.clock()
        if item.kind == "task_close":
            closed = close_task(self.db, item.payload["task_key"], now)
            return Delivery(Outcome.SENT, "closed" if closed else "already closed")
        task_id = record_task(self.db, item, "builtin", None, now)
        return Delivery(Outcome.SENT, f"task #{task_id}", result={"task_id": task_id})
