"""Two reference points for the tick, computed on the same data and clock.

* `baseline_sql`: ONE hand-written statement that evaluates every account-level playbook's conditions
  in a single pass: `SELECT sum(CASE WHEN <pred_i> THEN 1 ELSE 0 END), … FROM accounts LEFT JOIN
  (usage pre-aggregated per account, one GROUP BY over the usage rows of the widest window)`. The
  predicates are the playbooks' compiled conditions turned into SQL by engine.lang.to_sql, with every
  metric window read from a column of the pre-aggregation instead of a correlated subquery. It only
  counts (no episode state, no planning): it is what the storage engine can do at best.
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

from engine.lang import PyEnv, evaluate, metric_calls, python_metric, to_sql
from engine.lang.ast import MetricRef
from engine.spec.compiled import CompiledPlaybook, PlaybookSet
from engine.store.db import Database
from engine.store.matching import Clock, sql_context


def _refs(playbooks: list[CompiledPlaybook]) -> list[MetricRef]:
    found: set[MetricRef] = set()
    for pb in playbooks:
        for c in pb.conditions:
            found |= metric_calls(c.expr)
    return sorted(found, key=lambda r: (r.name, r.days, r.agg, r.offset_days))


def _window(ref: MetricRef, clock: Clock) -> tuple[Any, Any]:
    end = clock.today - timedelta(days=ref.offset_days)
    return end - timedelta(days=ref.days - 1), end


def _aggregate(u: Any, ref: MetricRef, clock: Clock) -> Any:
    """One metric window as an aggregate over the usage rows of one account (metric() semantics)."""
    start, end = _window(ref, clock)
    inside = and_(u.c.metric == ref.name, u.c.day >= start, u.c.day <= end, u.c.value.is_not(None))
    value = case((inside, u.c.value))
    zero = literal(0.0, Float())
    if ref.agg == "count":
        return func.count(value)
    if ref.agg in ("sum", "avg"):
        total = cast(func.coalesce(func.sum(value), zero), Float())
        return total if ref.agg == "sum" else total / literal(float(ref.days), Float())
    if ref.agg == "last":   # the value of the latest day: max over 'YYYY-MM-DD|value' strings
        tagged = func.max(case((inside, cast(u.c.day, String()) + literal("|") + cast(u.c.value, String()))))
        return cast(func.substr(tagged, 12), Float())
    extreme = func.min(value) if ref.agg == "min" else func.max(value)
    beyond = extreme < zero if ref.agg == "min" else extreme > zero
    return cast(case((func.count(value) < ref.days, case((beyond, extreme), else_=zero)), else_=extreme), Float())


def sql_statement(db: Database, playbooks: list[CompiledPlaybook], clock: Clock) -> Any:
    """The single-scan statement counting, per account-level playbook, the accounts matching all its conditions."""
    schema, u, a = db.schema, db.schema.usage, db.schema.accounts
    refs = _refs(playbooks)
    names = {ref: f"m{i}" for i, ref in enumerate(refs)}
    join_from: Any = a
    metric_col: dict[MetricRef, Any] = {}
    if refs:
        first = min(_window(r, clock)[0] for r in refs)
        last = max(_window(r, clock)[1] for r in refs)
        pre = (select(u.c.account_id, *(_aggregate(u, r, clock).label(names[r]) for r in refs))
               .where(u.c.metric.in_(sorted({r.name for r in refs})), u.c.day >= first, u.c.day <= last)
               .group_by(u.c.account_id).subquery("m"))
        join_from = a.outerjoin(pre, pre.c.account_id == a.c.id)
        for r in refs:   # an account without usage rows: 0 (count 0), except `last`, which is empty
            col = pre.c[names[r]]
            metric_col[r] = col if r.agg == "last" else func.coalesce(col, literal(0, Integer()) if r.agg == "count"
                                                                     else literal(0.0, Float()))
    ctx = sql_context(schema, "account", clock, db.dialect, metric=lambda ref: metric_col[ref])
    sums = []
    for pb in playbooks:
        pred = and_(a.c.removed_at.is_(None), *(to_sql(c.expr, ctx) for c in pb.conditions))
        sums.append(func.coalesce(func.sum(case((pred, 1), else_=0)), 0).label(f"p{len(sums)}"))
    return select(*sums).select_from(join_from)


def run_baseline_sql(db: Database, pbs: PlaybookSet, clock: Clock, repeats: int = 2) -> dict[str, Any]:
    """Run the single-scan statement `repeats` times; the best time and the counts per playbook."""
    chosen = [p for p in pbs.valid if p.spec.enabled and p.subject == "account"]
    stmt = sql_statement(db, chosen, clock)
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


def run_baseline_per_row(db: Database, pbs: PlaybookSet, clock: Clock, sample: int) -> dict[str, Any]:
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
