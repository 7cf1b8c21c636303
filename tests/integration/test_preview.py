"""`playbook preview` (§18): every action rendered for one subject as it would be sent — a Japanese email
readable, Slack text and blocks, task fields, the recipient's zone and send time — with nothing written; and
`--send-to` reaching a real local SMTP server, that address only, marked as a test."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from conftest import Workspace
from smtp_server import SmtpServer

PLAYBOOK = """\
    id: kaiyaku-boshi
    name: 更新前のご連絡
    trigger:
      renewal_approaching: {within_days: 90}
    actions:
      - email: {to: {role: champion}, template: koshin}
      - slack:
          channel: "#cs-renewals"
          text: "{{ account.name }} の更新まで {{ days_until(account.renewal_date) }} 日"
          blocks:
            - {type: section, text: {type: mrkdwn, text: "*{{ account.name }}* 更新日 {{ account.renewal_date }}"}}
      - task: {title: "{{ account.name }} に電話", assignee: "{{ account.csm_email }}", due_in: 2d, priority: high}
    on_resolve:
      - slack: {channel: "#cs-renewals", text: "{{ account.name }} は解決"}
"""


def workspace(tmp_path: Path, extra: str = "") -> Workspace:
    ws = Workspace(tmp_path / "ws", f"sqlite:///{tmp_path / 'ws.db'}", timezone="Asia/Tokyo")
    ws.configure(extra + "contact_policy:\n  quiet_hours: {start: \"19:00\", end: \"09:00\"}\n")
    ws.playbook("kaiyaku-boshi", PLAYBOOK)
    ws.template("koshin.subject.j2", "{{ account.name }} 様：ご契約更新のご案内")
    ws.template("koshin.txt.j2", "{{ contact.name }} 様\n\nいつもご利用ありがとうございます。更新日は {{ account.renewal_date }} です。\n")
    ws.template("koshin.html.j2", "<p>{{ contact.name }} 様</p><p>更新日は <b>{{ account.renewal_date }}</b> です。</p>\n")
    ws.data("accounts", [{"id": "A1", "name": "株式会社アクメ", "arr": 50000, "csm_email": "csm@example.com",
                          "renewal_date": "2027-01-15", "timezone": "Asia/Tokyo"}])
    ws.data("contacts", [{"id": "C1", "account_id": "A1", "email": "taro@acme.example", "name": "山田太郎",
                          "role": "champion"},
                         {"id": "C2", "account_id": "A1", "email": "hana@acme.example", "name": "佐藤花子",
                          "role": "champion", "timezone": "America/New_York"}])
    ws.cli("sync")
    return ws


def dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def test_a_japanese_email_reads_as_written_with_zone_and_send_time(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    before = dump(tmp_path / "ws.db")
    r = ws.cli("preview", "kaiyaku-boshi", "A1", "--now", "2026-12-01T10:00:00+09:00")
    text = r.stdout
    assert "Preview of kaiyaku-boshi for account:A1 at 2026-12-01 10:00 +09:00 — it fires now" in text
    assert "Subject            株式会社アクメ 様：ご契約更新のご案内" in text
    assert "山田太郎 様\n\nいつもご利用ありがとうございます。更新日は 2027-01-15 です。" in text
    assert "<p>山田太郎 様</p><p>更新日は <b>2027-01-15</b> です。</p>" in text
    # the New York champion: 10:00 in Tokyo is 20:00 the day before there, quiet hours until 09:00
    assert "Zone               America/New_York" in text
    assert "Goes out           2026-12-01 09:00 -05:00" in text
    assert "Slack" not in text and "Channel            #cs-renewals" in text
    assert '"text": "*株式会社アクメ* 更新日 2027-01-15"' in text                  # blocks, rendered
    assert "Title              株式会社アクメ に電話" in text and "Due                2026-12-03 10:00 +09:00" in text
    assert "on_resolve[0] (on resolve): slack" in text
    assert dump(tmp_path / "ws.db") == before                                   # nothing written
    assert not (ws.root / "outbox").exists()

    raw = ws.cli("preview", "kaiyaku-boshi", "account:A1", "--now", "2026-12-01T10:00:00+09:00", "--raw").stdout
    assert "Content-Transfer-Encoding: base64" in raw and "山田太郎" not in raw   # the .eml as sent


def test_json_and_files(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    out = tmp_path / "preview"
    r = ws.cli("preview", "kaiyaku-boshi", "A1", "--now", "2026-12-01T10:00:00+09:00", "--format", "json",
               "--out", str(out))
    doc = json.loads(r.stdout)
    assert doc["verdict"] == "fires"
    emails = [i for i in doc["items"] if i["kind"] == "email"]
    assert [e["to"] for e in emails] == [["taro@acme.example"], ["hana@acme.example"]]
    assert emails[1]["send_at"] == "2026-12-01T09:00:00-05:00" and emails[1]["zone"] == "America/New_York"
    assert emails[0]["messages"][0]["bodies"]["html"].startswith("<p>山田太郎 様</p>")
    assert emails[0]["messages"][0]["raw"].startswith("From: ")
    files = sorted(p.name for p in out.iterdir())
    assert "01-actions-0-email.eml" in files and "01-actions-0-email.html" in files
    assert (out / "01-actions-0-email.txt").read_text(encoding="utf-8").startswith("山田太郎 様")
    assert "03-actions-1-slack.blocks.json" in files


def test_send_to_reaches_that_address_only_marked_as_a_test(tmp_path: Path) -> None:
    with SmtpServer() as server:
        ws = workspace(tmp_path, f"connectors:\n  email:\n    smtp: {{host: 127.0.0.1, port: {server.port}, "
                                  f"starttls: false}}\n    from: cs@example.com\n  slack: {{sink: local}}\n")
        before = dump(tmp_path / "ws.db")
        r = ws.cli("preview", "kaiyaku-boshi", "A1", "--now", "2026-12-01T10:00:00+09:00", "--send-to",
                   "me@example.com")
        assert "test send of actions[0] (email via email) to me@example.com: sent" in r.stdout
        received = server.handler.received
        assert len(received) == 2                                   # one per champion's message
        assert all(m.rcpt_tos == ["me@example.com"] for m in received)
        subjects = sorted(m.message()["Subject"] for m in received)
        assert subjects == ["[TEST] 株式会社アクメ 様：ご契約更新のご案内"] * 2
        assert "山田太郎 様" in received[0].message().get_body(("plain",)).get_content()
    assert dump(tmp_path / "ws.db") == before                       # nothing recorded
    assert not (ws.root / "outbox").exists()                        # Slack (a local sink) was not sent


def test_unknown_subject_and_wrong_type(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    r = ws.cli("preview", "kaiyaku-boshi", "A9", expect=1)
    assert "no account with id `A9`" in r.stderr
    r = ws.cli("preview", "kaiyaku-boshi", "contact:C1", expect=2)
    assert "is about accounts, not contacts" in r.stderr
    r = ws.cli("preview", "kaiyaku-boshi", "A1", "--send-to", "not an address", expect=2)
    assert "is not one email address" in r.stderr


JOURNEY = """\
    id: welcome-journey
    name: Welcome journey
    trigger:
      when: "days_since(account.created_at) <= 1"
    steps:
      - id: welcome
        email: {to: {role: champion}, template: koshin}
      - wait: 3d
      - if: "metric('logins', 3, 'sum') == 0"
        then:
          - id: nudge
            slack: {to: "{{ account.csm_email }}", text: "{{ account.name }}: まだログインなし"}
        else:
          - id: thanks
            task: {title: "Thank {{ account.name }}"}
"""


def test_a_journey_previews_each_action_step_with_its_condition(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    ws.playbook("welcome-journey", JOURNEY)
    before = dump(tmp_path / "ws.db")
    text = ws.cli("preview", "welcome-journey", "A1", "--now", "2026-12-01T10:00:00+09:00").stdout
    heads = [line for line in text.splitlines() if line.startswith("== ")]
    assert [h.split(" (journey)")[0] for h in heads] == [
        "== step welcome", "== step welcome",           # one per champion under the contact policy
        "== step nudge (if metric('logins', 3, 'sum') == 0)",
        "== step thanks (if not (metric('logins', 3, 'sum') == 0))"]
    assert "Subject            株式会社アクメ 様：ご契約更新のご案内" in text
    assert "株式会社アクメ: まだログインなし" in text
    assert dump(tmp_path / "ws.db") == before


def test_an_action_collected_into_a_digest_says_when_the_digest_goes_out(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    ws.playbook("digested", """\
        id: digested
        name: Digested
        trigger:
          when: "account.arr > 0"
        actions:
          - slack: {to: "{{ account.csm_email }}", text: "{{ account.name }} 要確認", digest: daily}
    """)
    text = ws.cli("preview", "digested", "A1", "--now", "2026-12-01T10:00:00+09:00").stdout
    assert "Goes out           2026-12-02 09:00 +09:00 in the digest" in text
    assert "Digest             daily" in text and "株式会社アクメ 要確認" in text
