"""Transitions -> outbox rows: one rendered payload per action, under its deterministic dedup key (§8, §9)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo

from engine.actions import CompiledAction, PlanContext
from engine.clock import Clock, parse_duration, show_time
from engine.contact_policy import CapPreview, ContactPolicy, ContactPolicyConfig, Slot
from engine.digests import group_key, subject_name
from engine.episodes import Transition
from engine.plugins import registry
from engine.settings import Settings
from engine.spec.compiled import CompiledPlaybook
from engine.templating import PLAYBOOK_FIELDS, RenderTimeout, TemplateProblem, context_helpers, metric_helpers


@dataclass
class PlannedEvent:
    """One event with the actions it planned, as shown by `run` (table or JSON)."""

    playbook: str
    subject: str
    event: str
    episode: int
    actions: list[dict[str, Any]] = field(default_factory=list)
    payloads: list[dict[str, Any]] = field(default_factory=list)   # each action's dedup key and payload
                                                                   # (Planner keep_payloads)
    detail: dict[str, Any] | None = None        # a journey's: the steps run, the wait reached, why it ended

    def as_json(self) -> dict[str, Any]:
        out = {"playbook": self.playbook, "subject": self.subject, "event": self.event,
               "episode": self.episode, "actions": self.actions}
        if self.detail is not None:
            out["journey"] = self.detail
        return out


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


def base_context(pb: CompiledPlaybook, clock: Clock, locale: str = "en") -> dict[str, Any]:
    """The part of the template context every subject of one evaluation shares (`_locale` and `_zone`: what the
    locale filters format in, until a recipient's own replace them)."""
    ctx: dict[str, Any] = {"playbook": {name: getattr(pb.spec, name) or "" for name in PLAYBOOK_FIELDS},
                           "now": localize(clock.now, ZoneInfo(clock.timezone)), "unsubscribe_url": "",
                           "_locale": locale, "_zone": clock.timezone}
    ctx.update(context_helpers(clock.today))
    return ctx


class Planner:
    """Builds the outbox rows of one playbook's transitions: each action planned by its kind into a typed
    payload, stored as JSON under the action's dedup key. Under a contact policy a customer-facing action
    becomes one row per recipient, due at the recipient's first allowed moment (engine/contact_policy.py)."""

    def __init__(self, settings: Settings, pb: CompiledPlaybook, clock: Clock, *, describe: bool = True,
                 caps: CapPreview | None = None, written_at: datetime | None = None, keep_payloads: bool = False):
        self.settings, self.pb, self.clock = settings, pb, clock
        self.describe = describe        # fill each event's short action list (what `run` shows)
        self.keep_payloads = keep_payloads and describe    # and each action's whole payload (`playbook test`)
        self.caps = caps                # what the caps would do to each message (dry runs, explain)
        self.planned_at = clock.now     # the run's clock: a run at --now T plans as if T had come
        # an action expires `expire_after` from when it may first go out, and never before it was written
        self.written_at = max(clock.now, written_at or clock.now)
        self.expire_after = parse_duration(settings.delivery.expire_after)
        self.expires_at = self.expire_after.after(self.written_at, clock.timezone)
        self.context = base_context(pb, clock, settings.default_locale)
        self.kinds = registry().kinds
        self.policy = ContactPolicy(settings.contact_policy, settings.timezone)
        self.zone_of = ContactPolicy(settings.contact_policy or ContactPolicyConfig(), settings.timezone).zone
        self.reads_metrics = bool(metric_refs((*pb.actions, *pb.on_resolve)))
        self.exempt = pb.spec.contact_policy == "exempt"
        self.failures: list[tuple[str, str]] = []      # (dedup key, message) of actions whose rendering failed
        self.too_slow: dict[int, str] = {}              # id of an action -> why: its render ran out of time once

    def plan(self, t: Transition, records: dict[str, dict], contacts: dict[str, list[dict]]) -> tuple[
            PlannedEvent, list[dict[str, Any]]]:
        """The event and its outbox rows for one transition (every row has the same keys: executemany).

        `records` (account, contact/goal) and `contacts` hold rows as templates see them (`template_rows`)."""
        event = PlannedEvent(self.pb.id, f"{self.pb.subject}:{t.subject_id}", t.event, t.episode)
        ctx = self.context_for(records, contacts)
        rows = []
        for action in (self.pb.on_resolve if t.event == "resolve" else self.pb.actions):
            rows += self.plan_action(t, action, ctx, event)
        return event, rows

    def context_for(self, records: dict[str, dict], contacts: dict[str, list[dict]]) -> PlanContext:
        """The planning context of one subject (its actions' dedup keys are set as each is planned); metric() in
        its templates reads the usage `plan_inputs` read for its account."""
        context = dict(self.context, **records)
        if self.reads_metrics:
            context.update(metric_helpers(records.get(USAGE) if records.get("account") else None, self.clock.today))
        return PlanContext(context, records, contacts, self.clock.now, self.settings, "", self.zone_of)

    def plan_action(self, t: Transition, action: CompiledAction, ctx: PlanContext,
                    event: PlannedEvent | None = None) -> list[dict[str, Any]]:
        """The outbox rows of one action of one transition (one per recipient under a contact policy)."""
        pb, kind = self.pb, self.kinds[action.kind]
        firing: int | str = "resolve" if t.event == "resolve" else t.firing
        ctx.key = key = dedup_key(pb.id, pb.subject, t.subject_id, t.episode, firing, action.index)
        try:
            if id(action) in self.too_slow:           # not rendered again for each subject of the run
                raise TemplateProblem(self.too_slow[id(action)] + " (for another subject: not rendered again)")
            payload = kind.plan(action, ctx)
        except TemplateProblem as exc:
            if isinstance(exc, RenderTimeout):
                self.too_slow[id(action)] = exc.message
            if self.describe and event is not None:
                event.actions.append({"kind": action.kind, "to": [], "error": exc.message})
                if self.keep_payloads:
                    event.payloads.append({"dedup_key": key})
            return [self.unrendered(self.base_row(key, t, str(firing), action), exc.message,
                                    getattr(exc, "label", "rendering failed"))]
        if action.digest is not None:
            return self.digest_items(t, str(firing), action, kind, key, payload, ctx.records, event)
        rows = []
        for part_key, part, policy in self.deliveries(action, kind, key, payload, ctx.records, ctx.contacts):
            row = self.base_row(part_key, t, str(firing), action)
            row.update(policy, payload=part.to_json())
            empty = kind.nothing_to_send(part)
            if empty:
                row.update(status="suppressed", last_error=empty, finished_at=self.planned_at)
            if self.describe and event is not None:
                event.actions.append({"kind": action.kind, **kind.summary(part), **self.shown(row, empty)})
                if self.keep_payloads:
                    event.payloads.append({"dedup_key": part_key, **row["payload"]})
            rows.append(row)
        return rows

    def digest_items(self, t: Transition, firing: str, action: CompiledAction, kind: Any, key: str, payload: Any,
                     records: dict[str, dict], event: PlannedEvent | None) -> list[dict[str, Any]]:
        """An action that collects into a digest (§15): one row per recipient, waiting (status `digest`) for the
        next digest time of its schedule, with what the digest will list of it (engine/digests.py)."""
        schedule, tz = action.digest, self.clock.timezone
        due = schedule.next_time(self.planned_at, tz)
        when = localize(due, ZoneInfo(tz)).isoformat(timespec="seconds")
        parts = kind.digest_parts(payload) or []
        name = subject_name(self.pb.subject, records)
        rows = []
        for n, (recipient, text, part) in enumerate(parts):
            part_key = key if len(parts) == 1 else f"{key}/{n}"
            row = self.base_row(part_key, t, firing, action)
            row.update(payload=part.to_json(), status="digest", not_before=due, expires_at=None,
                       digest_key=group_key(action.connector, recipient),
                       note=f"digest ({schedule.label()}) at {show_time(due, tz)}",
                       digest={"to": recipient, "every": schedule.every, "at": schedule.at, "day": schedule.day,
                               "playbook": self.pb.spec.name, "subject": name, "text": text,
                               **({"template": action.digest_template} if action.digest_template else {})})
            if self.describe and event is not None:
                event.actions.append({"kind": action.kind, **kind.summary(part), "digest": schedule.label(),
                                      "send_at": when})
                if self.keep_payloads:
                    event.payloads.append({"dedup_key": part_key, **row["payload"]})
            rows.append(row)
        return rows

    def unrendered(self, row: dict[str, Any], message: str, label: str = "rendering failed") -> dict[str, Any]:
        """An action whose templates failed to render (or rendered to something that may not be sent): recorded
        failed with the reason, never delivered; `playbook outbox retry --rerender` renders it again once the
        template or data is fixed."""
        self.failures.append((row["dedup_key"], message))
        row.update(payload={"error": message}, status="failed", last_error=f"{label}: {message}",
                   finished_at=self.planned_at)
        return row

    def deliveries(self, action: CompiledAction, kind: Any, key: str, payload: Any, records: dict[str, dict], contacts: dict[str, list[dict]]) -> list[tuple[str, Any, dict]]:
        """(dedup key, payload, contact-policy columns) of each row one planned action becomes."""
        if not self.policy.active:
            return [(key, payload, {})]
        account = records.get("account") or {}
        internal = dict(policy=None, account_id=account.get("id"), contact_id=None, zone=None, note=None)
        if not action.customer_facing:
            return [(key, payload, internal)]
        subject_contact = records.get("contact")
        if self.exempt:
            return [(key, payload, dict(internal, policy="exempt",
                                        contact_id=subject_contact["id"] if subject_contact else None))]
        parts = kind.per_recipient(payload) or [(None, payload)]
        by_id = {c["id"]: c for c in contacts.get(account.get("id"), [])}
        if subject_contact:
            by_id[subject_contact["id"]] = subject_contact
        out = []
        for n, (contact_id, part) in enumerate(parts):
            contact = by_id.get(contact_id) if contact_id is not None else subject_contact
            slot = self.policy.slot(self.planned_at, self.policy.zone(contact, account))
            part_key = f"{key}/{contact_id}" if contact_id is not None else (f"{key}/{n}" if len(parts) > 1 else key)
            out.append((part_key, part, dict(
                policy="customer", account_id=account.get("id"), contact_id=contact["id"] if contact else None,
                zone=slot.zone, note=slot.note, not_before=slot.at,
                expires_at=self.expire_after.after(max(slot.at, self.written_at), self.clock.timezone))))
        return out

    def shown(self, row: dict[str, Any], empty: str | None) -> dict[str, Any]:
        """What `run` shows of a customer-facing row: the recipient's zone, when it goes out, and what a cap
        would do to it."""
        if row.get("policy") != "customer" or empty:
            return {}
        local = Slot(row["zone"], row["not_before"]).local()
        out: dict[str, Any] = {"zone": row["zone"], "send_at": local.isoformat(timespec="seconds")}
        if row.get("note"):
            out["deferred"] = row["note"]
        cap = self.caps.check(row) if self.caps is not None else None
        if cap:
            out["cap"] = cap
        return out

    def base_row(self, key: str, t: Transition, firing: str, action: CompiledAction) -> dict[str, Any]:
        """An outbox row for one action of one transition, pending and due now (its payload still to fill)."""
        row = dict(dedup_key=key, playbook_id=self.pb.id, subject_type=self.pb.subject, subject_id=t.subject_id,
                   episode=t.episode, firing=firing, action_index=action.index, kind=action.kind,
                   connector=action.connector, status="pending", attempts=0, not_before=self.planned_at,
                   expires_at=self.expires_at, lease_token=0, ambiguous=False, created_at=self.written_at,
                   updated_at=self.written_at, last_error=None, finished_at=None, payload=None, digest_key=None,
                   digest=None, note=None)
        if self.policy.active:       # every row of a run has the same keys (one executemany)
            row.update(policy=None, account_id=None, contact_id=None, zone=None)
        return row


USAGE = "_usage"      # in a subject's records: its account's usage rows its templates' metric() calls read


def plan_inputs(tx: Any, pb: CompiledPlaybook, subject_ids: list[str], cache: Any = None, *,
                today: date) -> tuple[dict[str, dict[str, dict]], dict[str, list[dict]]]:
    """What planning reads for these subjects: their rows (subject id -> {account, contact|goal}) and the
    contacts of their accounts with the roles the playbook's actions address; when its templates call metric(),
    each subject's account's usage rows of those metrics over the windows they read (under USAGE), up to
    `today`."""
    recs = tx.subjects.records(pb.subject, subject_ids, cache)
    actions = (*pb.actions, *pb.on_resolve, *pb.steps)
    roles = contact_roles(actions)
    accounts = {r["account"]["id"] for r in recs.values() if r.get("account")}
    refs = metric_refs(actions)
    if refs and accounts:
        span = max(r.days + r.offset_days for r in refs)
        usage = tx.subjects.usage_of(sorted(accounts), sorted({r.name for r in refs}),
                                     today - timedelta(days=span - 1), today)
        for r in recs.values():
            if r.get("account"):
                r[USAGE] = usage.get(r["account"]["id"], {})
    return recs, (tx.subjects.contacts_with_roles(accounts, roles, cache) if roles else {})


def metric_refs(actions: Any) -> set[Any]:
    """The metric windows the templates of these actions read."""
    return set().union(*(a.metrics for a in actions)) if actions else set()


def contact_roles(actions: Any) -> list[str]:
    """The contact roles any of these actions addresses (their contacts are read once per chunk)."""
    kinds = registry().kinds
    return sorted({r for a in actions for r in kinds[a.kind].contact_roles(a.spec)})
