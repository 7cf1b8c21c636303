"""SQLite WAL checkpoints run on the engine's background thread, not inside the commit that fills the WAL."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

from sqlalchemy import Engine, text

from engine.store import checkpoint
from engine.store.database import make_engine


def _rows_in_main_file(db: Path, tmp_path: Path) -> int:
    """Rows of table t in the database file alone (what checkpoints moved there), the WAL left aside."""
    alone = tmp_path / "alone.db"
    shutil.copyfile(db, alone)
    for suffix in ("-wal", "-shm"):
        Path(f"{alone}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(alone)
    try:
        has_table = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'").fetchone()[0]
        return conn.execute("SELECT count(*) FROM t").fetchone()[0] if has_table else 0
    except sqlite3.DatabaseError:
        return -1       # copied while a checkpoint was writing pages into the file: a torn copy, try again
    finally:
        conn.close()


def test_a_large_commit_leaves_the_checkpoint_to_the_background_thread(sqlite_engine: Engine,
                                                                       tmp_path: Path) -> None:
    checkpointer = checkpoint.of(sqlite_engine)
    assert checkpointer is not None
    with sqlite_engine.connect() as conn:
        assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == checkpoint.BACKSTOP_PAGES
    assert checkpointer.drain(timeout=10)
    checkpointer.close()             # from here on, only the commits themselves could checkpoint
    with sqlite_engine.begin() as conn:   # ~2,500 pages: past SQLite's default threshold of 1,000
        conn.execute(text("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) "
                          "INSERT INTO t SELECT hex(randomblob(2000)) FROM n"))
    assert _rows_in_main_file(tmp_path / "c.db", tmp_path) == 0, "the commit checkpointed in line"


def test_the_thread_moves_committed_pages_into_the_file_and_stops_with_the_engine(sqlite_engine: Engine,
                                                                                  tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    checkpointer = checkpoint.of(sqlite_engine)
    with sqlite_engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES ('a'), ('b'), ('c')"))
    # handing the connection back woke the thread: no drain() here, only waiting for it
    deadline = time.monotonic() + 10
    while _rows_in_main_file(db, tmp_path) != 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _rows_in_main_file(db, tmp_path) == 3
    assert checkpointer.seconds > 0
    sqlite_engine.dispose()
    assert checkpointer._thread is None or not checkpointer._thread.is_alive()


def test_in_memory_databases_have_no_checkpointer() -> None:
    engine = make_engine("sqlite://")
    try:
        assert checkpoint.of(engine) is None
    finally:
        engine.dispose()
