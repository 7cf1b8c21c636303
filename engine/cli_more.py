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
from engine.output import err, out, print_json, table

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
    from datetime import date
    from zoneinfo import ZoneInfo
    from datetime import datetime

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
            {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items() if k != "payload"}
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
@command
def worker(app: App, interval: float, max_idle: float | None) -> None:
    """Deliver due outbox actions continuously (Ctrl-C or SIGTERM to stop cleanly)."""
    import signal

    from connectors.registry import build_connectors
    from engine.dispatch import Dispatcher
    from engine.tick import wall_clock

    stop = {"now": False}

    def _stop(*_):  # noqa: ANN002
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    connectors = build_connectors(app.settings, app.db, wall_clock)
    d = Dispatcher(app.db, app.settings, connectors)
    idle_since = time.monotonic()
    try:
        while not stop["now"]:
            items = d.claim()
            for item in items:
                d.handle(item)
            if items:
                idle_since = time.monotonic()
                continue
            if max_idle is not None and time.monotonic() - idle_since >= max_idle:
                break
            time.sleep(interval)
    finally:
        d.release()
        for c in connectors.values():
            c.close()
