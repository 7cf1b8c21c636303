"""`python -m bench`: generate data, sync, tick (first, steady, no change), baselines, dispatch; table + JSON.

    python -m bench --accounts 100000 --playbooks 50 --days 60 [--json PATH] [--postgres [URL]]
                    [--skip-baselines] [--workdir DIR --keep] [--steady-runs N] [--profile]

Every phase runs in its own process (bench.phases) so its peak RSS is its own. Clocks are fixed:
the first tick at <anchor>T09:00 (config time zone Asia/Tokyo), the steady ticks between T10:00 and
T11:00 and the no-change tick at T11:00 of the same day, so metric windows do not move between ticks and
only the ~1% of subjects changed by `mutate` before each steady tick (an incremental sync of delta CSV
files, timed as `resync_s`) can change state.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

from bench.data import ANCHOR, DataSpec, generate
from bench.measure import ROOT, run_phase, sqlite_copy
from bench.report import print_table, write_json
from bench.suite import write_config, write_workspace

DEFAULT_JSON = ROOT / "bench" / "results" / "latest.json"
TICK_OPTIONS: dict[str, Any] = {}   # extra parameters of every tick phase
SYNC_ACCOUNTS = 20_000              # the sync ratios' usage file: at most this many accounts (bench.sync's size)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--accounts", type=int, default=100_000, help="accounts to generate (default 100000)")
    p.add_argument("--playbooks", type=int, default=50, help="playbooks in the suite (at most 50; default 50)")
    p.add_argument("--days", type=int, default=60, help="days of daily usage (default 60)")
    p.add_argument("--usage-accounts-fraction", type=float, default=1.0, metavar="F",
                   help="share of accounts that report usage at all (default 1.0)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    p.add_argument("--postgres", nargs="?", const="", default=None, metavar="URL",
                   help="also run sync and ticks on PostgreSQL (URL, default $PLAYBOOK_TEST_POSTGRES_URL), "
                        "in a fresh schema dropped afterwards; on by default when that variable is set")
    p.add_argument("--no-postgres", action="store_true", help="never run the PostgreSQL part")
    p.add_argument("--skip-baselines", action="store_true", help="skip the SQL and per-row Python baselines")
    p.add_argument("--baseline-sample", type=int, default=10_000, metavar="N",
                   help="per-row baseline: evaluate at most N accounts and extrapolate (default 10000)")
    p.add_argument("--dispatch-actions", type=int, default=5000, metavar="N",
                   help="planned actions (every kind) delivered to the local sinks (default 5000)")
    p.add_argument("--smtp-actions", type=int, default=2000, metavar="N",
                   help="planned email actions sent to the local SMTP server (default 2000)")
    p.add_argument("--workdir", type=Path, help="working directory (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the working directory (database, data, outbox)")
    p.add_argument("--reuse-data", action="store_true",
                   help="with --workdir: keep a copy of the freshly synced database there and, on later runs with "
                        "the same data options, start from it instead of generating and syncing again (the sync "
                        "figures are then those of the run that made it)")
    p.add_argument("--steady-runs", type=int, default=3, metavar="N",
                   help="steady-state rounds (each changes a different ~1%% of the subjects, then ticks) on each "
                        "database; the median round is reported (default 3, at most 10; single ticks on a busy "
                        "machine vary by ±25%%)")
    p.add_argument("--profile", action="store_true",
                   help="also profile the last steady round's tick with pyinstrument, replayed on a copy of the "
                        "database taken just before it (SQLite; text report next to the JSON)")
    args = p.parse_args(argv)
    if not 1 <= args.playbooks <= 50:
        p.error("--playbooks must be between 1 and 50")
    if args.accounts < 1 or args.days < 1 or not 1 <= args.steady_runs <= 10:
        p.error("--accounts and --days must be positive, --steady-runs between 1 and 10")
    if args.reuse_data and args.workdir is None:
        p.error("--reuse-data needs --workdir")
    problem = postgres_problem(postgres_url(args))
    if problem:
        p.error(f"{problem} — fix the URL (--postgres / PLAYBOOK_TEST_POSTGRES_URL) or pass --no-postgres")
    return args


def postgres_problem(url: str | None) -> str | None:
    """Why the PostgreSQL part could not run (checked before minutes of SQLite work), or None."""
    if url is None:
        return None
    from sqlalchemy import create_engine, exc

    try:
        engine = create_engine(url, connect_args={"connect_timeout": 10} if "psycopg" in url else {})
        with engine.connect():
            pass
        engine.dispose()
    except (exc.SQLAlchemyError, ImportError, ValueError) as e:
        first = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        return f"cannot use PostgreSQL at {url.split('@')[-1]}: {first}"
    return None


class Progress:
    """Timestamped progress lines on stderr."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.started:7.1f}s] {text}", file=sys.stderr, flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def postgres_url(args: argparse.Namespace) -> str | None:
    if args.no_postgres:
        return None
    env = os.environ.get("PLAYBOOK_TEST_POSTGRES_URL")
    if args.postgres is None:
        return env or None
    url = args.postgres or env
    if not url:
        sys.exit("--postgres needs a URL or PLAYBOOK_TEST_POSTGRES_URL (postgresql+psycopg://user@host:5432/db)")
    return url


def run(args: argparse.Namespace) -> dict[str, Any]:
    say = Progress()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="playbook-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("playbook.db", "playbook.db-wal", "playbook.db-shm"):
        (workdir / name).unlink(missing_ok=True)
    day = ANCHOR.isoformat()
    first_at, steady_at, nochange_at = f"{day}T09:00", f"{day}T10:00", f"{day}T11:00"
    spec = DataSpec(args.accounts, args.days, args.seed, ANCHOR, args.usage_accounts_fraction)
    r: dict[str, Any] = {"accounts": args.accounts, "playbooks": args.playbooks, "days": args.days,
                         "seed": args.seed, "anchor": day, "database": "sqlite", "workdir": str(workdir),
                         "usage_accounts_fraction": args.usage_accounts_fraction,
                         "clocks": {"first": first_at, "steady": steady_at, "nochange": nochange_at,
                                    "timezone": "Asia/Tokyo"},
                         "python": platform.python_version(), "sqlite_version": sqlite3.sqlite_version,
                         "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    r.update(engine_source(), loadavg_start=_loadavg())
    rss: dict[str, float] = {}
    try:
        config = str(write_workspace(workdir, args.playbooks))
        snapshot = Snapshot(workdir, spec) if args.reuse_data else None
        if snapshot and snapshot.restore(r):
            say(f"reusing the synced data of an earlier run ({snapshot.db})")
        else:
            _generate_and_sync(r, rss, workdir, spec, config, say)
            if snapshot:
                snapshot.save(r)
        if not args.skip_baselines:
            _baselines(args, r, rss, config, first_at, say)
            _sync_speed(args, r, rss, say)
        say(f"first tick at {first_at}")
        first = run_phase("tick", {"config": config, "now": first_at, "label": "first tick", **TICK_OPTIONS})
        _tick_keys(r, "first", first)
        rss["tick_first"] = first["peak_rss_mb"]
        if not args.skip_baselines:
            _baseline_windows(r, rss, config, first_at, say, "")
            r["agreement"] = _agreement(first["open_episodes"], r)
        say(f"dispatch {args.dispatch_actions:,} actions to local sinks")
        sinks = run_phase("dispatch_sinks", {"config": config, "actions": args.dispatch_actions})
        r["dispatch_sink_per_s"] = round(sinks["actions_per_s"] or 0, 1)
        r["dispatch_sink_actions"], r["dispatch_sink_detail"] = sinks["actions"], sinks["by_connector"]
        say(f"dispatch {args.smtp_actions:,} email actions to a local SMTP server")
        smtp = run_phase("dispatch_smtp", {"config": config, "actions": args.smtp_actions})
        r["dispatch_smtp_per_s"] = round(smtp["emails_per_s"] or 0, 1)
        r["dispatch_smtp_actions_per_s"] = round(smtp["actions_per_s"] or 0, 1)
        r["dispatch_smtp_actions"], r["dispatch_smtp_messages"] = smtp["actions"], smtp["messages"]
        r["dispatch_smtp_outcomes"] = smtp["by_outcome"]
        profile = args.json.with_name(args.json.stem + ".profile.txt") if args.profile else None
        _steady(r, rss, config, steady_at, nochange_at, say, "", profile, args.steady_runs)
        _service(r, rss, config, nochange_at, say, "", args.steady_runs)
        r["peak_rss_mb"] = rss["tick_steady"]
        _next_day(r, config, say, "")
        pg = postgres_url(args)
        if pg:
            _postgres(r, rss, workdir, pg, first_at, steady_at, nochange_at, say, not args.skip_baselines,
                      args.steady_runs)
        r["peak_rss_mb_by_phase"] = rss
        _ratios(r)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    r["bench_wall_s"] = round(say.elapsed, 1)
    r["loadavg_end"] = _loadavg()
    return r


def _loadavg() -> list[float] | None:
    """1/5/15-minute load averages: other work on the machine makes timings noisy."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def engine_source() -> dict[str, Any]:
    """Where the measured engine comes from: its folder, git commit and whether engine/ or connectors/ differ."""
    import subprocess

    import engine

    where = Path(engine.__file__).resolve().parent.parent
    out: dict[str, Any] = {"engine_path": str(where), "engine_commit": None, "engine_dirty": None}
    try:
        git = ["git", "-C", str(where)]
        out["engine_commit"] = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True,
                                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--", "engine", "connectors"], capture_output=True,
                               text=True, check=True).stdout.strip()
        out["engine_dirty"] = bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        marker = where / ".commit"
        out["engine_commit"] = marker.read_text(encoding="utf-8").strip() if marker.exists() else None
    return out


def _generate_and_sync(r: dict[str, Any], rss: dict[str, float], workdir: Path, spec: DataSpec, config: str,
                       say: Progress) -> None:
    say(f"generating {spec.accounts:,} accounts, {spec.days} days of usage in {workdir}")
    t = time.perf_counter()
    r["rows"] = generate(workdir / "data", spec, lambda n, total: say(f"  generated {n:,} / {total:,} accounts"))
    r["generate_s"] = round(time.perf_counter() - t, 2)
    say(f"data: {', '.join(f'{k} {v:,}' for k, v in r['rows'].items())}; syncing")
    sync = run_phase("sync", {"config": config})
    rss["sync"] = sync["peak_rss_mb"]
    r["sync_s"] = round(sync["seconds"], 2)
    r["sync_rows_per_s"] = {e: v["rows_per_s"] for e, v in sync["entities"].items()}
    r["sync_seconds"] = {e: v["seconds"] for e, v in sync["entities"].items()}


class Snapshot:
    """A copy of the freshly synced SQLite database, reused by later runs with the same data options."""

    KEYS = ("rows", "generate_s", "sync_s", "sync_rows_per_s", "sync_seconds")

    def __init__(self, workdir: Path, spec: DataSpec):
        self.db, self.meta = workdir / "synced.db", workdir / "synced.json"
        self.spec = {"accounts": spec.accounts, "days": spec.days, "seed": spec.seed,
                     "anchor": spec.anchor.isoformat(), "usage_fraction": spec.usage_fraction}

    def restore(self, r: dict[str, Any]) -> bool:
        if not (self.db.exists() and self.meta.exists()):
            return False
        meta = json.loads(self.meta.read_text(encoding="utf-8"))
        if meta.get("spec") != self.spec or not (self.db.parent / "data" / "usage.csv").exists():
            return False
        shutil.copyfile(self.db, self.db.parent / "playbook.db")
        r.update({k: meta[k] for k in self.KEYS}, sync_reused=True)
        return True

    def save(self, r: dict[str, Any]) -> None:
        shutil.copyfile(self.db.parent / "playbook.db", self.db)
        self.meta.write_text(json.dumps({"spec": self.spec, **{k: r[k] for k in self.KEYS}}), encoding="utf-8")


def _baselines(args: argparse.Namespace, r: dict[str, Any], rss: dict[str, float], config: str, now: str,
               say: Progress) -> None:
    say("baseline: one SQL statement over every account-level playbook")
    bsql = run_phase("baseline_sql", {"config": config, "now": now})
    r["baseline_sql_s"], r["baseline_sql_predicates"] = round(bsql["seconds"], 4), bsql["predicates"]
    r["baseline_sql_runs_s"], r["baseline_sql_counts"] = bsql["runs_s"], bsql["counts"]
    sql_file = args.json.with_name(args.json.stem + ".baseline.sql")
    sql_file.parent.mkdir(parents=True, exist_ok=True)
    sql_file.write_text(bsql["sql"] + ";\n", encoding="utf-8")
    r["baseline_sql_statement"] = str(sql_file)
    say(f"baseline: engine.lang.evaluate per subject (at most {args.baseline_sample:,} accounts)")
    bpr = run_phase("baseline_per_row", {"config": config, "now": now, "sample": args.baseline_sample})
    r["baseline_per_row_s"] = round(bpr["seconds"], 3)
    r["baseline_per_row_extrapolated"] = bpr["extrapolated"]
    r["baseline_per_row_sample"] = bpr["accounts_evaluated"]
    r["baseline_per_row_detail"] = {k: round(bpr[k], 3) for k in ("measured_s", "load_s", "usage_s", "eval_s")}
    r["baseline_per_row_counts"] = bpr["counts"]
    rss.update(baseline_sql=bsql["peak_rss_mb"], baseline_per_row=bpr["peak_rss_mb"])


def _sync_speed(args: argparse.Namespace, r: dict[str, Any], rss: dict[str, float], say: Progress) -> None:
    """The sync's two ratios (bench/sync.py) on a usage file of min(accounts, SYNC_ACCOUNTS) accounts."""
    accounts = min(args.accounts, SYNC_ACCOUNTS)
    say(f"sync against its baselines: {accounts:,} accounts × {args.days} days of usage (bench.sync)")
    out = run_phase("sync_speed", {"accounts": accounts, "days": args.days, "seed": args.seed})
    rss["sync_speed"] = out["peak_rss_mb"]
    r["sync_speed"] = {k: v for k, v in out.items() if k != "peak_rss_mb"}


def _baseline_windows(r: dict[str, Any], rss: dict[str, float], config: str, now: str, say: Progress,
                      suffix: str) -> None:
    """The single SQL scan again, metric windows read from those the first tick materialised (same day)."""
    say(f"{'PostgreSQL: ' if suffix else ''}baseline: the same SQL statement over the materialised metric windows")
    b = run_phase("baseline_sql", {"config": config, "now": now, "windows": True})
    r[f"baseline_sql_windows{suffix}_s"] = round(b["seconds"], 4)
    r[f"baseline_sql_windows{suffix}_runs_s"] = b["runs_s"]
    if not suffix:
        r["baseline_sql_windows_counts"] = b["counts"]
    rss[f"baseline_sql_windows{suffix}"] = b["peak_rss_mb"]


def _tick_keys(r: dict[str, Any], name: str, t: dict[str, Any], suffix: str = "") -> None:
    r[f"tick_{name}{suffix}_s"] = round(t["seconds"], 3)
    r[f"tick_{name}{suffix}_events"] = t["events"]
    r[f"tick_{name}{suffix}_planned"] = t["planned"]
    r[f"tick_{name}{suffix}_load_s"] = round(t["load_s"], 3)
    r[f"tick_{name}{suffix}_timings"] = t.get("timings")
    r[f"tick_{name}{suffix}_checkpoint_after_s"] = t.get("checkpoint_after_s")
    r[f"tick_{name}{suffix}_work"] = t.get("work")
    if not suffix:
        r[f"tick_{name}_slowest"] = t["slowest"]
        r[f"tick_{name}_per_playbook_s"] = t["per_playbook_s"]
    if t["skipped"]:
        r[f"tick_{name}{suffix}_skipped"] = t["skipped"]


def _steady(r: dict[str, Any], rss: dict[str, float], config: str, steady_at: str, nochange_at: str,
            say: Progress, suffix: str, profile: Path | None = None, runs: int = 1) -> None:
    """`runs` rounds of: change ~1% of the subjects (a different 1% each round), then the steady tick (the
    rounds' ticks spread over the hour after `steady_at`, as hourly ticks on a busy day); the median round is
    reported, every round's seconds and work in tick_steady_runs_s and _runs_work (the median round by seconds
    may be another round in another run: compare work round by round). Then the no-change tick, and (SQLite) the last
    round replayed under the profiler from a copy of the database taken before it."""
    database = Path(config).parent / "playbook.db"
    rounds = []
    for i in range(runs):
        at = _minutes_after(steady_at, 60 * i // runs)
        of = f" (round {i + 1} of {runs})" if runs > 1 else ""
        say(f"changing ~1% of the subjects{suffix.replace('_', ' ')}{of} (incremental sync of delta files)")
        mutated = run_phase("mutate", {"config": config, "now": at, "round_no": i})
        if profile is not None and i == runs - 1:
            say("copying the database to replay the steady tick")
            sqlite_copy(database, database.with_suffix(".before-steady"))
        say(f"steady tick at {at}{of}")
        tick = run_phase("tick", {"config": config, "now": at, "label": "steady tick", **TICK_OPTIONS})
        rounds.append((tick, mutated, at))
    steady, mutated, _ = _median(rounds, lambda x: x[0]["seconds"])
    _tick_keys(r, "steady", steady, suffix)
    r[f"tick_steady{suffix}_runs_s"] = [round(t["seconds"], 3) for t, _, _ in rounds]
    r[f"tick_steady{suffix}_runs_work"] = [t.get("work") for t, _, _ in rounds]   # round by round, to compare runs
    r[f"tick_steady{suffix}_scans"] = steady["scans"]
    r[f"mutated{suffix}"] = mutated["changed"]
    r[f"resync{suffix}_s"] = round(mutated["seconds"], 3)
    r[f"resync{suffix}_runs_s"] = [round(m["seconds"], 3) for _, m, _ in rounds]
    rss[f"tick_steady{suffix}"] = max(t["peak_rss_mb"] for t, _, _ in rounds)
    say(f"no-change tick at {nochange_at}")
    same = run_phase("tick", {"config": config, "now": nochange_at, "label": "no-change tick", **TICK_OPTIONS})
    _tick_keys(r, "nochange", same, suffix)
    r[f"nochange_rows_written{suffix}"] = sum(same["rows_written"].values())
    r[f"nochange_rows_written{suffix}_detail"] = same["rows_written"]
    rss[f"tick_nochange{suffix}"] = same["peak_rss_mb"]
    if profile is not None:
        say(f"replaying the last steady tick under pyinstrument -> {profile}")
        sqlite_copy(database, database.with_suffix(".after"))
        sqlite_copy(database.with_suffix(".before-steady"), database)
        run_phase("tick", {"config": config, "now": rounds[-1][2], "label": "profiled steady tick", **TICK_OPTIONS},
                  profile=profile)
        sqlite_copy(database.with_suffix(".after"), database)
        database.with_suffix(".after").unlink()
        database.with_suffix(".before-steady").unlink()
        r["profile"] = str(profile)


def _service(r: dict[str, Any], rss: dict[str, float], config: str, nochange_at: str, say: Progress, suffix: str,
             runs: int) -> None:
    """The steady rounds again, inside one long-lived process as `playbook start` runs them (a tick where nothing
    changed first, 5 minutes after the no-change tick; then `runs` rounds, each changing another ~1%, spread over
    the rest of that hour); the median round is reported."""
    rounds = [{"now": _minutes_after(nochange_at, 15 + 45 * i // runs), "round_no": runs + i} for i in range(runs)]
    say(f"{'PostgreSQL: ' if suffix else ''}{runs} steady rounds inside one long-running process (as `playbook "
        f"start`)")
    out = run_phase("service", {"config": config, "warmup_at": _minutes_after(nochange_at, 5), "rounds": rounds})
    done = out["rounds"]
    median = _median(done, lambda x: x["seconds"])
    key = f"tick_steady_service{suffix}"
    r[f"{key}_s"] = round(median["seconds"], 3)
    r[f"{key}_runs_s"] = [round(x["seconds"], 3) for x in done]
    r[f"{key}_events"], r[f"{key}_planned"] = median["events"], median["planned"]
    r[f"{key}_timings"] = median["timings"]
    rss[key] = out["peak_rss_mb"]


def _median(items: list[Any], key: Callable[[Any], float]) -> Any:
    """The median item by `key` (the lower middle of an even number): the round a steady measure reports."""
    return sorted(items, key=key)[(len(items) - 1) // 2]


def _minutes_after(at: str, minutes: int) -> str:
    return (datetime.fromisoformat(at) + timedelta(minutes=minutes)).isoformat(timespec="minutes")


def _next_day(r: dict[str, Any], config: str, say: Progress, suffix: str) -> None:
    """The first tick of the next day, no data changed: metric windows and dates move, so every playbook
    scans all its subjects (what the first hourly tick of every day costs)."""
    at = f"{(ANCHOR + timedelta(days=1)).isoformat()}T09:00"
    say(f"next-day tick at {at}")
    t = run_phase("tick", {"config": config, "now": at, "label": "next-day tick", **TICK_OPTIONS})
    _tick_keys(r, "nextday", t, suffix)
    r[f"tick_nextday{suffix}_scans"] = t["scans"]


def _postgres(r: dict[str, Any], rss: dict[str, float], workdir: Path, url: str, first_at: str, steady_at: str,
              nochange_at: str, say: Progress, baselines: bool, runs: int) -> None:
    from sqlalchemy import create_engine, text

    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in url else "?"
    config = str(write_config(workdir, "config-pg.yaml", f"{url}{sep}options=-csearch_path%3D{schema}"))
    try:
        say(f"PostgreSQL: sync into schema {schema}")
        sync = run_phase("sync", {"config": config})
        r["sync_rows_per_s_pg"] = {e: v["rows_per_s"] for e, v in sync["entities"].items()}
        rss["sync_pg"] = sync["peak_rss_mb"]
        if baselines:
            say("PostgreSQL: baseline SQL")
            r["baseline_sql_pg_s"] = round(run_phase("baseline_sql", {"config": config, "now": first_at})["seconds"], 4)
        say(f"PostgreSQL: first tick at {first_at}")
        first = run_phase("tick", {"config": config, "now": first_at, "label": "first tick (pg)", **TICK_OPTIONS})
        _tick_keys(r, "first", first, "_pg")
        rss["tick_first_pg"] = first["peak_rss_mb"]
        if baselines:
            _baseline_windows(r, rss, config, first_at, say, "_pg")
        _steady(r, rss, config, steady_at, nochange_at, say, "_pg", runs=runs)
        _service(r, rss, config, nochange_at, say, "_pg", runs)
        r["peak_rss_pg_mb"] = rss["tick_steady_pg"]
        _next_day(r, config, say, "_pg")
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _agreement(open_episodes: dict[str, int], r: dict[str, Any]) -> dict[str, Any]:
    """The first tick's open episodes per playbook against the baselines' match counts (same data, clock)."""
    found = {"sql": r.get("baseline_sql_counts", {}), "sql_windows": r.get("baseline_sql_windows_counts", {}),
             "python": {} if r.get("baseline_per_row_extrapolated") else r.get("baseline_per_row_counts", {})}
    ids = sorted({pid for counts in found.values() for pid in counts})
    mismatches = {}
    for pid in ids:
        seen = {"tick": open_episodes.get(pid, 0), **{k: c[pid] for k, c in found.items() if pid in c}}
        if len(set(seen.values())) > 1:
            mismatches[pid] = seen
    return {"checked": len(ids), "mismatches": mismatches}


def _ratios(r: dict[str, Any]) -> None:
    steady, bsql, bpr = r.get("tick_steady_s"), r.get("baseline_sql_s"), r.get("baseline_per_row_s")
    r["ratio_tick_steady_over_baseline_sql"] = round(steady / bsql, 3) if steady and bsql else None
    windows = r.get("baseline_sql_windows_s")
    r["ratio_tick_steady_over_baseline_sql_windows"] = round(steady / windows, 3) if steady and windows else None
    r["ratio_baseline_per_row_over_tick_steady"] = round(bpr / steady, 2) if steady and bpr else None
    pg = r.get("tick_steady_pg_s")
    r["ratio_tick_steady_pg_over_sqlite"] = round(pg / steady, 3) if steady and pg else None
    service, service_pg = r.get("tick_steady_service_s"), r.get("tick_steady_service_pg_s")
    r["ratio_tick_steady_service_over_baseline_sql_windows"] = (round(service / windows, 3) if service and windows
                                                                 else None)
    r["ratio_baseline_per_row_over_tick_steady_service"] = round(bpr / service, 2) if service and bpr else None
    r["ratio_tick_steady_service_pg_over_sqlite"] = (round(service_pg / service, 3) if service and service_pg
                                                      else None)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    write_json(result, args.json)
    print_table(result)
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
