"""Which subjects a tick evaluates for a playbook: all of them, or only those whose data changed.

A playbook's verdict on a subject depends only on the subject's row, its account's row, the
account's usage (through metric windows) and the clock. Its match bits (store/scan.py) record the
verdict of its last scan. Between two scans on the same day, with the same playbook, the verdict can
change only for the subjects whose rows a sync stamped since that scan (store/changes.py) — plus
the subjects a cooldown kept out, whose cooldown may have ended. So a tick evaluates just those,
and on a steady hour that is about the 1% that changed instead of every subject.

A full scan runs instead whenever that reasoning does not hold or is not worth it:

- the first scan of a playbook, or a playbook whose conditions, cooldown, max_episodes (or the time zone)
  changed;
- a new day: metric windows and date arithmetic move for everyone;
- conditions that read `now`, which moves at every tick;
- a clock that went backwards (`run --now` in the past);
- usage rows deleted by a snapshot sync (no row is left to carry a stamp);
- more changed rows than a full scan costs;
- the previous evaluation did not complete (blocked, stale data) or is a day old.

What a scan saw is kept per playbook in `playbook_state.scan` and only written when the playbook's
evaluation commits, so a rolled-back or dry evaluation leaves the next tick to look again. Pure: the
marks and what the last scan saw come from the store (engine/candidates.py reads them)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from engine.clock import Clock
from engine.datamodel import ENTITIES, ENTITY_OF
from engine.episodes import Policy
from engine.lang import metric_calls
from engine.lang.ast import Now, walk
from engine.spec.compiled import CompiledPlaybook

FULL_SCAN_EVERY = timedelta(days=1)
MIN_FULL_SCAN_CHANGES = 1000      # fewer changed rows never justify a full scan


@dataclass(frozen=True)
class ScanScope:
    """Which of one playbook's subjects this tick scans: all of them, or those changed since its last scan."""

    full: bool
    reason: str                                   # why a full scan, or "changes only"
    since: dict[str, datetime] | None = None      # the marks of the last scan (when not full)
    # closed episodes resolved in (from, to] left their cooldown since the last scan: they may re-enter now
    # (those resolved later still cool; earlier ones were free at the last scan already)
    cooldown_ended: tuple[datetime, datetime] | None = None


def fingerprint(pb: CompiledPlaybook, clock: Clock) -> str:
    """What a playbook's verdicts depend on besides data and the date: subject, conditions, time zone; and the
    limits that hold matching subjects out of an episode with no change of data — the cooldown (a changes-only
    scan looks up the cooldowns that ended since the last scan under it; a shorter one frees subjects resolved
    before) and max_episodes (a higher one frees those that used theirs)."""
    spec = pb.spec
    cooldown = spec.cooldown_duration
    text = repr((pb.subject, clock.timezone, [c.expr for c in pb.conditions],
                 str(cooldown) if cooldown.months else cooldown.seconds, spec.max_episodes))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def reads_usage(pb: CompiledPlaybook) -> bool:
    return any(metric_calls(c.expr) for c in pb.conditions)


def reads_now(pb: CompiledPlaybook) -> bool:
    return any(isinstance(node, Now) for c in pb.conditions for node in walk(c.expr))


def entities_scanned(pb: CompiledPlaybook) -> list[str]:
    """The tables whose changes can change this playbook's verdicts."""
    return sorted({"accounts", ENTITY_OF[pb.subject], *(["usage"] if reads_usage(pb) else [])})


def full_scan_threshold(entity: str, size: Callable[[str], int]) -> int:
    """Changed rows of `entity` from which a full scan costs less than looking up the changed subjects:
    a tenth of the table, or for usage two rows per account (a few days of one metric for most accounts)."""
    if entity == "usage":
        return max(MIN_FULL_SCAN_CHANGES, 2 * size("accounts"))
    return max(MIN_FULL_SCAN_CHANGES, size(entity) // 10)


def choose(pb: CompiledPlaybook, saved: dict[str, Any] | None, clock: Clock, wall: datetime,
           marks: Any) -> ScanScope:
    """Full scan or changes only, for one playbook, from what its last scan saw (`saved`) and the current
    change marks (`marks`: a store.changes.ChangeMarks)."""
    if not saved:
        return ScanScope(True, "first scan (or the last evaluation did not complete)")
    if saved.get("fingerprint") != fingerprint(pb, clock):
        return ScanScope(True, "conditions or episode limits changed")
    if reads_now(pb):
        return ScanScope(True, "conditions read `now`")
    if saved.get("today") != clock.today.isoformat():
        return ScanScope(True, "new day")
    last_now = datetime.fromisoformat(saved["now"])
    if clock.now < last_now:
        return ScanScope(True, "clock earlier than the last scan")
    if wall - datetime.fromisoformat(saved["full_at"]) >= FULL_SCAN_EVERY:
        return ScanScope(True, "daily full scan")
    raw = saved.get("marks") or {}
    since = {e: (datetime.fromisoformat(raw[e]) if raw.get(e) else None) for e in ENTITIES}
    for entity in entities_scanned(pb):
        if since[entity] is None:
            return ScanScope(True, f"no {entity} rows at the last scan")
    if reads_usage(pb) and marks.usage_removed is not None and marks.usage_removed > since["usage"]:
        return ScanScope(True, "usage rows deleted since the last scan")
    return ScanScope(False, "changes only", since,
                     Policy.of(pb.spec, clock.timezone).cooldowns_ended(last_now, clock.now))


def saved_state(pb: CompiledPlaybook, scope: ScanScope, clock: Clock, wall: datetime, marks: Any,
                saved: dict[str, Any] | None) -> dict[str, Any]:
    """What to keep in playbook_state.scan once this tick's evaluation of `pb` commits."""
    full_at = wall.isoformat() if scope.full or not saved else saved["full_at"]
    return {"fingerprint": fingerprint(pb, clock), "today": clock.today.isoformat(), "now": clock.now.isoformat(),
            "full_at": full_at, "marks": marks.as_json()}
