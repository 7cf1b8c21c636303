"""The contact policy (§13): messages to customers go out at a decent hour in the recipient's zone, on business
days, and never more often than the caps allow — across playbooks, and under concurrent workers."""

from __future__ import annotations

import email
import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import Workspace

POLICY = """
contact_policy:
  quiet_hours: {start: "19:00", end: "09:00"}
  business_days: {holidays: JP}
"""
CAPS = """
contact_policy:
  caps:
    - {per: contact, max: 2, within: 7d}
    - {per: account, max: 5, within: 7d}
  on_cap: %s
"""
EMAIL = """
id: {id}
name: {id}
activation: fire
{extra}
trigger: {{when: account.arr < 100}}
actions:
  - email: {{to: {{role: champion}}, subject: "{id} for {{{{ account.name }}}}", body: "Hello {{{{ contact.name }}}}"}}
  - slack: {{channel: "#cs", text: "{id}: {{{{ account.name }}}}"}}
"""


def people(ws: Workspace, accounts: int = 1, per_account: int = 2, zones: tuple[str | None, ...] = (None,)) -> None:
    ws.data("accounts", [{"id": f"A{a}", "name": f"Acme {a}", "arr": 10, "timezone": "Asia/Tokyo"}
                         for a in range(accounts)])
    ws.data("contacts", [{"id": f"C{a}-{c}", "account_id": f"A{a}", "email": f"c{a}-{c}@example.jp",
                          "name": f"Person {a}-{c}", "role": "champion", "timezone": zones[c % len(zones)]}
                         for a in range(accounts) for c in range(per_account)])
    ws.sync()


def delivered(ws: Workspace) -> Counter:
    """Messages written by the local email sink, per recipient address."""
    found: Counter = Counter()
    for path in (ws.root / "outbox" / "email").glob("*.eml"):
        found[email.message_from_bytes(path.read_bytes())["To"]] += 1
    return found


def test_quiet_hours_and_holidays_wait_for_the_recipients_next_business_morning(ws: Workspace) -> None:
    ws.timezone = "Asia/Tokyo"
    ws.configure(POLICY)
    people(ws, zones=("Asia/Tokyo", "America/New_York"))
    ws.playbook("nudge", EMAIL.format(id="nudge", extra=""))
    # Saturday 9 January 2027, 23:00 in Tokyo (09:00 on Saturday in New York); Monday the 11th is a Japanese
    # public holiday, so both contacts get it on Tuesday the 12th at 09:00, each in their own zone
    dry = ws.run("2027-01-09T23:00", "--dry-run")
    email_actions = [a for e in dry["events"] for a in e["actions"] if a["kind"] == "email"]
    assert {(a["to"][0], a["zone"], a["send_at"]) for a in email_actions} == {
        ("c0-0@example.jp", "Asia/Tokyo", "2027-01-12T09:00:00+09:00"),
        ("c0-1@example.jp", "America/New_York", "2027-01-12T09:00:00-05:00")}
    assert all(a["deferred"].startswith("deferred: not a business day (Saturday) until 2027-01-12T09:00:00")
               for a in email_actions)
    ws.run("2027-01-09T23:00")
    rows = {r["contact_id"] or r["kind"]: r for r in ws.outbox_rows()}
    assert rows["slack"]["status"] == "sent"                       # internal: not touched by the policy
    assert rows["C0-0"]["status"] == rows["C0-1"]["status"] == "pending"
    listed = json.loads(ws.cli("outbox", "list", "--format", "json").stdout)["actions"]
    assert {a["note"] for a in listed if a["kind"] == "email"} == {
        "deferred: not a business day (Saturday) until 2027-01-12T09:00:00+09:00",
        "deferred: not a business day (Saturday) until 2027-01-12T09:00:00-05:00"}
    assert delivered(ws) == Counter()
    ws.run("2027-01-12T09:01")                                    # Tokyo's morning: only the Tokyo contact
    assert delivered(ws) == Counter({"c0-0@example.jp": 1})
    ws.run("2027-01-12T23:01")                                    # 09:01 in New York
    assert delivered(ws) == Counter({"c0-0@example.jp": 1, "c0-1@example.jp": 1})


def test_an_exempt_playbook_is_neither_delayed_nor_counted(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    ws.configure(POLICY + "  caps: [{per: contact, max: 1, within: 7d}]\n")
    people(ws, per_account=1)
    ws.playbook("receipt", EMAIL.format(id="receipt", extra="contact_policy: exempt"))
    ws.playbook("nudge", EMAIL.format(id="nudge", extra=""))
    ws.run("2027-01-12T02:00")                          # a Tuesday, 11:00 in Tokyo (the account's zone)
    assert delivered(ws) == Counter({"c0-0@example.jp": 2})  # the receipt does not use up the one a week


@pytest.mark.parametrize("on_cap", ["drop", "defer"])
def test_caps_hold_across_playbooks_and_show_in_dry_runs_and_explain(ws: Workspace, on_cap: str) -> None:
    ws.configure(CAPS % on_cap)
    people(ws, accounts=1, per_account=3)
    for pid in ("first", "second", "third"):
        ws.playbook(pid, EMAIL.format(id=pid, extra=""))
    # dispatched in the order planned: the first two playbooks' six messages reach the account cap (5) at
    # the second playbook's third contact; the third playbook's first two contacts have had their two
    expected = {("second", "c0-2@example.jp"): "frequency cap: 5 per account in 7d",
                ("third", "c0-0@example.jp"): "frequency cap: 2 per contact in 7d",
                ("third", "c0-1@example.jp"): "frequency cap: 2 per contact in 7d",
                ("third", "c0-2@example.jp"): "frequency cap: 5 per account in 7d"}
    dry = ws.run("2027-01-12T10:00", "--dry-run")
    previewed = {(e["playbook"], a["to"][0]): a["cap"] for e in dry["events"] for a in e["actions"] if a.get("cap")}
    assert {k: v.split(" (")[0] for k, v in previewed.items()} == expected
    ws.run("2027-01-12T10:00")
    got = delivered(ws)
    assert sum(got.values()) == 5 and max(got.values()) <= 2
    stopped = {(r["playbook_id"], f"{r['contact_id'].lower()}@example.jp"): r for r in ws.outbox_rows()
               if r["kind"] == "email" and r["status"] != "sent"}
    assert set(stopped) == set(expected)
    for key, r in stopped.items():
        if on_cap == "drop":
            assert (r["status"], r["last_error"]) == ("suppressed", expected[key])
        else:
            assert r["status"] == "pending" and r["attempts"] == 0     # a deferral is not a delivery attempt
            # a week after the first sends, shown in the recipient's zone (the account's: Asia/Tokyo)
            assert r["note"] == f"deferred: {expected[key]} until 2027-01-19T19:00:00+09:00"
    explained = json.loads(ws.cli("explain", "A0", "--playbook", "third", "--now", "2027-01-12T11:00",
                                  "--format", "json").stdout)["playbooks"][0]
    assert all(d["cap"] for d in explained["deliveries"])       # were it to fire again now, every one is capped
    assert len(explained["waiting"]) == 3                       # the third playbook's three, capped
    if on_cap == "defer":
        ws.run("2027-01-19T10:05")                          # a week later the window has room again
        assert sum(delivered(ws).values()) == 9


def test_the_monthly_report_example_goes_out_every_first_at_the_next_business_morning(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    ws.timezone = "Asia/Tokyo"
    ws.configure(POLICY)
    example = Path(__file__).parents[2] / "playbooks"
    ws.playbook("monthly-value-report", (example / "monthly-value-report.yaml").read_text())
    for part in ("subject", "txt", "html"):
        name = f"monthly-value-report.{part}.j2"
        ws.template(name, (example / "templates" / name).read_text())
    ws.data("accounts", [{"id": "A1", "name": "Acme", "arr": 5000, "seats": 12, "renewal_date": "2027-09-30",
                          "timezone": "Asia/Tokyo", "lifecycle_stage": "adoption"}])
    ws.data("contacts", [{"id": "C1", "account_id": "A1", "email": "boss@acme.jp", "name": "Boss",
                          "role": "decision_maker"}])
    ws.sync()
    sends = {}
    for first in ("2027-01-01", "2027-02-01", "2027-03-01", "2027-04-01"):
        events = ws.run(f"{first}T10:00")["events"]
        assert [e["event"] for e in events] == (["enter"] if first == "2027-01-01" else ["repeat"])
        sends[first] = events[0]["actions"][0]["send_at"]
    # New Year's Day is a holiday and the 2nd and 3rd a weekend; 1 February and 1 March 2027 are business
    # days; 1 April is a Thursday: the report goes out at once, or the next business morning at 09:00
    assert sends == {"2027-01-01": "2027-01-04T09:00:00+09:00", "2027-02-01": "2027-02-01T10:00:00+09:00",
                     "2027-03-01": "2027-03-01T10:00:00+09:00", "2027-04-01": "2027-04-01T10:00:00+09:00"}
