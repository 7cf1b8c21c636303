"""One journey playbook's evaluation in a tick (§14), as one unit of the tick's write batch.

The scan (engine/candidates.py) says who now matches the trigger; for a journey the match bit means "the
trigger held at the last look" (not "in an open episode"), so a subject whose journey ended while the trigger
still holds does not enter again until the trigger stops holding and holds again. Then:

1. subjects entering start their journey at the first step (cooldown, max_episodes, activation and
   max_enters_per_run as for any playbook, engine/episodes.py);
2. the subjects a run looks at are those entering, those whose wait is due (a range of an index on the due
   time), and those whose data changed since the last scan (or, at a full scan, those for whom `exit_when` or
   their `wait until` condition holds, and after an edit those waiting at a step no longer there) — never every
   subject waiting;
3. their conditions are evaluated in one statement, then each moves through its steps (engine/journey.py);
4. the actions of the steps that ran are planned under `playbook/subject/episode/step_id/0`, and a journey
   that ended resolves its episode: `on_resolve` runs, and one that exited cancels its unsent step actions
   and closes its open tasks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from engine import episodes
from engine.actions import ClosePayload
from engine.clock import Clock
from engine.contact_policy import CapPreview, ContactPolicy, ContactPolicyConfig
from engine.episodes import Episode, Policy, Transition
from engine.evaluation import PlaybookResult, blocked, record_state
from engine.journey import Calendar, Journey, Progress, advance, resume
from engine.lang import metric_calls
from engine.lang.ast import Now, walk
from engine.planner import PlannedEvent, Planner, dedup_key, plan_inputs
from engine.plugins import CLOSE, registry
from engine.settings import Settings
from engine.spec.compiled import CompiledPlaybook
from engine.store.journeys import JourneyState

log = logging.getLogger("playbook.tick")
CHUNK = 5000


def calendar(settings: Settings) -> Calendar:
    """What waits count business days and local times with: the contact policy's business days (Monday to
    Friday without one) and the config zone."""
    policy = ContactPolicy(settings.contact_policy, settings.timezone)
    return Calendar(policy.business_day, settings.timezone)


def subject_zone(settings: Settings, records: dict[str, dict]) -> str:
    """The subject's zone for waits before customer steps: the contact policy's `timezone_from` (by default the
    contact's, then the account's time zone), else the config zone."""
    config = settings.contact_policy or ContactPolicyConfig()
    return ContactPolicy(config, settings.timezone).zone(records.get("contact"), records.get("account"))


def reads_usage(journey: Journey) -> bool:
    return any(metric_calls(e.expr) for e in journey.expressions)


def reads_now(journey: Journey) -> bool:
    return any(isinstance(n, Now) for e in journey.expressions for n in walk(e.expr))


def evaluate_journey(batch: Any, settings: Settings, pb: CompiledPlaybook, clock: Clock, *, run_id: int | None,
                     slot: Any, candidates: tuple[list[str], list[str]], full: bool, changed: set[str] | None,
                     cache: Any, records: Any, activating: bool, was_active: bool, scan_state: dict | None,
                     keep_events: bool, caps: CapPreview | None, stale: str | None, edited: bool = False,
                     keep_payloads: bool = False) -> Any:
    """Enter, step and end one journey playbook's subjects (see the module docstring)."""
    dry_run = batch.dry_run
    result = PlaybookResult(pb.id, activated=activating)
    journey = pb.journey
    assert journey is not None
    policy = Policy.of(pb.spec, clock.timezone)
    baseline = activating and pb.spec.activation == "baseline"
    now = clock.now
    with batch.unit() as unit:
        unit.runs.lock_playbook(pb.id)
        if stale:
            result.skipped = stale
            log.warning("playbook %s not evaluated: %s", pb.id, stale, extra={"playbook": pb.id})
            record_state(unit, pb, clock, "stale", {"reason": stale}, dry_run, active=was_active)
            return result
        entering, unmatched, transitions, mend = entries(lambda ids: unit.episodes.stored(pb.id, pb.subject, ids),
                                                         pb, policy, now, candidates, baseline, result)
        unit.episodes.apply(pb.id, pb.subject, transitions, now, run_id, slot, mend, events=False)
        # who this run looks at: due waits, changed subjects, and at a full scan those whose exit or until holds
        states = {s.subject_id: s for s in unit.journeys.due(pb.id, pb.subject, now)}
        looked = set(unmatched)
        if edited:          # the steps may have changed: those waiting at a step no longer there exit now
            looked |= set(unit.journeys.elsewhere(pb.id, pb.subject, sorted(journey.waits)))
        if full:
            exprs = ([(None, journey.expressions[journey.exit_expr].expr)] if journey.exit_expr is not None else [])
            exprs += [(step, journey.expressions[i].expr) for step, i in journey.until_waits().items()]
            looked |= set(unit.journeys.holding(pb.id, pb.subject, exprs, clock, cache))
        elif changed:
            looked |= changed
        looked -= states.keys()
        looked -= {t.subject_id for t in entering}
        states.update(unit.journeys.of(pb.id, pb.subject, sorted(looked)))
        starts = {t.subject_id: t for t in entering}
        ids = sorted(starts.keys() | states.keys())
        runner = Runner(settings, pb, clock, lambda eps: unit.tasks.open_for_episodes(pb.id, pb.subject, eps),
                        keep_events, caps, result, keep_payloads)
        cal = calendar(settings)
        limit = pb.spec.max_actions_per_run or settings.defaults.max_actions_per_run
        planned = 0
        for i in range(0, len(ids), CHUNK):
            part = ids[i:i + CHUNK]
            values = unit.journeys.values(pb.subject, part, [e.expr for e in journey.expressions], clock, cache)
            recs, contacts = plan_inputs(unit, pb, part, records, today=clock.today)
            for sid in part:
                live, truths = values.get(sid, (False, ()))

                def truth(n: int, truths: tuple[bool, ...] = truths) -> bool:
                    return bool(truths[n]) if n < len(truths) else False
                rec = recs.get(sid, {})
                state = (JourneyState(sid, starts[sid].episode, "active", None, None, now, now) if sid in starts
                         else states[sid])
                progress = progress_of(pb, state, sid in starts, live, truth, sid in unmatched, now,
                                       subject_zone(settings, rec), cal)
                if progress is not None:
                    runner.move(state, progress, rec, contacts, entered=sid in starts)
            # written chunk by chunk, so memory stays flat however many steps are due; the unit spans them all
            planned += sum(1 for r in runner.rows if not r["kind"].endswith(CLOSE))
            if limit is not None and planned > limit:
                unit.discard()
                return blocked(unit, pb, clock, result, planned, limit, dry_run, was_active)
            _write(unit, pb, runner, unmatched, now, run_id, slot, result, dry_run)
        result.events.sort(key=lambda e: (e.subject, e.event))
        result.unrendered += runner.planner.failures
        if result.held:
            scan_state = None
        record_state(unit, pb, clock, "ok", {"events": sum(result.counts.values()), "planned": result.planned},
                     dry_run, scan_state, activated=activating)
    return result


def progress_of(pb: CompiledPlaybook, state: JourneyState, entering: bool, live: bool,
                truth: Callable[[int], bool], unmatched: bool, now: datetime, zone: str, cal: Calendar
                ) -> Progress | None:
    """What a run does to one subject's journey (None: it keeps waiting). An entering subject starts at the first
    step unless `exit_when` holds already; one in a journey exits when removed, unmatched (exit_on_unmatch) or
    `exit_when` holds, else resumes from its wait when that is over (engine/journey.py)."""
    journey = pb.journey
    assert journey is not None
    exits = journey.exit_expr is not None and truth(journey.exit_expr)
    if entering:
        if exits:
            return Progress(ended="exited", reason=f"exit_when holds: {pb.spec.exit_when}")
        return advance(journey, journey.start, now, truth, zone, cal)
    if not live:
        return Progress(ended="exited", reason="the subject was removed")
    if unmatched:
        return Progress(ended="exited", reason="the trigger no longer matches (exit_on_unmatch)")
    if exits:
        return Progress(ended="exited", reason=f"exit_when holds: {pb.spec.exit_when}")
    return resume(journey, state.step or "", state.due_at, now, truth, zone, cal)


def _write(unit: Any, pb: CompiledPlaybook, runner: Runner, unmatched: set[str], now: Any, run_id: int | None,
           slot: Any, result: Any, dry_run: bool) -> None:
    """Write what a chunk of subjects did: cancel the unsent step actions of the journeys that exited, resolve the
    episodes that ended, record events and journey rows, plan the outbox rows; then forget them."""
    if runner.exits:
        unit.outbox.cancel_journey(pb.id, pb.subject, runner.exits, now, "journey exited before delivery")
    unit.episodes.apply(pb.id, pb.subject, runner.endings, now, run_id, slot,
                        ([], [t.subject_id for t in runner.endings if t.subject_id in unmatched]),
                        events=False, clear_resolved=False)
    unit.episodes.record_events(run_id, now, pb.id, pb.subject, runner.events)
    unit.journeys.write(pb.id, pb.subject, runner.states)
    result.planned += unit.outbox.enqueue(runner.rows) if not dry_run else len(runner.rows)
    result.closures += sum(1 for r in runner.rows if r["kind"].endswith(CLOSE))
    runner.rows, runner.states, runner.endings, runner.exits, runner.events = [], [], [], [], []


def entries(stored: Callable[[list[str]], Mapping[str, Episode]], pb: CompiledPlaybook, policy: Policy, now: Any,
            candidates: tuple[list[str], list[str]], baseline: bool, result: Any
            ) -> tuple[list[Transition], set[str], list[Transition], tuple[list[str], list[str]]]:
    """The scan's candidates decided: (journeys starting, subjects exiting because the trigger stopped matching,
    transitions to write now, match bits to mend). `stored(ids)`: those subjects' episodes."""
    enter, resolve = set(candidates[0]), set(candidates[1])
    ids = sorted(enter | resolve)
    entering: list[Transition] = []
    unmatched: set[str] = set()
    write: list[Transition] = []
    mend_set: list[str] = []
    mend_clear: list[str] = []
    left = pb.spec.max_enters_per_run
    for i in range(0, len(ids), CHUNK):
        part = ids[i:i + CHUNK]
        d = episodes.decide([x for x in part if x in enter], [x for x in part if x in resolve], stored(part), now,
                            policy, baseline=baseline)
        kept = d.transitions
        if left is not None:
            kept, held = episodes.held_back(kept, left)
            left -= sum(1 for t in kept if t.event == "enter")
            result.held += held
        mend_set += d.mend_set
        mend_clear += d.mend_clear
        for t in kept:
            if t.event == "resolve" and not t.baselined:
                # the trigger stopped matching during a journey: it ends only with exit_on_unmatch
                if pb.spec.exit_on_unmatch:
                    unmatched.add(t.subject_id)
                else:
                    mend_clear.append(t.subject_id)
                continue
            if t.event == "baseline":
                result.counts["baseline"] += 1
                result.events.append(PlannedEvent(pb.id, f"{pb.subject}:{t.subject_id}", "baseline", t.episode))
            if t.event == "enter":
                entering.append(t)
            write.append(t)
    return entering, unmatched, write, (mend_set, mend_clear)


class Runner:
    """Collects what moving subjects through their steps writes: outbox rows, journey rows, episode endings and
    events. `open_tasks([(subject id, episode)])` gives the open tasks an exit closes (store/tasks.py)."""

    def __init__(self, settings: Settings, pb: CompiledPlaybook, clock: Clock,
                 open_tasks: Callable[[list[tuple[str, int]]], list[dict[str, Any]]], keep_events: bool,
                 caps: CapPreview | None, result: Any, keep_payloads: bool = False,
                 written_at: datetime | None = None):
        from engine.clock import wall_clock

        self.pb, self.clock, self.open_tasks, self.keep_events, self.result = pb, clock, open_tasks, keep_events, result
        self.planner = Planner(settings, pb, clock, describe=keep_events, caps=caps,
                               written_at=written_at or wall_clock(), keep_payloads=keep_payloads)
        self.rows: list[dict[str, Any]] = []
        self.states: list[JourneyState] = []
        self.endings: list[Transition] = []
        self.exits: list[tuple[str, int]] = []
        self.events: list[dict[str, Any]] = []

    def move(self, state: JourneyState, progress: Progress, rec: dict, contacts: dict, *, entered: bool) -> None:
        pb, now = self.pb, self.clock.now
        sid, episode = state.subject_id, state.episode
        label = f"{pb.subject}:{sid}"
        ctx = self.planner.context_for(rec, contacts)
        name = "enter" if entered else "step"
        event = PlannedEvent(pb.id, label, name, episode)
        for node in progress.ran:
            t = Transition(sid, "step", episode, node.id, False)     # firing = the step id: its dedup key
            self.rows += self.planner.plan_action(t, node.action, ctx, event)
        steps = [n.id for n in progress.ran]
        if progress.ended:
            detail: dict[str, Any] = {"steps": steps, "skipped": progress.skipped}
            new = JourneyState(sid, episode, progress.ended, None, None, now, state.started_at, progress.reason)
        else:
            detail = {"steps": steps, "skipped": progress.skipped, "at": progress.at,
                      "due": self.clock.local(progress.due_at).isoformat(timespec="seconds")}
            new = JourneyState(sid, episode, "active", progress.at, progress.due_at, now, state.started_at)
        self.states.append(new)
        if entered or steps or (not progress.ended and progress.at != state.step):
            event.detail = detail
            self._event(event, name, sid, episode, detail)
        if progress.ended:
            t = Transition(sid, "resolve", episode, 1, False)
            self.endings.append(t)
            end, rows = self.planner.plan(t, rec, contacts)      # on_resolve
            end.detail = {"outcome": progress.ended, "reason": progress.reason}
            self.rows += rows
            if progress.ended == "exited":
                self.exits.append((sid, episode))
                self.rows += self._close_tasks(t)
            self._event(end, "resolve", sid, episode, end.detail)

    def _event(self, event: PlannedEvent, name: str, sid: str, episode: int, detail: dict[str, Any]) -> None:
        self.result.counts[name] += 1
        if self.keep_events:
            self.result.events.append(event)
        self.events.append(dict(subject_id=sid, event=name, episode=episode, detail=detail))

    def _close_tasks(self, t: Transition) -> list[dict[str, Any]]:
        """An exiting journey closes the open tasks its steps created (unless `close_on_resolve: false`)."""
        pb = self.pb
        kinds = registry().kinds
        closable = {n.id: n.action for n in pb.journey.nodes
                    if n.action is not None and kinds[n.action.kind].closable(n.action.spec)}
        if not closable:
            return []
        out = []
        for task in self.open_tasks([(t.subject_id, t.episode)]):
            step = task["dedup_key"].rsplit("/", 2)[-2]
            creator = closable.get(step) or next(iter(closable.values()))
            key = dedup_key(pb.id, pb.subject, t.subject_id, t.episode, "close", task["id"])
            row = self.planner.base_row(key, t, "close", creator)
            row.update(kind=creator.kind + CLOSE, connector=task["connector"], action_index=-1,
                       payload=ClosePayload(task["dedup_key"], task["external_id"], task["title"]).to_json())
            out.append(row)
        return out

