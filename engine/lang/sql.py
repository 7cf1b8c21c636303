"""Translate a typed expression into a SQLAlchemy column expression (SQLite or PostgreSQL).

NULL plays the empty value, so SQL's own three-valued logic gives the language's semantics; the few
places where the dialects differ (string order, case mapping, rounding, dates in a time zone) are
spelled out per dialect here, with SQLite helpers in `sqlite_functions`.
"""

from __future__ import annotations

import functools
import operator
from zoneinfo import ZoneInfo
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Callable

from sqlalchemy import (BigInteger, Boolean, ColumnElement, Date, DateTime, Float, Integer, Numeric, String, and_,
                        case, cast, collate, func, literal, not_, null, or_, select, type_coerce)
from sqlalchemy.sql.type_api import TypeEngine
from sqlalchemy.types import NullType

from engine.lang import ast as A
from engine.lang.types import BOOLEAN, DATE, DATETIME, INTEGER, NUMBER, STRING

SA_TYPES: dict[str, TypeEngine[Any]] = {
    INTEGER: BigInteger(), NUMBER: Float(), STRING: String(), BOOLEAN: Boolean(), DATE: Date(), DATETIME: DateTime(),
}
_CMP: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


@dataclass
class SqlContext:
    """How names map to SQL: entity fields to columns, the clock, the dialect, and metric windows."""

    columns: Callable[[str, str], ColumnElement[Any]]
    today: date
    now: datetime
    timezone: str
    dialect: str
    metric: Callable[[A.MetricRef], ColumnElement[Any]]


def to_sql(expr: A.Expr, ctx: SqlContext) -> ColumnElement[Any]:
    """The SQL for `expr`, typed so results come back as the Python values evaluate() gives."""
    if ctx.dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported SQL dialect {ctx.dialect!r}")
    return type_coerce(_Sql(ctx).sql(expr), SA_TYPES.get(expr.type, NullType()))


def correlated_metric(usage_table: Any, account_id_col: ColumnElement[Any], ref: A.MetricRef,
                      today: date) -> ColumnElement[Any]:
    """A `metric` for SqlContext: a scalar subquery over usage(account_id, metric, day, value) for the outer row."""
    u = usage_table.c
    end = today - timedelta(days=ref.offset_days)
    start = end - timedelta(days=ref.days - 1)
    where = and_(u.account_id == account_id_col, u.metric == literal(ref.name, String()),
                 u.day >= literal(start, Date()), u.day <= literal(end, Date()), u.value.is_not(None))
    zero = literal(0.0, Float())
    if ref.agg == "last":
        return select(u.value).where(where).order_by(u.day.desc()).limit(1).scalar_subquery()
    if ref.agg == "count":
        return select(func.count(u.value)).where(where).scalar_subquery()
    total = func.coalesce(func.sum(u.value), zero)
    if ref.agg == "sum":
        return select(cast(total, Float())).where(where).scalar_subquery()
    if ref.agg == "avg":
        return select(cast(total, Float()) / literal(float(ref.days), Float())).where(where).scalar_subquery()
    extreme = func.min(u.value) if ref.agg == "min" else func.max(u.value)
    beyond_zero = extreme < zero if ref.agg == "min" else extreme > zero
    value = case((func.count(u.value) < ref.days, case((beyond_zero, extreme), else_=zero)), else_=extreme)
    return select(cast(value, Float())).where(where).scalar_subquery()


FIXED_FROM, FIXED_TO = datetime(1970, 1, 1), datetime(2100, 1, 1)


@functools.lru_cache(maxsize=64)
def fixed_offset_minutes(timezone: str) -> int | None:
    """The zone's UTC offset in minutes when it is the same all through 1970-2099, else None."""
    tz = ZoneInfo(timezone)
    offsets = {datetime(year, month, day, tzinfo=tz).utcoffset()
               for year in range(1970, 2100) for month in range(1, 13) for day in (1, 15)}
    if len(offsets) != 1:
        return None
    (offset,) = offsets
    return int(offset.total_seconds() // 60) if offset is not None else None


class _Sql:
    def __init__(self, ctx: SqlContext):
        self.ctx = ctx
        self.pg = ctx.dialect == "postgresql"

    def sql(self, expr: A.Expr) -> ColumnElement[Any]:
        return getattr(self, "_" + type(expr).__name__)(expr)

    def _Literal(self, expr: A.Literal) -> ColumnElement[Any]:
        if expr.value is None:
            return null()
        return literal(expr.value, SA_TYPES[expr.type])

    def _Field(self, expr: A.Field) -> ColumnElement[Any]:
        return self.ctx.columns(expr.entity, expr.name)

    def _Now(self, expr: A.Now) -> ColumnElement[Any]:
        return literal(self.ctx.now, DateTime())

    def _Today(self, expr: A.Today) -> ColumnElement[Any]:
        return literal(self.ctx.today, Date())

    def _Compare(self, expr: A.Compare) -> ColumnElement[Any]:
        pairs = []
        left_expr, left = expr.left, self.sql(expr.left)
        for op, right_expr in expr.ops:
            if isinstance(right_expr, A.ListLiteral):
                items = [self.sql(item) for item in right_expr.items]
                pairs.append(left.in_(items) if op == "in" else left.not_in(items))
                continue
            folded = self._days_compare(left_expr, op, right_expr)
            if folded is not None:
                pairs.append(folded)
                left_expr, left = right_expr, self.sql(right_expr)
                continue
            right = self.sql(right_expr)
            if op in ("in", "not in"):
                found = (func.strpos if self.pg else func.instr)(right, left) > 0
                pairs.append(found if op == "in" else not_(found))
            elif self.pg and left_expr.type == STRING and op not in ("==", "!="):
                pairs.append(_CMP[op](collate(left, "C"), right))
            else:
                pairs.append(_CMP[op](left, right))
            left_expr, left = right_expr, right
        return pairs[0] if len(pairs) == 1 else and_(*pairs)

    def _days_compare(self, left: A.Expr, op: str, right: A.Expr) -> ColumnElement[Any] | None:
        """`days_until(d) <= 90` as `d <= today + 90` (and likewise for days_since and datetimes).

        The same truth value, NULL included, but a plain comparison of the stored column with a constant:
        no date arithmetic per row, and an index on the column can serve it. None when not applicable."""
        flip = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
        if op not in flip:
            return None
        if isinstance(right, A.Days) and not isinstance(left, A.Days):
            left, right, op = right, left, flip[op]
        if not isinstance(left, A.Days) or not isinstance(right, A.Literal) or isinstance(right.value, bool) \
                or not isinstance(right.value, (int, float)) or float(right.value) != int(right.value):
            return None
        k = int(right.value)
        try:
            if left.since:          # today - d OP k  <=>  d OP' today - k
                day, op = self.ctx.today - timedelta(days=k), flip[op]
            else:                   # d - today OP k  <=>  d OP today + k
                day = self.ctx.today + timedelta(days=k)
            after = day + timedelta(days=1)
        except OverflowError:
            return None
        if left.operand.type == DATE:
            return _CMP[op](self.sql(left.operand), literal(day, Date()))
        minutes = fixed_offset_minutes(self.ctx.timezone)
        if minutes is None or not FIXED_FROM.date() < day < after < FIXED_TO.date():
            return None   # local dates are monotonic in time only where the offset is fixed
        value = self.sql(left.operand)
        start, end = (literal(datetime.combine(d, datetime.min.time()) - timedelta(minutes=minutes), DateTime())
                      for d in (day, after))
        return {">=": value >= start, ">": value >= end, "<=": value < end, "<": value < start,
                "==": and_(value >= start, value < end), "!=": or_(value < start, value >= end)}[op]

    def _And(self, expr: A.And) -> ColumnElement[Any]:
        return and_(self.sql(expr.left), self.sql(expr.right))

    def _Or(self, expr: A.Or) -> ColumnElement[Any]:
        return or_(self.sql(expr.left), self.sql(expr.right))

    def _Not(self, expr: A.Not) -> ColumnElement[Any]:
        return not_(self.sql(expr.operand))

    def _IsNone(self, expr: A.IsNone) -> ColumnElement[Any]:
        operand = self.sql(expr.operand)
        return operand.is_not(None) if expr.negated else operand.is_(None)

    def _Arith(self, expr: A.Arith) -> ColumnElement[Any]:
        left, right = self.sql(expr.left), self.sql(expr.right)
        if expr.op == "+":
            return left + right
        if expr.op == "-":
            return left - right
        if expr.op == "*":
            return left * right
        divisor = func.nullif(right, literal(0, Integer()))
        if expr.op == "/":
            return cast(left, Float()) / type_coerce(divisor, Float())
        if expr.type == INTEGER:   # exact floored modulo for integers
            return type_coerce((left % divisor + right) % divisor, BigInteger())
        floor = func.floor if self.pg else func.pb_floor
        return left - right * floor(cast(left, Float()) / type_coerce(divisor, Float()), type_=Float())

    def _Neg(self, expr: A.Neg) -> ColumnElement[Any]:
        return -self.sql(expr.operand)

    def _Filter(self, expr: A.Filter) -> ColumnElement[Any]:
        operand = self.sql(expr.operand)
        if expr.name in ("lower", "upper"):
            fn = func.lower if expr.name == "lower" else func.upper
            return fn(collate(operand, "C") if self.pg else operand, type_=String())
        if expr.name == "abs":
            return func.abs(operand, type_=SA_TYPES[expr.type])
        precision = literal(expr.precision, Integer())
        if self.pg:
            return cast(func.round(cast(cast(operand, Float()), Numeric()), precision), Float())
        return func.pb_round(operand, precision, type_=Float())

    def _Metric(self, expr: A.Metric) -> ColumnElement[Any]:
        return self.ctx.metric(A.MetricRef(expr.name, expr.days, expr.agg, 0))

    def _MetricChange(self, expr: A.MetricChange) -> ColumnElement[Any]:
        current = self.ctx.metric(A.MetricRef(expr.name, expr.days, expr.agg, 0))
        previous = self.ctx.metric(A.MetricRef(expr.name, expr.days, expr.agg, expr.days))
        divisor = type_coerce(func.nullif(previous, literal(0, Integer())), Float())
        return (cast(current, Float()) - previous) / divisor

    def _Days(self, expr: A.Days) -> ColumnElement[Any]:
        day = self._local_day(expr.operand)
        today = literal(self.ctx.today, Date())
        first, second = (today, day) if expr.since else (day, today)
        if self.pg:
            return first.op("-", return_type=Integer())(second)
        return cast(func.julianday(first) - func.julianday(second), Integer())

    def _Glob(self, expr: A.Glob) -> ColumnElement[Any]:
        value = self.sql(expr.operand)
        if self.pg:   # LIKE is case-sensitive in PostgreSQL; escape its own wildcards first
            like = expr.pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            return value.like(like.replace("*", "%").replace("?", "_"), escape="\\")
        return value.op("GLOB", return_type=Boolean())(literal(expr.pattern, String()))  # SQLite: case-sensitive

    def _local_day(self, expr: A.Expr) -> ColumnElement[Any]:
        """A date operand as is; a datetime operand as its date in the configured time zone."""
        value = self.sql(expr)
        if expr.type == DATE:
            return value
        tz = literal(self.ctx.timezone, String())
        if self.pg:
            return cast(func.timezone(tz, func.timezone(literal("UTC", String()), value)), Date())
        slow = func.pb_local_date(value, tz, type_=String())
        minutes = fixed_offset_minutes(self.ctx.timezone)
        if minutes is None:
            return slow
        # No DST in this zone since 1970: SQLite's own date() with a fixed shift, no Python call per row.
        fast = func.date(value, literal(f"{minutes:+d} minutes", String()), type_=String())
        in_range = and_(value >= literal(FIXED_FROM, DateTime()), value < literal(FIXED_TO, DateTime()))
        return case((in_range, fast), else_=slow)

    def _Segment(self, expr: A.Segment) -> ColumnElement[Any]:
        return self.sql(expr.expr)
