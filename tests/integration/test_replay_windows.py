"""The backtest's metric windows (engine/store/replay_windows.py) equal metric() over the usage as synced at each
moment: rows synced later are not there yet, revised values apply from their revision, deleted rows until their
deletion; whole and fractional values; every aggregate, with and without an offset.

On SQLite and, when PLAYBOOK_TEST_POSTGRES_URL is set, PostgreSQL."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from engine.clock import make_clock
from engine.lang import MetricRef
from engine.lang.python import python_metric
from engine.store.field_history import as_of
from test_sync import Workspace

TZ = "Asia/Tokyo"
FIRST_DAY = date(2026, 3, 2)
REFS = [MetricRef(metric, days, agg, offset) for metric in ("logins", "seats") for days in (1, 3, 6)
        for agg in ("sum", "avg", "min", "max", "count", "last") for offset in (0, 2)]
CONFIG = """
    sources:
      - {entity: accounts, csv: accounts.csv}
      - {entity: usage, csv: usage.csv}
"""


def series(seed: int, syncs: int) -> list[dict[tuple[str, str, date], Any]]:
    """The full usage file at each daily sync: yesterday's rows arrive, some rows are revised or deleted; some
    values are fractional."""
    rng = random.Random(seed)
    usage: dict[tuple[str, str, date], Any] = {}
    out = []
    for k in range(syncs):
        arriving = [FIRST_DAY - timedelta(days=d) for d in range(1, 9)] if k == 0 else [FIRST_DAY + timedelta(days=k - 1)]
        for account in ("A1", "A2", "A3", "A4"):
            for metric in ("logins", "seats"):
                for day in arriving:
                    if rng.random() < 0.8:
                        usage[(account, metric, day)] = rng.choice([0, 1, 2, 5, 9, 2.5, 0.1, -3])
        for key in list(usage):
            roll = rng.random()
            if roll < 0.08:
                del usage[key]
            elif roll < 0.2:
                usage[key] = rng.choice([0, 3, 7, 0.3, 1.7])
        out.append(dict(usage))
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_windows_equal_metric_over_the_usage_as_synced_then(tmp_path: Path, db_url: str, seed: int) -> None:
    ws = Workspace(tmp_path, db_url)
    ws.config(CONFIG, timezone=TZ)
    ws.write("accounts.csv", "id,name\nA1,One\nA2,Two\nA3,Three\nA4,Four\n")
    syncs = series(seed, 8)
    sync_moments = [make_clock(TZ, f"{FIRST_DAY + timedelta(days=k - 1)}T06:00").now for k in range(len(syncs))]
    try:
        for moment, usage in zip(sync_moments, syncs):
            ws.write("usage.csv", "account_id,metric,day,value\n" + "".join(
                f"{a},{m},{d},{v}\n" for (a, m, d), v in sorted(usage.items())))
            ws.sync(now=moment)
        # runs: right at a sync, between syncs, and several on one day (the windows only move forward)
        runs = [make_clock(TZ, f"{FIRST_DAY + timedelta(days=k)}T{hour}") for k in range(len(syncs) - 1)
                for hour in ("06:00", "09:00", "23:30")]
        with ws.db.store.read() as tx:
            windows = tx.replay.windows(REFS, runs[1], runs[-1])
            for clock in runs[1:]:
                windows.step(clock.now, clock.today)
                got = {row[0]: row[1:] for row in tx.conn.execute(
                    select(windows.table.c.account_id, *(windows.value(r, None) for r in REFS)))}
                rows: dict[str, dict[str, dict[date, Any]]] = {}
                for r in tx.conn.execute(select(as_of(ws.db.schema, "usage", clock.now).subquery())):
                    rows.setdefault(r.account_id, {}).setdefault(r.metric, {})[r.day] = r.value
                for account in ("A1", "A2", "A3", "A4"):
                    want = tuple(python_metric(rows.get(account, {}).get(r.name, {}), r, clock.today) for r in REFS)
                    assert got[account] == want, (account, clock.now)
    finally:
        ws.close()
