"""`playbook explain`: each condition's value for one subject, and why the playbook fires or not.

The conditions are evaluated in Python with a trace of every sub-expression; the verdict comes from the
episode policy the tick uses (engine/episodes.py), and is checked against the tick's own scan statement
for this one subject (its metric windows computed directly from the usage rows, the same values)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from engine.clock import Clock, localize, show_time
from engine.episodes import Policy, Transition, verdict
from engine.lang import PyEnv, evaluate_traced, metric_calls, python_metric
from engine.settings import Settings
from engine.spec.compiled import CompiledPlaybook
from engine.store import Store, Tx


@dataclass
class ConditionValue:
    label: str
    text: str
    value: Any
    trace: list[tuple[str, Any]] = field(default_factory=list)

    def details(self) -> list[tuple[str, Any]]:
        """Sub-expression values worth showing, each once, without the condition itself."""
        seen, out = {self.text}, []
        for text, value in self.trace:
            if text not in seen:
                seen.add(text)
                out.append((text, value))
        return out


_FIELD = re.compile(r"\b(account|contact|goal)\.([a-z_][a-z0-9_]*)")


def field_values(text: str, records: dict[str, dict]) -> list[tuple[str, Any]]:
    """The data fields an expression reads, with this subject's values."""
    out = []
    for entity, name in dict.fromkeys(_FIELD.findall(text)):
        row = records.get(entity) or {}
        if name in row:
            out.append((f"{entity}.{name}", row[name]))
    return out


@dataclass
class Explanation:
    """Why one playbook does or does not fire for one subject at one instant."""

    playbook: str
    subject: str
    conditions: list[ConditionValue]
    matches: bool
    verdict: str          # fires | repeats | in_episode | not_matching | cooldown | episodes_used_up | removed
    reason: str
    sql_agrees: bool
    deliveries: list[dict[str, Any]] = field(default_factory=list)   # each message if it fired now (§13)
    waiting: list[dict[str, Any]] = field(default_factory=list)      # its actions in the outbox not yet done
    journey: dict[str, Any] | None = None      # a journey's: the step it waits at, when it is next due and why

    def as_json(self, tz: str = "UTC") -> dict[str, Any]:
        """For --format json; instants as ISO 8601 with the offset of time zone `tz`."""
        return {"playbook": self.playbook, "subject": self.subject, "matches": self.matches,
                "verdict": self.verdict, "reason": self.reason, "sql_agrees": self.sql_agrees,
                "deliveries": self.deliveries, "waiting": self.waiting,
                **({"journey": self.journey} if self.journey is not None else {}),
                "conditions": [{"label": c.label, "expression": c.text, "value": _jsonable(c.value, tz),
                                "details": [{"expression": t, "value": _jsonable(v, tz)} for t, v in c.details()]}
                               for c in self.conditions]}


def _jsonable(v: Any, tz: str) -> Any:
    if isinstance(v, datetime):
        return localize(v, tz).isoformat()
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def explain(store: Store, pb: CompiledPlaybook, subject_id: str, clock: Clock,
            settings: Settings | None = None) -> Explanation:
    """Evaluate every condition in Python (the reference back end, with a trace), check the verdict against
    the scan the tick runs, and decide with the tick's episode policy. Under a contact policy (`settings`), say
    when each message would go out were it to fire now, and what waits in the outbox."""
    with store.read() as tx:
        recs = tx.subjects.records(pb.subject, [subject_id]).get(subject_id)
        label = f"{pb.subject}:{subject_id}"
        if not recs:
            return Explanation(pb.id, label, [], False, "unknown", f"no {pb.subject} `{subject_id}`", True)
        env = _env(tx, pb, recs, clock)
        conds = []
        for c in pb.conditions:
            value, trace = evaluate_traced(c.expr, env)
            conds.append(ConditionValue(c.label, c.text, value, field_values(c.text, recs) + trace))
        removed = any((r or {}).get("removed_at") for r in recs.values())
        matches = not removed and all(c.value is True for c in conds)
        scanned = [ch.new for ch in tx.scans.scan(pb.subject, 0, {0: [c.expr for c in pb.conditions]}, clock, None,
                                                  [subject_id], changed=False)]
        stored = tx.episodes.get(pb.id, pb.subject, subject_id)
    v = verdict(stored, matches, removed, clock.now, Policy.of(pb.spec, clock.timezone), _not_matching(conds),
                show=lambda instant: show_time(instant, clock.timezone))
    out = Explanation(pb.id, label, conds, matches, v.name, v.reason, bool(scanned and scanned[0]) == matches)
    if pb.journey is not None:
        out.journey = _journey(store, pb, subject_id, clock)
        with store.read() as tx:
            held = tx.scans.bit_is_set(pb.id, pb.subject, subject_id)
        if v.name == "fires" and held and out.journey["status"] in ("completed", "exited"):
            # a journey's match bit says the trigger held at the last look: no new journey until it stops holding
            out.verdict, out.reason = "journey_ended", (
                f"matches, but its journey {out.journey['status']} while the trigger held: a new journey starts "
                "only after the trigger stops matching and matches again")
    if settings is not None and settings.contact_policy is not None:
        out.deliveries = _deliveries(store, settings, pb, subject_id, clock)
    if settings is not None and (settings.contact_policy is not None
                                 or any(a.digest for a in (*pb.actions, *pb.on_resolve))):
        with store.read() as tx:     # what waits: for the contact policy's allowed time, or for its digest
            out.waiting = [_waiting(r, clock) for r in tx.outbox.of_subject(pb.id, pb.subject, subject_id)]
    return out


def _journey(store: Store, pb: CompiledPlaybook, subject_id: str, clock: Clock) -> dict[str, Any]:
    """Where the subject is in the journey, when it is next due and why (engine/journey_view.py)."""
    from engine.journey_view import position

    assert pb.journey is not None
    with store.read() as tx:
        state = tx.journeys.get(pb.id, pb.subject, subject_id)
        until = None
        i = pb.journey.waits.get(state.step or "") if state is not None else None
        if i is not None and pb.journey.nodes[i].cond is not None:
            expr = pb.journey.expressions[pb.journey.nodes[i].cond].expr
            _, held = tx.journeys.values(pb.subject, [subject_id], [expr], clock, None).get(subject_id, (0, (0,)))
            until = bool(held[0])
    return position(pb, state, clock, until)


def _deliveries(store: Store, settings: Settings, pb: CompiledPlaybook, subject_id: str,
                clock: Clock) -> list[dict[str, Any]]:
    """Each customer-facing message the playbook's actions would send this subject if it fired now: the
    recipient, their zone, when it would go out and why it would wait, and what a cap would do."""
    from engine.planner import PlannedEvent, Planner, plan_inputs
    from engine.tick import cap_preview, template_cache

    planner = Planner(settings, pb, clock, caps=cap_preview(store, settings, clock))
    event = PlannedEvent(pb.id, f"{pb.subject}:{subject_id}", "enter", 0)
    with store.read() as tx:
        recs, contacts = plan_inputs(tx, pb, [subject_id], template_cache(store, clock), today=clock.today)
    ctx = planner.context_for(recs.get(subject_id) or {}, contacts)
    for firing, action in _first_actions(store, settings, pb, subject_id, recs.get(subject_id) or {}, clock):
        planner.plan_action(Transition(subject_id, "enter", 0, firing, False), action, ctx, event)
    return [a for a in event.actions if "zone" in a]


def _first_actions(store: Store, settings: Settings, pb: CompiledPlaybook, subject_id: str, records: dict,
                   clock: Clock) -> list[tuple[Any, Any]]:
    """(firing, action) of what firing now would plan: the actions, or for a journey the steps that would run at
    once on entering (their conditions evaluated now)."""
    if pb.journey is None:
        return [(1, a) for a in pb.actions]
    from engine.journey import advance
    from engine.journey_run import calendar, subject_zone

    exprs = [e.expr for e in pb.journey.expressions]
    with store.read() as tx:
        _, truths = tx.journeys.values(pb.subject, [subject_id], exprs, clock, None).get(subject_id, (False, ()))
    progress = advance(pb.journey, pb.journey.start, clock.now, lambda n: bool(n < len(truths) and truths[n]),
                       subject_zone(settings, records), calendar(settings))
    return [(n.id, n.action) for n in progress.ran]


def _waiting(row: dict[str, Any], clock: Clock) -> dict[str, Any]:
    due = clock.local(row["not_before"]).isoformat(timespec="seconds")
    return {"id": row["id"], "kind": row["kind"], "status": row["status"], "due": due,
            "note": row["note"] or row["last_error"]}


def _not_matching(conds: list[ConditionValue]) -> str:
    """Which condition fails, for the verdict of a subject that does not match."""
    failing = [c for c in conds if c.value is not True]
    if not failing:
        return "the subject is not live"
    first = failing[0]
    why = "is empty (unknown)" if first.value is None else "is false"
    more = f" (and {len(failing) - 1} more)" if len(failing) > 1 else ""
    return f"{first.label} `{first.text}` {why}{more}"


def _env(tx: Tx, pb: CompiledPlaybook, recs: dict, clock: Clock) -> PyEnv:
    refs = set().union(*(metric_calls(c.expr) for c in pb.conditions)) if pb.conditions else set()
    span = max((r.days + r.offset_days for r in refs), default=0)
    account = recs.get("account") or {}
    usage = tx.subjects.usage_rows(account.get("id", ""), clock.today - timedelta(days=span),
                                   clock.today) if refs and account else {}
    return PyEnv(records=dict(recs), today=clock.today, now=clock.now, timezone=clock.timezone,
                 metric=lambda ref: python_metric(usage.get(ref.name, {}), ref, clock.today))


def explain_subject(store: Store, playbooks: Any, subject_id: str, playbook_ids: tuple[str, ...] | list[str],
                    clock: Clock, settings: Settings | None = None) -> tuple[str, list[Explanation]]:
    """`explain` for a subject given as `id` or `type:id`: every playbook about it (or those named), each
    explained. Returns the bare id and the explanations; a UserError when no subject or playbook applies."""
    from engine.errors import UserError

    stype, _, sid = subject_id.rpartition(":") if ":" in subject_id else ("", "", subject_id)
    with store.read() as tx:
        found = set(tx.subjects.find(sid))
    if stype:
        found &= {stype}
    if not found:
        raise UserError(f"no account, contact or goal with id `{sid}` (run `playbook sync` first?)")
    pbs = [p for p in playbooks.valid if p.subject in found and (not playbook_ids or p.id in playbook_ids)]
    if not pbs:
        raise UserError(f"no playbook applies to {'/'.join(sorted(found))} `{sid}`"
                        + (f" among {', '.join(playbook_ids)}" if playbook_ids else ""))
    return sid, [explain(store, p, sid, clock, settings) for p in pbs]
