"""Data commands: sync (load every source into the database, atomic per entity)."""

from __future__ import annotations

from typing import Any

import click

from engine.app import App
from engine.cli.common import FORMAT, command
from engine.cli.output import err, out, print_diagnostics, print_json, sync_rows, table
from engine.datamodel import ENTITIES


@click.command()
@click.option("--skip-invalid", is_flag=True, help="load the good rows and report the bad ones")
@click.option("--allow-removal", is_flag=True,
              help="let a snapshot mark removed more than max_removal of its rows (or all, from an empty file)")
@click.option("--entity", "entities", multiple=True, type=click.Choice(list(ENTITIES)),
              help="sync only these entities")
@click.option("--as-of", "as_of", metavar="ISO",
              help="record this sync as having happened at this past moment (no offset = config timezone), "
                   "to load past snapshots into the field history oldest first; never earlier than the latest "
                   "sync recorded")
@FORMAT
@command
def sync(app: App, skip_invalid: bool, allow_removal: bool, entities: tuple[str, ...], as_of: str | None,
         fmt: str) -> None:
    """Load all sources into the database (atomic per entity)."""
    from engine.clock import OutOfRange, parse_instant
    from engine.sync.progress import rich_progress
    from engine.sync.runner import SyncFailed, run_sync

    moment = None
    if as_of is not None:
        try:
            moment = parse_instant(as_of, app.settings.timezone)
        except OutOfRange as exc:
            raise click.BadParameter(str(exc), param_hint="--as-of") from None
        except ValueError:
            raise click.BadParameter(f"`{as_of}` is not an ISO date-time (e.g. 2026-11-01T06:00 or "
                                     "2026-11-01T06:00:00+09:00)", param_hint="--as-of") from None
    try:
        with rich_progress() as progress:
            report = run_sync(app.settings, app.store, skip_invalid=skip_invalid, entities=list(entities) or None,
                              progress=progress, allow_removal=allow_removal, now=moment, as_of=moment is not None)
    except SyncFailed as exc:
        if fmt == "table":
            _print(exc.report, fmt, problems=False)
        bad_rows = any(exc.report.entities[name].invalid for name in exc.report.failed)
        err.file.write("sync failed — nothing of these entities changed: " + ", ".join(exc.report.failed)
                       + (" (fix the rows below, or rerun with --skip-invalid to load the good rows)" if bad_rows
                          and not skip_invalid else "") + "\n")
        raise
    _print(report, fmt)


def _print(report: Any, fmt: str, *, problems: bool = True) -> None:
    rows = sync_rows(report)
    if fmt == "json":
        print_json({"entities": rows})
        return
    for w in report.warnings:
        err.print(f"warning: {w}", markup=False, highlight=False)
    out.print(table("Sync", ["entity", "mode", "rows read", "inserted", "updated", "unchanged", "removed", "invalid",
                             "seconds"],
                    [[r["entity"], r["mode"], r["rows"], r["inserted"], r["updated"], r["unchanged"],
                      r["removed"] + sum(r["cascaded"].values()), r["invalid"], f"{r['seconds']:.2f}"]
                     for r in rows]))
    if problems and report.problems:
        err.file.write("skipped rows:\n")
        print_diagnostics(report.problems, limit=20)


COMMANDS = [sync]
