"""Delivery commands: dispatch (once), worker (continuously), outbox (list, retry, cancel), tasks (list, done,
snooze), unsubscribe."""

from __future__ import annotations

from collections.abc import Callable

import click

from engine.app import App
from engine.cli.common import FORMAT, ID, LIMIT, check_playbook_ids, command, config_option
from engine.cli.output import jsonable, local_time, out, print_json, table
from engine.clock import parse_when, wall_clock
from engine.errors import Diagnostic, UserError
from engine.store import Tx
from engine.store.tasks import BUILTIN

STATUSES = ["pending", "claimed", "held", "digest", "collected", "sent", "failed", "suppressed", "cancelled"]
WAITING = ("pending", "claimed", "held", "digest")  # not delivered yet: their due time still matters


@click.command()
@click.option("--limit", default=None, type=LIMIT, help="deliver at most this many actions")
@FORMAT
@command
def dispatch(app: App, limit: int | None, fmt: str) -> None:
    """Deliver due outbox actions once."""
    from engine.dispatch import deliver_due

    stats = deliver_due(app.store, app.settings, limit=limit)
    if fmt == "json":
        print_json({"outcomes": dict(stats.by_outcome), "connectors": dict(stats.by_connector)})
    else:
        out.print(table("Dispatch", ["outcome", "actions"], sorted(stats.by_outcome.items())))


@click.command()
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="seconds to wait when nothing is due")
@click.option("--max-idle", default=None, type=click.FloatRange(min=0),
              help="exit after this many idle seconds (for scripts)")
@click.option("--log-format", type=click.Choice(["human", "json"]), default="human", show_default=True)
@command
def worker(app: App, interval: float, max_idle: float | None, log_format: str) -> None:
    """Deliver due outbox actions continuously (SIGTERM or Ctrl-C stops cleanly)."""
    from engine.logs import setup_logging
    from engine.service import run_worker

    setup_logging(log_format)
    run_worker(app, interval=interval, max_idle=max_idle)


@click.group()
def outbox() -> None:
    """List, retry and cancel planned actions."""


@outbox.command("list")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--playbook", "playbook_id")
@click.option("--limit", default=50, show_default=True, type=LIMIT)
@FORMAT
@command
def outbox_list(app: App, status: str | None, playbook_id: str | None, limit: int, fmt: str) -> None:
    """Planned actions, newest first."""
    with app.store.read() as tx:
        rows = tx.outbox.list(status=status, playbook_id=playbook_id, limit=limit)
        counts = tx.outbox.counts()
    if not rows and playbook_id:
        check_playbook_ids(app, [playbook_id], invalid_ok=True)     # nothing planned: is it a playbook's id?
    tz = app.settings.timezone
    if fmt == "json":
        print_json({"counts": counts, "actions": [jsonable({k: v for k, v in r.items() if k != "payload"}, tz)
                                                  for r in rows]})
        return
    out.print(table("Outbox", ["#", "status", "kind", "connector", "dedup key", "created", "due", "attempts",
                               "why"],
                    [[r["id"], r["status"] + (" (ambiguous)" if r["ambiguous"] else ""), r["kind"], r["connector"],
                      r["dedup_key"], local_time(r["created_at"], tz),
                      local_time(r["not_before"], tz) if r["status"] in WAITING else "", r["attempts"],
                      _why(r)] for r in rows],
                    caption=", ".join(f"{k}: {v}" for k, v in sorted(counts.items())), nowrap=("created", "due")))


def _why(row: dict) -> str:
    """Why an action waits (its contact-policy or digest note) or how it ended (its last error)."""
    text = row["note"] if row["status"] in (*WAITING, "collected") and row.get("note") else row["last_error"] or ""
    return text[:90]


@outbox.command("retry")
@click.argument("ids", nargs=-1, type=ID, required=True)
@click.option("--rerender", is_flag=True, help="render the actions again from the current templates and data "
                                               "(failed, held or pending ones)")
@command
def outbox_retry(app: App, ids: tuple[int, ...], rerender: bool) -> None:
    """Make failed or held actions due again."""
    if rerender:
        from engine.rerender import rerender as render_again

        results = render_again(app.store, app.settings, app.playbooks, list(ids), app.clock(None))
        out.print(table("Rendered again", ["#", "outcome", "detail"], [[r.id, r.outcome, r.detail] for r in results]))
        if any(r.outcome == "refused" for r in results):
            raise SystemExit(1)
        return
    with app.store.write() as tx:
        _refuse_others(tx, ids, ("failed", "held"), "retried")
        unrendered = tx.outbox.unrendered(list(ids))
        if unrendered:
            raise UserError(Diagnostic(
                "", None, None, "never rendered, so there is nothing to send: "
                + "; ".join(f"#{r['id']} ({r['payload']['error']})" for r in unrendered),
                "fix the template, then `playbook outbox retry --rerender "
                + " ".join(str(r["id"]) for r in unrendered) + "`"))
        n = tx.outbox.set_status(list(ids), "pending", wall_clock(), ("failed", "held"))
    out.print(f"{n} action(s) queued again")


@outbox.command("cancel")
@click.argument("ids", nargs=-1, type=ID, required=True)
@command
def outbox_cancel(app: App, ids: tuple[int, ...]) -> None:
    """Cancel pending or held actions, or digest items still waiting for their digest."""
    with app.store.write() as tx:
        _refuse_others(tx, ids, ("pending", "held", "digest"), "cancelled")
        n = tx.outbox.set_status(list(ids), "cancelled", wall_clock(), ("pending", "held", "digest"))
    out.print(f"{n} action(s) cancelled")


def _refuse_others(tx: Tx, ids: tuple[int, ...], statuses: tuple[str, ...], done: str) -> None:
    """A UserError, before anything changes, naming each action that does not exist or is not in one of
    `statuses` (so a typo in an id never passes as "0 action(s) …")."""
    found = {r["id"]: r["status"] for r in tx.outbox.by_ids(list(ids))}
    problems = [f"#{i} does not exist" if i not in found else f"#{i} is {found[i]}"
                for i in dict.fromkeys(ids) if found.get(i) not in statuses]
    if problems:
        raise UserError(Diagnostic("", None, None, "; ".join(problems) + f": only {' or '.join(statuses)} "
                                   f"actions can be {done}, so nothing was changed",
                                   "`playbook outbox list` shows each action and its status"))


def _list_options(fn: Callable) -> Callable:
    fn = click.option("--assignee", help="only tasks for this assignee")(fn)
    return click.option("--all", "show_all", is_flag=True, help="snoozed, done and closed tasks too")(fn)


@click.group(invoke_without_command=True)
@_list_options
@FORMAT
@config_option
@click.pass_context
def tasks(ctx: click.Context, show_all: bool, assignee: str | None, fmt: str, config: str | None) -> None:
    """Tasks created by playbooks: list them (the default), mark one done, snooze one."""
    if config:
        ctx.find_root().obj["config"] = config
    if ctx.invoked_subcommand is None:
        ctx.invoke(tasks_list, show_all=show_all, assignee=assignee, fmt=fmt)
    elif show_all or assignee or fmt != "table":
        raise click.UsageError(f"--all, --assignee and --format belong to `tasks list`, not `tasks "
                               f"{ctx.invoked_subcommand}`")


@tasks.command("list")
@_list_options
@FORMAT
@command
def tasks_list(app: App, show_all: bool, assignee: str | None, fmt: str) -> None:
    """Open tasks, not those snoozed (or --all), by due date."""
    now, tz = wall_clock(), app.settings.timezone
    with app.store.read() as tx:
        rows = tx.tasks.list(status=None if show_all else "open", assignee=assignee,
                             awake_at=None if show_all else now)
    if fmt == "json":
        print_json({"tasks": [jsonable(r, tz) for r in rows]})
        return
    asleep = {r["id"]: local_time(r["snoozed_until"], tz) for r in rows
              if r["status"] == "open" and r["snoozed_until"] is not None and r["snoozed_until"] > now}
    noted = any(r["note"] for r in rows)
    columns = ["#", "status", *(["snoozed until"] if asleep else []), "due", "priority", "assignee", "title",
               "subject", "connector", *(["note"] if noted else [])]
    out.print(table("Tasks", columns,
                    [[r["id"], r["status"], *([asleep.get(r["id"], "")] if asleep else []),
                      local_time(r["due_at"], tz), r["priority"], r["assignee"], r["title"],
                      f"{r['subject_type']}:{r['subject_id']}", r["connector"], *([r["note"]] if noted else [])]
                     for r in rows], nowrap=("due", "snoozed until")))


@tasks.command("done")
@click.argument("task_id", type=ID)
@click.option("--note", help="what was done, kept with the task")
@command
def tasks_done(app: App, task_id: int, note: str | None) -> None:
    """Mark a task done (built-in task list); a resolve no longer closes it."""
    with app.store.write() as tx:
        _open_task(tx, task_id, "mark it done", app.settings.timezone)
        if not tx.tasks.mark_done(task_id, wall_clock(), note):      # a resolve closed it meanwhile
            _open_task(tx, task_id, "mark it done", app.settings.timezone)
    out.print(f"task #{task_id} done")


@tasks.command("snooze")
@click.argument("task_id", type=ID)
@click.option("--until", "until", required=True,
              help="an ISO date or date-time (config timezone) or a duration from now, e.g. 3d")
@command
def tasks_snooze(app: App, task_id: int, until: str) -> None:
    """Leave a task out of the list until later (built-in task list)."""
    now, tz = wall_clock(), app.settings.timezone
    try:
        moment = parse_when(until, now, tz)
    except ValueError as exc:
        raise UserError(f"--until: {exc}") from None
    if moment <= now:
        raise UserError(f"--until: {local_time(moment, tz)} is in the past; give a later time")
    with app.store.write() as tx:
        _open_task(tx, task_id, "snooze it", tz)
        if not tx.tasks.snooze(task_id, moment):                     # a resolve closed it meanwhile
            _open_task(tx, task_id, "snooze it", tz)
    out.print(f"task #{task_id} snoozed until {local_time(moment, tz)}")


def _open_task(tx: Tx, task_id: int, what: str, tz: str) -> None:
    """Raise a UserError unless the task exists, belongs to the built-in task list and is open."""
    task = tx.tasks.get(task_id)
    if task is None:
        raise UserError(f"no task #{task_id} (`playbook tasks --all` lists every task)")
    if task["connector"] != BUILTIN:
        raise UserError(f"task #{task_id} is a {task['connector']} task: {what} in {task['connector']} "
                        "(`playbook tasks done` and `snooze` change the built-in task list only)")
    if task["status"] != "open":
        how = "marked done" if task["status"] == "done" else "closed when its episode resolved"
        when = f" ({local_time(task['closed_at'], tz)})" if task["closed_at"] else ""
        raise UserError(f"task #{task_id} is not open: it was {how}{when}")


@click.command()
@click.argument("emails", nargs=-1)
@click.option("--remove", is_flag=True, help="take the addresses off the suppression list (resubscribe)")
@click.option("--list", "show", is_flag=True, help="show the suppression list")
@FORMAT
@command
def unsubscribe(app: App, emails: tuple[str, ...], remove: bool, show: bool, fmt: str) -> None:
    """Never email these addresses again (checked at send time), or --remove / --list."""
    if not emails and not show:
        raise click.UsageError("give one or more email addresses, or --list")
    for e in emails:
        if "@" not in e:
            raise click.UsageError(f"`{e}` is not an email address")
    with app.store.write() as tx:
        for e in emails:
            if remove:
                tx.suppressions.remove(e)
            else:
                tx.suppressions.add(e, "unsubscribed", wall_clock(), "playbook unsubscribe")
        rows = tx.suppressions.list() if show else []
    if emails:
        out.print(f"{len(emails)} address(es) {'resubscribed' if remove else 'suppressed'}")
    if show:
        tz = app.settings.timezone
        if fmt == "json":
            print_json({"suppressed": [jsonable(r, tz) for r in rows]})
        else:
            out.print(table("Suppression list", ["email", "reason", "since", "detail"],
                            [[r["email"], r["reason"], local_time(r["at"], tz), r["detail"]] for r in rows],
                            nowrap=("since",)))


COMMANDS = [dispatch, worker, outbox, tasks, unsubscribe]
