"""What every `playbook` command shares: the --config and --format options, and the wrapper that gives a
command its App and turns a user's mistake into a message (exit 1), never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from engine.app import App
from engine.cli.output import print_diagnostics
from engine.errors import UserError

FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
                      show_default=True, help="table for people, json for machines")
NOW = click.option("--now", help="at this ISO date-time (no offset = config timezone)")
ID = click.IntRange(1, 2**63 - 1)            # an outbox action's or a task's number (a database integer)
LIMIT = click.IntRange(1, 2**63 - 1)


def config_option(fn: Callable) -> Callable:
    return click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
                        help="config file (default: $PLAYBOOK_CONFIG, else ./config.yaml)")(fn)


def command(fn: Callable) -> Callable:
    """Give the command an App for the configuration, and turn user errors into messages with their exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        config = kwargs.pop("config", None) or (ctx.find_root().obj or {}).get("config")
        app = App(config)
        try:
            return fn(app, *args, **kwargs)
        except UserError as exc:
            print_diagnostics(exc.diagnostics, limit=50)
            sys.exit(exc.exit_code)
        finally:
            app.close()

    return config_option(wrapper)


def report_invalid(app: App) -> int:
    """Say which playbooks are skipped as invalid (with their diagnostics), after the warnings of their loading
    (no playbooks folder); returns how many are skipped."""
    from engine.cli.output import err

    invalid = app.playbooks.invalid
    print_diagnostics(app.playbooks.warnings, label="warning")
    for inv in invalid:
        err.file.write(f"skipped {inv.file}: invalid playbook\n")
        print_diagnostics(inv.diagnostics)
    return len(invalid)


def check_playbook_ids(app: App, ids: tuple[str, ...] | list[str], *, invalid_ok: bool = False) -> None:
    """A usage error (exit 2) for each id that is no valid playbook's (with the nearest one), saying so when the
    playbook exists but is invalid; with `invalid_ok`, only for ids no playbook file has (a filter of what
    happened may name a playbook that is invalid now)."""
    from engine.errors import suggest

    known = [p.id for p in app.playbooks.valid]
    invalid = {inv.id: inv.file for inv in app.playbooks.invalid if inv.id}
    problems = []
    for pid in ids:
        if pid in known or (invalid_ok and pid in invalid):
            continue
        if pid in invalid:
            problems.append(f"playbook `{pid}` is invalid ({invalid[pid]}; `playbook validate` says why)")
            continue
        near = suggest(pid, known)
        problems.append(f"unknown playbook id `{pid}`" + (f" (did you mean `{near}`?)" if near else ""))
    if problems:
        raise click.UsageError("; ".join(problems) + (f"; known: {', '.join(known)}" if known else
                                                      "; no playbook is valid"))
