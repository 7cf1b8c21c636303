"""The built-in functions: argument binding and checking for metric, metric_change, days_until, days_since, segment."""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from engine.errors import ExpressionError, declared_hint, suggest
from engine.lang import ast as A
from engine.lang.types import DATE, DATETIME, INTEGER, NUMBER, STRING, describe, parse_iso

FUNCTIONS = ("metric", "metric_change", "days_until", "days_since", "segment", "glob")
AGGS = ("sum", "avg", "min", "max", "count", "last")
MAX_DAYS = 3660

Arg = tuple[A.Expr, "int | None"]                       # (typed argument, column)
Keyword = tuple[str, "int | None", A.Expr, "int | None"]  # (key, key column, typed value, column)

# Parameters of the functions that take literals only: (name, default); None means required.
_PARAMS: dict[str, tuple[tuple[str, object], ...]] = {
    "metric": (("name", None), ("days", 30), ("agg", "avg")),
    "metric_change": (("name", None), ("days", 30), ("agg", "sum")),
    "segment": (("name", None),),
}


def check_call(name: str, args: list[Arg], kwargs: list[Keyword], col: int | None,
               segment: Callable[[str, int | None], A.Segment], metrics: tuple[str, ...] | None = None) -> A.Expr:
    """The typed node of a call to a built-in function; ExpressionError when it is unknown or misused, or names a
    metric `metrics` (the declared ones, when declared) does not list."""
    if name not in FUNCTIONS:
        near = suggest(name, FUNCTIONS)
        raise ExpressionError(f"unknown function `{name}`", col,
                              f"did you mean `{near}`?" if near else "functions: " + ", ".join(FUNCTIONS))
    if name in ("days_until", "days_since"):
        return _days(name, args, kwargs, col)
    if name == "glob":
        return _glob(args, kwargs, col)
    values = _bind(name, args, kwargs, col)
    if name == "segment":
        seg, scol = values["name"]
        if not isinstance(seg, str) or not seg:
            raise ExpressionError("segment() needs a segment name in quotes, e.g. segment('high_touch')", scol)
        return segment(seg, col)
    metric, mcol = values["name"]
    if not isinstance(metric, str) or not metric:
        raise ExpressionError(f"{name}() needs a metric name in quotes, e.g. {name}('logins')", mcol)
    if metrics is not None and metric not in metrics:
        raise ExpressionError(f"'{metric}' is not a declared metric", mcol,
                              declared_hint(metric, metrics, "declared metrics"))
    days, dcol = values["days"]
    if isinstance(days, bool) or not isinstance(days, int) or not 0 < days <= MAX_DAYS:
        raise ExpressionError(f"`days` of {name}() must be a whole number from 1 to {MAX_DAYS}", dcol)
    agg, acol = values["agg"]
    if agg not in AGGS:
        near = suggest(str(agg), AGGS)
        raise ExpressionError(f"`agg` of {name}() must be one of {', '.join(AGGS)}", acol,
                              near and f"did you mean `{near}`?")
    if name == "metric":
        return A.Metric(metric, days, str(agg), INTEGER if agg == "count" else NUMBER)
    return A.MetricChange(metric, days, str(agg))


def _days(name: str, args: list[Arg], kwargs: list[Keyword], col: int | None) -> A.Days:
    if len(args) != 1 or kwargs:
        raise ExpressionError(f"{name}() takes exactly one argument, a date or a datetime", col)
    expr, acol = args[0]
    if isinstance(expr, A.Literal) and expr.type == STRING:
        value = parse_iso(expr.value, DATE) or parse_iso(expr.value, DATETIME)  # type: ignore[arg-type]
        if value is None:
            raise ExpressionError(f"'{expr.value}' is not an ISO date", acol, "write it like '2024-06-30'")
        expr = A.Literal(value, DATETIME if isinstance(value, datetime) else DATE)
    if expr.type not in (DATE, DATETIME):
        raise ExpressionError(f"{name}() needs a date or a datetime, got {describe(expr.type)}", acol or col)
    return A.Days(expr, since=name == "days_since")


def _glob(args: list[Arg], kwargs: list[Keyword], col: int | None) -> A.Glob:
    if len(args) != 2 or kwargs:
        raise ExpressionError("glob() takes two arguments: a string and a pattern in quotes, "
                              "e.g. glob(goal.name, 'Adoption*')", col)
    (expr, acol), (pattern, pcol) = args
    if expr.type != STRING:
        raise ExpressionError(f"glob() needs a string, got {describe(expr.type)}", acol or col)
    if not isinstance(pattern, A.Literal) or not isinstance(pattern.value, str):
        raise ExpressionError("the pattern of glob() must be a string in quotes", pcol or col)
    if "[" in pattern.value:
        raise ExpressionError("glob() patterns support `*` and `?` only", pcol or col)
    return A.Glob(expr, pattern.value)


def _bind(name: str, args: list[Arg], kwargs: list[Keyword], col: int | None) -> dict[str, tuple[object, int | None]]:
    """Positional and keyword literal arguments matched to parameters, defaults filled in."""
    params = _PARAMS[name]
    names = [p for p, _ in params]
    if len(args) > len(params):
        raise ExpressionError(f"{name}() takes at most {len(params)} argument{'s' * (len(params) > 1)}", col)
    given: dict[str, tuple[A.Expr, int | None]] = {}
    for (param, _), arg in zip(params, args):
        given[param] = arg
    for key, kcol, value, vcol in kwargs:
        if key not in names:
            near = suggest(key, names)
            raise ExpressionError(f"{name}() has no argument `{key}`", kcol or col, near and f"did you mean `{near}`?")
        if key in given:
            raise ExpressionError(f"{name}() got `{key}` twice", kcol or col)
        given[key] = (value, vcol or kcol)
    out: dict[str, tuple[object, int | None]] = {}
    for param, default in params:
        if param not in given:
            if default is None:
                raise ExpressionError(f"{name}() needs a `{param}` argument", col)
            out[param] = (default, col)
            continue
        expr, acol = given[param]
        if not isinstance(expr, A.Literal):
            raise ExpressionError(f"the arguments of {name}() must be literals", acol or col)
        out[param] = (expr.value, acol or col)
    return out
