"""`playbook validate` and the synced data: without `metrics:`, a metric no synced usage row has is a warning
(stderr, or the JSON's "warnings"; exit 0), read from the database without creating or migrating it. With
`metrics:`, an undeclared metric is an error instead, and the database is not read."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Workspace

USAGE = """
id: usage
name: Usage
trigger:
  low_usage: {metric: api_call, days: 7, below: 3}
where:
  - metric('logins', 7) >= 1 and metric_change("seats_used") < 0
actions:
  - slack: {channel: "#cs", text: "{{ account.name }}"}
"""
RENEWAL = """
id: renewal
name: Renewal
trigger:
  when: account.arr > 1 and metric('active_users') > 0
actions:
  - slack: {channel: "#cs", text: "{{ account.name }}"}
"""


SYNCED = 'defaults: {sync_schedule: "0 * * * *"}\n'      # `start` syncs: no warning about that


def workspace(ws: Workspace) -> Workspace:
    ws.configure(SYNCED)
    ws.playbook("usage", USAGE)
    ws.playbook("renewal", RENEWAL)
    ws.data("accounts", [{"id": "A1", "name": "Acme", "arr": 10}])
    ws.data("usage", [{"account_id": "A1", "metric": m, "day": "2026-03-01", "value": 1}
                      for m in ("logins", "active_users", "api_calls")])
    return ws


def test_metrics_no_synced_row_has_are_warnings_once_data_is_synced(ws: Workspace) -> None:
    workspace(ws)
    before = ws.cli("validate")
    assert before.stderr == "" and "2 of 2 playbook(s) valid" in before.stdout
    if ws.database.startswith("sqlite"):
        assert not Path(ws.database[len("sqlite:///"):]).exists()      # validate never creates the database
    ws.sync()
    after = ws.cli("validate")
    assert after.stderr.splitlines() == [
        "playbooks/usage.yaml:4:23: warning: no synced usage row has the metric 'api_call' "
        "(did you mean 'api_calls'?)",
        "playbooks/usage.yaml:6:48: warning: no synced usage row has the metric 'seats_used' "
        "(synced metrics: active_users, api_calls, logins)"]
    assert "2 of 2 playbook(s) valid" in after.stdout
    report = json.loads(ws.cli("validate", "--format", "json").stdout)
    assert report["errors"] == [] and [(w["line"], w["col"], w["hint"]) for w in report["warnings"]] == [
        (4, 23, "did you mean 'api_calls'?"), (6, 48, "synced metrics: active_users, api_calls, logins")]


def test_without_usage_rows_there_is_nothing_to_warn_about(ws: Workspace) -> None:
    workspace(ws).data("usage", [])
    ws.sync()
    result = ws.cli("validate", "--format", "json")
    assert json.loads(result.stdout)["warnings"] == [] and result.stderr == ""


def test_declared_metrics_make_an_unknown_metric_an_error_not_a_warning(ws_sqlite: Workspace) -> None:
    ws = workspace(ws_sqlite)
    ws.sync()
    ws.configure(SYNCED + "metrics: [logins, active_users, api_calls]\n")
    result = ws.cli("validate", expect=1)
    assert result.stderr == ""
    assert result.stdout.splitlines()[:2] == [
        "playbooks/usage.yaml:4:23: 'api_call' is not a declared metric (did you mean 'api_calls'?)",
        "playbooks/usage.yaml:6:48: 'seats_used' is not a declared metric "
        "(declared metrics: logins, active_users, api_calls)"]
