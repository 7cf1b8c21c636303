"""The match query: which subjects of a playbook match now — computed by the database in one statement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Callable

from sqlalchemy import Select, and_, select, true

from engine.lang import SqlContext, correlated_metric, metric_calls, to_sql
from engine.store.metric_cache import MetricCache
from engine.store.schema import Schema

ENTITY_OF = {"account": "accounts", "contact": "contacts", "goal": "goals"}


@dataclass(frozen=True)
class Clock:
    """The instant an evaluation runs at: `now` (naive UTC), `today` in the config time zone."""

    now: datetime
    today: date
    timezone: str


def subject_columns(schema: Schema, subject: str) -> Callable[[str, str], Any]:
    """(entity, field) -> column, for the tables joined when evaluating a `subject` playbook."""
    tables = {"account": schema.accounts, "contact": schema.contacts, "goal": schema.goals}

    def column(entity: str, field: str) -> Any:
        return tables[entity].c[field]

    return column


def subject_from(schema: Schema, subject: str) -> tuple[Any, Any, list[Any]]:
    """FROM clause, subject id column and liveness conditions for a subject type."""
    a = schema.accounts
    if subject == "account":
        return a, a.c.id, [a.c.removed_at.is_(None)]
    t = schema.contacts if subject == "contact" else schema.goals
    return (t.join(a, t.c.account_id == a.c.id), t.c.id,
            [t.c.removed_at.is_(None), a.c.removed_at.is_(None)])


def sql_context(schema: Schema, subject: str, clock: Clock, dialect: str,
                metric: Callable[[Any], Any] | None = None) -> SqlContext:
    """The SqlContext that compiles expressions against the subject's tables."""
    accounts_id = schema.accounts.c.id
    return SqlContext(
        columns=subject_columns(schema, subject), today=clock.today, now=clock.now,
        timezone=clock.timezone, dialect=dialect,
        metric=metric or (lambda ref: correlated_metric(schema.usage, accounts_id, ref, clock.today)))


def match_query(schema: Schema, subject: str, exprs: list[Any], clock: Clock, dialect: str,
                cache: MetricCache | None = None) -> Select:
    """SELECT subject_id of the live subjects for which every expression is true.

    Metric windows come from the materialised `cache` (joined by account id) when given, else from
    correlated subqueries over the usage table (same values; the cache is the fast path)."""
    from_, id_col, live = subject_from(schema, subject)
    needed = set().union(*(metric_calls(e) for e in exprs)) if exprs else set()
    if cache is not None and needed and needed <= set(cache.columns):
        from_ = cache.join(from_, schema.accounts.c.id)
        ctx = sql_context(schema, subject, clock, dialect, metric=cache.value)
    else:
        ctx = sql_context(schema, subject, clock, dialect)
    conds = [to_sql(e, ctx) for e in exprs]
    where = and_(*live, *conds) if (live or conds) else true()
    return select(id_col.label("subject_id")).select_from(from_).where(where)
