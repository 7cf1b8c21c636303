"""A `Tx`: one connection (and, for a write, its transaction) with every repository bound to it as an
attribute — what `Store.read()`, `Store.write()`, a Session and a write batch's units give."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from engine.store.schema import Schema

if TYPE_CHECKING:
    from engine.store.changes import Changes
    from engine.store.contact_sends import ContactSends
    from engine.store.entities import Entities
    from engine.store.field_history import FieldHistory
    from engine.store.episodes import Episodes, Runs
    from engine.store.journeys import Journeys
    from engine.store.leases import Leases
    from engine.store.metric_cache import MetricWindows
    from engine.store.outbox import Outbox
    from engine.store.replay import Replay
    from engine.store.scans import Scans
    from engine.store.stats import Stats
    from engine.store.subjects import Subjects
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
    def journeys(self) -> Journeys:
        from engine.store.journeys import Journeys
        return Journeys(self.conn, self.schema)

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
    def replay(self) -> Replay:
        from engine.store.replay import Replay
        return Replay(self.conn, self.schema)

    @cached_property
    def outbox(self) -> Outbox:
        from engine.store.outbox import Outbox
        return Outbox(self.conn, self.schema)

    @cached_property
    def contact_sends(self) -> ContactSends:
        from engine.store.contact_sends import ContactSends
        return ContactSends(self.conn, self.schema)

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
    def field_history(self) -> FieldHistory:
        from engine.store.field_history import FieldHistory
        return FieldHistory(self.conn, self.schema)

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
