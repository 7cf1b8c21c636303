"""Per-locale templates (§16) end to end: each recipient gets the files of their locale, else the default ones,
with numbers, amounts and dates in their locale's formats and their account's metrics."""

from __future__ import annotations

import csv
import email
from email.policy import default as default_policy

from conftest import Workspace

PLAYBOOK = """
id: value-report
name: Value report
activation: fire
trigger: {when: "account.arr > 0"}
actions:
  - email: {to: {role: decision_maker}, template: value-report}
"""
TEMPLATES = {
    "value-report.subject.j2": "Your month with us, {{ account.name }}",
    "value-report.txt.j2": "Contract {{ account.arr | currency('JPY') }}, renewal {{ account.renewal_date | date }}, "
                           "{{ metric('logins', 7, 'sum') | number }} logins ({{ metric_change('logins', 7, 'sum') "
                           "| percent }}), score {{ account.health_score }}\n",
    "value-report.ja.subject.j2": "{{ account.name }} 様 今月のご利用状況",
    "value-report.ja.txt.j2": "ご契約 {{ account.arr | currency('JPY') }}、更新日 {{ account.renewal_date | date }}、"
                              "ログイン {{ metric('logins', 7, 'sum') | number }} 回（{{ metric_change('logins', 7, "
                              "'sum') | percent }}）、スコア {{ account.health_score }}\n",
}


def contacts(ws: Workspace, rows: list[dict]) -> None:
    """contacts.csv with the declared `locale` field (the workspace's default header has none)."""
    with open(ws.root / "data" / "contacts.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "account_id", "email", "name", "role", "locale"])
        w.writeheader()
        w.writerows(rows)


def mails(ws: Workspace) -> dict[str, email.message.EmailMessage]:
    out = {}
    for path in (ws.root / "outbox" / "email").glob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=default_policy)
        out[str(msg["To"])] = msg
    return out


def test_a_japanese_contact_gets_the_japanese_template_and_formats(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    ws.data("accounts", [{"id": "A1", "name": "Acme", "arr": 1200000, "renewal_date": "2026-12-07",
                          "health_score": 81.0}])
    contacts(ws, [{"id": "C1", "account_id": "A1", "email": "tanaka@acme.example", "name": "Tanaka",
                   "role": "decision_maker", "locale": "ja"},
                  {"id": "C2", "account_id": "A1", "email": "smith@acme.example", "name": "Smith",
                   "role": "decision_maker", "locale": ""}])
    ws.data("usage", [{"account_id": "A1", "metric": "logins", "day": f"2026-11-{d:02}",
                       "value": 500 if d == 23 else 1000} for d in range(17, 31)])
    ws.sync()
    for name, text in TEMPLATES.items():
        ws.template(name, text)
    ws.playbook("value-report", PLAYBOOK)
    ws.cli("validate")
    ws.run("2026-11-30T10:00:00")
    got = mails(ws)
    ja, en = got["tanaka@acme.example"], got["smith@acme.example"]
    assert ja["Subject"] == "Acme 様 今月のご利用状況"
    # the yen sign in its standard form (U+00A5), not CLDR's full-width compatibility form ￥ (U+FFE5)
    assert ja.get_content().strip() == "ご契約 ¥1,200,000、更新日 2026年12月7日、ログイン 7,000 回（8%）、スコア 81"
    assert en["Subject"] == "Your month with us, Acme"
    assert en.get_content().strip() == "Contract ¥1,200,000, renewal December 7, 2026, 7,000 logins (8%), score 81"


def test_validate_wants_a_default_locale_file_and_checks_filter_arguments(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    ws.template("welcome.ja.subject.j2", "ようこそ")
    ws.template("welcome.ja.txt.j2", "ようこそ {{ account.name }}")
    ws.playbook("welcome", PLAYBOOK.replace("value-report", "welcome"))
    out = ws.cli("validate", expect=1).output
    assert "email template `welcome` has ja files but no default-locale ones" in out
    ws.template("welcome.subject.j2", "Welcome")
    ws.template("welcome.txt.j2", "Welcome\n{{ account.arr | currency('YEN') }}")
    out = ws.cli("validate", expect=1).output
    assert "templates/welcome.txt.j2:2: the `currency` filter: `YEN` is not an ISO 4217 currency code" in out
