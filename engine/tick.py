"""One evaluation tick: every playbook × its subjects -> episode transitions -> outbox rows (§8).

Each playbook is evaluated as one unit of a write batch (engine/store/batch.py: a savepoint inside a
transaction shared with the next playbooks for up to a second), so a crash leaves all or nothing of
it; a dry run does the same work and rolls back."""

from __future__ import annotations

import hashlib
import logging
import time
from contextlib import contextmanager
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, text

from engine.planner import PlannedEvent, Planner, dedup_key, roles_of, template_rows
from engine.settings import Settings
from engine.spec.compiled import CompiledPlaybook, PlaybookSet
from engine import candidates, scan_plan
from engine.store import changes, outbox, playbook_state, scan, state, subjects, tasks
from engine.store.batch import WriteBatch
from engine.store.db import Database
from engine.store.entities import analyze_grown
from engine.store.matching import Clock


log = logging.getLogger("playbook.tick")


@dataclass
class PlaybookOutcome:
    """What one playbook did in a tick."""

    playbook: str
    matched: int | None = None
    events: list[PlannedEvent] = field(default_factory=list)   # kept only when run_tick(keep_events=True)
    counts: Counter = field(default_factory=Counter)            # event kind -> how many
    planned: int = 0
    skipped: str | None = None


@dataclass
class TickResult:
    """Everything a tick did (or, dry, would do)."""

    clock: Clock
    outcomes: list[PlaybookOutcome]
    dry_run: bool
    run_id: int | None = None
    scans: dict[str, str] = field(default_factory=dict)    # playbook id -> how its subjects were scanned
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step (Stopwatch)

    @property
    def events(self) -> list[PlannedEvent]:
        return [e for o in self.outcomes for e in o.events]

    def as_json(self) -> dict[str, Any]:
        """The stable machine form of §11."""
        tz = __import__("zoneinfo").ZoneInfo(self.clock.timezone)
        now = self.clock.now.replace(tzinfo=timezone.utc).astimezone(tz).isoformat()
        return {"now": now, "events": [e.as_json() for e in self.events]}


class Stopwatch(dict):
    """Seconds spent per named step: `with watch("scan"): ...` (steps repeat and add up)."""

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        self[name] = self.get(name, 0.0) + seconds


def wall_clock() -> datetime:
    """Current time as naive UTC (how the store keeps instants)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def run_tick(db: Database, settings: Settings, playbooks: PlaybookSet, clock: Clock, *, dry_run: bool = False,
             only: set[str] | None = None, kind: str = "run", keep_events: bool = True,
             on_playbook: Callable[[str], None] | None = None) -> TickResult:
    """Evaluate the enabled (or selected) playbooks at `clock` and plan their actions.

    With keep_events=False (the service, the benchmark) only counts are kept, so memory does not
    grow with the number of transitions."""
    selected = [p for p in playbooks.valid if (p.id in only if only else p.spec.enabled)]
    watch = Stopwatch()
    run_id = None
    if not dry_run:
        with db.engine.begin() as conn:
            run_id = state.start_run(conn, db.schema, kind, clock.now, wall_clock())
    with watch("marks"):
        marks, saved = candidates.read_marks(db)   # before the metric cache: it must reflect at least these
    touched = changes.Touched(db.schema)  # what changed since the marks, read once for all subject types
    with watch("metric windows"):
        cache = candidates.metric_windows(db, selected, clock, wall_clock(), touched)
    with watch("plans"):
        slots = candidates.assign_slots(db, selected)
        wall = wall_clock()
        plans = candidates.scan_plans(db, selected, saved, clock, wall, marks)
    scan_states = {pb.id: scan_plan.saved_state(pb, plans[pb.id], clock, wall, marks, saved.get(pb.id))
                   for pb in selected}
    synced = _last_synced(db, settings)
    records = template_cache(clock)      # subject rows, read once for all playbooks
    done: dict[str, PlaybookOutcome] = {}
    with WriteBatch(db.engine, dry_run=dry_run, on_commit=lambda s: watch.add("commit", s)) as batch:
        # one subject type (and bit word) at a time: its scan, then its playbooks; only its candidates are in
        # memory, and the order (hence the order locks are taken in) is the same in every tick
        for pbs in candidates.by_subject(selected, slots):
            with watch("scan"):
                found = candidates.scan(db, pbs, slots, clock, cache, plans, touched)
            for pb in pbs:
                if on_playbook:
                    on_playbook(pb.id)
                mine = found.pop(pb.id)
                if not any(mine) and not _repeat_due(db, pb, clock) and not _stale(settings, pb, synced):
                    done[pb.id] = PlaybookOutcome(pb.id)   # nothing changes: only its scan state is recorded
                    with watch("record"), batch.unit() as unit:
                        _record_state(unit.conn, db, pb, clock, "ok", {"events": 0, "planned": 0}, dry_run,
                                      scan_states[pb.id])
                    continue
                done[pb.id] = evaluate_playbook(batch, db, settings, pb, clock, run_id=run_id, slot=slots[pb.id],
                                                candidates=mine, synced=synced, scan_state=scan_states[pb.id],
                                                watch=watch, keep_events=keep_events, records=records)
    outcomes = [done[pb.id] for pb in selected]
    with watch("record"):
        if run_id is not None:
            with db.engine.begin() as conn:
                detail = {o.playbook: {"matched": o.matched, "events": sum(o.counts.values()), "planned": o.planned,
                                       "skipped": o.skipped} for o in outcomes}
                state.finish_run(conn, db.schema, run_id, "ok", wall_clock(), detail)
    if not dry_run:
        with watch("statistics"), db.engine.begin() as conn:
            transitions = sum(sum(o.counts.values()) for o in outcomes)
            s = db.schema
            analyze_grown(conn, {s.episodes: transitions, s.events: transitions, s.match_state: transitions,
                                 s.outbox: sum(o.planned for o in outcomes)})
    return TickResult(clock, outcomes, dry_run, run_id, {pid: p.reason for pid, p in plans.items()}, dict(watch))


def evaluate_playbook(batch: WriteBatch, db: Database, settings: Settings, pb: CompiledPlaybook, clock: Clock, *,
                      run_id: int | None, slot: scan.Slot, candidates: tuple[list[str], list[str]],
                      synced: dict[str, datetime], scan_state: dict[str, Any] | None = None,
                      watch: Stopwatch | None = None, keep_events: bool = True,
                      records: subjects.RowCache | None = None) -> PlaybookOutcome:
    """One playbook as one unit of the tick's write batch (all or nothing): transitions, episode writes,
    events and outbox rows.

    Candidates go through in chunks of CHUNK subjects (decide, plan, write), so memory stays flat
    however many subjects change; the unit still spans them all."""
    schema = db.schema
    dry_run = batch.dry_run
    watch = watch if watch is not None else Stopwatch()
    records = records or template_cache(clock)
    result = PlaybookOutcome(pb.id)
    limit = pb.spec.max_actions_per_run or settings.defaults.max_actions_per_run
    with batch.unit() as unit:
        conn = unit.conn
        _lock(conn, pb.id)
        stale = _stale(settings, pb, synced)
        if stale:
            result.skipped = stale
            log.warning("playbook %s not evaluated: %s", pb.id, stale, extra={"playbook": pb.id})
            _record_state(conn, db, pb, clock, "stale", {"reason": stale}, dry_run)
            return result
        planned_actions = 0
        for transitions, mend in _transitions(conn, schema, pb, clock, candidates, watch):
            with watch("plan actions"):
                rows = _plan(conn, db, settings, pb, clock, transitions, result, keep_events, records)
            planned_actions += sum(1 for r in rows if r["kind"] != "task_close")
            if limit is not None and planned_actions > limit:
                unit.discard()
                return _blocked(conn, db, pb, clock, result, _count_all(db, pb, clock, candidates, watch), limit,
                                dry_run)
            with watch("write"):
                state.apply_transitions(conn, schema, pb.id, pb.subject, transitions, clock.now, run_id, slot, mend)
                result.planned += outbox.plan(conn, schema, rows) if not dry_run else len(rows)
        result.events.sort(key=lambda e: (e.subject, e.event))
        with watch("write"):
            _record_state(conn, db, pb, clock, "ok", {"events": sum(result.counts.values()), "planned": result.planned},
                          dry_run, scan_state)
    return result


def template_cache(clock: Clock) -> subjects.RowCache:
    """A cache of subject rows as the action templates see them, at the clock's time zone."""
    return subjects.RowCache(shape=template_rows(ZoneInfo(clock.timezone)))


CHUNK = 5000


def _transitions(conn: Connection, schema: Any, pb: CompiledPlaybook, clock: Clock,
                 candidates: tuple[list[str], list[str]], watch: Stopwatch
                 ) -> Iterator[tuple[list[state.Transition], tuple[list[str], list[str]]]]:
    """(transitions, bits to mend) chunk by chunk: enters and resolves in subject order, then repeats."""
    enter, resolve = set(candidates[0]), set(candidates[1])
    ids = sorted(enter | resolve)
    for i in range(0, len(ids), CHUNK):
        part = ids[i:i + CHUNK]
        with watch("decide"):
            transitions, mend_set, mend_clear = state.decide(
                conn, schema, pb.id, pb.subject, [x for x in part if x in enter], [x for x in part if x in resolve],
                clock.now, cooldown_s=pb.spec.cooldown_seconds, max_episodes=pb.spec.max_episodes)
        yield transitions, (mend_set, mend_clear)
    if pb.spec.repeat_seconds is not None:
        with watch("decide"):
            due = state.repeats_due(conn, schema, pb.id, pb.subject, clock.now, pb.spec.repeat_seconds, resolve)
        for i in range(0, len(due), CHUNK):
            yield due[i:i + CHUNK], ([], [])


def _count_all(db: Database, pb: CompiledPlaybook, clock: Clock, candidates: tuple[list[str], list[str]],
               watch: Stopwatch) -> int:
    """How many actions the whole evaluation would plan (for the blocked alert), counted without writing."""
    total = 0
    with db.engine.connect() as conn:
        for transitions, _ in _transitions(conn, db.schema, pb, clock, candidates, watch):
            total += sum(len(pb.on_resolve) if t.event == "resolve" else len(pb.actions) for t in transitions)
    return total


def _blocked(conn: Connection, db: Database, pb: CompiledPlaybook, clock: Clock, result: PlaybookOutcome,
             planned: int, limit: int, dry_run: bool) -> PlaybookOutcome:
    """Safety rail: a run that would plan more than max_actions_per_run plans nothing and raises an alert."""
    reason = (f"blocked: would plan {planned} actions, more than max_actions_per_run ({limit}); nothing was "
              f"planned — check the playbook's filters, or raise the limit")
    log.error("ALERT playbook %s %s", pb.id, reason, extra={"playbook": pb.id, "alert": "max_actions_per_run"})
    result.events, result.counts, result.planned, result.skipped = [], Counter(), 0, reason
    _record_state(conn, db, pb, clock, "blocked", {"reason": reason, "would_plan": planned}, dry_run)
    return result


def _record_state(conn: Connection, db: Database, pb: CompiledPlaybook, clock: Clock, status: str,
                  detail: dict[str, Any], dry_run: bool, scan_state: dict[str, Any] | None = None) -> None:
    """The playbook's latest evaluation; `scan_state` only with a completed one (else the next scan is full)."""
    if not dry_run:
        playbook_state.record(conn, db.schema, pb.id, evaluated_at=wall_clock(), now=clock.now, status=status,
                              detail=detail, source_hash=pb.source_hash, scan=scan_state)


def entities_read(pb: CompiledPlaybook) -> set[str]:
    """The synced entities a playbook's evaluation and actions depend on."""
    needed = {"accounts"}
    if pb.subject == "contact" or any(roles_of(a) for a in (*pb.actions, *pb.on_resolve) if a.kind == "email"):
        needed.add("contacts")
    if pb.subject == "goal":
        needed.add("goals")
    if scan_plan.reads_usage(pb):
        needed.add("usage")
    return needed


def _repeat_due(db: Database, pb: CompiledPlaybook, clock: Clock) -> bool:
    """Whether an open episode of this playbook is due to fire again."""
    if pb.spec.repeat_seconds is None:
        return False
    with db.engine.connect() as conn:
        return state.repeat_due(conn, db.schema, pb.id, pb.subject, clock.now, pb.spec.repeat_seconds)


def _last_synced(db: Database, settings: Settings) -> dict[str, datetime]:
    """entity -> last sync time, read once per tick (only when the stale-data guard is on)."""
    if settings.defaults.max_data_age is None:
        return {}
    with db.engine.connect() as conn:
        return playbook_state.last_synced(conn, db.schema)


def _stale(settings: Settings, pb: CompiledPlaybook, synced: dict[str, datetime]) -> str | None:
    """Why the data this playbook reads is too old to act on, or None when it is fresh enough."""
    age = settings.defaults.max_data_age
    if age is None:
        return None
    from datetime import timedelta

    from engine.settings import parse_duration

    limit = wall_clock() - timedelta(seconds=parse_duration(age))
    old = sorted(e for e in entities_read(pb) if e not in synced or synced[e] < limit)
    if not old:
        return None
    return (f"stale data: {', '.join(old)} last synced more than {age} ago (defaults.max_data_age); "
            f"run `playbook sync`")


def _lock(conn: Connection, playbook_id: str) -> None:
    """Serialise evaluations of one playbook across processes (SQLite: BEGIN IMMEDIATE already does)."""
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"playbook:{playbook_id}".encode()).digest()[:8], "big", signed=True)
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def _plan(conn: Connection, db: Database, settings: Settings, pb: CompiledPlaybook, clock: Clock,
          transitions: list[state.Transition], result: PlaybookOutcome, keep_events: bool,
          rows: subjects.RowCache) -> list[dict[str, Any]]:
    schema = db.schema
    if not transitions:
        return []
    recs = subjects.records(conn, schema, pb.subject, [t.subject_id for t in transitions], rows)
    roles = sorted({r for a in (*pb.actions, *pb.on_resolve) if a.kind == "email" for r in roles_of(a)})
    contacts = (subjects.contacts_with_roles(conn, schema, {r["account"]["id"] for r in recs.values()
                                                            if r.get("account")}, roles, rows) if roles else {})
    planner = Planner(settings, pb, clock, wall_clock(), describe=keep_events)
    closes = _close_tasks(conn, db, pb, [t for t in transitions if t.event == "resolve"], planner, clock)
    rows: list[dict[str, Any]] = []
    for t in transitions:
        event, planned = planner.plan(t, recs.get(t.subject_id, {}), contacts)
        rows += planned
        rows += closes.get((t.subject_id, t.episode), [])
        result.counts[t.event] += 1
        if keep_events:
            result.events.append(event)
    return rows


def _close_tasks(conn: Connection, db: Database, pb: CompiledPlaybook, resolves: list[state.Transition],
                 planner: Planner, clock: Clock) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """On resolve: cancel task actions not yet delivered, and plan closing the tasks already created
    ((subject id, episode) -> its task_close rows)."""
    closable = sorted({a.index for a in pb.actions if a.kind == "task" and a.spec.close_on_resolve})
    if not closable or not resolves:
        return {}
    schema = db.schema
    keys = [dedup_key(pb.id, pb.subject, t.subject_id, t.episode, firing, index)
            for t in resolves for firing in range(1, t.firing + 1) for index in closable]
    outbox.cancel_pending(conn, schema, keys, clock.now, "episode resolved before delivery")
    episodes = [(t.subject_id, t.episode) for t in resolves]
    by_episode = {(t.subject_id, t.episode): t for t in resolves}
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for task in tasks.open_for_episodes(conn, schema, pb.id, pb.subject, episodes):
        t = by_episode[(task["subject_id"], task["episode"])]
        key = dedup_key(pb.id, pb.subject, t.subject_id, t.episode, "close", task["id"])
        row = planner.base_row(key, t, "close", pb.actions[0])
        row.update(kind="task_close", connector=task["connector"], action_index=-1,
                   payload={"task_key": task["dedup_key"], "external_id": task["external_id"],
                            "title": task["title"]})
        out.setdefault((t.subject_id, t.episode), []).append(row)
    return out
