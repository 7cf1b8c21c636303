"""Metric windows materialised once: every metric(...) window the loaded playbooks use, per account.

Evaluating `metric('logins', 30, 'sum')` as a correlated subquery re-aggregates the usage table for
every subject of every playbook. Instead, one GROUP BY over the usage rows builds a table with one
row per account and one column per window (MetricRef), and the match queries join it by primary
key. The table is named after what it holds (the day, the usage sync it reflects, the windows), so a
steady-state tick on the same day reuses it, concurrent evaluations at other instants never see
each other's tables, and stale ones are dropped. Semantics are those of engine.lang.python_metric:
missing days count as 0 for sum/avg/min/max, `count` counts days with a row, `last` is the latest
value in the window."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (Column, Connection, Date, Float, MetaData, String, Table, and_, case, cast, func, literal,
                        select, text)

from engine.lang import MetricRef
from engine.store.schema import Schema

PREFIX = "metric_cache_"
KEEP = 4  # cache tables kept besides the one in use (other instants, other playbook sets)


@dataclass(frozen=True)
class MetricCache:
    """A built cache table and the column holding each window."""

    table: Table
    columns: dict[MetricRef, str]

    def value(self, ref: MetricRef) -> Any:
        """The SQL value of metric `ref` for the joined account (missing account = no usage at all)."""
        col = self.table.c[self.columns[ref]]
        if ref.agg == "last":
            return col
        return func.coalesce(col, literal(0 if ref.agg == "count" else 0.0))


def _window(ref: MetricRef, today: date) -> tuple[date, date]:
    end = today - timedelta(days=ref.offset_days)
    return end - timedelta(days=ref.days - 1), end


def _name(refs: list[MetricRef], today: date, usage_synced: datetime | None) -> str:
    key = json.dumps([today.isoformat(), usage_synced.isoformat() if usage_synced else None,
                      [[r.name, r.days, r.agg, r.offset_days] for r in refs]])
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()[:16]


def ensure(conn: Connection, schema: Schema, refs: set[MetricRef], today: date, now: datetime) -> MetricCache | None:
    """The cache table for these windows at `today`, built if it does not exist yet (caller commits)."""
    if not refs:
        return None
    ordered = sorted(refs, key=lambda r: (r.name, r.days, r.agg, r.offset_days))
    synced = conn.execute(select(schema.sync_state.c.synced_at)
                          .where(schema.sync_state.c.entity == "usage")).scalar()
    name = _name(ordered, today, synced)
    columns = {ref: f"m{i}" for i, ref in enumerate(ordered)}
    md = MetaData()
    cols = [Column("account_id", String, primary_key=True)]
    for ref, col in columns.items():
        cols.append(Column(col, Float))
        if ref.agg == "last":
            cols.append(Column(col + "_day", Date))
    table = Table(name, md, *cols)
    if conn.dialect.name == "postgresql":   # one builder at a time for a given cache
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(name[-15:], 16)})
    reg = schema.metric_caches
    if conn.execute(select(reg.c.name).where(reg.c.name == name)).first() is None:
        conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
        _build(conn, schema, table, columns, today)
        conn.execute(reg.insert().values(name=name, built_at=now, used_at=now))
        _collect_garbage(conn, schema, keep=name)
    else:
        conn.execute(reg.update().where(reg.c.name == name).values(used_at=now))
    return MetricCache(table, columns)


def _build(conn: Connection, schema: Schema, table: Table, columns: dict[MetricRef, str], today: date) -> None:
    u = schema.usage.c
    table.create(conn)
    windows = {ref: _window(ref, today) for ref in columns}
    start = min(s for s, _ in windows.values())
    end = max(e for _, e in windows.values())
    names = sorted({r.name for r in columns})
    selects: list[Any] = [u.account_id]
    targets = ["account_id"]
    for ref, col in columns.items():
        s, e = windows[ref]
        inside = and_(u.metric == ref.name, u.day >= s, u.day <= e)
        val = case((inside, u.value))
        n = func.count(val)
        if ref.agg == "sum":
            expr = cast(func.coalesce(func.sum(val), 0.0), Float)
        elif ref.agg == "avg":
            expr = cast(func.coalesce(func.sum(val), 0.0), Float) / float(ref.days)
        elif ref.agg == "count":
            expr = n
        elif ref.agg in ("min", "max"):
            extreme = func.min(val) if ref.agg == "min" else func.max(val)
            beyond = extreme < 0.0 if ref.agg == "min" else extreme > 0.0
            expr = cast(case((n < ref.days, case((beyond, extreme), else_=0.0)), else_=extreme), Float)
        else:  # last: the day now, its value below
            expr = None
        if expr is not None:
            selects.append(expr)
            targets.append(col)
        else:
            selects.append(func.max(case((inside, u.day))))
            targets.append(col + "_day")
    q = (select(*selects).where(u.metric.in_(names), u.day >= start, u.day <= end, u.value.is_not(None))
         .group_by(u.account_id))
    conn.execute(table.insert().from_select(targets, q))
    for ref, col in columns.items():
        if ref.agg == "last":
            day_col = table.c[col + "_day"]
            value = (select(schema.usage.c.value).where(u.account_id == table.c.account_id, u.metric == ref.name,
                                                         u.day == day_col).scalar_subquery())
            conn.execute(table.update().where(day_col.is_not(None)).values({col: value}))


def _collect_garbage(conn: Connection, schema: Schema, keep: str) -> None:
    """Drop the least recently used cache tables, keeping a few (other instants may still be evaluating)."""
    reg = schema.metric_caches
    names = conn.execute(select(reg.c.name).where(reg.c.name != keep).order_by(reg.c.used_at.desc())).scalars().all()
    for name in names[KEEP:]:
        conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
        conn.execute(reg.delete().where(reg.c.name == name))
