"""Transitions -> outbox rows: one rendered payload per action, under its deterministic dedup key (§8, §9)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo

from engine.consent import unsubscribe_url
from engine.settings import Settings, parse_duration
from engine.spec.compiled import CompiledAction, CompiledPlaybook
from engine.store.matching import Clock
from engine.store.state import Transition
from engine.templating import TemplateProblem, context_helpers, render


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


def message_id(key: str, n: int) -> str:
    """A stable RFC 5322 Message-ID for the n-th message of an action."""
    digest = hashlib.sha256(f"{key}#{n}".encode()).hexdigest()[:32]
    return f"<{digest}@playbook-engine>"


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


def render_structure(value: Any, ctx: dict[str, Any]) -> Any:
    """Render every compiled template inside a nested structure."""
    if isinstance(value, dict):
        return {k: render_structure(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [render_structure(v, ctx) for v in value]
    if hasattr(value, "generate"):
        return render(value, ctx)
    return value


class Planner:
    """Builds the outbox rows of one playbook's transitions."""

    def __init__(self, settings: Settings, pb: CompiledPlaybook, clock: Clock, planned_at: datetime, *,
                 describe: bool = True):
        self.settings, self.pb, self.clock = settings, pb, clock
        self.describe = describe        # fill each event's short action list (what `run` shows)
        self.planned_at = planned_at
        self.expires_at = planned_at + timedelta(seconds=parse_duration(settings.delivery.expire_after))
        self.context = base_context(pb, clock)

    def plan(self, t: Transition, records: dict[str, dict], contacts: dict[str, list[dict]]) -> tuple[
            PlannedEvent, list[dict[str, Any]]]:
        """The event and its outbox rows for one transition (every row has the same keys: executemany).

        `records` (account, contact/goal) and `contacts` hold rows as templates see them (`template_rows`)."""
        pb = self.pb
        event = PlannedEvent(pb.id, f"{pb.subject}:{t.subject_id}", t.event, t.episode)
        actions = pb.on_resolve if t.event == "resolve" else pb.actions
        firing: int | str = "resolve" if t.event == "resolve" else t.firing
        ctx = dict(self.context, **records)
        rows = []
        for action in actions:
            key = dedup_key(pb.id, pb.subject, t.subject_id, t.episode, firing, action.index)
            row = self.base_row(key, t, str(firing), action)
            try:
                payload = self._payload(action, ctx, records, contacts, key)
                if action.kind == "email" and not payload["messages"]:
                    row.update(status="suppressed", last_error="no recipient: every candidate is missing "
                                                               "or unsubscribed", finished_at=self.planned_at)
            except TemplateProblem as exc:
                payload = {"error": exc.message}
                row.update(status="failed", last_error=f"rendering failed: {exc.message}",
                           finished_at=self.planned_at)
            row["payload"] = payload
            rows.append(row)
            if self.describe:
                event.actions.append(display(action.kind, payload))
        return event, rows

    def base_row(self, key: str, t: Transition, firing: str, action: CompiledAction) -> dict[str, Any]:
        connector = action.kind
        if action.kind == "task":
            tasks_conf = self.settings.connectors.tasks if self.settings.connectors else None
            connector = action.spec.connector or (tasks_conf.default if tasks_conf else None) or "builtin"
        return dict(dedup_key=key, playbook_id=self.pb.id, subject_type=self.pb.subject, subject_id=t.subject_id,
                    episode=t.episode, firing=firing, action_index=action.index, kind=action.kind,
                    connector=connector, status="pending", attempts=0, not_before=self.planned_at,
                    expires_at=self.expires_at, lease_token=0, ambiguous=False, created_at=self.planned_at,
                    updated_at=self.planned_at, last_error=None, finished_at=None, payload=None)

    def _payload(self, action: CompiledAction, ctx: dict[str, Any], records: dict[str, dict],
                 contacts: dict[str, list[dict]], key: str) -> dict[str, Any]:
        if action.kind == "email":
            return self._email(action, ctx, records, contacts, key)
        body = render_structure(action.fields, ctx)
        if action.kind == "task":
            due = None
            if action.spec.due_in:
                due = (self.clock.now + timedelta(seconds=parse_duration(action.spec.due_in))).isoformat()
            body["due_at"] = due
            body.pop("due_in", None)
            body.setdefault("close_on_resolve", True)
        return body

    def _email(self, action: CompiledAction, ctx: dict[str, Any], records: dict[str, dict],
               contacts: dict[str, list[dict]], key: str) -> dict[str, Any]:
        spec = action.spec
        recipients = self._recipients(spec.to, action.fields.get("to"), ctx, records, contacts)
        cc = [r[0] for r in self._recipients(spec.cc, action.fields.get("cc"), ctx, records, contacts)] \
            if spec.cc is not None else []
        messages = []
        for n, (address, contact) in enumerate(recipients):
            mctx = dict(ctx)
            if contact is not None:
                mctx["contact"] = contact
            mctx["unsubscribe_url"] = unsubscribe_url(self.settings, address)
            if action.files:
                subject = render(action.files["subject"], mctx).strip() if "subject" in action.files else ""
                html = render(action.files["html"], mctx) if "html" in action.files else None
                text = render(action.files["text"], mctx) if "text" in action.files else None
            else:
                subject = render(action.fields["subject"], mctx).strip()
                text, html = render(action.fields["body"], mctx), None
            messages.append({"to": address, "contact_id": contact["id"] if contact else None,
                             "subject": " ".join(subject.split()), "text": text, "html": html,
                             "message_id": message_id(key, n), "unsubscribe_url": mctx["unsubscribe_url"]})
        reply_to = render(action.fields["reply_to"], ctx) if spec.reply_to else None
        return {"messages": messages, "cc": cc, "reply_to": reply_to}

    def _recipients(self, spec_to: Any, compiled: Any, ctx: dict[str, Any], records: dict[str, dict],
                    contacts: dict[str, list[dict]]) -> list[tuple[str, dict | None]]:
        if spec_to == "contact":
            c = records.get("contact")
            return [(c["email"], c)] if c and c.get("email") and not c.get("unsubscribed") else []
        if hasattr(spec_to, "role"):
            account_id = records["account"]["id"]
            return [(c["email"], c) for c in contacts.get(account_id, []) if c.get("email")]
        items = compiled if isinstance(compiled, list) else [compiled]
        out = []
        for item in items:
            for address in render(item, ctx).split(","):
                if address.strip():
                    out.append((address.strip(), None))
        return out


def roles_of(action: CompiledAction) -> list[str]:
    """The contact roles an email action's `to`/`cc` filters select."""
    roles: list[str] = []
    for spec in (action.spec.to, action.spec.cc):
        if hasattr(spec, "role"):
            roles += [spec.role] if isinstance(spec.role, str) else list(spec.role)
    return roles


def display(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The short form of a planned action shown by `run` (§11's JSON)."""
    if "error" in payload:
        return {"kind": kind, "to": [], "error": payload["error"]}
    if kind == "email":
        msgs = payload["messages"]
        return {"kind": kind, "to": [m["to"] for m in msgs], "subject": msgs[0]["subject"] if msgs else None}
    if kind == "slack":
        return {"kind": kind, "to": [payload.get("channel") or payload.get("to")], "text": payload.get("text")}
    if kind == "task":
        return {"kind": kind, "to": [payload["assignee"]] if payload.get("assignee") else [],
                "title": payload.get("title")}
    if kind == "webhook":
        return {"kind": kind, "to": [payload.get("url")]}
    return {"kind": kind, "to": []}
