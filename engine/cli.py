"""The `playbook` command line (§11): thin commands that parse options, call the engine and print."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from engine.app import App
from engine.errors import UserError
from engine.output import action_summary, err, jsonable, out, print_diagnostics, print_json, sync_rows, table

FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
                      show_default=True, help="table for people, json for machines")


def config_option(fn: Callable) -> Callable:
    return click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
                        help="config file (default: $PLAYBOOK_CONFIG, else ./config.yaml)")(fn)


def command(fn: Callable) -> Callable:
    """Turn user errors into messages with exit code 1 — never a traceback for a user's mistake."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        config = kwargs.pop("config", None) or (ctx.obj or {}).get("config")
        app = App(config)
        try:
            return fn(app, *args, **kwargs)
        except UserError as exc:
            print_diagnostics(exc.diagnostics, limit=50)
            sys.exit(exc.exit_code)
        finally:
            app.close()

    return config_option(wrapper)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", type=click.Path(dir_okay=False), default=None, help="config file for every command")
@click.version_option(package_name="playbook-engine")
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """Rules-driven playbook automation for customer success."""
    ctx.obj = {"config": config}


def _report_invalid(app: App) -> int:
    invalid = app.playbooks.invalid
    for inv in invalid:
        err.file.write(f"skipped {inv.file}: invalid playbook\n")
        print_diagnostics(inv.diagnostics)
    return len(invalid)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@FORMAT
@command
def validate(app: App, paths: tuple[str, ...], fmt: str) -> None:
    """Check config, playbooks and templates; print file:line:col: message; exit 1 on errors."""
    from engine.spec.loader import load_playbooks, playbook_files

    settings = app.settings
    files: list[Path] = []
    for p in paths:
        files += playbook_files(Path(p)) if Path(p).is_dir() else [Path(p)]
    pset = load_playbooks(settings, files or None)
    diags = pset.diagnostics
    if fmt == "json":
        print_json({"valid": [p.id for p in pset.valid],
                    "errors": [{"file": d.file, "line": d.line, "col": d.col, "message": d.message,
                                "hint": d.hint} for d in diags]})
    else:
        print_diagnostics(diags, stream=out)
        n = len(pset.valid) + len(pset.invalid)
        summary = f"{len(pset.valid)} of {n} playbook(s) valid"
        out.print(("[green]✓[/] " if not diags else "[red]✗[/] ") + summary + (f", {len(diags)} problem(s)" if diags
                                                                                else ""))
    sys.exit(1 if diags else 0)


@main.command()
@click.option("--skip-invalid", is_flag=True, help="load the good rows and report the bad ones")
@click.option("--entity", "entities", multiple=True, type=click.Choice(["accounts", "contacts", "usage", "goals"]),
              help="sync only these entities")
@FORMAT
@command
def sync(app: App, skip_invalid: bool, entities: tuple[str, ...], fmt: str) -> None:
    """Load all sources into the database (atomic per entity)."""
    from engine.sync.progress import rich_progress
    from engine.sync.runner import run_sync

    from engine.sync.runner import SyncFailed

    try:
        with rich_progress() as progress:
            report = run_sync(app.settings, app.db, skip_invalid=skip_invalid, entities=list(entities) or None,
                              progress=progress)
    except SyncFailed as exc:
        if fmt == "table":
            _print_sync(exc.report, fmt, problems=False)
        err.file.write("sync failed — nothing of these entities changed: " + ", ".join(exc.report.failed)
                       + " (fix the rows below, or rerun with --skip-invalid to load the good rows)\n")
        raise
    _print_sync(report, fmt)


def _print_sync(report: Any, fmt: str, *, problems: bool = True) -> None:
    rows = sync_rows(report)
    if fmt == "json":
        print_json({"entities": rows})
        return
    for w in report.warnings:
        err.print(f"warning: {w}", markup=False, highlight=False)
    out.print(table("Sync", ["entity", "mode", "rows read", "inserted", "updated", "removed", "invalid", "seconds"],
                    [[r["entity"], r["mode"], r["rows"], r["inserted"], r["updated"],
                      r["removed"] + sum(r["cascaded"].values()), r["invalid"], f"{r['seconds']:.2f}"]
                     for r in rows]))
    if problems and report.problems:
        err.file.write("skipped rows:\n")
        print_diagnostics(report.problems, limit=20)


@main.command()
@click.option("--dry-run", is_flag=True, help="change nothing; show what would fire")
@click.option("--now", help="evaluate at this ISO date-time (no offset = config timezone)")
@click.option("--playbook", "playbook_ids", multiple=True, help="only this playbook (repeatable)")
@click.option("--no-dispatch", is_flag=True, help="plan actions but leave delivery to `playbook dispatch`")
@FORMAT
@command
def run(app: App, dry_run: bool, now: str | None, playbook_ids: tuple[str, ...], no_dispatch: bool,
        fmt: str) -> None:
    """One evaluation tick, then dispatch."""
    from engine.tick import run_tick

    clock = app.clock(now)
    invalid = _report_invalid(app)
    unknown = [p for p in playbook_ids if app.playbooks.get(p) is None]
    if unknown:
        raise click.UsageError(f"unknown playbook id(s): {', '.join(unknown)}; "
                               f"known: {', '.join(p.id for p in app.playbooks.valid)}")
    result = run_tick(app.db, app.settings, app.playbooks, clock, dry_run=dry_run, only=set(playbook_ids) or None)
    stats = None
    if not dry_run and not no_dispatch:
        stats = _dispatch(app, clock)
    for o in result.outcomes:
        if o.skipped:
            err.file.write(f"{o.playbook}: {o.skipped}\n")
    if fmt == "json":
        print_json(result.as_json())
    else:
        _print_run(result, stats)
    sys.exit(1 if invalid else 0)


def _dispatch(app: App, clock: Any) -> Any:
    from connectors.registry import build_connectors
    from engine.dispatch import Dispatcher
    from engine.tick import wall_clock

    when = (lambda: max(wall_clock(), clock.now))
    connectors = build_connectors(app.settings, app.db, when)
    try:
        return Dispatcher(app.db, app.settings, connectors, clock=when).run_once()
    finally:
        for c in connectors.values():
            c.close()


def _print_run(result: Any, stats: Any) -> None:
    title = ("Dry run at " if result.dry_run else "Run at ") + result.as_json()["now"]
    rows = [[e.playbook, e.subject, e.event, e.episode, action_summary(e.actions)] for e in result.events]
    out.print(table(title, ["playbook", "subject", "event", "episode", "actions"], rows,
                    caption=f"{len(rows)} event(s)" + (" — nothing was changed" if result.dry_run else "")))
    if stats is not None:
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(stats.by_outcome.items())) or "nothing due"
        out.print(f"dispatch: {parts}")


@main.command()
@click.argument("subject_id")
@click.option("--playbook", "playbook_ids", multiple=True, help="only this playbook (repeatable)")
@click.option("--now", help="evaluate at this ISO date-time (no offset = config timezone)")
@FORMAT
@command
def explain(app: App, subject_id: str, playbook_ids: tuple[str, ...], now: str | None, fmt: str) -> None:
    """Each condition's value for SUBJECT_ID (an id, or type:id) and why each playbook fires or not."""
    from engine.explain import explain as explain_one
    from engine.store import subjects

    clock = app.clock(now)
    stype, _, sid = subject_id.rpartition(":") if ":" in subject_id else ("", "", subject_id)
    with app.db.engine.connect() as conn:
        found = {t for t, _ in subjects.find_subject(conn, app.db.schema, sid)}
    if stype:
        found &= {stype}
    if not found:
        raise UserError(f"no account, contact or goal with id `{sid}` (run `playbook sync` first?)")
    pbs = [p for p in app.playbooks.valid if p.subject in found and (not playbook_ids or p.id in playbook_ids)]
    if not pbs:
        raise UserError(f"no playbook applies to {'/'.join(sorted(found))} `{sid}`"
                        + (f" among {', '.join(playbook_ids)}" if playbook_ids else ""))
    results = [explain_one(app.db, p, sid, clock) for p in pbs]
    if fmt == "json":
        print_json({"now": _iso(app, clock), "subject": sid, "playbooks": [r.as_json() for r in results]})
        return
    for r in results:
        rows = []
        for c in r.conditions:
            rows.append([c.label, c.text, _show(c.value)])
            rows += [["", f"  ↳ {text}", _show(value)] for text, value in c.details()]
        colour = {"fires": "green", "repeats": "green"}.get(r.verdict, "yellow")
        out.print(table(f"{r.playbook} — {r.subject}", ["condition", "expression", "value"], rows,
                        caption=f"[{colour}]{r.verdict}[/]: {r.reason}"))
        if not r.sql_agrees:
            err.print("[red]warning:[/] the SQL and Python back ends disagree for this subject — please report it")


def _show(v: Any) -> str:
    if v is None:
        return "empty (unknown)"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _iso(app: App, clock: Any) -> str:
    from zoneinfo import ZoneInfo
    from datetime import timezone

    return clock.now.replace(tzinfo=timezone.utc).astimezone(ZoneInfo(clock.timezone)).isoformat()


@main.command()
@click.option("--limit", default=None, type=int, help="stop after this many actions")
@FORMAT
@command
def dispatch(app: App, limit: int | None, fmt: str) -> None:
    """Deliver due outbox actions once."""
    stats = _dispatch(app, app.clock())
    if fmt == "json":
        print_json({"outcomes": dict(stats.by_outcome), "connectors": dict(stats.by_connector)})
    else:
        out.print(table("Dispatch", ["outcome", "actions"], sorted(stats.by_outcome.items())))


@main.command()
@click.option("--playbook", "playbook_id", help="only this playbook")
@click.option("--subject", help="only this subject (id or type:id)")
@click.option("--attempts", "show_attempts", is_flag=True, help="every delivery attempt instead of events")
@click.option("--limit", default=50, show_default=True)
@FORMAT
@command
def history(app: App, playbook_id: str | None, subject: str | None, show_attempts: bool, limit: int,
            fmt: str) -> None:
    """What fired (events), or with --attempts each delivery attempt; newest first."""
    from engine.store import state

    if show_attempts:
        return _attempts(app, playbook_id, subject, limit, fmt)
    with app.db.engine.connect() as conn:
        rows = state.history(conn, app.db.schema, playbook_id=playbook_id, subject=subject, limit=limit)
    if fmt == "json":
        print_json({"events": [jsonable(r) for r in rows]})
        return
    out.print(table("History", ["at (UTC)", "playbook", "subject", "event", "episode", "firing"],
                    [[f"{r['at']:%Y-%m-%d %H:%M}", r["playbook_id"], f"{r['subject_type']}:{r['subject_id']}",
                      r["event"], r["episode"], r["firing"]] for r in rows]))


def _attempts(app: App, playbook_id: str | None, subject: str | None, limit: int, fmt: str) -> None:
    from engine.store import outbox

    with app.db.engine.connect() as conn:
        rows = outbox.attempt_history(conn, app.db.schema, playbook_id=playbook_id, subject=subject, limit=limit)
    if fmt == "json":
        print_json({"attempts": [jsonable(r) for r in rows]})
        return
    out.print(table("Delivery attempts", ["at (UTC)", "dedup key", "#", "outcome", "worker", "detail"],
                    [[f"{r['at']:%Y-%m-%d %H:%M:%S}", r["dedup_key"], r["attempt"], r["outcome"], r["worker"],
                      (r["detail"] or "")[:70]] for r in rows]))


@main.command()
@click.option("--all", "show_all", is_flag=True, help="closed tasks too")
@click.option("--assignee", help="only tasks for this assignee")
@FORMAT
@command
def tasks(app: App, show_all: bool, assignee: str | None, fmt: str) -> None:
    """Tasks created by playbooks (open ones by default)."""
    from engine.store import tasks as task_store

    with app.db.engine.connect() as conn:
        rows = task_store.list_tasks(conn, app.db.schema, status=None if show_all else "open", assignee=assignee)
    if fmt == "json":
        print_json({"tasks": [jsonable(r) for r in rows]})
        return
    out.print(table("Tasks", ["#", "status", "due (UTC)", "priority", "assignee", "title", "subject", "connector"],
                    [[r["id"], r["status"], f"{r['due_at']:%Y-%m-%d}" if r["due_at"] else "", r["priority"],
                      r["assignee"], r["title"], f"{r['subject_type']}:{r['subject_id']}", r["connector"]]
                     for r in rows]))


@main.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="write to this file instead of stdout")
def schema(output: str | None) -> None:
    """Print the JSON Schema of the playbook format."""
    from engine.spec.schema import playbook_json_schema

    text = json.dumps(playbook_json_schema(), indent=2) + "\n"
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


from engine import cli_more  # noqa: E402,F401  (registers demo, init, outbox, worker, …)
