"""The built-in task list: tasks live in the engine's own database (`playbook tasks`)."""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from connectors.base import BaseConnector, Delivery, Outcome
from connectors.task_records import task_row
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
        self._creates: list[dict] = []
        self._closes: list[str] = []

    def deliver(self, item: Claimed) -> Delivery:
        """Queue the write; flush() makes a batch durable in one transaction before outcomes are recorded."""
        if item.kind == "task_close":
            self._closes.append(item.payload["task_key"])
            return Delivery(Outcome.SENT, "closed")
        self._creates.append(task_row(item, "builtin", None, self.clock()))
        return Delivery(Outcome.SENT, "added to the task list")

    def flush(self) -> None:
        if not (self._creates or self._closes):
            return
        now = self.clock()
        with self.db.engine.begin() as conn:
            tasks.create_many(conn, self.db.schema, self._creates)
            for key in self._closes:
                tasks.close(conn, self.db.schema, key, now)
        self._creates, self._closes = [], []
