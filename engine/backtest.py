"""`playbook backtest`: what the playbooks would have done over a past period (§18), read from the data as it
was synced at each moment, writing nothing and delivering nothing.

Each playbook is evaluated at its scheduled times in the period, as `playbook start` would have run it. At each
such moment the playbooks due are evaluated together, like one tick: the subjects matching each of them on the
data synced by then (one statement per subject type, engine/store/replay.py), the episode policy
(engine/episodes.py: enter, repeat, resolve, cooldown, max_episodes, activation at the first evaluation,
max_enters_per_run), max_actions_per_run, and the planner (engine/planner.py: rendered actions, recipients,
the contact policy's send times) — the same functions a tick calls. A journey playbook (§14) moves its subjects
through their steps as a tick does (engine/backtest_journeys.py). Episodes and journeys live in memory, one small
record per (playbook, subject) that ever matched; events go to the caller as they happen and are otherwise only
counted."""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from heapq import merge
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from engine import backtest_journeys, episodes, scope
from engine.backtest_journeys import Evaluated, JourneyPlaybook
from engine.clock import Clock, make_clock
from engine.contact_policy import CapPreview, ContactPolicy
from engine.datamodel import SUBJECT_TYPES
from engine.episodes import Episode, Policy, Transition
from engine.lang import metric_calls
from engine.planner import PlannedEvent, Planner, plan_inputs, template_rows
from engine.plugins import CLOSE
from engine.settings import Settings
from engine.spec.compiled import CompiledPlaybook, PlaybookSet
from engine.store import Store
from engine.store.dialect import page_cache

BITS = 62        # playbooks evaluated by one matching statement (one bit each in a 64-bit integer)
PAGE_CACHE_KIB = 8 * 1024


@dataclass(frozen=True)
class BacktestEvent:
    """One event a run at `at` would have produced, with the actions it would have planned."""

    at: datetime                 # the scheduled run (naive UTC)
    event: PlannedEvent
    csm: str | None              # the subject's account's CSM then
    cancelled: list[dict[str, Any]] = field(default_factory=list)   # a journey's exit: its step actions not sent

    def as_json(self, tz: str) -> dict[str, Any]:
        at = self.at.replace(tzinfo=timezone.utc).astimezone(ZoneInfo(tz))
        return {"at": at.isoformat(), **self.event.as_json(), **({"cancelled": self.cancelled} if self.cancelled
                                                                  else {})}


@dataclass
class Summary:
    """What a backtest counts: events and actions per playbook, per week (of the config zone; weeks start on
    Monday) and per CSM, and the runs it replayed."""

    runs: int = 0
    evaluations: int = 0
    playbooks: dict[str, Counter] = field(default_factory=dict)      # playbook -> event/action kind -> count
    weeks: dict[tuple[date, str], Counter] = field(default_factory=dict)
    csms: dict[str, Counter] = field(default_factory=dict)
    recipients: Counter = field(default_factory=Counter)             # (action kind, recipient) -> actions
    blocked: list[tuple[datetime, str, str]] = field(default_factory=list)   # (run, playbook, why)
    held: Counter = field(default_factory=Counter)                   # playbook -> enters held back
    skipped: dict[str, str] = field(default_factory=dict)            # playbook -> why it was not replayed (none
                                                                     # today: every valid playbook is replayed)

    def count(self, e: BacktestEvent, tz: str) -> None:
        local = e.at.replace(tzinfo=timezone.utc).astimezone(ZoneInfo(tz)).date()
        week = local - timedelta(days=local.weekday())
        keys = [e.event.event] + [f"action:{a['kind']}" for a in e.event.actions]
        keys += [f"cancelled:{a['kind']}" for a in e.cancelled]
        for bucket in (self.playbooks.setdefault(e.event.playbook, Counter()),
                       self.weeks.setdefault((week, e.event.playbook), Counter()),
                       self.csms.setdefault(e.csm or "(none)", Counter())):
            bucket.update(keys)
        for a in e.event.actions:
            for to in a.get("to") or [a.get("channel") or "(none)"]:
                self.recipients[(a["kind"], str(to))] += 1


def scheduled_times(cron: str, start: datetime, end: datetime, tz: str) -> list[datetime]:
    """The times (naive UTC) cron `cron` (read in zone `tz`) fires in [start, end)."""
    from engine.clock import cron_trigger

    trigger = cron_trigger(cron, ZoneInfo(tz))
    out: list[datetime] = []
    probe = start.replace(tzinfo=timezone.utc) - timedelta(microseconds=1)
    while (nxt := trigger.get_next_fire_time(None, probe + timedelta(microseconds=1))) is not None:
        moment = nxt.astimezone(timezone.utc).replace(tzinfo=None)
        if moment >= end:
            break
        out.append(moment)
        probe = nxt
    return out


class _PlaybookState:
    """One playbook's episodes in memory and whether its activation happened."""

    def __init__(self, pb: CompiledPlaybook, tz: str):
        self.pb = pb
        self.policy = Policy.of(pb.spec, tz)
        self.episodes: dict[str, Episode] = {}
        self.open: set[str] = set()
        self.active = False


def run_backtest(store: Store, settings: Settings, playbooks: PlaybookSet, start: datetime, end: datetime, *,
                 only: set[str] | None = None, on_event: Callable[[BacktestEvent], None] | None = None,
                 on_run: Callable[[datetime, int], None] | None = None, watch: Any = None) -> Summary:
    """Replay the enabled (or selected) playbooks at their scheduled times in [start, end) (naive UTC); each
    event goes to `on_event` as it happens; returns the counts. `watch` (an engine.tick.Stopwatch) adds up
    the seconds spent matching and deciding and planning."""
    # one connection for the whole backtest (the metric windows' table lives in it), with a small page cache: the
    # windows and the episodes are held in memory
    with store.read() as held, page_cache(held.conn, PAGE_CACHE_KIB):
        return _run(held, settings, playbooks, start, end, only=only, on_event=on_event, on_run=on_run,
                    watch=watch)


def _run(held: Any, settings: Settings, playbooks: PlaybookSet, start: datetime, end: datetime, *,
         only: set[str] | None, on_event: Callable[[BacktestEvent], None] | None,
         on_run: Callable[[datetime, int], None] | None, watch: Any) -> Summary:
    """run_backtest, reading on `held` (the connection whose temporary table holds the metric windows)."""
    timed = watch if watch is not None else _untimed
    tz = settings.timezone
    selected = [p for p in playbooks.valid if (p.id in only if only else p.spec.enabled)]
    summary = Summary()
    default = settings.defaults.schedule
    due: dict[datetime, list[CompiledPlaybook]] = {}
    for pb in selected:
        for moment in scheduled_times(pb.schedule(default), start, end, tz):
            due.setdefault(moment, []).append(pb)
    states = {pb.id: JourneyPlaybook(pb, tz) if pb.journey is not None else _PlaybookState(pb, tz)
              for pb in selected}
    caps = _Caps(settings)
    order = {pb.id: i for i, pb in enumerate(selected)}
    rail = settings.defaults.max_total_actions_per_run
    moments = sorted(due)
    windows = _windows(held, selected, moments, tz)
    reuse = _Reuse(held.replay.changes(moments[0], moments[-1]) if moments else [], selected)
    for moment in moments:
        clock = make_clock(tz, moment.replace(tzinfo=timezone.utc))
        pbs = sorted(due[moment], key=lambda p: (SUBJECT_TYPES.index(p.subject), order[p.id]))
        summary.runs += 1
        if on_run:
            on_run(moment, len(pbs))
        stale = reuse.stale(pbs, clock)
        if windows is not None and any(scope.reads_usage(pb) for pb in stale):
            with timed("metric windows"):
                windows.step(clock.now, clock.today)
        with timed("matching"):
            reuse.keep(stale, _matching(held, stale, clock, windows), clock)
        preview = caps.preview()
        # a run lists its playbooks in file order; without the run-wide rail nothing can stop a run, so each
        # playbook is listed (applied, counted, handed on) as soon as those before it in file order are, and the
        # events of a run are not all held at once
        waiting = deque(sorted(order[pb.id] for pb in pbs))
        evaluated: dict[int, _Evaluation | Evaluated | None] = {}
        for pb in pbs:
            summary.evaluations += 1
            with timed("episodes and actions"):
                state = states[pb.id]
                if isinstance(state, JourneyPlaybook):
                    found = _evaluate_journey(held, settings, state, clock, reuse.matching(pb), preview,
                                              summary, reuse.key(clock, state.reads_now))
                else:
                    found = _evaluate(held, settings, state, clock, reuse.matching(pb), preview, summary)
            evaluated[order[pb.id]] = found
            while rail is None and waiting and waiting[0] in evaluated:
                _list(evaluated.pop(waiting.popleft()), clock.now, summary, tz, on_event)
        total = sum(d.planned for d in evaluated.values() if d is not None)
        if rail is not None and total > rail:
            summary.blocked.append((clock.now, "(every playbook)", f"the run would plan {total} actions, more than "
                                    f"defaults.max_total_actions_per_run ({rail}): nothing planned"))
            continue
        while waiting:
            _list(evaluated.pop(waiting.popleft()), clock.now, summary, tz, on_event)
    return summary


def _list(found: _Evaluation | Evaluated | None, now: datetime, summary: Summary, tz: str,
          on_event: Callable[[BacktestEvent], None] | None) -> None:
    """A playbook's evaluation at a run taken: its episodes moved on, its events counted and handed on."""
    if found is None:
        return
    found.apply(now)
    for e in found.events:
        summary.count(e, tz)
        if on_event:
            on_event(e)


@contextmanager
def _untimed(name: str) -> Iterator[None]:
    yield


class _Reuse:
    """What a run takes from earlier ones. Between two moments at which the synced data changed
    (Replay.changes), every moment reads the same rows, so a playbook's matching subjects (and a journey's
    condition values) depend only on the day, and on the moment itself for conditions that read now(): a run
    with the same key as the one that computed them reuses them. So playbooks scheduled more often than the
    data changes (hourly, or a journey's every 15 minutes) are evaluated once per day and sync."""

    def __init__(self, changes: list[datetime], pbs: list[CompiledPlaybook]):
        self.changes = changes
        self.now_readers = {pb.id for pb in pbs if scope.reads_now(pb)}
        self.found: dict[str, tuple[Any, frozenset[str]]] = {}     # playbook id -> (key, matching subjects)

    def key(self, clock: Clock, reads_now: bool) -> tuple[int, date, datetime | None]:
        return bisect_right(self.changes, clock.now), clock.today, clock.now if reads_now else None

    def stale(self, pbs: list[CompiledPlaybook], clock: Clock) -> list[CompiledPlaybook]:
        """Those of `pbs` whose matching subjects must be computed at `clock`."""
        return [pb for pb in pbs if self.found.get(pb.id, (None,))[0] != self._key(pb, clock)]

    def keep(self, pbs: list[CompiledPlaybook], matching: dict[str, set[str]], clock: Clock) -> None:
        """Remember the matching subjects of `pbs` computed at `clock`."""
        for pb in pbs:
            self.found[pb.id] = (self._key(pb, clock), frozenset(matching[pb.id]))

    def matching(self, pb: CompiledPlaybook) -> frozenset[str]:
        return self.found[pb.id][1]

    def _key(self, pb: CompiledPlaybook, clock: Clock) -> tuple[int, date, datetime | None]:
        return self.key(clock, pb.id in self.now_readers)


def _windows(tx: Any, selected: list[CompiledPlaybook], moments: list[datetime], tz: str) -> Any:
    """The metric windows every replayed playbook reads, for every run (engine/store/replay_windows.py); None when
    none reads any."""
    refs = {r for pb in selected for c in pb.conditions for r in metric_calls(c.expr)}
    if not refs or not moments:
        return None
    first, last = (make_clock(tz, m.replace(tzinfo=timezone.utc)) for m in (moments[0], moments[-1]))
    return tx.replay.windows(refs, first, last)


def _matching(tx: Any, pbs: list[CompiledPlaybook], clock: Clock, windows: Any) -> dict[str, set[str]]:
    """playbook id -> the subjects matching it at `clock` (`windows`: the metric windows stepped to `clock`): one
    statement per subject type and 62 playbooks."""
    out: dict[str, set[str]] = {pb.id: set() for pb in pbs}
    for subject in SUBJECT_TYPES:
        mine = [pb for pb in pbs if pb.subject == subject]
        for i in range(0, len(mine), BITS):
            group = mine[i:i + BITS]
            conditions = {b: [c.expr for c in pb.conditions] for b, pb in enumerate(group)}
            for sid, bits in tx.replay.matching(subject, conditions, clock, windows):
                while bits:
                    bit = bits & -bits
                    bits ^= bit
                    out[group[bit.bit_length() - 1].id].add(sid)
    return out


@dataclass
class _Evaluation:
    """One playbook's evaluation at one run, not yet applied to its episodes (a run-wide rail may discard it)."""

    state: _PlaybookState
    transitions: list[Transition]
    loud: list[BacktestEvent]           # the events with actions (and silent resolves), in (subject, event) order
    planned: int
    at: datetime

    @property
    def events(self) -> Iterator[BacktestEvent]:
        """Every event in (subject, event) order; those of baselines (an activation's: one per matching subject,
        no actions) made as they are read, not all held at once."""
        pb = self.state.pb
        baselines = (BacktestEvent(self.at, PlannedEvent(pb.id, f"{pb.subject}:{t.subject_id}", "baseline", t.episode),
                                   None) for t in self.transitions if t.baselined and t.event == "baseline")
        return merge(baselines, self.loud, key=lambda x: (x.event.subject, x.event.event))

    def apply(self, now: datetime) -> None:
        state = self.state
        for t in self.transitions:
            e = episodes.advance(state.episodes.get(t.subject_id), t, now)
            state.episodes[t.subject_id] = e
            (state.open.add if e.is_open else state.open.discard)(t.subject_id)
        state.active = True


def _evaluate(tx: Any, settings: Settings, state: _PlaybookState, clock: Clock, matching: frozenset[str],
              caps: CapPreview | None, summary: Summary) -> _Evaluation | None:
    """One playbook at one run, as the tick evaluates it (engine/tick.py `evaluate_playbook`): transitions in
    subject order (enters held back past max_enters_per_run), then repeats; None (nothing at all) when it would
    plan more than max_actions_per_run."""
    pb, policy = state.pb, state.policy
    baseline = not state.active and pb.spec.activation == "baseline"
    enter = sorted(matching - state.open)
    resolve = sorted(state.open - matching)
    decided = episodes.decide(enter, resolve, state.episodes, clock.now, policy, baseline=baseline).transitions
    if pb.spec.max_enters_per_run is not None:
        decided, held = episodes.held_back(decided, pb.spec.max_enters_per_run)
        summary.held[pb.id] += held
    cutoff = policy.repeat_cutoff(clock.now)
    repeats: list[Transition] = []
    if cutoff is not None:
        after = {t.subject_id: episodes.advance(state.episodes.get(t.subject_id), t, clock.now) for t in decided}
        resolving = {t.subject_id for t in decided if t.event == "resolve"}
        due = sorted((e for sid in state.open | {s for s, e in after.items() if e.is_open}
                      if (e := after.get(sid) or state.episodes[sid]).is_open
                      and e.last_fired_at is not None and e.last_fired_at <= cutoff), key=lambda e: e.subject_id)
        repeats = episodes.repeats(due, resolving)
    transitions = decided + repeats
    events, planned = _plan(tx, settings, pb, clock, transitions, caps)
    if _over_limit(settings, pb, clock, planned, summary):
        return None
    events.sort(key=lambda x: (x.event.subject, x.event.event))
    return _Evaluation(state, transitions, events, planned, clock.now)


def _evaluate_journey(tx: Any, settings: Settings, state: JourneyPlaybook, clock: Clock, matching: frozenset[str],
                      caps: CapPreview | None, summary: Summary, key: Any) -> Evaluated | None:
    """One journey playbook at one run (engine/backtest_journeys.py); None when it would plan more than
    max_actions_per_run. `key`: see _Reuse."""
    pb = state.pb
    found = backtest_journeys.evaluate(tx, settings, state, clock, matching, caps,
                                       lambda e, csm, cancelled: BacktestEvent(clock.now, e, csm, cancelled), key)
    summary.held[pb.id] += found.held
    return None if _over_limit(settings, pb, clock, found.planned, summary) else found


def _over_limit(settings: Settings, pb: CompiledPlaybook, clock: Clock, planned: int, summary: Summary) -> bool:
    """Whether `planned` actions exceed the playbook's max_actions_per_run (then listed as blocked: it plans
    nothing at this run)."""
    limit = pb.spec.max_actions_per_run or settings.defaults.max_actions_per_run
    if limit is None or planned <= limit:
        return False
    summary.blocked.append((clock.now, pb.id, f"would plan {planned} actions, more than max_actions_per_run "
                                              f"({limit}): nothing planned"))
    return True


def _plan(tx: Any, settings: Settings, pb: CompiledPlaybook, clock: Clock, transitions: list[Transition],
          caps: CapPreview | None) -> tuple[list[BacktestEvent], int]:
    """The events of these transitions but baselines (_Evaluation.events makes those) and how many outbox rows
    they would plan."""
    events: list[BacktestEvent] = []
    loud = [t for t in transitions if not t.baselined]
    if not loud:
        return events, 0
    reader = SimpleNamespace(subjects=tx.replay.subjects(clock.now, template_rows(ZoneInfo(clock.timezone))))
    recs, contacts = plan_inputs(reader, pb, [t.subject_id for t in loud], today=clock.today)
    planner = Planner(settings, pb, clock, caps=caps, written_at=clock.now)
    planned = 0
    for t in loud:
        rec = recs.get(t.subject_id, {})
        event, rows = planner.plan(t, rec, contacts)
        planned += sum(1 for r in rows if not r["kind"].endswith(CLOSE))
        events.append(BacktestEvent(clock.now, event, (rec.get("account") or {}).get("csm_email")))
    return events, planned


class _Caps:
    """The frequency caps (§13) as a run shows them: each customer-facing message is counted against those the
    backtest planned before it that no cap stopped, from when each was due to go out."""

    def __init__(self, settings: Settings):
        self.policy = ContactPolicy(settings.contact_policy, settings.timezone)
        self.seen: dict[tuple[str, str], list[datetime]] = {}

    def preview(self) -> CapPreview | None:
        if not self.policy.caps:
            return None
        return CapPreview(self.policy, lambda per, who: [], self.seen)
