"""Which subjects may change state in a tick, per playbook: the change marks and each playbook's scan
plan (engine/scan_plan.py), the materialised metric windows, and one scan per subject type and bit word
that returns, for each playbook, the subjects to enter and to resolve."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from engine import scan_plan
from engine.lang import metric_calls
from engine.spec.compiled import CompiledPlaybook
from engine.store import changes, metric_cache, playbook_state, state
from engine.store import scan as scan_store
from engine.store.db import Database
from engine.store.entities import estimate_rows
from engine.store.matching import Clock
from engine.store.metric_cache import MetricCache

log = logging.getLogger("playbook.tick")


def metric_windows(db: Database, playbooks: list[CompiledPlaybook], clock: Clock, wall: datetime,
                   touched: changes.Touched | None = None) -> MetricCache | None:
    """Materialise every metric window these playbooks read, once for the tick (derived data only)."""
    refs = {r for pb in playbooks for c in pb.conditions for r in metric_calls(c.expr)}
    if not refs:
        return None
    with db.engine.connect() as conn:
        conn.info["immediate"] = True
        with conn.begin():
            return metric_cache.ensure(conn, db.schema, refs, clock.today, wall, touched)


def assign_slots(db: Database, playbooks: list[CompiledPlaybook]) -> dict[str, scan_store.Slot]:
    """Each playbook's bit in match_state (a derived index of open episodes, so assigned even when dry)."""
    with db.engine.connect() as conn:
        conn.info["immediate"] = True
        with conn.begin():
            return scan_store.assign_slots(conn, db.schema, [(p.id, p.subject) for p in playbooks])


def read_marks(db: Database) -> tuple[changes.Marks, dict[str, dict[str, Any]]]:
    """The current change marks, and what each playbook's last completed scan saw."""
    with db.engine.connect() as conn:
        marks = changes.read_marks(conn, db.schema)
        saved = {pid: st["scan"] for pid, st in playbook_state.all_states(conn, db.schema).items() if st["scan"]}
    return marks, saved


def scan_plans(db: Database, playbooks: list[CompiledPlaybook], saved: dict[str, dict[str, Any]], clock: Clock,
               wall: datetime, marks: changes.Marks) -> dict[str, scan_plan.ScanPlan]:
    """Each playbook's scan plan; changes-only plans turn full when more rows changed than a full scan costs."""
    plans = {pb.id: scan_plan.plan(pb, saved.get(pb.id), clock, wall, marks) for pb in playbooks}
    many: dict[tuple[str, datetime], bool] = {}
    with db.engine.connect() as conn:
        sizes: dict[str, int] = {}

        def size(entity: str) -> int:
            if entity not in sizes:
                sizes[entity] = estimate_rows(conn, db.schema.entity(entity))
            return sizes[entity]

        for pb in playbooks:
            p = plans[pb.id]
            if p.full:
                continue
            for entity in scan_plan.entities_scanned(pb):
                since = p.since[entity]
                if (entity, since) not in many:
                    cap = scan_plan.full_scan_threshold(entity, size)
                    many[(entity, since)] = changes.changed_at_least(conn, db.schema, entity, since, cap)
                if many[(entity, since)]:
                    plans[pb.id] = scan_plan.ScanPlan(True, f"many {entity} rows changed since the last scan")
                    break
    for pb in playbooks:
        log.debug("playbook %s scan: %s", pb.id, plans[pb.id].reason, extra={"playbook": pb.id})
    return plans


def by_subject(playbooks: list[CompiledPlaybook], slots: dict[str, scan_store.Slot]) -> list[list[CompiledPlaybook]]:
    """The playbooks grouped by subject type and bit word, in a fixed order (file order inside a group)."""
    groups: dict[tuple[str, int], list[CompiledPlaybook]] = {}
    for pb in playbooks:
        groups.setdefault((pb.subject, slots[pb.id].word), []).append(pb)
    return [groups[k] for k in sorted(groups, key=lambda k: (SUBJECTS.index(k[0]), k[1]))]


SUBJECTS = ("account", "contact", "goal")


def scan(db: Database, playbooks: list[CompiledPlaybook], slots: dict[str, scan_store.Slot], clock: Clock,
         cache: MetricCache | None, plans: dict[str, scan_plan.ScanPlan],
         touched: changes.Touched) -> dict[str, tuple[list[str], list[str]]]:
    """One statement per subject type, bit word (62 playbooks) and plan kind (full or changes only):
    playbook id -> (subjects to enter, to resolve)."""
    groups: dict[tuple[str, int, bool], list[CompiledPlaybook]] = {}
    for pb in playbooks:
        groups.setdefault((pb.subject, slots[pb.id].word, plans[pb.id].full), []).append(pb)
    out: dict[str, tuple[list[str], list[str]]] = {pb.id: ([], []) for pb in playbooks}
    with db.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # a changes-only scan reads a few thousand subjects: look each one up in the joined tables (their
            # rows are cached) rather than hash whole tables, which the default page costs prefer
            conn.execute(text("SET LOCAL random_page_cost = 1.1"))
        for (subject, word, full), pbs in groups.items():
            conditions = {slots[p.id].bit: [c.expr for c in p.conditions] for p in pbs}
            # changes only: the ids themselves, bound as one list, not a subquery: the database then plans for
            # a few thousand subjects
            only = None if full else sorted(_touched(conn, touched, db, subject, pbs, plans))
            if only == []:
                continue
            owner = {slots[p.id].value: out[p.id] for p in pbs}     # bit -> its playbook's (enter, resolve)
            for ch in scan_store.scan(conn, db.schema, subject, word, conditions, clock, db.dialect, cache, only):
                differ = ch.old ^ ch.new            # only these playbooks' bits (the scan masks the rest)
                while differ:
                    bit = differ & -differ
                    differ ^= bit
                    owner[bit][0 if ch.new & bit else 1].append(ch.subject_id)
    return out


def _touched(conn: Connection, touched: changes.Touched, db: Database, subject: str, pbs: list[CompiledPlaybook],
             plans: dict[str, scan_plan.ScanPlan]) -> set[str]:
    """The subjects changed since the oldest of these playbooks' last scans, and those whose cooldown ended since."""
    since = {e: min(plans[p.id].since[e] for p in pbs) for e in changes.ENTITIES
             if all(plans[p.id].since[e] is not None for p in pbs)}
    cooled = [state.cooldown_ended(db.schema, p.id, subject, *ended)
              for p in pbs if (ended := plans[p.id].cooldown_ended) is not None]
    return touched.ids(conn, subject, since, any(scan_plan.reads_usage(p) for p in pbs), cooled)
