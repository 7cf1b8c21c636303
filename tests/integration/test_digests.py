"""Digests (§15) end to end: alerts from several playbooks to one CSM arrive as one message at the digest time,
through the real Slack WebClient (against a local Web API) and real SMTP (aiosmtpd)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer

from conftest import Workspace
from integration.test_slack import FakeSlack
from smtp_server import SmtpServer

PLAYBOOKS, ACCOUNTS = 5, 8          # 40 alerts for one CSM
RISK = """
id: risk{n}
name: Risk {n}
activation: fire
trigger: {{when: "account.health_score < {limit}"}}
actions:
  - slack: {{to: "{{{{ account.csm_email }}}}", text: "health {{{{ account.health_score }}}} (risk {n})", digest: daily}}
  - email: {{to: "{{{{ account.csm_email }}}}", subject: "{{{{ account.name }}}}: risk {n}", body: "x", digest: daily}}
"""


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as s:
        yield s


def workspace(ws: Workspace, httpserver: HTTPServer, smtp: SmtpServer) -> Workspace:
    ws.timezone = "Asia/Tokyo"
    ws.configure(f"""
connectors:
  slack: {{token: xoxb-test, base_url: "{httpserver.url_for('/api/')}"}}
  email: {{smtp: {{host: 127.0.0.1, port: {smtp.port}, starttls: false}}, from: "CS <cs@example.com>"}}
""")
    accounts = [{"id": f"A{i}", "name": f"Acme {i}", "arr": 100, "health_score": 10 + i,
                 "csm_email": "alice@example.com"} for i in range(ACCOUNTS)]
    accounts.append({"id": "B1", "name": "Beta & <Co>", "arr": 100, "health_score": 5, "csm_email": "bob@example.com"})
    ws.data("accounts", accounts)
    ws.sync()
    return ws


def test_forty_alerts_from_five_playbooks_arrive_as_one_message(ws: Workspace, httpserver: HTTPServer,
                                                                smtp: SmtpServer) -> None:
    slack = FakeSlack(httpserver)
    slack.handlers["users.lookupByEmail"] = lambda p: {"ok": True, "user": {"id": "U" + p["email"][:3].upper()}}
    slack.handlers["conversations.open"] = lambda p: {"ok": True, "channel": {"id": "D" + p["users"]}}
    ws = workspace(ws, httpserver, smtp)
    for n in range(PLAYBOOKS):
        ws.playbook(f"risk{n}", RISK.format(n=n, limit=50))
    ws.cli("validate")
    # the alerts come in over the day, some playbooks at 10:00, the others at 15:00; nothing is sent then
    early = ws.run("2026-12-07T10:00:00", "--playbook", "risk0", "--playbook", "risk1")
    assert early["events"][0]["actions"][0]["digest"] == "daily"
    assert early["events"][0]["actions"][0]["send_at"] == "2026-12-08T09:00:00+09:00"
    ws.run("2026-12-07T15:00:00", *[a for n in range(2, PLAYBOOKS) for a in ("--playbook", f"risk{n}")])
    assert slack.called("chat.postMessage") == [] and smtp.handler.received == []
    waiting = [r for r in ws.outbox_rows() if r["status"] == "digest"]
    assert len(waiting) == 2 * (PLAYBOOKS * ACCOUNTS + PLAYBOOKS)
    listed = json.loads(ws.cli("outbox", "list", "--status", "digest", "--format", "json").stdout)["actions"]
    assert {a["note"] for a in listed} == {"digest (daily) at 2026-12-08 09:00 +09:00"}
    # Acme 0 recovers before the digest: its risk4 episode resolves in the 09:00 run, and the digest says so
    ws.data("accounts", [{"id": f"A{i}", "name": f"Acme {i}", "arr": 100, "health_score": 10 + i if i else 45,
                          "csm_email": "alice@example.com"} for i in range(ACCOUNTS)]
            + [{"id": "B1", "name": "Beta & <Co>", "arr": 100, "health_score": 5, "csm_email": "bob@example.com"}])
    ws.sync()
    ws.playbook("risk4", RISK.format(n=4, limit=40))
    ws.run("2026-12-08T09:00:00")
    posts = slack.called("chat.postMessage")
    assert sorted(p["channel"] for p in posts) == ["DUALI", "DUBOB"]
    alice = next(p for p in posts if p["channel"] == "DUALI")
    lines = alice["text"].split("\n")
    assert lines[0] == "*Daily digest — December 8, 2026* · 40 alerts from 5 playbooks"
    assert sum(line.startswith("• ") for line in lines) == PLAYBOOKS * ACCOUNTS
    assert lines[2:4] == ["*Risk 0* (8)", "• Acme 0: health 10 (risk 0)"]
    assert "• ~Acme 0: health 10 (risk 4)~ _(resolved)_" in lines
    assert alice["metadata"]["event_payload"]["dedup_key"] == "digest/slack/alice@example.com/2026-12-08T09:00+09:00"
    bob = next(p for p in posts if p["channel"] == "DUBOB")
    assert "• Beta &amp; &lt;Co&gt;: health 5 (risk 0)" in bob["text"].split("\n")
    mails = {r.rcpt_tos[0]: r.message() for r in smtp.handler.received}
    assert sorted(mails) == ["alice@example.com", "bob@example.com"]
    body = mails["alice@example.com"].get_content()
    assert mails["alice@example.com"]["Subject"] == "Daily digest, December 8, 2026: 40 alerts from 5 playbooks"
    assert "• Acme 7: Acme 7: risk 3" in body and "• Acme 0: Acme 0: risk 4 (resolved)" in body
    rows = ws.outbox_rows()
    assert {r["status"] for r in rows} == {"sent"}
    assert sum(r["subject_type"] == "digest" for r in rows) == 4
    # the same moment again: nothing new is planned or sent
    ws.run("2026-12-08T09:00:00")
    assert len(slack.called("chat.postMessage")) == 2 and len(smtp.handler.received) == 2


def test_late_items_go_into_the_next_digest_and_empty_digests_are_not_sent(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    ws.timezone = "Asia/Tokyo"
    ws.configure("")
    ws.data("accounts", [{"id": "A1", "name": "Acme", "arr": 100, "health_score": 10, "csm_email": "c@x.example"},
                         {"id": "A2", "name": "Beta", "arr": 100, "health_score": 10, "csm_email": "d@x.example"}])
    ws.sync()
    ws.playbook("risk0", RISK.format(n=0, limit=50))
    ws.playbook("risk1", RISK.format(n=1, limit=50))
    ws.run("2026-12-07T09:00:00", "--playbook", "risk0")      # planned at the digest time: in that digest
    # risk1 plans for 09:00 too, after that digest was made: its items wait for the next one, none is lost
    late = ws.run("2026-12-07T09:00:00", "--playbook", "risk1")
    assert late["events"][0]["actions"][0]["send_at"] == "2026-12-07T09:00:00+09:00"
    digests = [r for r in ws.outbox_rows() if r["subject_type"] == "digest"]
    assert len(digests) == 4 and all(r["digest"]["items"] == 1 for r in digests)
    waiting = [r for r in ws.outbox_rows() if r["status"] == "digest"]
    assert len(waiting) == 4
    # d@x.example's items are cancelled: no digest goes to them at all
    for r in waiting:
        if r["digest"]["to"] == "d@x.example":
            ws.cli("outbox", "cancel", str(r["id"]))
    ws.run("2026-12-08T09:00:00")
    digests = [r for r in ws.outbox_rows() if r["subject_type"] == "digest"]
    assert len(digests) == 6
    assert {(r["subject_id"], r["digest"]["items"]) for r in digests[:2]} == {
        ("slack/c@x.example", 1), ("email/c@x.example", 1)}
    assert not [r for r in ws.outbox_rows() if r["status"] in ("digest", "collected", "pending")]


def test_digest_template_and_what_validate_refuses(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    ws.data("accounts", [{"id": "A1", "name": "Acme <1>", "arr": 100, "health_score": 10, "csm_email": "c@x.example"}])
    ws.sync()
    ws.template("csm-digest.txt.j2", "{{ items | length }} for {{ recipient }} ({{ period.every }}, "
                                     "{{ period.end | date }}):\n{% for g in groups %}{{ g.playbook }}:"
                                     "{% for i in g['items'] %} {{ i.subject }} / {{ i.text }}{% endfor %}\n"
                                     "{% endfor %}")
    ws.playbook("risk", """
        id: risk
        name: Risk
        activation: fire
        trigger: {when: "account.health_score < 50"}
        actions:
          - slack: {channel: "#cs", text: "<{{ account.name }}>", digest: {every: weekly, day: fri, at: "17:30"},
                    digest_template: csm-digest}
    """)
    ws.cli("validate")
    ws.run("2026-12-07T10:00:00")
    ws.run("2026-12-11T17:30:00")
    line = (ws.root / "outbox" / "slack.jsonl").read_text().strip()
    sent = json.loads(line)
    assert sent["text"] == "1 for #cs (weekly, December 11, 2026):\nRisk: Acme &lt;1&gt; / <Acme &lt;1&gt;>\n"
    ws.playbook("bad", """
        id: bad
        name: Bad
        trigger: {when: "account.health_score < 50"}
        actions:
          - email: {to: {role: champion}, subject: s, body: b, digest: daily}
          - task: {title: t, digest: weekly}
          - slack: {channel: "#cs", text: t, digest_template: csm-digest}
          - slack: {channel: "#cs", text: t, digest: daily, digest_template: nothing-here}
    """)
    out = ws.cli("validate", expect=1).output
    assert "bad.yaml:5:64: a digest collects internal messages; this action reaches customers" in out
    assert "bad.yaml:6:30: `task` actions cannot collect into a digest" in out
    assert "bad.yaml:7:55: `digest_template` needs `digest:`" in out
    assert "bad.yaml:8:70: digest template `nothing-here` not found in templates/" in out
    ws.playbook("bad", """
        id: bad
        name: Bad
        trigger: {when: "account.health_score < 50"}
        actions:
          - slack: {channel: "#cs", text: t, digest: {every: daily, day: mon}}
          - slack: {channel: "#cs", text: t, digest: hourly}
    """)
    out = ws.cli("validate", expect=1).output
    assert "bad.yaml:5:46: actions.0.slack.digest: `day` is for weekly digests (every: weekly)" in out
    assert "bad.yaml:6:46: actions.1.slack.digest: `hourly` is not a digest schedule: use daily, weekly or" in out


def test_a_digest_waits_for_an_evaluation_of_its_moment_still_running(ws_sqlite: Workspace) -> None:
    """A run at the digest time may still be planning alerts for it: the digest is made once that run ends."""
    from datetime import datetime, timedelta, timezone

    from engine.app import App

    ws = ws_sqlite
    ws.data("accounts", [{"id": "A1", "name": "Acme", "arr": 100, "health_score": 10, "csm_email": "c@x.example"}])
    ws.sync()
    ws.playbook("risk0", RISK.format(n=0, limit=50))
    day = (datetime.now(timezone.utc) - timedelta(days=2)).date()
    ws.cli("run", "--now", f"{day.isoformat()}T10:00:00", "--no-dispatch")
    due = datetime.combine(day + timedelta(days=1), datetime.min.time()).replace(hour=9)   # 09:00 UTC
    app = App(ws.config)
    try:
        with app.store.write() as tx:
            run_id = tx.runs.start("scheduled", due, datetime.now(timezone.utc).replace(tzinfo=None))
        assert json.loads(ws.cli("dispatch", "--format", "json").stdout)["outcomes"] == {}
        with app.store.write() as tx:
            tx.runs.finish(run_id, "ok", datetime.now(timezone.utc).replace(tzinfo=None))
    finally:
        app.close()
    assert json.loads(ws.cli("dispatch", "--format", "json").stdout)["outcomes"] == {"sent": 2}
