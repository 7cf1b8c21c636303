"""The episode policy (§8) as pure functions: enter, repeat, resolve, cooldown, max_episodes — and the verdict
`explain` gives, which must be the decision the tick takes."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from engine.clock import Duration, parse_duration
from engine.episodes import Episode, Policy, Transition, decide, repeats, verdict

NOW = datetime(2026, 3, 10, 9, 0)
HOUR = timedelta(hours=1)


def closed(sid: str, episode: int = 1, resolved: timedelta = 5 * HOUR) -> Episode:
    return Episode(sid, False, episode, 2, NOW - 10 * HOUR, NOW - 8 * HOUR, NOW - resolved)


def opened(sid: str, episode: int = 1, fired: timedelta = 2 * HOUR) -> Episode:
    return Episode(sid, True, episode, 1, NOW - 10 * HOUR, NOW - fired, None)


def test_enter_resolve_and_mend() -> None:
    stored = {"B": opened("B"), "C": closed("C"), "D": opened("D", 3), "E": closed("E")}
    d = decide(["A", "B", "C"], ["D", "E", "F"], stored, NOW, Policy())
    assert d.transitions == [Transition("A", "enter", 1, 1, True), Transition("C", "enter", 2, 1, False),
                             Transition("D", "resolve", 3, 1, False)]
    assert d.mend_set == ["B"]                  # already in an open episode: only its bit was stale
    assert d.mend_clear == ["E", "F"]           # already out: nothing to resolve


@pytest.mark.parametrize(("resolved", "enters"), [(4 * HOUR, False), (6 * HOUR, True), (5 * HOUR, True)])
def test_cooldown_holds_a_subject_out_until_it_ends(resolved: timedelta, enters: bool) -> None:
    policy = Policy(cooldown=Duration(seconds=5 * 3600))
    d = decide(["C"], [], {"C": closed("C", resolved=resolved)}, NOW, policy)
    assert [t.event for t in d.transitions] == (["enter"] if enters else [])
    assert d.mend_set == d.mend_clear == []     # held out: reconsidered at the next evaluation


def test_max_episodes_is_a_limit_per_subject_ever() -> None:
    assert decide(["C"], [], {"C": closed("C", 2)}, NOW, Policy(max_episodes=2)).transitions == []
    assert decide(["C"], [], {"C": closed("C", 1)}, NOW, Policy(max_episodes=2)).transitions == [
        Transition("C", "enter", 2, 1, False)]


def test_repeats_of_episodes_due_except_those_resolving() -> None:
    policy = Policy(repeat=Duration(seconds=3600))
    cutoff = policy.repeat_cutoff(NOW)
    assert cutoff == NOW - HOUR and Policy().repeat_cutoff(NOW) is None
    due = [e for e in (opened("A", fired=2 * HOUR), opened("B", fired=HOUR), opened("C", fired=HOUR / 2))
           if e.last_fired_at <= cutoff]
    assert repeats(due, {"B"}) == [Transition("A", "repeat", 1, 2, False)]


def test_cooldowns_ended_between_two_scans() -> None:
    policy = Policy(cooldown=Duration(seconds=3600))
    assert policy.cooldowns_ended(NOW - 2 * HOUR, NOW) == (NOW - 3 * HOUR, NOW - HOUR)
    assert Policy().cooldowns_ended(NOW - 2 * HOUR, NOW) is None


@pytest.mark.parametrize(("stored", "matches", "policy", "name"), [
    (None, True, Policy(), "fires"),
    (closed("S"), True, Policy(), "fires"),
    (closed("S"), True, Policy(cooldown=Duration(seconds=6 * 3600)), "cooldown"),
    (closed("S", 2), True, Policy(max_episodes=2), "episodes_used_up"),
    (opened("S"), True, Policy(), "in_episode"),
    (opened("S"), True, Policy(repeat=Duration(seconds=3600)), "repeats"),
    (opened("S"), True, Policy(repeat=Duration(seconds=3 * 3600)), "in_episode"),
    (opened("S"), False, Policy(), "not_matching"),
    (None, False, Policy(), "not_matching"),
])
def test_the_verdict_is_the_decision(stored: Episode | None, matches: bool, policy: Policy, name: str) -> None:
    v = verdict(stored, matches, False, NOW, policy, "trigger `x` is false")
    assert v.name == name
    stored_map = {"S": stored} if stored else {}
    d = decide(["S"] if matches else [], [] if matches else ["S"], stored_map, NOW, policy)
    cutoff = policy.repeat_cutoff(NOW)
    due = repeats([stored] if stored and stored.is_open and cutoff and stored.last_fired_at <= cutoff else [], set())
    events = [t.event for t in d.transitions + (due if matches else [])]
    expected = {"fires": ["enter"], "repeats": ["repeat"], "not_matching": ["resolve"] if stored and stored.is_open
                else []}.get(name, [])
    assert events == expected


def test_the_verdict_names_what_holds_a_subject_out() -> None:
    show = lambda instant: instant.isoformat(timespec="minutes")       # noqa: E731
    v = verdict(closed("S"), True, False, NOW, Policy(cooldown=Duration(seconds=6 * 3600)), "", show)
    assert v.reason == "matches, but in cooldown until 2026-03-10T10:00"
    v = verdict(opened("S", fired=HOUR), True, False, NOW, Policy(repeat=Duration(seconds=3 * 3600)), "", show)
    assert v.reason.endswith("next repeat at 2026-03-10T11:00")
    assert verdict(opened("S"), True, True, NOW, Policy(), "").name == "removed"


@pytest.mark.parametrize(("last", "now", "due"), [
    ("2025-12-31T15:00", "2026-01-31T15:00", True),      # 1 Jan 00:00 to 1 Feb 00:00 in Tokyo: a month
    ("2026-02-01T01:00", "2026-03-01T01:00", True),      # 28 days in February
    ("2026-01-01T01:00", "2026-01-31T01:00", False),     # 30 days are not a month in January
    ("2026-02-01T01:00", "2026-02-28T01:00", False),
])
def test_a_month_is_a_calendar_month_in_the_config_zone(last: str, now: str, due: bool) -> None:
    """`repeat: 1mo` with a monthly schedule fires on every 1st, February and March included; months count in
    the configured zone (09:00 on the 1st in Tokyo is 00:00 UTC on the 1st)."""
    policy = Policy(repeat=parse_duration("1mo"), timezone="Asia/Tokyo")
    last_fired, at = datetime.fromisoformat(last), datetime.fromisoformat(now)
    assert (last_fired <= policy.repeat_cutoff(at)) is due


def test_durations_read_and_print_back() -> None:
    assert [str(parse_duration(t)) for t in ("30m", "12h", "3d", "2w", "1mo", "90s")] == [
        "30m", "12h", "3d", "2w", "1mo", "90s"]
    assert parse_duration("1mo").after(datetime(2026, 1, 31, 15), "UTC") == datetime(2026, 2, 28, 15)
    for bad in ("abc", "30 seconds", "1y", "-1d", "99999999999999999999d"):
        with pytest.raises(ValueError):
            parse_duration(bad)
