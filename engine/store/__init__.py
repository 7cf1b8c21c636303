"""The store: the one place that opens connections, transactions and statements.

Everything else asks a `Store`. A read or a write gives a `Tx` — one connection (and, for a write, its
transaction) with every repository bound to it as an attribute:

    with store.write() as tx:
        tx.outbox.enqueue(rows)
        tx.episodes.apply(...)

Repositories (episodes, runs, scans, changes, windows, subjects, outbox, tasks, suppressions, leases,
entities, stats) hold the SQL of one part of the schema; `dialect.py` holds what differs between SQLite
and PostgreSQL. A tick's playbooks share a write batch (`Store.batch`, batch.py) whose units are Txs too."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError as DatabaseError

from engine.store.schema import Schema

__all__ = ["DatabaseError", "Session", "Store", "Tx", "open_store"]

if TYPE_CHECKING:
    from engine.store.batch import WriteBatch
    from engine.store.changes import Changes, Touched
    from engine.store.entities import Entities
    from engine.store.episodes import Episodes, Runs
    from engine.store.leases import Leases
    from engine.store.metric_cache import MetricWindows
    from engine.store.outbox import Outbox
    from engine.store.scans import Scans
    from engine.store.stats import Stats
    from engine.store.subjects import RowCache, Subjects
    from engine.store.suppression import Suppressions
    from engine.store.tasks import Tasks


class Tx:
    """One connection's view of the store: every repository, bound to it."""

    def __init__(self, conn: Connection, schema: Schema, transaction: Any = None):
        self.conn, self.schema, self._transaction = conn, schema, transaction

    @property
    def dialect(self) -> str:
        return self.conn.dialect.name

    def rollback(self) -> None:
        """Discard everything this write transaction did; the block then ends without committing."""
        if self._transaction is not None and self._transaction.is_active:
            self._transaction.rollback()

    @cached_property
    def episodes(self) -> Episodes:
        from engine.store.episodes import Episodes
        return Episodes(self.conn, self.schema)

    @cached_property
    def runs(self) -> Runs:
        from engine.store.episodes import Runs
        return Runs(self.conn, self.schema)

    @cached_property
    def scans(self) -> Scans:
        from engine.store.scans import Scans
        return Scans(self.conn, self.schema)

    @cached_property
    def changes(self) -> Changes:
        from engine.store.changes import Changes
        return Changes(self.conn, self.schema)

    @cached_property
    def windows(self) -> MetricWindows:
        from engine.store.metric_cache import MetricWindows
        return MetricWindows(self.conn, self.schema)

    @cached_property
    def subjects(self) -> Subjects:
        from engine.store.subjects import Subjects
        return Subjects(self.conn, self.schema)

    @cached_property
    def outbox(self) -> Outbox:
        from engine.store.outbox import Outbox
        return Outbox(self.conn, self.schema)

    @cached_property
    def tasks(self) -> Tasks:
        from engine.store.tasks import Tasks
        return Tasks(self.conn, self.schema)

    @cached_property
    def suppressions(self) -> Suppressions:
        from engine.store.suppression import Suppressions
        return Suppressions(self.conn, self.schema)

    @cached_property
    def leases(self) -> Leases:
        from engine.store.leases import Leases
        return Leases(self.conn, self.schema)

    @cached_property
    def entities(self) -> Entities:
        from engine.store.entities import Entities
        return Entities(self.conn, self.schema)

    @cached_property
    def stats(self) -> Stats:
        from engine.store.stats import Stats
        return Stats(self.conn, self.schema)


class Session:
    """One pooled connection held for several short transactions (a dispatch batch's records)."""

    def __init__(self, conn: Connection, schema: Schema):
        self._conn, self._schema = conn, schema

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A transaction on this session's connection, committed when the block ends."""
        with self._conn.begin() as transaction:
            yield Tx(self._conn, self._schema, transaction)


class Store:
    """An open database: the engine, the tables of this configuration, and the ways to use them."""

    def __init__(self, engine: Engine, schema: Schema):
        self._engine, self.schema = engine, schema

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._engine.dialect.name

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine beneath: for the store's own tests and the benchmark's counters. Everything
        else asks the store."""
        return self._engine

    @property
    def url(self) -> Any:
        """The database URL (its password masked when printed)."""
        return self._engine.url

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A connection for reads; whatever it began is rolled back at the end."""
        with self._engine.connect() as conn:
            yield Tx(conn, self.schema)

    @contextmanager
    def write(self, *, immediate: bool = True) -> Iterator[Tx]:
        """A write transaction, committed when the block ends (rolled back if it raises). On SQLite it begins
        IMMEDIATE, taking the write lock up front so that two writers never deadlock upgrading a read lock."""
        with self._engine.connect() as conn:
            conn.info["immediate"] = immediate
            try:
                with conn.begin() as transaction:
                    yield Tx(conn, self.schema, transaction)
            finally:
                conn.info.pop("immediate", None)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One connection for several transactions (`Session.write`)."""
        with self._engine.connect() as conn:
            yield Session(conn, self.schema)

    def batch(self, *, dry_run: bool = False, on_commit: Callable[[float], None] | None = None) -> WriteBatch:
        """A write batch: consecutive units of work sharing one transaction, each in its own savepoint."""
        from engine.store.batch import WriteBatch
        return WriteBatch(self._engine, self.schema, dry_run=dry_run, on_commit=on_commit)

    def touched(self) -> Touched:
        """A record of what changed since some marks, read once per tick and shared by its scans."""
        from engine.store.changes import Touched
        return Touched(self.schema)

    def row_cache(self, shape: Callable[[dict], dict] | None = None) -> RowCache:
        """A bounded cache of subject rows for one tick (`shape` converts each row once as it is read)."""
        from engine.store.subjects import RowCache
        return RowCache(shape=shape)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()


def open_store(url: str, custom_fields: dict[str, dict[str, str]] | None = None, *, migrate: bool = True) -> Store:
    """Open (and by default migrate) the database at `url`, with columns for the declared custom fields."""
    from engine.store.database import open_engine

    engine, schema = open_engine(url, custom_fields, migrate=migrate)
    return Store(engine, schema)
