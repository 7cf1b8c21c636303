"""One evaluation tick: every playbook × its subjects -> episode transitions -> outbox rows (§8).

The scan (engine/candidates.py) says which subjects now match or stopped matching; the episode policy
(engine/episodes.py) decides what that means; the planner (engine/planner.py) renders the actions.
Each playbook is evaluated as one unit of a write batch (engine/store/batch.py: a savepoint inside a
transaction shared with the next playbooks for up to a second), so a crash leaves all or nothing of
it; a dry run does the same work and rolls back."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from engine import candidates, episodes, scope
from engine.clock import Clock, parse_duration, wall_clock
from engine.contact_policy import CapPreview, ContactPolicy
from engine.datamodel import ENTITY_OF
from engine.lang import metric_calls
from engine.episodes import Policy, Transition
from engine.evaluation import PlaybookResult, blocked, record_state, run_blocked
from engine.actions import ClosePayload
from engine.planner import PlannedEvent, Planner, contact_roles, dedup_key, plan_inputs, template_rows
from engine.plugins import CLOSE, registry
from engine.settings import Settings
from engine.spec.compiled import CompiledPlaybook, PlaybookSet
from engine.store import Store, Tx

log = logging.getLogger("playbook.tick")
CHUNK = 5000        # subjects decided, planned and written at a time: memory stays flat however many change


@dataclass
class TickResult:
    """Everything a tick did (or, dry, would do)."""

    clock: Clock
    playbooks: list[PlaybookResult]
    dry_run: bool
    run_id: int | None = None
    scopes: dict[str, str] = field(default_factory=dict)    # playbook id -> how its subjects were scanned
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step (Stopwatch)
    blocked: str | None = None                                # why the run planned nothing (max_total_actions_per_run)

    @property
    def events(self) -> list[PlannedEvent]:
        """What fired (and, in a dry run, what an activation would baseline: a real run baselines silently)."""
        return [e for o in self.playbooks for e in o.events if self.dry_run or e.event != "baseline"]

    def as_json(self) -> dict[str, Any]:
        """The stable machine form of §11."""
        doc: dict[str, Any] = {"now": self.clock.local().isoformat(), "events": [e.as_json() for e in self.events]}
        if self.blocked:
            doc["blocked"] = self.blocked
        return doc


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


def run_tick(store: Store, settings: Settings, playbooks: PlaybookSet, clock: Clock, *, dry_run: bool = False,
             only: set[str] | None = None, kind: str = "run", keep_events: bool = True,
             on_playbook: Callable[[str], None] | None = None, keep_payloads: bool = False) -> TickResult:
    """Evaluate the enabled (or selected) playbooks at `clock` and plan their actions.

    With keep_events=False (the service, the benchmark) only counts are kept, so memory does not
    grow with the number of transitions; keep_payloads also keeps each event's action payloads (tests)."""
    selected = [p for p in playbooks.valid if (p.id in only if only else p.spec.enabled)]
    watch = Stopwatch()
    run_id = None
    if not dry_run:
        with store.write() as tx:
            run_id = tx.runs.start(kind, clock.now, wall_clock())
    with watch("marks"):
        marks, states = candidates.read_marks(store)   # before the metric windows: they must reflect at least these
    # a playbook never evaluated, or disabled since its last evaluation, is activated by this run (§12); its
    # scan covers every subject
    activating = {pb.id for pb in selected if not (states.get(pb.id) or {}).get("active")}
    saved = {pid: st["scan"] for pid, st in states.items() if st["scan"] and pid not in activating}
    touched = store.touched()      # what changed since the marks, read once for all subject types
    with watch("metric windows"):
        cache = candidates.metric_windows(store, selected, clock, wall_clock(), touched)
    with watch("scopes"):
        slots = candidates.assign_slots(store, selected)
        wall = wall_clock()
        chosen = candidates.scopes_of(store, selected, saved, clock, wall, marks)
    scan_states = {pb.id: scope.saved_state(pb, chosen[pb.id], clock, wall, marks, saved.get(pb.id))
                   for pb in selected}
    synced = _last_synced(store, settings)
    records = template_cache(store, clock)      # subject rows, read once for all playbooks
    # what the caps would do to each message, shown by `run` (not by `playbook test`, whose in-memory database is
    # one connection, busy with the batch: its dispatch applies the caps instead)
    caps = cap_preview(store, settings, clock) if keep_events and not keep_payloads else None
    done: dict[str, PlaybookResult] = {}
    rail = settings.defaults.max_total_actions_per_run
    blocked_by: str | None = None
    # under the run-wide rail the run commits once, at its end, so that a run over the limit leaves nothing behind
    with store.batch(dry_run=dry_run, on_commit=lambda s: watch.add("commit", s), one_commit=rail is not None) as batch:
        # one subject type (and bit word) at a time: its scan, then its playbooks; only its candidates are in
        # memory, and the order (hence the order locks are taken in) is the same in every tick
        for pbs in candidates.by_subject(selected, slots):
            with watch("scan"):
                found = _find(store, pbs, slots, clock, cache, chosen, touched)
            for pb in pbs:
                if on_playbook:
                    on_playbook(pb.id)
                mine = found.pop(pb.id)
                if isinstance(mine, BaseException):
                    done[pb.id] = _failed(pb, mine)
                    continue
                active = pb.id not in activating
                if pb.journey is not None:
                    with watch("journeys"):
                        try:
                            done[pb.id] = _journey(batch, settings, pb, clock, store, touched, chosen[pb.id], run_id,
                                                   slots[pb.id], mine, cache, records, not active,
                                                   bool((states.get(pb.id) or {}).get("active")), scan_states[pb.id],
                                                   keep_events, caps, _stale(settings, pb, synced),
                                                   (states.get(pb.id) or {}).get("source_hash") != pb.source_hash,
                                                   keep_payloads)
                        except Exception as exc:  # noqa: BLE001 - as for any playbook, below
                            done[pb.id] = _failed(pb, exc)
                    continue
                if not any(mine) and not _repeat_due(store, pb, clock) and not _stale(settings, pb, synced):
                    done[pb.id] = PlaybookResult(pb.id, activated=not active)   # only its scan state is recorded
                    with watch("record"), batch.unit() as unit:
                        record_state(unit, pb, clock, "ok", {"events": 0, "planned": 0}, dry_run,
                                      scan_states[pb.id], activated=not active)
                    continue
                try:
                    done[pb.id] = evaluate_playbook(
                        batch, settings, pb, clock, run_id=run_id, slot=slots[pb.id], candidates=mine, synced=synced,
                        scan_state=scan_states[pb.id], watch=watch, keep_events=keep_events, records=records,
                        activating=not active, caps=caps, keep_payloads=keep_payloads,
                        was_active=bool((states.get(pb.id) or {}).get("active")))
                except Exception as exc:  # noqa: BLE001 - its unit rolled back; the other playbooks go on
                    done[pb.id] = _failed(pb, exc)
            if rail is not None and not batch.dry_run and run_blocked(list(done.values()), rail):
                batch.dry_run = True            # from here on, and at the end, everything is rolled back
        results = [done[pb.id] for pb in selected]
        if rail is not None:
            blocked_by = run_blocked(results, rail)   # every playbook still counted: the reason has the whole total
    if blocked_by:
        log.error("ALERT %s", blocked_by, extra={"alert": "max_total_actions_per_run"})
        for o in results:
            o.events, o.counts, o.planned, o.closures, o.activated = [], Counter(), 0, 0, False
    with watch("record"):
        if run_id is not None:
            with store.write() as tx:
                detail = {o.playbook: {"matched": o.matched, "events": sum(o.counts.values()), "planned": o.planned,
                                       "skipped": o.skipped, **({"activated": True} if o.activated else {}),
                                       **({"failed": type(o.error).__name__} if o.error else {}),
                                       **({"held": o.held} if o.held else {})} for o in results}
                tx.runs.finish(run_id, "blocked" if blocked_by else "ok", wall_clock(),
                               {**detail, "blocked": blocked_by} if blocked_by else detail)
    if not dry_run:
        with watch("statistics"), store.write() as tx:
            transitions = sum(sum(o.counts.values()) for o in results)
            tx.runs.analyze_grown(transitions, sum(o.planned for o in results))
    return TickResult(clock, results, dry_run, run_id, {pid: s.reason for pid, s in chosen.items()}, dict(watch),
                      blocked=blocked_by)


def _journey(batch: Any, settings: Settings, pb: CompiledPlaybook, clock: Clock, store: Store, touched: Any,
             chosen: Any, run_id: int | None, slot: Any, mine: tuple[list[str], list[str]], cache: Any, records: Any,
             activating: bool, was_active: bool, scan_state: dict[str, Any], keep_events: bool,
             caps: CapPreview | None, stale: str | None, edited: bool, keep_payloads: bool = False) -> PlaybookResult:
    """A journey playbook's evaluation (engine/journey_run.py), with the subjects whose data changed since its
    last scan (a changes-only scope) or a full look."""
    from engine import journey_run

    assert pb.journey is not None
    full = chosen.full or journey_run.reads_now(pb.journey)
    changed: set[str] | None = None
    usage = scope.reads_usage(pb) or journey_run.reads_usage(pb.journey)
    since = chosen.since or {}
    if any(since.get(e) is None for e in ("accounts", ENTITY_OF[pb.subject], *(("usage",) if usage else ()))):
        full = True
    if not full:
        with store.read() as tx:
            changed = touched.ids(tx, pb.subject, since, usage)
    return journey_run.evaluate_journey(
        batch, settings, pb, clock, run_id=run_id, slot=slot, candidates=mine, full=full, changed=changed,
        cache=cache, records=records, activating=activating, was_active=was_active, scan_state=scan_state,
        keep_events=keep_events, caps=caps, stale=stale, edited=edited, keep_payloads=keep_payloads)


def _find(store: Store, pbs: list[CompiledPlaybook], slots: dict[str, Any], clock: Clock, cache: Any,
          chosen: dict[str, Any], touched: Any) -> dict[str, Any]:
    """The candidates of these playbooks, scanned together; when that scan fails, one playbook at a time, so that
    the one whose conditions fail (its error in place of its candidates) does not hold back the others."""
    try:
        return candidates.find(store, pbs, slots, clock, cache, chosen, touched)
    except Exception as exc:  # noqa: BLE001 - found out below, playbook by playbook
        if len(pbs) == 1:
            return {pbs[0].id: exc}
    out: dict[str, Any] = {}
    for pb in pbs:
        try:
            out.update(candidates.find(store, [pb], slots, clock, cache, chosen, touched))
        except Exception as exc:  # noqa: BLE001
            out[pb.id] = exc
    return out


def _failed(pb: CompiledPlaybook, exc: BaseException) -> PlaybookResult:
    """The result of a playbook whose evaluation failed: nothing of it written, its scan state left as it was (the
    next run scans its subjects again). The caller reports it."""
    return PlaybookResult(pb.id, error=exc)


def record_presence(store: Store, playbooks: PlaybookSet) -> list[str]:
    """Mark inactive the playbooks evaluated before that are now disabled or whose file is gone, so that their
    next evaluation is an activation (§12); returns their ids. An invalid playbook keeps its state: it is
    being edited, not switched off."""
    present = {p.id for p in playbooks.valid if p.spec.enabled} | {i.id for i in playbooks.invalid if i.id}
    with store.write() as tx:
        gone = sorted(pid for pid, st in tx.runs.playbook_states().items() if st["active"] and pid not in present)
        tx.runs.set_active(gone, False)
    for pid in gone:
        log.info("playbook %s is switched off: its next evaluation is an activation", pid, extra={"playbook": pid})
    return gone


def evaluate_playbook(batch: Any, settings: Settings, pb: CompiledPlaybook, clock: Clock, *,
                      run_id: int | None, slot: Any, candidates: tuple[list[str], list[str]],
                      synced: dict[str, datetime], scan_state: dict[str, Any] | None = None,
                      watch: Stopwatch | None = None, keep_events: bool = True,
                      records: Any = None, activating: bool = False, was_active: bool = True,
                      caps: CapPreview | None = None, keep_payloads: bool = False) -> PlaybookResult:
    """One playbook as one unit of the tick's write batch (all or nothing): transitions, episode writes,
    events and outbox rows.

    Candidates go through in chunks of CHUNK subjects (decide, plan, write), so memory stays flat
    however many subjects change; the unit still spans them all. At its activation, a playbook with
    `activation: baseline` baselines the subjects that already match instead of firing for them (§12)."""
    dry_run = batch.dry_run
    watch = watch if watch is not None else Stopwatch()
    result = PlaybookResult(pb.id, activated=activating)
    limit = pb.spec.max_actions_per_run or settings.defaults.max_actions_per_run
    policy = Policy.of(pb.spec, clock.timezone)
    baseline = activating and pb.spec.activation == "baseline"
    enters_left = pb.spec.max_enters_per_run
    with batch.unit() as unit:
        unit.runs.lock_playbook(pb.id)
        stale = _stale(settings, pb, synced)
        if stale:
            result.skipped = stale
            log.warning("playbook %s not evaluated: %s", pb.id, stale, extra={"playbook": pb.id})
            record_state(unit, pb, clock, "stale", {"reason": stale}, dry_run, active=was_active)
            return result
        planned_actions = 0
        for transitions, mend in _transitions(unit, pb, policy, clock, candidates, watch, baseline):
            if enters_left is not None:
                transitions, held = episodes.held_back(transitions, enters_left)
                enters_left -= sum(1 for t in transitions if t.event == "enter")
                result.held += held
            with watch("plan actions"):
                rows = _plan(unit, settings, pb, clock, transitions, result, keep_events, records, caps,
                             keep_payloads)
            planned_actions += sum(1 for r in rows if not r["kind"].endswith(CLOSE))
            if limit is not None and planned_actions > limit:
                unit.discard()
                return blocked(unit, pb, clock, result,
                                _count_all(unit, pb, policy, clock, candidates, watch, baseline), limit, dry_run,
                                was_active)
            with watch("write"):
                unit.episodes.apply(pb.id, pb.subject, transitions, clock.now, run_id, slot, mend)
                result.planned += unit.outbox.enqueue(rows) if not dry_run else len(rows)
                result.closures += sum(1 for r in rows if r["kind"].endswith(CLOSE))
        result.events.sort(key=lambda e: (e.subject, e.event))
        if result.unrendered:
            log.warning("playbook %s: %d actions could not be rendered or were refused, and are recorded failed "
                        "(first: %s); fix the template or the data, then `playbook outbox retry --rerender`", pb.id, len(result.unrendered),
                        result.unrendered[0][1], extra={"playbook": pb.id})
        if result.held:
            # the subjects held back changed no data: only a full scan finds them again at the next run
            scan_state = None
            log.warning("playbook %s: %d subjects held back by max_enters_per_run (%d); they enter at the next "
                        "runs", pb.id, result.held, pb.spec.max_enters_per_run, extra={"playbook": pb.id})
        with watch("write"):
            record_state(unit, pb, clock, "ok", {"events": sum(result.counts.values()), "planned": result.planned,
                                                  **({"held": result.held} if result.held else {})},
                          dry_run, scan_state, activated=activating)
    return result


def cap_preview(store: Store, settings: Settings, clock: Clock) -> CapPreview | None:
    """What the frequency caps would do to the customer-facing messages a run shows (None without caps)."""
    policy = ContactPolicy(settings.contact_policy, settings.timezone)
    if not policy.caps:
        return None
    since = min(cap.window.before(clock.now, settings.timezone) for cap in policy.caps)

    def history(per: str, who: str) -> list[datetime]:
        with store.read() as tx:
            return tx.contact_sends.history(per, who, since)
    return CapPreview(policy, history)


def template_cache(store: Store, clock: Clock) -> Any:
    """A cache of subject rows as the action templates see them, in the clock's time zone."""
    from zoneinfo import ZoneInfo

    return store.row_cache(shape=template_rows(ZoneInfo(clock.timezone)))


def _transitions(tx: Tx, pb: CompiledPlaybook, policy: Policy, clock: Clock,
                 candidates: tuple[list[str], list[str]], watch: Stopwatch, baseline: bool = False
                 ) -> Iterator[tuple[list[Transition], tuple[list[str], list[str]]]]:
    """(transitions, bits to mend) chunk by chunk: enters (or baselines) and resolves in subject order, then
    repeats."""
    enter, resolve = set(candidates[0]), set(candidates[1])
    ids = sorted(enter | resolve)
    for i in range(0, len(ids), CHUNK):
        part = ids[i:i + CHUNK]
        with watch("decide"):
            stored = tx.episodes.stored(pb.id, pb.subject, part)
            d = episodes.decide([x for x in part if x in enter], [x for x in part if x in resolve], stored,
                                clock.now, policy, baseline=baseline)
        yield d.transitions, (d.mend_set, d.mend_clear)
    cutoff = policy.repeat_cutoff(clock.now)
    if cutoff is not None:
        with watch("decide"):
            due = episodes.repeats(tx.episodes.fired_before(pb.id, pb.subject, cutoff), resolve)
        for i in range(0, len(due), CHUNK):
            yield due[i:i + CHUNK], ([], [])


def _count_all(tx: Tx, pb: CompiledPlaybook, policy: Policy, clock: Clock, candidates: tuple[list[str], list[str]],
               watch: Stopwatch, baseline: bool) -> int:
    """How many actions the whole evaluation would plan (for the blocked alert), counted without writing."""
    total = 0
    for transitions, _ in _transitions(tx, pb, policy, clock, candidates, watch, baseline):
        total += sum(len(pb.on_resolve) if t.event == "resolve" else len(pb.actions)
                     for t in transitions if not t.baselined)
    return total


def entities_read(pb: CompiledPlaybook) -> set[str]:
    """The synced entities a playbook's evaluation and actions depend on."""
    needed = {"accounts"}
    if pb.subject == "contact" or contact_roles((*pb.actions, *pb.on_resolve, *pb.steps)):
        needed.add("contacts")
    if pb.subject == "goal":
        needed.add("goals")
    if scope.reads_usage(pb) or (pb.journey is not None and any(metric_calls(e.expr)
                                                                for e in pb.journey.expressions)):
        needed.add("usage")
    return needed


def _repeat_due(store: Store, pb: CompiledPlaybook, clock: Clock) -> bool:
    """Whether an open episode of this playbook is due to fire again."""
    cutoff = Policy.of(pb.spec, clock.timezone).repeat_cutoff(clock.now)
    if cutoff is None:
        return False
    with store.read() as tx:
        return tx.episodes.any_fired_before(pb.id, pb.subject, cutoff)


def _last_synced(store: Store, settings: Settings) -> dict[str, datetime]:
    """entity -> last sync time, read once per tick (only when the stale-data guard is on)."""
    if settings.defaults.max_data_age is None:
        return {}
    with store.read() as tx:
        return tx.runs.last_synced()


def _stale(settings: Settings, pb: CompiledPlaybook, synced: dict[str, datetime]) -> str | None:
    """Why the data this playbook reads is too old to act on, or None when it is fresh enough."""
    age = settings.defaults.max_data_age
    if age is None:
        return None
    limit = parse_duration(age).before(wall_clock(), settings.timezone)
    old = sorted(e for e in entities_read(pb) if e not in synced or synced[e] < limit)
    if not old:
        return None
    return (f"stale data: {', '.join(old)} last synced more than {age} ago (defaults.max_data_age); "
            f"run `playbook sync`")


def _plan(tx: Tx, settings: Settings, pb: CompiledPlaybook, clock: Clock, transitions: list[Transition],
          result: PlaybookResult, keep_events: bool, cache: Any, caps: CapPreview | None = None,
          keep_payloads: bool = False) -> list[dict[str, Any]]:
    """The outbox rows of a chunk of transitions (and the events `run` shows). Baselined transitions plan
    nothing; a baseline is shown by dry runs, the repeats and resolve of a baselined episode not at all."""
    for t in transitions:
        if t.baselined and t.event == "baseline":
            result.counts["baseline"] += 1
            if keep_events:
                result.events.append(PlannedEvent(pb.id, f"{pb.subject}:{t.subject_id}", "baseline", t.episode))
    transitions = [t for t in transitions if not t.baselined]
    if not transitions:
        return []
    recs, contacts = plan_inputs(tx, pb, [t.subject_id for t in transitions], cache, today=clock.today)
    planner = Planner(settings, pb, clock, describe=keep_events, caps=caps, written_at=wall_clock(),
                      keep_payloads=keep_payloads)
    closes = _close_tasks(tx, pb, [t for t in transitions if t.event == "resolve"], planner, clock)
    rows: list[dict[str, Any]] = []
    for t in transitions:
        event, planned = planner.plan(t, recs.get(t.subject_id, {}), contacts)
        rows += planned
        rows += closes.get((t.subject_id, t.episode), [])
        result.counts[t.event] += 1
        if keep_events:
            result.events.append(event)
    result.unrendered += planner.failures
    return rows


def _close_tasks(tx: Tx, pb: CompiledPlaybook, resolves: list[Transition], planner: Planner,
                 clock: Clock) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """On resolve: cancel the closable actions (tasks) not yet delivered, and plan closing those already created
    ((subject id, episode) -> its `<kind>_close` rows)."""
    kinds = registry().kinds
    closable = sorted({a.index for a in pb.actions if kinds[a.kind].closable(a.spec)})
    if not closable or not resolves:
        return {}
    keys = [dedup_key(pb.id, pb.subject, t.subject_id, t.episode, firing, index)
            for t in resolves for firing in range(1, t.firing + 1) for index in closable]
    tx.outbox.cancel_pending(keys, clock.now, "episode resolved before delivery")
    episodes_ = [(t.subject_id, t.episode) for t in resolves]
    by_episode = {(t.subject_id, t.episode): t for t in resolves}
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for task in tx.tasks.open_for_episodes(pb.id, pb.subject, episodes_):
        t = by_episode[(task["subject_id"], task["episode"])]
        key = dedup_key(pb.id, pb.subject, t.subject_id, t.episode, "close", task["id"])
        index = int(task["dedup_key"].rsplit("/", 1)[1])          # the action that created it
        creator = pb.actions[index] if index in closable else pb.actions[closable[0]]
        row = planner.base_row(key, t, "close", creator)
        row.update(kind=creator.kind + CLOSE, connector=task["connector"], action_index=-1,
                   payload=ClosePayload(task["dedup_key"], task["external_id"], task["title"]).to_json())
        out.setdefault((t.subject_id, t.episode), []).append(row)
    return out
