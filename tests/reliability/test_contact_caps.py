"""Frequency caps hold under concurrent workers (§13): four dispatch processes on PostgreSQL race over the same
contacts' messages from three playbooks, and no contact or account gets more than its cap."""

from __future__ import annotations

import email
from collections import Counter

from reliability.figures import record_figure
from integration.test_contact_policy import EMAIL

ACCOUNTS, CONTACTS, PLAYBOOKS, WORKERS = 60, 3, 3, 4
CAPS = """
contact_policy:
  caps:
    - {per: contact, max: 2, within: 7d}
    - {per: account, max: 5, within: 7d}
"""


def test_four_workers_never_send_past_a_cap(pg_ws) -> None:  # noqa: ANN001
    ws = pg_ws
    ws.configure(CAPS)
    ws.data("accounts", [{"id": f"A{a:02}", "name": f"Acme {a}", "arr": 10} for a in range(ACCOUNTS)])
    ws.data("contacts", [{"id": f"C{a:02}-{c}", "account_id": f"A{a:02}", "email": f"c{a:02}-{c}@example.jp",
                          "name": "x", "role": "champion"} for a in range(ACCOUNTS) for c in range(CONTACTS)])
    ws.sync()
    for p in range(PLAYBOOKS):
        ws.playbook(f"pb{p}", EMAIL.format(id=f"pb{p}", extra=""))
    ws.cli("run", "--no-dispatch")
    procs = [ws.spawn("dispatch") for _ in range(WORKERS)]     # all at once, each delivering what it claims
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    per_contact: Counter = Counter()
    for path in (ws.root / "outbox" / "email").glob("*.eml"):
        per_contact[email.message_from_bytes(path.read_bytes())["To"]] += 1
    per_account: Counter = Counter()
    for address, n in per_contact.items():
        per_account[address.split("-")[0]] += n
    rows = [r for r in ws.outbox_rows() if r["kind"] == "email"]
    tried = len(rows)
    assert tried == ACCOUNTS * CONTACTS * PLAYBOOKS
    assert max(per_contact.values()) <= 2
    # each account's nine messages: sent until its fifth (no contact can stop that: three contacts may take 6)
    assert per_account == Counter({f"c{a:02}": 5 for a in range(ACCOUNTS)})
    statuses = Counter(r["status"] for r in rows)
    assert statuses == Counter({"sent": 5 * ACCOUNTS, "suppressed": tried - 5 * ACCOUNTS})
    assert all(r["last_error"].startswith("frequency cap: ") for r in rows if r["status"] == "suppressed")
    record_figure("contact caps under concurrent workers", {
        "workers": WORKERS, "messages tried": tried, "sent": statuses["sent"], "capped": statuses["suppressed"],
        "most to one contact": max(per_contact.values()), "most to one account": max(per_account.values())})
