"""Property test: for random well-typed expressions and random data, SQL push-down equals Python evaluation.

Runs on an in-memory SQLite here, and on PostgreSQL in tests/integration/test_lang_postgres.py.
"""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, timedelta
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.lang import (PyEnv, Scope, SqlContext, compile_expression, correlated_metric, evaluate,
                         evaluate_traced, expr_text, python_metric, to_sql)
from engine.lang.sqlite_functions import register
from engine.lang.values import local_date

FIELDS = {
    "id": "string", "name": "string", "tier": "string", "arr": "number", "health": "number",
    "seats": "integer", "score": "integer", "renewal_date": "date", "trial_end": "date",
    "created_at": "datetime", "last_seen": "datetime", "active": "boolean", "churned": "boolean",
}
SA_TYPE = {"string": sa.String, "number": sa.Float, "integer": sa.BigInteger, "boolean": sa.Boolean,
           "date": sa.Date, "datetime": sa.DateTime}
SEGMENTS = {"big": "account.arr > 100", "engaged": "metric('logins', 7, 'count') >= 2 or segment('big')"}
SCOPE = Scope("account", {"account": FIELDS}, SEGMENTS)
TIMEZONES = ["UTC", "Asia/Tokyo", "America/Los_Angeles", "Pacific/Kiritimati", "Pacific/Pago_Pago"]
METRICS = ["logins", "exports"]
NOW_MIN, NOW_MAX = datetime(2024, 6, 1), datetime(2024, 6, 30, 23, 59, 59)
DAY_MIN, DAY_MAX = date(2024, 4, 15), date(2024, 8, 15)
TEXT = st.text(alphabet="aAbZ é_%€😀'\\\"", max_size=4)
FLOATS = st.one_of(st.integers(-400, 400).map(lambda k: k / 4),
                   st.floats(-1000, 1000, allow_nan=False, allow_infinity=False).filter(lambda x: x == 0 or abs(x) > 1e-3))
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "string": TEXT, "number": FLOATS, "integer": st.integers(-30, 30), "boolean": st.booleans(),
    "date": st.dates(DAY_MIN, DAY_MAX),
    "datetime": st.datetimes(datetime(2024, 4, 15), datetime(2024, 8, 15)),
}


# -- expression generator --------------------------------------------------------------------------
def _fields(type_: str) -> list[str]:
    return [f"account.{name}" for name, t in FIELDS.items() if t == type_ and name != "id"]


METRIC = st.builds(lambda n, d, a, kw: f"metric('{n}', days={d}, agg='{a}')" if kw else f"metric('{n}', {d}, '{a}')",
                   st.sampled_from(METRICS), st.sampled_from([1, 2, 3, 7, 30]),
                   st.sampled_from(["sum", "avg", "min", "max", "last"]), st.booleans())
COUNT = st.builds(lambda n, d: f"metric('{n}', {d}, 'count')", st.sampled_from(METRICS), st.sampled_from([1, 3, 7, 30]))
CHANGE = st.builds(lambda n, d, a: f"metric_change('{n}', {d}, '{a}')", st.sampled_from(METRICS),
                   st.sampled_from([1, 3, 7]), st.sampled_from(["sum", "avg", "min", "max", "count", "last"]))
ISO_DATE = st.dates(DAY_MIN, DAY_MAX).map(lambda d: repr(d.isoformat()))
ISO_DATETIME = st.datetimes(datetime(2024, 4, 15), datetime(2024, 8, 15)).map(lambda d: repr(d.isoformat()))
LEAVES: dict[str, list[st.SearchStrategy[str]]] = {
    "integer": [st.integers(-20, 20).map(str), COUNT],
    "number": [FLOATS.map(repr), METRIC, CHANGE],
    "string": [TEXT.map(repr)],
    "boolean": [st.sampled_from(["true", "false", "segment('big')", "segment('engaged')"])],
    "date": [st.just("today")],
    "datetime": [st.just("now")],
}
CMP = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
IN = st.sampled_from(["in", "not in"])


def gen(draw: st.DrawFn, type_: str, depth: int) -> str:
    """Expression text of the given type, nested at most `depth` levels (compound parts parenthesised)."""
    leaves = [st.sampled_from(_fields(type_)), *LEAVES[type_]]
    builders = [] if depth == 0 else COMPOUND.get(type_, [])
    pick = draw(st.integers(0, len(leaves) + len(builders) - 1))
    if pick < len(leaves):
        return draw(leaves[pick])
    return builders[pick - len(leaves)](draw, depth - 1)


def _numeric(draw: st.DrawFn, depth: int) -> str:
    return gen(draw, draw(st.sampled_from(["integer", "number"])), depth)


def _moment(draw: st.DrawFn, depth: int) -> str:
    return draw(st.one_of(st.sampled_from(_fields("date") + _fields("datetime") + ["today", "now"]), ISO_DATE))


def _items(draw: st.DrawFn, item: st.SearchStrategy[str]) -> str:
    return "[" + ", ".join(draw(st.lists(item, min_size=1, max_size=4))) + "]"


def _any(draw: st.DrawFn, depth: int) -> str:
    return gen(draw, draw(st.sampled_from(list(VALUES))), depth)


def _side(draw: st.DrawFn, type_: str, depth: int, literal: st.SearchStrategy[str]) -> str:
    return draw(literal) if draw(st.booleans()) else gen(draw, type_, depth)


COMPOUND: dict[str, list[Any]] = {
    "integer": [
        lambda d, n: f"({gen(d, 'integer', n)} {d(st.sampled_from('+-*%'))} {gen(d, 'integer', n)})",
        lambda d, n: f"-({gen(d, 'integer', n)})",
        lambda d, n: f"({gen(d, 'integer', n)})|abs",
        lambda d, n: f"days_until({_moment(d, n)})",
        lambda d, n: f"days_since({_moment(d, n)})",
    ],
    "number": [
        lambda d, n: f"({gen(d, 'number', n)} {d(st.sampled_from('+-*/%'))} {_numeric(d, n)})",
        lambda d, n: f"({_numeric(d, n)} {d(st.sampled_from('+-*/%'))} {gen(d, 'number', n)})",
        lambda d, n: f"({gen(d, 'integer', n)} / {gen(d, 'integer', n)})",
        lambda d, n: f"-({gen(d, 'number', n)})",
        lambda d, n: f"({gen(d, 'number', n)})|abs",
        lambda d, n: f"({_numeric(d, n)})|round({d(st.sampled_from(['0', '1', '2', '-1']))})",
        lambda d, n: f"({_numeric(d, n)})|round",
    ],
    "string": [lambda d, n: f"({gen(d, 'string', n)})|{d(st.sampled_from(['lower', 'upper']))}"],
    "boolean": [
        lambda d, n: f"({_numeric(d, n)} {d(CMP)} {_numeric(d, n)})",
        lambda d, n: f"({_numeric(d, n)} {d(CMP)} {_numeric(d, n)} {d(CMP)} {_numeric(d, n)})",
        lambda d, n: f"({gen(d, 'string', n)} {d(CMP)} {gen(d, 'string', n)})",
        lambda d, n: f"({_side(d, 'date', n, ISO_DATE)} {d(CMP)} {gen(d, 'date', n)})",
        lambda d, n: f"({gen(d, 'datetime', n)} {d(CMP)} {_side(d, 'datetime', n, ISO_DATETIME)})",
        lambda d, n: f"({gen(d, 'boolean', n)} {d(st.sampled_from(['==', '!=']))} {gen(d, 'boolean', n)})",
        lambda d, n: f"({gen(d, 'boolean', n)} {d(st.sampled_from(['and', 'or']))} {gen(d, 'boolean', n)})",
        lambda d, n: f"(not ({gen(d, 'boolean', n)}))",
        lambda d, n: f"(({_any(d, n)}) is {d(st.sampled_from(['', 'not ']))}none)",
        lambda d, n: f"(({_numeric(d, n)}) {d(IN)} "
                     f"{_items(d, st.one_of(st.integers(-20, 20).map(str), FLOATS.map(repr)))})",
        lambda d, n: f"(({gen(d, 'string', n)}) {d(IN)} {_items(d, TEXT.map(repr))})",
        lambda d, n: f"(({gen(d, 'date', n)}) {d(IN)} {_items(d, ISO_DATE)})",
        lambda d, n: f"(({gen(d, 'boolean', n)}) in [true])",
        lambda d, n: f"(({gen(d, 'string', n)}) {d(IN)} ({gen(d, 'string', n)}))",
    ],
}


@st.composite
def typed_expr(draw: st.DrawFn) -> str:
    """A random well-typed expression: conditions nest 3 deep, values 2 (keeps integers far below 2**53)."""
    type_ = draw(st.sampled_from(["boolean", "boolean", "integer", "number", "string"]))
    return gen(draw, type_, 3 if type_ == "boolean" else 2)


# -- data -----------------------------------------------------------------------------------------
@st.composite
def worlds(draw: st.DrawFn) -> dict[str, Any]:
    """Accounts (with empty values), usage rows around today, a clock and a time zone."""
    tz = draw(st.sampled_from(TIMEZONES))
    now = draw(st.datetimes(NOW_MIN, NOW_MAX))
    today = local_date(now, tz)
    accounts = []
    usage: dict[tuple[str, str], dict[date, float | None]] = {}
    for i in range(draw(st.integers(1, 4))):
        row: dict[str, Any] = {"id": f"a{i}"}
        for name, type_ in FIELDS.items():
            if name != "id":
                row[name] = None if draw(st.integers(0, 3)) == 0 else draw(VALUES[type_])
        accounts.append(row)
        for metric in METRICS:
            days = draw(st.dictionaries(st.integers(-2, 65), st.one_of(st.integers(-3, 20), st.none()), max_size=10))
            usage[(row["id"], metric)] = {today - timedelta(days=back): v for back, v in days.items()}
    return {"tz": tz, "now": now, "today": today, "accounts": accounts, "usage": usage}


# -- back ends ------------------------------------------------------------------------------------
def _tables(schema: str | None) -> tuple[sa.MetaData, sa.Table, sa.Table]:
    md = sa.MetaData(schema=schema)
    accounts = sa.Table("accounts", md, *(sa.Column(n, SA_TYPE[t](), primary_key=n == "id") for n, t in FIELDS.items()))
    usage = sa.Table("usage", md, sa.Column("account_id", sa.String, primary_key=True),
                     sa.Column("metric", sa.String, primary_key=True), sa.Column("day", sa.Date, primary_key=True),
                     sa.Column("value", sa.Float))
    return md, accounts, usage


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[sa.Engine, sa.Table, sa.Table]]:
    """An in-memory SQLite (tests/integration/test_lang_postgres.py runs the property on PostgreSQL)."""
    sqlite3.enable_callback_tracebacks(True)   # a failing helper function shows its traceback
    engine = sa.create_engine("sqlite://")
    sa.event.listen(engine, "connect", lambda conn, _record: register(conn))
    md, accounts, usage = _tables(None)
    md.create_all(engine)
    yield engine, accounts, usage
    engine.dispose()


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(world=worlds(), texts=st.lists(typed_expr(), min_size=1, max_size=4))
def test_sql_equals_python(backend: tuple[sa.Engine, sa.Table, sa.Table], world: dict[str, Any], texts: list[str]) -> None:
    engine, accounts, usage = backend
    exprs = [compile_expression(text, SCOPE, want_bool=False) for text in texts]
    for text, e in zip(texts, exprs):
        assert compile_expression(expr_text(e), SCOPE, want_bool=False) == e, (text, expr_text(e))
    today = world["today"]
    ctx = SqlContext(columns=lambda entity, name: accounts.c[name], today=today, now=world["now"],
                     timezone=world["tz"], dialect=engine.dialect.name,
                     metric=lambda ref: correlated_metric(usage, accounts.c.id, ref, today))
    usage_rows = [{"account_id": a, "metric": m, "day": d, "value": v}
                  for (a, m), days in world["usage"].items() for d, v in days.items()]
    with engine.begin() as conn:
        conn.execute(usage.delete())
        conn.execute(accounts.delete())
        conn.execute(accounts.insert(), world["accounts"])
        if usage_rows:
            conn.execute(usage.insert(), usage_rows)
        query = sa.select(accounts.c.id, *(to_sql(e, ctx).label(f"e{i}") for i, e in enumerate(exprs)))
        got = {row[0]: row[1:] for row in conn.execute(query)}
    for account in world["accounts"]:
        env = PyEnv(records={"account": account}, today=today, now=world["now"], timezone=world["tz"],
                    metric=lambda ref, a=account["id"]: python_metric(world["usage"][(a, ref.name)], ref, today))
        for i, e in enumerate(exprs):
            expected = evaluate(e, env)
            assert evaluate_traced(e, env)[0] == expected
            actual = got[account["id"]][i]
            assert (actual is None) == (expected is None) and actual == expected, (
                f"{expr_text(e)} on {account['id']}: SQL gave {actual!r}, Python {expected!r}")
