"""The benchmark's output: a rich table on the terminal and a JSON file for machines and history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _num(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:,.{digits}f}" if abs(value) < 100 else f"{value:,.0f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text}{unit}"


def _rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = [("accounts / playbooks / days", f"{r['accounts']:,} / {r['playbooks']} / {r['days']}",
             ", ".join(f"{k} {v:,}" for k, v in r["rows"].items()) + " rows"),
            ("database", r["database"], r.get("sqlite_version", "")),
            ("engine", f"{r.get('engine_commit')}{' + local changes' if r.get('engine_dirty') else ''}",
             r.get("engine_path", ""))]
    for entity, rate in r["sync_rows_per_s"].items():
        reused = " (from an earlier run)" if r.get("sync_reused") else ""
        rows.append((f"sync {entity}", _num(rate, " rows/s"), _num(r["sync_seconds"][entity], " s") + reused))
    first, steady = r["tick_first_events"], r["tick_steady_events"]
    rows += [
        ("tick, first (everything enters)", _num(r["tick_first_s"], " s"),
         f"{sum(first.values()):,} events, {r['tick_first_planned']:,} actions planned"),
        ("re-sync of the ~1% changed", _num(r.get("resync_s"), " s"),
         ", ".join(f"{k} {n:,}" for k, n in r.get("mutated", {}).items()) + " rows (incremental)"
         + _runs(r.get("resync_runs_s", []), "one before each of")),
        ("tick, steady (~1% changed)", _num(r["tick_steady_s"], " s"),
         (", ".join(f"{n:,} {k}" for k, n in sorted(steady.items())) or "no events") + _scans(r, "steady")
         + _runs(r.get("tick_steady_runs_s", []), "median of") + _checkpoint(r.get("tick_steady_checkpoint_after_s"))),
        *_work_rows(r),
        *_service_rows(r, ""),
        ("peak RSS of the steady tick", _num(r["peak_rss_mb"], " MiB"),
         f"first tick {_num(r['peak_rss_mb_by_phase'].get('tick_first'), ' MiB')}"),
        ("tick, nothing changed", _num(r["tick_nochange_s"], " s"),
         f"rows written: {r['nochange_rows_written']} (must be 0)"),
    ]
    if r.get("tick_nextday_s") is not None:
        nextday = r["tick_nextday_events"]
        rows.append(("tick, next day (nothing synced)", _num(r["tick_nextday_s"], " s"),
                     (", ".join(f"{n:,} {k}" for k, n in sorted(nextday.items())) or "no events")
                     + _scans(r, "nextday")))
    if r.get("baseline_sql_s") is not None:
        rows.append(("baseline: one SQL scan", _num(r["baseline_sql_s"], " s", 3),
                     f"{r['baseline_sql_predicates']} account-level playbooks, best of 2"))
        rows.append(("ratio tick_steady / baseline_sql", _num(r.get("ratio_tick_steady_over_baseline_sql"), "×", 3),
                     "against the scan that aggregates usage itself"))
    if r.get("baseline_sql_windows_s") is not None:
        rows.append(("baseline: one SQL scan, windows materialised", _num(r["baseline_sql_windows_s"], " s", 3),
                     "metric windows read from the engine's window table, best of 2"))
        rows.append(("ratio tick_steady / that scan", _num(r["ratio_tick_steady_over_baseline_sql_windows"], "×", 3),
                     "how far from the storage engine's limit"))
    rows += _sync_rows(r)
    if r.get("baseline_per_row_s") is not None:
        rows.append(("baseline: Python per row", _num(r["baseline_per_row_s"], " s"),
                     "extrapolated from " + f"{r['baseline_per_row_sample']:,} accounts"
                     if r["baseline_per_row_extrapolated"] else "every subject"))
        rows.append(("ratio baseline_per_row / tick_steady",
                     _num(r["ratio_baseline_per_row_over_tick_steady"], "×", 1), "speed-up over per-row Python"))
    if r.get("agreement"):
        a = r["agreement"]
        rows.append(("match counts agree", "yes" if not a["mismatches"] else f"NO ({len(a['mismatches'])})",
                     f"first tick's open episodes vs baselines, {a['checked']} playbooks"))
    rows += [("dispatch to local sinks", _num(r["dispatch_sink_per_s"], " actions/s"),
              f"{r['dispatch_sink_actions']:,} actions, one Dispatcher"),
             ("dispatch to local SMTP", _num(r["dispatch_smtp_per_s"], " emails/s"),
              f"{r['dispatch_smtp_messages']:,} emails in {r['dispatch_smtp_actions']:,} actions, one worker")]
    if r.get("tick_steady_pg_s") is not None:
        rows += [("PostgreSQL: sync usage", _num(r["sync_rows_per_s_pg"].get("usage"), " rows/s"), ""),
                 ("PostgreSQL: tick first", _num(r["tick_first_pg_s"], " s"), ""),
                 ("PostgreSQL: re-sync of the ~1% changed", _num(r.get("resync_pg_s"), " s"), ""),
                 ("PostgreSQL: tick steady", _num(r["tick_steady_pg_s"], " s"),
                  f"peak RSS {_num(r['peak_rss_pg_mb'], ' MiB')}" + _runs(r.get("tick_steady_pg_runs_s", []),
                                                                          "median of")),
                 ("ratio PostgreSQL / SQLite, steady tick", _num(r.get("ratio_tick_steady_pg_over_sqlite"), "×", 2),
                  "the two medians"),
                 *_service_rows(r, "_pg"),
                 ("PostgreSQL: tick nothing changed", _num(r["tick_nochange_pg_s"], " s"),
                  f"rows written: {r['nochange_rows_written_pg']}"),
                 ("PostgreSQL: tick next day", _num(r.get("tick_nextday_pg_s"), " s"), ""),
                 ("PostgreSQL: baseline SQL", _num(r.get("baseline_sql_pg_s"), " s", 3), ""),
                 ("PostgreSQL: baseline SQL, windows materialised", _num(r.get("baseline_sql_windows_pg_s"), " s", 3),
                  "")]
    rows.append(("benchmark wall time", _num(r["bench_wall_s"], " s"),
                 f"load average {r.get('loadavg_start')} -> {r.get('loadavg_end')}; {r['workdir']}"))
    return rows


def _sync_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The sync's ratios to its baselines (bench/sync.py), when measured."""
    speed = r.get("sync_speed")
    if not speed:
        return []
    return [("ratio first sync / plain upsert", _num(speed["first_vs_upsert"], "×"),
             f"{speed['sync_first_s']} against {speed['upsert_s']} CPU s, {speed['usage_rows']:,} usage rows; "
             f"target ≤ {speed['targets']['first_vs_upsert']}"),
            ("ratio unchanged re-sync / csv read", _num(speed["unchanged_vs_read"], "×"),
             f"{speed['sync_unchanged_s']} against {speed['read_s']} CPU s; "
             f"target ≤ {speed['targets']['unchanged_vs_read']}")]


def _work_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The steady tick's work in figures that do not depend on the machine's speed (compare runs on different
    machines by these, not by seconds)."""
    work = r.get("tick_steady_work") or {}
    if work.get("sqlite_steps") is None and work.get("written_mb") is None:
        return []
    steps = work.get("sqlite_steps")
    io = (f"read {_num(work['read_mb'], ' MB')} in {work['read_calls']:,} calls, wrote {_num(work['written_mb'], ' MB')} "
          f"in {work['write_calls']:,} calls (WAL and checkpoint)" if work.get("written_mb") is not None else "")
    return [("work of the steady tick", _num(round(steps / 1e6, 1), "M SQLite steps") if steps is not None else "—",
             f"{io}; machine-independent: compare runs by these")]


def _service_rows(r: dict[str, Any], suffix: str) -> list[tuple[str, str, str]]:
    """The steady rounds inside one long-running process (as `playbook start`), when measured."""
    key = f"tick_steady_service{suffix}"
    if r.get(f"{key}_s") is None:
        return []
    events = r[f"{key}_events"]
    where = "PostgreSQL: " if suffix else ""
    ratio = r.get("ratio_tick_steady_service_pg_over_sqlite") if suffix else \
        r.get("ratio_tick_steady_service_over_baseline_sql_windows")
    against = "PostgreSQL / SQLite" if suffix else "/ windows-materialised scan"
    return [(f"{where}tick, steady, in one long-running process", _num(r[f"{key}_s"], " s"),
             (", ".join(f"{n:,} {k}" for k, n in sorted(events.items())) or "no events")
             + f"; as `playbook start` runs it (warm statements, pool, WAL); {against} "
             + (_num(ratio, "×", 2) if ratio is not None else "n/a")
             + _runs(r.get(f"{key}_runs_s", []), "median of"))]


def _scans(r: dict[str, Any], tick: str) -> str:
    scans = r.get(f"tick_{tick}_scans") or {}
    full = sum(n for reason, n in scans.items() if reason != "changes only")
    return f"; playbooks scanning changes only: {scans.get('changes only', 0)}, all subjects: {full}" if scans else ""


def print_table(result: dict[str, Any], console: Console | None = None) -> None:
    """The headline figures as a table, then the slowest playbooks of the steady tick."""
    console = console or Console()
    table = Table(title="playbook-engine benchmark")
    for name in ("measure", "value", "detail"):
        table.add_column(name, overflow="fold")
    for row in _rows(result):
        table.add_row(*row)
    console.print(table)
    slow = Table(title="slowest playbooks (seconds)")
    for name in ("playbook", "first tick", "steady tick"):
        slow.add_column(name)
    steady = result.get("tick_steady_per_playbook_s", {})
    for item in result.get("tick_first_slowest", [])[:8]:
        slow.add_row(item["playbook"], _num(item["seconds"], "", 3), _num(steady.get(item["playbook"]), "", 3))
    console.print(slow)


def write_json(result: dict[str, Any], path: Path) -> None:
    """Write the result (keys sorted, so runs diff well)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def _runs(seconds: list[float], what: str) -> str:
    """'; median of 3 rounds: 1.10, 1.20, 1.60 s' (what='median of') when there was more than one round."""
    if len(seconds) < 2:
        return ""
    return f"; {what} {len(seconds)} rounds: " + ", ".join(f"{s:.2f}" for s in seconds) + " s"


def _checkpoint(seconds: float | None) -> str:
    """'; WAL checkpoint 0.21 s more in the background' (SQLite)."""
    return "" if seconds is None else f"; WAL checkpoint {seconds:.2f} s more in the background"
