"""The metric windows of every account at each run of a backtest (engine/backtest.py), computed in memory.

A backtest reads every window the replayed playbooks use at each of its runs, on the usage as synced then. Read
through SQL at every run, that is one full aggregation of the usage per run, as expensive as a tick's. Instead
the usage rows of the metrics read are loaded once (one read of the usage table and its history): per metric and
day, an array over all accounts of the day's values as synced at the first run. The versions synced, revised or
deleted later in the period are kept aside in time order, and each `step` to a later run applies those that
took effect since. A window's value is then a few array operations per day it holds, for every account at once,
and the values go to one temporary table (one row per account, one column per window) that the matching
statements join (engine/store/replay.py).

Values are those of engine/store/metric_cache.py (`window_aggregates`) and engine/lang/python.py
(`python_metric`): missing days count as 0 for sum, avg, min and max; `count` counts days with a row; `last` is
the value of the latest day with a row (NULL without one). A sum adds the window's days in day order, as
`python_metric` does and as the tick's GROUP BY reads them (from its covering index): whole numbers add up
exactly in any order; for fractional values that order is what makes the sums equal to the tick's, on SQLite
before 3.43 (whose sum() adds plainly; from 3.43 it compensates rounding) — otherwise they may differ in the last
bits, which matters only for a value exactly at a threshold.

Memory: a day's values are kept in single precision (4 bytes per account, NaN for no row); the few values that
single precision does not hold exactly are kept beside them in double precision (16 bytes each: the account's
number and the value), and a day is read back in double precision with them put in. The changes take 16–24 bytes
each."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from itertools import repeat
from typing import Any

import numpy as np
from sqlalchemy import (BigInteger, Column, Connection, Float, MetaData, String, Table, and_, func, literal,
                        select, union)

from engine.lang import MetricRef
from engine.store.bulk import execute_columns, stream_rows
from engine.store.dialect import analyze
from engine.store.metric_cache import window
from engine.store.schema import Schema

CHUNK = 10_000          # usage rows read and placed at a time


class ReplayWindows:
    """The metric windows of `refs` for every account, at the latest moment stepped to, in the temporary table
    `table` of `conn`; `join` and `value` give them to a matching statement (engine/store/replay.py)."""

    def __init__(self, conn: Connection, schema: Schema, refs: Iterable[MetricRef], first: datetime, last: datetime,
                 first_today: date, last_today: date):
        self.conn, self.schema = conn, schema
        self.refs = sorted(set(refs), key=lambda r: (r.name, r.days, r.agg, r.offset_days))
        self.metrics = sorted({r.name for r in self.refs})
        self.first, self.last = first, last
        self.lo = min((window(r, first_today)[0] for r in self.refs), default=first_today)
        self.hi = max((window(r, last_today)[1] for r in self.refs), default=last_today)
        self.days = (self.hi - self.lo).days + 1
        columns = [Column("account_id", String, primary_key=True)]
        columns += [Column(f"w{i}", BigInteger if r.agg == "count" else Float) for i, r in enumerate(self.refs)]
        self.table = Table("backtest_windows", MetaData(), *columns, prefixes=["TEMPORARY"])
        self.column = {r: self.table.c[f"w{i}"] for i, r in enumerate(self.refs)}
        self.insert = self.table.insert()
        self.moment: datetime | None = None
        self.analyzed = False
        self.ids: list[str] = []             # account ids, sorted: the accounts' numbers in the arrays
        self.values: dict[str, list[Any]] = {}   # metric -> per day: the accounts' values in single precision, NaN
                                                 # without a row (None: no account has one)
        self.exact: dict[str, list[Any]] = {}    # metric -> per day: (accounts, values) of the values single
                                                 # precision does not hold exactly (None: none)
        self.changes: Any = None             # (when, cell, value) of what changes within the period, by time
        self.account_number: dict[str, int] = {}
        self.metric_number = {m: i for i, m in enumerate(self.metrics)}
        days = [self.lo + timedelta(days=k) for k in range(self.days)]
        self.day_number: dict[Any, int] = {**{d: k for k, d in enumerate(days)},          # a day as the driver
                                           **{d.isoformat(): k for k, d in enumerate(days)}}   # gives it

    # -- reading, for engine/store/replay.py -------------------------------------------------------------------

    def join(self, from_: Any, account_id: Any, refs: Iterable[MetricRef]) -> Any:
        """`from_` outer-joined with the table of the windows."""
        return from_.outerjoin(self.table, self.table.c.account_id == account_id)

    def value(self, ref: MetricRef, account_id: Any) -> Any:
        """The window's value for the joined account at the moment stepped to."""
        col = self.column[ref]
        if ref.agg == "last":
            return col
        return func.coalesce(col, literal(0 if ref.agg == "count" else 0.0))

    # -- moving -------------------------------------------------------------------------------------------------

    def step(self, moment: datetime, today: date) -> None:
        """The windows at `moment` (not before the previous one), whose day is `today`, into `table`."""
        if self.moment is None:
            self._load()
            self.moment = self.first
        assert moment >= self.moment, "windows move forward only"
        self._apply(self.moment, moment)
        self.moment = moment
        values = self._windows(today)
        self.conn.execute(self.table.delete())
        for lo in range(0, len(self.ids), CHUNK):       # in parts: a Python value per cell only for a part at a time
            columns: dict[str, list[Any]] = {"account_id": self.ids[lo:lo + CHUNK]}
            for i, ref in enumerate(self.refs):
                part = values[i][lo:lo + CHUNK].tolist()
                columns[f"w{i}"] = [None if v != v else v for v in part] if ref.agg == "last" else part
            execute_columns(self.conn, self.insert, columns, converted=False)
        if len(self.ids) and not self.analyzed:     # planner statistics for the matching statements
            analyze(self.conn, self.table)
            self.analyzed = True

    def _windows(self, today: date) -> list[Any]:
        """The value of every window (in `refs` order) for every account at `today`, on the days as they are now:
        per metric, one pass over its days, each day read once and added to the windows that hold it."""
        out: list[Any] = [None] * len(self.refs)
        n = len(self.ids)
        for metric in self.metrics:
            mine = [(i, ref, *((d - self.lo).days for d in window(ref, today)))
                    for i, ref in enumerate(self.refs) if ref.name == metric]
            assert all(0 <= start and end < self.days for _, _, start, end in mine), "a day outside the period loaded"
            for i, ref, _, _ in mine:
                out[i] = (np.zeros(n, dtype=np.int64) if ref.agg == "count" else np.full(n, np.nan) if ref.agg == "last"
                          else np.zeros(n) if ref.agg in ("sum", "avg") else None)
            for d in range(min(m[2] for m in mine), max(m[3] for m in mine) + 1):
                value, present = self._day(metric, d)
                for i, ref, start, end in mine:
                    if not start <= d <= end:
                        continue
                    if ref.agg in ("min", "max"):           # a day without a row is a 0
                        day = value if value is not None else np.zeros(n)
                        out[i] = day.copy() if out[i] is None else (np.minimum if ref.agg == "min" else np.maximum)(
                            out[i], day)
                    elif value is None:
                        continue
                    elif ref.agg == "count":
                        out[i] += present
                    elif ref.agg == "last":
                        np.copyto(out[i], value, where=present)
                    else:                                   # in day order, as python_metric and the tick add them
                        out[i] += value
            for i, ref, _, _ in mine:
                if ref.agg == "avg":
                    out[i] /= float(ref.days)
        return out

    def _day(self, metric: str, d: int) -> tuple[Any, Any]:
        """A day's values of every account (0 without a row; None: no account has one) and whether each has a row."""
        stored = self.values[metric][d]
        if stored is None:
            return None, None
        present = ~np.isnan(stored)
        value = stored.astype(np.float64)
        value[~present] = 0.0
        exact = self.exact[metric][d]
        if exact is not None:
            value[exact[0]] = exact[1]
        return value, present

    def _load(self) -> None:
        """The accounts, the usage as synced at the first moment, and the changes to it within the period."""
        self.table.drop(self.conn, checkfirst=True)
        self.table.create(self.conn)
        accounts, past = self.schema.accounts, self.schema.history["accounts"]
        ids = sorted(self.conn.execute(union(select(accounts.c.id), select(past.c.id))).scalars().all())
        self.ids = ids
        self.account_number = {a: i for i, a in enumerate(ids)}
        self.values = {m: [None] * self.days for m in self.metrics}
        self.exact = {m: [None] * self.days for m in self.metrics}
        live, old = self.schema.usage, self.schema.history["usage"]
        first, last = self.first, self.last
        changes: list[tuple[Any, Any, Any]] = []     # (when, cell, value: NaN for a row deleted), in parts
        # every current row (read from the metric index, which holds the columns read)
        gathered: dict[tuple[str, int], list[tuple[Any, Any]]] = {}
        for metric, day, account, value in self._read(live, live.c.metric.in_(self.metrics)):
            self._place(metric, day, account, value, gather=gathered)
        for (name, d), parts in gathered.items():    # their inexact values, joined once per day
            self.exact[name][d] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        # those synced after the first moment were not there yet (found by the synced_at index: `metric || ''`
        # keeps the metric index out); those synced by the last one change a cell then
        for metric, day, account, value, at in _batched(self._read(live, live.c.metric.concat("").in_(self.metrics),
                                                                   live.c.synced_at > first, at=live.c.synced_at)):
            self._place(metric, day, account, np.full(len(value), np.nan))
            by = at <= _micro(last)
            changes.append((at[by], self._cell(metric, day, account)[by], value[by]))
        # the replaced versions valid at the first moment
        for metric, day, account, value in _batched(self._read(old, old.c.metric.in_(self.metrics),
                                                               old.c.valid_from <= first, old.c.valid_to > first)):
            self._place(metric, day, account, value)
        # the replaced versions that took effect within the period
        for metric, day, account, value, at in self._read(old, old.c.metric.in_(self.metrics), old.c.valid_from > first,
                                                          old.c.valid_from <= last, at=old.c.valid_from):
            changes.append((at, self._cell(metric, day, account), value))
        # the versions that ended within the period with no other taking their place: rows a snapshot deleted
        later = old.alias("later")
        same = lambda t: and_(t.c.account_id == old.c.account_id, t.c.metric == old.c.metric,   # noqa: E731
                              t.c.day == old.c.day)
        synced = select(literal(1)).where(same(live), live.c.synced_at == old.c.valid_to).exists()
        revised = select(literal(1)).where(same(later), later.c.valid_from == old.c.valid_to).exists()
        for metric, day, account, value, at in self._read(old, old.c.metric.in_(self.metrics), old.c.valid_to > first,
                                                          old.c.valid_to <= last, ~synced, ~revised,
                                                          at=old.c.valid_to):
            changes.append((at, self._cell(metric, day, account), np.full(len(value), np.nan)))
        changes = changes or [(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))]
        at, cell, value = (np.concatenate(c) for c in zip(*changes))
        order = np.argsort(at, kind="stable")      # at one moment a cell changes once: their order does not matter
        small = len(self.metrics) * self.days * len(self.ids) < 2 ** 31
        self.changes = (at[order], cell[order].astype(np.int32 if small else np.int64), value[order])
        self.account_number = {}                    # read no more: its memory back

    def _read(self, table: Any, *where: Any, at: Any = None) -> Iterator[tuple[Any, ...]]:
        """Usage rows of `table` (usage or its history) in the days read, as column arrays in parts (`_decode`)."""
        q = select(table.c.metric, table.c.day, table.c.account_id, table.c.value, *([at] if at is not None else [])) \
            .where(table.c.day >= self.lo, table.c.day <= self.hi, *where)
        for part in stream_rows(self.conn, q, CHUNK):
            yield self._decode(part, moments=at is not None)

    def _cell(self, metric: Any, day: Any, account: Any) -> Any:
        """One number per (metric, day, account)."""
        return (metric * self.days + day) * len(self.ids) + account

    def _decode(self, rows: list[tuple[Any, ...]], moments: bool = False) -> tuple[Any, ...]:
        """Column arrays of usage rows (metric, day, account, value[, a moment], as the driver gives them): metric
        number, day number (from `lo`), account number, value (NaN when NULL)[, microseconds since 1970]. Rows of
        accounts never synced are left out."""
        cols = list(zip(*rows))
        metric = np.fromiter(map(self.metric_number.__getitem__, cols[0]), dtype=np.int64, count=len(rows))
        day = np.fromiter(map(self.day_number.__getitem__, cols[1]), dtype=np.int64, count=len(rows))
        account = np.fromiter(map(self.account_number.get, cols[2], repeat(-1)), dtype=np.int64, count=len(rows))
        value = np.array(cols[3], dtype=np.float64)
        out = [metric, day, account, value]
        if moments:
            moment = np.array(cols[4], dtype="datetime64[us]").astype(np.int64)
            out.append(moment)
        known = account >= 0
        return tuple(c[known] for c in out) if not known.all() else tuple(out)

    def _place(self, metric: Any, day: Any, account: Any, value: Any,
               gather: dict[tuple[str, int], list[tuple[Any, Any]]] | None = None) -> None:
        """Set these cells (NaN values: no row). `gather`: the cells were not set before (the first read of the
        current rows); their inexact values go there, per day, for the caller to join once, instead of being
        merged with the day's part by part."""
        if not len(metric):
            return
        key = metric * self.days + day
        order = np.argsort(key, kind="stable")
        key, account, value = key[order], account[order], value[order]
        bounds = np.flatnonzero(np.diff(key)) + 1
        for lo, hi in zip(np.concatenate(([0], bounds)), np.concatenate((bounds, [len(key)]))):
            m, d = divmod(int(key[lo]), self.days)
            name = self.metrics[m]
            stored, exact = self.values[name], self.exact[name]
            if stored[d] is None:
                stored[d] = np.full(len(self.ids), np.nan, dtype=np.float32)
            last = len(account[lo:hi]) - 1 - np.unique(account[lo:hi][::-1], return_index=True)[1]
            here, v = account[lo:hi][last], value[lo:hi][last]     # a cell set twice: its last value
            with np.errstate(over="ignore"):         # beyond single precision's range: kept exactly aside
                single = v.astype(np.float32)
            stored[d][here] = single
            inexact = ~np.isnan(v) & (single != v)
            if gather is not None:
                if inexact.any():
                    gather.setdefault((name, d), []).append((here[inexact], v[inexact]))
                continue
            if exact[d] is not None:
                keep = ~np.isin(exact[d][0], here)
                exact[d] = (exact[d][0][keep], exact[d][1][keep])
            if inexact.any():
                exact[d] = (np.concatenate((exact[d][0], here[inexact])), np.concatenate((exact[d][1], v[inexact]))) \
                    if exact[d] is not None else (here[inexact], v[inexact])
            if exact[d] is not None and not len(exact[d][0]):
                exact[d] = None

    def _apply(self, after: datetime, until: datetime) -> None:
        """Bring the days from the usage as synced at `after` to the usage as synced at `until`: the changes in
        between, in the order they happened (the last one of a cell wins)."""
        at, cell, value = self.changes
        lo, hi = np.searchsorted(at, [_micro(after), _micro(until)], side="right")
        if hi <= lo:
            return
        n = len(self.ids)
        metric_day, account = np.divmod(cell[lo:hi].astype(np.int64), n)
        metric, day = np.divmod(metric_day, self.days)
        self._place(metric, day, account, value[lo:hi])


def _batched(parts: Iterable[tuple[Any, ...]], rows: int = 20 * CHUNK) -> Iterator[tuple[Any, ...]]:
    """Decoded parts joined into batches of about `rows` rows: each `_place` of cells set before merges a day's
    inexact values once per batch, not once per part."""
    held: list[tuple[Any, ...]] = []
    count = 0
    for part in parts:
        held.append(part)
        count += len(part[0])
        if count >= rows:
            yield tuple(np.concatenate(c) for c in zip(*held))
            held, count = [], 0
    if held:
        yield tuple(np.concatenate(c) for c in zip(*held))


def _micro(moment: datetime) -> int:
    """Microseconds since 1970 of a naive UTC moment."""
    return (moment - datetime(1970, 1, 1)) // timedelta(microseconds=1)
