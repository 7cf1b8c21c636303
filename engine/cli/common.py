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
    """Say which playbooks are skipped as invalid (with their diagnostics); returns how many."""
    from engine.cli.output import err

    invalid = app.playbooks.invalid
    for inv in invalid:
        err.file.write(f"skipped {inv.file}: invalid playbook\n")
        print_diagnostics(inv.diagnostics)
    return len(invalid)
