"""Metric windows materialised once: every metric(...) window the loaded playbooks use, per account.

Evaluating `metric('logins', 30, 'sum')` as a correlated subquery re-aggregates the usage table for
every subject of every playbook. Instead, for each metric name one GROUP BY over that metric's usage
rows (read in account order from a covering index) fills that metric's columns of one table with one
row per account and one column per window, and the scan joins that table by primary key (one b-tree
on SQLite, where it is a WITHOUT ROWID table: a touched account costs one lookup, not one per metric).
A cache is named after the day and the windows; it records the newest usage sync it reflects, so after
an incremental usage sync only the windows that hold a written day are recomputed, and only for the
accounts whose rows were written; a steady-state tick on the same day reuses it as is. Recomputed rows
go to a small overlay table beside the base table (read in its place when it has the account):
rewriting them in the base table, whose rows for the changed accounts lie on as many pages as there
are accounts, cost more page writes than any other part of a steady tick. The overlay is merged into
the base once it holds many accounts. Semantics are those of engine.lang.python_metric: missing days
count as 0 for sum/avg/min/max, `count` counts days with a row, `last` is the latest value in the
window."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (Column, Connection, Date, Float, MetaData, String, Table, and_, case, cast, func, literal,
                        select, text)

from engine.lang import MetricRef
from engine.store import changes, dialect as sql_dialect
from engine.store.bulk import execute_many
from engine.store.dialect import analyze, count_rows, estimate_rows, in_list
from engine.store.schema import Repository, Schema

PREFIX = "metric_cache_"
KEEP = 4            # cache generations kept besides the one in use (other instants may still evaluate)
FORMAT = 3          # part of every cache's name: caches of an older layout (a table per metric) are rebuilt, not read
MERGE_OVERLAY_AT = 20_000   # overlay rows (or 5% of the accounts, if more) before they are merged into the base


@dataclass(frozen=True)
class MetricCache:
    """The built cache table, its overlay, and the column holding each window."""

    table: Table
    overlay: Table
    columns: dict[MetricRef, str]

    def value(self, ref: MetricRef) -> Any:
        """The SQL value of metric `ref` for the joined account (an account absent, or a NULL column = no
        usage of that metric in the windows)."""
        name = self.columns[ref]
        col = case((self.overlay.c.account_id.is_not(None), self.overlay.c[name]), else_=self.table.c[name])
        if ref.agg == "last":
            return col
        return func.coalesce(col, literal(0 if ref.agg == "count" else 0.0))

    def join(self, from_: Any, account_id: Any) -> Any:
        """`from_` outer-joined with the tables every window lives in."""
        for t in (self.table, self.overlay):
            from_ = from_.outerjoin(t, t.c.account_id == account_id)
        return from_


def _by_metric(ordered: list[MetricRef]) -> dict[str, list[MetricRef]]:
    """The windows grouped by metric name, metrics in name order (each group keeps the given order)."""
    groups: dict[str, list[MetricRef]] = {}
    for ref in ordered:
        groups.setdefault(ref.name, []).append(ref)
    return dict(sorted(groups.items()))


def window(ref: MetricRef, today: date) -> tuple[date, date]:
    """The first and last day of the window at `today`."""
    end = today - timedelta(days=ref.offset_days)
    return end - timedelta(days=ref.days - 1), end


class MetricWindows(Repository):
    """The materialised metric windows (derived data: a dry run builds them too)."""

    def ensure(self, refs: set[MetricRef], today: date, now: datetime,
               touched: changes.Touched | None = None) -> MetricCache | None:
        """The cache for these windows at `today`: built, refreshed for changed accounts, or reused (the
        caller commits). `touched` keeps the changed accounts a refresh reads, for the tick's changes-only
        scans."""
        return ensure(self.conn, self.schema, refs, today, now, touched)


def ensure(conn: Connection, schema: Schema, refs: set[MetricRef], today: date, now: datetime,
           touched: changes.Touched | None = None) -> MetricCache | None:
    """See MetricWindows.ensure."""
    if not refs:
        return None
    ordered = sorted(refs, key=lambda r: (r.name, r.days, r.agg, r.offset_days))
    key = json.dumps([FORMAT, today.isoformat(), [[r.name, r.days, r.agg, r.offset_days] for r in ordered]])
    name = PREFIX + hashlib.sha256(key.encode()).hexdigest()[:16]
    cache = MetricCache(*_tables(name, tuple(ordered)))
    columns = cache.columns
    sql_dialect.lock(conn, f"metric_cache:{name}")   # one builder at a time for a given cache
    reg = schema.metric_caches
    u = schema.usage
    stamp = changes.usage_mark(conn, schema)
    row = conn.execute(select(reg).where(reg.c.name == name)).first()
    if row is not None and stamp is not None and (row.usage_stamp is None or stamp > row.usage_stamp) \
            and (_rows_deleted_since(conn, schema, row.usage_stamp) or _many_changed(conn, schema, row.usage_stamp)):
        # a usage snapshot deleted rows (an account may have lost them all), or rewrote much of the table:
        # recompute everything
        conn.execute(reg.delete().where(reg.c.name == name))
        row = None
    if row is None:
        for table in (cache.table, cache.overlay):
            conn.execute(text(f'DROP TABLE IF EXISTS "{table.name}"'))
            table.create(conn)
        for i, mine in enumerate(_by_metric(ordered).values()):   # the first metric inserts, the others upsert
            _fill(conn, schema, cache.table, mine, columns, today, None, upsert=i > 0)
        conn.execute(reg.insert().values(name=name, built_at=now, used_at=now, usage_stamp=stamp))
        analyze(conn, cache.table)      # fresh planner statistics for a new table (PostgreSQL guesses badly)
        _collect_garbage(conn, schema, keep=name)
    elif stamp is not None and (row.usage_stamp is None or stamp > row.usage_stamp):
        _refresh(conn, schema, cache, ordered, today, row.usage_stamp, touched)
        conn.execute(reg.update().where(reg.c.name == name).values(used_at=now, usage_stamp=stamp))
    else:
        conn.execute(reg.update().where(reg.c.name == name).values(used_at=now))
    return cache


def _refresh(conn: Connection, schema: Schema, cache: MetricCache, ordered: list[MetricRef], today: date,
             since: datetime | None, touched: changes.Touched | None) -> None:
    """Recompute, for the accounts whose usage rows were written after `since`, the windows that contain
    a written day (daily usage mostly rewrites the last few days: older windows keep their values), into
    the overlay."""
    written = (touched.usage_written(conn, since) if touched is not None
               else changes.usage_written(conn, schema, since))
    work: list[tuple[list[MetricRef], list[str]]] = []     # per metric: the windows hit, the accounts written
    for m, mine in _by_metric(ordered).items():
        if m not in written:
            continue
        accounts, day_texts = written[m]
        days = {date.fromisoformat(d[:10]) for d in day_texts}
        hit = [r for r, (start, end) in ((r, window(r, today)) for r in mine) if any(start <= d <= end for d in days)]
        if hit:
            work.append((hit, sorted(accounts)))
    if not work:
        return
    # PostgreSQL estimates a listed-accounts fill at many times the rows it reads, which puts its cost past
    # jit_above_cost: each fill would compile itself to machine code for longer than it runs. No JIT for the
    # rest of this refresh's transaction (a full build keeps it).
    sql_dialect.without_jit(conn)
    base, over = cache.table, cache.overlay
    overlaid = count_rows(conn, over)
    # (the base holds at most one row per account: their estimate, not a count of the base table)
    if overlaid >= MERGE_OVERLAY_AT and overlaid >= estimate_rows(conn, schema.accounts) // 20:
        _merge(conn, base, over)
    seeded = sorted(set().union(*(ids for _, ids in work)))
    _seed_overlay(conn, base, over, seeded)
    for hit, ids in work:
        # rows were only added or changed (a sync that deletes usage rows makes ensure() rebuild), so every
        # account read here keeps a row in the range of the windows hit, and the upsert rewrites them all
        _fill(conn, schema, over, hit, cache.columns, today, ids, upsert=True)


def _seed_overlay(conn: Connection, base: Table, over: Table, ids: list[str]) -> None:
    """Give these accounts an overlay row holding their base values (no row in the base: no usage, all empty)."""
    copy, absent = _seeding(base, over, conn.dialect.name)
    execute_many(conn, copy, [{"ids": ids}])
    execute_many(conn, absent, [{"account_id": i} for i in ids])


@lru_cache(maxsize=8)
def _seeding(base: Table, over: Table, dialect: str) -> tuple[Any, Any]:
    """The two INSERTs that seed overlay rows (the listed accounts' base rows; then an empty row for those
    without one), built once per table: SQLAlchemy does not cache INSERT … ON CONFLICT, execute_many keeps
    what it compiled per statement object."""
    names = [c.name for c in base.c]
    copy = sql_dialect.insert(over, dialect).from_select(
        names, select(*base.c).where(in_list(base.c.account_id, "ids", dialect)))
    return (copy.on_conflict_do_nothing(index_elements=["account_id"]),
            sql_dialect.insert(over, dialect).on_conflict_do_nothing(index_elements=["account_id"]))


def _merge(conn: Connection, base: Table, over: Table) -> None:
    """Fold the overlay into the base table and empty it."""
    ins = sql_dialect.insert(base, conn.dialect.name)
    names = [c.name for c in base.c]
    # (the WHERE keeps SQLite from reading ON CONFLICT as a join constraint)
    conn.execute(ins.from_select(names, select(*over.c).where(over.c.account_id.is_not(None))).on_conflict_do_update(
        index_elements=["account_id"], set_={n: ins.excluded[n] for n in names[1:]}))
    conn.execute(over.delete())


def _rows_deleted_since(conn: Connection, schema: Schema, since: datetime | None) -> bool:
    """A usage sync deleted rows after the cache's stamp (any sync since, not only the latest)."""
    st = schema.sync_state
    removed = conn.execute(select(st.c.removed_stamp).where(st.c.entity == "usage")).scalar()
    return removed is not None and (since is None or removed > since)


def _many_changed(conn: Connection, schema: Schema, since: datetime | None) -> bool:
    """More than 5% of the usage rows were written after `since` (a full rebuild is cheaper then);
    reads at most that many stamps."""
    if since is None:
        return True
    total = estimate_rows(conn, schema.accounts) * 30
    return changes.Changes(conn, schema).changed_at_least("usage", since, max(total // 20, 50_000) + 1)


@lru_cache(maxsize=8)
def _tables(name: str, ordered: tuple[MetricRef, ...]) -> tuple[Table, Table, dict[MetricRef, str]]:
    """The base and overlay tables of cache `name` and the column of each window: the same objects for every
    tick that uses the cache, so the statements over them are compiled and kept once per process, not once per
    tick (new Table objects made every statement a new entry in SQLAlchemy's compiled cache)."""
    columns = {ref: f"m{i}" for i, ref in enumerate(ordered)}
    return _table(f"{name}_0", ordered, columns), _table(f"{name}_0_d", ordered, columns), columns


def _table(name: str, refs: tuple[MetricRef, ...], columns: dict[MetricRef, str]) -> Table:
    cols = [Column("account_id", String, primary_key=True)]
    for ref in refs:
        cols.append(Column(columns[ref], Float))
        if ref.agg == "last":
            cols.append(Column(columns[ref] + "_day", Date))
    # SQLite: rows kept in the primary key's b-tree, so a lookup by account is one descent, not two
    return Table(name, MetaData(), *cols, sqlite_with_rowid=False)


def _fill(conn: Connection, schema: Schema, table: Table, refs: list[MetricRef], columns: dict[MetricRef, str],
          today: date, only: list[str] | None, upsert: bool = False) -> None:
    """Aggregate windows of one metric for every account (or the accounts listed in `only`); with `upsert`,
    into rows that may exist (other windows' columns are left alone)."""
    fill, lasts = _fill_statements(schema, table, tuple(refs), tuple(columns[r] for r in refs), today,
                                   conn.dialect.name, only is not None, upsert)
    params = {"ids": only} if only is not None else {}
    if only is not None:     # one statement for every listed account, compiled once per process (it is the same)
        execute_many(conn, fill, [params])
    else:
        conn.execute(fill)
    for stmt in lasts:
        conn.execute(stmt, params)


@lru_cache(maxsize=16)
def _fill_statements(schema: Schema, table: Table, refs: tuple[MetricRef, ...], names: tuple[str, ...], today: date,
                     dialect: str, listed: bool, upsert: bool) -> tuple[Any, list[Any]]:
    """The statements of `_fill` (the accounts, when `listed`, in parameter `ids`): the INSERT … SELECT of
    the windows (`window_aggregates`), and an UPDATE per `last` window setting the value of its latest day."""
    u = schema.usage.c
    metric = refs[0].name
    columns = dict(zip(refs, names))
    aggregates, where = window_aggregates(u, refs, today, dialect)
    selects: list[Any] = [u.account_id, *aggregates]
    targets = ["account_id", *(columns[r] + "_day" if r.agg == "last" else columns[r] for r in refs)]
    if listed:
        where.append(in_list(u.account_id, "ids", dialect))
    query = select(*selects).where(*where).group_by(u.account_id)
    if upsert:
        ins = sql_dialect.insert(table, dialect)
        fill = ins.from_select(targets, query).on_conflict_do_update(
            index_elements=[table.c.account_id], set_={c: ins.excluded[c] for c in targets[1:]})
    else:
        fill = table.insert().from_select(targets, query)
    lasts = []
    for ref in refs:
        if ref.agg == "last":
            col = columns[ref]
            day_col = table.c[col + "_day"]
            value = (select(schema.usage.c.value).where(u.account_id == table.c.account_id, u.metric == metric,
                                                         u.day == day_col).scalar_subquery())
            stmt = table.update().where(day_col.is_not(None)).values({col: value})
            if listed:
                stmt = stmt.where(in_list(table.c.account_id, "ids", dialect))
            lasts.append(stmt)
    return fill, lasts


def window_aggregates(u: Any, refs: tuple[MetricRef, ...] | list[MetricRef], today: date,
                      dialect: str) -> tuple[list[Any], list[Any]]:
    """The aggregate of each window of `refs` (windows of one metric) over the usage columns `u`, in order, and
    the conditions of the rows they read, for one GROUP BY account_id: missing days count as 0 for sum, avg, min
    and max; a `last` window gives its latest day (its value is looked up by that day afterwards).

    The GROUP BY reads the widest range once; each window's aggregates see only their days through a FILTER
    clause, whose condition leaves out the bounds that the range already guarantees (this is where the time
    goes: a few comparisons per usage row and window). The backtest computes windows with the same values
    (engine/store/replay_windows.py)."""
    windows = {ref: window(ref, today) for ref in refs}
    start = min(s for s, _ in windows.values())
    end = max(e for _, e in windows.values())
    filtered = sql_dialect.filters_aggregates(dialect)

    def agg(fn: Any, value: Any, ref: MetricRef) -> Any:
        s, e = windows[ref]
        inside = [c for c in (u.day >= s if s > start else None, u.day <= e if e < end else None) if c is not None]
        if not inside:
            return fn(value)
        return fn(value).filter(and_(*inside)) if filtered else fn(case((and_(*inside), value)))

    out: list[Any] = []
    for ref in refs:
        n = agg(func.count, u.value, ref)
        if ref.agg in ("sum", "avg"):
            expr = cast(func.coalesce(agg(func.sum, u.value, ref), 0.0), Float)
            expr = expr / float(ref.days) if ref.agg == "avg" else expr
        elif ref.agg == "count":
            expr = n
        elif ref.agg in ("min", "max"):
            extreme = agg(func.min if ref.agg == "min" else func.max, u.value, ref)
            beyond = extreme < 0.0 if ref.agg == "min" else extreme > 0.0
            expr = cast(case((n < ref.days, case((beyond, extreme), else_=0.0)), else_=extreme), Float)
        else:  # last: the latest day
            expr = agg(func.max, u.day, ref)
        out.append(expr)
    return out, [u.metric == refs[0].name, u.day >= start, u.day <= end, u.value.is_not(None)]


def _collect_garbage(conn: Connection, schema: Schema, keep: str) -> None:
    """Drop the least recently used cache generations, keeping a few."""
    reg = schema.metric_caches
    names = conn.execute(select(reg.c.name).where(reg.c.name != keep).order_by(reg.c.used_at.desc())).scalars().all()
    for name in names[KEEP:]:
        for i in range(64):     # FORMAT 2 kept a table per metric, `{name}_{i}`; since then, only `{name}_0`
            conn.execute(text(f'DROP TABLE IF EXISTS "{name}_{i}"'))
            conn.execute(text(f'DROP TABLE IF EXISTS "{name}_{i}_d"'))
        conn.execute(reg.delete().where(reg.c.name == name))
