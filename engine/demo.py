"""`playbook demo`: the whole path on a scaffolded working directory — the example playbooks switched on
yesterday on the data as it stood then, today's data synced and evaluated, dispatch to the local sinks — and
what happened, per playbook."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from engine.app import App
from engine.clock import scheduled_between
from engine.demo_data import LOCAL
from engine.digests import DIGEST_PLAYBOOK
from engine.errors import UserError


@dataclass
class DemoReport:
    """What the demo did: rows synced per entity, and per playbook what fired and the actions by kind and state."""

    synced: dict[str, int]
    playbooks: list[tuple[str, str, int, int, dict[str, int]]]  # (id, subject, fired, baselined, {"email sent": n})
    emails: int                                                 # .eml files written to the local sink
    slack: int                                                  # Slack messages in the local sink
    outbox_dir: Path
    not_due: dict[str, str]                                     # playbook -> its own schedule, not due in the demo
    journeys: list[Any] = field(default_factory=list)           # engine.journey_view.JourneySummary per journey
    timezone: str = "UTC"                                       # the config zone (times shown in it)
    digests: list[tuple[str, str, int, str]] = field(default_factory=list)   # (channel, to, items, status) sent
    digest_waiting: dict[str, int] = field(default_factory=dict)  # recipient -> items waiting for the next digest


def run_demo(work: Path, *, accounts: int = 300, say: Callable[[str], None] = lambda _: None) -> DemoReport:
    """Scaffold `work`, sync, evaluate and dispatch; `say` hears about each step as it starts."""
    from engine.dispatch import deliver_due
    from engine.sync.runner import run_sync
    from engine.tick import run_tick
    from engine.workspace import scaffold

    today = datetime.now(ZoneInfo("Asia/Tokyo")).date()
    scaffold(work, accounts=accounts, anchor=today)
    app = App(work / "config.yaml")
    try:
        if app.playbooks.invalid:
            raise UserError([d for inv in app.playbooks.invalid for d in inv.diagnostics])
        # Yesterday the team switched the playbooks on: the data as it was then is synced and evaluated, and
        # each playbook's first run (its activation, §12) baselines or fires for what already matched. Today
        # the new contacts and goals reached are synced, and today's run fires for them.
        say("sync")
        clock = app.clock()
        yesterday = app.clock(clock.local() - timedelta(days=1))
        data = work / "data"
        todays = {p.name: p.read_bytes() for p in data.glob("*.csv")}
        as_of(data, yesterday.local())
        run_sync(app.settings, app.store, now=yesterday.now)
        say("evaluate")
        # a playbook with a schedule of its own (the monthly report) is evaluated only if that schedule came
        # round during the demo's day, as `playbook start` would; the others as a daily run would
        unscheduled = {pb.id for pb in app.playbooks.valid if pb.spec.schedule and not scheduled_between(
            pb.spec.schedule, yesterday.now, clock.now, app.settings.timezone)}
        due = {pb.id for pb in app.playbooks.valid if pb.spec.enabled} - unscheduled
        switched_on = run_tick(app.store, app.settings, app.playbooks, yesterday, only=due)
        deliver_due(app.store, app.settings, yesterday)
        for name, content in todays.items():
            (data / name).write_bytes(content)
        report = run_sync(app.settings, app.store, now=clock.now)
        synced = {name: r.read for name, r in report.entities.items()}
        result = run_tick(app.store, app.settings, app.playbooks, clock, only=due)
        say("dispatch")
        deliver_due(app.store, app.settings, clock)
        with app.store.read() as tx:
            rows = tx.outbox.list(limit=1_000_000)
            journey_rows = tx.journeys.counts()
    finally:
        app.close()
    by_pb: dict[str, Counter] = {}
    digests, waiting = [], Counter()
    for r in rows:
        if r["playbook_id"] == DIGEST_PLAYBOOK:
            digests.append((r["connector"], r["digest"]["to"], r["digest"]["items"], r["status"]))
            continue
        status = "deferred" if r["status"] == "pending" and r.get("note") else r["status"]   # contact policy
        if r["status"] == "digest":
            status, waiting[r["digest"]["to"]] = "waiting for the digest", waiting[r["digest"]["to"]] + 1
        elif r.get("digest_key"):
            status = f"in a digest ({status})"
        by_pb.setdefault(r["playbook_id"], Counter())[f"{r['kind']} {status}"] += 1
    fired = Counter(e.playbook for run in (switched_on, result) for e in run.events
                    if e.event in ("enter", "repeat"))
    baselined = {o.playbook: o.counts["baseline"] for o in switched_on.playbooks}
    playbooks = [(pb.id, pb.subject, fired.get(pb.id, 0), baselined.get(pb.id, 0),
                  dict(sorted(by_pb.get(pb.id, Counter()).items()))) for pb in app.playbooks.valid]
    box = app.settings.outbox_dir
    emails = len(list((box / "email").glob("*.eml"))) if (box / "email").exists() else 0
    slack = sum(1 for _ in open(box / "slack.jsonl", encoding="utf-8")) if (box / "slack.jsonl").exists() else 0
    not_due = {pb.id: pb.spec.schedule for pb in app.playbooks.valid if pb.id in unscheduled}
    from engine.journey_view import summaries

    return DemoReport(synced, playbooks, emails, slack, box, not_due, summaries(journey_rows, app.playbooks),
                      app.settings.timezone, sorted(digests), dict(sorted(waiting.items())))


def as_of(data: Path, moment: datetime) -> None:
    """Rewrite the sample data as it stood at `moment` (aware): without the accounts and contacts created since,
    and with one in three of the goals reached not reached yet."""
    def created_since(row: dict[str, str]) -> bool:
        created = datetime.fromisoformat(row["created_at"]) if row.get("created_at") else None
        return created is not None and (created if created.tzinfo else created.replace(tzinfo=LOCAL)) > moment

    accounts = _rows(data / "accounts.csv")
    new = {r["id"] for r in accounts if created_since(r)}
    _rewrite(data / "accounts.csv", [r for r in accounts if r["id"] not in new])
    _rewrite(data / "contacts.csv", [r for r in _rows(data / "contacts.csv")
                                     if r["account_id"] not in new and not created_since(r)])
    _rewrite(data / "usage.csv", [r for r in _rows(data / "usage.csv") if r["account_id"] not in new])
    goals = []
    for n, r in enumerate(g for g in _rows(data / "goals.csv") if g["account_id"] not in new):
        if r["status"] == "achieved" and n % 3 == 0:
            r = {**r, "status": "on_track", "current": r["baseline"]}
        goals.append(r)
    _rewrite(data / "goals.csv", goals)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _rewrite(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
