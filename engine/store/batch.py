"""Write batches: consecutive units of work (a tick's playbooks) sharing one write transaction.

Each unit runs inside its own savepoint, so it is still all or nothing; the transaction commits once
it has been open for `max_seconds` (or at the end), not after every unit. On SQLite a commit writes
every page the transaction dirtied to the WAL, and the pages that many playbooks touch (index pages
of episodes, events, match bits) were written once per playbook; in one batch they are written once.
The write lock is held for at most about `max_seconds` plus one unit, so dispatchers wait little.

A unit that raises is rolled back to its savepoint; what the earlier units of the batch did is
committed before the exception goes on, exactly as if each unit had had its own transaction."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from sqlalchemy import Connection, Engine

from engine.store.tx import Tx
from engine.store.schema import Schema

COMMIT_EVERY_S = 1.0


class Unit(Tx):
    """One unit's view of the batch: the repositories on its connection, and `discard()` to drop what it
    wrote so far."""

    def __init__(self, conn: Connection, schema: Schema, savepoint: Any):
        super().__init__(conn, schema)
        self._savepoint = savepoint

    def discard(self) -> None:
        """Roll back this unit's writes; later writes of the unit go straight into the batch transaction."""
        if self._savepoint.is_active:
            self._savepoint.rollback()


class WriteBatch:
    """`with store.batch() as batch: with batch.unit() as u: ...` — see the module docstring.

    With `dry_run`, every unit is rolled back and nothing is committed."""

    def __init__(self, engine: Engine, schema: Schema, *, dry_run: bool = False,
                 max_seconds: float = COMMIT_EVERY_S, on_commit: Callable[[float], None] | None = None):
        self.engine, self.schema, self.dry_run, self.max_seconds = engine, schema, dry_run, max_seconds
        self.on_commit = on_commit          # called with the seconds each commit took
        self._conn: Connection | None = None
        self._tx: Any = None
        self._opened = 0.0

    def __enter__(self) -> WriteBatch:
        return self

    def __exit__(self, *_: Any) -> None:
        self.finish(commit=True)          # every unit that ended did so completely: keep it

    @contextmanager
    def unit(self) -> Iterator[Unit]:
        """A savepoint inside the batch transaction (begun on first use)."""
        conn = self._begin()
        savepoint = conn.begin_nested()
        try:
            yield Unit(conn, self.schema, savepoint)
        except BaseException:
            if savepoint.is_active:
                savepoint.rollback()
            self.finish(commit=True)
            raise
        if savepoint.is_active:
            savepoint.rollback() if self.dry_run else savepoint.commit()
        if time.perf_counter() - self._opened >= self.max_seconds:
            self.finish(commit=True)

    def finish(self, *, commit: bool) -> None:
        """End the batch transaction (commit unless dry or told not to) and give back the connection."""
        if self._conn is None:
            return
        started = time.perf_counter()
        try:
            if commit and not self.dry_run:
                self._tx.commit()
            else:
                self._tx.rollback()
        finally:
            self._conn.close()
            self._conn = self._tx = None
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - started)

    def _begin(self) -> Connection:
        if self._conn is None:
            self._conn = self.engine.connect()
            self._conn.info["immediate"] = True          # SQLite: take the write lock up front (BEGIN IMMEDIATE)
            self._conn.info["savepoints"] = True         # SQLite: keep the units' savepoint journal in memory
            self._tx = self._conn.begin()
            self._opened = time.perf_counter()
        return self._conn
