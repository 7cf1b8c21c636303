"""The expression language: errors with positions, three-valued logic, metrics, days, segments, rendering.

Every value check runs both back ends (Python and SQL) and asserts they agree; SQL runs on an in-memory SQLite
here, and on PostgreSQL in tests/integration/test_lang_postgres.py.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import ExpressionError
from engine.lang import (MetricRef, PyEnv, Scope, SqlContext, compile_expression, correlated_metric, evaluate,
                         evaluate_traced, expr_text, metric_calls, python_metric, to_sql)
from engine.lang.sqlite_functions import register
from engine.lang.values import local_date

FIELDS = {"id": "string", "name": "string", "tier": "string", "arr": "number", "health": "number",
          "seats": "integer", "renewal_date": "date", "created_at": "datetime", "a": "boolean", "b": "boolean"}
CONTACT = {"id": "string", "role": "string", "unsubscribed": "boolean"}
GOAL = {"id": "string", "current": "number", "target": "number"}
SEGMENTS = {"high_touch": "account.arr > 1000", "busy": "metric('logins', 7, 'count') >= 3 and segment('high_touch')",
            "loop_a": "segment('loop_b')", "loop_b": "segment('loop_a')", "broken": "account.nope > 1"}
ACCOUNT = Scope("account", {"account": FIELDS, "contact": CONTACT, "goal": GOAL}, SEGMENTS)
CONTACT_SCOPE = Scope("contact", ACCOUNT.fields, SEGMENTS)
SA_TYPE = {"string": sa.String, "number": sa.Float, "integer": sa.BigInteger, "boolean": sa.Boolean,
           "date": sa.Date, "datetime": sa.DateTime}
NOW = datetime(2024, 6, 1, 3, 0)      # 12:00 in Tokyo
TODAY = date(2024, 6, 1)


# -- errors ---------------------------------------------------------------------------------------
ERRORS = [
    ("account.renewl_date < today", "unknown field `account.renewl_date`", 1, "did you mean `renewal_date`?"),
    ("account.seats > 3 and account.helth < 50", "unknown field `account.helth`", 23, "did you mean `health`?"),
    ("account.__class__", "unknown field `account.__class__`", 1, None),
    ("''.__class__", "`.__class__`: only fields of account, contact and goal can be read with `.`", 1, None),
    ("account.arr.__class__ == 1", "`.__class__`: only fields of account, contact and goal can be read with `.`",
     1, None),
    ("now.year > 2000", "`.year`: only fields of account, contact and goal can be read with `.`", 1, None),
    ("account['arr'] > 1", "subscripts `[...]` are not supported", 1, "write fields as `account.field`"),
    ("nw > today", "unknown name `nw`", 1, "did you mean `now`?"),
    ("cycler.__init__", "unknown name `cycler`", 1, None),
    ("metrc('logins') > 1", "unknown function `metrc`", 1, "did you mean `metric`?"),
    ("account.name.upper() == 'X'",
     "only metric(), metric_change(), days_until(), days_since(), glob() and segment() can be called", 1, None),
    ("contact.role == 'champion'",
     "`contact` fields are only available when the playbook subject is contact (here it is account)", 1, None),
    ("account.arr >", "syntax error: unexpected end of expression", 14, None),
    ("account.arr > 1)", "syntax error: unexpected ')'", 16, None),
    ("account.arr $ 1", "syntax error: unexpected character '$'", 13, None),
    ("account.arr > 1 }} x", "unexpected `}}` after the expression", 17, None),
    ("account.arr 3", "unexpected `3` after the expression", 13, None),
    ("   ", "the expression is empty", 1, None),
    ("{{ account.arr > 1 }}", "an expression is written without `{{ }}`", 1,
     "e.g. `account.arr > 1000`, not `{{ account.arr > 1000 }}`"),
    ("account.name + 1 > 2", "`+` needs numbers, got a string and an integer", 14, None),
    ("account.name > 3", "cannot compare a string with an integer", 14, None),
    ("account.renewal_date > now", "cannot compare a date with a datetime using `>`", 22,
     "compare dates with dates, e.g. use days_since()"),
    ("account.renewal_date > 'soon'", "'soon' is not an ISO date", 24, "write it like '2024-06-30'"),
    ("account.arr == none", "`==` with `none` is never true or false", 13,
     "test for emptiness with `is none` or `is not none`"),
    ("account.a < true", "`<` cannot order booleans", 11, "use `==` or `!=`"),
    ("not account.arr", "`not` needs true/false, got a number", 1, None),
    ("account.a and account.arr", "`and` needs true/false on both sides, got a number", 15, None),
    ("account.arr", "a condition must be true or false, but this expression gives a number", 1,
     "compare it with something, e.g. `... > 0`"),
    ("account.arr // 2 > 1", "`//` is not supported", 13, "use `/` (true division)"),
    ("account.name ~ 'x' == 'y'", "`~` (string concatenation) is not supported", 14, None),
    ("account.a if true else false", "`... if ... else ...` is not supported", 1, "use `and` / `or`"),
    ("account.arr is defined", "unsupported test `is defined`", 16, "only `is none` and `is not none` are supported"),
    ("account.name|title == 'X'", "unsupported filter `title`", 14, "supported filters: lower, upper, abs, round"),
    ("account.name|lowr == 'x'", "unsupported filter `lowr`", 14, "did you mean `lower`?"),
    ("account.arr|lower == 'x'", "`lower` needs a string, got a number", 13, None),
    ("metric(account.name) > 1", "the arguments of metric() must be literals", 8, None),
    ("metric('logins', days=0) > 1", "`days` of metric() must be a whole number from 1 to 3660", 23, None),
    ("metric('logins', agg='mean') > 1", "`agg` of metric() must be one of sum, avg, min, max, count, last", 22, None),
    ("metric('logins', dayz=3) > 1", "metric() has no argument `dayz`", 18, "did you mean `days`?"),
    ("metric('logins', 7, days=3) > 1", "metric() got `days` twice", 21, None),
    ("metric() > 1", "metric() needs a `name` argument", 1, None),
    ("days_until(account.name) > 1", "days_until() needs a date or a datetime, got a string", 12, None),
    ("segment('hi_touch')", "unknown segment `hi_touch`", 1, "did you mean `high_touch`?"),
    ("account.a or segment('loop_a')", "segment `loop_a` refers to itself: loop_a -> loop_b -> loop_a", 14, None),
    ("segment('broken')", "in segment `broken`: unknown field `account.nope`", 1, None),
    ("account.arr in [1, account.seats]", "list items must be literals", 20, None),
    ("account.arr in [1, 'a']", "list items must all have one type: an integer and a string are mixed", 20, None),
    ("account.name in account.arr", "`in` needs a list literal or a string on its right, got a number", 17, None),
    ("account.arr is none is none", "syntax error: you cannot chain multiple tests with is", 21, None),
]


@pytest.mark.parametrize(("text", "message", "col", "hint"), ERRORS)
def test_error_message_column_and_hint(text: str, message: str, col: int, hint: str | None) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text, ACCOUNT)
    assert (info.value.message, info.value.col, info.value.hint) == (message, col, hint)


def test_subject_decides_which_entities_exist() -> None:
    assert compile_expression("contact.role == 'champion' and account.arr > 1", CONTACT_SCOPE).type == "boolean"
    with pytest.raises(ExpressionError, match="`goal` fields are only available"):
        compile_expression("goal.current > 1", CONTACT_SCOPE)
    goal = Scope("goal", ACCOUNT.fields, {})
    assert compile_expression("goal.current >= goal.target", goal).type == "boolean"


DECLARED = Scope("contact", ACCOUNT.fields, {"renewing": "account.tier == 'enterprse'", "big": "account.arr > 1"},
                 values={"contact": {"role": ("champion", "decision_maker", "admin", "user")},
                         "account": {"tier": ("smb", "mid", "enterprise")}},
                 metrics=("logins", "active_users"))


@pytest.mark.parametrize(("text", "message", "col", "hint"), [
    ("contact.role == 'champoin'", "'champoin' is not a declared value of contact.role", 17,
     "did you mean 'champion'?"),
    ("'champoin' != contact.role", "'champoin' is not a declared value of contact.role", 1,
     "did you mean 'champion'?"),
    ("account.arr > 1 and account.tier in ['smb', 'enterprse']", "'enterprse' is not a declared value of "
     "account.tier", 45, "did you mean 'enterprise'?"),
    ("account.tier not in ('mid', 'owner')", "'owner' is not a declared value of account.tier", 29,
     "declared values: smb, mid, enterprise"),
    ("contact.role == 'admin' == account.tier", "'admin' is not a declared value of account.tier", 17,
     "declared values: smb, mid, enterprise"),
    ("segment('renewing')", "in segment `renewing`: 'enterprse' is not a declared value of account.tier", 1,
     "did you mean 'enterprise'?"),
    ("metric('login', 7) > 1", "'login' is not a declared metric", 8, "did you mean 'logins'?"),
    ("metric_change(name='api_calls') < 0", "'api_calls' is not a declared metric", 20,
     "declared metrics: logins, active_users"),
])
def test_a_literal_or_metric_that_is_not_declared_is_an_error(text: str, message: str, col: int, hint: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text, DECLARED)
    assert (info.value.message, info.value.col, info.value.hint) == (message, col, hint)


@pytest.mark.parametrize("text", [
    "contact.role == 'champion' and 'smb' != account.tier", "account.tier in ['smb', 'mid']",
    "contact.role not in ['user']", "account.name == 'owner'",           # name has no declared values
    "contact.role|upper == 'ADMIN'", "'champ' in contact.role",           # not the field's value as it is
    "contact.role == account.name", "metric('active_users', 7) > metric_change('logins')", "segment('big')",
])
def test_declared_values_and_metrics_leave_everything_else_as_it_was(text: str) -> None:
    assert compile_expression(text, DECLARED).type == "boolean"
    plain = Scope("contact", ACCOUNT.fields, DECLARED.segments)
    assert compile_expression("contact.role == 'owner' and metric('page_views') > 1", plain).type == "boolean"


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(list("()[]{}|.,'\"+-*/%<>=!~ 0129_") + [
    "account", "contact", "now", "today", "arr", "name", "seats", "metric", "segment", "days_until", "is", "not",
    "none", "in", "and", "or", "if", "else", "lower", "round", "__class__", "'high_touch'", "'logins'", "true"]),
    max_size=14).map("".join))
def test_any_text_compiles_or_raises_expression_error(text: str) -> None:
    try:
        expr = compile_expression(text, ACCOUNT, want_bool=False)
    except ExpressionError as exc:
        assert exc.col is None or 1 <= exc.col <= len(text) + 1
        return
    assert compile_expression(expr_text(expr), ACCOUNT, want_bool=False) == expr


# -- both back ends -------------------------------------------------------------------------------
def tables(schema: str | None = None) -> tuple[sa.MetaData, sa.Table, sa.Table]:
    """The accounts and usage tables the value tests evaluate on (in `schema`, when given)."""
    md = sa.MetaData(schema=schema)
    accounts = sa.Table("accounts", md, *(sa.Column(n, SA_TYPE[t](), primary_key=n == "id") for n, t in FIELDS.items()))
    usage = sa.Table("usage", md, sa.Column("account_id", sa.String, primary_key=True),
                     sa.Column("metric", sa.String, primary_key=True), sa.Column("day", sa.Date, primary_key=True),
                     sa.Column("value", sa.Float))
    return md, accounts, usage


@pytest.fixture(scope="module")
def db() -> Iterator[tuple[sa.Engine, sa.Table, sa.Table]]:
    """An in-memory SQLite with the engine's SQL functions (tests/integration/test_lang_postgres.py runs the same
    value tests on PostgreSQL)."""
    engine = sa.create_engine("sqlite://")
    sa.event.listen(engine, "connect", lambda conn, _record: register(conn))
    md, accounts, usage = tables()
    md.create_all(engine)
    yield engine, accounts, usage
    engine.dispose()


def both(db: tuple[sa.Engine, sa.Table, sa.Table], text: str, want_bool: bool = False,
         now: datetime = NOW, tz: str = "Asia/Tokyo", usage: dict[str, dict[date, float]] | None = None,
         **row: Any) -> Any:
    """Evaluate `text` for one account in Python and in SQL; assert they agree and return the value."""
    engine, accounts, usage_table = db
    today = local_date(now, tz)
    record = {name: row.get(name) for name in FIELDS} | {"id": "acc"}
    usage = usage or {}
    expr = compile_expression(text, ACCOUNT, want_bool=want_bool)
    env = PyEnv({"account": record}, today, now, tz, lambda ref: python_metric(usage.get(ref.name, {}), ref, today))
    expected = evaluate(expr, env)
    ctx = SqlContext(lambda entity, name: accounts.c[name], today, now, tz, engine.dialect.name,
                     lambda ref: correlated_metric(usage_table, accounts.c.id, ref, today))
    with engine.begin() as conn:
        conn.execute(usage_table.delete())
        conn.execute(accounts.delete())
        conn.execute(accounts.insert(), [record])
        rows = [{"account_id": "acc", "metric": m, "day": d, "value": v} for m, days in usage.items()
                for d, v in days.items()]
        if rows:
            conn.execute(usage_table.insert(), rows)
        actual = conn.execute(sa.select(to_sql(expr, ctx))).scalar_one()
    assert (actual is None) == (expected is None) and actual == expected, (text, actual, expected)
    return expected


T, F, U = True, False, None


@pytest.mark.parametrize(("a", "b", "and_", "or_"), [
    (T, T, T, T), (T, F, F, T), (T, U, U, T), (F, F, F, F), (F, U, F, U), (U, U, U, U), (U, F, F, U), (U, T, U, T),
])
def test_three_valued_logic(db: Any, a: bool | None, b: bool | None, and_: bool | None, or_: bool | None) -> None:
    assert both(db, "account.a and account.b", a=a, b=b) is and_
    assert both(db, "account.a or account.b", a=a, b=b) is or_
    assert both(db, "not account.a", a=a) is (None if a is None else not a)
    assert both(db, "account.a is none", a=a) is (a is None)
    assert both(db, "account.a is not none", a=a) is (a is not None)


def test_empty_values_make_comparisons_and_arithmetic_empty(db: Any) -> None:
    assert both(db, "account.arr > 1") is None
    assert both(db, "account.arr + 1") is None
    assert both(db, "account.arr in [1, 2]") is None
    assert both(db, "account.arr not in [1, 2]") is None
    assert both(db, "account.arr > 1 or account.seats == 2", seats=2) is True
    assert both(db, "account.arr > 1 and account.seats == 2", seats=3) is False
    assert both(db, "0 <= account.seats <= 5", seats=6) is False
    assert both(db, "'ent' in account.tier", tier="enterprise") is True
    assert both(db, "'' in account.tier", tier="x") is True
    assert both(db, "'Ent' not in account.tier", tier="enterprise") is True


def test_division_and_modulo(db: Any) -> None:
    assert both(db, "account.seats / 0", seats=3) is None
    assert both(db, "account.seats % 0", seats=3) is None
    assert both(db, "account.arr / 0.0", arr=3.0) is None
    assert both(db, "account.seats / 2", seats=7) == 3.5
    assert both(db, "account.seats % 3", seats=-7) == 2
    assert both(db, "account.seats % -3", seats=7) == -2
    assert both(db, "account.arr % 2", arr=-7.5) == 0.5
    assert both(db, "-account.arr|abs", arr=2.5) == 2.5


def test_strings_order_by_code_point_and_case_maps_ascii_only(db: Any) -> None:
    assert both(db, "account.name < 'a'", name="Z") is True
    assert both(db, "account.name > 'z'", name="é") is True
    assert both(db, "account.name|lower == 'äbc'", name="ÄBC") is False
    assert both(db, "account.name|lower", name="ÄBC") == "Äbc"
    assert both(db, "account.name|upper", name="straße") == "STRAßE"


def test_round_is_half_away_from_zero(db: Any) -> None:
    assert both(db, "account.arr|round", arr=2.5) == 3.0
    assert both(db, "account.arr|round", arr=-2.5) == -3.0
    assert both(db, "account.arr|round(1)", arr=0.25) == 0.3
    assert both(db, "account.arr|round(-1)", arr=25.0) == 30.0
    assert both(db, "account.seats|round(2)", seats=7) == 7.0


def test_iso_strings_compare_with_dates_and_datetimes(db: Any) -> None:
    assert both(db, "account.renewal_date >= '2024-06-30'", renewal_date=date(2024, 6, 30)) is True
    assert both(db, "account.created_at < '2024-06-01T09:00:00+09:00'", created_at=datetime(2024, 5, 31, 23, 59)) is True
    assert both(db, "account.renewal_date in ['2024-06-30', '2024-07-01']", renewal_date=date(2024, 7, 1)) is True


# -- metrics --------------------------------------------------------------------------------------
def _days(*pairs: tuple[int, float]) -> dict[date, float]:
    return {TODAY - timedelta(days=back): value for back, value in pairs}


@pytest.mark.parametrize(("text", "rows", "expected"), [
    ("metric('logins', 7, 'sum')", _days((0, 1), (6, 10), (7, 100)), 11.0),          # today-6 in, today-7 out
    ("metric('logins', 7, 'sum')", _days((-1, 5)), 0.0),                              # tomorrow is not in
    ("metric('logins', 7)", _days((0, 7), (3, 7)), 2.0),                              # avg divides by days
    ("metric('logins', 2, 'min')", _days((0, 5)), 0.0),                               # a missing day is 0
    ("metric('logins', 2, 'min')", _days((0, 5), (1, 3)), 3.0),
    ("metric('logins', 2, 'max')", _days((0, -5)), 0.0),
    ("metric('logins', 2, 'max')", _days((0, -5), (1, -3)), -3.0),
    ("metric('logins', 7, 'count')", _days((0, 0), (6, 2), (7, 3)), 2),
    ("metric('logins', 7, 'last')", _days((2, 4), (5, 9), (8, 1)), 4.0),
    ("metric('logins', 7, 'last')", _days((7, 1)), None),
    ("metric('exports', 7, 'sum')", _days((0, 1)), 0.0),                              # other metric
    ("metric_change('logins', 7)", _days((0, 6), (7, 10)), -0.4),                    # 40% drop
    ("metric_change('logins', 7)", _days((0, 6), (14, 10)), None),                   # previous is 0
    ("metric_change('logins', 1, 'last')", _days((0, 3)), None),                     # previous empty
    ("metric_change('logins', 1, 'max')", _days((0, 3), (1, 2)), 0.5),
])
def test_metric_windows(db: Any, text: str, rows: dict[date, float], expected: Any) -> None:
    value = both(db, text, now=datetime(2024, 6, 1, 12), tz="UTC", usage={"logins": rows})
    assert value == pytest.approx(expected) if expected is not None else value is None


def test_metric_calls_lists_every_window_with_segments_expanded() -> None:
    expr = compile_expression("segment('busy') or metric_change('logins', days=14, agg='avg') < -0.2", ACCOUNT)
    assert metric_calls(expr) == {MetricRef("logins", 7, "count", 0), MetricRef("logins", 14, "avg", 0),
                                  MetricRef("logins", 14, "avg", 14)}


def test_python_metric_ignores_empty_values() -> None:
    rows = {TODAY: None, TODAY - timedelta(days=1): 4.0}
    assert python_metric(rows, MetricRef("x", 2, "count"), TODAY) == 1  # type: ignore[arg-type]
    assert python_metric(rows, MetricRef("x", 2, "last"), TODAY) == 4.0  # type: ignore[arg-type]


# -- days -----------------------------------------------------------------------------------------
def test_days_until_and_since_dates(db: Any) -> None:
    assert both(db, "days_until(account.renewal_date)", renewal_date=date(2024, 8, 30)) == 90
    assert both(db, "days_since(account.renewal_date)", renewal_date=date(2024, 5, 2)) == 30
    assert both(db, "0 <= days_until(account.renewal_date) <= 90", renewal_date=date(2024, 8, 31)) is False
    assert both(db, "days_until('2024-06-11')") == 10
    assert both(db, "days_since(today)") == 0


@pytest.mark.parametrize(("created_utc", "expected"), [
    (datetime(2024, 5, 31, 14, 59, 59), 1),    # 23:59:59 on 31 May in Tokyo
    (datetime(2024, 5, 31, 15, 0, 0), 0),      # 00:00 on 1 June in Tokyo
    (datetime(2024, 6, 1, 14, 59, 59), 0),
    (datetime(2024, 6, 1, 15, 0, 0), -1),
])
def test_days_since_datetime_counts_by_local_date_in_tokyo(db: Any, created_utc: datetime, expected: int) -> None:
    assert both(db, "days_since(account.created_at)", created_at=created_utc) == expected
    assert both(db, "days_until(account.created_at)", created_at=created_utc) == -expected


def test_today_is_the_local_date_and_now_is_utc(db: Any) -> None:
    late = datetime(2024, 6, 1, 16, 0)                  # already 2 June in Tokyo
    assert both(db, "days_since(now)", now=late) == 0
    assert both(db, "today == '2024-06-02'", now=late) is True
    assert both(db, "today == '2024-06-01'", now=late, tz="UTC") is True


# -- segments, rendering, traces ------------------------------------------------------------------
def test_segment_is_the_named_expression(db: Any) -> None:
    assert both(db, "segment('high_touch')", arr=1500.0) is True
    assert both(db, "segment('busy')", arr=1500.0, usage={"logins": _days((0, 1), (1, 1), (2, 1))}) is True
    assert both(db, "not segment('high_touch')", arr=None) is None
    contact_expr = compile_expression("segment('high_touch') and contact.role == 'admin'", CONTACT_SCOPE)
    env = PyEnv({"account": {"arr": 2000}, "contact": {"role": "admin"}}, TODAY, NOW, "UTC", lambda ref: None)
    assert evaluate(contact_expr, env) is True


@pytest.mark.parametrize(("text", "canonical"), [
    ("not account.a is none", "account.a is not none"),
    ("(account.arr + 1) * 2 > -3", "(account.arr + 1) * 2 > -3"),
    ("-account.arr|abs > 1", "-account.arr|abs > 1"),
    ("-(account.arr|abs) > 1", "-(account.arr|abs) > 1"),
    ("metric('logins') < metric('logins', agg='max', days=7)",
     "metric('logins', 30, 'avg') < metric('logins', 7, 'max')"),
    ("(account.a is none) in [true]", "(account.a is none) in [true]"),
    ("account.a and (account.b or not account.a)", "account.a and (account.b or not account.a)"),
    ("account.renewal_date < '2024-01-01'", "account.renewal_date < '2024-01-01'"),
    ("account.name in ('a', \"it's\")", "account.name in ['a', \"it's\"]"),
    ("account.arr|round(0) > 1", "account.arr|round > 1"),
])
def test_expr_text_is_canonical_and_parses_back(text: str, canonical: str) -> None:
    expr = compile_expression(text, ACCOUNT)
    assert expr_text(expr) == canonical
    assert compile_expression(canonical, ACCOUNT) == expr


def test_evaluate_traced_reports_operands_comparisons_and_calls_in_order() -> None:
    expr = compile_expression("account.a and (days_until(account.renewal_date) < 30 or not account.b)", ACCOUNT)
    env = PyEnv({"account": {"a": True, "b": None, "renewal_date": date(2024, 6, 11)}}, TODAY, NOW, "UTC",
                lambda ref: None)
    value, trace = evaluate_traced(expr, env)
    assert value is True
    assert trace == [
        ("account.a", True),
        ("days_until(account.renewal_date)", 10),
        ("days_until(account.renewal_date) < 30", True),
        ("account.b", None),
        ("not account.b", None),
        ("days_until(account.renewal_date) < 30 or not account.b", True),
    ]
