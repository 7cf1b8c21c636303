"""Delivery promise (§10) through the real dispatcher: retries with Retry-After, retry budget, expiry,
suppression at send time, operator retry/cancel, and the one-click unsubscribe endpoint."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from werkzeug import Response

from conftest import Workspace
from engine.app import App
from engine.consent import sign
from engine.clock import wall_clock
from smtp_server import SmtpServer

HOOK = """
id: hook
name: Hook
activation: fire
trigger: {{when: account.arr < 100}}
actions:
  - webhook: {{url: "{url}", body: {{account: "{{{{ account.id }}}}"}}}}
"""
MAIL = """
id: mail
name: Mail
activation: fire
trigger: {when: account.arr < 100}
actions:
  - email: {to: {role: champion}, subject: "Hi {{ contact.name }}", body: "Hello"}
"""



def accounts(ws: Workspace, n: int = 1) -> None:
    ws.data("accounts", [{"id": f"A{i}", "name": f"Acme {i}", "arr": 10} for i in range(n)])
    ws.data("contacts", [{"id": f"C{i}", "account_id": f"A{i}", "email": f"c{i}@acme.example", "name": f"C{i}",
                          "role": "champion", "unsubscribed": "false"} for i in range(n)])
    ws.sync()


def test_429_is_rescheduled_after_retry_after_without_sleeping(ws_sqlite: Workspace, httpserver) -> None:  # noqa: ANN001
    ws = ws_sqlite
    httpserver.expect_request("/hook").respond_with_response(Response("slow down", 429, {"Retry-After": "120"}))
    ws.configure("outbound: {allow: [127.0.0.1]}\nconnectors:\n  webhook: {timeout: 5}\ndelivery: {backoff_base: 1s}\n")
    ws.playbook("hook", HOOK.format(url=httpserver.url_for("/hook")))
    accounts(ws)
    before = wall_clock()
    ws.cli("run", "--now", "2026-03-02T09:00")
    [row] = ws.outbox_rows()
    assert row["status"] == "pending" and row["attempts"] == 1
    assert row["not_before"] >= before + timedelta(seconds=119)
    history = json.loads(ws.cli("history", "--attempts", "--format", "json").stdout)["attempts"]
    assert history[0]["outcome"] == "transient" and "429" in history[0]["detail"]


def test_retry_budget_then_failed_and_operator_retry(ws_sqlite: Workspace, httpserver) -> None:  # noqa: ANN001
    ws = ws_sqlite
    httpserver.expect_request("/hook").respond_with_data("boom", status=503)
    ws.configure("outbound: {allow: [127.0.0.1]}\nconnectors:\n  webhook: {timeout: 5}\ndelivery: {max_attempts: 2, backoff_base: 0s}\n")
    ws.playbook("hook", HOOK.format(url=httpserver.url_for("/hook")))
    accounts(ws)
    ws.cli("run", "--now", "2026-03-02T09:00")
    ws.cli("dispatch")
    [row] = ws.outbox_rows()
    assert row["status"] == "failed" and row["attempts"] == 2
    assert "retries exhausted after 2 attempts" in row["last_error"]
    httpserver.clear()
    httpserver.expect_request("/hook").respond_with_data("ok", status=200)
    ws.cli("outbox", "retry", str(row["id"]))
    ws.cli("dispatch")
    assert ws.outbox_rows()[0]["status"] == "sent"


def test_expired_actions_fail_instead_of_arriving_late(ws_sqlite: Workspace, httpserver) -> None:  # noqa: ANN001
    ws = ws_sqlite
    ws.configure("outbound: {allow: [127.0.0.1]}\nconnectors:\n  webhook: {timeout: 5}\ndelivery: {expire_after: 0s}\n")
    ws.playbook("hook", HOOK.format(url=httpserver.url_for("/hook")))
    accounts(ws)
    ws.cli("run", "--now", "2026-03-02T09:00")
    [row] = ws.outbox_rows()
    assert row["status"] == "failed" and row["last_error"] == "expired before it could be delivered"
    assert httpserver.log == []


def test_unsubscribed_after_planning_is_suppressed_at_send_time(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    with SmtpServer() as server:
        ws.configure(f"connectors:\n  email:\n    smtp: {{host: 127.0.0.1, port: {server.port}, starttls: false}}\n"
                     f"    from: cs@example.com\n")
        ws.playbook("mail", MAIL)
        accounts(ws, 2)
        ws.cli("run", "--now", "2026-03-02T09:00", "--no-dispatch")
        ws.cli("unsubscribe", "C0@ACME.example")
        ws.cli("dispatch")
        got = [r.rcpt_tos for r in server.handler.accepted]
    assert got == [["c1@acme.example"]]
    status = {r["subject_id"]: r["status"] for r in ws.outbox_rows()}
    assert status == {"A0": "suppressed", "A1": "sent"}
    listing = ws.cli("unsubscribe", "--list", "--format", "json").stdout
    assert '"email": "c0@acme.example"' in listing and '"reason": "unsubscribed"' in listing


def test_hard_bounce_suppresses_the_address(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    with SmtpServer() as server:
        server.handler.rcpt_replies["c0@acme.example"] = "550 5.1.1 no such user"
        ws.configure(f"connectors:\n  email:\n    smtp: {{host: 127.0.0.1, port: {server.port}, starttls: false}}\n"
                     f"    from: cs@example.com\n")
        ws.playbook("mail", MAIL)
        accounts(ws, 1)
        ws.cli("run", "--now", "2026-03-02T09:00")
    app = App(ws.config)
    with app.store.read() as tx:
        assert tx.suppressions.blocked(["c0@acme.example"]) == {"c0@acme.example"}
    app.close()
    assert ws.outbox_rows()[0]["status"] == "failed"


def test_one_click_unsubscribe_endpoint(ws_sqlite: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.unsubscribe_http import serve
    from smtp_server import free_port

    ws = ws_sqlite
    accounts(ws, 1)
    app = App(ws.config)
    port = free_port()
    server = serve(app.store, b"s3cret", "127.0.0.1", port)
    try:
        good = f"http://127.0.0.1:{port}/unsubscribe?e=c0@acme.example&t={sign(b's3cret', 'c0@acme.example')}"
        page = urllib.request.urlopen(good).read().decode()          # GET only shows a confirm button
        assert "Unsubscribe" in page
        with app.store.read() as tx:
            assert not tx.suppressions.blocked(["c0@acme.example"])
        req = urllib.request.Request(good, data=b"List-Unsubscribe=One-Click", method="POST")
        assert urllib.request.urlopen(req).status == 200
        with app.store.read() as tx:
            assert tx.suppressions.blocked(["c0@acme.example"]) == {"c0@acme.example"}
        bad = good.replace("t=", "t=x")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(bad, data=b"", method="POST"))
        assert info.value.code == 400
    finally:
        server.shutdown()
        app.close()


def test_playbook_using_an_unconfigured_connector_fails_validation(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    ws.configure("outbound: {allow: [127.0.0.1]}\nconnectors:\n  webhook: {timeout: 5}\n")
    ws.playbook("s", "id: s\nname: S\nactivation: fire\ntrigger: {when: account.arr < 1}\nactions:\n"
                     "  - slack: {channel: '#x', text: hi}\n")
    r = ws.cli("validate", expect=1)
    assert ("playbooks/s.yaml:6:5: this playbook uses `slack` but no slack connector is configured "
            "(add connectors.slack to config.yaml, or `connectors.slack: {sink: local}` to deliver it to "
            "outbox/)") in r.stdout


def test_dispatch_limit_delivers_at_most_that_many_actions(ws_sqlite: Workspace) -> None:
    """`dispatch --limit N` claims and delivers no more than N actions (it used to deliver the whole queue)."""
    ws = ws_sqlite
    ws.playbook("s", "id: s\nname: S\nactivation: fire\ntrigger: {when: account.arr < 100}\nactions:\n"
                     "  - slack: {channel: '#x', text: '{{ account.name }}'}\n")
    accounts(ws, 7)
    ws.cli("run", "--now", "2026-03-02T09:00", "--no-dispatch")
    assert json.loads(ws.cli("dispatch", "--limit", "1", "--format", "json").stdout)["outcomes"] == {"sent": 1}
    assert json.loads(ws.cli("dispatch", "--limit", "4", "--format", "json").stdout)["outcomes"] == {"sent": 4}
    assert sorted(r["status"] for r in ws.outbox_rows()) == ["pending"] * 2 + ["sent"] * 5
    assert json.loads(ws.cli("dispatch", "--format", "json").stdout)["outcomes"] == {"sent": 2}
    assert ws.cli("dispatch", "--limit", "0", expect=2).exit_code == 2        # a usage error, not "everything"


def test_each_email_action_goes_to_the_roles_it_names(ws_sqlite: Workspace) -> None:
    """Two email actions with different role filters in one playbook: each reaches only its own roles."""
    ws = ws_sqlite
    ws.playbook("two", "id: two\nname: Two\nactivation: fire\ntrigger: {when: account.arr < 100}\nactions:\n"
                       "  - email: {to: {role: champion}, subject: 'For champions', body: x}\n"
                       "  - email: {to: {role: admin}, cc: {role: user}, subject: 'For admins', body: y}\n")
    ws.data("accounts", [{"id": "A1", "name": "Acme", "arr": 10}])
    ws.data("contacts", [{"id": f"C{r}", "account_id": "A1", "email": f"{r}@acme.example", "name": r, "role": r,
                          "unsubscribed": "false"} for r in ("champion", "admin", "user")])
    ws.sync()
    [event] = ws.run("2026-03-02T09:00", "--no-dispatch")["events"]
    assert [(a["subject"], a["to"]) for a in event["actions"]] == [
        ("For champions", ["champion@acme.example"]), ("For admins", ["admin@acme.example"])]
    payloads = {r["action_index"]: r["payload"] for r in ws.outbox_rows()}
    assert payloads[1]["cc"] == ["user@acme.example"]
