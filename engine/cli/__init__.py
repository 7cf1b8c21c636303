"""The `playbook` command line (§11): thin commands (parse options, call the engine, print), grouped by
what a user is doing. Each module holds one group's commands; this one assembles them."""

from __future__ import annotations

import io
import os
import sys
from typing import Any

import click

from engine.cli import authoring, backtest, data, delivery, evaluation, internal_error, journeys, operations
from engine.cli.output import print_diagnostics
from engine.errors import UserError

SECTIONS = (
    ("Authoring", authoring.COMMANDS),
    ("Data", data.COMMANDS),
    ("Evaluation", evaluation.COMMANDS + journeys.COMMANDS + backtest.COMMANDS),
    ("Delivery", delivery.COMMANDS),
    ("Operations", operations.COMMANDS),
)


class SectionedGroup(click.Group):
    """A group whose --help lists its commands under their section, in the order given, and that reports what
    its commands raise: a user's mistake as its messages (exit 1), anything else as one line naming a log file
    with the details (exit 3, engine/cli/internal_error.py) — never a traceback."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        argv = list(args)
        ctx = super().make_context(info_name, args, parent, **extra)
        ctx.meta[ARGV] = argv
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except UserError as exc:            # from a command without engine/cli/common.py's `command` wrapper
            print_diagnostics(exc.diagnostics, limit=50)
            ctx.exit(exc.exit_code)
        except BrokenPipeError:             # whoever read the output stopped (`playbook history | head`)
            _quiet_stdout()
            ctx.exit(1)
        except Exception as exc:  # noqa: BLE001 - not a user's mistake: reported once, with its details kept
            argv = ctx.meta.get(ARGV, [])
            internal_error.write_line(internal_error.report(exc, argv, _config_argument(argv)))
            ctx.exit(internal_error.EXIT_CODE)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        longest = max(len(c.name or "") for _, commands in SECTIONS for c in commands)
        for title, commands in SECTIONS:
            rows = [(c.name, c.get_short_help_str(formatter.width - 6 - longest)) for c in commands if not c.hidden]
            with formatter.section(title):
                formatter.write_dl(rows)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [c.name for _, commands in SECTIONS for c in commands if c.name]


@click.group(cls=SectionedGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", type=click.Path(dir_okay=False), default=None, help="config file for every command")
@click.version_option(package_name="playbook-engine")
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """Rules-driven playbook automation for customer success."""
    ctx.obj = {"config": config}


ARGV = "playbook.argv"       # the command line, kept in the context for the internal-error log


def _config_argument(argv: list[str]) -> str | None:
    """The --config the command line gives (before or after the command name), if any."""
    found = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith("--config="):
            found = arg.partition("=")[2]
    return found


def _quiet_stdout() -> None:
    """Point stdout at the null device, so that flushing it at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):     # not a real file (tests capture it)
        pass


for _, _commands in SECTIONS:
    for _command in _commands:
        main.add_command(_command)
