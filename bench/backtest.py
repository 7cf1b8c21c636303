"""The backtest benchmark: `python -m bench.backtest` (bench/README.md, "The backtest").

The benchmark suite's data and 50 playbooks, every playbook scheduled daily at 09:00; a full sync recorded
the day before the period, then one incremental sync a day at 06:00 changing another ~1% of the subjects
(the synced history); then `playbook backtest` of the period, and, for comparison, one full-scan tick on the
same data (the first tick of a new day after a tick the day before: every subject scanned, metric windows
rebuilt). Each part runs in its own process (peak RSS its own). Prints the figures and writes a JSON file."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.data import ANCHOR, DataSpec, generate
from bench.measure import run_phase, sqlite_copy
from bench.suite import write_workspace

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "backtest.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.backtest", description=__doc__.split("\n\n")[0])
    p.add_argument("--accounts", type=int, default=100_000, help="accounts to generate (default 100000)")
    p.add_argument("--period", type=int, default=30, help="days of synced history backtested (default 30)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workdir", type=Path, help="working directory (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    p.add_argument("--reuse-data", action="store_true",
                   help="with --workdir: start from the database an earlier run synced there (same options)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    args = p.parse_args(argv)
    if args.accounts < 1 or not 1 <= args.period <= 59:
        p.error("--accounts must be positive and --period between 1 and 59")
    if args.reuse_data and args.workdir is None:
        p.error("--reuse-data needs --workdir")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="playbook-backtest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_workspace(workdir)
    config.write_text(config.read_text().replace('schedule: 0 9 * * 1-5', "schedule: 0 9 * * *"))
    first_day = ANCHOR - timedelta(days=args.period - 1)
    days = [(first_day + timedelta(days=k)).isoformat() for k in range(args.period)]
    r: dict[str, Any] = {"accounts": args.accounts, "period_days": args.period, "from": days[0], "to": days[-1],
                         "schedule": "0 9 * * * (every playbook)", "workdir": str(workdir)}
    marker = workdir / f"history-{args.accounts}-{args.period}-{args.seed}.json"
    db, synced = workdir / "playbook.db", workdir / "synced.db"      # synced: the database as the history left it
    try:
        if args.reuse_data and marker.exists() and synced.exists():
            r["history"] = json.loads(marker.read_text())
            _say(f"reusing the synced history in {synced}")
            sqlite_copy(synced, db)     # the reference ticks write: each run starts from the synced data
        else:
            for name in ("playbook.db", "playbook.db-wal", "playbook.db-shm"):
                (workdir / name).unlink(missing_ok=True)
            _say(f"generating {args.accounts:,} accounts with 60 days of usage")
            r["rows"] = generate(workdir / "data", DataSpec(args.accounts, 60, args.seed, ANCHOR))
            first = f"{(first_day - timedelta(days=1)).isoformat()}T06:00"
            _say(f"syncing at {first}, then {args.period} daily syncs changing ~1% each")
            r["history"] = run_phase("history_syncs", {"config": str(config), "first": first,
                                                       "days": [f"{d}T06:00" for d in days]})
            sqlite_copy(db, synced)
            marker.write_text(json.dumps(r["history"]))
        _say(f"backtest {days[0]} – {days[-1]}")
        end = (ANCHOR + timedelta(days=1)).isoformat()
        r["backtest"] = run_phase("backtest", {"config": str(config), "start": days[0], "end": end})
        _say("reference: a tick the day before, then the full-scan tick of the last day")
        run_phase("tick", {"config": str(config), "now": f"{(ANCHOR - timedelta(days=1)).isoformat()}T09:00",
                           "label": "tick the day before"})
        r["tick"] = run_phase("tick", {"config": str(config), "now": f"{ANCHOR.isoformat()}T09:00",
                                       "label": "full-scan tick"})
        b, t = r["backtest"], r["tick"]
        r["ratio_seconds"] = round(b["seconds"] / t["seconds"], 2)
        steps_b, steps_t = (b["work"] or {}).get("sqlite_steps"), (t["work"] or {}).get("sqlite_steps")
        r["ratio_sqlite_steps"] = round(steps_b / steps_t, 2) if steps_b and steps_t else None
        r["backtest_peak_rss_mb"] = b["peak_rss_mb"]
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return r


def _say(text: str) -> None:
    print(f"  {text}", flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    r = run(args)
    b, t = r["backtest"], r["tick"]
    print(f"\nbacktest of {r['period_days']} days at {r['accounts']:,} accounts: {b['seconds']:.1f} s "
          f"({b['runs']} runs, {b['evaluations']} evaluations, events {b['events']}), peak RSS {b['peak_rss_mb']} MB")
    print(f"  where the time goes: {b['timings']}")
    print(f"full-scan tick: {t['seconds']:.1f} s; ratio {r['ratio_seconds']}x by seconds, "
          f"{r['ratio_sqlite_steps']}x by SQLite instructions")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(r, indent=2, default=str))
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
