"""What people see of journeys (§14): how many subjects are at each step (`playbook journeys`), where one subject
is and when it is next due (`explain`), and which subjects an edit of the steps would move (`validate`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.clock import Clock, localize, show_time
from engine.journey import Journey
from engine.spec.compiled import CompiledPlaybook, PlaybookSet


@dataclass
class StepCount:
    """Subjects at one step of a journey, and when the first of them is due."""

    step: str
    wait: str               # the wait as written (`3d`, `until … (timeout 4d)`), or why the step is unknown
    subjects: int
    next_due: datetime | None


@dataclass
class JourneySummary:
    """One journey playbook: subjects per step (in the order of the steps), completed and exited."""

    playbook: str
    name: str
    steps: list[StepCount] = field(default_factory=list)
    completed: int = 0
    exited: int = 0

    def as_json(self, tz: str) -> dict[str, Any]:
        return {"playbook": self.playbook, "name": self.name, "completed": self.completed, "exited": self.exited,
                "active": sum(s.subjects for s in self.steps),
                "steps": [{"step": s.step, "wait": s.wait, "subjects": s.subjects,
                           "next_due": localize(s.next_due, tz).isoformat() if s.next_due else None}
                          for s in self.steps]}


def summaries(rows: list[dict[str, Any]], playbooks: PlaybookSet, only: str | None = None) -> list[JourneySummary]:
    """Per journey playbook (loaded, or with journey rows), its counts from `Journeys.counts()` rows."""
    by_pb: dict[str, JourneySummary] = {}
    for pb in playbooks.valid:
        if pb.journey is not None and (only is None or pb.id == only):
            by_pb[pb.id] = JourneySummary(pb.id, pb.spec.name, [
                StepCount(step, pb.journey.nodes[i].describe(), 0, None) for step, i in _waits_in_order(pb.journey)])
    for r in rows:
        pid = r["playbook_id"]
        if only is not None and pid != only:
            continue
        pb = playbooks.get(pid)
        s = by_pb.setdefault(pid, JourneySummary(pid, pb.spec.name if pb else pid))
        if r["status"] == "completed":
            s.completed += r["subjects"]
        elif r["status"] == "exited":
            s.exited += r["subjects"]
        else:
            found = next((c for c in s.steps if c.step == r["step"]), None)
            if found is None:
                found = StepCount(r["step"], "no longer in the playbook: exits at the next run (step removed)", 0,
                                  None)
                s.steps.append(found)
            found.subjects += r["subjects"]
            found.next_due = r["next_due"]
    return sorted(by_pb.values(), key=lambda s: s.playbook)


def _waits_in_order(journey: Journey) -> list[tuple[str, int]]:
    order = journey.step_ids()
    waits = journey.waits
    return [(step, waits[step]) for step in order if step in waits]


def position(pb: CompiledPlaybook, state: Any, clock: Clock, until_holds: bool | None) -> dict[str, Any]:
    """Where one subject is in a journey, when it is next due and why, for `explain` (state: a JourneyState or
    None)."""
    tz = clock.timezone
    if state is None:
        return {"status": "none", "reason": "not in this journey: it starts when the subject enters the trigger"}
    out: dict[str, Any] = {"status": state.status, "episode": state.episode, "step": state.step,
                           "since": localize(state.since, tz).isoformat(),
                           "next_due": localize(state.due_at, tz).isoformat() if state.due_at else None}
    if state.status != "active":
        out["reason"] = f"{state.status} at {show_time(state.since, tz)} ({state.reason})"
        return out
    assert pb.journey is not None
    i = pb.journey.waits.get(state.step or "")
    if i is None:
        out["reason"] = f"waits at `{state.step}`, which is no longer in the playbook: exits at the next run"
        return out
    node = pb.journey.nodes[i]
    due = show_time(state.due_at, tz) if state.due_at else "?"
    if node.cond is not None:
        now = "holds now: goes on at the next run" if until_holds else "does not hold now"
        out["reason"] = f"waits at `{state.step}` until {node.wait.until} ({now}), at the latest {due}"
    elif state.due_at is not None and state.due_at <= clock.now:
        out["reason"] = f"waits at `{state.step}` ({node.describe()}): due since {due}, goes on at the next run"
    else:
        out["reason"] = f"waits at `{state.step}` ({node.describe()}): goes on at the first run from {due}"
    return out


@dataclass(frozen=True)
class Move:
    """Subjects an edit moves: they wait at a step the playbook no longer has, and exit at the next run."""

    playbook: str
    file: str
    step: str
    subjects: int


def moves(playbooks: PlaybookSet, waiting: dict[str, dict[str, int]]) -> list[Move]:
    """For each journey playbook, the steps with subjects waiting (`waiting`: playbook -> step -> how many) that
    its current definition no longer has."""
    out = []
    for pb in playbooks.valid:
        at = waiting.get(pb.id) or {}
        kept = pb.journey.waits if pb.journey is not None else {}
        out += [Move(pb.id, pb.file, step, n) for step, n in sorted(at.items()) if step not in kept]
    return out
