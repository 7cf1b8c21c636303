"""What one playbook's evaluation in a tick did, and the record of it: shared by the tick (engine/tick.py) and
the journeys' evaluation (engine/journey_run.py)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from engine.clock import Clock, wall_clock
from engine.planner import PlannedEvent
from engine.spec.compiled import CompiledPlaybook
from engine.store import Tx

log = logging.getLogger("playbook.tick")


@dataclass
class PlaybookResult:
    """What one playbook did in a tick."""

    playbook: str
    matched: int | None = None
    events: list[PlannedEvent] = field(default_factory=list)   # kept only when run_tick(keep_events=True)
    counts: Counter = field(default_factory=Counter)            # event kind -> how many
    planned: int = 0
    closures: int = 0                   # task closures among `planned`
    skipped: str | None = None
    activated: bool = False             # this run was the playbook's activation (§12)
    held: int = 0                       # enters held back by max_enters_per_run
    unrendered: list[tuple[str, str]] = field(default_factory=list)   # (dedup key, why) of actions not rendered
    error: BaseException | None = None  # why it could not be evaluated (nothing of it was written)


def blocked(tx: Tx, pb: CompiledPlaybook, clock: Clock, result: PlaybookResult, planned: int, limit: int,
            dry_run: bool, was_active: bool) -> PlaybookResult:
    """Safety rail: a run that would plan more than max_actions_per_run plans nothing and raises an alert."""
    reason = (f"blocked: would plan {planned} actions, more than max_actions_per_run ({limit}); nothing was "
              f"planned — check the playbook's filters, or raise the limit")
    log.error("ALERT playbook %s %s", pb.id, reason, extra={"playbook": pb.id, "alert": "max_actions_per_run"})
    result.events, result.counts, result.planned, result.skipped = [], Counter(), 0, reason
    result.activated = False
    record_state(tx, pb, clock, "blocked", {"reason": reason, "would_plan": planned}, dry_run, active=was_active)
    return result


def run_blocked(results: list[PlaybookResult], limit: int) -> str | None:
    """Safety rail across playbooks: why a run whose playbooks planned more actions and task closures than
    `defaults.max_total_actions_per_run` must plan nothing, or None when it may go ahead."""
    total = sum(o.planned for o in results)
    if total <= limit:
        return None
    closures = sum(o.closures for o in results)
    shares = ", ".join(f"{o.playbook} {o.planned}" for o in sorted(results, key=lambda o: -o.planned) if o.planned)
    return (f"run blocked: it would plan {total - closures} actions and {closures} task closures ({shares}), more "
            f"than defaults.max_total_actions_per_run ({limit}); nothing was planned — check the last sync and "
            f"the playbooks (`playbook run --dry-run`), then raise the limit or run fewer playbooks at a time "
            f"(`--playbook ID`)")


def record_state(tx: Tx, pb: CompiledPlaybook, clock: Clock, status: str, detail: dict[str, Any], dry_run: bool,
                 scan_state: dict[str, Any] | None = None, *, activated: bool = False, active: bool = True) -> None:
    """The playbook's latest evaluation; `scan_state` only with a completed one (else the next scan is full).
    A completed evaluation leaves it active; one that did not complete leaves its activation as it was."""
    if not dry_run:
        tx.runs.record_playbook(pb.id, evaluated_at=wall_clock(), now=clock.now, status=status, detail=detail,
                                source_hash=pb.source_hash, scan=scan_state, active=active,
                                activated_at=clock.now if activated else None)


