"""`playbook demo`: the whole path on a scaffolded working directory — sync the sample data, one tick of the
example playbooks, dispatch to the local sinks — and what happened, per playbook."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from engine.app import App
from engine.errors import UserError


@dataclass
class DemoReport:
    """What the demo did: rows synced per entity, and per playbook what fired and the actions by kind and state."""

    synced: dict[str, int]
    playbooks: list[tuple[str, str, int, dict[str, int]]]      # (id, subject, fired, {"email sent": n, ...})
    emails: int                                                 # .eml files written to the local sink
    slack: int                                                  # Slack messages in the local sink
    outbox_dir: Path


def run_demo(work: Path, *, accounts: int = 300, say: Callable[[str], None] = lambda _: None) -> DemoReport:
    """Scaffold `work`, sync, evaluate and dispatch; `say` hears about each step as it starts."""
    from engine.dispatch import deliver_due
    from engine.sync.runner import run_sync
    from engine.tick import run_tick
    from engine.workspace import scaffold

    scaffold(work, accounts=accounts, anchor=datetime.now(ZoneInfo("Asia/Tokyo")).date())
    app = App(work / "config.yaml")
    try:
        if app.playbooks.invalid:
            raise UserError([d for inv in app.playbooks.invalid for d in inv.diagnostics])
        say("sync")
        report = run_sync(app.settings, app.store)
        synced = {name: r.read for name, r in report.entities.items()}
        say("evaluate")
        clock = app.clock()
        result = run_tick(app.store, app.settings, app.playbooks, clock)
        say("dispatch")
        deliver_due(app.store, app.settings, clock)
        with app.store.read() as tx:
            rows = tx.outbox.list(limit=1_000_000)
    finally:
        app.close()
    by_pb: dict[str, Counter] = {}
    for r in rows:
        by_pb.setdefault(r["playbook_id"], Counter())[f"{r['kind']} {r['status']}"] += 1
    fired = Counter(e.playbook for e in result.events if e.event in ("enter", "repeat"))
    playbooks = [(pb.id, pb.subject, fired.get(pb.id, 0), dict(sorted(by_pb.get(pb.id, Counter()).items())))
                 for pb in app.playbooks.valid]
    box = app.settings.outbox_dir
    emails = len(list((box / "email").glob("*.eml"))) if (box / "email").exists() else 0
    slack = sum(1 for _ in open(box / "slack.jsonl", encoding="utf-8")) if (box / "slack.jsonl").exists() else 0
    return DemoReport(synced, playbooks, emails, slack, box)
