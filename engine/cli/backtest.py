"""`playbook backtest`: what the playbooks would have done over a past period (§18), changing nothing."""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import click

from engine.app import App
from engine.cli.common import FORMAT, check_playbook_ids, command, report_invalid
from engine.cli.output import err, local_time, out, table
from engine.clock import OutOfRange, parse_instant

EVENTS = ("enter", "repeat", "resolve", "baseline")


@click.command()
@click.option("--from", "start", required=True, help="first day (ISO date, or date-time; no offset = config zone)")
@click.option("--to", "end", required=True, help="last day, included (ISO date, or date-time)")
@click.option("--playbook", "playbook_ids", multiple=True, help="only this playbook (repeatable)")
@FORMAT
@command
def backtest(app: App, start: str, end: str, playbook_ids: tuple[str, ...], fmt: str) -> None:
    """What the playbooks would have done over a past period, on the data as it was synced then."""
    from engine.backtest import run_backtest

    tz = app.settings.timezone
    first, last = _instant(start, tz, "--from", end_of_day=False), _instant(end, tz, "--to", end_of_day=True)
    if last <= first:
        raise click.UsageError(f"--to ({end}) is before --from ({start}); give the period's first and last day")
    report_invalid(app)
    check_playbook_ids(app, playbook_ids)
    stream = _JsonStream(tz, first, last) if fmt == "json" else None
    summary = run_backtest(app.store, app.settings, app.playbooks, first, last, only=set(playbook_ids) or None,
                           on_event=stream.event if stream else None)
    with app.store.read() as tx:
        known_from = tx.field_history.first_synced()
    if known_from is None or known_from > first:
        since = "no data was synced yet" if known_from is None else \
            f"the data is known from {local_time(known_from, tz)} (its first sync)"
        err.file.write(f"note: {since}; before that the backtest sees no accounts. Load past snapshots with "
                       "`playbook sync --as-of` to backtest further back (docs/history.md)\n")
    for pid, why in summary.skipped.items():
        err.file.write(f"{pid}: not replayed: {why}\n")
    for at, pid, why in summary.blocked:
        err.file.write(f"{local_time(at, tz)} {pid}: {why}\n")
    if stream is not None:
        stream.close(summary)
        return
    period = f"{local_time(first, tz)} – {local_time(last, tz)}"
    ids = sorted(summary.playbooks)
    # journeys add their steps, and the step actions their exits cancelled before they went out
    journeys = any(c["step"] or _actions(c, "cancelled:") for c in summary.playbooks.values())
    events = (*EVENTS[:1], "step", *EVENTS[1:]) if journeys else EVENTS
    loud = [e for e in events if e != "baseline"]
    more = ["cancelled"] if journeys else []

    def counts(c: Counter, shown: tuple[str, ...] | list[str]) -> list[Any]:
        return [*[c[e] for e in shown], _actions(c), *([_actions(c, "cancelled:")] if journeys else [])]
    out.print(table(f"Backtest {period}", ["playbook", *events, "actions", *more],
                    [[pid, *counts(summary.playbooks[pid], events)] for pid in ids],
                    caption=f"{summary.runs} scheduled run(s), {summary.evaluations} evaluation(s)"))
    if summary.weeks:
        out.print(table("Per week (weeks start on Monday)", ["week", "playbook", *loud, "actions", *more],
                        [[week.isoformat(), pid, *counts(c, loud)]
                         for (week, pid), c in sorted(summary.weeks.items()) if any(c[e] for e in loud)]))
    csms = {k: c for k, c in summary.csms.items() if any(c[e] for e in loud)}
    if csms:
        out.print(table("Per CSM", ["csm", *loud, "actions", *more],
                        [[k, *counts(c, loud)] for k, c in sorted(csms.items())]))
    if summary.recipients:
        top = summary.recipients.most_common(20)
        out.print(table("Actions by kind and recipient", ["kind", "recipient", "actions"],
                        [[kind, to, n] for (kind, to), n in top],
                        caption=f"the {len(top)} most addressed of {len(summary.recipients)}"))
    out.print("Nothing was written or delivered.")


def _instant(text: str, tz: str, option: str, *, end_of_day: bool) -> datetime:
    """An option's ISO date or date-time as naive UTC; a date is its day's start (or, `end_of_day`, the next
    day's start: the day is included)."""
    try:
        moment = parse_instant(text, tz)
    except OutOfRange as exc:
        raise click.UsageError(f"{option}: {exc}") from None
    except ValueError:
        raise click.UsageError(f"{option}: `{text}` is not an ISO date or date-time (e.g. 2026-11-01 or "
                               "2026-11-01T09:00)") from None
    is_date = "T" not in text.strip() and " " not in text.strip()
    if is_date and end_of_day:
        moment = datetime.combine(moment.date() + timedelta(days=1), time(), ZoneInfo(tz))
    elif not is_date and end_of_day:
        moment += timedelta(microseconds=1)          # a run at exactly --to is part of the period
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def _actions(c: Counter, prefix: str = "action:") -> str:
    return ", ".join(f"{k.removeprefix(prefix)} {n}" for k, n in sorted(c.items()) if k.startswith(prefix))


class _JsonStream:
    """One JSON document on stdout, its events written as they come (memory does not grow with them)."""

    def __init__(self, tz: str, first: datetime, last: datetime):
        self.tz, self.n = tz, 0
        head = {"from": _local(first, tz), "to": _local(last, tz), "timezone": tz}
        sys.stdout.write(json.dumps(head, ensure_ascii=False)[:-1] + ', "events": [')

    def event(self, e: Any) -> None:
        sys.stdout.write(("," if self.n else "") + "\n  " + json.dumps(e.as_json(self.tz), ensure_ascii=False,
                                                                       default=str))
        self.n += 1

    def close(self, summary: Any) -> None:
        body = {"runs": summary.runs, "evaluations": summary.evaluations,
                "playbooks": {pid: dict(sorted(c.items())) for pid, c in sorted(summary.playbooks.items())},
                "weeks": [{"week": week.isoformat(), "playbook": pid, **dict(sorted(c.items()))}
                          for (week, pid), c in sorted(summary.weeks.items())],
                "csms": {k: dict(sorted(c.items())) for k, c in sorted(summary.csms.items())},
                "blocked": [{"at": _local(at, self.tz), "playbook": pid, "reason": why}
                            for at, pid, why in summary.blocked],
                "held": dict(sorted(summary.held.items())), "skipped": summary.skipped}
        sys.stdout.write("\n], \"summary\": " + json.dumps(body, ensure_ascii=False) + "}\n")


def _local(moment: datetime, tz: str) -> str:
    return moment.replace(tzinfo=timezone.utc).astimezone(ZoneInfo(tz)).isoformat()


COMMANDS = [backtest]
