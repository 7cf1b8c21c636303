"""Transitions -> outbox rows: one rendered payload per action, under its deterministic dedup key (§8, §9)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo

from engine.actions import CompiledAction, PlanContext
from engine.clock import Clock, parse_duration
from engine.episodes import Transition
from engine.plugins import registry
from engine.settings import Settings
from engine.spec.compiled import CompiledPlaybook
from engine.templating import TemplateProblem, context_helpers


@dataclass
class PlannedEvent:
    """One event with the actions it planned, as shown by `run` (table or JSON)."""

    playbook: str
    subject: str
    event: str
    episode: int
    actions: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"playbook": self.playbook, "subject": self.subject, "event": self.event,
                "episode": self.episode, "actions": self.actions}


def dedup_key(pb: str, subject_type: str, subject_id: str, episode: int, firing: int | str, index: int | str) -> str:
    """The one rule every planned action's identity comes from."""
    return f"{pb}/{subject_type}:{subject_id}/{episode}/{firing}/{index}"


def localize(value: Any, tz: ZoneInfo) -> Any:
    """Stored naive-UTC datetimes as aware datetimes in the configured time zone."""
    if type(value) is datetime:
        return value.replace(tzinfo=timezone.utc).astimezone(tz)
    return value


def template_rows(tz: ZoneInfo) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The conversion of a stored row into the row templates see: datetimes local, `removed_at` left out
    (the tick's RowCache stores rows through it, so each row is converted once per tick)."""
    def shape(row: dict[str, Any]) -> dict[str, Any]:
        out = dict(row)
        out.pop("removed_at", None)
        for k, v in row.items():
            if type(v) is datetime:
                out[k] = localize(v, tz)
        return out
    return shape


def base_context(pb: CompiledPlaybook, clock: Clock) -> dict[str, Any]:
    """The part of the template context every subject of one evaluation shares."""
    ctx: dict[str, Any] = {"playbook": {"id": pb.id, "name": pb.spec.name, "description": pb.spec.description or ""},
                           "now": localize(clock.now, ZoneInfo(clock.timezone)), "unsubscribe_url": ""}
    ctx.update(context_helpers(clock.today))
    return ctx


class Planner:
    """Builds the outbox rows of one playbook's transitions: each action planned by its kind into a typed
    payload, stored as JSON under the action's dedup key."""

    def __init__(self, settings: Settings, pb: CompiledPlaybook, clock: Clock, planned_at: datetime, *,
                 describe: bool = True):
        self.settings, self.pb, self.clock = settings, pb, clock
        self.describe = describe        # fill each event's short action list (what `run` shows)
        self.planned_at = planned_at
        self.expires_at = parse_duration(settings.delivery.expire_after).after(planned_at, clock.timezone)
        self.context = base_context(pb, clock)
        self.kinds = registry().kinds

    def plan(self, t: Transition, records: dict[str, dict], contacts: dict[str, list[dict]]) -> tuple[
            PlannedEvent, list[dict[str, Any]]]:
        """The event and its outbox rows for one transition (every row has the same keys: executemany).

        `records` (account, contact/goal) and `contacts` hold rows as templates see them (`template_rows`)."""
        pb = self.pb
        event = PlannedEvent(pb.id, f"{pb.subject}:{t.subject_id}", t.event, t.episode)
        actions = pb.on_resolve if t.event == "resolve" else pb.actions
        firing: int | str = "resolve" if t.event == "resolve" else t.firing
        ctx = PlanContext(dict(self.context, **records), records, contacts, self.clock.now, self.settings, "")
        rows = []
        for action in actions:
            kind = self.kinds[action.kind]
            ctx.key = key = dedup_key(pb.id, pb.subject, t.subject_id, t.episode, firing, action.index)
            row = self.base_row(key, t, str(firing), action)
            try:
                payload = kind.plan(action, ctx)
                row["payload"] = payload.to_json()
                empty = kind.nothing_to_send(payload)
                if empty:
                    row.update(status="suppressed", last_error=empty, finished_at=self.planned_at)
                if self.describe:
                    event.actions.append({"kind": action.kind, **kind.summary(payload)})
            except TemplateProblem as exc:
                row.update(payload={"error": exc.message}, status="failed",
                           last_error=f"rendering failed: {exc.message}", finished_at=self.planned_at)
                if self.describe:
                    event.actions.append({"kind": action.kind, "to": [], "error": exc.message})
            rows.append(row)
        return event, rows

    def base_row(self, key: str, t: Transition, firing: str, action: CompiledAction) -> dict[str, Any]:
        """An outbox row for one action of one transition, pending and due now (its payload still to fill)."""
        return dict(dedup_key=key, playbook_id=self.pb.id, subject_type=self.pb.subject, subject_id=t.subject_id,
                    episode=t.episode, firing=firing, action_index=action.index, kind=action.kind,
                    connector=action.connector, status="pending", attempts=0, not_before=self.planned_at,
                    expires_at=self.expires_at, lease_token=0, ambiguous=False, created_at=self.planned_at,
                    updated_at=self.planned_at, last_error=None, finished_at=None, payload=None)


def contact_roles(actions: Any) -> list[str]:
    """The contact roles any of these actions addresses (their contacts are read once per chunk)."""
    kinds = registry().kinds
    return sorted({r for a in actions for r in kinds[a.kind].contact_roles(a.spec)})
