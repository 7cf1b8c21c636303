"""More `playbook` commands: demo, init, outbox, worker, unsubscribe."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import click

from engine.app import App
from engine.cli import FORMAT, _dispatch, command, main
from engine.output import err, jsonable, out, print_json, table

REPO_ROOT = Path(__file__).resolve().parent.parent
SCAFFOLD = Path(__file__).resolve().parent / "scaffold"


def _bundled_playbooks() -> Path:
    return REPO_ROOT / "playbooks"


def scaffold(directory: Path, *, accounts: int = 300, anchor=None) -> dict[str, int]:
    """Write a working directory: config.yaml, playbooks/, templates and sample data."""
    from datetime import date

    from engine.demo_data import generate

    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(SCAFFOLD / "config.yaml", directory / "config.yaml")
    src = _bundled_playbooks()
    shutil.copytree(src, directory / "playbooks", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return generate(directory / "data", anchor or date.today(), accounts=accounts)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--accounts", default=300, show_default=True, help="how many sample accounts to generate")
def init(directory: str, accounts: int) -> None:
    """Scaffold a working directory (config, playbooks, templates, sample data)."""
    target = Path(directory)
    if (target / "config.yaml").exists():
        err.print(f"{target / 'config.yaml'} already exists; choose an empty directory")
        sys.exit(1)
    counts = scaffold(target, accounts=accounts)
    out.print(f"Created {target}/ with config.yaml, playbooks/ and data/ "
              f"({', '.join(f'{v} {k}' for k, v in counts.items())}).")
    out.print(f"Next: cd {target} && playbook validate && playbook sync && playbook run --dry-run")


@main.command()
@click.option("--keep", type=click.Path(file_okay=False), help="work in this directory instead of a temporary one")
@click.option("--accounts", default=300, show_default=True)
def demo(keep: str | None, accounts: int) -> None:
    """Offline end-to-end run on the bundled example data and playbooks, with a summary."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from engine.sync.runner import run_sync
    from engine.tick import run_tick

    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="playbook-demo-"))
    anchor = datetime.now(ZoneInfo("Asia/Tokyo")).date()
    started = time.perf_counter()
    scaffold(work, accounts=accounts, anchor=anchor)
    app = App(work / "config.yaml")
    try:
        out.print(f"[bold]playbook demo[/] in {work}")
        pset = app.playbooks
        if pset.invalid:
            for inv in pset.invalid:
                err.print(f"invalid: {inv.file}")
            sys.exit(1)
        report = run_sync(app.settings, app.db)
        from engine.output import sync_rows

        out.print("synced: " + ", ".join(f"{r['rows']} {r['entity']}" for r in sync_rows(report)))
        clock = app.clock()
        result = run_tick(app.db, app.settings, pset, clock)
        stats = _dispatch(app, clock)
        _summary(app, result, stats, work)
        out.print(f"done in {time.perf_counter() - started:.1f}s — try: playbook --config {work}/config.yaml "
                  f"explain A0001 | history | tasks")
    finally:
        app.close()


def _summary(app: App, result, stats, work: Path) -> None:
    from engine.store import outbox as outbox_store

    with app.db.engine.connect() as conn:
        rows = outbox_store.list_actions(conn, app.db.schema, limit=1_000_000)
    by_pb: dict[str, Counter] = {}
    for r in rows:
        by_pb.setdefault(r["playbook_id"], Counter())[f"{r['kind']}:{r['status']}"] += 1
    fired = Counter(e.playbook for e in result.events if e.event in ("enter", "repeat"))
    table_rows = []
    for pb in app.playbooks.valid:
        c = by_pb.get(pb.id, Counter())
        where = ", ".join(f"{n} {k.replace(':', ' ')}" for k, n in sorted(c.items()))
        table_rows.append([pb.id, pb.subject, fired.get(pb.id, 0), where or "—"])
    out.print(table("Demo summary", ["playbook", "subject", "fired", "actions (kind status)"], table_rows))
    box = app.settings.outbox_dir
    emails = len(list((box / "email").glob("*.eml"))) if (box / "email").exists() else 0
    slack = sum(1 for _ in open(box / "slack.jsonl", encoding="utf-8")) if (box / "slack.jsonl").exists() else 0
    out.print(f"where the messages went: {emails} email file(s) in {box / 'email'}, {slack} Slack message(s) in "
              f"{box / 'slack.jsonl'}, tasks in the built-in task list (`playbook tasks`)")


@main.group()
def outbox() -> None:
    """List, retry and cancel planned actions."""


@outbox.command("list")
@click.option("--status", type=click.Choice(["pending", "claimed", "held", "sent", "failed", "suppressed",
                                             "cancelled"]))
@click.option("--playbook", "playbook_id")
@click.option("--limit", default=50, show_default=True)
@FORMAT
@command
def outbox_list(app: App, status: str | None, playbook_id: str | None, limit: int, fmt: str) -> None:
    """Planned actions, newest first."""
    from engine.store import outbox as store

    with app.db.engine.connect() as conn:
        rows = store.list_actions(conn, app.db.schema, status=status, playbook_id=playbook_id, limit=limit)
        counts = store.counts_by_status(conn, app.db.schema)
    if fmt == "json":
        print_json({"counts": counts, "actions": [
            jsonable({k: v for k, v in r.items() if k != "payload"})
            for r in rows]})
        return
    out.print(table("Outbox", ["#", "status", "kind", "connector", "dedup key", "attempts", "ambiguous", "last error"],
                    [[r["id"], r["status"], r["kind"], r["connector"], r["dedup_key"], r["attempts"],
                      "yes" if r["ambiguous"] else "", (r["last_error"] or "")[:60]] for r in rows],
                    caption=", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))))


def _set(app: App, ids: tuple[int, ...], status: str, from_: tuple[str, ...]) -> int:
    from engine.store import outbox as store
    from engine.tick import wall_clock

    with app.db.engine.begin() as conn:
        return store.set_status(conn, app.db.schema, list(ids), status, wall_clock(), from_)


@outbox.command("retry")
@click.argument("ids", nargs=-1, type=int, required=True)
@command
def outbox_retry(app: App, ids: tuple[int, ...]) -> None:
    """Make failed or held actions due again."""
    n = _set(app, ids, "pending", ("failed", "held"))
    out.print(f"{n} action(s) queued again")


@outbox.command("cancel")
@click.argument("ids", nargs=-1, type=int, required=True)
@command
def outbox_cancel(app: App, ids: tuple[int, ...]) -> None:
    """Cancel pending or held actions."""
    n = _set(app, ids, "cancelled", ("pending", "held"))
    out.print(f"{n} action(s) cancelled")


@main.command()
@click.option("--interval", default=1.0, show_default=True, help="seconds to wait when nothing is due")
@click.option("--max-idle", default=None, type=float, help="exit after this many idle seconds (for scripts)")
@click.option("--log-format", type=click.Choice(["human", "json"]), default="human", show_default=True)
@command
def worker(app: App, interval: float, max_idle: float | None, log_format: str) -> None:
    """Deliver due outbox actions continuously (SIGTERM or Ctrl-C stops cleanly)."""
    import signal
    import threading

    from connectors.registry import build_connectors
    from engine.dispatch import Dispatcher
    from engine.logs import setup_logging
    from engine.service import run_worker_loop
    from engine.tick import wall_clock

    setup_logging(log_format)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    connectors = build_connectors(app.settings, app.db, wall_clock)
    try:
        run_worker_loop(Dispatcher(app.db, app.settings, connectors), stop, idle_s=interval, max_idle=max_idle)
    finally:
        for c in connectors.values():
            c.close()


@main.command()
@click.option("--workers", default=2, show_default=True, help="dispatch threads in this process")
@click.option("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port")
@click.option("--unsubscribe-port", type=int, default=None, help="serve the one-click unsubscribe endpoint")
@click.option("--log-format", type=click.Choice(["human", "json"]), default="human", show_default=True)
@click.option("--lease", default=15.0, show_default=True, help="leader lease in seconds (take-over time)")
@click.option("--every", type=float, default=None, hidden=True,
              help="evaluate every N seconds instead of the cron schedules (tests, demos)")
@command
def start(app: App, workers: int, metrics_port: int | None, unsubscribe_port: int | None, log_format: str,
          lease: float, every: float | None) -> None:
    """The long-running service: scheduled syncs and evaluations, continuous dispatch."""
    from engine.logs import setup_logging
    from engine.service import Service

    setup_logging(log_format)
    app.settings, app.db  # noqa: B018 - fail fast on a bad config or database, before starting threads
    sys.exit(Service(app, workers=workers, every=every, lease_s=lease, metrics_port=metrics_port,
                     unsubscribe_port=unsubscribe_port).run())


@main.command()
@FORMAT
@command
def status(app: App, fmt: str) -> None:
    """Last run of every playbook, queue depth by state, failures, next scheduled times, the leader."""
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    from apscheduler.triggers.cron import CronTrigger

    from engine.store import leases, outbox as store, playbook_state

    tz = ZoneInfo(app.settings.timezone)
    with app.db.engine.connect() as conn:
        states = playbook_state.all_states(conn, app.db.schema)
        counts = store.counts_by_status(conn, app.db.schema)
        failed = store.list_actions(conn, app.db.schema, status="failed", limit=10)
        leader = leases.holder(conn, app.db.schema, "scheduler")
        synced = playbook_state.last_synced(conn, app.db.schema)
    now = datetime.now(tz)
    rows = []
    for pb in app.playbooks.valid:
        cron = pb.spec.schedule or app.settings.defaults.schedule
        nxt = CronTrigger.from_crontab(cron, timezone=tz).get_next_fire_time(None, now) if pb.spec.enabled else None
        st = states.get(pb.id, {})
        last = st.get("last_evaluated_at")
        rows.append({"playbook": pb.id, "enabled": pb.spec.enabled, "schedule": cron,
                     "last_run": last.replace(tzinfo=timezone.utc).astimezone(tz).isoformat() if last else None,
                     "status": st.get("status"), "detail": st.get("detail"),
                     "next_run": nxt.isoformat() if nxt else None})
    doc = {"playbooks": rows, "invalid": [i.file for i in app.playbooks.invalid], "queue": counts,
           "recent_failures": [{"id": f["id"], "dedup_key": f["dedup_key"], "error": f["last_error"]} for f in failed],
           "leader": ({"owner": leader["owner"], "until": leader["until"].isoformat()}
                      if leader and leader["until"] > datetime.now(timezone.utc).replace(tzinfo=None) else None),
           "synced": {k: v.isoformat() for k, v in synced.items()}}
    if fmt == "json":
        print_json(doc)
        return
    out.print(table("Playbooks", ["playbook", "schedule", "last run", "status", "next run"],
                    [[r["playbook"] + ("" if r["enabled"] else " (disabled)"), r["schedule"],
                      (r["last_run"] or "never")[:16], (r["status"] or "") + (f": {r['detail'].get('reason')}"
                      if r["detail"] and r["detail"].get("reason") else ""), (r["next_run"] or "")[:16]]
                     for r in rows]))
    out.print(table("Outbox", ["state", "actions"], sorted(counts.items())))
    if failed:
        out.print(table("Recent failures", ["#", "dedup key", "error"],
                        [[f["id"], f["dedup_key"], (f["last_error"] or "")[:80]] for f in failed]))
    out.print(f"leader: {doc['leader']['owner'] + ' until ' + doc['leader']['until'] if doc['leader'] else 'none'}; "
              f"last sync: " + (", ".join(f"{k} {v[:16]}" for k, v in doc["synced"].items()) or "never"))
    if app.playbooks.invalid:
        err.file.write("invalid playbooks (not running): " + ", ".join(doc["invalid"]) + "\n")


@main.command()
@click.argument("emails", nargs=-1)
@click.option("--remove", is_flag=True, help="take the addresses off the suppression list (resubscribe)")
@click.option("--list", "show", is_flag=True, help="show the suppression list")
@FORMAT
@command
def unsubscribe(app: App, emails: tuple[str, ...], remove: bool, show: bool, fmt: str) -> None:
    """Never email these addresses again (checked at send time), or --remove / --list."""
    from engine.store import suppression
    from engine.tick import wall_clock

    if not emails and not show:
        raise click.UsageError("give one or more email addresses, or --list")
    with app.db.engine.begin() as conn:
        for e in emails:
            if "@" not in e:
                raise click.UsageError(f"`{e}` is not an email address")
            if remove:
                suppression.remove(conn, app.db.schema, e)
            else:
                suppression.add(conn, app.db.schema, e, "unsubscribed", wall_clock(), "playbook unsubscribe")
        rows = suppression.list_all(conn, app.db.schema) if show else []
    if emails:
        out.print(f"{len(emails)} address(es) {'resubscribed' if remove else 'suppressed'}")
    if show:
        if fmt == "json":
            print_json({"suppressed": [{**r, "at": r["at"].isoformat()} for r in rows]})
        else:
            out.print(table("Suppression list", ["email", "reason", "since (UTC)", "detail"],
                            [[r["email"], r["reason"], f"{r['at']:%Y-%m-%d %H:%M}", r["detail"]] for r in rows]))
