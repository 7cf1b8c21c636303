"""The typed expression tree: frozen nodes that carry their result type, plus Scope and MetricRef.

Every node has a ``type`` (one of the names in ``engine.lang.types``). Nodes hold no source
positions: positions only matter while compiling, and errors are raised then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Union


@dataclass(frozen=True)
class Scope:
    """What an expression may refer to: the subject kind, the fields of each entity, the segments; and what the
    configuration declares (§17): the values of string fields (entity -> field -> values; a string literal
    compared with such a field must be one of them) and the usage metrics (None: any name)."""

    subject: str
    fields: dict[str, dict[str, str]]
    segments: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    metrics: tuple[str, ...] | None = None


@dataclass(frozen=True)
class MetricRef:
    """One aggregate window over an account's usage rows of a metric.

    The window is the ``days`` days ending ``offset_days`` days before today
    (today-offset-days+1 … today-offset).
    """

    name: str
    days: int
    agg: str
    offset_days: int = 0


@dataclass(frozen=True)
class Literal:
    """A constant: int, float, str, bool, None, or a date/datetime parsed from an ISO string."""

    value: object
    type: str


@dataclass(frozen=True)
class ListLiteral:
    """A list (or tuple) of literals of one type, only used on the right of `in`."""

    items: tuple[Literal, ...]
    elem_type: str
    type: str = "list"


@dataclass(frozen=True)
class Field:
    """`account.arr`, `contact.role`, `goal.current`."""

    entity: str
    name: str
    type: str


@dataclass(frozen=True)
class Now:
    """The evaluation time (naive UTC)."""

    type: str = "datetime"


@dataclass(frozen=True)
class Today:
    """The date of `now` in the configured time zone."""

    type: str = "date"


@dataclass(frozen=True)
class Compare:
    """A (possibly chained) comparison; `ops` pairs an operator (== != < <= > >= in, not in) with its right operand."""

    left: Expr
    ops: tuple[tuple[str, Expr], ...]
    type: str = "boolean"


@dataclass(frozen=True)
class And:
    """Three-valued conjunction."""

    left: Expr
    right: Expr
    type: str = "boolean"


@dataclass(frozen=True)
class Or:
    """Three-valued disjunction."""

    left: Expr
    right: Expr
    type: str = "boolean"


@dataclass(frozen=True)
class Not:
    """Three-valued negation."""

    operand: Expr
    type: str = "boolean"


@dataclass(frozen=True)
class IsNone:
    """`x is none` / `x is not none`: never empty itself."""

    operand: Expr
    negated: bool
    type: str = "boolean"


@dataclass(frozen=True)
class Arith:
    """Binary arithmetic on numbers: + - * / %."""

    op: str
    left: Expr
    right: Expr
    type: str


@dataclass(frozen=True)
class Neg:
    """Unary minus."""

    operand: Expr
    type: str


@dataclass(frozen=True)
class Filter:
    """`x|lower`, `x|upper`, `x|abs`, `x|round(n)`; `precision` is only used by round."""

    name: str
    operand: Expr
    type: str
    precision: int = 0


@dataclass(frozen=True)
class Metric:
    """`metric(name, days, agg)`."""

    name: str
    days: int
    agg: str
    type: str = "number"


@dataclass(frozen=True)
class MetricChange:
    """`metric_change(name, days, agg)`: (current - previous) / previous."""

    name: str
    days: int
    agg: str
    type: str = "number"


@dataclass(frozen=True)
class Days:
    """`days_until(d)` (since=False) or `days_since(d)` (since=True)."""

    operand: Expr
    since: bool
    type: str = "integer"


@dataclass(frozen=True)
class Glob:
    """`glob(s, 'Adoption*')`: the string matches a shell pattern (`*` any run, `?` one character), case-sensitive."""

    operand: Expr
    pattern: str
    type: str = "boolean"


@dataclass(frozen=True)
class Segment:
    """`segment(name)` with the named expression compiled in account scope."""

    name: str
    expr: Expr
    type: str = "boolean"


Expr = Union[Literal, ListLiteral, Field, Now, Today, Compare, And, Or, Not, IsNone, Arith, Neg, Filter,
             Metric, MetricChange, Days, Glob, Segment]

CALLS = (Metric, MetricChange, Days, Glob, Segment)


def children(expr: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of a node, in source order (segments included)."""
    if isinstance(expr, ListLiteral):
        return expr.items
    if isinstance(expr, Compare):
        return (expr.left, *(right for _, right in expr.ops))
    if isinstance(expr, (And, Or, Arith)):
        return (expr.left, expr.right)
    if isinstance(expr, (Not, IsNone, Neg, Filter, Days, Glob)):
        return (expr.operand,)
    if isinstance(expr, Segment):
        return (expr.expr,)
    return ()


def walk(expr: Expr) -> Iterator[Expr]:
    """Every node of the tree, parents before children."""
    yield expr
    for child in children(expr):
        yield from walk(child)


def metric_refs(expr: Expr) -> set[MetricRef]:
    """The metric windows a node needs itself (not its children)."""
    if isinstance(expr, Metric):
        return {MetricRef(expr.name, expr.days, expr.agg, 0)}
    if isinstance(expr, MetricChange):
        return {MetricRef(expr.name, expr.days, expr.agg, 0), MetricRef(expr.name, expr.days, expr.agg, expr.days)}
    return set()
