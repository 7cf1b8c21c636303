"""Metric windows carried from one backtest run to the next (engine/backtest.py), instead of recomputed from
all the usage at every run.

At the first run every window (of the playbooks replayed) is computed per account from the usage as synced then,
into one temporary table per metric: for each window the rows it counts and, by its aggregate, their sum (sum,
avg) or their extreme (min, max). From one run to the next only what moved is read:

- the rows of the days that entered or left a window (today moved), as synced at the new moment: added to the
  windows they entered, taken from those they left;
- the usage versions synced (or replaced, or deleted) between the two moments: the new ones added to, the old
  ones taken from, the windows of the previous moment that held their day.

Sums and counts take those differences exactly (usage values that are whole numbers add up exactly in floating
point; an account with a fractional value among them is recomputed instead). An extreme only takes values that
enter: a `last` window keeps its latest day, which a day that enters replaces. An account recomputes its windows from
its usage (by its key) when a value that leaves a window could be that window's extreme, when a `last` window's
day leaves with none entering, or when one of its usage versions changed.

The rows read from one run to the next come from a temporary copy of the usage versions of the days the windows
cover over the whole backtest, keyed by metric and day; the versions that change within the backtest are also
listed by when they changed. Values are those of engine/store/metric_cache.py (`window_aggregates`): missing
days count as 0 for sum, avg, min and max; `count` counts days with a row."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (BigInteger, Column, Connection, Date, DateTime, Float, Index, Integer, MetaData, String,
                        Table, and_, case, cast, func, literal, null, or_, select, union_all)

from engine.lang import MetricRef
from engine.store import dialect as sql_dialect
from engine.store.dialect import analyze
from engine.store.metric_cache import window
from engine.store.schema import Schema

EXTREMES = ("min", "max")
MAX_STEP_DAYS = 10       # a step that moves today further recomputes every window instead


class CarriedWindows:
    """The metric windows of `refs` per account at the latest moment stepped to, in temporary tables of `conn`;
    `join` and `value` give them to a matching statement (engine/store/replay.py)."""

    def __init__(self, conn: Connection, schema: Schema, refs: Iterable[MetricRef], first: datetime,
                 last: datetime, first_today: date, last_today: date):
        self.conn, self.schema, self.dialect = conn, schema, conn.dialect.name
        self.metrics: dict[str, list[MetricRef]] = {}
        for ref in sorted(set(refs), key=lambda r: (r.name, r.days, r.agg, r.offset_days)):
            self.metrics.setdefault(ref.name, []).append(ref)
        self.first, self.last = first, last
        self.lo = min((window(r, first_today)[0] for rs in self.metrics.values() for r in rs), default=first_today)
        self.hi = max((window(r, last_today)[1] for rs in self.metrics.values() for r in rs), default=last_today)
        md = MetaData()
        self.tables: dict[str, Table] = {}
        self.columns: dict[MetricRef, tuple[Table, int]] = {}
        for i, (name, mine) in enumerate(sorted(self.metrics.items())):
            cols = [Column("account_id", String, primary_key=True)]
            for j, ref in enumerate(mine):
                cols += [Column(f"n{j}", BigInteger), Column(f"v{j}", Float)]
                if ref.agg == "last":
                    cols.append(Column(f"d{j}", Date))       # the window's latest day with a row
            self.tables[name] = Table(f"backtest_carried_{i}", md, *cols, prefixes=["TEMPORARY"])
            self.columns.update({r: (self.tables[name], j) for j, r in enumerate(mine)})
        self.deltas = {name: Table(f"backtest_carried_delta_{i}", md, *[Column(c.name, c.type, primary_key=c.primary_key)
                                                                       for c in t.c], Column("dirty", Integer),
                                   prefixes=["TEMPORARY"])
                       for i, (name, t) in enumerate(sorted(self.tables.items()))}
        self.copy = Table("backtest_usage", md, Column("metric", String), Column("day", Date),
                          Column("account_id", String), Column("value", Float), Column("valid_from", DateTime),
                          Column("valid_to", DateTime), prefixes=["TEMPORARY"])
        Index("ix_backtest_usage_day", self.copy.c.metric, self.copy.c.day, self.copy.c.account_id)
        self.changes = Table("backtest_usage_changes", md, Column("metric", String), Column("at", DateTime),
                             Column("sign", Integer), Column("account_id", String), Column("day", Date),
                             Column("value", Float), prefixes=["TEMPORARY"])
        Index("ix_backtest_usage_changes_at", self.changes.c.metric, self.changes.c.at)
        self.moment: datetime | None = None
        self.today: date | None = None
        self.usage: Any = None

    # -- reading, as engine/store/replay.py's Windows ------------------------------------------------------------

    def join(self, from_: Any, account_id: Any, refs: Iterable[MetricRef]) -> Any:
        """`from_` outer-joined with the tables holding these windows."""
        for table in {self.columns[r][0] for r in refs}:
            from_ = from_.outerjoin(table, table.c.account_id == account_id)
        return from_

    def value(self, ref: MetricRef, account_id: Any) -> Any:
        """The window's value for the joined account at the moment stepped to (no row: no usage in the window)."""
        table, j = self.columns[ref]
        if ref.agg == "last":
            return table.c[f"v{j}"]
        n, v = table.c[f"n{j}"], table.c[f"v{j}"]
        if ref.agg == "count":
            return func.coalesce(n, literal(0))
        if ref.agg == "sum":
            return func.coalesce(v, literal(0.0))
        if ref.agg == "avg":
            return func.coalesce(v, literal(0.0)) / float(ref.days)
        beyond = v < 0.0 if ref.agg == "min" else v > 0.0
        return func.coalesce(cast(case((n < ref.days, case((beyond, v), else_=0.0)), else_=v), Float), literal(0.0))

    # -- moving -------------------------------------------------------------------------------------------------

    def step(self, moment: datetime, today: date, usage: Any) -> None:
        """Carry the windows to `moment` (not before the previous one), whose day is `today`; `usage` is the usage
        as synced then (Replay.as_of), which `last` windows and recomputed accounts read."""
        previous, before = self.moment, self.today
        self.moment, self.today, self.usage = moment, today, usage
        if not self.metrics:
            return
        if previous is None:
            self._create()
            for name in self.metrics:
                self._fill(name, None)
            return
        assert moment >= previous, "windows are carried forward only"
        if (today - before).days > MAX_STEP_DAYS:
            for name, table in self.tables.items():
                self.conn.execute(table.delete())
                self._fill(name, None)
            return
        for name in self.metrics:
            self._step(name, previous, before)

    def _create(self) -> None:
        """The tables, and the copy of the usage versions (and their changes) the steps read."""
        for table in (*self.tables.values(), *self.deltas.values(), self.copy, self.changes):
            table.drop(self.conn, checkfirst=True)
            table.create(self.conn)
        from engine.store.field_history import versions

        v = versions(self.schema, "usage").subquery("v")
        keep = [v.c.metric.in_(sorted(self.metrics)), v.c.day >= self.lo, v.c.day <= self.hi, v.c.value.is_not(None),
                or_(v.c.valid_from.is_(None), v.c.valid_from <= self.last),
                or_(v.c.valid_to.is_(None), v.c.valid_to > self.first)]
        cols = ["metric", "day", "account_id", "value", "valid_from", "valid_to"]
        self.conn.execute(self.copy.insert().from_select(cols, select(*(v.c[c] for c in cols)).where(*keep)))
        c = self.copy.c
        added = select(c.metric, c.valid_from, literal(1), c.account_id, c.day, c.value).where(
            c.valid_from > self.first, c.valid_from <= self.last)
        removed = select(c.metric, c.valid_to, literal(-1), c.account_id, c.day, c.value).where(
            c.valid_to > self.first, c.valid_to <= self.last)
        self.conn.execute(self.changes.insert().from_select(["metric", "at", "sign", "account_id", "day", "value"],
                                                            union_all(added, removed)))
        for table in (self.copy, self.changes):
            analyze(self.conn, table)

    def _fill(self, name: str, dirty: Any) -> None:
        """Insert every window of metric `name` at the current moment, from the usage as synced then, for every
        account (dirty=None) or those the delta table `dirty` marks (their usage read through its key)."""
        refs, table = self.metrics[name], self.tables[name]
        now = self.moment
        if dirty is None:
            u = self.usage.c
        else:
            live, past = self.schema.usage, self.schema.history["usage"]
            listed = select(dirty.c.account_id).where(dirty.c.dirty == 1)
            # each part read by its key for the listed accounts (a join would let SQLite scan the metric instead)
            current = (select(live.c.account_id, live.c.metric, live.c.day, live.c.value)
                       .where(live.c.account_id.in_(listed), live.c.metric == name,
                              or_(live.c.synced_at.is_(None), live.c.synced_at <= now)))
            replaced = (select(past.c.account_id, past.c.metric, past.c.day, past.c.value)
                        .where(past.c.account_id.in_(listed), past.c.metric == name, past.c.valid_from <= now,
                               past.c.valid_to > now))
            u = union_all(current, replaced).subquery("u").c
        filtered = sql_dialect.filters_aggregates(self.dialect)
        bounds = [window(r, self.today) for r in refs]
        start, end = min(s for s, _ in bounds), max(e for _, e in bounds)

        def agg(fn: Any, value: Any, s: date, e: date) -> Any:
            inside = and_(u.day >= s, u.day <= e)
            return fn(value).filter(inside) if filtered else fn(case((inside, value)))

        cols: list[Any] = []
        for ref, (s, e) in zip(refs, bounds):
            cols.append(agg(func.count, u.value, s, e))
            if ref.agg in ("sum", "avg"):
                cols.append(cast(func.coalesce(agg(func.sum, u.value, s, e), 0.0), Float))
            elif ref.agg in EXTREMES:
                cols.append(cast(agg(func.min if ref.agg == "min" else func.max, u.value, s, e), Float))
            else:
                cols.append(cast(null(), Float))
            if ref.agg == "last":
                cols.append(agg(func.max, u.day, s, e))
        q = select(u.account_id, *cols).where(u.metric == name, u.day >= start, u.day <= end, u.value.is_not(None)) \
            .group_by(u.account_id)
        self.conn.execute(table.insert().from_select([c.name for c in table.c], q))
        if dirty is None:
            analyze(self.conn, table)
            self._look_up_last(name, None)

    def _look_up_last(self, name: str, delta: Table | None) -> None:
        """The value of each `last` window: the row of its latest day, as synced now (for every account, or those
        in `delta`)."""
        refs, table, c = self.metrics[name], self.tables[name], self.copy.c
        t, now = table.c, self.moment
        setting = {f"v{j}": select(c.value).where(c.metric == name, c.day == t[f"d{j}"], c.account_id == t.account_id,
                                                  or_(c.valid_from.is_(None), c.valid_from <= now),
                                                  or_(c.valid_to.is_(None), c.valid_to > now)).scalar_subquery()
                   for j, ref in enumerate(refs) if ref.agg == "last"}
        if setting:
            q = table.update().values(setting)
            if delta is not None:
                q = q.where(t.account_id.in_(select(delta.c.account_id)))
            self.conn.execute(q)

    def _step(self, name: str, previous: datetime, before: date) -> None:
        """Carry metric `name`'s windows from (`previous`, `before`) to the current moment."""
        refs, table, delta = self.metrics[name], self.tables[name], self.deltas[name]
        now, today = self.moment, self.today
        old = [window(r, before) for r in refs]
        new = [window(r, today) for r in refs]
        moved: set[date] = set()
        for (s0, e0), (s1, e1) in zip(old, new):
            days0 = {s0 + timedelta(days=k) for k in range((e0 - s0).days + 1)}
            days1 = {s1 + timedelta(days=k) for k in range((e1 - s1).days + 1)}
            moved |= days0 ^ days1
        c, ch = self.copy.c, self.changes.c
        parts = [select(ch.account_id, ch.day, ch.value, literal(0).label("kn"), ch.sign.label("ko"))
                 .where(ch.metric == name, ch.at > previous, ch.at <= now)]
        if moved:
            # the rows of the days that moved, as synced now: +1 in the new windows, -1 in the old ones
            parts.append(select(c.account_id, c.day, c.value, literal(1), literal(-1)).where(
                c.metric == name, c.day.in_(sorted(moved)), or_(c.valid_from.is_(None), c.valid_from <= now),
                or_(c.valid_to.is_(None), c.valid_to > now)))
        r = union_all(*parts).subquery("r")
        cols: list[Any] = []
        for j, (ref, (s0, e0), (s1, e1)) in enumerate(zip(refs, old, new)):
            w = (case((and_(r.c.day >= s1, r.c.day <= e1), r.c.kn), else_=0)
                 + case((and_(r.c.day >= s0, r.c.day <= e0), r.c.ko), else_=0))
            cols.append(func.sum(w).label(f"n{j}"))
            if ref.agg in EXTREMES:
                pick = func.min if ref.agg == "min" else func.max
                cols.append(pick(case((w > 0, r.c.value))).label(f"v{j}"))
                cols.append(pick(case((w < 0, r.c.value))).label(f"gone{j}"))
            elif ref.agg in ("sum", "avg"):
                cols.append(func.sum(w * r.c.value).label(f"v{j}"))
            else:
                cols.append(cast(null(), Float).label(f"v{j}"))
            if ref.agg == "last":
                cols.append(func.max(case((w > 0, r.c.day))).label(f"d{j}"))
        changed = func.max(case((r.c.kn == 0, 1), else_=0))
        fraction = func.max(case((r.c.value != func.round(r.c.value), 1), else_=0))
        g = select(r.c.account_id, *cols, changed.label("changed"), fraction.label("fraction")) \
            .group_by(r.c.account_id).subquery("g")
        t = table.c
        dirty = [g.c.changed == 1]
        if any(ref.agg in ("sum", "avg") for ref in refs):
            dirty.append(g.c.fraction == 1)
        for j, ref in enumerate(refs):
            if ref.agg in EXTREMES:     # a value leaving may have been the extreme, and none entering reaches it
                gone, came, kept = g.c[f"gone{j}"], g.c[f"v{j}"], t[f"v{j}"]
                reaches = (lambda x: x >= kept) if ref.agg == "max" else (lambda x: x <= kept)
                dirty.append(and_(gone.is_not(None), or_(kept.is_(None), and_(reaches(gone),
                                                                             or_(came.is_(None), ~reaches(came))))))
            elif ref.agg == "last":     # the latest day left the window and no later one came in
                s1 = new[j][0]
                dirty.append(and_(g.c[f"d{j}"].is_(None), t[f"d{j}"].is_not(None), t[f"d{j}"] < s1))
        self.conn.execute(delta.delete())
        self.conn.execute(delta.insert().from_select(
            [col.name for col in delta.c],
            select(*(g.c[col.name] for col in table.c), case((or_(*dirty), 1), else_=0))
            .select_from(g.outerjoin(table, t.account_id == g.c.account_id))))
        d = delta.c
        # accounts whose windows cannot be carried: recomputed from their usage
        self.conn.execute(table.delete().where(t.account_id.in_(select(d.account_id).where(d.dirty == 1))))
        # the others: the differences added
        ins = sql_dialect.insert(table, self.dialect)
        ins = ins.from_select([col.name for col in table.c],
                              select(*(d[col.name] for col in table.c)).where(d.dirty == 0))
        setting: dict[str, Any] = {}
        for j, ref in enumerate(refs):
            setting[f"n{j}"] = func.coalesce(t[f"n{j}"], 0) + func.coalesce(ins.excluded[f"n{j}"], 0)
            v, dv = t[f"v{j}"], ins.excluded[f"v{j}"]
            if ref.agg in ("sum", "avg"):
                setting[f"v{j}"] = func.coalesce(v, 0.0) + func.coalesce(dv, 0.0)
            elif ref.agg in EXTREMES:
                further = dv < v if ref.agg == "min" else dv > v
                setting[f"v{j}"] = case((dv.is_(None), v), (v.is_(None), dv), (further, dv), else_=v)
            elif ref.agg == "last":     # a day that entered is later than every day the window held
                setting[f"d{j}"] = func.coalesce(ins.excluded[f"d{j}"], t[f"d{j}"])
        self.conn.execute(ins.on_conflict_do_update(index_elements=["account_id"], set_=setting))
        self._fill(name, delta)
        self._look_up_last(name, delta)
