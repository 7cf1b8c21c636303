"""`playbook journeys [ID]`: per journey, how many subjects wait at each step and when the first is due, how
many completed and exited (§14)."""

from __future__ import annotations

import click

from engine.app import App
from engine.cli.common import FORMAT, check_playbook_ids, command
from engine.cli.output import local_time, out, print_json, table


@click.command()
@click.argument("playbook_id", required=False)
@FORMAT
@command
def journeys(app: App, playbook_id: str | None, fmt: str) -> None:
    """Who is at which step of each journey, and when the next step is due."""
    from engine.journey_view import summaries

    if playbook_id:
        check_playbook_ids(app, [playbook_id], invalid_ok=True)
    with app.store.read() as tx:
        rows = tx.journeys.counts(playbook_id)
    found = summaries(rows, app.playbooks, playbook_id)
    if playbook_id and not found:
        raise click.UsageError(f"`{playbook_id}` is not a journey (a playbook with `steps:`)")
    tz = app.settings.timezone
    if fmt == "json":
        print_json({"journeys": [s.as_json(tz) for s in found]})
        return
    if not found:
        out.print("No journeys: no playbook has `steps:` (docs/journeys.md).")
        return
    for s in found:
        rows_ = [[c.step, c.wait, c.subjects, local_time(c.next_due, tz)] for c in s.steps]
        out.print(table(f"{s.playbook} — {s.name}", ["step", "wait", "subjects", "next due"], rows_,
                        nowrap=["next due"],
                        caption=f"{sum(c.subjects for c in s.steps)} in the journey, {s.completed} completed, "
                                f"{s.exited} exited"))


COMMANDS = [journeys]
