"""Authoring commands: init (a working directory), validate, schema, and demo (try everything offline)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from engine.app import App
from engine.cli.common import FORMAT, command
from engine.cli.output import diagnostic_json, err, local_time, out, print_diagnostics, print_json, table
from engine.errors import Diagnostic, UserError

ACCOUNTS = click.IntRange(0, 1_000_000)


@click.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--accounts", default=300, show_default=True, type=ACCOUNTS, help="how many sample accounts to generate")
def init(directory: str, accounts: int) -> None:
    """Scaffold a working directory (config, playbooks, templates, sample data)."""
    from engine.workspace import scaffold

    target = Path(directory)
    if (target / "config.yaml").exists():
        err.print(f"{target / 'config.yaml'} already exists; choose an empty directory")
        sys.exit(1)
    try:
        counts = scaffold(target, accounts=accounts)
    except OSError as exc:
        raise UserError(Diagnostic(str(target), None, None, f"cannot write the working directory: "
                                   f"{exc.strerror or exc}", "choose a folder you can write to")) from None
    out.print(f"Created {target}/ with config.yaml, playbooks/ and data/ "
              f"({', '.join(f'{v} {k}' for k, v in counts.items())}).")
    out.print(f"Next: cd {target} && playbook validate && playbook test && playbook sync && playbook run --dry-run")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@FORMAT
@command
def validate(app: App, paths: tuple[str, ...], fmt: str) -> None:
    """Check config, playbooks and templates; print file:line:col: message; exit 1 on errors. Warnings (what is
    valid but probably not meant: metrics no synced usage row has, sources `start` never syncs) go to stderr
    and do not fail."""
    from engine.spec.loader import load_playbooks, playbook_files

    files: list[Path] = []
    for p in paths:
        found = playbook_files(Path(p)) if Path(p).is_dir() else [Path(p)]
        if not found:
            raise click.UsageError(f"{p}: no playbook files (*.yaml, *.yml) in this folder")
        files += found
    synced = synced_metrics(app.settings) if app.settings.metrics is None else None
    pset = load_playbooks(app.settings, files or None, synced_metrics=synced)
    diags = pset.diagnostics
    moved = journey_moves(app.settings, pset)
    warnings = app.settings.warnings() + list(pset.warnings) + [
        Diagnostic(m.file, None, None, f"{m.subjects} subject(s) of journey `{m.playbook}` wait at step `{m.step}`, "
                   "which this edit removes: their journeys exit at the next run (step removed)",
                   "keep the step (or its id) to let them continue") for m in moved]
    if fmt == "json":
        print_json({"valid": [p.id for p in pset.valid], "errors": [diagnostic_json(d) for d in diags],
                    "warnings": [diagnostic_json(d) for d in warnings],
                    "journey_moves": [{"playbook": m.playbook, "step": m.step, "subjects": m.subjects,
                                       "effect": "exited (step removed)"} for m in moved]})
    else:
        print_diagnostics(diags, stream=out)
        print_diagnostics(warnings, label="warning")
        n = len(pset.valid) + len(pset.invalid)
        summary = f"{len(pset.valid)} of {n} playbook(s) valid"
        out.print(("[green]✓[/] " if not diags else "[red]✗[/] ") + summary
                  + (f", {len(diags)} problem(s)" if diags else "")
                  + (f", {len(warnings)} warning(s)" if warnings else ""))
    sys.exit(1 if diags else 0)


def journey_moves(settings: Any, pset: Any) -> list[Any]:
    """What an edit of the journeys would move (§14): subjects waiting at steps the playbooks no longer have, from
    the configured database, read without creating or migrating it (none when it cannot be read)."""
    from engine.journey_view import moves
    from engine.store import DatabaseError, open_store
    from engine.store.database import database_exists

    if not any(p.journey is not None for p in pset.valid):
        return []
    url = settings.database_url()
    if not database_exists(url):
        return []
    try:
        store = open_store(url, settings.custom_fields(), migrate=False)
    except UserError:
        return []
    try:
        with store.read() as tx:
            waiting = {p.id: tx.journeys.waiting_at(p.id) for p in pset.valid if p.journey is not None}
        return moves(pset, waiting)
    except DatabaseError:
        return []
    finally:
        store.dispose()


def synced_metrics(settings: Any) -> set[str] | None:
    """The metrics of the synced usage rows, read without creating or migrating the database; None when the
    database does not exist, cannot be read or holds no usage row (nothing to compare the playbooks with)."""
    from engine.store import DatabaseError, open_store
    from engine.store.database import database_exists

    url = settings.database_url()
    if not database_exists(url):
        return None
    try:
        store = open_store(url, settings.custom_fields(), migrate=False)
    except UserError:
        return None
    try:
        with store.read() as tx:
            return set(tx.subjects.metric_names()) or None
    except DatabaseError:
        return None
    finally:
        store.dispose()


@click.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="write to this file instead of stdout")
def schema(output: str | None) -> None:
    """Print the JSON Schema of the playbook format."""
    from engine.spec.schema import playbook_json_schema

    text = json.dumps(playbook_json_schema(), indent=2) + "\n"
    if output:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise click.FileError(output, hint=exc.strerror or str(exc)) from None
    else:
        sys.stdout.write(text)


@click.command()
@click.option("--keep", type=click.Path(file_okay=False), help="work in this directory instead of a temporary one")
@click.option("--accounts", default=300, show_default=True, type=ACCOUNTS)
def demo(keep: str | None, accounts: int) -> None:
    """Offline end-to-end run on the bundled example data and playbooks, with a summary."""
    from engine.demo import run_demo

    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="playbook-demo-"))
    started = time.perf_counter()
    out.print(f"[bold]playbook demo[/] in {work}")
    try:
        report = run_demo(work, accounts=accounts)
    except UserError as exc:
        print_diagnostics(exc.diagnostics)
        sys.exit(1)
    except OSError as exc:
        raise UserError(Diagnostic(str(work), None, None, f"cannot write the demo's directory: "
                                   f"{exc.strerror or exc}", "choose a folder you can write to")) from None
    out.print("synced: " + ", ".join(f"{n} {entity}" for entity, n in report.synced.items()))
    rows = [[pid, subject, fired, baselined,
             f"not due today: its schedule is {report.not_due[pid]}" if pid in report.not_due else
             ", ".join(f"{n} {what}" for what, n in actions.items()) or "—"]
            for pid, subject, fired, baselined, actions in report.playbooks]
    out.print(table("Demo summary", ["playbook", "subject", "fired", "baselined", "actions (kind status)"], rows,
                    caption="switched on yesterday, run again today: `baselined` already matched at the "
                            "switch-on (activation: baseline) and got nothing; `fired` counts the switch-on's "
                            "backfills (activation: fire) and today's new matches; `deferred` emails wait for the recipient's next "
                            "allowed moment (contact_policy in config.yaml)"))
    for j in report.journeys:
        out.print(table(f"Journey {j.playbook}: who is at which step", ["step", "wait", "subjects", "next due"],
                        [[c.step, c.wait, c.subjects, local_time(c.next_due, report.timezone)] for c in j.steps],
                        caption=f"{sum(c.subjects for c in j.steps)} in the journey, {j.completed} completed, "
                                f"{j.exited} exited — `playbook journeys` shows this any time"))
    if report.digests or report.digest_waiting:
        out.print(table("CSM digests: one message per CSM at 09:00 instead of an alert each",
                        ["channel", "to", "alerts listed", "status"], [list(d) for d in report.digests],
                        caption=(f"{sum(report.digest_waiting.values())} alert(s) planned today wait for tomorrow's "
                                 f"digest ({len(report.digest_waiting)} recipient(s)); `playbook outbox list "
                                 "--status digest` shows them") if report.digest_waiting else None))
    box = report.outbox_dir
    out.print(f"where the messages went: {report.emails} email file(s) in {box / 'email'}, {report.slack} Slack "
              f"message(s) in {box / 'slack.jsonl'}, tasks in the built-in task list (`playbook tasks`)")
    out.print(f"done in {time.perf_counter() - started:.1f}s — try: playbook --config {work}/config.yaml "
              f"explain A0001 | history | tasks")


@click.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@FORMAT
@command
def test(app: App, paths: tuple[str, ...], fmt: str) -> None:
    """Run playbook test files (default: playbook-tests/*.test.yaml beside the config): data and runs at chosen
    instants on a fresh temporary database, nothing delivered; each run's events against what it expects. Exit 1
    on any failure (docs/testing.md)."""
    from engine.testfile import test_files
    from engine.testrun import results_json, run_files

    default = app.settings.base_dir / "playbook-tests"
    files = test_files([Path(p) for p in paths], default)
    if not files:
        where = ", ".join(paths) if paths else str(default)
        raise UserError(Diagnostic(where, None, None, "no test files (*.test.yaml) found",
                                   "write one (docs/testing.md), or name the files or folders to run"))
    results = run_files(app.settings, files)
    if fmt == "json":
        print_json(results_json(results))
    else:
        _print_tests(results, app.settings.timezone)
    sys.exit(0 if all(r.passed for r in results) else 1)


def _print_tests(results: list[Any], tz: str) -> None:
    """PASS/FAIL per case, then each failure at its line with its diff (plain text: editors and CI read it)."""
    from engine.clock import show_time

    write = out.file.write
    passed = failed = 0
    for f in results:
        if f.errors:
            failed += 1
            write(f"FAIL  {f.file}: cannot be read\n")
            for d in f.errors:
                write(f"  {d}\n")
            continue
        for c in f.cases:
            runs = len(c.runs)
            if c.passed:
                passed += 1
                write(f"PASS  {f.file}  {c.case.name} ({runs} run{'s' if runs != 1 else ''})\n")
                continue
            failed += 1
            write(f"FAIL  {f.file}  {c.case.name}\n")
            for d in c.errors:
                write(f"  {d}\n")
            for r in c.runs:
                if r.passed:
                    continue
                write(f"  run at {show_time(r.run.at, tz)} ({f.file}:{r.run.line}):\n")
                for note in r.notes:
                    write(f"    note: {note}\n")
                for p in r.problems:
                    write(f"    {f.file}:{p.line}: {p.message}\n")
                    for line in p.diff:
                        write(f"        {line}\n")
    write(f"{passed + failed} case(s): {passed} passed, {failed} failed\n")
    out.file.flush()


COMMANDS = [init, validate, schema, test, demo]
