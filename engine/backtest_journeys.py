"""A journey playbook (§14) in a backtest (engine/backtest.py): its subjects' journeys kept in memory and moved at
each scheduled run as a tick moves them (engine/journey_run.py), on the data as synced then.

The state of one journey playbook is what the tick keeps in its tables: the episode of each subject
(engine/episodes.py), the match bit ("the trigger held at the last look"), and where each subject in an active
journey rests and until when. At a run, with the subjects matching the trigger then:

1. the trigger's candidates (matching without the bit: enter; the bit without matching: resolve) are decided by
   `journey_run.entries`, as in a tick (cooldown, max_episodes, activation, max_enters_per_run, exit_on_unmatch);
2. the subjects looked at are those entering, those whose wait is due, those leaving with the trigger, and those
   for whom `exit_when`, the `until` of their wait or removal holds — what a tick's full look finds;
3. each moves by `journey_run.progress_of` and `journey_run.Runner` (engine/journey.py steps, actions planned
   under playbook/subject/episode/step_id/0, `on_resolve` when the journey ends).

A journey that exits cancels its step actions not yet sent: the backtest takes as sent each step action due at
or before the exit (`playbook start` delivers an action when it is due) and lists the others, those a tick would
cancel before delivery, under the exit's event (`cancelled`). Nothing here writes to the database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from engine import episodes, journey_run
from engine.clock import Clock
from engine.contact_policy import CapPreview
from engine.episodes import Episode, Policy, Transition
from engine.evaluation import PlaybookResult
from engine.planner import PlannedEvent, plan_inputs, template_rows
from engine.plugins import CLOSE
from engine.settings import Settings
from engine.spec.compiled import CompiledPlaybook
from engine.store.journeys import JourneyState

CHUNK = journey_run.CHUNK
UNSENT = ("dedup_key", "firing", "kind", "not_before", "zone", "contact_id")    # what a cancelled action shows


class JourneyPlaybook:
    """One journey playbook's state in memory: episodes, match bits, active journeys, and the step actions of
    each active journey that may still be cancelled."""

    def __init__(self, pb: CompiledPlaybook, tz: str):
        self.pb = pb
        self.policy = Policy.of(pb.spec, tz)
        self.episodes: dict[str, Episode] = {}
        self.bits: set[str] = set()
        self.journeys: dict[str, JourneyState] = {}                   # active ones
        self.unsent: dict[tuple[str, int], list[dict[str, Any]]] = {}  # (subject, episode) -> pending step rows
        self.active = False
        self.reads_now = journey_run.reads_now(pb.journey)            # its conditions read now()
        self.known: tuple[Any, dict[str, tuple[bool, tuple[bool, ...]]]] = (None, {})  # (key, subject -> values)


@dataclass
class Evaluated:
    """One journey playbook's evaluation at one run, not yet applied (a run-wide rail may discard it)."""

    state: JourneyPlaybook
    events: list[Any]
    planned: int
    held: int
    writes: list[Transition] = field(default_factory=list)         # entries: enters, baselines, silent resolves
    mend: tuple[list[str], list[str]] = ([], [])
    endings: list[Transition] = field(default_factory=list)
    unmatched: set[str] = field(default_factory=set)
    moved: list[JourneyState] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, now: datetime) -> None:
        state = self.state
        for t in self.writes + self.endings:
            state.episodes[t.subject_id] = episodes.advance(state.episodes.get(t.subject_id), t, now)
        state.bits |= {t.subject_id for t in self.writes if t.event in ("enter", "baseline")} | set(self.mend[0])
        # a journey that ends leaves the bit (the trigger held at the last look), unless it left with the trigger
        state.bits -= {t.subject_id for t in self.writes if t.event == "resolve"} | set(self.mend[1]) | {
            t.subject_id for t in self.endings if t.subject_id in self.unmatched}
        for s in self.moved:
            if s.status == "active":
                state.journeys[s.subject_id] = s
            else:
                state.journeys.pop(s.subject_id, None)
                state.unsent.pop((s.subject_id, s.episode), None)
        # the step actions an exit may still cancel: pending ones held past this run (the others go out now)
        going = {(s.subject_id, s.episode) for s in self.moved if s.status == "active"}
        for r in self.rows:
            key = (r["subject_id"], r["episode"])
            if key in going and r["status"] == "pending" and r["firing"] != "resolve" and r["action_index"] >= 0 \
                    and r["not_before"] > now:
                state.unsent.setdefault(key, []).append({k: r.get(k) for k in UNSENT})
        state.active = True


def evaluate(tx: Any, settings: Settings, state: JourneyPlaybook, clock: Clock, matching: frozenset[str],
             caps: CapPreview | None, event: Callable[[PlannedEvent, str | None, list[dict[str, Any]]], Any],
             key: Any) -> Evaluated:
    """One journey playbook at one run (see the module docstring); `event(planned event, csm, cancelled step
    actions)` makes each of its events. `key`: what the values of its conditions depend on at this run besides
    the subject (engine/backtest.py `_Reuse`); values read at an earlier run with the same key are reused."""
    pb, now = state.pb, clock.now
    journey = pb.journey
    assert journey is not None
    result = PlaybookResult(pb.id)
    baseline = not state.active and pb.spec.activation == "baseline"
    candidates = (sorted(matching - state.bits), sorted(state.bits - matching))
    entering, unmatched, writes, mend = journey_run.entries(
        lambda ids: {s: state.episodes[s] for s in ids if s in state.episodes}, pb, state.policy, now, candidates,
        baseline, result)
    starts = {t.subject_id: t for t in entering}
    waiting = {sid: s for sid, s in state.journeys.items() if sid not in starts}
    exprs = [e.expr for e in journey.expressions]
    untils = journey.until_waits()
    looked: list[str] = []
    values: dict[str, tuple[bool, tuple[bool, ...]]] = {}
    ids = sorted(starts.keys() | waiting.keys())
    if state.known[0] != key:
        state.known = (key, {})
    found = state.known[1]
    unknown = [sid for sid in ids if sid not in found]
    for i in range(0, len(unknown), CHUNK):
        part = unknown[i:i + CHUNK]
        found.update(dict.fromkeys(part, (False, ())) | tx.replay.values(pb.subject, part, exprs, clock))
    for sid in ids:
        live, truths = found[sid]
        s = waiting.get(sid)
        holds = s is not None and (not live or (s.due_at is not None and s.due_at <= now) or sid in unmatched
                                   or _holds(truths, journey.exit_expr) or _holds(truths, untils.get(s.step or "")))
        if sid in starts or holds:
            looked.append(sid)
            values[sid] = (live, truths)
    runner = journey_run.Runner(settings, pb, clock, lambda eps: [], True, caps, result, written_at=now)
    cal = journey_run.calendar(settings)
    csm: dict[str, str | None] = {}
    reader = SimpleNamespace(subjects=tx.replay.subjects(now, template_rows(ZoneInfo(clock.timezone))))
    for i in range(0, len(looked), CHUNK):
        part = looked[i:i + CHUNK]
        recs, contacts = plan_inputs(reader, pb, part, today=clock.today)
        for sid in part:
            live, truths = values[sid]

            def truth(n: int, truths: tuple[bool, ...] = truths) -> bool:
                return _holds(truths, n)
            rec = recs.get(sid, {})
            csm[f"{pb.subject}:{sid}"] = (rec.get("account") or {}).get("csm_email")
            s = JourneyState(sid, starts[sid].episode, "active", None, None, now, now) if sid in starts \
                else waiting[sid]
            progress = journey_run.progress_of(pb, s, sid in starts, live, truth, sid in unmatched, now,
                                               journey_run.subject_zone(settings, rec), cal)
            if progress is not None:
                runner.move(s, progress, rec, contacts, entered=sid in starts)
    exited = {f"{pb.subject}:{sid}": _cancelled(state.unsent.get((sid, ep), []), now, clock.timezone)
              for sid, ep in runner.exits}
    result.events.sort(key=lambda e: (e.subject, e.event))
    events = [event(e, csm.get(e.subject), exited.get(e.subject, []) if e.event == "resolve" else [])
              for e in result.events]
    planned = sum(1 for r in runner.rows if not r["kind"].endswith(CLOSE))
    return Evaluated(state, events, planned, result.held, writes, mend, runner.endings, unmatched, runner.states,
                     runner.rows)


def _holds(truths: tuple[bool, ...], n: int | None) -> bool:
    return n is not None and n < len(truths) and bool(truths[n])


def _cancelled(rows: list[dict[str, Any]], now: datetime, tz: str) -> list[dict[str, Any]]:
    """The step actions of an exiting journey not yet due (the others went out when due): what the exit cancels."""
    out = []
    for r in sorted(rows, key=lambda r: r["dedup_key"]):
        if r["not_before"] > now:
            zone = ZoneInfo(r.get("zone") or tz)
            out.append({"step": r["firing"], "kind": r["kind"],
                        **({"contact": r["contact_id"]} if r.get("contact_id") else {}),
                        "send_at": r["not_before"].replace(tzinfo=timezone.utc).astimezone(zone)
                        .isoformat(timespec="seconds")})
    return out
