"""Episodes (§8) end to end through the CLI: enter, repeat, resolve, cooldown, max_episodes, removal,
empty values and metric windows — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta

from conftest import Workspace

LOW_ARR = """
id: low-arr
name: Low ARR
activation: fire
trigger:
  when: account.arr < 100
{extra}
actions:
  - slack: {{channel: "#cs", text: "{{{{ account.name }}}} is small"}}
  - task: {{title: "Look at {{{{ account.name }}}}", assignee: "{{{{ account.csm_email }}}}", due_in: 3d}}
on_resolve:
  - slack: {{channel: "#cs", text: "{{{{ account.name }}}} grew"}}
"""


def accounts(ws: Workspace, **arrs: float | None) -> None:
    ws.data("accounts", [{"id": k, "name": f"Acme {k}", "arr": v, "seats": 10, "csm_email": "csm@example.com"}
                         for k, v in arrs.items()])
    ws.cli("sync", "--allow-removal")                   # tiny data: a removal is a large share of it


def test_enter_then_nothing_then_resolve(ws: Workspace) -> None:
    ws.playbook("low-arr", LOW_ARR.format(extra=""))
    accounts(ws, A1=50, A2=500)
    out = ws.run("2026-03-02T09:00")
    assert out["now"] == "2026-03-02T09:00:00+00:00"
    assert [(e["subject"], e["event"], e["episode"]) for e in out["events"]] == [("account:A1", "enter", 1)]
    acts = out["events"][0]["actions"]
    assert acts[0] == {"kind": "slack", "to": ["#cs"], "text": "Acme A1 is small"}
    assert acts[1] == {"kind": "task", "to": ["csm@example.com"], "title": "Look at Acme A1"}
    assert ws.events("2026-03-03T09:00") == []          # still matching, no repeat set
    tasks = ws.cli("tasks", "--format", "json").stdout
    assert "Look at Acme A1" in tasks
    accounts(ws, A1=150, A2=500)
    out = ws.run("2026-03-04T09:00")
    assert [(e["subject"], e["event"], e["episode"]) for e in out["events"]] == [("account:A1", "resolve", 1)]
    assert out["events"][0]["actions"] == [{"kind": "slack", "to": ["#cs"], "text": "Acme A1 grew"}]
    assert '"status": "closed"' in ws.cli("tasks", "--all", "--format", "json").stdout
    assert "Look at Acme A1" not in ws.cli("tasks", "--format", "json").stdout


def test_same_evaluation_twice_plans_nothing_twice(ws: Workspace) -> None:
    ws.playbook("low-arr", LOW_ARR.format(extra=""))
    accounts(ws, A1=50)
    assert len(ws.events("2026-03-02T09:00")) == 1
    assert ws.events("2026-03-02T09:00") == []
    outbox = ws.cli("outbox", "list", "--format", "json").stdout
    assert outbox.count('"dedup_key": "low-arr/account:A1/1/1/0"') == 1


def test_repeat(ws: Workspace) -> None:
    ws.playbook("low-arr", LOW_ARR.format(extra="repeat: 7d"))
    accounts(ws, A1=50)
    assert ws.events("2026-03-01T09:00") == [("low-arr", "account:A1", "enter", 1)]
    assert ws.events("2026-03-07T09:00") == []
    assert ws.events("2026-03-08T08:59") == []
    assert ws.events("2026-03-08T09:00") == [("low-arr", "account:A1", "repeat", 1)]
    assert ws.events("2026-03-09T09:00") == []
    assert ws.events("2026-03-15T09:00") == [("low-arr", "account:A1", "repeat", 1)]
    keys = ws.cli("outbox", "list", "--format", "json").stdout
    assert "low-arr/account:A1/1/3/0" in keys


def test_cooldown_holds_back_a_new_episode(ws: Workspace) -> None:
    ws.playbook("low-arr", LOW_ARR.format(extra="cooldown: 5d"))
    accounts(ws, A1=50)
    assert ws.events("2026-03-01T09:00") == [("low-arr", "account:A1", "enter", 1)]
    accounts(ws, A1=500)
    assert ws.events("2026-03-02T09:00") == [("low-arr", "account:A1", "resolve", 1)]
    accounts(ws, A1=50)
    assert ws.events("2026-03-03T09:00") == []           # inside cooldown: not entered, reconsidered later
    explain = ws.cli("explain", "A1", "--now", "2026-03-03T09:00", "--format", "json").stdout
    assert '"verdict": "cooldown"' in explain
    assert ws.events("2026-03-07T08:59") == []
    assert ws.events("2026-03-07T09:00") == [("low-arr", "account:A1", "enter", 2)]


def test_max_episodes(ws: Workspace) -> None:
    ws.playbook("low-arr", LOW_ARR.format(extra="max_episodes: 1"))
    accounts(ws, A1=50)
    assert ws.events("2026-03-01T09:00") == [("low-arr", "account:A1", "enter", 1)]
    accounts(ws, A1=500)
    assert ws.events("2026-03-02T09:00") == [("low-arr", "account:A1", "resolve", 1)]
    accounts(ws, A1=50)
    assert ws.events("2026-03-03T09:00") == []
    assert ws.events("2026-06-03T09:00") == []
    explain = ws.cli("explain", "A1", "--now", "2026-06-03T09:00", "--format", "json").stdout
    assert '"verdict": "episodes_used_up"' in explain


def test_removed_account_resolves(ws: Workspace) -> None:
    ws.playbook("low-arr", LOW_ARR.format(extra=""))
    accounts(ws, A1=50, A2=60)
    assert len(ws.events("2026-03-01T09:00")) == 2
    accounts(ws, A2=60)                                  # A1 absent from the snapshot -> removed
    assert ws.events("2026-03-02T09:00") == [("low-arr", "account:A1", "resolve", 1)]


def test_empty_values_never_match(ws: Workspace) -> None:
    ws.playbook("p", """
        id: p
        name: P
        activation: fire
        trigger:
          when: account.nps < 5 or not (account.nps >= 5)
        actions:
          - slack: {channel: "#x", text: hi}
        """)
    ws.playbook("q", """
        id: q
        name: Q
        activation: fire
        trigger:
          when: account.nps is none and (account.nps > 1 or true)
        actions:
          - slack: {channel: "#x", text: hi}
        """)
    ws.data("accounts", [{"id": "A1", "name": "a", "nps": None}, {"id": "A2", "name": "b", "nps": 3},
                         {"id": "A3", "name": "c", "nps": 9}])
    ws.sync()
    ev = ws.events("2026-03-01T09:00")
    assert sorted(ev) == [("p", "account:A2", "enter", 1), ("q", "account:A1", "enter", 1)]


def test_metric_window_edges(ws: Workspace) -> None:
    ws.playbook("busy", """
        id: busy
        name: Busy
        activation: fire
        trigger:
          when: metric('logins', 7, 'sum') >= 10
        actions:
          - slack: {channel: "#x", text: "{{ account.name }}"}
        """)
    today = date(2026, 3, 10)
    ws.data("accounts", [{"id": "IN", "name": "in"}, {"id": "OUT", "name": "out"}])
    ws.data("usage", [
        {"account_id": "IN", "metric": "logins", "day": (today - timedelta(days=6)).isoformat(), "value": 10},
        {"account_id": "OUT", "metric": "logins", "day": (today - timedelta(days=7)).isoformat(), "value": 10},
        {"account_id": "OUT", "metric": "logins", "day": (today + timedelta(days=1)).isoformat(), "value": 10},
    ])
    ws.sync()
    assert ws.events("2026-03-10T23:59") == [("busy", "account:IN", "enter", 1)]


def test_dry_run_changes_nothing(ws: Workspace) -> None:
    ws.playbook("low-arr", LOW_ARR.format(extra=""))
    accounts(ws, A1=50)
    dry = ws.run("2026-03-01T09:00", "--dry-run")
    assert [(e["subject"], e["event"]) for e in dry["events"]] == [("account:A1", "enter")]
    assert ws.run("2026-03-01T09:00", "--dry-run") == dry
    assert '"events": []' in ws.cli("history", "--format", "json").stdout
    assert ws.events("2026-03-01T09:00") == [("low-arr", "account:A1", "enter", 1)]


def test_contact_and_goal_subjects(ws: Workspace) -> None:
    ws.playbook("welcome", """
        id: welcome
        name: Welcome
        subject: contact
        activation: fire
        trigger:
          when: days_since(contact.created_at) <= 3
        max_episodes: 1
        actions:
          - email: {to: contact, subject: "Welcome {{ contact.name }}", body: "Hello from {{ account.name }}"}
        """)
    ws.playbook("goal-done", """
        id: goal-done
        name: Goal done
        subject: goal
        activation: fire
        trigger:
          goal_achieved:
        actions:
          - email: {to: {role: champion}, subject: "You reached {{ goal.name }}", body: "Hi {{ contact.name }}"}
        """)
    ws.data("accounts", [{"id": "A1", "name": "Acme"}])
    ws.data("contacts", [
        {"id": "C1", "account_id": "A1", "email": "new@acme.example", "name": "Nina", "role": "champion",
         "created_at": "2026-03-08T10:00:00", "unsubscribed": "false"},
        {"id": "C2", "account_id": "A1", "email": "old@acme.example", "name": "Olaf", "role": "champion",
         "created_at": "2025-01-01T10:00:00", "unsubscribed": "true"},
    ])
    ws.data("goals", [
        {"id": "G1", "account_id": "A1", "name": "Adoption", "direction": "increase", "target": 10, "current": 12},
        {"id": "G2", "account_id": "A1", "name": "Tickets", "direction": "decrease", "target": 10, "current": 12},
        {"id": "G3", "account_id": "A1", "name": "Rollout", "target": 10, "current": 2, "status": "achieved"},
    ])
    ws.sync()
    out = ws.run("2026-03-10T09:00")
    got = [(e["playbook"], e["subject"], e["event"]) for e in out["events"]]
    assert sorted(got) == [("goal-done", "goal:G1", "enter"), ("goal-done", "goal:G3", "enter"),
                           ("welcome", "contact:C1", "enter")]
    welcome = next(e for e in out["events"] if e["playbook"] == "welcome")
    assert welcome["actions"] == [{"kind": "email", "to": ["new@acme.example"], "subject": "Welcome Nina"}]
    goal = next(e for e in out["events"] if e["subject"] == "goal:G1")
    assert goal["actions"] == [{"kind": "email", "to": ["new@acme.example"], "subject": "You reached Adoption"}]
    emails = sorted((ws.root / "outbox" / "email").glob("*.eml"))
    assert len(emails) == 3


def test_goal_achieved_with_a_name_glob(ws: Workspace) -> None:
    ws.playbook("adoption-done", """
        id: adoption-done
        name: Adoption goals reached
        subject: goal
        activation: fire
        trigger:
          goal_achieved: {name: "Adoption*"}
        actions:
          - slack: {channel: "#wins", text: "{{ account.name }}: {{ goal.name }}"}
        """)
    ws.data("accounts", [{"id": "A1", "name": "Acme"}])
    ws.data("goals", [
        {"id": "G1", "account_id": "A1", "name": "Adoption 50%", "target": 10, "current": 12},
        {"id": "G2", "account_id": "A1", "name": "adoption lower-case", "target": 10, "current": 12},
        {"id": "G3", "account_id": "A1", "name": "Adoption_100% [x]", "status": "achieved"},
        {"id": "G4", "account_id": "A1", "name": "Rollout", "target": 10, "current": 12},
    ])
    ws.sync()
    assert sorted(ws.events("2026-03-10T09:00")) == [("adoption-done", "goal:G1", "enter", 1),
                                                     ("adoption-done", "goal:G3", "enter", 1)]
    explain = ws.cli("explain", "G2", "--now", "2026-03-10T09:00", "--format", "json").stdout
    assert '"verdict": "not_matching"' in explain


TWO_TASKS = """
id: low-arr
name: Low ARR
repeat: 1d
activation: fire
trigger:
  when: account.arr < 100
actions:
  - task: {title: "Call {{ account.name }}", assignee: csm@example.com}
  - task: {title: "Note {{ account.name }}", assignee: csm@example.com, close_on_resolve: false}
"""


def test_resolve_cancels_undelivered_tasks_and_closes_delivered_ones(ws: Workspace) -> None:
    ws.playbook("low-arr", TWO_TASKS)
    accounts(ws, A1=50, A2=50)
    ws.run("2026-03-02T09:00")                            # firing 1 of both episodes: delivered (tasks created)
    ws.run("2026-03-03T09:00", "--no-dispatch")           # firing 2 (repeat): planned, not delivered
    accounts(ws, A1=150, A2=50)
    out = ws.run("2026-03-04T09:00", "--no-dispatch")
    assert [(e["subject"], e["event"]) for e in out["events"]] == [("account:A1", "resolve"), ("account:A2", "repeat")]
    rows = {r["dedup_key"]: r for r in ws.outbox_rows()}
    # the undelivered `Call` task of A1's second firing is cancelled; the `Note` task (close_on_resolve: false)
    # and A2's tasks (still in its episode) stay pending
    assert rows["low-arr/account:A1/1/2/0"]["status"] == "cancelled"
    assert rows["low-arr/account:A1/1/2/0"]["last_error"] == "episode resolved before delivery"
    assert rows["low-arr/account:A1/1/2/1"]["status"] == "pending"
    assert {rows[f"low-arr/account:A2/1/{f}/{i}"]["status"] for f in (2, 3) for i in (0, 1)} == {"pending"}
    # the `Call` task already created by firing 1 gets a close action; the `Note` task does not
    closes = [r for r in rows.values() if r["kind"] == "task_close"]
    assert [(r["subject_id"], r["payload"]["task_key"]) for r in closes] == [("A1", "low-arr/account:A1/1/1/0")]
