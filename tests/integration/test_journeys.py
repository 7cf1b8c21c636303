"""Journeys (§14): the onboarding example driven day by day with `run --now`, across a weekend and a Japanese
public holiday (Monday 11 January 2027, Coming of Age Day)."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import Workspace

EXAMPLE = Path(__file__).parents[2] / "playbooks"
POLICY = """
contact_policy:
  quiet_hours: {start: "19:00", end: "09:00"}
  business_days: {holidays: JP}
"""
CREATED = "2027-01-08T09:30:00+09:00"          # a Friday


def onboarding(ws: Workspace, text: str | None = None) -> None:
    """The example journey (its segment spelt out: the test config has no tech_touch) and its templates."""
    text = text or (EXAMPLE / "onboarding-tech-touch.yaml").read_text()
    ws.playbook("onboarding-tech-touch", text.replace("segment('tech_touch')", "account.arr < 10000"))
    for path in (EXAMPLE / "templates").glob("onboarding-*.j2"):
        ws.template(path.name, path.read_text())


def accounts(ws: Workspace, rows: list[tuple[str, str, str]], usage: list[tuple[str, str, int]] = ()) -> None:
    """(id, zone, created_at) accounts, one admin each (in the account's zone), and logins per day."""
    ws.data("accounts", [{"id": a, "name": f"Acme {a}", "arr": 5000, "csm_email": "csm@example.com",
                          "created_at": created, "timezone": zone} for a, zone, created in rows])
    ws.data("contacts", [{"id": f"{a}-admin", "account_id": a, "email": f"admin@{a.lower()}.example",
                          "name": f"Admin {a}", "role": "admin"} for a, _, _ in rows])
    ws.data("usage", [{"account_id": a, "metric": "logins", "day": day, "value": n} for a, day, n in usage])
    ws.sync()


def run(ws: Workspace, now: str) -> dict[str, dict[str, Any]]:
    """One run at `now`: subject id -> {event: its JSON}; the same run again plans and shows nothing more."""
    def planned() -> int:          # closing a task is not one of the event's actions
        return sum(1 for r in ws.outbox_rows() if not r["kind"].endswith("_close"))
    before = planned()
    out: dict[str, dict[str, Any]] = {}
    for e in ws.run(now)["events"]:
        out.setdefault(e["subject"].split(":")[1], {})[e["event"]] = e
    assert ws.run(now)["events"] == []
    assert planned() - before == sum(len(e["actions"]) for s in out.values() for e in s.values())
    return out


def sends(event: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["kind"], a.get("send_at", "now")) for a in event["actions"]]


def rows_of(ws: Workspace, subject: str) -> dict[str, dict[str, Any]]:
    """The subject's outbox rows by step id (firing)."""
    return {r["firing"]: r for r in ws.outbox_rows() if r["subject_id"] == subject}


def test_onboarding_day_by_day_across_a_weekend_and_a_japanese_holiday(ws: Workspace) -> None:
    ws.timezone = "Asia/Tokyo"
    ws.configure(POLICY)
    onboarding(ws)
    tokyo, new_york = "Asia/Tokyo", "America/New_York"
    people = [("T1", tokyo, CREATED), ("N1", new_york, CREATED), ("E1", tokyo, CREATED), ("X1", tokyo, CREATED)]
    accounts(ws, people)

    # Friday, day 0: everyone enters and gets the welcome, in their own business hours
    day0 = run(ws, "2027-01-08T10:00")
    assert set(day0) == {"T1", "N1", "E1", "X1"}
    assert sends(day0["T1"]["enter"]) == [("email", "2027-01-08T10:00:00+09:00")]
    assert sends(day0["N1"]["enter"]) == [("email", "2027-01-08T09:00:00-05:00")]    # 20:00 on Thursday there
    assert day0["T1"]["enter"]["journey"] == {"steps": ["welcome"], "skipped": [], "at": "wait-tips",
                                              "due": "2027-01-11T10:00:00+09:00"}
    # Saturday and Sunday: nothing is due
    assert run(ws, "2027-01-09T10:00") == {} and run(ws, "2027-01-10T10:00") == {}

    # Monday 11th, day 3, a public holiday in Japan: E1 has logged in once on Saturday
    accounts(ws, people, usage=[("E1", "2027-01-09", 1)])
    day3 = run(ws, "2027-01-11T10:00")
    assert day3["T1"]["step"]["journey"]["steps"] == ["tips"]
    assert sends(day3["T1"]["step"]) == [("email", "2027-01-12T09:00:00+09:00")]      # after the holiday
    assert day3["T1"]["step"]["actions"][0]["deferred"].startswith("deferred: public holiday")
    assert sends(day3["N1"]["step"]) == [("email", "2027-01-12T09:00:00-05:00")]      # Sunday evening in New York
    assert day3["T1"]["step"]["journey"]["at"] == "wait-first-login"
    assert day3["T1"]["step"]["journey"]["due"] == "2027-01-15T10:00:00+09:00"         # the until's timeout
    # E1: tips skipped (`if` false); its first login already happened, so `wait until` goes on at once, and
    # the `else` branch runs in the same run: the journey completes
    assert day3["E1"]["step"]["journey"]["steps"] == ["nice-start"]
    assert day3["E1"]["step"]["journey"]["skipped"] == ["tips"]
    assert day3["E1"]["resolve"]["journey"] == {"outcome": "completed", "reason": "last step done"}

    # later that day X1 becomes active: the journey exits mid-wait and its tips, not sent yet, are cancelled
    accounts(ws, people, usage=[("E1", "2027-01-09", 1), ("X1", "2027-01-11", 6)])
    exited = run(ws, "2027-01-11T15:00")
    assert set(exited) == {"X1"}
    assert exited["X1"]["resolve"]["journey"]["outcome"] == "exited"
    assert "exit_when holds" in exited["X1"]["resolve"]["journey"]["reason"]
    assert (rows_of(ws, "X1")["tips"]["status"], rows_of(ws, "X1")["welcome"]["status"]) == ("cancelled", "sent")

    # Tuesday: N1 logs in for the first time; the `wait until` continues at the next run, the else branch
    usage = [("E1", "2027-01-09", 1), ("X1", "2027-01-11", 6), ("N1", "2027-01-12", 1)]
    accounts(ws, usage=usage, rows=people)
    day4 = run(ws, "2027-01-12T10:00")
    assert set(day4) == {"N1"}
    assert day4["N1"]["step"]["journey"]["steps"] == ["nice-start"]
    assert day4["N1"]["resolve"]["journey"]["outcome"] == "completed"
    assert rows_of(ws, "T1")["tips"]["status"] == "sent"                             # due at 09:00, sent now

    # Friday, day 7: T1 never logged in; the wait times out, the `then` branch alerts the CSM and waits two
    # business days (the weekend does not count) until 10:00
    day7 = run(ws, "2027-01-15T10:00")
    assert set(day7) == {"T1"}
    assert day7["T1"]["step"]["journey"] == {"steps": ["csm-alert"], "skipped": [], "at": "wait-call",
                                             "due": "2027-01-19T10:00:00+09:00"}
    assert sends(day7["T1"]["step"]) == [("slack", "now")]
    assert run(ws, "2027-01-18T10:00") == {}
    day11 = run(ws, "2027-01-19T10:00")
    assert day11["T1"]["step"]["journey"]["steps"] == ["csm-task"]
    assert day11["T1"]["resolve"]["journey"]["outcome"] == "completed"
    # a journey that completes leaves its task with the CSM
    tasks = json.loads(ws.cli("tasks", "list", "--format", "json").stdout)
    assert [t["title"] for t in tasks["tasks"]] == ["Call Acme T1: no logins yet"]
    # the dedup keys name the step
    assert rows_of(ws, "T1")["csm-task"]["dedup_key"] == "onboarding-tech-touch/account:T1/1/csm-task/0"


def test_editing_a_journey_in_flight_moves_subjects_by_step_id(ws: Workspace) -> None:
    ws.timezone = "Asia/Tokyo"
    ws.configure(POLICY)
    original = (EXAMPLE / "onboarding-tech-touch.yaml").read_text()
    onboarding(ws, original)
    accounts(ws, [("A", "Asia/Tokyo", CREATED)])
    run(ws, "2027-01-08T10:00")                                         # A: welcome, waits at wait-tips
    accounts(ws, [("A", "Asia/Tokyo", CREATED), ("B", "Asia/Tokyo", "2027-01-11T09:00:00+09:00")])
    day3 = run(ws, "2027-01-11T10:00")
    assert day3["A"]["step"]["journey"]["at"] == "wait-first-login"     # tips planned for the 12th (holiday)
    assert day3["B"]["enter"]["journey"]["at"] == "wait-tips"

    # the edit: the `wait until` step is removed, a `checklist` step is added after the first wait
    until = "  - id: wait-first-login\n    wait: {until: \"metric('logins', 7, 'sum') > 0\", timeout: 4d}\n"
    assert until in original
    edited = original.replace(until, "").replace(
        "  - id: wait-tips\n    wait: 3d\n",
        "  - id: wait-tips\n    wait: 3d\n  - id: checklist\n"
        "    email: {to: {role: admin}, subject: \"Your checklist\", body: \"Three steps to value\"}\n")
    onboarding(ws, edited)
    # validate says what the edit would move, from the journeys in the database
    moves = json.loads(ws.cli("validate", "--format", "json").stdout)["journey_moves"]
    assert moves == [{"playbook": "onboarding-tech-touch", "step": "wait-first-login", "subjects": 1,
                      "effect": "exited (step removed)"}]
    listed = json.loads(ws.cli("journeys", "--format", "json").stdout)["journeys"][0]
    assert {s["step"]: s["subjects"] for s in listed["steps"]} == {"wait-tips": 1, "wait-call": 0,
                                                                   "wait-first-login": 1}

    # A waits at a step that no longer exists: its journey exits, and its tips, not sent yet, are cancelled
    after = run(ws, "2027-01-11T11:00")
    assert set(after) == {"A"}
    assert after["A"]["resolve"]["journey"] == {
        "outcome": "exited", "reason": "step removed: `wait-first-login` is no longer in the playbook"}
    assert rows_of(ws, "A")["tips"]["status"] == "cancelled"
    # B waits at wait-tips, which is still there: it continues under the new definition, the new step included
    later = run(ws, "2027-01-14T10:00")
    assert later["B"]["step"]["journey"] == {"steps": ["checklist", "tips", "csm-alert"], "skipped": [],
                                             "at": "wait-call", "due": "2027-01-18T10:00:00+09:00"}
    explained = json.loads(ws.cli("explain", "B", "--playbook", "onboarding-tech-touch", "--now",
                                  "2027-01-15T10:00", "--format", "json").stdout)["playbooks"][0]["journey"]
    assert (explained["step"], explained["next_due"]) == ("wait-call", "2027-01-18T10:00:00+09:00")
    assert explained["reason"].startswith("waits at `wait-call` (2 business days at 10:00)")


SHORT = """
id: short
name: Short journey
activation: fire
trigger: {when: "account.arr < 100"}
exit_when: "account.arr > 1000"
cooldown: 30d
steps:
  - id: call
    task: {title: "Call {{ account.name }}", assignee: csm@example.com, due_in: 2d}
  - id: wait
    wait: 1d
  - id: bye
    slack: {channel: "#cs", text: "{{ account.name }}: done"}
on_resolve:
  - slack: {channel: "#cs", text: "{{ account.name }}: journey over"}
"""


def test_an_exit_closes_the_journeys_tasks_and_runs_on_resolve_and_a_new_journey_needs_a_new_entry(
        ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    ws.playbook("short", SHORT)
    ws.data("accounts", [{"id": "A", "name": "Acme", "arr": 50}, {"id": "B", "name": "Bolt", "arr": 50}])
    ws.sync()
    run(ws, "2027-02-01T10:00")
    assert [t["title"] for t in json.loads(ws.cli("tasks", "list", "--format", "json").stdout)["tasks"]] == [
        "Call Acme", "Call Bolt"]
    ws.data("accounts", [{"id": "A", "name": "Acme", "arr": 5000}, {"id": "B", "name": "Bolt", "arr": 50}])
    ws.sync()
    exited = run(ws, "2027-02-01T12:00")              # A reached the goal: exits, its task is closed
    assert exited["A"]["resolve"]["journey"]["outcome"] == "exited"
    assert [a["text"] for a in exited["A"]["resolve"]["actions"]] == ["Acme: journey over"]
    assert [t["title"] for t in json.loads(ws.cli("tasks", "list", "--format", "json").stdout)["tasks"]] == [
        "Call Bolt"]
    done = run(ws, "2027-02-02T10:00")                # B completes: its task stays with the CSM
    assert done["B"]["resolve"]["journey"]["outcome"] == "completed"
    assert [t["title"] for t in json.loads(ws.cli("tasks", "list", "--format", "json").stdout)["tasks"]] == [
        "Call Bolt"]
    # B still matches the trigger: no new journey until it stops matching and matches again after the cooldown
    assert run(ws, "2027-03-10T10:00") == {}
    ws.data("accounts", [{"id": "A", "name": "Acme", "arr": 5000}, {"id": "B", "name": "Bolt", "arr": 500}])
    ws.sync()
    assert run(ws, "2027-03-10T11:00") == {}
    ws.data("accounts", [{"id": "A", "name": "Acme", "arr": 5000}, {"id": "B", "name": "Bolt", "arr": 50}])
    ws.sync()
    again = run(ws, "2027-03-10T12:00")
    assert (again["B"]["enter"]["episode"], again["B"]["enter"]["journey"]["steps"]) == (2, ["call"])


def test_japanese_admins_get_the_japanese_onboarding_templates(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    ws.timezone = "Asia/Tokyo"
    onboarding(ws)
    ws.data("accounts", [{"id": "J", "name": "さくら技研", "arr": 5000, "created_at": CREATED, "timezone": "Asia/Tokyo"}])
    (ws.root / "data" / "contacts.csv").write_text(
        "id,account_id,email,name,role,locale\n"
        "J1,J,ken@sakura.example,佐藤 健,admin,ja\nJ2,J,ann@sakura.example,Ann Lee,admin,\n", encoding="utf-8")
    ws.sync()
    ws.run("2027-01-08T10:00")
    sent = {}
    for path in (ws.root / "outbox" / "email").glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        sent[str(message["To"])] = str(message["Subject"])
    assert sent == {"ken@sakura.example": "さくら技研 のワークスペースへようこそ",
                    "ann@sakura.example": "Welcome to your さくら技研 workspace"}


def test_exit_on_unmatch_ends_the_journey_when_the_trigger_stops_matching(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    first = ws.playbook("short", SHORT.replace("cooldown: 30d", "exit_on_unmatch: true"))
    ws.data("accounts", [{"id": "A", "name": "Acme", "arr": 50}])
    ws.sync()
    run(ws, "2027-02-01T10:00")
    ws.data("accounts", [{"id": "A", "name": "Acme", "arr": 500}])       # no longer matches, goal not reached
    ws.sync()
    ended = run(ws, "2027-02-01T11:00")
    assert ended["A"]["resolve"]["journey"] == {
        "outcome": "exited", "reason": "the trigger no longer matches (exit_on_unmatch)"}
    assert json.loads(ws.cli("tasks", "list", "--format", "json").stdout)["tasks"] == []
    # without exit_on_unmatch the same change leaves the journey going
    first.unlink()
    ws.playbook("short2", SHORT.replace("id: short", "id: short2"))
    ws.data("accounts", [{"id": "A", "name": "Acme", "arr": 50}])
    ws.sync()
    assert run(ws, "2027-02-02T10:00")["A"]["enter"]["playbook"] == "short2"
    ws.data("accounts", [{"id": "A", "name": "Acme", "arr": 500}])
    ws.sync()
    assert run(ws, "2027-02-02T11:00") == {}
    assert run(ws, "2027-02-03T10:00")["A"]["resolve"]["journey"]["outcome"] == "completed"


def test_a_journey_planning_more_than_max_actions_per_run_plans_nothing(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    ws.playbook("short", SHORT.replace("cooldown: 30d", "max_actions_per_run: 1"))
    ws.data("accounts", [{"id": "A", "name": "Acme", "arr": 50}, {"id": "B", "name": "Bolt", "arr": 50}])
    ws.sync()
    result = ws.cli("run", "--now", "2027-02-01T10:00", "--format", "json")
    assert json.loads(result.stdout)["events"] == []
    assert "more than max_actions_per_run (1)" in result.stderr
    assert ws.outbox_rows() == []
    assert json.loads(ws.cli("journeys", "--format", "json").stdout)["journeys"][0]["active"] == 0
