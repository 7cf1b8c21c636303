"""Evaluation commands: run (one tick, then dispatch), explain (why a subject fires or not), history."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

import click

from engine.app import App
from engine.cli.common import FORMAT, LIMIT, NOW, check_playbook_ids, command, report_invalid
from engine.cli.output import action_summary, err, jsonable, local_time, out, print_json, table
from engine.datamodel import SUBJECT_TYPES


@click.command()
@click.option("--dry-run", is_flag=True, help="change nothing; show what would fire")
@NOW
@click.option("--playbook", "playbook_ids", multiple=True, help="only this playbook (repeatable)")
@click.option("--no-dispatch", is_flag=True, help="plan actions but leave delivery to `playbook dispatch`")
@FORMAT
@command
def run(app: App, dry_run: bool, now: str | None, playbook_ids: tuple[str, ...], no_dispatch: bool,
        fmt: str) -> None:
    """One evaluation tick, then dispatch."""
    from engine.dispatch import deliver_due
    from engine.tick import record_presence, run_tick

    clock = app.clock(now)
    invalid = report_invalid(app)
    check_playbook_ids(app, playbook_ids)
    if not dry_run:
        record_presence(app.store, app.playbooks)
    result = run_tick(app.store, app.settings, app.playbooks, clock, dry_run=dry_run,
                      only=set(playbook_ids) or None)
    stats = None
    if not dry_run and not no_dispatch:
        stats = deliver_due(app.store, app.settings, clock)
    for o in result.playbooks:
        if o.skipped:
            err.file.write(f"{o.playbook}: {o.skipped}\n")
        for key, why in o.unrendered:
            err.file.write(f"{o.playbook}: not planned, rendering failed for {key}: {why} (fix the template or "
                           f"the data, then `playbook outbox retry --rerender`; see `playbook outbox list "
                           f"--status failed`)\n")
    if fmt == "json":
        print_json(result.as_json())
    else:
        title = ("Dry run at " if result.dry_run else "Run at ") + local_time(clock.now, clock.timezone)
        rows = [[e.playbook, e.subject, e.event, e.episode, action_summary(e.actions)] for e in result.events]
        out.print(table(title, ["playbook", "subject", "event", "episode", "actions"], rows,
                        caption=f"{len(rows)} event(s)" + (" — nothing was changed" if result.dry_run else "")))
        if stats is not None:
            parts = ", ".join(f"{k}: {v}" for k, v in sorted(stats.by_outcome.items())) or "nothing due"
            out.print(f"dispatch: {parts}")
    sys.exit(1 if invalid or any(o.unrendered for o in result.playbooks) else 0)


@click.command()
@click.argument("subject_id")
@click.option("--playbook", "playbook_ids", multiple=True, help="only this playbook (repeatable)")
@NOW
@FORMAT
@command
def explain(app: App, subject_id: str, playbook_ids: tuple[str, ...], now: str | None, fmt: str) -> None:
    """Each condition's value for SUBJECT_ID (an id, or type:id) and why each playbook fires or not."""
    from engine.explain import explain_subject

    stype, _, bare = subject_id.rpartition(":")
    if stype and stype not in SUBJECT_TYPES:
        raise click.UsageError(f"`{stype}` is not a subject type; write ID, or account:ID, contact:ID or goal:ID")
    if not bare.strip():
        raise click.UsageError("give the id of an account, contact or goal (or account:ID, contact:ID, goal:ID)")
    clock = app.clock(now)
    check_playbook_ids(app, playbook_ids)
    sid, results = explain_subject(app.store, app.playbooks, subject_id, playbook_ids, clock, app.settings)
    if fmt == "json":
        print_json({"now": clock.local().isoformat(), "subject": sid,
                    "playbooks": [r.as_json(clock.timezone) for r in results]})
        return
    for r in results:
        rows = []
        for c in r.conditions:
            rows.append([c.label, c.text, _show(c.value, clock.timezone)])
            rows += [["", f"  ↳ {text}", _show(value, clock.timezone)] for text, value in c.details()]
        colour = {"fires": "green", "repeats": "green"}.get(r.verdict, "yellow")
        out.print(table(f"{r.playbook} — {r.subject}", ["condition", "expression", "value"], rows,
                        caption=f"[{colour}]{r.verdict}[/]: {r.reason}"))
        if r.deliveries:
            out.print(table("If it fired now (contact policy)", ["action", "to", "zone", "goes out", "waits / cap"],
                            [[d["kind"], ", ".join(d.get("to") or []), d["zone"], d["send_at"],
                              "\n".join(x for x in (d.get("deferred"), d.get("cap")) if x)] for d in r.deliveries]))
        if r.waiting:
            out.print(table("In the outbox", ["#", "action", "status", "due", "why"],
                            [[w["id"], w["kind"], w["status"], w["due"], w["note"] or ""] for w in r.waiting]))
        if not r.sql_agrees:
            err.print("[red]warning:[/] the SQL and Python back ends disagree for this subject — please report it")


def _show(v: Any, tz: str) -> str:
    if v is None:
        return "empty (unknown)"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, datetime):
        return local_time(v, tz, seconds=True)
    return str(v)


@click.command()
@click.option("--playbook", "playbook_id", help="only this playbook")
@click.option("--subject", help="only this subject (id or type:id)")
@click.option("--attempts", "show_attempts", is_flag=True, help="every delivery attempt instead of events")
@click.option("--limit", default=50, show_default=True, type=LIMIT)
@FORMAT
@command
def history(app: App, playbook_id: str | None, subject: str | None, show_attempts: bool, limit: int,
            fmt: str) -> None:
    """What fired (events), or with --attempts each delivery attempt; newest first."""
    tz = app.settings.timezone
    if show_attempts:
        with app.store.read() as tx:
            rows = tx.outbox.attempts(playbook_id=playbook_id, subject=subject, limit=limit)
        if not rows and playbook_id:
            check_playbook_ids(app, [playbook_id], invalid_ok=True)
        if fmt == "json":
            print_json({"attempts": [jsonable(r, tz) for r in rows]})
            return
        out.print(table("Delivery attempts", ["at", "dedup key", "#", "outcome", "worker", "detail"],
                        [[local_time(r["at"], tz, seconds=True), r["dedup_key"], r["attempt"], r["outcome"],
                          r["worker"], (r["detail"] or "")[:70]] for r in rows], nowrap=("at",)))
        return
    with app.store.read() as tx:
        rows = tx.episodes.history(playbook_id=playbook_id, subject=subject, limit=limit)
    if not rows and playbook_id:
        check_playbook_ids(app, [playbook_id], invalid_ok=True)     # nothing fired: is it a playbook's id?
    if fmt == "json":
        print_json({"events": [jsonable(r, tz) for r in rows]})
        return
    out.print(table("History", ["at", "playbook", "subject", "event", "episode", "firing"],
                    [[local_time(r["at"], tz), r["playbook_id"], f"{r['subject_type']}:{r['subject_id']}",
                      r["event"], r["episode"], r["firing"]] for r in rows], nowrap=("at",)))


COMMANDS = [run, explain, history]
