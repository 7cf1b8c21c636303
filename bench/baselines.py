"""Two reference points for the tick, computed on the same data and clock.

* `baseline_sql`: ONE hand-written statement that evaluates every account-level playbook's conditions
  in a single pass: `SELECT sum(CASE WHEN <pred_i> THEN 1 ELSE 0 END), … FROM accounts LEFT JOIN
  (usage pre-aggregated per account, one GROUP BY over the usage rows of the widest window)`. The
  predicates are the playbooks' compiled conditions turned into SQL by engine.lang.to_sql, with every
  metric window read from a column of the pre-aggregation instead of a correlated subquery. It only
  counts (no episode state, no planning): it is what the storage engine can do at best from the raw rows.
* `baseline_sql_windows`: the same statement with every metric window read from the engine's materialised
  windows (engine/store/metric_cache.py, as the tick reads them) instead of aggregating usage: the storage
  engine's limit for evaluating every subject once the windows exist — what a full scan of all 50 predicates
  costs, against which the incremental steady tick is compared.
* `baseline_per_row`: the engine's own Python back end (engine.lang.evaluate) over every subject of
  every playbook: accounts, contacts and goals loaded once; usage streamed in account order and kept
  for one account at a time, each metric window computed once per account with python_metric.
  With more accounts than `sample`, the first `sample` accounts are evaluated and the time is scaled
  by accounts / sample (the JSON says so: baseline_per_row_extrapolated).
"""

from __future__ import annotations

import time
from datetime import timedelta
from itertools import groupby
from operator import itemgetter
from typing import Any

from sqlalchemy import Float, Integer, String, and_, case, cast, func, literal, select

from engine.candidates import metric_windows
from engine.lang import PyEnv, evaluate, metric_calls, python_metric, to_sql
from engine.lang.ast import MetricRef
from engine.spec.compiled import CompiledPlaybook, PlaybookSet
from engine.clock import Clock, wall_clock
from engine.store import Store
from engine.store.metric_cache import MetricCache
from engine.store.scans import sql_context


def _refs(playbooks: list[CompiledPlaybook]) -> list[MetricRef]:
    found: set[MetricRef] = set()
    for pb in playbooks:
        for c in pb.conditions:
            found |= metric_calls(c.expr)
    return sorted(found, key=lambda r: (r.name, r.days, r.agg, r.offset_days))


def _window(ref: MetricRef, clock: Clock) -> tuple[Any, Any]:
    end = clock.today - timedelta(days=ref.offset_days)
    return end - timedelta(days=ref.days - 1), end


class _Windows:
    """The usage pre-aggregation: one pass over the usage rows, grouped by (account, metric), then by account.

    Window sums and counts are built from elementary day buckets (the windows' boundaries cut the days
    into a few buckets, each summed once), so a row feeds few aggregates whatever the number of windows;
    min, max and last get one aggregate per window that needs them. The outer level pivots the metrics
    into one row per account with one column per metric window (two for min/max: rows, extreme)."""

    def __init__(self, u: Any, refs: list[MetricRef], clock: Clock):
        self.u, self.refs, self.today = u, refs, clock.today
        spans = {(r.offset_days, r.offset_days + r.days) for r in refs}   # days ago: [lo, hi)
        cuts = sorted({x for span in spans for x in span})
        self.buckets = [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if any(a <= lo and hi <= b for a, b in spans)]

    def _days_ago(self, lo: int, hi: int) -> Any:
        day = self.u.c.day
        return and_(day >= self.today - timedelta(days=hi - 1), day <= self.today - timedelta(days=lo))

    def _parts(self, ref: MetricRef) -> list[int]:
        lo, hi = ref.offset_days, ref.offset_days + ref.days
        return [i for i, (a, b) in enumerate(self.buckets) if lo <= a and b <= hi]

    def subquery(self) -> Any:
        u = self.u
        value = u.c.value
        sums = {i for r in self.refs if r.agg in ("sum", "avg") for i in self._parts(r)}
        counts = {i for r in self.refs if r.agg in ("count", "min", "max") for i in self._parts(r)}
        inner_cols = []
        for i, (lo, hi) in enumerate(self.buckets):
            inside = self._days_ago(lo, hi)
            if i in sums:
                inner_cols.append(func.sum(case((inside, value))).label(f"s{i}"))
            if i in counts:
                inner_cols.append(func.count(case((inside, value))).label(f"c{i}"))
        extra = sorted({(r.agg, r.offset_days, r.days) for r in self.refs if r.agg in ("min", "max", "last")})
        for agg, lo, days in extra:
            inside = self._days_ago(lo, lo + days)
            if agg == "last":   # the latest day's value: max over 'YYYY-MM-DD|value' strings
                tagged = cast(u.c.day, String()) + literal("|") + cast(value, String())
                inner_cols.append(func.max(case((inside, tagged))).label(f"{agg}_{lo}_{days}"))
            else:
                fn = func.min if agg == "min" else func.max
                inner_cols.append(fn(case((inside, value))).label(f"{agg}_{lo}_{days}"))
        first = self.today - timedelta(days=max(hi for _, hi in self.buckets) - 1)
        # No `metric IN (...)` filter: with it SQLite reads through the (metric, day) index and sorts for the
        # GROUP BY; without it, it streams the rows in primary-key order. Other metrics drop out at the pivot.
        w = (select(u.c.account_id, u.c.metric, *inner_cols)
             .where(u.c.day >= first, u.c.day <= self.today)
             .group_by(u.c.account_id, u.c.metric).subquery("w"))
        outer_cols = []
        for n, ref in enumerate(self.refs):
            mine = w.c.metric == ref.name
            parts = self._parts(ref)

            def rows() -> Any:
                return func.sum(case((mine, sum((w.c[f"c{i}"] for i in parts[1:]), w.c[f"c{parts[0]}"]))))

            if ref.agg in ("sum", "avg"):
                total = sum((func.coalesce(w.c[f"s{i}"], 0.0) for i in parts[1:]),
                            func.coalesce(w.c[f"s{parts[0]}"], 0.0))
                outer_cols.append(func.sum(case((mine, total))).label(f"m{n}"))
            elif ref.agg == "count":
                outer_cols.append(rows().label(f"m{n}"))
            else:
                fn = func.min if ref.agg == "min" else func.max
                outer_cols.append(fn(case((mine, w.c[f"{ref.agg}_{ref.offset_days}_{ref.days}"]))).label(f"m{n}"))
                outer_cols.append(rows().label(f"n{n}"))
        return select(w.c.account_id, *outer_cols).group_by(w.c.account_id).subquery("m")

    def column(self, m: Any, n: int, ref: MetricRef) -> Any:
        """metric() of one window for the outer account row (accounts without usage rows: 0, `last` empty)."""
        zero = literal(0.0, Float())
        col = m.c[f"m{n}"]
        if ref.agg == "count":
            return func.coalesce(col, literal(0, Integer()))
        if ref.agg == "sum":
            return cast(func.coalesce(col, zero), Float())
        if ref.agg == "avg":
            return cast(func.coalesce(col, zero), Float()) / literal(float(ref.days), Float())
        if ref.agg == "last":
            return cast(func.substr(col, 12), Float())
        beyond = col < zero if ref.agg == "min" else col > zero
        filled = func.coalesce(m.c[f"n{n}"], literal(0, Integer())) < ref.days
        return cast(case((filled, case((beyond, col), else_=zero)), else_=col), Float())


def sql_statement(db: Store, playbooks: list[CompiledPlaybook], clock: Clock,
                  cache: MetricCache | None = None) -> Any:
    """The single-scan statement counting, per account-level playbook, the accounts matching all its conditions
    (metric windows aggregated inline, or read from the materialised `cache`)."""
    schema, a = db.schema, db.schema.accounts
    refs = _refs(playbooks)
    join_from: Any = a
    metric_col: dict[MetricRef, Any] = {}
    if refs and cache is not None:
        join_from = cache.join(a, a.c.id)
        metric_col = {r: cache.value(r) for r in refs}
    elif refs:
        windows = _Windows(schema.usage, refs, clock)
        m = windows.subquery()
        join_from = a.outerjoin(m, m.c.account_id == a.c.id)
        metric_col = {r: windows.column(m, n, r) for n, r in enumerate(refs)}
    ctx = sql_context(schema, "account", clock, db.dialect, metric=lambda ref: metric_col[ref])
    sums = []
    for pb in playbooks:
        pred = and_(a.c.removed_at.is_(None), *(to_sql(c.expr, ctx) for c in pb.conditions))
        sums.append(func.coalesce(func.sum(case((pred, 1), else_=0)), 0).label(f"p{len(sums)}"))
    return select(*sums).select_from(join_from)


def run_baseline_sql(db: Store, pbs: PlaybookSet, clock: Clock, repeats: int = 2,
                     windows: bool = False) -> dict[str, Any]:
    """Run the single-scan statement `repeats` times; the best time and the counts per playbook. With `windows`,
    the metric windows are first materialised (untimed; reused when a tick of the same day built them)."""
    enabled = [p for p in pbs.valid if p.spec.enabled]
    chosen = [p for p in enabled if p.subject == "account"]
    # the windows of every enabled playbook, as the tick materialises them (hence the same cache tables),
    # stamped with the wall clock as the tick stamps them (the cache registry's used_at orders their cleanup)
    cache = metric_windows(db, enabled, clock, wall_clock()) if windows else None
    stmt = sql_statement(db, chosen, clock, cache)
    times, row = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        with db.engine.connect() as conn:
            row = conn.execute(stmt).one()
        times.append(time.perf_counter() - started)
    assert row is not None
    return {"seconds": min(times), "runs_s": [round(t, 4) for t in times], "predicates": len(chosen),
            "metric_windows": len(_refs(chosen)), "counts": {p.id: int(n) for p, n in zip(chosen, row)},
            "sql": str(stmt.compile(db.engine, compile_kwargs={"literal_binds": True}))}


def run_baseline_per_row(db: Store, pbs: PlaybookSet, clock: Clock, sample: int) -> dict[str, Any]:
    """engine.lang.evaluate over every subject of every playbook (the first `sample` accounts at most)."""
    s = db.schema
    a, c, g, u = s.accounts, s.contacts, s.goals, s.usage
    chosen = [p for p in pbs.valid if p.spec.enabled]
    by_subject = {k: [p for p in chosen if p.subject == k] for k in ("account", "contact", "goal")}
    refs = _refs(chosen)
    first = min((_window(r, clock)[0] for r in refs), default=clock.today)
    counts = dict.fromkeys((p.id for p in chosen), 0)
    started = time.perf_counter()
    with db.engine.connect() as conn:
        total = conn.scalar(select(func.count()).select_from(a).where(a.c.removed_at.is_(None))) or 0
        accounts = [dict(r) for r in conn.execute(select(a).where(a.c.removed_at.is_(None))
                                                  .order_by(a.c.id).limit(sample)).mappings()]
        last_id = accounts[-1]["id"] if accounts else ""
        children: dict[str, dict[str, list[dict]]] = {"contact": {}, "goal": {}}
        for kind, table in (("contact", c), ("goal", g)):
            if by_subject[kind]:
                q = select(table).where(table.c.removed_at.is_(None), table.c.account_id <= last_id)
                for r in conn.execute(q).mappings():
                    children[kind].setdefault(r["account_id"], []).append(dict(r))
        load_s = time.perf_counter() - started
        q = (select(u.c.account_id, u.c.metric, u.c.day, u.c.value)
             .where(u.c.account_id <= last_id, u.c.day >= first, u.c.day <= clock.today).order_by(u.c.account_id))
        groups = groupby(conn.execute(q), key=itemgetter(0))
        pending = next(groups, None)
        eval_s = 0.0
        for acc in accounts:
            aid = acc["id"]
            usage: dict[str, dict[Any, float]] = {}
            while pending is not None and pending[0] < aid:
                pending = next(groups, None)
            if pending is not None and pending[0] == aid:
                for _, metric, day, value in pending[1]:
                    usage.setdefault(metric, {})[day] = value
                pending = next(groups, None)
            t0 = time.perf_counter()
            _evaluate_account(acc, usage, children, by_subject, counts, clock)
            eval_s += time.perf_counter() - t0
    seconds = time.perf_counter() - started
    evaluated = len(accounts)
    scale = total / evaluated if evaluated else 1.0
    return {"seconds": seconds * scale, "measured_s": seconds, "load_s": load_s, "eval_s": eval_s,
            "usage_s": seconds - load_s - eval_s, "accounts_evaluated": evaluated, "accounts_total": total,
            "extrapolated": evaluated < total, "counts": counts}


def _evaluate_account(acc: dict, usage: dict[str, dict[Any, float]], children: dict[str, dict[str, list[dict]]],
                      by_subject: dict[str, list[CompiledPlaybook]], counts: dict[str, int], clock: Clock) -> None:
    cache: dict[MetricRef, float | None] = {}

    def metric(ref: MetricRef) -> float | None:
        if ref not in cache:
            cache[ref] = python_metric(usage.get(ref.name, {}), ref, clock.today)
        return cache[ref]

    def matches(pb: CompiledPlaybook, records: dict[str, dict | None]) -> bool:
        env = PyEnv(records=records, today=clock.today, now=clock.now, timezone=clock.timezone, metric=metric)
        return all(evaluate(cond.expr, env) is True for cond in pb.conditions)

    records: dict[str, dict | None] = {"account": acc}
    for pb in by_subject["account"]:
        if matches(pb, records):
            counts[pb.id] += 1
    for kind in ("contact", "goal"):
        for child in children[kind].get(acc["id"], ()):
            records = {"account": acc, kind: child}
            for pb in by_subject[kind]:
                if matches(pb, records):
                    counts[pb.id] += 1
