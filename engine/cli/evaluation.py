"""Evaluation commands: run (one tick, then dispatch), explain (why a subject fires or not), history."""

from __future__ import annotations

import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from engine.app import App
from engine.cli.common import FORMAT, LIMIT, NOW, check_playbook_ids, command, report_invalid
from engine.cli.output import action_summary, err, jsonable, local_time, out, print_json, table
from engine.datamodel import SUBJECT_TYPES


@click.command()
@click.option("--dry-run", is_flag=True, help="change nothing; show what would fire")
@NOW
@click.option("--playbook", "playbook_ids", multiple=True, help="only this playbook (repeatable)")
@click.option("--no-dispatch", is_flag=True, help="plan actions but leave delivery to `playbook dispatch`")
@FORMAT
@command
def run(app: App, dry_run: bool, now: str | None, playbook_ids: tuple[str, ...], no_dispatch: bool,
        fmt: str) -> None:
    """One evaluation tick, then dispatch."""
    from engine.dispatch import deliver_due
    from engine.tick import record_presence, run_tick

    clock = app.clock(now)
    invalid = report_invalid(app)
    check_playbook_ids(app, playbook_ids)
    if not dry_run:
        record_presence(app.store, app.playbooks)
    result = run_tick(app.store, app.settings, app.playbooks, clock, dry_run=dry_run,
                      only=set(playbook_ids) or None)
    stats = None
    if not dry_run and not no_dispatch:
        stats = deliver_due(app.store, app.settings, clock)
    if result.blocked:
        err.file.write(result.blocked + "\n")
    for o in result.playbooks:
        if o.skipped:
            err.file.write(f"{o.playbook}: {o.skipped}\n")
        if o.error is not None:
            err.file.write(f"{o.playbook}: not evaluated, nothing of it changed; {_failure(o.error, app)}\n")
        for key, why in o.unrendered:
            err.file.write(f"{o.playbook}: not planned, rendering failed for {key}: {why} (fix the template or "
                           f"the data, then `playbook outbox retry --rerender`; see `playbook outbox list "
                           f"--status failed`)\n")
    if fmt == "json":
        print_json(result.as_json())
    else:
        title = ("Dry run at " if result.dry_run else "Run at ") + local_time(clock.now, clock.timezone)
        rows = [[e.playbook, e.subject, e.event, e.episode,
                 "\n".join(x for x in (action_summary(e.actions), _journey_note(e.detail, clock)) if x)]
                for e in result.events]
        out.print(table(title, ["playbook", "subject", "event", "episode", "actions"], rows,
                        caption=f"{len(rows)} event(s)" + (" — nothing was changed" if result.dry_run else "")
                        + (" — blocked by defaults.max_total_actions_per_run" if result.blocked else "")))
        if stats is not None:
            parts = ", ".join(f"{k}: {v}" for k, v in sorted(stats.by_outcome.items())) or "nothing due"
            out.print(f"dispatch: {parts}")
    sys.exit(1 if invalid or any(o.unrendered or o.error for o in result.playbooks) else 0)


def _failure(exc: BaseException, app: App) -> str:
    """One line on why a playbook's evaluation failed, its details written to a log file (no traceback here)."""
    from engine.cli.internal_error import report

    return report(exc, sys.argv[1:], str(app.config_path) if app.config_path else None)


def _journey_note(detail: dict[str, Any] | None, clock: Any) -> str:
    """A journey event's steps and where it now waits, or how it ended, for the run table."""
    if not detail:
        return ""
    parts = []
    if detail.get("skipped"):
        parts.append(f"skipped: {', '.join(detail['skipped'])}")
    if detail.get("at"):
        parts.append(f"waits at {detail['at']} until {local_time(detail['due'], clock.timezone)}")
    if detail.get("outcome"):
        parts.append(f"{detail['outcome']}: {detail['reason']}")
    return "\n".join(f"⇢ {p}" for p in parts)


@click.command()
@click.argument("subject_id")
@click.option("--playbook", "playbook_ids", multiple=True, help="only this playbook (repeatable)")
@NOW
@FORMAT
@command
def explain(app: App, subject_id: str, playbook_ids: tuple[str, ...], now: str | None, fmt: str) -> None:
    """Each condition's value for SUBJECT_ID (an id, or type:id) and why each playbook fires or not."""
    from engine.explain import explain_subject

    stype, _, bare = subject_id.rpartition(":")
    if stype and stype not in SUBJECT_TYPES:
        raise click.UsageError(f"`{stype}` is not a subject type; write ID, or account:ID, contact:ID or goal:ID")
    if not bare.strip():
        raise click.UsageError("give the id of an account, contact or goal (or account:ID, contact:ID, goal:ID)")
    clock = app.clock(now)
    check_playbook_ids(app, playbook_ids)
    sid, results = explain_subject(app.store, app.playbooks, subject_id, playbook_ids, clock, app.settings)
    if fmt == "json":
        print_json({"now": clock.local().isoformat(), "subject": sid,
                    "playbooks": [r.as_json(clock.timezone) for r in results]})
        return
    for r in results:
        rows = []
        for c in r.conditions:
            rows.append([c.label, c.text, _show(c.value, clock.timezone)])
            rows += [["", f"  ↳ {text}", _show(value, clock.timezone)] for text, value in c.details()]
        colour = {"fires": "green", "repeats": "green"}.get(r.verdict, "yellow")
        out.print(table(f"{r.playbook} — {r.subject}", ["condition", "expression", "value"], rows,
                        caption=f"[{colour}]{r.verdict}[/]: {r.reason}"))
        if r.journey is not None:
            due = local_time(r.journey["next_due"], clock.timezone) if r.journey.get("next_due") else ""
            out.print(f"journey: {r.journey['reason']}" + (f" — next due {due}" if due else ""))
        if r.deliveries:
            out.print(table("If it fired now (contact policy)", ["action", "to", "zone", "goes out", "waits / cap"],
                            [[d["kind"], ", ".join(d.get("to") or []), d["zone"], d["send_at"],
                              "\n".join(x for x in (d.get("deferred"), d.get("cap")) if x)] for d in r.deliveries]))
        if r.waiting:
            out.print(table("In the outbox", ["#", "action", "status", "due", "why"],
                            [[w["id"], w["kind"], w["status"], w["due"], w["note"] or ""] for w in r.waiting]))
        if not r.sql_agrees:
            err.print("[red]warning:[/] the SQL and Python back ends disagree for this subject — please report it")


def _show(v: Any, tz: str) -> str:
    if v is None:
        return "empty (unknown)"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, datetime):
        return local_time(v, tz, seconds=True)
    return str(v)


@click.command()
@click.option("--playbook", "playbook_id", help="only this playbook")
@click.option("--subject", help="only this subject (id or type:id)")
@click.option("--attempts", "show_attempts", is_flag=True, help="every delivery attempt instead of events")
@click.option("--limit", default=50, show_default=True, type=LIMIT)
@FORMAT
@command
def history(app: App, playbook_id: str | None, subject: str | None, show_attempts: bool, limit: int,
            fmt: str) -> None:
    """What fired (events), or with --attempts each delivery attempt; newest first."""
    tz = app.settings.timezone
    if show_attempts:
        with app.store.read() as tx:
            rows = tx.outbox.attempts(playbook_id=playbook_id, subject=subject, limit=limit)
        if not rows and playbook_id:
            check_playbook_ids(app, [playbook_id], invalid_ok=True)
        if fmt == "json":
            print_json({"attempts": [jsonable(r, tz) for r in rows]})
            return
        out.print(table("Delivery attempts", ["at", "dedup key", "#", "outcome", "worker", "detail"],
                        [[local_time(r["at"], tz, seconds=True), r["dedup_key"], r["attempt"], r["outcome"],
                          r["worker"], (r["detail"] or "")[:70]] for r in rows], nowrap=("at",)))
        return
    with app.store.read() as tx:
        rows = tx.episodes.history(playbook_id=playbook_id, subject=subject, limit=limit)
    if not rows and playbook_id:
        check_playbook_ids(app, [playbook_id], invalid_ok=True)     # nothing fired: is it a playbook's id?
    if fmt == "json":
        print_json({"events": [jsonable(r, tz) for r in rows]})
        return
    out.print(table("History", ["at", "playbook", "subject", "event", "episode", "firing"],
                    [[local_time(r["at"], tz), r["playbook_id"], f"{r['subject_type']}:{r['subject_id']}",
                      r["event"], r["episode"], r["firing"]] for r in rows], nowrap=("at",)))


@click.command()
@click.argument("playbook_id")
@click.argument("subject_id")
@NOW
@click.option("--raw", is_flag=True, help="show each email as the raw .eml a connector sends")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="also write each message to files here")
@click.option("--send-to", "send_to", metavar="ADDRESS", help="send the emails to ADDRESS only, marked [TEST]")
@FORMAT
@command
def preview(app: App, playbook_id: str, subject_id: str, now: str | None, raw: bool, out_dir: str | None,
            send_to: str | None, fmt: str) -> None:
    """Every action of PLAYBOOK_ID rendered for SUBJECT_ID as it would be sent (text, HTML, Slack blocks, task
    fields), with the recipient, zone and send time; changes nothing."""
    from engine.preview import preview as render_preview
    from engine.preview import send_test

    check_playbook_ids(app, [playbook_id])
    pb = app.playbooks.get(playbook_id)
    assert pb is not None
    sid = _subject_of(app, pb, subject_id)
    clock = app.clock(now)
    address = _address(send_to) if send_to else None
    result = render_preview(app.store, app.settings, pb, sid, clock)
    if out_dir:
        _write_preview(Path(out_dir), result)
    sent = send_test(app.store, app.settings, pb, sid, result.items, address, clock) if address else []
    if fmt == "json":
        doc = {"playbook": result.playbook, "subject": result.subject, "now": result.now.isoformat(),
               "verdict": result.verdict, "reason": result.reason, "items": [i.as_json() for i in result.items]}
        if address:
            doc["test_send"] = {"to": address, "sent": [{"label": i.label, "outcome": o, "detail": d}
                                                        for i, o, d in sent]}
        print_json(doc)
    else:
        _print_preview(result, raw, app.settings.timezone)
        if address:
            write = out.file.write
            for item, outcome, detail in sent:
                write(f"test send of {item.label} ({item.kind} via {item.connector}) to {address}: {outcome}"
                      + (f" — {detail}" if detail else "") + "\n")
            if not sent:
                write(f"nothing to send to {address}: only emails are test-sent\n")
    failed = [o for _, o, _ in sent if o != "sent"]
    sys.exit(1 if failed or any(i.error for i in result.items) else 0)


def _subject_of(app: App, pb: Any, subject_id: str) -> str:
    """The bare id of the subject to preview: `ID` or `type:ID`, of the playbook's subject type, in the store."""
    from engine.errors import UserError
    from engine.store.database import database_exists

    stype, _, bare = subject_id.rpartition(":")
    if stype and stype != pb.subject:
        raise click.UsageError(f"playbook `{pb.id}` is about {pb.subject}s, not {stype}s")
    if not bare.strip():
        raise click.UsageError(f"give the id of a {pb.subject}")
    url = app.settings.database_url()
    if url.startswith("sqlite:///") and ":memory:" not in url and not database_exists(url):
        raise UserError(f"no database at {url[len('sqlite:///'):]} yet: run `playbook sync` first")
    with app.store.read() as tx:
        found = set(tx.subjects.find(bare))
    if pb.subject not in found:
        raise UserError(f"no {pb.subject} with id `{bare}` (run `playbook sync` first?)")
    return bare


def _address(text: str) -> str:
    """One email address (the connector checks it again when it sends)."""
    import re

    if not re.fullmatch(r"[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+", text.strip()):
        raise click.BadParameter(f"`{text}` is not one email address (e.g. me@example.com)", param_hint="--send-to")
    return text.strip()


def _print_preview(result: Any, raw: bool, tz: str) -> None:
    """Each item with its fields and bodies as plain text (a customer's data is printed, never interpreted)."""
    write = out.file.write
    state = {"fires": "it fires now", "repeats": "it repeats now"}.get(result.verdict)
    write(f"Preview of {result.playbook} for {result.subject} at {local_time(result.now, tz)} — "
          f"{state or 'it would not fire now: ' + result.reason}\n")
    if not result.items:
        write("no actions\n")
    for item in result.items:
        when = {"resolve": "on resolve", "enter": "on enter"}.get(item.event, "journey")
        head = f"{item.label} ({when}): {item.kind}"
        write(f"\n== {head} via {item.connector} " + "=" * max(3, 100 - len(head) - len(item.connector) - 8) + "\n")
        if item.error:
            write(f"not rendered: {item.error}\n")
            continue
        if item.policy:
            zone, at = item.policy.get("zone"), item.policy.get("send_at")
            when = local_time(datetime.fromisoformat(at), zone or tz) if at else ""
            if zone:
                write(f"  {'Zone':<18} {zone}\n")
            write(f"  {'Goes out':<18} {when}" + (" in the digest" if item.policy.get("digest") else "") + "\n")
            for key in ("digest", "deferred", "cap"):
                if item.policy.get(key):
                    write(f"  {key.capitalize():<18} {item.policy[key]}\n")
        for n, r in enumerate(item.renderings):
            if n:
                write("  " + "-" * 40 + "\n")
            for name, value in r.fields.items():
                write(f"  {name:<18} {value}\n")
            if raw and r.raw is not None:
                write(f"--- raw {r.raw_suffix or ''} ---\n" + r.raw.decode("ascii", "replace").replace("\r\n", "\n")
                      + "\n")
                continue
            for name, body in r.bodies.items():
                write(f"--- {name} ---\n{body.rstrip()}\n")
    out.file.flush()


def _write_preview(directory: Path, result: Any) -> None:
    """Each rendering as files: NN-label.fields.txt, .txt/.html bodies and the raw document (.eml)."""
    import json
    import re

    from engine.errors import Diagnostic, UserError

    suffix = {"text": ".txt", "html": ".html", "blocks": ".blocks.json", "description": ".txt"}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        n = 0
        for item in result.items:
            for r in item.renderings:
                n += 1
                stem = directory / f"{n:02d}-{re.sub(r'[^a-z0-9]+', '-', item.label.lower()).strip('-')}-{item.kind}"
                stem.with_name(stem.name + ".json").write_text(
                    json.dumps({"label": item.label, "kind": item.kind, "to": item.to, **item.policy,
                                "fields": r.fields}, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
                for name, body in r.bodies.items():
                    stem.with_name(stem.name + suffix.get(name, f".{name}.txt")).write_text(body, encoding="utf-8")
                if r.raw is not None:
                    stem.with_name(stem.name + (r.raw_suffix or ".raw")).write_bytes(r.raw)
    except OSError as exc:
        raise UserError(Diagnostic(str(directory), None, None, f"cannot write the preview: {exc.strerror or exc}",
                                   "choose a folder you can write to")) from None


@click.command("diff")
@click.option("--base", required=True, metavar="GIT_REF|DIR",
              help="compare with the playbooks at this git ref (branch, tag, commit) or in this folder")
@NOW
@FORMAT
@command
def diff_cmd(app: App, base: str, now: str | None, fmt: str) -> None:
    """What changed per playbook since the base (trigger, conditions, actions, schedule, activation, templates)
    and its effect on the synced data now: who newly matches or stops matching, and what the next run does."""
    from engine.diff import base_settings, diff
    from engine.spec.loader import load_playbooks

    clock = app.clock(now)
    head = app.playbooks
    with base_settings(app.settings, base) as (settings_then, shown):
        then = load_playbooks(settings_then)
        found = diff(app.store, app.settings, then, head, settings_then, clock)
    if fmt == "json":
        print_json({"base": shown, "now": clock.local().isoformat(), "playbooks": [d.as_json() for d in found]})
    else:
        _print_diff(found, shown, clock)
    sys.exit(1 if any(d.status == "invalid" for d in found) else 0)


def _print_diff(found: list[Any], base: str, clock: Any) -> None:
    """A table of the playbooks that changed, then what changed in each and whom it concerns."""
    from engine.diff import SHOWN_IDS, action_counts

    def counts(events: list[dict[str, Any]]) -> str:
        by_event = Counter(e["event"] for e in events)
        return ", ".join(f"{n} {k}" for k, n in sorted(by_event.items())) or "—"

    def kinds(events: list[dict[str, Any]]) -> str:
        return ", ".join(f"{n} {k}" for k, n in action_counts(events).items()) or "—"

    def ids(items: list[str]) -> str:
        return ", ".join(items[:SHOWN_IDS]) + (f" and {len(items) - SHOWN_IDS} more" if len(items) > SHOWN_IDS else "")

    title = f"Playbooks changed since {base}, their effect at {local_time(clock.now, clock.timezone)}"
    rows = [[d.id, d.status, ", ".join(dict.fromkeys(c.category for c in d.changes)) or "—",
             f"{len(d.matching_before)} → {len(d.matching_after)}", len(d.newly_matching), len(d.no_longer_matching),
             counts(d.next_run), kinds(d.next_run), f"{kinds(d.added_events)} / {kinds(d.removed_events)}"]
            for d in found]
    out.print(table(title, ["playbook", "status", "changed", "matching", "+new", "-gone", "next run", "its actions",
                            "change adds / removes"], rows, nowrap=("playbook",),
                    caption="nothing changed" if not rows else "matching: subjects matching now, before → after; "
                            "next run: what `playbook run` would do now (activation applied)"))
    write = out.file.write
    for d in found:
        write(f"\n{d.id} ({d.status})\n")
        for p in d.problems:
            write(f"  {p}\n")
        for c in d.changes:
            write(f"  {c.path}: {_brief(c.before)} → {_brief(c.after)}\n")
        if d.newly_matching:
            write(f"  newly matching: {ids(d.newly_matching)}\n")
        if d.no_longer_matching:
            write(f"  no longer matching: {ids(d.no_longer_matching)}\n")
        for what, events in (("adds to", d.added_events), ("takes away from", d.removed_events)):
            if events:
                groups: dict[str, list[str]] = {}
                for e in events:
                    groups.setdefault(e["event"], []).append(e["subject"].partition(":")[2])
                parts = "; ".join(f"{len(v)} {k} ({ids(v)})" for k, v in groups.items())
                write(f"  the change {what} the next run: {parts}; actions: {kinds(events)}\n")
    out.file.flush()


def _brief(value: Any) -> str:
    """A changed value on one line."""
    import json

    if value is None:
        return "(none)"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= 100 else text[:99] + "…"


COMMANDS = [run, explain, preview, diff_cmd, history]
