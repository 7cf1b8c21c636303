"""Benchmark phases, each run in its own process: `python -m bench.phases PHASE PARAMS_JSON RESULT_PATH`.

Every phase opens the workspace's config like the CLI does (engine.app.App), times its own core
section with perf_counter (interpreter start-up and imports are not in `seconds`), and writes a JSON
result that includes the process's peak RSS.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import and_, func, or_, select

from bench.measure import SqliteSteps, io_counters, peak_rss_mb, work_done
from engine.app import App

PHASES: dict[str, Callable[..., dict[str, Any]]] = {}


def phase(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    PHASES[fn.__name__] = fn
    return fn


def say(text: str) -> None:
    print(f"    {text}", file=sys.stderr, flush=True)


@phase
def sync(config: str) -> dict[str, Any]:
    """`playbook sync`: every source into the database; rows/s per entity."""
    from engine.sync.runner import run_sync

    app = App(config)
    marks: dict[str, int] = {}

    def progress(entity: str, done: int, total: int | None) -> None:
        step = max((total or 0) // 4, 1)
        if total and done and done // step > marks.get(entity, 0) and done < total:
            marks[entity] = done // step
            say(f"sync {entity}: {done:,} / {total:,}")

    started = time.perf_counter()
    report = run_sync(app.settings, app.store, progress=progress)
    seconds = time.perf_counter() - started
    entities = {name: {"rows": r.read, "seconds": round(r.seconds, 3),
                       "rows_per_s": round(r.read / r.seconds) if r.seconds else None}
                for name, r in report.entities.items()}
    app.close()
    return {"seconds": seconds, "entities": entities}


def _writes(conn: Any, schema: Any, now: datetime) -> dict[str, int]:
    """Rows of episodes touched at `now`, and the events / outbox row counts."""
    e = schema.episodes
    touched = or_(e.c.started_at == now, e.c.last_fired_at == now, e.c.resolved_at == now)
    return {"episodes_at_now": conn.scalar(select(func.count()).select_from(e).where(touched)) or 0,
            "events": conn.scalar(select(func.count()).select_from(schema.events)) or 0,
            "outbox": conn.scalar(select(func.count()).select_from(schema.outbox)) or 0}


@phase
def tick(config: str, now: str, label: str = "tick") -> dict[str, Any]:
    """run_tick with every playbook at `now`; wall time, events, rows written, slowest playbooks."""
    from engine.tick import run_tick

    started = time.perf_counter()
    app = App(config)
    settings, db, pbs = app.settings, app.store, app.playbooks
    clock = app.clock(now)
    load_s = time.perf_counter() - started
    with db.engine.connect() as conn:
        before = _writes(conn, db.schema, clock.now)
    marks: list[tuple[str, float]] = []
    count = len(pbs.valid)

    def on_playbook(pid: str) -> None:
        marks.append((pid, time.perf_counter()))
        if len(marks) % 10 == 0:
            say(f"{label}: {len(marks)}/{count} playbooks, {marks[-1][1] - started_tick:.1f}s")

    counter = SqliteSteps(db.engine)
    io_before = io_counters()
    started_tick = time.perf_counter()
    result = run_tick(db, settings, pbs, clock, on_playbook=on_playbook, keep_events=False)
    seconds = time.perf_counter() - started_tick
    checkpoint_after_s = _drain_checkpoints(db)
    work = work_done(io_before, io_counters(), counter.steps)   # the checkpoint's writes are the tick's too
    ends = [t for _, t in marks[1:]] + [started_tick + seconds]
    per_pb = sorted(((pid, end - t) for (pid, t), end in zip(marks, ends)), key=lambda x: -x[1])
    with db.engine.connect() as conn:
        after = _writes(conn, db.schema, clock.now)
        e = db.schema.episodes
        open_by = {pid: n for pid, n in conn.execute(select(e.c.playbook_id, func.count())
                                                     .where(e.c.is_open.is_(True)).group_by(e.c.playbook_id))}
    app.close()
    return {"seconds": seconds, "load_s": load_s, "playbooks": count, **_tick_figures(result),
            "skipped": {o.playbook: o.skipped for o in result.playbooks if o.skipped},
            "rows_written": {"episodes": after["episodes_at_now"], "events": after["events"] - before["events"],
                             "outbox": after["outbox"] - before["outbox"]},
            "scans": dict(Counter(result.scopes.values())),
            "checkpoint_after_s": checkpoint_after_s, "work": work,
            "slowest": [{"playbook": p, "seconds": round(s, 3)} for p, s in per_pb[:10]],
            "per_playbook_s": {p: round(s, 4) for p, s in per_pb}, "open_episodes": open_by}


@phase
def journey_setup(config: str, every: int, waiting: bool, due_at: str, later_at: str, started: str) -> dict[str, Any]:
    """Place the accounts in the bench journey as its earlier runs would have (bench/journeys.py): one in `every`
    waiting at `wait-nudge` due at `due_at`, and with `waiting` every other one due at `later_at`."""
    from engine.store.bulk import execute_many
    from sqlalchemy import insert

    app = App(config)
    clock = app.clock(started)
    due, later, at = app.clock(due_at).now, app.clock(later_at).now, clock.now
    s = app.store.schema
    with app.store.write() as tx:
        ids = list(tx.conn.execute(select(s.accounts.c.id).order_by(s.accounts.c.id)).scalars())
        # the due subjects entered together (one cohort, as a journey's subjects come due), the others after
        chosen = [(n, sid) for n, sid in enumerate(ids) if n % every == 0]
        chosen += [(n, sid) for n, sid in enumerate(ids) if waiting and n % every != 0]
        for i in range(0, len(chosen), 50_000):
            part = chosen[i:i + 50_000]
            execute_many(tx.conn, insert(s.journeys), [dict(
                playbook_id="bench-journey", subject_type="account", subject_id=sid, episode=1, status="active",
                step="wait-nudge", due_at=due if n % every == 0 else later, since=at, started_at=at, reason=None)
                for n, sid in part])
            execute_many(tx.conn, insert(s.episodes), [dict(
                playbook_id="bench-journey", subject_type="account", subject_id=sid, is_open=True, episode=1,
                firing=1, started_at=at, last_fired_at=at, resolved_at=None, baselined=False) for _, sid in part])
    app.close()
    return {"journeys": len(chosen), "due": sum(1 for n, _ in chosen if n % every == 0)}


@phase
def service(config: str, warmup_at: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Steady rounds inside one long-lived process, as `playbook start` runs its ticks (the `tick` phase is a
    fresh process per tick, as `playbook run` from cron): one App — engine, connection pool, compiled
    statements, loaded playbooks — for every tick; first a tick where nothing changed (the service has ticked
    before), then per round the ~1% change through an incremental sync into the same engine (`mutate`, as the
    service's sync job) and the tick. Between the two, the WAL checkpoint of the sync's pages is waited for
    (an hourly sync is minutes away from the next tick: its background checkpoint has long finished; the
    cold-process phases get the same from SQLite, which checkpoints when the sync process closes). Each
    round reports what the `tick` phase reports of a tick."""
    from engine.tick import run_tick

    app = App(config)
    run_tick(app.store, app.settings, app.playbooks, app.clock(warmup_at), keep_events=False)
    done = []
    for spec in rounds:
        mutate(config, spec["now"], spec["round_no"], into=app.store)
        _drain_checkpoints(app.store)
        started = time.perf_counter()
        result = run_tick(app.store, app.settings, app.playbooks, app.clock(spec["now"]), keep_events=False)
        done.append({"seconds": time.perf_counter() - started, "now": spec["now"], **_tick_figures(result)})
    app.close()
    return {"rounds": done}


def _tick_figures(result: Any) -> dict[str, Any]:
    """A TickResult's events by kind, actions planned and step timings (the `tick` and `service` phases)."""
    events: Counter[str] = Counter()
    for o in result.playbooks:
        events.update(o.counts)
    return {"events": dict(events), "planned": sum(o.planned for o in result.playbooks),
            "timings": {k: round(v, 4) for k, v in result.timings.items()}}


def _drain_checkpoints(db: Any) -> float | None:
    """SQLite: how long the background WAL checkpoint still ran after the tick returned (not in its seconds:
    a service goes on meanwhile; reported beside them)."""
    from engine.store import checkpoint

    checkpointer = checkpoint.of(db.engine)
    if checkpointer is None:
        return None
    started = time.perf_counter()
    checkpointer.drain(timeout=600)
    return round(time.perf_counter() - started, 3)


@phase
def mutate(config: str, now: str, round_no: int = 0, every: int = 100, into: Any = None,
           sync_at: datetime | None = None) -> dict[str, Any]:
    """Change ~1/every of the subjects deterministically, through an incremental sync of delta CSV files.

    Accounts number k with k % every == (every // 2 + round_no) % every change (so successive rounds change
    different accounts), by (k // every) % 4: arr triples; health
    goes to 90 and nps to 70; health empties and nps goes to -30; or arr drops to a quarter and health to
    35. Their usage over the last 7 days drops to 20% (groups 0, 2) or triples (+5); their goals reach
    target; the contacts of groups 0 and 1 flip `unsubscribed`. The changed rows (only the changed
    columns, plus keys) are written to data-delta-<config>/*.csv and loaded with `playbook sync`
    semantics (run_sync on a config whose sources are those files, mode incremental), as an hourly
    sync would; `into` an open engine.store.Store when given, else through its own; recorded as synced at
    `sync_at` when given (a past moment, as `playbook sync --as-of`)."""
    import csv

    from bench.suite import config_text
    from engine.sync.runner import run_sync

    app = App(config)
    db, s = app.store, app.store.schema
    today = app.clock(now).today
    recent = today.fromordinal(today.toordinal() - 6)
    a, u, g, c = s.accounts, s.usage, s.goals, s.contacts
    started = time.perf_counter()
    with db.engine.connect() as conn:
        ids = [r[0] for r in conn.execute(select(a.c.id).where(a.c.removed_at.is_(None)).order_by(a.c.id))]
        picked = (every // 2 + round_no) % every
        group = {aid: (k // every) % 4 for k, aid in enumerate(ids, 1) if k % every == picked}
        chosen = sorted(group)
        rows: dict[str, list[tuple[Any, ...]]] = {"accounts": [], "usage": [], "goals": [], "contacts": []}
        for part in _chunks(chosen):
            for aid, arr, health, nps in conn.execute(select(a.c.id, a.c.arr, a.c.health_score, a.c.nps)
                                                      .where(a.c.id.in_(part))):
                arr, health, nps = [(arr * 3, health, nps), (arr, 90.0, 70), (arr, None, -30),
                                    (arr / 4, 35.0, nps)][group[aid]]
                rows["accounts"].append((aid, arr, health, nps))
            for aid, metric, day, value in conn.execute(select(u.c.account_id, u.c.metric, u.c.day, u.c.value)
                                                        .where(u.c.account_id.in_(part), u.c.day >= recent)):
                changed = value * 0.2 if group[aid] % 2 == 0 else value * 3 + 5
                rows["usage"].append((aid, metric, day.isoformat(), changed))
            for gid, aid, target in conn.execute(select(g.c.id, g.c.account_id, g.c.target)
                                                 .where(g.c.account_id.in_(part), g.c.removed_at.is_(None))):
                rows["goals"].append((gid, aid, target))
            for cid, aid, unsub in conn.execute(select(c.c.id, c.c.account_id, c.c.unsubscribed)
                                                .where(c.c.account_id.in_(part), c.c.removed_at.is_(None))):
                if group[aid] < 2:
                    rows["contacts"].append((cid, aid, "false" if unsub else "true"))
    headers = {"accounts": ("id", "arr", "health_score", "nps"), "usage": ("account_id", "metric", "day", "value"),
               "goals": ("id", "account_id", "current"), "contacts": ("id", "account_id", "unsubscribed")}
    base = Path(config).resolve().parent
    delta = base / f"data-delta-{Path(config).stem}"
    delta.mkdir(exist_ok=True)
    for entity, header in headers.items():
        with (delta / f"{entity}.csv").open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            writer.writerows([["" if v is None else v for v in row] for row in rows[entity]])
    prepared = time.perf_counter() - started
    sources = [{"entity": e, "csv": f"{delta.name}/{e}.csv", "mode": "incremental"} for e in headers]
    delta_config = base / f"{Path(config).stem}-delta.yaml"
    delta_config.write_text(config_text(app.settings.database, sources), encoding="utf-8")
    app.close()
    delta_app = App(delta_config)
    started = time.perf_counter()
    report = run_sync(delta_app.settings, into if into is not None else delta_app.store, now=sync_at)
    seconds = time.perf_counter() - started
    delta_app.close()
    return {"seconds": seconds, "prepare_s": prepared, "accounts_total": len(ids),
            "changed": {e: len(v) for e, v in rows.items()},
            "loaded": {e: r.loaded for e, r in report.entities.items()}}


def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


@phase
def baseline_sql(config: str, now: str, windows: bool = False) -> dict[str, Any]:
    from bench.baselines import run_baseline_sql

    app = App(config)
    result = run_baseline_sql(app.store, app.playbooks, app.clock(now), windows=windows)
    app.close()
    return result


@phase
def baseline_per_row(config: str, now: str, sample: int) -> dict[str, Any]:
    from bench.baselines import run_baseline_per_row

    app = App(config)
    result = run_baseline_per_row(app.store, app.playbooks, app.clock(now), sample)
    app.close()
    return result


def _copy_outbox(app: App, target: Path, where: Any, limit: int) -> tuple[Any, int]:
    """A fresh SQLite database `target` holding `limit` pending outbox rows spread evenly over `where`."""
    from engine.store import open_store

    src, o = app.store, app.store.schema.outbox
    target.unlink(missing_ok=True)
    dst = open_store(f"sqlite:///{target}", app.settings.custom_fields())
    with src.engine.connect() as conn:
        ids = [r[0] for r in conn.execute(select(o.c.id).where(where).order_by(o.c.id))]
        step = max(1, len(ids) // max(limit, 1))
        picked = ids[::step][:limit]
        rows = []
        for part in range(0, len(picked), 500):
            rows += [dict(r) for r in conn.execute(select(o).where(o.c.id.in_(picked[part:part + 500]))
                                                   .order_by(o.c.id)).mappings()]
    for r in rows:
        r.pop("id")
    if rows:
        with dst.engine.begin() as conn:
            conn.execute(dst.schema.outbox.insert(), rows)
    return dst, len(rows)


@phase
def dispatch_sinks(config: str, actions: int) -> dict[str, Any]:
    """One Dispatcher delivering a sample of planned actions (every kind) to the local sinks."""
    from engine.plugins import build_connectors
    from engine.dispatch import Dispatcher
    from engine.clock import wall_clock

    app = App(config)
    o = app.store.schema.outbox
    dst, copied = _copy_outbox(app, app.settings.base_dir / "dispatch.db", o.c.status == "pending", actions)
    shutil.rmtree(app.settings.outbox_dir, ignore_errors=True)
    connectors = build_connectors(app.settings, dst, wall_clock)
    os.sync()    # the earlier phases' writes reach the disk before the clock starts, not while it runs
    started = time.perf_counter()
    stats = Dispatcher(dst, app.settings, connectors).run_once()
    seconds = time.perf_counter() - started
    for conn in connectors.values():
        conn.close()
    app.close()
    return {"seconds": seconds, "actions": stats.total, "copied": copied, "by_outcome": dict(stats.by_outcome),
            "by_connector": dict(stats.by_connector), "actions_per_s": stats.total / seconds if seconds else None}


@phase
def dispatch_smtp(config: str, actions: int) -> dict[str, Any]:
    """One Dispatcher (one worker) sending planned email actions to a local aiosmtpd server process."""
    from bench.smtp_throughput import local_smtp_server
    from engine.dispatch import Dispatcher

    app = App(config)
    o = app.store.schema.outbox
    dst, copied = _copy_outbox(app, app.settings.base_dir / "smtp.db",
                               and_(o.c.status == "pending", o.c.kind == "email"), actions)
    with local_smtp_server() as email:
        os.sync()
        started = time.perf_counter()
        stats = Dispatcher(dst, app.settings, {"email": email}).run_once()
        seconds = time.perf_counter() - started
    with dst.engine.connect() as conn:
        payloads = [r[0] for r in conn.execute(select(dst.schema.outbox.c.payload)
                                               .where(dst.schema.outbox.c.status == "sent"))]
    messages = sum(len(p.get("messages", [])) for p in payloads)
    app.close()
    return {"seconds": seconds, "actions": stats.total, "copied": copied, "messages": messages,
            "by_outcome": dict(stats.by_outcome), "emails_per_s": messages / seconds if seconds else None,
            "actions_per_s": stats.total / seconds if seconds else None}


@phase
def history_syncs(config: str, first: str, days: list[str]) -> dict[str, Any]:
    """A full sync recorded at `first`, then one incremental sync per day of `days` (ISO moments) changing
    another ~1% of the subjects (`mutate`), each recorded at its moment: the synced history a backtest reads."""
    from engine.clock import make_clock
    from engine.sync.runner import run_sync

    app = App(config)
    tz = app.settings.timezone
    started = time.perf_counter()
    run_sync(app.settings, app.store, now=make_clock(tz, first).now)
    full_s = time.perf_counter() - started
    rounds = []
    for k, moment in enumerate(days):
        say(f"history: sync {k + 1}/{len(days)} at {moment}")
        rounds.append(mutate(config, moment, k, into=app.store, sync_at=make_clock(tz, moment).now)["seconds"])
    history = getattr(app.store.schema, "history", None) or {}
    with app.store.engine.connect() as conn:
        versions = {e: conn.scalar(select(func.count()).select_from(t)) for e, t in history.items()}
    app.close()
    return {"full_sync_s": full_s, "daily_sync_s": sum(rounds), "history_versions": versions}


@phase
def sync_speed(accounts: int, days: int, seed: int) -> dict[str, Any]:
    """bench.sync's measurement (its own usage file and databases in a temporary folder): the first and the
    unchanged sync of usage against a plain sqlite3 upsert and a csv read of the same file."""
    import argparse
    import shutil
    import tempfile

    from bench.sync import measure_speed

    root = Path(tempfile.mkdtemp(prefix="pb-bench-sync-"))
    try:
        return measure_speed(argparse.Namespace(accounts=accounts, days=days, seed=seed), root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@phase
def backtest(config: str, start: str, end: str) -> dict[str, Any]:
    """run_backtest over [start, end) with every playbook: wall time, where it goes, SQLite instructions, events."""
    from engine.backtest import run_backtest
    from engine.clock import make_clock
    from engine.tick import Stopwatch

    app = App(config)
    tz = app.settings.timezone
    watch = Stopwatch()
    counter = SqliteSteps(app.store.engine)
    io_before = io_counters()
    events: Counter = Counter()
    started = time.perf_counter()

    def on_run(at: datetime, due: int) -> None:
        say(f"backtest: run at {at:%Y-%m-%d %H:%M} UTC, {due} playbooks, {time.perf_counter() - started:.1f}s")

    summary = run_backtest(app.store, app.settings, app.playbooks, make_clock(tz, start).now,
                           make_clock(tz, end).now, on_event=lambda e: events.update([e.event.event]),
                           on_run=on_run, watch=watch)
    seconds = time.perf_counter() - started
    work = work_done(io_before, io_counters(), counter.steps)
    app.close()
    return {"seconds": seconds, "runs": summary.runs, "evaluations": summary.evaluations, "events": dict(events),
            "timings": {k: round(v, 3) for k, v in watch.items()}, "work": work}


def main(argv: list[str]) -> None:
    name, params, out = argv[0], json.loads(argv[1]), Path(argv[2])
    result = PHASES[name](**params)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out.write_text(json.dumps(result, default=str), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
