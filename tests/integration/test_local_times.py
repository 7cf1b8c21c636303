"""Every time the command line prints is in the config time zone with its offset: tables for people
(`2026-03-27 09:00 +01:00`) and ISO 8601 with the offset in --format json — on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from conftest import Workspace

LOW = """
id: low
name: Low
activation: fire
trigger: {when: account.arr < 100}
actions:
  - slack: {channel: "#cs", text: "{{ account.name }} is small"}
  - task: {title: "Look at {{ account.name }}", assignee: "{{ account.csm_email }}", due_in: 3d}
"""
LOCAL = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} [+-]\d{2}:\d{2}")


def paris(tmp_path: Path, db_url: str) -> Workspace:
    """A Paris workspace whose one account entered `low` on 2026-03-27 09:00 (+01:00); its task is due three
    days later, after the change to summer time (+02:00)."""
    ws = Workspace(tmp_path / "ws", db_url, timezone="Europe/Paris")
    ws.playbook("low", LOW)
    ws.data("accounts", [{"id": "A1", "name": "Acme", "arr": 50, "csm_email": "csm@example.com"}])
    ws.sync()
    ws.cli("run", "--now", "2026-03-27T09:00")
    return ws


def utc(text: str) -> datetime:
    """An ISO string with an offset, as the store keeps instants (naive UTC)."""
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, f"{text} has no offset"
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def test_history_and_tasks_show_the_config_zone_with_the_offset_of_each_instant(tmp_path: Path,
                                                                                  db_url: str) -> None:
    ws = paris(tmp_path, db_url)
    history = ws.cli("history").stdout
    assert "2026-03-27 09:00 +01:00" in history and "(UTC)" not in history
    [event] = json.loads(ws.cli("history", "--format", "json").stdout)["events"]
    assert event["at"] == "2026-03-27T09:00:00+01:00" and event["event"] == "enter"
    tasks = ws.cli("tasks").stdout
    assert "2026-03-30 10:00 +02:00" in tasks and "(UTC)" not in tasks      # 72 hours later, in summer time
    [task] = json.loads(ws.cli("tasks", "--format", "json").stdout)["tasks"]
    assert task["due_at"] == "2026-03-30T10:00:00+02:00"
    assert utc(task["created_at"]) <= datetime.now(timezone.utc).replace(tzinfo=None)
    assert set(task) >= {"id", "title", "status", "due_at", "created_at", "closed_at", "note", "snoozed_until"}


def test_attempts_outbox_and_suppressions_show_local_times(tmp_path: Path, db_url: str) -> None:
    ws = paris(tmp_path, db_url)
    rows = {r["id"]: r for r in ws.outbox_rows()}
    attempts = ws.cli("history", "--attempts").stdout
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} \+0[12]:00", attempts) and "(UTC)" not in attempts
    for attempt in json.loads(ws.cli("history", "--attempts", "--format", "json").stdout)["attempts"]:
        assert utc(attempt["at"]) >= rows[attempt["outbox_id"]]["created_at"]
    listed = json.loads(ws.cli("outbox", "list", "--format", "json").stdout)["actions"]
    for action in listed:
        row = rows[action["id"]]
        assert utc(action["created_at"]) == row["created_at"] and utc(action["not_before"]) == row["not_before"]
        assert "payload" not in action
    table = ws.cli("outbox", "list").stdout
    assert "created" in table and "due" in table and len(LOCAL.findall(table)) == len(rows)
    ws.cli("unsubscribe", "c@acme.example")
    suppressed = ws.cli("unsubscribe", "--list").stdout
    assert "since" in suppressed and "(UTC)" not in suppressed and LOCAL.search(suppressed)
    [entry] = json.loads(ws.cli("unsubscribe", "--list", "--format", "json").stdout)["suppressed"]
    assert entry["email"] == "c@acme.example" and utc(entry["at"])


def test_a_pending_action_shows_when_it_is_due(tmp_path: Path, db_url: str) -> None:
    ws = Workspace(tmp_path / "ws", db_url, timezone="Asia/Tokyo")
    ws.playbook("low", LOW)
    ws.data("accounts", [{"id": "A1", "name": "Acme", "arr": 50}])
    ws.sync()
    ws.cli("run", "--now", "2026-03-02T09:00", "--no-dispatch")
    table = ws.cli("outbox", "list").stdout
    assert len(LOCAL.findall(table)) == 4 and all(t.endswith("+09:00") for t in LOCAL.findall(table))


def test_status_shows_the_last_syncs_and_runs_with_their_offset(tmp_path: Path, db_url: str) -> None:
    ws = paris(tmp_path, db_url)
    doc = json.loads(ws.cli("status", "--format", "json").stdout)
    assert doc["synced"] and all(utc(v) for v in doc["synced"].values())
    assert utc(doc["playbooks"][0]["last_run"]) and utc(doc["playbooks"][0]["next_run"])
    table = ws.cli("status").stdout
    assert len(LOCAL.findall(table)) >= 2 + len(doc["synced"])


def test_explain_shows_datetime_fields_in_the_config_zone(tmp_path: Path, db_url: str) -> None:
    ws = Workspace(tmp_path / "ws", db_url, timezone="Asia/Tokyo")
    ws.playbook("old", "id: old\nname: Old\ntrigger: {when: \"account.created_at < '2026-01-01'\"}\n"
                       "actions:\n  - slack: {channel: '#cs', text: old}\n")
    ws.data("accounts", [{"id": "A1", "name": "Acme", "arr": 50, "created_at": "2025-06-01T00:30:00Z"}])
    ws.sync()
    assert "2025-06-01 09:30:00 +09:00" in ws.cli("explain", "A1", "--now", "2026-03-02T09:00").stdout
    doc = json.loads(ws.cli("explain", "A1", "--now", "2026-03-02T09:00", "--format", "json").stdout)
    details = doc["playbooks"][0]["conditions"][0]["details"]
    assert {"expression": "account.created_at", "value": "2025-06-01T09:30:00+09:00"} in details
