"""Planner statistics: a tick that grew a table a lot analyzes it on PostgreSQL (autovacuum comes too late)."""

from __future__ import annotations

from datetime import datetime

from conftest import Db
from engine.store.dialect import analyze_grown

NOW = datetime(2026, 3, 2, 9, 0)


def test_grown_tables_are_analyzed(db_url: str) -> None:
    db = Db(db_url)
    e = db.schema.events
    try:
        with db.engine.begin() as conn:
            conn.execute(e.insert(), [dict(run_id=1, at=NOW, playbook_id="p", subject_type="account",
                                           subject_id=f"A{i}", event="enter", episode=1, firing=1) for i in range(3000)])
            done = analyze_grown(conn, {e: 3000, db.schema.outbox: 999})
            if db.dialect != "postgresql":
                assert done == []              # SQLite: nothing to do
                return
            assert done == ["events"]          # never analyzed, 3,000 new rows; 999 rows are too few to matter
            counted = conn.exec_driver_sql("SELECT reltuples FROM pg_class WHERE oid = to_regclass('events')").scalar()
            assert counted == 3000
            assert analyze_grown(conn, {e: 200}) == []       # fewer than 1,000 rows: not worth it
            assert analyze_grown(conn, {e: 1000}) == ["events"]
    finally:
        db.dispose()
