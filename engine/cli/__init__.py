"""The `playbook` command line (§11): thin commands (parse options, call the engine, print), grouped by
what a user is doing. Each module holds one group's commands; this one assembles them."""

from __future__ import annotations

import click

from engine.cli import authoring, data, delivery, evaluation, operations

SECTIONS = (
    ("Authoring", authoring.COMMANDS),
    ("Data", data.COMMANDS),
    ("Evaluation", evaluation.COMMANDS),
    ("Delivery", delivery.COMMANDS),
    ("Operations", operations.COMMANDS),
)


class SectionedGroup(click.Group):
    """A group whose --help lists its commands under their section, in the order given."""

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


for _, _commands in SECTIONS:
    for _command in _commands:
        main.add_command(_command)
