"""`playbook outbox retry --rerender`: plan an outbox action again from the current templates and data.

An action whose templates failed to render was recorded failed with the reason instead of a payload
(engine/planner.py); once the template is fixed, rendering it again gives it a payload and makes it due. A
pending or held action can be rendered again too (a corrected text before it goes out). The action keeps its
dedup key, so it is still delivered at most once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.clock import Clock
from engine.episodes import Transition
from engine.planner import Planner, plan_inputs
from engine.plugins import CLOSE
from engine.settings import Settings
from engine.spec.compiled import PlaybookSet
from engine.store import Store

RERENDERABLE = ("failed", "held", "pending")


@dataclass(frozen=True)
class Rerendered:
    """What happened to one action: `queued` again, or `refused` with the reason."""

    id: int
    outcome: str
    detail: str


def rerender(store: Store, settings: Settings, playbooks: PlaybookSet, ids: list[int], clock: Clock) -> list[Rerendered]:
    """Render these outbox actions again; each one that renders is due again (at its recipient's next allowed
    moment under a contact policy). All in one transaction: an action that still fails stays as it was."""
    from engine.tick import template_cache

    out = []
    cache = template_cache(store, clock)
    with store.write() as tx:
        rows = {r["id"]: r for r in tx.outbox.by_ids(ids)}
        for i in ids:
            row = rows.get(i)
            why = _refusal(row, playbooks, i)
            if why:
                out.append(Rerendered(i, "refused", why))
                continue
            pb = playbooks.get(row["playbook_id"])
            action = _action(pb, row)
            planner = Planner(settings, pb, clock, describe=False)
            recs, contacts = plan_inputs(tx, pb, [row["subject_id"]], cache, today=clock.today)
            records = recs.get(row["subject_id"]) or {}
            firing: int | str = 0 if row["firing"] == "resolve" else (
                row["firing"] if pb.journey is not None else int(row["firing"]))
            t = Transition(row["subject_id"], "resolve" if row["firing"] == "resolve" else "repeat", row["episode"],
                           firing, False)
            planned = {r["dedup_key"]: r for r in planner.plan_action(t, action, planner.context_for(records, contacts))}
            new = planned.get(row["dedup_key"])
            if planner.failures:
                out.append(Rerendered(i, "refused", f"rendering still fails: {planner.failures[0][1]}"))
            elif new is None:
                out.append(Rerendered(i, "refused", "this action no longer addresses that recipient; "
                                                    "`playbook outbox cancel` it"))
            else:
                tx.outbox.replan(i, new, clock.now)
                out.append(Rerendered(i, "queued", _describe(new)))
    return out


def _refusal(row: dict[str, Any] | None, playbooks: PlaybookSet, i: int) -> str | None:
    if row is None:
        return f"no outbox action #{i}"
    if row["status"] not in RERENDERABLE:
        return f"it is {row['status']}; only {', '.join(RERENDERABLE)} actions are rendered again"
    if row["kind"].endswith(CLOSE):
        return "closing a task has nothing to render; use `playbook outbox retry` without --rerender"
    pb = playbooks.get(row["playbook_id"])
    if pb is None:
        return f"playbook `{row['playbook_id']}` is not loaded (removed, or invalid: run `playbook validate`)"
    if _action(pb, row) is None:
        return f"playbook `{pb.id}` no longer has that action; `playbook outbox cancel` it"
    return None


def _action(pb: Any, row: dict[str, Any]) -> Any:
    """The action of the playbook that planned an outbox row: by index, or for a journey step by its step id."""
    if row["firing"] == "resolve":
        actions = pb.on_resolve
    elif pb.journey is not None:
        node = pb.journey.action_nodes.get(row["firing"])
        return node.action if node is not None else None
    else:
        actions = pb.actions
    return actions[row["action_index"]] if row["action_index"] < len(actions) else None


def _describe(row: dict[str, Any]) -> str:
    if row["status"] == "suppressed":
        return f"rendered, but suppressed: {row['last_error']}"
    return "rendered again" + (f"; {row['note']}" if row.get("note") else "")
