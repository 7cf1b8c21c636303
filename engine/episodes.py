"""The episode policy (§8), written once as pure functions over plain data.

For every (playbook, subject) the store keeps one `Episode` row: the number of the current or last
episode, how often it fired, and when it started, last fired and resolved. A scan tells which subjects
now match and which stopped matching; these functions decide what that means — enter, repeat, resolve,
or nothing (cooldown, max_episodes) — and why. The tick, `explain` and dry runs all call them; the store
only reads the rows they need (by subject id, or by the cut-off instants computed here) and writes the
transitions they return."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
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


@dataclass(frozen=True, slots=True)
class Transition:
    """One subject whose state changes in this evaluation."""

    subject_id: str
    event: str                # enter | repeat | resolve
    episode: int              # episode number after the change
    firing: int               # firing number inside the episode (resolve keeps the last)
    is_new_row: bool          # no episode row existed for this subject yet


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
           policy: Policy) -> Decision:
    """Enter / resolve from a scan's candidates and the stored episodes (repeats: `repeats`).

    A matching subject enters unless it is in an open episode already, inside its cooldown, or has used up
    max_episodes (then it stays out and is reconsidered at the next evaluation); a subject that stopped
    matching resolves its open episode."""
    out: list[Transition] = []
    mend_set: list[str] = []
    mend_clear: list[str] = []
    cooled = policy.cooled_before(now)
    for sid in enter_ids:
        e = stored.get(sid)
        if e is None:
            out.append(Transition(sid, "enter", 1, 1, True))
        elif e.is_open:
            mend_set.append(sid)
        elif (e.resolved_at is None or e.resolved_at <= cooled) and \
                (policy.max_episodes is None or e.episode < policy.max_episodes):
            out.append(Transition(sid, "enter", e.episode + 1, 1, False))
    for sid in resolve_ids:
        e = stored.get(sid)
        if e is not None and e.is_open:
            out.append(Transition(sid, "resolve", e.episode, e.firing, False))
        else:
            mend_clear.append(sid)
    out.sort(key=lambda t: (t.subject_id, t.event))
    return Decision(out, mend_set, mend_clear)


def repeats(due: Iterable[Episode], resolving: Collection[str]) -> list[Transition]:
    """Repeat transitions of open episodes due to fire again (those last fired before `Policy.repeat_cutoff`),
    except the subjects resolving in the same evaluation."""
    return [Transition(e.subject_id, "repeat", e.episode, e.firing + 1, False)
            for e in due if e.subject_id not in resolving]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why one subject does or does not fire at one instant, in words a person reads (`explain`)."""

    name: str       # fires | repeats | in_episode | not_matching | cooldown | episodes_used_up | removed
    reason: str


def verdict(stored: Episode | None, matches: bool, removed: bool, now: datetime, policy: Policy,
            not_matching: str, show: Any = str) -> Verdict:
    """The verdict `decide`/`repeats` reach for one subject: `not_matching` says which condition failed;
    `show(instant)` formats an instant for a person."""
    is_open = bool(stored and stored.is_open)
    if removed:
        return Verdict("removed", "the subject was removed by the last sync"
                       + ("; its episode resolves" if is_open else ""))
    if not matches:
        tail = f"; episode {stored.episode} resolves at the next run" if stored and is_open else ""
        return Verdict("not_matching", f"does not match: {not_matching}{tail}")
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
    entered = decide([sid], [], {sid: stored} if stored is not None else {}, now, policy)
    if entered.transitions:
        number = entered.transitions[0].episode
        return Verdict("fires", f"matches: enters episode {number} and fires at the next run")
    assert stored is not None
    if policy.max_episodes is not None and stored.episode >= policy.max_episodes:
        return Verdict("episodes_used_up", f"matches, but max_episodes ({policy.max_episodes}) is used up")
    until = policy.cooldown_until(stored.resolved_at) if stored.resolved_at else now
    return Verdict("cooldown", f"matches, but in cooldown until {show(until)}")
