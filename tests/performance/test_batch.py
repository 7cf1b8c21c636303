"""Write batches on SQLite: the units' savepoint journal stays in memory, and only inside a batch."""

from __future__ import annotations

import sys

import pytest
from sqlalchemy import Connection, Engine, text

from engine.store import checkpoint
from engine.store.batch import WriteBatch
from engine.store.schema import build_schema

PAGES = 600         # rows of ~2 KB: one or two per 4 KiB page


@pytest.fixture
def engine(sqlite_engine: Engine) -> Engine:
    """The shared SQLite engine, its table t filled with PAGES rows of ~2 KB."""
    with sqlite_engine.begin() as conn:
        conn.execute(text(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {PAGES}) "
                          "INSERT INTO t SELECT hex(randomblob(1000)) FROM n"))
    return sqlite_engine


def _rewrite_every_page(conn: Connection, case: str) -> int:
    """Bytes this process wrote while an UPDATE changed every row (so every page) of t, before any commit. (SQLite
    leaves a page alone when a row's new bytes equal the old: hence upper, then lower.) The WAL checkpointer's
    thread is let finish first: it writes the last commit's pages into the database file meanwhile."""
    checkpointer = checkpoint.of(conn.engine)
    assert checkpointer is not None and checkpointer.drain(timeout=30)
    before = bytes_written()
    conn.execute(text(f"UPDATE t SET x = {case}(x)"))
    return bytes_written() - before


def bytes_written() -> int:
    """The bytes this process (every thread) has passed to write system calls so far (Linux /proc/self/io)."""
    with open("/proc/self/io", encoding="ascii") as fh:
        return int(dict(line.split(": ") for line in fh.read().splitlines())["wchar"])


def test_a_batch_keeps_its_savepoint_journal_in_memory(engine: Engine) -> None:
    with WriteBatch(engine, build_schema()) as batch, batch.unit() as unit:
        assert unit.conn.execute(text("PRAGMA temp_store")).scalar() == 2          # MEMORY
        written = _rewrite_every_page(unit.conn, "lower") if sys.platform.startswith("linux") else 0
    if sys.platform.startswith("linux"):
        # a savepoint outside a batch journals the same pages into a temporary file (SQLite spills it past 64 KiB)
        with engine.begin() as conn, conn.begin_nested():
            in_a_file = _rewrite_every_page(conn, "upper")
        assert in_a_file > PAGES * 2000
        assert written < 64 * 1024, f"the batch's unit wrote {written:,} bytes before its commit"
    with engine.begin() as conn:      # the same pooled connection, in a transaction that is not a batch
        assert conn.execute(text("PRAGMA temp_store")).scalar() == 0               # DEFAULT: sorts may spill again
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t WHERE x = upper(x)")).scalar() == PAGES
