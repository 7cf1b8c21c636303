"""A usage source grouped by account, synced without a lookup per row (sync/runner.py).

Usage exports list each account's rows together. Such a source is written in chunks of whole accounts: the
stored rows of a chunk's accounts are read with one range read of the key per account and compared in Python;
only new rows (inserted) and changed rows (their old versions to the field history, then upserted) are
written; into an empty table, without its secondary indexes, built at the end. A snapshot notes the stored
keys of those accounts it did not name, and the accounts it named (the rows of the others are absent too);
the runner deletes them at the end (store/entities.py `delete_gone_usage`). A key repeated in the source is found within its account's chunk.

When an account's rows come back in a later chunk (the source is not grouped), a chunk would hold rows naming
different fields, or one account's rows run past `LIMIT`, `NotGrouped` is raised: the runner rolls the source
back and syncs it by the general path (store/entities.py `write_rows`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from itertools import repeat
from operator import itemgetter
from typing import Any

from engine.datamodel import KEYS
from engine.store import Tx

LIMIT = 100_000     # rows of one account held back at most, waiting for the next account
KEY = KEYS["usage"]
Rows = dict[tuple[str, ...], list[tuple[Any, ...]]]
Invalid = list[tuple[int, tuple[Any, ...] | None, dict[str, Any] | None, list[str]]]
_MISSING = object()


class NotGrouped(Exception):
    """The source's rows are not grouped by account (or name different fields): sync it by the general path."""


class GroupedUsage:
    """One usage source's grouped sync. `compare`: the table had rows when the sync began (else every row is
    new and nothing is read back); `snapshot`: the source is a snapshot (its absent rows are removed)."""

    def __init__(self, compare: bool, snapshot: bool):
        self.compare, self.snapshot = compare, snapshot
        self.done: set[Any] = set()     # the accounts whose chunk was written
        self.stored = 0                 # stored rows of those accounts (when the sync began)
        self.inserted = 0
        self.gone = 0                   # stored rows of those accounts the source did not name

    def start(self, tx: Tx) -> None:
        """Begin the source: into an empty table, rows are loaded without its secondary indexes (`finish`)."""
        if not self.compare:
            tx.entities.drop_indexes("usage")

    def finish(self, tx: Tx) -> None:
        """End the source: the secondary indexes `start` dropped are built from the loaded rows."""
        if not self.compare:
            tx.entities.create_indexes("usage")

    def hold_back(self, groups: Rows, invalid: Invalid) -> tuple[tuple[Rows, Invalid], tuple[Rows, Invalid]] | None:
        """Split the rows read since the last chunk into (the chunk, the rows held back for the next one): the
        last account's rows from where its run starts (and the invalid rows after them) are held back. None when
        all valid rows are that account's: read on. (`groups` names one set of fields: the runner falls back
        before calling this otherwise.)"""
        if not groups:
            return (groups, invalid), ({}, [])
        fields, rows = next(iter(groups.items()))
        at = fields.index("account_id")
        last = rows[-1][at]
        start = len(rows) - 1
        while start > 0 and rows[start - 1][at] == last:
            start -= 1
        if start == 0:
            if len(rows) > LIMIT:
                raise NotGrouped
            return None
        cut = rows[start][-1]
        return (({fields: rows[:start]}, [p for p in invalid if p[0] < cut]),
                ({fields: rows[start:]}, [p for p in invalid if p[0] >= cut]))

    def write(self, tx: Tx, fields: tuple[str, ...], rows: list[tuple[Any, ...]], kept: Iterable[tuple[Any, ...]],
              first: datetime, stamp: datetime) -> tuple[int, int, list[tuple[int, tuple[Any, ...], int]]]:
        """Write a chunk: `rows` (valid, in line order, tuples of `fields`' stored forms then the line) and the
        keys of its invalid rows that a snapshot keeps (`kept`). Returns (rows written, rows loaded,
        [(line, key, earlier line)] of the rows whose key an earlier row had, not written)."""
        at = fields.index("account_id")
        others = [f for f in fields if f not in KEY]
        key_of = itemgetter(*(fields.index(k) for k in KEY))
        stored_of = itemgetter(*(fields.index(f) for f in (*KEY, *others)))     # as `stored_usage` gives rows
        kept = [k for k in kept if k[0] is not None]
        accounts = {row[at] for row in rows}.union(k[0] for k in kept)
        if not self.done.isdisjoint(accounts):
            raise NotGrouped
        self.done |= accounts
        stored = tx.entities.stored_usage(others, sorted(accounts)) if self.compare and accounts else []
        self.stored += len(stored)
        gone: list[tuple[Any, ...]] = []
        if len(stored) == len(rows) and _same(stored, map(stored_of, rows)):
            # every row is a stored one, unchanged (the stored keys are distinct, so the rows' are too)
            new, changed, repeated = [], [], []
        elif not stored and len(set(map(key_of, rows))) == len(rows):
            new, changed, repeated = rows, [], []
        else:
            value_of = itemgetter(*(fields.index(f) for f in others)) if others else None
            new, changed, repeated, gone = _compare(rows, stored, key_of, value_of, kept)
        if self.compare and self.snapshot:
            tx.entities.note_accounts(accounts, gone)
            self.gone += len(gone)
        written = tx.entities.insert_rows("usage", fields, new, stamp) if new else 0
        written += tx.entities.replace_rows("usage", fields, changed, first, stamp)
        self.inserted += len(new)
        return written, len(rows) - len(repeated), repeated


def _same(stored: list[tuple[Any, ...]], rows: Iterable[tuple[Any, ...]]) -> bool:
    """Whether these rows, sorted, are the stored ones (in key order). A file lists an account's rows in runs
    (a metric's days ascending), which the sort merges; rows whose values cannot be ordered (a key given twice,
    once without a value) are not the same."""
    try:
        return stored == sorted(rows)
    except TypeError:
        return False


def _compare(rows: list[tuple[Any, ...]], stored: list[tuple[Any, ...]], key_of: Any, value_of: Any,
             kept: list[tuple[Any, ...]]) -> tuple[list[Any], list[Any], list[Any], list[tuple[Any, ...]]]:
    """(new rows, changed rows, (line, key, earlier line) of the rows repeating a key, the stored keys neither
    named nor `kept`) of a chunk; `stored` as `stored_usage` gives it, `value_of` a row's non-key fields in that
    order (None when it has none)."""
    width = len(KEY)
    values = itemgetter(*range(width, len(stored[0]))) if stored and value_of is not None else None
    old = dict(zip(map(itemgetter(slice(width)), stored), map(values, stored) if values else repeat(None)))
    lines: dict[tuple[Any, ...], int] = {}
    new, changed, repeated = [], [], []
    for row in rows:
        key = key_of(row)
        earlier = lines.setdefault(key, row[-1])
        if earlier != row[-1]:
            repeated.append((row[-1], key, earlier))
            continue
        was = old.pop(key, _MISSING)
        if was is _MISSING:
            new.append(row)
        elif value_of is not None and was != value_of(row):
            changed.append(row)
    for key in kept:
        old.pop(key, None)
    return new, changed, repeated, list(old)
