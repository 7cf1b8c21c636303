"""Which subjects may change state in a tick, per playbook: each playbook's scan scope (engine/scope.py)
from the change marks, the materialised metric windows, and one scan per subject type and bit word that
returns, for each playbook, the subjects to enter and to resolve."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from engine import scope as scopes
from engine.clock import Clock
from engine.datamodel import ENTITIES, SUBJECT_TYPES
from engine.lang import metric_calls
from engine.spec.compiled import CompiledPlaybook
from engine.store import Store

log = logging.getLogger("playbook.tick")


def metric_windows(store: Store, playbooks: list[CompiledPlaybook], clock: Clock, wall: datetime,
                   touched: Any = None) -> Any:
    """Materialise every metric window these playbooks read, once for the tick (derived data only)."""
    refs = {r for pb in playbooks for c in pb.conditions for r in metric_calls(c.expr)}
    refs |= {r for pb in playbooks if pb.journey for e in pb.journey.expressions for r in metric_calls(e.expr)}
    if not refs:
        return None
    with store.write() as tx:
        return tx.windows.ensure(refs, clock.today, wall, touched)


def assign_slots(store: Store, playbooks: list[CompiledPlaybook]) -> dict[str, Any]:
    """Each playbook's bit in match_state (a derived index of open episodes, so assigned even when dry)."""
    with store.write() as tx:
        return tx.scans.assign_slots([(p.id, p.subject) for p in playbooks])


def read_marks(store: Store) -> tuple[Any, dict[str, dict[str, Any]]]:
    """The current change marks, and each playbook's latest evaluation (what its last completed scan saw, and
    whether its activation is done)."""
    with store.read() as tx:
        return tx.changes.marks(), tx.runs.playbook_states()


def scopes_of(store: Store, playbooks: list[CompiledPlaybook], saved: dict[str, dict[str, Any]], clock: Clock,
              wall: datetime, marks: Any) -> dict[str, scopes.ScanScope]:
    """Each playbook's scan scope; changes-only scopes turn full when more rows changed than a full scan costs."""
    chosen = {pb.id: scopes.choose(pb, saved.get(pb.id), clock, wall, marks) for pb in playbooks}
    many: dict[tuple[str, datetime], bool] = {}
    with store.read() as tx:
        sizes: dict[str, int] = {}

        def size(entity: str) -> int:
            if entity not in sizes:
                sizes[entity] = tx.changes.estimate_rows(entity)
            return sizes[entity]

        for pb in playbooks:
            s = chosen[pb.id]
            if s.full:
                continue
            for entity in scopes.entities_scanned(pb):
                since = s.since[entity]
                if (entity, since) not in many:
                    cap = scopes.full_scan_threshold(entity, size)
                    many[(entity, since)] = tx.changes.changed_at_least(entity, since, cap)
                if many[(entity, since)]:
                    chosen[pb.id] = scopes.ScanScope(True, f"many {entity} rows changed since the last scan")
                    break
    for pb in playbooks:
        log.debug("playbook %s scan: %s", pb.id, chosen[pb.id].reason, extra={"playbook": pb.id})
    return chosen


def by_subject(playbooks: list[CompiledPlaybook], slots: dict[str, Any]) -> list[list[CompiledPlaybook]]:
    """The playbooks grouped by subject type and bit word, in a fixed order (file order inside a group)."""
    groups: dict[tuple[str, int], list[CompiledPlaybook]] = {}
    for pb in playbooks:
        groups.setdefault((pb.subject, slots[pb.id].word), []).append(pb)
    return [groups[k] for k in sorted(groups, key=lambda k: (SUBJECT_TYPES.index(k[0]), k[1]))]


def find(store: Store, playbooks: list[CompiledPlaybook], slots: dict[str, Any], clock: Clock, cache: Any,
         chosen: dict[str, scopes.ScanScope], touched: Any) -> dict[str, tuple[list[str], list[str]]]:
    """One scan per subject type, bit word (62 playbooks) and scope (full or changes only):
    playbook id -> (subjects to enter, to resolve)."""
    groups: dict[tuple[str, int, bool], list[CompiledPlaybook]] = {}
    for pb in playbooks:
        groups.setdefault((pb.subject, slots[pb.id].word, chosen[pb.id].full), []).append(pb)
    out: dict[str, tuple[list[str], list[str]]] = {pb.id: ([], []) for pb in playbooks}
    with store.read() as tx:
        tx.scans.prefer_index_lookups()
        for (subject, word, full), pbs in groups.items():
            conditions = {slots[p.id].bit: [c.expr for c in p.conditions] for p in pbs}
            # changes only: the ids themselves, bound as one list, not a subquery: the database then plans for
            # a few thousand subjects
            only = None if full else sorted(_touched(tx, touched, subject, pbs, chosen))
            if only == []:
                continue
            owner = {slots[p.id].value: out[p.id] for p in pbs}     # bit -> its playbook's (enter, resolve)
            for ch in tx.scans.scan(subject, word, conditions, clock, cache, only):
                differ = ch.old ^ ch.new            # only these playbooks' bits (the scan masks the rest)
                while differ:
                    bit = differ & -differ
                    differ ^= bit
                    owner[bit][0 if ch.new & bit else 1].append(ch.subject_id)
    return out


def _touched(tx: Any, touched: Any, subject: str, pbs: list[CompiledPlaybook],
             chosen: dict[str, scopes.ScanScope]) -> set[str]:
    """The subjects changed since the oldest of these playbooks' last scans, and those whose cooldown ended since."""
    since = {e: min(chosen[p.id].since[e] for p in pbs) for e in ENTITIES
             if all(chosen[p.id].since[e] is not None for p in pbs)}
    found = touched.ids(tx, subject, since, any(scopes.reads_usage(p) for p in pbs))
    for p in pbs:
        ended = chosen[p.id].cooldown_ended
        if ended is not None:
            found |= tx.episodes.resolved_between(p.id, subject, *ended)
    return found
