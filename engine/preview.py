"""`playbook preview` (§18): every action of a playbook rendered for one subject as it would be sent — each
message decoded, with its recipient, their zone and the moment the contact policy lets it go out — planned the
way a run plans it (engine/planner.py) but written nowhere. Each action kind says how its payload reads
(`ActionKind.preview`). `--send-to` sends the emails, re-addressed and marked as a test (`ActionKind.test_copy`),
through the configured connector.

A playbook's previewable items are its actions (on entering) or, for a journey, its action steps (each as it
would be sent when its turn comes, its `if` not applied), and its `on_resolve` actions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.actions import CompiledAction, Rendering
from engine.clock import Clock
from engine.episodes import Transition
from engine.settings import Settings
from engine.spec.compiled import CompiledPlaybook
from engine.store import Store


@dataclass
class PreviewItem:
    """One planned action for the subject: where it comes from, who gets it and when, and how it reads."""

    label: str                      # actions[0], on_resolve[1], step ID (a journey's)
    event: str                      # enter | step | resolve
    kind: str
    connector: str
    to: list[str]
    policy: dict[str, Any]          # zone, send_at, deferred, cap (customer messages under a contact policy);
                                    # digest and send_at (an item collected into a digest)
    renderings: list[Rendering] = field(default_factory=list)
    payload: Any = None
    error: str | None = None        # why it could not be rendered

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "event": self.event, "kind": self.kind, "connector": self.connector,
                "to": self.to, **self.policy, "error": self.error,
                "messages": [{"fields": r.fields, "bodies": r.bodies,
                              **({"raw": r.raw.decode("ascii", "replace")} if r.raw is not None else {})}
                             for r in self.renderings]}


@dataclass
class Preview:
    """A playbook's actions for one subject at one instant, and whether the subject matches then."""

    playbook: str
    subject: str
    now: datetime                   # aware, config zone
    verdict: str
    reason: str
    items: list[PreviewItem]


def items_of(pb: CompiledPlaybook) -> Iterator[tuple[str, str, CompiledAction]]:
    """(label, event, action) of everything the playbook may send."""
    for n, action in enumerate(pb.actions):
        yield f"actions[{n}]", "enter", action
    order = {"then": 0, "else": 1}
    nodes = sorted((n for n in pb.journey.nodes if n.action is not None) if pb.journey else (),
                   key=lambda n: [x if isinstance(x, int) else order.get(x, -1) for x in n.path])
    branches = {n.path: n for n in pb.journey.nodes if n.kind == "if"} if pb.journey else {}
    for node in nodes:
        conds = []
        for depth in range(len(node.path) - 2, 0, -1):       # the ifs whose then/else the step is in
            owner = branches.get(node.path[:depth])
            if owner is not None and owner.cond is not None and node.path[depth] in order:
                text = pb.journey.expressions[owner.cond].text      # type: ignore[union-attr]
                conds.insert(0, text if node.path[depth] == "then" else f"not ({text})")
        if node.cond is not None:
            conds.append(pb.journey.expressions[node.cond].text)   # type: ignore[union-attr]
        yield f"step {node.id}" + (f" (if {' and '.join(conds)})" if conds else ""), "step", node.action
    for n, action in enumerate(pb.on_resolve):
        yield f"on_resolve[{n}]", "resolve", action


def preview(store: Store, settings: Settings, pb: CompiledPlaybook, subject_id: str, clock: Clock) -> Preview:
    """Plan and render every item of `pb` for one subject at `clock`, reading the store and writing nothing."""
    from engine.explain import explain
    from engine.planner import PlannedEvent, Planner, plan_inputs
    from engine.plugins import registry
    from engine.tick import cap_preview, template_cache

    why = explain(store, pb, subject_id, clock)
    planner = Planner(settings, pb, clock, keep_payloads=True)
    with store.read() as tx:
        recs, contacts = plan_inputs(tx, pb, [subject_id], template_cache(store, clock), today=clock.today)
    ctx = planner.context_for(recs.get(subject_id) or {}, contacts)
    reg = registry()
    items = []
    for label, event_name, action in items_of(pb):
        event = PlannedEvent(pb.id, f"{pb.subject}:{subject_id}", event_name, 1)
        t = Transition(subject_id, event_name, 1, 1, False)
        planner.caps = cap_preview(store, settings, clock)     # each item on its own: as the only message now
        planner.plan_action(t, action, ctx, event)
        kind = reg.kinds[action.kind]
        for shown, planned in zip(event.actions, event.payloads):
            policy = {k: shown[k] for k in ("zone", "send_at", "deferred", "cap", "digest") if k in shown}
            item = PreviewItem(label, event_name, action.kind, action.connector, list(shown.get("to") or []), policy)
            if "error" in shown:
                item.error = shown["error"]
            else:
                item.payload = kind.payload.from_json({k: v for k, v in planned.items() if k != "dedup_key"})
                item.renderings = kind.preview(item.payload, settings)
            items.append(item)
    return Preview(pb.id, f"{pb.subject}:{subject_id}", clock.local(), why.verdict, why.reason, items)


def send_test(store: Store, settings: Settings, pb: CompiledPlaybook, subject_id: str, items: list[PreviewItem],
              address: str, clock: Clock) -> list[tuple[PreviewItem, str, str]]:
    """Send each item that can be test-sent to `address` only, marked as a test, through the connector that
    would deliver it; returns (item, outcome, detail) per item sent. Nothing is recorded in the store."""
    from engine.plugins import build_connectors, registry
    from engine.store.outbox import Claimed

    reg = registry()
    chosen = [(item, copy) for item in items if item.payload is not None
              and (copy := reg.kinds[item.kind].test_copy(item.payload, address)) is not None]
    if not chosen:
        return []
    connectors = build_connectors(settings, store, lambda: clock.now)
    out = []
    try:
        for n, (item, copy) in enumerate(chosen):
            claimed = Claimed(id=0, dedup_key=f"preview/{pb.id}/{pb.subject}:{subject_id}/{n}", kind=item.kind,
                              connector=item.connector, payload=copy, attempts=0, token=0, ambiguous=False,
                              playbook_id=pb.id, subject_type=pb.subject, subject_id=subject_id, episode=0,
                              created_at=clock.now, expires_at=None)
            receipt = connectors[item.connector].deliver(claimed)
            flush = getattr(connectors[item.connector], "flush", None)
            if flush:
                flush()
            out.append((item, receipt.outcome.value, receipt.detail or ""))
    finally:
        for c in connectors.values():
            c.close()
    return out
