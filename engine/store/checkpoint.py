"""SQLite WAL checkpoints on a background thread instead of inside the connection that commits.

By default SQLite checkpoints in whichever commit pushes the WAL past 1,000 pages: that commit copies
every page in the WAL into the database file and waits for the disk (fsync) before it returns. A tick
commits a few thousand scattered index pages, so its commit would pay the checkpoint and the disk flush in
line. Here connections keep only a high backstop (BACKSTOP_PAGES) and every
connection handed back to the pool wakes one thread per database file, which runs a PASSIVE checkpoint:
it copies what readers no longer need, never blocks writers, and runs while the tick goes on (the
sqlite3 module releases the GIL inside SQLite). This is the arrangement SQLite documents for
applications that want commits not to wait for checkpoints; PostgreSQL does the same in its own
checkpointer process. Durability is unchanged: a commit is in the WAL, which is replayed on open.

The thread starts at the first wake-up, opens the database only while it works, and exits after
IDLE_EXIT_S without work (the next wake-up starts a new one), so idle engines cost nothing."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import weakref
from urllib.parse import quote

from sqlalchemy import Engine, event

log = logging.getLogger("playbook.store")

# A connection still checkpoints itself, in its commit, once the WAL holds this many pages (~400 MB), should the
# thread fall behind. It must exceed what one write batch commits (engine/store/batch.py: a second of writes, some
# 20,000 pages at a million accounts), or every batch commit of a large tick checkpoints in line.
BACKSTOP_PAGES = 100_000
IDLE_EXIT_S = 10.0


class WalCheckpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on its own thread each time `wake()` is called."""

    def __init__(self, path: str):
        self.path = path
        self.seconds = 0.0                    # time spent checkpointing so far (tests, debugging)
        self._cond = threading.Condition()
        self._wanted = self._done = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def wake(self) -> None:
        """Ask for a checkpoint of everything committed so far (returns at once)."""
        with self._cond:
            self._request()

    def drain(self, timeout: float | None = None) -> bool:
        """Checkpoint everything committed before this call and wait for it; False on timeout."""
        with self._cond:
            if self._closed:
                return True
            target = self._request()
            return self._cond.wait_for(lambda: self._done >= target or self._closed, timeout)

    def close(self) -> None:
        """Stop the thread (connections closing afterwards checkpoint what is left, as SQLite always does)."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _request(self) -> int:
        if self._closed:
            return self._wanted
        self._wanted += 1
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
            self._thread.start()
        self._cond.notify_all()
        return self._wanted

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                with self._cond:
                    busy = self._cond.wait_for(lambda: self._closed or self._done < self._wanted, IDLE_EXIT_S)
                    if self._closed or not busy:
                        self._thread = None          # idle (or closed): the next wake() starts a new thread
                        return
                    upto = self._wanted
                started = time.perf_counter()
                try:
                    if conn is None:     # mode=rw: never create a file that was removed in the meantime
                        conn = sqlite3.connect(f"file:{quote(self.path)}?mode=rw", uri=True, isolation_level=None,
                                               check_same_thread=False)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    log.debug("background WAL checkpoint of %s failed: %s", self.path, exc)
                with self._cond:
                    self.seconds += time.perf_counter() - started
                    self._done = max(self._done, upto)
                    self._cond.notify_all()
        finally:
            if conn is not None:
                conn.close()


_BY_ENGINE: weakref.WeakKeyDictionary[Engine, WalCheckpointer] = weakref.WeakKeyDictionary()


def attach(engine: Engine, path: str) -> WalCheckpointer:
    """Give a SQLite file engine its checkpointer: woken whenever a connection goes back to the pool,
    stopped when the engine is disposed."""
    checkpointer = WalCheckpointer(path)
    _BY_ENGINE[engine] = checkpointer
    event.listen(engine, "checkin", lambda *_: checkpointer.wake())
    event.listen(engine, "engine_disposed", lambda *_: checkpointer.close())
    return checkpointer


def of(engine: Engine) -> WalCheckpointer | None:
    """The engine's checkpointer (None: not a SQLite file database)."""
    return _BY_ENGINE.get(engine)
