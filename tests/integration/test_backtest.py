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



HOURLY = """
id: {id}
name: {id}
schedule: "0 * * * *"
activation: fire
trigger: {{when: "{when}"}}
actions:
  - slack: {{channel: "#cs", text: "{{{{ account.name }}}}"}}
"""


def test_hourly_runs_between_syncs_see_each_sync_and_each_moment(ws: Workspace) -> None:
    """Runs between two syncs read the same data (a backtest reuses what it found then): a change synced at
    13:30 is seen by the 14:00 run, and a condition on `now` is evaluated at every run."""
    ws.playbook("small", HOURLY.format(id="small", when="account.arr < 100"))
    ws.playbook("created", HOURLY.format(id="created", when="account.created_at < now"))
    rows = [{"id": "A1", "name": "Acme", "arr": 500, "created_at": "2026-11-02T10:30:00"},
            {"id": "A2", "name": "Beta", "arr": 500, "created_at": "2026-11-02T16:10:00"}]
    ws.data("accounts", rows)
    ws.cli("sync", "--as-of", "2026-11-02T00:00")
    ws.data("accounts", [{**rows[0], "arr": 10}, rows[1]])
    ws.cli("sync", "--as-of", "2026-11-02T13:30")
    doc = json.loads(ws.cli("backtest", "--from", "2026-11-02", "--to", "2026-11-02", "--format", "json").stdout)
    assert doc["summary"]["runs"] == 24
    assert [(e["playbook"], e["subject"], e["at"]) for e in doc["events"] if e["event"] == "enter"] == [
        ("created", "account:A1", "2026-11-02T11:00:00+00:00"),
        ("small", "account:A1", "2026-11-02T14:00:00+00:00"),
        ("created", "account:A2", "2026-11-02T17:00:00+00:00")]


JOURNEY = """
id: onboard
name: Onboarding
schedule: "0 9 * * *"
activation: fire
trigger: {when: account.arr < 100}
exit_when: "account.arr >= 1000"
steps:
  - id: hello
    slack: {channel: "#cs", text: "{{ account.name }} joined"}
  - wait: 2d
  - id: tips
    email: {to: {role: champion}, subject: "Tips for {{ account.name }}", body: "arr {{ account.arr }}"}
  - wait: {until: "account.arr >= 50", timeout: 3d}
  - id: done
    slack: {channel: "#cs", text: "{{ account.name }} onboarded"}
on_resolve:
  - slack: {channel: "#cs", text: "{{ account.name }} journey over"}
"""


def journey_setup(ws: Workspace) -> None:
    ws.playbook("onboard", JOURNEY)
    ws.data("accounts", [{"id": "A1", "name": "Acme", "arr": 10, "csm_email": "csm@example.com"}])
    ws.data("contacts", [{"id": "C1", "account_id": "A1", "email": "c@acme.example", "name": "Chris",
                          "role": "champion", "unsubscribed": "false"}])
    ws.cli("sync", "--as-of", "2026-11-01")


def journey_events(ws: Workspace, start: str, end: str) -> list[dict]:
    doc = json.loads(ws.cli("backtest", "--from", start, "--to", end, "--format", "json").stdout)
    assert doc["summary"]["skipped"] == {}
    return doc["events"]


def test_a_journey_entered_in_the_period_is_reported_step_by_step(ws: Workspace) -> None:
    journey_setup(ws)
    events = journey_events(ws, "2026-11-02", "2026-11-09")
    # entered on the 2nd (hello, then a 2-day wait), tips on the 4th, the `until` never holds: its 3-day timeout
    # ends it on the 7th, when the last step runs and the journey completes (on_resolve); a run lists its events
    # by subject and event name, as `playbook run` does
    assert [(e["at"], e["event"], e["journey"].get("steps"), e["journey"].get("at") or e["journey"].get("outcome"))
            for e in events] == [
        ("2026-11-02T09:00:00+00:00", "enter", ["hello"], "after-hello"),
        ("2026-11-04T09:00:00+00:00", "step", ["tips"], "after-tips"),
        ("2026-11-07T09:00:00+00:00", "resolve", None, "completed"),
        ("2026-11-07T09:00:00+00:00", "step", ["done"], None)]
    assert events[0]["journey"]["due"] == "2026-11-04T09:00:00+00:00"
    assert [[a.get("text") or a.get("subject") for a in e["actions"]] for e in events] == [
        ["Acme joined"], ["Tips for Acme"], ["Acme journey over"], ["Acme onboarded"]]
    assert events[1]["actions"][0]["to"] == ["c@acme.example"]
    assert ws.outbox_rows() == []
    table = ws.cli("backtest", "--from", "2026-11-02", "--to", "2026-11-09").stdout
    assert "step" in table and "not replayed" not in table


def test_an_exit_cancels_the_step_actions_not_yet_sent(ws: Workspace) -> None:
    ws.configure("""
        contact_policy:
          quiet_hours: {start: "19:00", end: "09:00"}
          business_days: {weekdays: [mon, tue, wed, thu, fri]}
        """)
    journey_setup(ws)
    # the tips email is planned on Saturday the 7th, held for Monday 09:00 (business days); Sunday's sync makes
    # the account big: the run at 09:00 on Sunday exits the journey before the email went out
    ws.data("accounts", [{"id": "A1", "name": "Acme", "arr": 5000, "csm_email": "csm@example.com"}])
    ws.cli("sync", "--as-of", "2026-11-08T06:00")
    events = journey_events(ws, "2026-11-05", "2026-11-08")
    assert [(e["at"], e["event"]) for e in events] == [
        ("2026-11-05T09:00:00+00:00", "enter"), ("2026-11-07T09:00:00+00:00", "step"),
        ("2026-11-08T09:00:00+00:00", "resolve")]
    assert events[1]["actions"][0]["send_at"] == "2026-11-09T09:00:00+00:00"
    exit_ = events[2]
    assert exit_["journey"] == {"outcome": "exited", "reason": "exit_when holds: account.arr >= 1000"}
    assert exit_["cancelled"] == [{"step": "tips", "kind": "email", "contact": "C1",
                                   "send_at": "2026-11-09T09:00:00+00:00"}]
    assert "cancelled" not in events[1]
    doc = json.loads(ws.cli("backtest", "--from", "2026-11-05", "--to", "2026-11-08", "--format", "json").stdout)
    assert doc["summary"]["playbooks"]["onboard"]["cancelled:email"] == 1
    # entered on Wednesday the 4th, its tips go out on Friday at 09:00: nothing left to cancel at the exit
    late = journey_events(ws, "2026-11-04", "2026-11-08")
    assert [(e["at"][:10], e["event"]) for e in late] == [
        ("2026-11-04", "enter"), ("2026-11-06", "step"), ("2026-11-08", "resolve")]
    assert late[1]["actions"][0]["send_at"] == "2026-11-06T09:00:00+00:00" and "cancelled" not in late[2]


def test_a_journey_without_a_schedule_is_looked_at_every_15_minutes(ws: Workspace) -> None:
    journey_setup(ws)
    ws.playbook("onboard", JOURNEY.replace('schedule: "0 9 * * *"\n', ""))
    doc = json.loads(ws.cli("backtest", "--from", "2026-11-02", "--to", "2026-11-02", "--format", "json").stdout)
    assert doc["summary"]["runs"] == 96
    assert [(e["at"], e["event"]) for e in doc["events"]] == [("2026-11-02T00:00:00+00:00", "enter")]
    assert doc["events"][0]["journey"]["due"] == "2026-11-04T00:00:00+00:00"
