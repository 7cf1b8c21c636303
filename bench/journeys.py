"""The journey benchmark: `python -m bench.journeys` (bench/README.md, "Journeys").

A run's cost must grow with the journey steps that are due, not with the subjects waiting in journeys (§14).
Two databases hold the same accounts and one journey playbook; in the first every account is in the journey
(1% of them due now, the others waiting weeks more), in the second only the due 1% is. The same runs are
measured on both — a run later on the same day (nothing synced since the last run) and the first run of the
next day (every subject's trigger scanned again; `exit_when` looked at for every journey) — each in a fresh
process, and compared by SQLite instructions and bytes written. Prints the figures and writes a JSON file."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.measure import run_phase

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "journeys.json"
DAY0, DAY = "2026-11-30", "2026-12-01"       # the journeys' last run, and the measured day

PLAYBOOK = """\
id: bench-journey
name: Bench journey
subject: account
activation: fire
trigger:
  when: "account.seats < 0"
exit_when: "days_since(account.created_at) > 3650"
steps:
  - id: welcome
    slack: {channel: "#bench", text: "{{ account.name }}: welcome"}
  - id: wait-nudge
    wait: 3d
  - id: nudge
    if: "account.arr < 50000"
    slack: {channel: "#bench", text: "{{ account.name }}: nudge"}
  - id: wait-check
    wait: 4d
  - id: check
    task: {title: "Check {{ account.name }}", assignee: "{{ account.csm_email }}", due_in: 2d}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.journeys", description=__doc__.split("\n\n")[0])
    p.add_argument("--subjects", type=int, default=1_000_000, help="accounts, all in journeys (default 1000000)")
    p.add_argument("--due-every", type=int, default=100, help="one subject in N is due (default 100: 1%%)")
    p.add_argument("--workdir", type=Path, help="working directory (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"result file (default {DEFAULT_JSON})")
    args = p.parse_args(argv)
    if args.subjects < args.due_every or args.due_every < 1:
        p.error("--subjects must be at least --due-every, which must be positive")
    return args


def workspace(root: Path, subjects: int) -> Path:
    """Config, the journey playbook, and `subjects` accounts (no contacts, usage or goals)."""
    (root / "playbooks").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "playbooks" / "bench-journey.yaml").write_text(PLAYBOOK, encoding="utf-8")
    with open(root / "data" / "accounts.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "name", "arr", "seats", "csm_email", "created_at"])
        for n in range(1, subjects + 1):
            w.writerow([f"A{n:07d}", f"Account {n}", 1000 + (n * 7919) % 99000, 10 + n % 90,
                        f"csm{n % 5}@example.com", "2026-11-01"])
    for name, header in (("contacts", "id,account_id,email,role"), ("usage", "account_id,metric,day,value"),
                         ("goals", "id,account_id,name")):
        (root / "data" / f"{name}.csv").write_text(header + "\n", encoding="utf-8")
    config = root / "config.yaml"
    config.write_text("timezone: Asia/Tokyo\ndatabase: sqlite:///playbook.db\nplaybooks: playbooks/\n"
                      "templates: templates/\nsources:\n"
                      "  - {entity: accounts, csv: data/accounts.csv}\n  - {entity: contacts, csv: data/contacts.csv}\n"
                      "  - {entity: usage, csv: data/usage.csv}\n  - {entity: goals, csv: data/goals.csv}\n",
                      encoding="utf-8")
    (root / "templates").mkdir(exist_ok=True)
    return config


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = args.workdir or Path(tempfile.mkdtemp(prefix="playbook-journeys-"))
    r: dict[str, Any] = {"subjects": args.subjects, "due": args.subjects // args.due_every, "workdir": str(base)}
    try:
        configs = {}
        for variant in ("all_waiting", "due_only"):
            root = base / variant
            if root.exists():
                shutil.rmtree(root)
            configs[variant] = workspace(root, args.subjects)
        first = configs["all_waiting"]
        _say(f"syncing {args.subjects:,} accounts")
        r["sync"] = run_phase("sync", {"config": str(first)})
        _say("the journey's first run (nobody matches its trigger), the day before")
        run_phase("tick", {"config": str(first), "now": f"{DAY0}T09:00", "label": "first run"})
        for name in ("playbook.db", "playbook.db-wal", "playbook.db-shm"):
            if (first.parent / name).exists():
                shutil.copy(first.parent / name, configs["due_only"].parent / name)
        for variant, config in configs.items():
            _say(f"{variant}: placing the subjects in the journey")
            r[f"setup_{variant}"] = run_phase("journey_setup", {
                "config": str(config), "every": args.due_every, "waiting": variant == "all_waiting",
                "due_at": f"{DAY0}T17:00", "later_at": "2026-12-30T09:00", "started": f"{DAY0}T09:00"})
            _copy(config.parent, config.parent / "setup")
        for variant, config in configs.items():
            for label, now in (("same_day", f"{DAY0}T18:00"), ("next_day", f"{DAY}T09:00")):
                _copy(config.parent / "setup", config.parent)       # both runs start from the same state
                _say(f"{variant}: {label} run at {now}")
                t = run_phase("tick", {"config": str(config), "now": now, "label": f"{variant} {label}"})
                r[f"{variant}_{label}"] = {k: t[k] for k in ("seconds", "work", "events", "planned", "rows_written",
                                                            "scans", "timings")}
        for label in ("same_day", "next_day"):
            a, b = r[f"all_waiting_{label}"], r[f"due_only_{label}"]
            r[f"ratio_{label}"] = {
                "seconds": _ratio(a["seconds"], b["seconds"]),
                "sqlite_steps": _ratio(a["work"].get("sqlite_steps"), b["work"].get("sqlite_steps")),
                "written_mb": _ratio(a["work"].get("written_mb"), b["work"].get("written_mb"))}
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    return r


def _copy(source: Path, target: Path) -> None:
    """The SQLite database files of one folder into another."""
    target.mkdir(exist_ok=True)
    for name in ("playbook.db", "playbook.db-wal", "playbook.db-shm"):
        (target / name).unlink(missing_ok=True)
        if (source / name).exists():
            shutil.copy(source / name, target / name)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _say(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def report(r: dict[str, Any]) -> str:
    lines = [f"journeys: {r['subjects']:,} subjects, {r['due']:,} due"]
    for label, what in (("same_day", "a later run the same day"), ("next_day", "the first run of the next day")):
        a, b, q = r[f"all_waiting_{label}"], r[f"due_only_{label}"], r[f"ratio_{label}"]
        lines.append(f"  {what}:")
        for name, t in (("all waiting", a), ("only the due", b)):
            w = t["work"]
            lines.append(f"    {name:13} {t['seconds']:7.2f} s  {w.get('sqlite_steps') or 0:>13,} SQLite steps  "
                         f"{w.get('written_mb', 0):7.1f} MB written  events {t['events']}")
        lines.append(f"    ratio          {q['seconds']} × seconds, {q['sqlite_steps']} × steps, "
                     f"{q['written_mb']} × bytes written (target ≤ 2×)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    r = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(r, indent=2), encoding="utf-8")
    print(report(r))


if __name__ == "__main__":
    main()
