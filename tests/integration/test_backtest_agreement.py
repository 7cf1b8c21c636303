"""A backtest agrees exactly with the runs it replays (§18).

Hypothesis generates accounts, contacts, goals and usage, a day-by-day series of syncs that change them, and
playbooks with random thresholds, schedules, repeats, cooldowns, max_episodes, activation and
max_enters_per_run, and journeys of accounts and contacts (waits by duration, business days, time of day and
`until` with a timeout, `if` steps, exit_when, exit_on_unmatch), under a contact policy with quiet hours and
business days; the period starts on a Monday or a Friday. One database receives the syncs, each recorded at
its own moment, and between them a `run` at every time a playbook was scheduled, for the playbooks due then —
what `playbook start` would have done. A backtest of the whole period on that database must then give exactly
the events and actions those runs gave, list as cancelled exactly the step actions the runs' exits cancelled
before they were due, and change nothing in the database.

`make test` runs a fixed set of examples (derandomized); the slow tier runs many random ones:
`PLAYBOOK_BACKTEST_EXAMPLES=300 pytest tests/integration/test_backtest_agreement.py -m slow`."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import select

from conftest import PG_SKIP, PG_URL, Workspace, postgres_schema
from engine.app import App
from engine.backtest import run_backtest, scheduled_times
from engine.sync.runner import run_sync
from engine.tick import run_tick

TZ = "Asia/Tokyo"
MONDAY = date(2026, 11, 2)
SCHEDULES = ["0 9 * * *", "0 9 * * mon-fri", "0 */12 * * *", "30 18 * * *", "0 9 * * mon", "0 9,15 * * *"]
POLICY = """
contact_policy:
  quiet_hours: {start: "19:00", end: "09:00"}
  business_days: {weekdays: [mon, tue, wed, thu, fri]}
"""
HISTORY = bool(getattr(__import__("engine.store.schema", fromlist=["x"]).build_schema(), "history", None))


@dataclass(frozen=True)
class Shape:
    """One generated scenario."""

    playbooks: list[str]
    days: list[dict[str, list[dict]]]           # the data synced each day (06:00 local)
    rail: int | None = None                     # defaults.max_total_actions_per_run
    start: date = MONDAY                        # the first day (a Friday: weekends hold customer messages back)


def _trigger(kind: str, threshold: int) -> tuple[str, str]:
    """(subject, trigger) of a generated playbook or journey."""
    return {
        "arr": ("account", f"{{when: \"account.arr < {threshold * 1000}\"}}"),
        "health": ("account", f"{{when: \"account.health_score < {threshold} or account.health_score is none\"}}"),
        "logins": ("account", f"{{low_usage: {{metric: logins, days: 3, agg: sum, below: {threshold}}}}}"),
        "renewal": ("account", f"{{renewal_approaching: {{within_days: {threshold}}}}}"),
        "last": ("account", f"{{when: \"metric('logins', 3, 'last') is none or metric('logins', 3, 'last') < "
                            f"{threshold % 9} or metric('logins', 2, 'min') >= 5\"}}"),
        "champion": ("contact", f"{{when: \"contact.role == 'champion' and account.arr >= {threshold * 1000}\"}}"),
        "goal": ("goal", "{goal_achieved: {}}"),
        "created": ("account", "{when: \"account.created_at is none or account.created_at < now\"}"),
    }[kind]


def _head(i: int, kind: str, threshold: int, schedule: str, activation: str, **options: Any) -> list[str]:
    """The lines of a generated playbook before its actions or steps: the options given that are set."""
    subject, trigger = _trigger(kind, threshold)
    lines = [f"id: pb-{i}", f"name: pb {i}", f"subject: {subject}", f"schedule: \"{schedule}\"",
             f"activation: {activation}", f"trigger: {trigger}"]
    return lines + [f"{name}: {value}" for name, value in options.items() if value]


def _playbook(i: int, kind: str, threshold: int, schedule: str, repeat: str | None, cooldown: str | None,
              max_episodes: int | None, activation: str, max_enters: int | None, max_actions: int | None) -> str:
    lines = _head(i, kind, threshold, schedule, activation, repeat=repeat, cooldown=cooldown,
                  max_episodes=max_episodes, max_enters_per_run=max_enters, max_actions_per_run=max_actions)
    lines += ["actions:",
              "  - slack: {channel: \"#cs\", text: \"{{ account.name }} arr {{ account.arr }} "
              "logins {{ metric('logins', 3, 'sum') }}\"}",
              "  - email: {to: {role: champion}, subject: \"Hi {{ account.name }}\", body: \"arr {{ account.arr }}\"}",
              "on_resolve:",
              "  - slack: {to: \"{{ account.csm_email }}\", text: \"{{ account.name }} resolved\"}"]
    return "\n".join(lines) + "\n"


def _journey(i: int, kind: str, threshold: int, schedule: str, cooldown: str | None, max_episodes: int | None,
             activation: str, max_enters: int | None, exit_when: str | None, first_wait: str, until: str,
             timeout: str, exit_on_unmatch: bool, branch: int) -> str:
    """A journey playbook: a customer email (under the contact policy), waits by duration, by business days and
    `until` a condition with a timeout, an `if`, an action with `if`, and `exit_when`."""
    lines = _head(i, kind, threshold, schedule, activation, cooldown=cooldown, max_episodes=max_episodes,
                  max_enters_per_run=max_enters, exit_when=exit_when and f'"{exit_when}"',
                  exit_on_unmatch=exit_on_unmatch and "true")
    lines += ["steps:",
              "  - id: hello",
              "    email: {to: {role: champion}, subject: \"Hi {{ account.name }}\", body: \"arr {{ account.arr }}\"}",
              f"  - wait: {first_wait}",
              "  - id: nudge",
              f"    if: \"metric('logins', 3, 'sum') < {branch}\"",
              "    slack: {channel: \"#cs\", text: \"{{ account.name }} logins {{ metric('logins', 3, 'sum') }}\"}",
              f"  - wait: {{until: \"{until}\", timeout: {timeout}}}",
              f"  - if: \"account.arr >= {branch * 5000}\"",
              "    then:",
              "      - id: big",
              "        email: {to: {role: champion}, subject: \"Still there {{ account.name }}\", body: \"x\"}",
              "      - wait: {business_days: 1, at: \"10:00\"}",
              "      - id: call",
              "        slack: {to: \"{{ account.csm_email }}\", text: \"call {{ account.name }}\"}",
              "    else:",
              "      - id: small",
              "        slack: {channel: \"#cs\", text: \"{{ account.name }} small\"}",
              "on_resolve:",
              "  - slack: {to: \"{{ account.csm_email }}\", text: \"{{ account.name }} journey over\"}"]
    return "\n".join(lines) + "\n"


CONDITIONS = ["account.health_score >= 70", "metric('logins', 3, 'sum') >= 15", "account.arr >= 40000",
              "metric('logins', 2, 'max') >= 8"]

journey_st = st.builds(
    _journey, st.just(0), st.sampled_from(["arr", "health", "logins", "champion"]), st.integers(1, 60),
    st.sampled_from(SCHEDULES), st.sampled_from([None, None, "1d", "3d"]), st.sampled_from([None, None, 1, 2]),
    st.sampled_from(["baseline", "fire"]), st.sampled_from([None, None, 1, 2]),
    st.sampled_from([None] + CONDITIONS), st.sampled_from(["12h", "1d", "2d", "{business_days: 1}", "{at: \"10:00\"}"]),
    st.sampled_from(CONDITIONS), st.sampled_from(["1d", "2d", "3d"]), st.booleans(), st.integers(1, 8))

playbook_st = st.builds(
    _playbook, st.just(0),
    st.sampled_from(["arr", "health", "logins", "renewal", "last", "champion", "goal", "created"]),
    st.integers(1, 60), st.sampled_from(SCHEDULES), st.sampled_from([None, None, "1d", "2d", "12h"]),
    st.sampled_from([None, None, "1d", "3d"]), st.sampled_from([None, None, 1, 2]),
    st.sampled_from(["baseline", "fire"]), st.sampled_from([None, None, 1, 2]),
    st.sampled_from([None, None, None, 3, 8]))


@st.composite
def scenarios(draw: Any) -> Shape:
    n = draw(st.integers(1, 6))
    pbs = [draw(st.one_of(playbook_st, journey_st)).replace("pb-0", f"pb-{i}").replace("pb 0", f"pb {i}")
           for i in range(draw(st.integers(1, 4)))]
    days = draw(st.integers(2, 8)) if HISTORY else 1
    first = MONDAY + timedelta(days=draw(st.sampled_from([0, 4])))
    accounts = {f"A{i}": {"id": f"A{i}", "name": f"Acme {i}", "arr": draw(st.integers(0, 60)) * 1000,
                          "health_score": draw(st.sampled_from([None, 10, 40, 70])),
                          "renewal_date": (first + timedelta(days=draw(st.integers(-3, 40)))).isoformat(),
                          "csm_email": draw(st.sampled_from(["c1@x.example", "c2@x.example"])),
                          # matches from a time of day: runs of one day between two syncs may differ
                          "created_at": (datetime.combine(first, datetime.min.time())
                                         + timedelta(hours=draw(st.integers(0, 96)))).isoformat(),
                          "timezone": draw(st.sampled_from(["", "America/New_York"]))} for i in range(n)}
    contacts = {f"C{i}{k}": {"id": f"C{i}{k}", "account_id": f"A{i}", "email": f"c{k}@a{i}.example",
                             "name": f"C{k}", "role": draw(st.sampled_from(["champion", "user"])),
                             "unsubscribed": "false"} for i in range(n) for k in range(draw(st.integers(0, 2)))}
    goals = {f"G{i}": {"id": f"G{i}", "account_id": f"A{i}", "name": "Seats", "metric": "logins",
                       "direction": "increase", "baseline": 0, "target": 10, "current": draw(st.integers(5, 12)),
                       "status": "open"} for i in range(n) if draw(st.booleans())}
    usage: dict[tuple[str, str], dict] = {}
    for i in range(n):
        for back in range(1, 4):
            day = (first - timedelta(days=back)).isoformat()
            usage[(f"A{i}", day)] = {"account_id": f"A{i}", "metric": "logins", "day": day,
                                     "value": draw(st.integers(0, 9))}
    series = []
    for d in range(days):
        if d:      # each later day: some fields change, a row may go away or come back, yesterday's usage arrives
            for a in accounts.values():
                if draw(st.integers(0, 3)) == 0:
                    a["arr"] = draw(st.integers(0, 60)) * 1000
                if draw(st.integers(0, 4)) == 0:
                    a["health_score"] = draw(st.sampled_from([None, 10, 40, 70]))
            for c in contacts.values():
                if draw(st.integers(0, 4)) == 0:
                    c["role"] = draw(st.sampled_from(["champion", "user"]))
            for g in goals.values():
                g["current"] = min(12, g["current"] + draw(st.integers(0, 2)))
            day = (first + timedelta(days=d - 1)).isoformat()
            for i in range(n):
                if draw(st.integers(0, 3)):
                    usage[(f"A{i}", day)] = {"account_id": f"A{i}", "metric": "logins", "day": day,
                                             "value": draw(st.integers(0, 9))}
        gone = {f"A{i}" for i in range(n) if d and draw(st.integers(0, 7)) == 0}
        series.append({"accounts": [dict(a) for k, a in accounts.items() if k not in gone],
                       "contacts": [dict(c) for c in contacts.values() if c["account_id"] not in gone],
                       "goals": [dict(g) for g in goals.values() if g["account_id"] not in gone],
                       "usage": [dict(u) for u in usage.values()]})
    return Shape(pbs, series, draw(st.sampled_from([None, None, None, 4, 12])), first)


def _dump(app: App) -> dict[str, list[tuple]]:
    """Every row of every table: what a backtest must leave as it was."""
    with app.store.read() as tx:
        return {t.name: sorted(map(tuple, tx.conn.execute(select(t))), key=repr)
                for t in app.store.schema.metadata.sorted_tables}


def check(shape: Shape, root: Path, url: str | None = None) -> int:
    """Replay `shape` as syncs and runs on database `url` (default: SQLite in `root`), then backtest it; returns
    how many events were compared."""
    ws = Workspace(root, url or f"sqlite:///{root / 'db.sqlite'}", timezone=TZ)
    ws.configure(POLICY + (f"defaults: {{max_total_actions_per_run: {shape.rail}}}\n" if shape.rail else ""))
    for i, text in enumerate(shape.playbooks):
        ws.playbook(f"pb-{i}", text)
    tz = ZoneInfo(TZ)
    start = datetime.combine(shape.start, datetime.min.time(), tz)
    end = start + timedelta(days=len(shape.days))
    utc = lambda m: m.astimezone(timezone.utc).replace(tzinfo=None)       # noqa: E731
    app = App(ws.config)
    pbs = app.playbooks
    assert not pbs.invalid, [d for i in pbs.invalid for d in i.diagnostics]
    timeline: list[tuple[datetime, int, Any]] = []
    for d, data in enumerate(shape.days):
        sync_at = start + timedelta(days=d, hours=6) if d else start - timedelta(hours=1)
        timeline.append((utc(sync_at), 0, data))
    runs: dict[datetime, list[str]] = {}
    for pb in pbs.valid:
        for moment in scheduled_times(pb.spec.schedule, utc(start), utc(end), TZ):
            runs.setdefault(moment, []).append(pb.id)
    timeline += [(m, 1, ids) for m, ids in runs.items()]
    expected: list[dict] = []
    for moment, what, payload in sorted(timeline, key=lambda x: (x[0], x[1])):
        if what == 0:
            for entity, rows in payload.items():
                ws.data(entity, rows)
            report = run_sync(app.settings, app.store, now=moment, allow_removal=True)   # removals are meant
            assert not report.failed
            continue
        clock = app.clock(moment.replace(tzinfo=timezone.utc))
        result = run_tick(app.store, app.settings, pbs, clock, only=set(payload))
        at = clock.local().isoformat()
        expected += [{"at": at, **e.as_json()} for e in result.events]
    # the step actions the runs' exits cancelled before they were due (those due earlier went out when due: the
    # runs here deliver nothing, so their outbox cancelled those too)
    o = app.store.schema.outbox
    with app.store.read() as tx:
        cancelled = sorted((f"{r.subject_type}:{r.subject_id}", r.episode, r.firing, r.kind, r.contact_id, r.not_before)
                           for r in tx.conn.execute(select(o).where(o.c.status == "cancelled"))
                           if r.not_before > r.finished_at)
    before = _dump(app)
    got: list[dict] = []
    got_cancelled: list[tuple] = []

    def take(e: Any) -> None:
        if e.event.event == "baseline":
            return
        shown = e.as_json(TZ)
        for c in shown.pop("cancelled", []):
            got_cancelled.append((shown["subject"], shown["episode"], c["step"], c["kind"], c.get("contact"),
                                  utc(datetime.fromisoformat(c["send_at"]))))
        got.append(shown)
    run_backtest(app.store, app.settings, pbs, utc(start), utc(end), on_event=take)
    assert _dump(app) == before
    app.close()
    assert got == expected
    assert sorted(got_cancelled) == cancelled
    return len(expected)


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=12, derandomize=True, **SETTINGS)
@given(scenarios())
def test_a_backtest_agrees_with_the_runs_it_replays(shape: Shape) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        check(shape, Path(tmp))


@pytest.mark.skipif(not PG_URL, reason=PG_SKIP)
@settings(max_examples=12, derandomize=True, **SETTINGS)
@given(scenarios())
def test_a_backtest_agrees_with_the_runs_it_replays_on_postgresql(shape: Shape) -> None:
    with tempfile.TemporaryDirectory() as tmp, postgres_schema("backtest") as pg:
        check(shape, Path(tmp), pg.url)


EXAMPLES = int(os.environ.get("PLAYBOOK_BACKTEST_EXAMPLES", "0"))


@pytest.mark.slow
@pytest.mark.skipif(not EXAMPLES, reason="set PLAYBOOK_BACKTEST_EXAMPLES=N to run N random backtest examples")
@settings(max_examples=max(EXAMPLES, 1), **SETTINGS)
@given(scenarios())
def test_a_backtest_agrees_with_the_runs_it_replays_many(shape: Shape) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        check(shape, Path(tmp))
