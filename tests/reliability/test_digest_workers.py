"""Digests under concurrent workers (§15): four dispatch processes on PostgreSQL start at once on the items of many
CSMs from five playbooks; each CSM gets exactly one digest per channel listing each of their alerts once."""

from __future__ import annotations

import email
import json
from collections import Counter
from datetime import datetime, timedelta, timezone

from reliability.figures import record_figure

CSMS, PLAYBOOKS, ACCOUNTS, WORKERS = 10, 5, 8, 4      # 40 alerts per CSM per channel
RISK = """
id: risk{n}
name: Risk {n}
activation: fire
trigger: {{when: "account.arr > 0"}}
actions:
  - slack: {{to: "{{{{ account.csm_email }}}}", text: "{{{{ account.id }}}} risk {n}", digest: daily}}
  - email: {{to: "{{{{ account.csm_email }}}}", subject: "{{{{ account.id }}}} risk {n}", body: "x", digest: daily}}
"""


def test_four_workers_send_each_digest_once_with_every_item(pg_ws) -> None:  # noqa: ANN001
    ws = pg_ws
    ws.data("accounts", [{"id": f"A{c:02}-{a}", "name": f"Acme {c}-{a}", "arr": 10, "csm_email": f"csm{c:02}@x.example"}
                         for c in range(CSMS) for a in range(ACCOUNTS)])
    ws.sync()
    for n in range(PLAYBOOKS):
        ws.playbook(f"risk{n}", RISK.format(n=n))
    # planned two days ago: yesterday's 09:00 digest is due for the workers' wall clock
    day = (datetime.now(timezone.utc) - timedelta(days=2)).date()
    ws.cli("run", "--now", f"{day.isoformat()}T10:00:00", "--no-dispatch")
    items = [r for r in ws.outbox_rows() if r["status"] == "digest"]
    assert len(items) == 2 * CSMS * PLAYBOOKS * ACCOUNTS
    procs = [ws.spawn("dispatch") for _ in range(WORKERS)]     # all at once: each makes the digests it finds due
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    slack = [json.loads(line) for line in (ws.root / "outbox" / "slack.jsonl").read_text().splitlines()]
    assert Counter(m["to"] for m in slack) == Counter({f"csm{c:02}@x.example": 1 for c in range(CSMS)})
    for m in slack:
        listed = [line for line in m["text"].split("\n") if line.startswith("• ")]
        c = m["to"][3:5]
        assert sorted(listed) == sorted(f"• Acme {int(c)}-{a}: A{c}-{a} risk {n}"
                                        for n in range(PLAYBOOKS) for a in range(ACCOUNTS))
    mails = [email.message_from_bytes(p.read_bytes()) for p in (ws.root / "outbox" / "email").glob("*.eml")]
    assert Counter(m["To"] for m in mails) == Counter({f"csm{c:02}@x.example": 1 for c in range(CSMS)})
    rows = ws.outbox_rows()
    digests = [r for r in rows if r["subject_type"] == "digest"]
    assert len(digests) == 2 * CSMS and all(r["status"] == "sent" for r in rows)
    assert sum(r["digest"]["items"] for r in digests) == len(items)
    keys = {r["dedup_key"] for r in digests}
    assert all(r["digest_key"] in keys for r in rows if r["subject_type"] != "digest")
    record_figure("digests under concurrent workers", {
        "workers": WORKERS, "items": len(items), "digests sent": len(slack) + len(mails),
        "items per digest": len(items) // len(digests)})
