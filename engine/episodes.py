"""The episode policy (§8, §12), written once as pure functions over plain data.

For every (playbook, subject) the store keeps one `Episode` row: the number of the current or last
episode, how often it fired, and when it started, last fired and resolved. A scan tells which subjects
now match and which stopped matching; these functions decide what that means — enter, repeat, resolve,
or nothing (cooldown, max_episodes) — and why. The tick, `explain` and dry runs all call them; the store
only reads the rows they need (by subject id, or by the cut-off instants computed here) and writes the
transitions they return."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.clock import Duration


@dataclass(frozen=True, slots=True)
class Episode:
    """The stored state of one (playbook, subject): its current or last episode."""

    subject_id: str
    is_open: bool
    episode: int                  # number of the current/last episode
    firing: int                   # firings in the current/last episode
    started_at: datetime | None
    last_fired_at: datetime | None
    resolved_at: datetime | None
    baselined: bool = False       # opened at the playbook's activation: silent, and not a real episode


@dataclass(frozen=True, slots=True)
class Transition:
    """One subject whose state changes in this evaluation. A baselined one (a `baseline`, and the repeats and
    resolve of a baselined episode) is silent: no actions, no event."""

    subject_id: str
    event: str                # enter | repeat | resolve | baseline
    episode: int              # episode number after the change (a baseline keeps the last real one)
    firing: int               # firing number inside the episode (resolve keeps the last; a baseline has none)
    is_new_row: bool          # no episode row existed for this subject yet
    baselined: bool = False


@dataclass(frozen=True, slots=True)
class Policy:
    """A playbook's episode limits (§8); month durations count on the calendar of `timezone`."""

    repeat: Duration | None = None     # fire again while matching after this long (None: never)
    cooldown: Duration = Duration()    # after a resolve, no new episode for this long
    max_episodes: int | None = None    # at most this many episodes per subject, ever
    timezone: str = "UTC"

    @classmethod
    def of(cls, spec: Any, timezone: str = "UTC") -> Policy:
        """The policy of a playbook spec (anything with repeat_duration, cooldown_duration, max_episodes)."""
        return cls(spec.repeat_duration, spec.cooldown_duration, spec.max_episodes, timezone)

    def cooled_before(self, now: datetime) -> datetime:
        """Episodes resolved at or before this instant are out of their cooldown at `now`."""
        return self.cooldown.before(now, self.timezone)

    def repeat_cutoff(self, now: datetime) -> datetime | None:
        """Open episodes that last fired at or before this instant fire again at `now` (None: no repeat). Scheduled
        evaluations run at their scheduled minute (engine/service.py), so `repeat: 1mo` with a monthly schedule,
        or `1d` with a daily one, is due at every run."""
        return None if self.repeat is None else self.repeat.before(now, self.timezone)

    def repeat_due_at(self, last_fired_at: datetime) -> datetime:
        """When an episode that last fired at `last_fired_at` is due to fire again (at the first run from then on)."""
        assert self.repeat is not None
        return self.repeat.after(last_fired_at, self.timezone)

    def cooldown_until(self, resolved_at: datetime) -> datetime:
        """When a subject whose episode resolved at `resolved_at` may enter again."""
        return self.cooldown.after(resolved_at, self.timezone)

    def cooldowns_ended(self, since: datetime, now: datetime) -> tuple[datetime, datetime] | None:
        """Closed episodes resolved in (from, to] left their cooldown between `since` and `now`: their subjects
        may enter again although their data did not change (None when there is no cooldown)."""
        if not self.cooldown:
            return None
        return self.cooled_before(since), self.cooled_before(now)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the scan's candidates mean for one chunk of subjects."""

    transitions: list[Transition]
    mend_set: list[str]        # already in an open episode: only their match bit was stale
    mend_clear: list[str]      # already out of any episode: only their match bit was stale


def decide(enter_ids: Iterable[str], resolve_ids: Iterable[str], stored: Mapping[str, Episode], now: datetime,
           policy: Policy, *, baseline: bool = False) -> Decision:
    """Enter / resolve from a scan's candidates and the stored episodes (repeats: `repeats`).

    A matching subject enters unless it is in an open episode already, inside its cooldown, or has used up
    max_episodes (then it stays out and is reconsidered at the next evaluation); a subject that stopped
    matching resolves its open episode. With `baseline` (the playbook's activation, §12) a matching subject
    outside an episode is baselined instead: an open episode with no actions and no event. A baselined
    episode resolves silently, and the subject then enters like one that never had an episode."""
    out: list[Transition] = []
    mend_set: list[str] = []
    mend_clear: list[str] = []
    cooled = policy.cooled_before(now)
    for sid in enter_ids:
        e = stored.get(sid)
        if e is not None and e.is_open:
            mend_set.append(sid)
        elif baseline:
            out.append(Transition(sid, "baseline", e.episode if e else 0, 0, e is None, baselined=True))
        elif e is None:
            out.append(Transition(sid, "enter", 1, 1, True))
        elif (e.baselined or e.resolved_at is None or e.resolved_at <= cooled) and \
                (policy.max_episodes is None or e.episode < policy.max_episodes):
            out.append(Transition(sid, "enter", e.episode + 1, 1, False))
    for sid in resolve_ids:
        e = stored.get(sid)
        if e is not None and e.is_open:
            out.append(Transition(sid, "resolve", e.episode, e.firing, False, baselined=e.baselined))
        else:
            mend_clear.append(sid)
    out.sort(key=lambda t: (t.subject_id, t.event))
    return Decision(out, mend_set, mend_clear)


def repeats(due: Iterable[Episode], resolving: Collection[str]) -> list[Transition]:
    """Repeat transitions of open episodes due to fire again (those last fired before `Policy.repeat_cutoff`),
    except the subjects resolving in the same evaluation; a baselined episode repeats silently."""
    return [Transition(e.subject_id, "repeat", e.episode, e.firing + (0 if e.baselined else 1), False,
                       baselined=e.baselined)
            for e in due if e.subject_id not in resolving]


def advance(stored: Episode | None, t: Transition, now: datetime) -> Episode:
    """The episode row after transition `t` at `now` (what the store's `Episodes.apply` writes; a backtest keeps
    its episodes in memory with this)."""
    if stored is None:
        return Episode(t.subject_id, True, t.episode, t.firing, now, now, None, t.baselined)
    if t.event in ("enter", "baseline"):
        return Episode(t.subject_id, True, t.episode, t.firing, now, now, stored.resolved_at, t.event == "baseline")
    if t.event == "repeat":
        return Episode(t.subject_id, True, t.episode, t.firing, stored.started_at, now, stored.resolved_at,
                       stored.baselined)
    return Episode(t.subject_id, False, t.episode, t.firing, stored.started_at, stored.last_fired_at, now,
                   stored.baselined)


def held_back(transitions: list[Transition], allowed: int) -> tuple[list[Transition], int]:
    """At most `allowed` enters (in the given order: lowest subject ids first), the others held back for a later
    run (`max_enters_per_run`); returns the transitions kept and how many enters were held back."""
    kept, held = [], 0
    for t in transitions:
        if t.event == "enter":
            if allowed <= 0:
                held += 1
                continue
            allowed -= 1
        kept.append(t)
    return kept, held


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why one subject does or does not fire at one instant, in words a person reads (`explain`)."""

    name: str       # fires | repeats | in_episode | baseline | baselined | not_matching | cooldown |
                    # episodes_used_up | removed
    reason: str


def verdict(stored: Episode | None, matches: bool, removed: bool, now: datetime, policy: Policy,
            not_matching: str, show: Any = str, *, baseline: bool = False) -> Verdict:
    """The verdict `decide`/`repeats` reach for one subject: `not_matching` says which condition failed;
    `show(instant)` formats an instant for a person; `baseline`: the next run is the playbook's activation."""
    is_open = bool(stored and stored.is_open)
    if removed:
        return Verdict("removed", "the subject was removed by the last sync"
                       + ("; its episode resolves" if is_open else ""))
    if not matches:
        tail = f"; episode {stored.episode} resolves at the next run" if stored and is_open else ""
        return Verdict("not_matching", f"does not match: {not_matching}{tail}")
    if stored is not None and stored.is_open and stored.baselined:
        return Verdict("baselined", f"matches, baselined at activation ({show(stored.started_at)}): no actions "
                                    "until it stops matching and enters again")
    if stored is not None and stored.is_open:
        since = f"matches, already in episode {stored.episode} since {show(stored.started_at)}"
        cutoff = policy.repeat_cutoff(now)
        if cutoff is None:
            return Verdict("in_episode", f"{since} (no repeat set)")
        if stored.last_fired_at is not None and stored.last_fired_at <= cutoff:
            return Verdict("repeats", f"matches, in episode {stored.episode}; repeat is due: fires again")
        due = policy.repeat_due_at(stored.last_fired_at) if stored.last_fired_at else now
        return Verdict("in_episode", f"{since}; next repeat at {show(due)}")
    sid = stored.subject_id if stored is not None else ""
    entered = decide([sid], [], {sid: stored} if stored is not None else {}, now, policy, baseline=baseline)
    if entered.transitions and entered.transitions[0].baselined:
        return Verdict("baseline", "matches, but it matched before the playbook was switched on: the next run, its "
                                   "activation, baselines it (no actions; `activation: fire` would fire)")
    if entered.transitions:
        number = entered.transitions[0].episode
        return Verdict("fires", f"matches: enters episode {number} and fires at the next run")
    assert stored is not None
    if policy.max_episodes is not None and stored.episode >= policy.max_episodes:
        return Verdict("episodes_used_up", f"matches, but max_episodes ({policy.max_episodes}) is used up")
    until = policy.cooldown_until(stored.resolved_at) if stored.resolved_at else now
    return Verdict("cooldown", f"matches, but in cooldown until {show(until)}")
