"""`playbook tasks` (list, done, snooze) on the built-in task list, through the real CLI and on the store — on
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import Db, Workspace
from engine.clock import wall_clock

LOW = """
id: low
name: Low
activation: fire
trigger: {{when: account.arr < 100}}
actions:
  - task: {{title: "Look at {{{{ account.name }}}}", assignee: "{{{{ account.csm_email }}}}", due_in: 3d{extra}}}
"""


def workspace(tmp_path: Path, db_url: str, extra: str = "") -> Workspace:
    """A Tokyo workspace where A1 and A2 have entered `low`, each with an open task (#1 and #2)."""
    ws = Workspace(tmp_path / "ws", db_url, timezone="Asia/Tokyo")
    ws.playbook("low", LOW.format(extra=extra))
    accounts(ws, A1=50, A2=50)
    ws.cli("run", "--now", "2026-03-02T09:00")
    return ws


def accounts(ws: Workspace, **arrs: float) -> None:
    ws.data("accounts", [{"id": k, "name": f"Acme {k}", "arr": v, "csm_email": "csm@example.com"}
                         for k, v in arrs.items()])
    ws.sync()


def listed(ws: Workspace, *args: str) -> dict[int, dict]:
    return {t["id"]: t for t in json.loads(ws.cli("tasks", *args, "--format", "json").stdout)["tasks"]}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc).replace(tzinfo=None)


def test_a_task_marked_done_keeps_its_note_and_a_resolve_leaves_it_alone(tmp_path: Path, db_url: str) -> None:
    ws = workspace(tmp_path, db_url)
    assert set(listed(ws)) == {1, 2} and listed(ws) == listed(ws, "list")
    before = wall_clock()
    assert ws.cli("tasks", "done", "1", "--note", "called them, renewal on track").stdout.strip() == "task #1 done"
    assert set(listed(ws)) == {2}
    done = listed(ws, "--all")[1]
    assert done["status"] == "done" and done["note"] == "called them, renewal on track"
    assert before - timedelta(seconds=1) <= utc(done["closed_at"]) <= wall_clock()
    table = ws.cli("tasks", "--all").stdout
    assert "called them" in table and "note" in table
    accounts(ws, A1=500, A2=500)                              # both episodes resolve
    assert [e["event"] for e in ws.run("2026-03-03T09:00")["events"]] == ["resolve", "resolve"]
    after = listed(ws, "--all")
    assert after[1] == done                                   # not closed, not reopened, same note and time
    assert after[2]["status"] == "closed"
    closes = [r["dedup_key"] for r in ws.outbox_rows() if r["kind"] == "task_close"]
    assert len(closes) == 1 and closes[0].startswith("low/account:A2/")


def test_done_refuses_unknown_closed_and_done_tasks(tmp_path: Path, db_url: str) -> None:
    ws = workspace(tmp_path, db_url)
    r = ws.cli("tasks", "done", "9", expect=1)
    assert r.stderr.strip() == "no task #9 (`playbook tasks --all` lists every task)"
    ws.cli("tasks", "done", "1")
    r = ws.cli("tasks", "done", "1", "--note", "again", expect=1)
    assert r.stderr.startswith("task #1 is not open: it was marked done (20") and "+09:00)" in r.stderr
    assert listed(ws, "--all")[1]["note"] is None
    accounts(ws, A1=500, A2=500)
    ws.run("2026-03-03T09:00")
    r = ws.cli("tasks", "snooze", "2", "--until", "3d", expect=1)
    assert r.stderr.startswith("task #2 is not open: it was closed when its episode resolved (")
    assert "Traceback" not in r.output


def test_a_crm_task_is_done_in_the_crm(tmp_path: Path, db_url: str) -> None:
    ws = Workspace(tmp_path / "ws", db_url)
    ws.configure("connectors:\n  hubspot: {sink: local}\n")
    ws.playbook("low", LOW.format(extra=", connector: hubspot"))
    accounts(ws, A1=50)
    ws.cli("run", "--now", "2026-03-02T09:00")
    assert listed(ws)[1]["connector"] == "hubspot"
    r = ws.cli("tasks", "done", "1", expect=1)
    assert r.stderr.strip() == ("task #1 is a hubspot task: mark it done in hubspot (`playbook tasks done` and "
                                "`snooze` change the built-in task list only)")
    r = ws.cli("tasks", "snooze", "1", "--until", "1d", expect=1)
    assert "task #1 is a hubspot task: snooze it in hubspot" in r.stderr
    assert listed(ws)[1]["status"] == "open" and listed(ws)[1]["snoozed_until"] is None


def test_a_snoozed_task_leaves_the_open_list_until_then(tmp_path: Path, db_url: str) -> None:
    ws = workspace(tmp_path, db_url)
    before = wall_clock()
    out = ws.cli("tasks", "snooze", "1", "--until", "3d").stdout
    assert out.startswith("task #1 snoozed until ") and out.strip().endswith("+09:00")
    assert set(listed(ws)) == {2}
    snoozed = listed(ws, "--all")[1]
    assert snoozed["status"] == "open"
    assert before + timedelta(days=3) <= utc(snoozed["snoozed_until"]) <= wall_clock() + timedelta(days=3)
    assert "snoozed until" in ws.cli("tasks", "--all").stdout
    assert "snoozed until" not in ws.cli("tasks").stdout
    ws.cli("tasks", "snooze", "2", "--until", "2099-12-10")             # no offset: the config zone
    assert listed(ws, "--all")[2]["snoozed_until"] == "2099-12-10T00:00:00+09:00"
    ws.cli("tasks", "snooze", "1", "--until", "2099-12-10T18:30+02:00")
    assert listed(ws, "--all")[1]["snoozed_until"] == "2099-12-11T01:30:00+09:00"
    assert listed(ws) == {}
    ws.cli("tasks", "done", "1")                                        # a snoozed task may be done
    assert listed(ws, "--all")[1]["status"] == "done"


@pytest.mark.parametrize(("until", "message"), [
    ("2020-01-01", r"--until: 2020-01-01 00:00 \+09:00 is in the past; give a later time"),
    ("0d", r"--until: \d{4}-\d\d-\d\d \d\d:\d\d \+09:00 is in the past; give a later time"),
    ("next week", r"--until: `next week` is neither a date-time nor a duration; write e.g. 2026-12-10, "
                  r"2026-12-10T09:00 or 3d"),
    ("9999w", r"--until: `9999w` is longer than a century; write a shorter duration"),
])
def test_snooze_needs_a_later_time(tmp_path: Path, db_url: str, until: str, message: str) -> None:
    ws = workspace(tmp_path, db_url)
    r = ws.cli("tasks", "snooze", "1", "--until", until, expect=1)
    assert re.fullmatch(message, r.stderr.strip()), r.stderr
    assert listed(ws)[1]["snoozed_until"] is None


def test_list_options_belong_to_the_list(ws_sqlite: Workspace) -> None:
    r = ws_sqlite.cli("tasks", "--all", "done", "1", expect=2)
    assert "--all, --assignee and --format belong to `tasks list`, not `tasks done`" in r.stderr
    assert ws_sqlite.cli("tasks", "done", expect=2).exit_code == 2
    assert json.loads(ws_sqlite.cli("tasks", "--assignee", "x@example.com", "--format", "json").stdout) == {
        "tasks": []}


def test_the_repository_hides_a_task_until_its_snooze_ends(db_url: str) -> None:
    db = Db(db_url)
    now = datetime(2026, 3, 2, 0, 0)
    try:
        with db.store.write() as tx:
            for n in (1, 2):
                tx.tasks.create(dict(dedup_key=f"p/account:A{n}/1/1/0", connector="builtin", external_id=None,
                                     playbook_id="p", subject_type="account", subject_id=f"A{n}", episode=1,
                                     title=f"T{n}", description=None, assignee=None, priority="normal",
                                     due_at=None, status="open", close_on_resolve=True, created_at=now,
                                     closed_at=None))
            assert tx.tasks.snooze(1, now + timedelta(days=1))
        with db.store.read() as tx:
            assert [t["id"] for t in tx.tasks.list(awake_at=now)] == [2]
            assert [t["id"] for t in tx.tasks.list(awake_at=now + timedelta(days=1))] == [1, 2]
            assert [t["id"] for t in tx.tasks.list()] == [1, 2]
        with db.store.write() as tx:
            assert tx.tasks.mark_done(1, now, "ok") and not tx.tasks.mark_done(1, now, "twice")
            assert not tx.tasks.snooze(1, now) and not tx.tasks.close("p/account:A1/1/1/0", now)
            assert tx.tasks.get(1)["note"] == "ok" and tx.tasks.get(3) is None
    finally:
        db.dispose()
