"""Ticks that scan only what changed (engine/scan_plan.py) decide exactly what full scans decide.

Two workspaces receive the same syncs and ticks; before each tick one of them forgets what its
scans saw, so it scans every subject. Their events must be equal at every tick, through
incremental and snapshot syncs, removals, a cooldown that ends between two hourly ticks, and
new days."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, update

from conftest import Workspace
from engine.app import App
from conftest import Db
from engine.store.episodes import resolved_between
from engine.sync.runner import run_sync
from engine.tick import run_tick

DAY = date(2026, 3, 10)
PLAYBOOKS = {
    "low-arr-usage": """
        id: low-arr-usage
        name: Low ARR and low logins
        activation: fire
        trigger:
          when: account.arr < 50000 and metric('logins', 7, 'sum') < 30
        cooldown: 2h
        actions:
          - slack: {channel: "#cs", text: "{{ account.name }}"}
        """,
    "unhealthy": """
        id: unhealthy
        name: Unhealthy
        activation: fire
        trigger:
          when: account.health_score < 40 or account.health_score is none
        where:
          - segment('high_touch') or account.arr > 20000
        actions:
          - slack: {channel: "#cs", text: "{{ account.name }}"}
        """,
    "renewal": """
        id: renewal
        name: Renewal
        activation: fire
        trigger:
          when: days_until(account.renewal_date) <= 20
        actions:
          - slack: {channel: "#cs", text: "{{ account.name }}"}
        """,
    "champion-big": """
        id: champion-big
        name: Champion at a big account
        subject: contact
        activation: fire
        trigger:
          when: contact.role == 'champion' and account.arr >= 50000 and not contact.unsubscribed
        cooldown: 1h
        actions:
          - slack: {channel: "#cs", text: "{{ contact.name }}"}
        """,
    "goal-done": """
        id: goal-done
        name: Goal done
        subject: goal
        activation: fire
        trigger:
          when: goal.current >= goal.target and metric('logins', 3, 'max') > 2
        actions:
          - slack: {channel: "#cs", text: "{{ goal.name }}"}
        """,
}
ACCOUNTS = [f"A{i}" for i in range(30)]


class Twin:
    """A workspace driven through the Python API; `full` forgets its scan marks before every tick."""

    def __init__(self, root: Path, database: str, full: bool):
        self.ws = Workspace(root, database)
        self.full = full
        for name, text in PLAYBOOKS.items():
            self.ws.playbook(name, text)

    def write(self, entity: str, rows: list[dict], delta: bool) -> None:
        if delta:
            path = self.ws.root / "data" / f"{entity}-delta.csv"
            header = list(rows[0]) if rows else ["id"]
            path.write_text(",".join(header) + "\n" + "".join(
                ",".join("" if r.get(h) is None else str(r[h]) for h in header) + "\n" for r in rows))
        else:
            self.ws.data(entity, rows)

    def sync(self, at: datetime, delta: str | None = None) -> None:
        app = App(self.ws.config)
        settings = app.settings
        if delta:
            source = next(s for s in settings.sources if s.entity == delta)
            settings = settings.model_copy(update={"sources": [source.model_copy(
                update={"csv": source.csv.model_copy(update={"path": f"data/{delta}-delta.csv"}),
                        "mode": "incremental"})]})
        report = run_sync(settings, app.store, now=at)
        assert not any(r.failed for r in report.entities.values()), report
        app.close()

    def tick(self, at: datetime) -> tuple[list[tuple[str, str, str, int]], dict[str, str]]:
        app = App(self.ws.config)
        if self.full:
            with app.store.engine.begin() as conn:
                conn.execute(update(app.store.schema.playbook_state).values(scan=None))
        result = run_tick(app.store, app.settings, app.playbooks, app.clock(at.isoformat()))
        app.close()
        return sorted((e.playbook, e.subject, e.event, e.episode) for e in result.events), result.scopes


def _accounts(rng: random.Random, ids: list[str]) -> list[dict]:
    return [{"id": a, "name": f"Acme {a}", "arr": rng.choice([1000, 30000, 60000, 150000]),
             "health_score": rng.choice([None, 20, 55, 90]),
             "renewal_date": (DAY + timedelta(days=rng.randint(-5, 40))).isoformat()} for a in ids]


def _contacts(rng: random.Random, ids: list[str]) -> list[dict]:
    return [{"id": f"C{a}-{k}", "account_id": a, "email": f"c{k}@{a.lower()}.example", "name": f"C{k}",
             "role": rng.choice(["champion", "user"]), "unsubscribed": rng.choice(["true", "false", "false"])}
            for a in ids for k in range(2)]


def _goals(rng: random.Random, ids: list[str]) -> list[dict]:
    return [{"id": f"G{a}", "account_id": a, "name": f"Goal {a}", "metric": "logins", "target": 10,
             "current": rng.choice([None, 5, 10, 20])} for a in ids]


def _usage(rng: random.Random, ids: list[str], today: date, days: int) -> list[dict]:
    return [{"account_id": a, "metric": "logins", "day": (today - timedelta(days=d)).isoformat(),
             "value": rng.choice([0, 1, 3, 8])} for a in ids for d in range(days) if rng.random() < 0.8]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_changes_only_scans_decide_like_full_scans(tmp_path: Path, seed: int) -> None:
    twins = [Twin(tmp_path / f"{kind}-{seed}", f"sqlite:///{tmp_path / f'{kind}-{seed}.db'}", kind == "full")
             for kind in ("inc", "full")]
    rng = random.Random(seed)
    snapshot = {"accounts": _accounts(rng, ACCOUNTS), "contacts": _contacts(rng, ACCOUNTS),
                "goals": _goals(rng, ACCOUNTS), "usage": _usage(rng, ACCOUNTS, DAY, 12)}
    at = datetime(2026, 3, 10, 8)
    for twin in twins:
        for entity, rows in snapshot.items():
            twin.write(entity, rows, delta=False)
        twin.sync(at)
    reasons: set[str] = set()
    fired = 0
    for step in range(40):
        at += timedelta(hours=1) if rng.random() < 0.85 else timedelta(days=1)
        op = rng.choice(["accounts", "contacts", "goals", "usage", "snapshot", "none"])
        some = rng.sample(ACCOUNTS, 3)
        if op == "snapshot":                 # one account disappears (or comes back): removals cascade
            gone = set(rng.sample(ACCOUNTS, 1))
            rows = {"accounts": [r for r in _accounts(rng, ACCOUNTS) if r["id"] not in gone]}
            for twin in twins:
                twin.write("accounts", rows["accounts"], delta=False)
                twin.sync(at - timedelta(minutes=5), None)
        elif op != "none":
            rows = {"accounts": _accounts, "contacts": _contacts, "goals": _goals}.get(op)
            data = rows(rng, some) if rows else _usage(rng, some, at.date(), 4)
            for twin in twins:
                twin.write(op, data, delta=True)
                twin.sync(at - timedelta(minutes=5), op)
        (inc, inc_scans), (full, _) = (twin.tick(at) for twin in twins)
        assert inc == full, (step, op, at)
        reasons |= set(inc_scans.values())
        fired += len(inc)
    assert "changes only" in reasons and "new day" in reasons      # both paths ran
    assert fired > 20


def test_cooldown_ending_between_hourly_ticks_is_seen(ws: Workspace) -> None:
    ws.playbook("low", """
        id: low
        name: Low
        activation: fire
        trigger: {when: account.arr < 100}
        cooldown: 90m
        actions:
          - slack: {channel: "#cs", text: "{{ account.name }}"}
        """)
    ws.data("accounts", [{"id": "A1", "name": "A", "arr": 50}, {"id": "A2", "name": "B", "arr": 500}])
    ws.sync()
    assert ws.events("2026-03-10T09:00") == [("low", "account:A1", "enter", 1)]
    ws.data("accounts", [{"id": "A1", "name": "A", "arr": 500}, {"id": "A2", "name": "B", "arr": 500}])
    ws.sync()
    assert ws.events("2026-03-10T10:00") == [("low", "account:A1", "resolve", 1)]
    ws.data("accounts", [{"id": "A1", "name": "A", "arr": 50}, {"id": "A2", "name": "B", "arr": 500}])
    ws.sync()
    assert ws.events("2026-03-10T11:00") == []                  # in cooldown until 11:30
    assert ws.events("2026-03-10T12:00") == [("low", "account:A1", "enter", 2)]   # no data changed since


def test_removed_account_resolves_on_a_changes_only_tick(ws: Workspace) -> None:
    ws.playbook("low", """
        id: low
        name: Low
        subject: contact
        activation: fire
        trigger: {when: account.arr < 100}
        actions:
          - slack: {channel: "#cs", text: "{{ contact.name }}"}
        """)
    ws.data("accounts", [{"id": "A1", "name": "A", "arr": 50}, {"id": "A2", "name": "B", "arr": 50}])
    ws.data("contacts", [{"id": "C1", "account_id": "A1", "email": "c1@a.example", "name": "C1"},
                         {"id": "C2", "account_id": "A2", "email": "c2@b.example", "name": "C2"}])
    ws.sync()
    assert len(ws.events("2026-03-10T09:00")) == 2
    ws.data("accounts", [{"id": "A2", "name": "B", "arr": 50}])      # A1 left the snapshot: C1 goes with it
    ws.cli("sync", "--allow-removal")
    app = App(ws.config)
    result = run_tick(app.store, app.settings, app.playbooks, app.clock("2026-03-10T10:00"))
    app.close()
    assert result.scopes == {"low": "changes only"}
    assert [(e.subject, e.event) for e in result.events] == [("contact:C1", "resolve")]
    assert ws.events("2026-03-10T11:00") == []


def test_the_cooldowns_ended_since_the_last_scan_are_one_range_of_an_index(db_url: str) -> None:
    """A changes-only tick also looks up the subjects whose cooldown ended since its last scan: the closed
    episodes resolved in (last scan - cooldown, now - cooldown], not those still cooling nor reopened ones."""
    db = Db(db_url)
    at = datetime(2026, 3, 10, 9)
    rows = [("low", "A1", False, 0), ("low", "A2", False, 30), ("low", "A3", False, 90), ("low", "A4", False, 120),
            ("low", "A5", True, 30), ("other", "A6", False, 30)]
    try:
        with db.engine.begin() as conn:
            conn.execute(insert(db.schema.episodes), [
                dict(playbook_id=pb, subject_type="account", subject_id=sid, is_open=is_open, episode=1, firing=1,
                     started_at=at - timedelta(hours=5), last_fired_at=at - timedelta(hours=5),
                     resolved_at=at + timedelta(minutes=minutes)) for pb, sid, is_open, minutes in rows])
        with db.store.read() as tx:
            assert sorted(tx.episodes.resolved_between("low", "account", at, at + timedelta(minutes=90))) == [
                "A2", "A3"]
        query = resolved_between(db.schema).params(b_pb="low", b_type="account", b_after=at,
                                                   b_until=at + timedelta(minutes=90))
        with db.engine.connect() as conn:
            if db.dialect == "sqlite":
                compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
                plan = " ".join(r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
                assert "USING INDEX ix_episodes_resolved" in plan and "resolved_at>? AND resolved_at<?" in plan
    finally:
        db.dispose()


@pytest.mark.parametrize(("held", "freed", "at"), [("cooldown: 3h", "cooldown: 30m", "2026-03-10T11:30"),
                                                 ("max_episodes: 1", "max_episodes: 2", "2026-03-10T12:00")])
def test_loosening_an_episode_limit_frees_the_subjects_it_held(ws: Workspace, held: str, freed: str, at: str) -> None:
    """A matching subject held out by the cooldown (until 13:00, resolved at 10:00) or by max_episodes (its one
    episode used) enters at the next tick once the limit is loosened, though its data did not change since the
    tick that held it out: a changes-only scan would not look at it again (the limits are part of the scan
    fingerprint, so that tick's scan is full)."""
    text = """
        id: low
        name: Low
        activation: fire
        trigger: {{when: account.arr < 100}}
        {limit}
        actions:
          - slack: {{channel: "#cs", text: "{{{{ account.name }}}}"}}
        """
    ws.playbook("low", text.format(limit=held))
    for now, arr, events in (("2026-03-10T09:00", 50, [("low", "account:A1", "enter", 1)]),
                             ("2026-03-10T10:00", 500, [("low", "account:A1", "resolve", 1)]),
                             ("2026-03-10T11:00", 50, [])):            # matches again, held out
        ws.data("accounts", [{"id": "A1", "name": "A", "arr": arr}])
        ws.sync()
        assert ws.events(now) == events
    ws.playbook("low", text.format(limit=freed))
    assert ws.events(at) == [("low", "account:A1", "enter", 2)]
