"""The run-wide rail (issue 24): `defaults.max_total_actions_per_run` bounds the actions and task closures one run
plans across all its playbooks. A run over it plans nothing at all — no episode, no outbox row, no task closed —
says how many it would have planned and how to allow it, and a dry run shows the same."""

from __future__ import annotations

import json
import logging

import pytest

from conftest import Workspace

EACH = """
id: {id}
name: {id}
activation: fire
max_actions_per_run: 50
trigger: {{when: account.arr < 100}}
actions:
  - slack: {{channel: "#cs", text: "{{{{ account.name }}}}"}}
"""
TASKS = """
id: watch
name: Watch
activation: fire
trigger: {when: account.arr < 100}
actions:
  - task: {title: "Look at {{ account.name }}", assignee: "csm@example.com", due_in: 3d}
on_resolve:
  - slack: {channel: "#cs", text: "{{ account.name }} is fine again"}
"""
NOW, LATER = "2026-03-02T09:00", "2026-03-03T09:00"


def accounts(ws: Workspace, n: int) -> None:
    ws.data("accounts", [{"id": f"A{i:03d}", "name": f"N{i}", "arr": 10} for i in range(n)])


def test_a_run_over_the_rail_plans_nothing_in_any_playbook(ws: Workspace, caplog: pytest.LogCaptureFixture) -> None:
    ws.configure("defaults: {max_total_actions_per_run: 50}\n")
    ws.playbook("one", EACH.format(id="one"))
    ws.playbook("two", EACH.format(id="two"))
    accounts(ws, 30)                                   # 30 each: under each playbook's own limit, 60 in all
    ws.sync()
    expected = ("run blocked: it would plan 60 actions and 0 task closures (one 30, two 30), more than "
                "defaults.max_total_actions_per_run (50); nothing was planned")
    dry = ws.cli("run", "--dry-run", "--now", NOW, "--format", "json")
    assert expected in dry.stderr and json.loads(dry.stdout)["events"] == []
    assert expected in json.loads(dry.stdout)["blocked"]
    with caplog.at_level(logging.ERROR, logger="playbook"):
        r = ws.cli("run", "--now", NOW)
    assert expected in r.stderr and "blocked by defaults.max_total_actions_per_run" in " ".join(r.stdout.split())
    assert any(getattr(x, "alert", None) == "max_total_actions_per_run" for x in caplog.records)
    assert ws.outbox_rows() == []
    assert json.loads(ws.cli("history", "--format", "json").stdout)["events"] == []
    ws.configure("defaults: {max_total_actions_per_run: 60}\n")   # allowed: the same run goes through whole
    assert len(ws.events(NOW)) == 60 and len(ws.outbox_rows()) == 60


def test_task_closures_count_and_a_blocked_run_loses_nothing(ws: Workspace) -> None:
    ws.configure("defaults: {max_total_actions_per_run: 40}\n")
    ws.playbook("watch", TASKS)
    accounts(ws, 30)
    ws.sync()
    assert len(ws.events(NOW)) == 30                   # 30 tasks, created by the run's dispatch
    accounts(ws, 0)
    ws.cli("sync", "--allow-removal")                  # every account really gone
    before = ws.outbox_rows()
    r = ws.cli("run", "--now", LATER)
    assert "it would plan 30 actions and 30 task closures (watch 60)" in r.stderr
    assert ws.outbox_rows() == before                  # no closure, no Slack message
    ws.configure("defaults: {max_total_actions_per_run: 60}\n")
    events = ws.events(LATER)                          # the blocked run lost nothing: all 30 resolve now
    assert len(events) == 30 and {e[2] for e in events} == {"resolve"}
    kinds = [row["kind"] for row in ws.outbox_rows()[: 60]]
    assert kinds.count("task_close") == 30 and kinds.count("slack") == 30
