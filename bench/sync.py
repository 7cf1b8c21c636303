"""The sync benchmark: `python -m bench.sync` (bench/README.md, "Sync").

Sync at the database's speed, field history included (issue 26). One usage CSV (accounts × 3 metrics × days)
is measured four ways in one run, on SQLite:

- baseline `read`: the file read with Python's `csv` module, nothing else;
- baseline `upsert`: the file upserted with plain `sqlite3` `executemany` (INSERT … ON CONFLICT DO UPDATE)
  into a table keyed by (account_id, metric, day), in one transaction, read with `csv` as it goes;
- `playbook sync` the first time (the accounts are synced before, not counted): rows validated, typed and
  written, the keys a snapshot needs kept;
- `playbook sync` again with nothing changed: every row read, validated and compared, none rewritten, no
  history row written, the snapshot's removal check done.

It reports the ratios first sync / upsert (target ≤ 2) and unchanged re-sync / read (target ≤ 8).
`--postgres URL` also times both syncs on PostgreSQL (in a fresh schema, dropped afterwards), in wall seconds
(the server's work is not the process's CPU time); no target.

`--history` measures the field history's space instead: N accounts synced daily for D days (each day `--change`
of them get a new `arr` and `health_score`), then the bytes of the history tables against the entity tables
(SQLite's dbstat). Prints the figures and writes a JSON file."""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "sync.json"
METRICS = ("logins", "active_users", "api_calls")
LAST_DAY = date(2026, 11, 30)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.sync", description=__doc__.split("\n\n")[0])
    p.add_argument("--accounts", type=int, default=20_000, help="accounts (default 20000)")
    p.add_argument("--days", type=int, default=60, help="days of usage per account and metric (default 60)")
    p.add_argument("--history", action="store_true", help="measure the field history's space instead")
    p.add_argument("--syncs", type=int, default=30, help="--history: daily syncs (default 30)")
    p.add_argument("--change", type=float, default=0.01, help="--history: share changed per sync (default 0.01)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workdir", type=Path, help="working directory (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    p.add_argument("--postgres", metavar="URL", help="also time both syncs on PostgreSQL (wall seconds)")
    return p.parse_args(argv)


def write_config(root: Path, sources: str, database: str | None = None, name: str = "config.yaml") -> Path:
    database = database or f"sqlite:///{root / 'engine.db'}"
    (root / name).write_text(f"timezone: UTC\ndatabase: {database}\n"
                             "fields:\n  accounts: {health_score: number}\n"
                             f"sources:\n{sources}", encoding="utf-8")
    return root / name


def write_accounts(path: Path, n: int, rng: random.Random, changed: dict[int, tuple[int, int]] | None = None) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "name", "arr", "seats", "plan", "csm_email", "renewal_date", "health_score"])
        for i in range(n):
            arr, score = (changed or {}).get(i, (10_000 + (i * 37) % 90_000, (i * 13) % 100))
            w.writerow([f"A{i:07d}", f"Account {i}", arr, 5 + i % 200, ("Team", "Business", "Enterprise")[i % 3],
                        f"csm{i % 50}@example.com", (LAST_DAY + timedelta(days=i % 365)).isoformat(), score])


def write_usage(path: Path, accounts: int, days: int, rng: random.Random) -> int:
    first = LAST_DAY - timedelta(days=days - 1)
    day_text = [(first + timedelta(days=d)).isoformat() for d in range(days)]
    rows = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["account_id", "metric", "day", "value"])
        for i in range(accounts):
            aid = f"A{i:07d}"
            for metric in METRICS:
                w.writerows([aid, metric, d, rng.randint(0, 500)] for d in day_text)
                rows += days
    return rows


def baseline_read(path: Path) -> float:
    started = time.process_time()
    with path.open(newline="", encoding="utf-8") as f:
        for _ in csv.reader(f):
            pass
    return time.process_time() - started


def baseline_upsert(path: Path, db: Path) -> float:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE usage (account_id TEXT, metric TEXT, day TEXT, value REAL, "
                 "PRIMARY KEY (account_id, metric, day))")
    started = time.process_time()
    conn.execute("BEGIN")
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        next(rows)
        conn.executemany("INSERT INTO usage VALUES (?, ?, ?, ?) ON CONFLICT (account_id, metric, day) "
                         "DO UPDATE SET value = excluded.value", rows)
    conn.execute("COMMIT")
    seconds = time.process_time() - started
    conn.close()
    return seconds


def timed_sync(config: Path, now: datetime, entities: list[str], clock: Any = time.process_time) -> tuple[float, Any]:
    from engine.settings import load_settings
    from engine.store import open_store
    from engine.sync.runner import run_sync

    settings = load_settings(config)
    store = open_store(settings.database_url(), settings.custom_fields())
    try:
        started = clock()
        report = run_sync(settings, store, now=now, entities=entities)
        return clock() - started, report
    finally:
        store.dispose()


def measure_speed(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    write_accounts(root / "accounts.csv", args.accounts, rng)
    rows = write_usage(root / "usage.csv", args.accounts, args.days, rng)
    print(f"{rows:,} usage rows ({(root / 'usage.csv').stat().st_size / 1e6:.0f} MB)", file=sys.stderr)
    config = write_config(root, "  - {entity: accounts, csv: accounts.csv}\n  - {entity: usage, csv: usage.csv}\n")
    read = baseline_read(root / "usage.csv")
    upsert = baseline_upsert(root / "usage.csv", root / "baseline.db")
    timed_sync(config, datetime(2026, 12, 1, 6), ["accounts"])
    first, report1 = timed_sync(config, datetime(2026, 12, 1, 6, 1), ["usage"])
    again, report2 = timed_sync(config, datetime(2026, 12, 2, 6), ["usage"])
    u1, u2 = report1.entities["usage"], report2.entities["usage"]
    assert (u1.inserted, u2.updated, u2.unchanged, u2.removed) == (rows, 0, rows, 0), (u1, u2)
    pg = measure_postgres(args.postgres, root, rows) if getattr(args, "postgres", None) else {}
    return {"usage_rows": rows, "read_s": round(read, 2), "upsert_s": round(upsert, 2),
            "sync_first_s": round(first, 2), "sync_unchanged_s": round(again, 2),
            "first_vs_upsert": round(first / upsert, 2), "unchanged_vs_read": round(again / read, 2),
            "targets": {"first_vs_upsert": 2.0, "unchanged_vs_read": 8.0}, **pg}


def measure_postgres(url: str, root: Path, rows: int) -> dict[str, Any]:
    """Both syncs of the same files on PostgreSQL, in a schema of their own (dropped afterwards): wall seconds."""
    import uuid

    from sqlalchemy import create_engine, text

    schema = "bench_sync_" + uuid.uuid4().hex[:10]
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        sep = "&" if "?" in url else "?"
        config = write_config(root, "  - {entity: accounts, csv: accounts.csv}\n  - {entity: usage, csv: usage.csv}\n",
                              f"{url}{sep}options=-csearch_path%3D{schema}", "config-pg.yaml")
        timed_sync(config, datetime(2026, 12, 1, 6), ["accounts"], time.perf_counter)
        first, report1 = timed_sync(config, datetime(2026, 12, 1, 6, 1), ["usage"], time.perf_counter)
        again, report2 = timed_sync(config, datetime(2026, 12, 2, 6), ["usage"], time.perf_counter)
        u1, u2 = report1.entities["usage"], report2.entities["usage"]
        assert (u1.inserted, u2.unchanged, u2.removed) == (rows, rows, 0), (u1, u2)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    return {"pg_sync_first_wall_s": round(first, 2), "pg_sync_unchanged_wall_s": round(again, 2)}


def table_bytes(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"))
    finally:
        conn.close()


def measure_history(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    config = write_config(root, "  - {entity: accounts, csv: accounts.csv}\n")
    current: dict[int, tuple[int, int]] = {}
    start = datetime(2026, 11, 1, 6)
    seconds = []
    for day in range(args.syncs):
        if day:
            for i in rng.sample(range(args.accounts), int(args.accounts * args.change)):
                current[i] = (rng.randint(1_000, 200_000), rng.randint(0, 100))
        write_accounts(root / "accounts.csv", args.accounts, rng, current)
        took, report = timed_sync(config, start + timedelta(days=day), ["accounts"])
        seconds.append(took)
    sizes = table_bytes(root / "engine.db")
    entity = sum(v for k, v in sizes.items() if k == "accounts" or k.startswith(("ix_accounts", "sqlite_autoindex_accounts_")))
    history = sum(v for k, v in sizes.items() if k.startswith("accounts_history") or k.startswith("sqlite_autoindex_accounts_history"))
    conn = sqlite3.connect(root / "engine.db")
    versions = conn.execute("SELECT COUNT(*) FROM accounts_history").fetchone()[0]
    conn.close()
    return {"accounts": args.accounts, "syncs": args.syncs, "change": args.change, "history_rows": versions,
            "entity_bytes": entity, "history_bytes": history, "history_vs_entity": round(history / entity, 3),
            "sync_s_median": round(sorted(seconds)[len(seconds) // 2], 2),
            "tables": sizes}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="pb-bench-sync-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        result = measure_history(args, root) if args.history else measure_speed(args, root)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({k: v for k, v in result.items() if k != "tables"}, indent=2))
    path = DEFAULT_JSON.with_name("history.json") if args.history and args.json == DEFAULT_JSON else args.json
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
