"""Operations commands: start (the long-running service) and status (what it did and will do)."""

from __future__ import annotations

import sys

import click

from engine.app import App
from engine.cli.common import FORMAT, command
from engine.cli.output import err, iso_time, local_time, out, print_diagnostics, print_json, table

PORT = click.IntRange(1, 65535)


@click.command()
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="dispatch threads in this process")
@click.option("--metrics-port", type=PORT, default=None, help="serve Prometheus /metrics on this port")
@click.option("--unsubscribe-port", type=PORT, default=None, help="serve the one-click unsubscribe endpoint")
@click.option("--unsubscribe-host", default="127.0.0.1", show_default=True,
              help="the address the unsubscribe endpoint listens on (0.0.0.0: every interface)")
@click.option("--log-format", type=click.Choice(["human", "json"]), default="human", show_default=True)
@click.option("--lease", default=15.0, show_default=True, type=click.FloatRange(min=1),
              help="leader lease in seconds (take-over time)")
@click.option("--every", type=click.FloatRange(min=0, min_open=True), default=None, hidden=True,
              help="evaluate every N seconds instead of the cron schedules (tests, demos)")
@command
def start(app: App, workers: int, metrics_port: int | None, unsubscribe_port: int | None, unsubscribe_host: str,
          log_format: str, lease: float, every: float | None) -> None:
    """The long-running service: scheduled syncs and evaluations, continuous dispatch."""
    from engine.logs import setup_logging
    from engine.service import Service

    setup_logging(log_format)
    app.settings, app.store  # noqa: B018 - fail fast on a bad config or database, before starting threads
    sys.exit(Service(app, workers=workers, every=every, lease_s=lease, metrics_port=metrics_port,
                     unsubscribe_port=unsubscribe_port, unsubscribe_host=unsubscribe_host).run())


@click.command()
@FORMAT
@command
def status(app: App, fmt: str) -> None:
    """Last run of every playbook, queue depth by state, failures, next scheduled times, the leader."""
    from engine.service import status_report

    tz = app.settings.timezone
    doc = status_report(app)
    if doc["leader"]:
        doc["leader"] = {**doc["leader"], "until": iso_time(doc["leader"]["until"], tz)}
    doc["synced"] = {k: iso_time(v, tz) for k, v in doc["synced"].items()}
    if fmt == "json":
        print_json(doc)
        return
    rows = doc["playbooks"]
    out.print(table("Playbooks", ["playbook", "schedule", "last run", "status", "next run"],
                    [[r["playbook"] + ("" if r["enabled"] else " (disabled)"), r["schedule"],
                      local_time(r["last_run"], tz) or "never", (r["status"] or "") + (f": {r['detail'].get('reason')}"
                      if r["detail"] and r["detail"].get("reason") else ""), local_time(r["next_run"], tz)]
                     for r in rows], nowrap=("last run", "next run")))
    out.print(table("Outbox", ["state", "actions"], sorted(doc["queue"].items())))
    if doc["recent_failures"]:
        out.print(table("Recent failures", ["#", "dedup key", "error"],
                        [[f["id"], f["dedup_key"], (f["error"] or "")[:80]] for f in doc["recent_failures"]]))
    leader = doc["leader"]
    out.print(f"leader: {leader['owner'] + ' until ' + local_time(leader['until'], tz) if leader else 'none'}; "
              "last sync: " + (", ".join(f"{k} {local_time(v, tz)}" for k, v in doc["synced"].items()) or "never"),
              soft_wrap=True)
    if doc["invalid"]:
        err.file.write("invalid playbooks (not running): " + ", ".join(doc["invalid"]) + "\n")
    print_diagnostics(app.playbooks.warnings, label="warning")


COMMANDS = [start, status]
