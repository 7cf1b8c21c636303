"""`playbook backtest` from the command line: tables, JSON with every event, activation at --from, bad periods."""

from __future__ import annotations

import json

from conftest import Workspace

PLAYBOOK = """
id: small
name: Small accounts
schedule: "0 9 * * mon-fri"
{extra}
trigger: {{when: account.arr < 100}}
repeat: 1w
actions:
  - slack: {{to: "{{{{ account.csm_email }}}}", text: "{{{{ account.name }}}} is small"}}
  - task: {{title: "Call {{{{ account.name }}}}", assignee: "{{{{ account.csm_email }}}}"}}
"""


def setup(ws: Workspace, extra: str = "") -> None:
    ws.playbook("small", PLAYBOOK.format(extra=extra))
    ws.data("accounts", [{"id": f"A{i}", "name": f"Acme {i}", "arr": 10 if i < 3 else 500,
                          "csm_email": f"csm{i % 2}@example.com"} for i in range(5)])
    ws.cli("sync", "--as-of", "2026-11-01")       # synced before the period the tests replay


def test_a_backtest_replays_the_schedule_and_changes_nothing(ws: Workspace) -> None:
    setup(ws, "activation: fire")
    before = ws.outbox_rows()
    result = ws.cli("backtest", "--from", "2026-11-02", "--to", "2026-11-15", "--format", "json")
    doc = json.loads(result.stdout)
    assert doc["from"] == "2026-11-02T00:00:00+00:00" and doc["to"] == "2026-11-16T00:00:00+00:00"
    # weekdays at 09:00: the first run fires for the three small accounts, a week later they repeat
    assert [(e["at"], e["subject"], e["event"]) for e in doc["events"]] == (
        [("2026-11-02T09:00:00+00:00", f"account:A{i}", "enter") for i in range(3)]
        + [("2026-11-09T09:00:00+00:00", f"account:A{i}", "repeat") for i in range(3)])
    assert [a["kind"] for a in doc["events"][0]["actions"]] == ["slack", "task"]
    assert doc["summary"]["runs"] == 10
    assert doc["summary"]["playbooks"]["small"] == {"enter": 3, "repeat": 3, "action:slack": 6, "action:task": 6}
    assert doc["summary"]["csms"]["csm0@example.com"]["enter"] == 2
    assert ws.outbox_rows() == before == []
    assert json.loads(ws.cli("history", "--format", "json").stdout)["events"] == []
    table = ws.cli("backtest", "--from", "2026-11-02", "--to", "2026-11-15").stdout
    assert "small" in table and "Nothing was written or delivered." in table and "csm1@example.com" in table


def test_activation_at_from_baselines_what_already_matches(ws: Workspace) -> None:
    setup(ws)                                      # activation: baseline, the default
    doc = json.loads(ws.cli("backtest", "--from", "2026-11-02", "--to", "2026-11-06", "--format", "json").stdout)
    assert {(e["event"], e["actions"] == []) for e in doc["events"]} == {("baseline", True)}
    assert len(doc["events"]) == 3 and doc["summary"]["playbooks"]["small"] == {"baseline": 3}


def test_bad_periods_and_playbooks_are_usage_errors(ws: Workspace) -> None:
    setup(ws)
    late = ws.cli("backtest", "--from", "2026-11-10", "--to", "2026-11-02", expect=2)
    assert "before --from" in late.output
    bad = ws.cli("backtest", "--from", "yesterday", "--to", "2026-11-02", expect=2)
    assert "not an ISO date" in bad.output
    unknown = ws.cli("backtest", "--from", "2026-11-01", "--to", "2026-11-02", "--playbook", "smal", expect=2)
    assert "did you mean `small`" in unknown.output


def test_a_period_before_the_first_sync_says_the_data_is_not_known_then(ws: Workspace) -> None:
    setup(ws, "activation: fire")                  # synced as of 2026-11-01 00:00 UTC
    early = ws.cli("backtest", "--from", "2026-10-20", "--to", "2026-11-03")
    assert "the data is known from 2026-11-01 00:00 +00:00 (its first sync)" in early.stderr
    assert "playbook sync --as-of" in early.stderr
    covered = ws.cli("backtest", "--from", "2026-11-02", "--to", "2026-11-03")
    assert "known from" not in covered.stderr
