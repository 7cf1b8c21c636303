"""Switching a playbook on (§12): the subjects that already match are baselined, not fired (unless the playbook
says `activation: fire`); a switch-on can be limited to N enters per run; dry runs show its size first."""

from __future__ import annotations

import json

from conftest import Workspace
from engine.app import App

SUNDAY = "2026-12-06T10:23"          # a Sunday, the morning a team first runs the engine
PLAYBOOK = """
id: {id}
name: {id}
{extra}
trigger: {{when: account.arr < 100}}
actions:
  - slack: {{channel: "#cs", text: "{{{{ account.name }}}} is small"}}
  - task: {{title: "Call {{{{ account.name }}}}", assignee: "csm@example.com"}}
on_resolve:
  - slack: {{channel: "#cs", text: "{{{{ account.name }}}} grew"}}
"""


def accounts(ws: Workspace, small: range, big: range = range(0)) -> None:
    ws.data("accounts", [{"id": f"A{i:03}", "name": f"Acme {i}", "arr": 10} for i in small]
            + [{"id": f"A{i:03}", "name": f"Acme {i}", "arr": 500} for i in big])
    ws.sync()


def test_switching_on_baselines_what_already_matches_and_fire_backfills(ws: Workspace) -> None:
    ws.playbook("quiet", PLAYBOOK.format(id="quiet", extra=""))                       # baseline: the default
    ws.playbook("loud", PLAYBOOK.format(id="loud", extra="activation: fire"))
    accounts(ws, range(5))
    dry = ws.run(SUNDAY, "--dry-run")
    assert sorted((e["playbook"], e["event"]) for e in dry["events"]) == sorted(
        [("quiet", "baseline")] * 5 + [("loud", "enter")] * 5)      # the size of the switch-on, before it happens
    assert all(e["actions"] == [] for e in dry["events"] if e["event"] == "baseline")
    real = ws.run(SUNDAY)
    assert sorted({e["playbook"] for e in real["events"]}) == ["loud"]            # baselines are not events
    planned = ws.outbox_rows()
    assert {r["playbook_id"] for r in planned} == {"loud"} and len(planned) == 10
    assert ws.run(SUNDAY)["events"] == []                                         # the same run again: nothing
    history = json.loads(ws.cli("history", "--format", "json").stdout)["events"]
    assert {e["playbook_id"] for e in history} == {"loud"}
    explain = json.loads(ws.cli("explain", "A000", "--playbook", "quiet", "--format", "json").stdout)
    assert explain["playbooks"][0]["verdict"] == "baselined"


def test_a_baselined_subject_resolves_silently_then_enters_normally(ws: Workspace) -> None:
    ws.playbook("quiet", PLAYBOOK.format(id="quiet", extra="repeat: 1d"))
    accounts(ws, range(2))
    assert ws.run("2026-12-07T09:00")["events"] == []
    assert ws.run("2026-12-09T09:00")["events"] == []                  # a baselined episode repeats silently
    accounts(ws, range(1), big=range(1, 2))                           # A001 stops matching
    assert ws.run("2026-12-10T09:00")["events"] == []                  # ... and resolves silently: no on_resolve
    accounts(ws, range(2))                                            # A001 matches again: a real enter
    events = ws.run("2026-12-11T09:00")["events"]
    assert [(e["subject"], e["event"], e["episode"]) for e in events] == [("account:A001", "enter", 1)]
    assert [a["kind"] for a in events[0]["actions"]] == ["slack", "task"]


def test_max_enters_per_run_lets_in_the_lowest_ids_first(ws: Workspace) -> None:
    ws.playbook("limited", PLAYBOOK.format(id="limited", extra="activation: fire\nmax_enters_per_run: 10"))
    accounts(ws, range(25))
    entered = []
    for day, expected in (("07", 10), ("08", 10), ("09", 5), ("10", 0)):
        events = ws.run(f"2026-12-{day}T09:00")["events"]
        assert len(events) == expected
        entered += [e["subject"] for e in events]
    assert entered == [f"account:A{i:03}" for i in range(25)]          # lowest ids first, each once


def test_a_playbook_switched_off_and_on_again_is_activated_again(ws: Workspace) -> None:
    path = ws.playbook("quiet", PLAYBOOK.format(id="quiet", extra=""))
    accounts(ws, range(2))
    ws.run("2026-12-07T09:00")
    accounts(ws, range(3))                                            # A002 starts to match: a real enter
    assert [e["subject"] for e in ws.run("2026-12-08T09:00")["events"]] == ["account:A002"]
    path.write_text(path.read_text().replace("name: quiet", "name: quiet\nenabled: false"))
    ws.run("2026-12-09T09:00")                                        # a run while it is off
    accounts(ws, range(4))                                            # A003 matches while it is off
    path.write_text(path.read_text().replace("enabled: false", "enabled: true"))
    assert [e["event"] for e in ws.run("2026-12-10T09:00", "--dry-run")["events"]] == ["baseline"]
    assert ws.run("2026-12-10T09:00")["events"] == []                  # switched on again: A003 baselined
    app = App(ws.config)
    with app.store.read() as tx:
        state = tx.runs.playbook_states()["quiet"]
    app.close()
    assert state["active"] and state["activated_at"] is not None


def test_a_playbook_whose_first_run_was_blocked_is_still_to_be_activated(ws_sqlite: Workspace) -> None:
    """An activation that did not complete (the data was stale, or max_actions_per_run refused it) is not done:
    the next run is the activation, and still baselines."""
    ws = ws_sqlite
    ws.playbook("quiet", PLAYBOOK.format(id="quiet", extra="max_actions_per_run: 1"))
    ws.playbook("loud", PLAYBOOK.format(id="loud", extra="activation: fire\nmax_actions_per_run: 1"))
    accounts(ws, range(3))
    out = ws.cli("run", "--now", "2026-12-07T09:00", "--format", "json")
    assert "loud: blocked: would plan 6 actions" in out.stderr
    assert ws.run("2026-12-08T09:00", "--playbook", "quiet")["events"] == []     # baselining plans nothing
    app = App(ws.config)
    with app.store.read() as tx:
        states = tx.runs.playbook_states()
    app.close()
    assert states["quiet"]["active"] and not states["loud"]["active"]
