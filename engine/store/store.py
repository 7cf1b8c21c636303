"""The store's front: `Store` opens connections and transactions and gives them out as `Tx`s (engine/store/tx.py).

Everything else asks a `Store`. A read or a write gives a `Tx` — one connection (and, for a write, its
transaction) with every repository bound to it as an attribute:

    with store.write() as tx:
        tx.outbox.enqueue(rows)
        tx.episodes.apply(...)

Repositories (episodes, runs, scans, changes, windows, subjects, outbox, contact_sends, tasks, suppressions,
leases, entities, stats) hold the SQL of one part of the schema; `dialect.py` holds what differs between SQLite
and PostgreSQL. A tick's playbooks share a write batch (`Store.batch`, batch.py) whose units are Txs too."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError as DatabaseError

from engine.store.schema import Schema
from engine.store.tx import Session, Tx

if TYPE_CHECKING:
    from engine.store.batch import WriteBatch
    from engine.store.changes import Touched
    from engine.store.subjects import RowCache


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

    def batch(self, *, dry_run: bool = False, on_commit: Callable[[float], None] | None = None,
              one_commit: bool = False) -> WriteBatch:
        """A write batch: consecutive units of work sharing one transaction, each in its own savepoint (committed
        once, at the end, with `one_commit`)."""
        from engine.store.batch import COMMIT_EVERY_S, WriteBatch
        return WriteBatch(self._engine, self.schema, dry_run=dry_run, on_commit=on_commit,
                          max_seconds=float("inf") if one_commit else COMMIT_EVERY_S)

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
