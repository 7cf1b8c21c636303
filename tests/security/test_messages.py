"""Messages (issue 24): values from data cannot mention or link in Slack (slack-sdk WebClient against a local
server), and cannot add an email recipient (a real SMTP server): the author's mentions, links and address lists
still work."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from conftest import Workspace
from smtp_server import SmtpServer

HOSTILE_NAMES = [
    "<!channel> urgent",
    "<!here|here> <!everyone>",
    "<@U0123ABCD> please look",
    "<#C0123ABCD|general>",
    "<!subteam^S0123|@oncall>",
    "<https://evil.example|click here>",
    "<mailto:evil@attacker.example|mail us>",
    "Tom & Jerry <b>bold</b>",
    "&lt;!channel&gt; already escaped",
    "O'Brien \"quoted\"",
]
SLACK_PLAYBOOK = """
id: alert
name: Alert
activation: fire
trigger: {when: account.arr < 100}
actions:
  - slack:
      channel: "#cs-alerts"
      text: "<!here> {{ account.name }}: <https://app.example/a/{{ account.id }}|open> <@U0AUTHOR1>"
      blocks:
        - type: section
          text: {type: mrkdwn, text: "*{{ account.name }}* needs <@U0AUTHOR1>"}
          fields:
            - {type: mrkdwn, text: "{{ account.name }}"}
            - {type: plain_text, text: "{{ account.name }}"}
        - type: actions
          elements:
            - type: button
              text: {type: plain_text, text: "Open {{ account.name }}"}
              url: "https://app.example/a/{{ account.id }}?from=slack&x=1"
"""


def slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackApi:
    """chat.postMessage on a local server: records each message's parameters."""

    def __init__(self, server: HTTPServer):
        self.posts: list[dict[str, Any]] = []
        server.expect_request("/api/chat.postMessage", method="POST").respond_with_handler(self)

    def __call__(self, request: Request) -> Response:
        params = dict(request.get_json()) if request.is_json else request.form.to_dict()
        if isinstance(params.get("blocks"), str):
            params["blocks"] = json.loads(params["blocks"])
        self.posts.append(params)
        return Response(json.dumps({"ok": True, "channel": "C0CHANNEL1", "ts": "1.0"}),
                        content_type="application/json")


def accounts(ws: Workspace, names: list[str], csm: list[str] | None = None) -> None:
    ws.data("accounts", [{"id": f"A{i:02d}", "name": n, "arr": 10, "csm_email": (csm or [""] * len(names))[i]}
                         for i, n in enumerate(names)])
    ws.sync()


def test_slack_text_and_blocks_from_data_cannot_mention_or_link(ws_sqlite: Workspace,
                                                               httpserver: HTTPServer) -> None:
    api = SlackApi(httpserver)
    ws_sqlite.configure(f"connectors:\n  slack: {{token: xoxb-test, base_url: '{httpserver.url_for('/api/')}'}}\n")
    ws_sqlite.playbook("alert", SLACK_PLAYBOOK)
    accounts(ws_sqlite, HOSTILE_NAMES)
    ws_sqlite.cli("run", "--now", "2026-03-02T09:00")
    assert len(api.posts) == len(HOSTILE_NAMES)
    by_id = {p["text"].split("/a/")[1].split("|")[0]: p for p in api.posts}
    for i, name in enumerate(HOSTILE_NAMES):
        post, safe = by_id[f"A{i:02d}"], slack_escape(name)
        assert post["text"] == f"<!here> {safe}: <https://app.example/a/A{i:02d}|open> <@U0AUTHOR1>", post
        section, actions = post["blocks"]
        assert section["text"]["text"] == f"*{safe}* needs <@U0AUTHOR1>"
        assert section["fields"] == [{"type": "mrkdwn", "text": safe}, {"type": "plain_text", "text": name}]
        button = actions["elements"][0]
        assert button["text"]["text"] == f"Open {name}"
        assert button["url"] == f"https://app.example/a/A{i:02d}?from=slack&x=1"


def test_a_local_sink_slack_message_is_escaped_too(ws_sqlite: Workspace) -> None:
    ws_sqlite.playbook("alert", SLACK_PLAYBOOK)
    accounts(ws_sqlite, ["<!channel> Acme"])
    ws_sqlite.cli("run", "--now", "2026-03-02T09:00")
    [line] = (ws_sqlite.root / "outbox" / "slack.jsonl").read_text().splitlines()
    assert json.loads(line)["text"].startswith("<!here> &lt;!channel&gt; Acme:")


MAIL_FROM_DATA = """
id: csm
name: CSM note
activation: fire
trigger: {when: account.arr < 100}
actions:
  - email: {to: "{{ account.csm_email }}", subject: "About {{ account.name }}", body: "Hello"}
"""

HOSTILE_ADDRESSES = [
    "csm@example.com, evil@attacker.example",
    "csm@example.com;evil@attacker.example",
    "csm@example.com evil@attacker.example",
    "csm@example.com\r\nBcc: evil@attacker.example",
    "csm@example.com\nevil@attacker.example",
    "Csm <csm@example.com>, Evil <evil@attacker.example>",
    "<csm@example.com>,<evil@attacker.example>",
    "csm@example.com,",
]


def smtp_config(ws: Workspace, server: SmtpServer) -> None:
    ws.configure(f"connectors:\n  email:\n    smtp: {{host: 127.0.0.1, port: {server.port}, starttls: false}}\n"
                 "    from: cs@example.com\n")


def test_an_address_from_data_is_one_address_never_split(ws_sqlite: Workspace) -> None:
    with SmtpServer() as server:
        smtp_config(ws_sqlite, server)
        ws_sqlite.playbook("csm", MAIL_FROM_DATA)
        accounts(ws_sqlite, ["Acme"] * (len(HOSTILE_ADDRESSES) + 1), [*HOSTILE_ADDRESSES, "Csm <csm@example.com>"])
        ws_sqlite.cli("run", "--now", "2026-03-02T09:00", expect=1)
        received = [r.rcpt_tos for r in server.handler.received]
    assert received == [["csm@example.com"]]            # the one valid row; nobody else got anything
    rows = {r["subject_id"]: r for r in ws_sqlite.outbox_rows()}
    for i in range(len(HOSTILE_ADDRESSES)):
        row = rows[f"A{i:02d}"]
        assert row["status"] == "failed", row
        assert "email `to` rendered from data must be exactly one address" in row["last_error"]
    listing = json.loads(ws_sqlite.cli("outbox", "list", "--status", "failed", "--format", "json").stdout)
    assert all("exactly one address" in a["last_error"] for a in listing["actions"])


def test_addresses_the_author_lists_all_receive(ws_sqlite: Workspace) -> None:
    with SmtpServer() as server:
        smtp_config(ws_sqlite, server)
        ws_sqlite.playbook("team", """
            id: team
            name: Team
            activation: fire
            trigger: {when: account.arr < 100}
            actions:
              - email: {to: ["{{ account.csm_email }}", boss@example.com], cc: "a@example.com, b@example.com",
                        subject: "About {{ account.name }}", body: "Hello"}
            """)
        accounts(ws_sqlite, ["Acme"], ["csm@example.com"])
        ws_sqlite.cli("run", "--now", "2026-03-02T09:00")
        received = sorted(tuple(r.rcpt_tos) for r in server.handler.received)
    assert received == [("boss@example.com", "a@example.com", "b@example.com"),
                        ("csm@example.com", "a@example.com", "b@example.com")]


@pytest.mark.parametrize("to", ['"{{ account.csm_email }}, boss@example.com"',
                                '["{{ account.csm_email }},{{ account.csm_email }}"]'])
def test_validate_refuses_a_comma_beside_an_expression(ws_sqlite: Workspace, to: str) -> None:
    ws_sqlite.playbook("csm", f"""
        id: csm
        name: CSM
        trigger: {{when: account.arr < 100}}
        actions:
          - email: {{to: {to}, subject: "Hi", body: "Hello"}}
        """)
    out = ws_sqlite.cli("validate", expect=1)
    text = out.stdout + out.stderr
    assert "csm.yaml:5" in text and "write several addresses as a YAML list" in text, text


def test_cc_and_reply_to_from_data_are_one_address_too(ws_sqlite: Workspace) -> None:
    with SmtpServer() as server:
        smtp_config(ws_sqlite, server)
        ws_sqlite.playbook("copy", """
            id: copy
            name: Copy
            activation: fire
            trigger: {when: account.arr < 100}
            actions:
              - email: {to: boss@example.com, cc: "{{ account.csm_email }}", subject: "Hi", body: "Hello"}
              - email: {to: boss@example.com, reply_to: "{{ account.csm_email }}", subject: "Hi", body: "Hello"}
            """)
        accounts(ws_sqlite, ["Acme"], ["csm@example.com, evil@attacker.example"])
        ws_sqlite.cli("run", "--now", "2026-03-02T09:00", expect=1)
        assert server.handler.received == []
    errors = sorted(r["last_error"] for r in ws_sqlite.outbox_rows())
    assert [e.split(" rendered")[0] for e in errors] == ["refused: email `cc`", "refused: email `reply_to`"]
