"""Evaluate a typed expression in Python over row dicts, with SQL's three-valued logic (None = empty)."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Callable

from engine.lang import ast as A
from engine.lang.render import expr_text
from engine.lang.types import BOOLEAN, DATE, DATETIME, INTEGER, NUMBER, STRING, parse_iso
from engine.lang.values import ascii_lower, ascii_upper, floored_mod, local_date, round_half_away

Value = object
_CMP: dict[str, Callable[[object, object], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "in": lambda a, b: a in b, "not in": lambda a, b: a not in b,  # type: ignore[operator]
}
_TRACED = (A.Compare, A.IsNone, *A.CALLS)


@dataclass
class PyEnv:
    """What an evaluation sees: entity rows ('account' -> row dict), the clock, and usage metrics."""

    records: dict[str, dict | None]
    today: date
    now: datetime
    timezone: str
    metric: Callable[[A.MetricRef], float | None]


def evaluate(expr: A.Expr, env: PyEnv) -> Value:
    """The value of `expr`; None means empty/unknown."""
    return _Evaluator(env, None).ev(expr)


def evaluate_traced(expr: A.Expr, env: PyEnv) -> tuple[Value, list[tuple[str, object]]]:
    """The value plus (text, value) of every and/or/not operand, comparison and call, in evaluation order."""
    trace: list[tuple[str, object]] = []
    value = _Evaluator(env, trace).ev(expr)
    return value, trace


def python_metric(rows: dict[date, float], ref: A.MetricRef, today: date) -> float | None:
    """metric() over one account's {day: value} rows of `ref.name` (a missing day counts as 0)."""
    end = today - timedelta(days=ref.offset_days)
    start = end - timedelta(days=ref.days - 1)
    window = {day: float(v) for day, v in rows.items() if v is not None and start <= day <= end}
    if ref.agg == "count":
        return len(window)
    if ref.agg == "last":
        return window[max(window)] if window else None
    values = [window[day] for day in sorted(window)]
    if ref.agg in ("sum", "avg"):
        total = float(sum(values))
        return total if ref.agg == "sum" else total / ref.days
    if len(values) < ref.days:
        values.append(0.0)
    return min(values) if ref.agg == "min" else max(values)


def coerce(value: object, type_: str) -> object:
    """A stored field value as the Python type the language uses for `type_`."""
    if value is None:
        return None
    if type_ == NUMBER and isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        return float(value)
    if type_ == INTEGER and isinstance(value, (float, Decimal)) and value == int(value):
        return int(value)
    if type_ == BOOLEAN and isinstance(value, int):
        return bool(value)
    if type_ == DATE:
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, str):
            return parse_iso(value, DATE)
    if type_ == DATETIME:
        if isinstance(value, str):
            return parse_iso(value, DATETIME)
        if isinstance(value, datetime) and value.tzinfo is not None:
            return parse_iso(value.isoformat(), DATETIME)
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime(value.year, value.month, value.day)
    if type_ == STRING and not isinstance(value, str):
        return str(value)
    return value


class _Evaluator:
    def __init__(self, env: PyEnv, trace: list[tuple[str, object]] | None):
        self.env = env
        self.trace = trace

    def ev(self, expr: A.Expr) -> Value:
        value = getattr(self, "_" + type(expr).__name__)(expr)
        if self.trace is not None and isinstance(expr, _TRACED):
            self.trace.append((expr_text(expr), value))
        return value

    def operand(self, expr: A.Expr) -> Value:
        """Evaluate an operand of and/or/not, tracing it when ev() does not already."""
        value = self.ev(expr)
        if self.trace is not None and not isinstance(expr, _TRACED):
            self.trace.append((expr_text(expr), value))
        return value

    def _Literal(self, expr: A.Literal) -> Value:
        return expr.value

    def _ListLiteral(self, expr: A.ListLiteral) -> Value:
        return tuple(item.value for item in expr.items)

    def _Field(self, expr: A.Field) -> Value:
        record = self.env.records.get(expr.entity)
        return None if record is None else coerce(record.get(expr.name), expr.type)

    def _Now(self, expr: A.Now) -> Value:
        return self.env.now

    def _Today(self, expr: A.Today) -> Value:
        return self.env.today

    def _Compare(self, expr: A.Compare) -> Value:
        left = self.ev(expr.left)
        results = []
        for op, right_expr in expr.ops:
            right = self.ev(right_expr)
            results.append(None if left is None or right is None else _CMP[op](left, right))
            left = right
        return _all(results)

    def _And(self, expr: A.And) -> Value:
        return _all([self.operand(expr.left), self.operand(expr.right)])

    def _Or(self, expr: A.Or) -> Value:
        left, right = self.operand(expr.left), self.operand(expr.right)
        if left is True or right is True:
            return True
        return None if left is None or right is None else False

    def _Not(self, expr: A.Not) -> Value:
        value = self.operand(expr.operand)
        return None if value is None else not value

    def _IsNone(self, expr: A.IsNone) -> Value:
        return (self.ev(expr.operand) is None) != expr.negated

    def _Arith(self, expr: A.Arith) -> Value:
        left, right = self.ev(expr.left), self.ev(expr.right)
        if left is None or right is None:
            return None
        if expr.op in ("/", "%") and right == 0:
            return None
        if expr.op == "+":
            return left + right  # type: ignore[operator]
        if expr.op == "-":
            return left - right  # type: ignore[operator]
        if expr.op == "*":
            return left * right  # type: ignore[operator]
        if expr.op == "/":
            return left / right  # type: ignore[operator]
        return floored_mod(left, right)  # type: ignore[arg-type]

    def _Neg(self, expr: A.Neg) -> Value:
        value = self.ev(expr.operand)
        return None if value is None else -value  # type: ignore[operator]

    def _Filter(self, expr: A.Filter) -> Value:
        value = self.ev(expr.operand)
        if value is None:
            return None
        if expr.name == "lower":
            return ascii_lower(value)  # type: ignore[arg-type]
        if expr.name == "upper":
            return ascii_upper(value)  # type: ignore[arg-type]
        if expr.name == "abs":
            return abs(value)  # type: ignore[arg-type]
        return round_half_away(value, expr.precision)  # type: ignore[arg-type]

    def _Metric(self, expr: A.Metric) -> Value:
        value = self.env.metric(A.MetricRef(expr.name, expr.days, expr.agg, 0))
        if value is None:
            return None
        return int(value) if expr.type == INTEGER else float(value)

    def _MetricChange(self, expr: A.MetricChange) -> Value:
        current = self.env.metric(A.MetricRef(expr.name, expr.days, expr.agg, 0))
        previous = self.env.metric(A.MetricRef(expr.name, expr.days, expr.agg, expr.days))
        if current is None or previous is None or previous == 0:
            return None
        return (float(current) - previous) / previous

    def _Days(self, expr: A.Days) -> Value:
        value = self.ev(expr.operand)
        if value is None:
            return None
        day = local_date(value, self.env.timezone) if isinstance(value, datetime) else value
        delta = (self.env.today - day) if expr.since else (day - self.env.today)  # type: ignore[operator]
        return delta.days

    def _Glob(self, expr: A.Glob) -> Value:
        value = self.ev(expr.operand)
        if value is None:
            return None
        import fnmatch

        return fnmatch.fnmatchcase(str(value), expr.pattern)

    def _Segment(self, expr: A.Segment) -> Value:
        return self.ev(expr.expr)


def _all(values: list[Value]) -> Value:
    """Three-valued AND."""
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True
