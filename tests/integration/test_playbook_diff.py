"""`playbook diff --base GIT_REF|DIR` (§18): what changed per playbook and its effect on the synced data now,
agreeing with what the next `playbook run` then does."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Workspace

PLAYBOOK = """\
    id: health-alert
    name: Poor health
    activation: fire
    trigger:
      when: "account.health_score < 60"
    actions:
      - slack: {channel: "#cs", text: "{{ account.name }} health {{ account.health_score }}"}
      - task: {title: "Call {{ account.name }}", assignee: "{{ account.csm_email }}"}
"""
T1, T2 = "2026-12-01T09:00:00+00:00", "2026-12-02T09:00:00+00:00"


def git(ws: Workspace, *args: str) -> str:
    return subprocess.run(["git", "-C", str(ws.root), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(ws: Workspace) -> Workspace:
    """A workspace in git: the playbook at threshold 60 committed, synced and run once."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    ws.playbook("health-alert", PLAYBOOK)
    ws.data("accounts", [{"id": f"A{n}", "name": f"Acme {n}", "health_score": score, "csm_email": "csm@example.com"}
                         for n, score in enumerate([50, 62, 64, 70, 55], 1)])
    git(ws, "init", "-q")
    git(ws, "add", "-A")
    git(ws, "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "threshold 60")
    ws.cli("sync")
    ws.cli("run", "--now", T1)
    return ws


def test_a_raised_threshold_reports_what_the_next_run_then_does(repo: Workspace) -> None:
    ws = repo
    ws.playbook("health-alert", PLAYBOOK.replace("< 60", "< 65"))
    doc = json.loads(ws.cli("diff", "--base", "HEAD", "--now", T2, "--format", "json").stdout)
    [d] = doc["playbooks"]
    assert (d["id"], d["status"]) == ("health-alert", "changed")
    assert d["changes"] == [{"path": "trigger.when", "category": "trigger", "before": "account.health_score < 60",
                             "after": "account.health_score < 65"}]
    assert d["matching"] == {"before": 2, "after": 4}
    assert d["newly_matching"] == ["account:A2", "account:A3"] and d["no_longer_matching"] == []
    assert d["without_change"]["events"] == []                       # the base has nothing more to do
    assert d["added_by_change"]["actions"] == {"slack": 2, "task": 2}
    assert [(e["subject"], e["event"]) for e in d["added_by_change"]["events"]] == [("account:A2", "enter"),
                                                                                   ("account:A3", "enter")]
    run = json.loads(ws.cli("run", "--now", T2, "--format", "json").stdout)
    assert run["events"] == d["next_run"]["events"] == d["added_by_change"]["events"]

    table = ws.cli("diff", "--base", "HEAD", "--now", T2).stdout
    assert "trigger.when: account.health_score < 60 → account.health_score < 65" in table
    assert "newly matching: A2, A3" in table


def test_lowering_it_again_stops_matching_and_resolves(repo: Workspace) -> None:
    ws = repo
    ws.playbook("health-alert", PLAYBOOK.replace("< 60", "< 52"))
    d = json.loads(ws.cli("diff", "--base", "HEAD", "--now", T2, "--format", "json").stdout)["playbooks"][0]
    assert d["no_longer_matching"] == ["account:A5"]
    assert [(e["subject"], e["event"]) for e in d["removed_by_change"]["events"]] == []
    assert [(e["subject"], e["event"]) for e in d["next_run"]["events"]] == [("account:A5", "resolve")]
    run = json.loads(ws.cli("run", "--now", T2, "--format", "json").stdout)
    assert run["events"] == d["next_run"]["events"]


def test_added_and_removed_playbooks_against_a_folder(repo: Workspace, tmp_path: Path) -> None:
    ws = repo
    base = tmp_path / "base"
    shutil.copytree(ws.root, base, ignore=shutil.ignore_patterns(".git"))
    (ws.root / "playbooks" / "health-alert.yaml").unlink()
    ws.playbook("new-one", PLAYBOOK.replace("health-alert", "new-one").replace("activation: fire",
                                                                                  "activation: baseline"))
    doc = json.loads(ws.cli("diff", "--base", str(base), "--now", T2, "--format", "json").stdout)
    by = {d["id"]: d for d in doc["playbooks"]}
    assert by["health-alert"]["status"] == "removed" and by["health-alert"]["next_run"]["events"] == []
    assert by["health-alert"]["matching"] == {"before": 2, "after": 0}
    added = by["new-one"]
    assert added["status"] == "added" and added["matching"] == {"before": 0, "after": 2}
    # activation applied: a new playbook with activation: baseline baselines what already matches
    assert [(e["subject"], e["event"]) for e in added["next_run"]["events"]] == [("account:A1", "baseline"),
                                                                                ("account:A5", "baseline")]
    assert added["next_run"]["actions"] == {}


def test_nothing_is_planned_or_recorded(repo: Workspace) -> None:
    ws = repo
    before = ws.outbox_rows()
    history = ws.cli("history", "--format", "json").stdout
    ws.playbook("health-alert", PLAYBOOK.replace("< 60", "< 65"))
    ws.cli("diff", "--base", "HEAD", "--now", T2)
    assert ws.outbox_rows() == before
    assert ws.cli("history", "--format", "json").stdout == history


def test_unknown_base(repo: Workspace) -> None:
    r = repo.cli("diff", "--base", "no-such-branch", expect=1)
    assert "`no-such-branch` is neither a folder nor a git commit" in r.stderr


def test_a_playbook_broken_at_the_base_or_now(repo: Workspace) -> None:
    ws = repo
    ws.playbook("health-alert", PLAYBOOK.replace("< 60", "< 6O"))          # a typo: invalid now
    r = ws.cli("diff", "--base", "HEAD", "--now", T2, "--format", "json", expect=1)
    [d] = json.loads(r.stdout)["playbooks"]
    assert d["status"] == "invalid" and d["problems"][0]["file"].endswith("health-alert.yaml")
    git(ws, "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qam", "broken")
    ws.playbook("health-alert", PLAYBOOK)
    [d] = json.loads(ws.cli("diff", "--base", "HEAD", "--now", T2, "--format", "json").stdout)["playbooks"]
    assert d["status"] == "changed" and d["changes"] == [{"path": "file", "category": "validity",
                                                          "before": "invalid", "after": "valid"}]
