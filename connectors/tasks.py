"""The task connector plugins' shared part, and the built-in task list: the `task:` action (§9), its payload, and
the engine's record of every task its playbooks created — in the built-in list, HubSpot or Salesforce — so that
a resolve can close them (`task_close` actions, planned by the tick for `close_on_resolve` tasks)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict

from engine.actions import ActionKind, CompiledAction, PlanContext, Rendering
from engine.actions import Payload
from engine.clock import DurationText, parse_duration
from engine.delivery import BaseConnector, Connector, Outcome, Receipt
from engine.plugins import ConnectorEnv, ConnectorPlugin
from engine.store import Store
from engine.store.outbox import Claimed
from engine.store.tasks import BUILTIN


class TaskAction(BaseModel):
    """A `task:` action."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    title: str
    description: str | None = None
    assignee: str | None = None
    due_in: DurationText | None = None
    priority: Literal["low", "normal", "high"] = "normal"
    close_on_resolve: bool = True


@dataclass(frozen=True, slots=True)
class TaskPayload(Payload):
    """A task as planned: what it says, for whom, when it is due (ISO, UTC) and whether a resolve closes it."""

    title: str
    description: str | None = None
    assignee: str | None = None
    due_at: str | None = None
    priority: str = "normal"
    close_on_resolve: bool = True


class TaskKind(ActionKind):
    name = "task"
    options = TaskAction
    payload = TaskPayload
    literal = frozenset({"priority", "due_in", "close_on_resolve"})

    def plan(self, action: CompiledAction, ctx: PlanContext) -> TaskPayload:
        body = ctx.render_structure(action.fields)
        due_in = body.pop("due_in", None)
        due = parse_duration(due_in).after(ctx.now, ctx.settings.timezone).isoformat() if due_in else None
        return TaskPayload(**{**body, "due_at": due})

    def closable(self, options: Any) -> bool:
        return bool(options.close_on_resolve)

    def summary(self, payload: TaskPayload) -> dict[str, Any]:
        return {"to": [payload.assignee] if payload.assignee else [], "title": payload.title}

    def preview(self, payload: TaskPayload, settings: Any) -> list[Rendering]:
        """The task's fields (its due moment in the config time zone) and its description."""
        from engine.clock import show_time

        due = show_time(datetime.fromisoformat(payload.due_at), settings.timezone) if payload.due_at else "—"
        fields = {"Title": payload.title, "Assignee": payload.assignee or "—", "Priority": payload.priority,
                  "Due": due, "Closed on resolve": "yes" if payload.close_on_resolve else "no"}
        return [Rendering(fields, {"description": payload.description} if payload.description else {})]


TASK = TaskKind()


def task_row(item: Claimed, connector: str, external_id: str | None, now: datetime) -> dict:
    """The `tasks` row for a task a claimed action creates."""
    p: TaskPayload = item.payload
    due = datetime.fromisoformat(p.due_at).replace(tzinfo=None) if p.due_at else None
    return dict(dedup_key=item.dedup_key, connector=connector, external_id=external_id,
                playbook_id=item.playbook_id, subject_type=item.subject_type, subject_id=item.subject_id,
                episode=item.episode, title=p.title, description=p.description, assignee=p.assignee,
                priority=p.priority or "normal", due_at=due, status="open",
                close_on_resolve=bool(p.close_on_resolve), created_at=now, closed_at=None)


def record_task(store: Store, item: Claimed, connector: str, external_id: str | None, now: datetime) -> int:
    """Record a task created in an external system in the `tasks` table (idempotent per dedup key)."""
    with store.write() as tx:
        task_id = tx.tasks.create(task_row(item, connector, external_id, now))
        if external_id is not None:
            tx.tasks.set_external_id(item.dedup_key, external_id)
    return task_id


def close_task(store: Store, task_key: str, now: datetime) -> bool:
    """Mark the task created by action `task_key` closed in the `tasks` table."""
    with store.write() as tx:
        return tx.tasks.close(task_key, now)


class BuiltinTasks(BaseConnector):
    """Creates and closes tasks in the `tasks` table (`playbook tasks`); idempotent per dedup key, so resending
    is safe. Also the local sink of the CRM task connectors (under their name)."""

    on_ambiguous = "resend"
    batch_safe = True

    def __init__(self, store: Store, clock: Callable[[], datetime], name: str = BUILTIN):
        self.store, self.clock, self.name = store, clock, name
        self._creates: list[dict] = []
        self._closes: list[str] = []

    def deliver(self, item: Claimed) -> Receipt:
        """Queue the write; flush() makes a batch durable in one transaction before outcomes are recorded."""
        if item.kind == "task_close":
            self._closes.append(item.payload.task_key)
            return Receipt(Outcome.SENT, "closed")
        self._creates.append(task_row(item, self.name, None, self.clock()))
        return Receipt(Outcome.SENT, "added to the task list")

    def flush(self) -> None:
        if not (self._creates or self._closes):
            return
        now = self.clock()
        with self.store.write() as tx:
            tx.tasks.create_many(self._creates)
            for key in self._closes:
                tx.tasks.close(key, now)
        self._creates, self._closes = [], []


class TaskConnectorPlugin(ConnectorPlugin):
    """Base of the task connectors: they deliver `task` actions, and locally into the built-in task list."""

    kind = TASK
    sink_in_store = True

    def local_sink(self, env: ConnectorEnv) -> Connector:
        return BuiltinTasks(env.store, env.clock, self.name)


class BuiltinPlugin(TaskConnectorPlugin):
    name = BUILTIN
    standalone = True          # the built-in task list needs no configuration

    def connector(self, config: Any, env: ConnectorEnv) -> Connector:
        return BuiltinTasks(env.store, env.clock)


plugin = BuiltinPlugin()
