"""Canonical source text of a typed expression (for `explain`) and the metric windows it needs.

The text parses back to the same tree: parentheses follow Jinja2's precedence, where `|filter` and
`is none` bind tighter than arithmetic but looser than unary minus (`-x|abs` is `(-x)|abs`).
"""

from __future__ import annotations

from datetime import date, datetime

from engine.lang import ast as A

# Binding strength of each kind of node, weakest first.
OR, AND, NOT, CMP, ADD, MUL, POSTFIX, UNARY, ATOM = range(1, 10)
_ARITH_LEVEL = {"+": ADD, "-": ADD, "*": MUL, "/": MUL, "%": MUL}


def expr_text(expr: A.Expr) -> str:
    """Canonical source-like rendering of an expression."""
    return _render(expr)[0]


def metric_calls(expr: A.Expr) -> set[A.MetricRef]:
    """Every metric window the expression needs, segments expanded."""
    refs: set[A.MetricRef] = set()
    for node in A.walk(expr):
        refs |= A.metric_refs(node)
    return refs


def _wrap(expr: A.Expr, need: int) -> str:
    text, level = _render(expr)
    return f"({text})" if level < need else text


def _render(expr: A.Expr) -> tuple[str, int]:
    """(text, binding level) of a node."""
    if isinstance(expr, A.Literal):
        return _literal(expr.value), UNARY if _negative(expr.value) else ATOM
    if isinstance(expr, A.ListLiteral):
        return "[" + ", ".join(_literal(item.value) for item in expr.items) + "]", ATOM
    if isinstance(expr, A.Field):
        return f"{expr.entity}.{expr.name}", ATOM
    if isinstance(expr, A.Now):
        return "now", ATOM
    if isinstance(expr, A.Today):
        return "today", ATOM
    if isinstance(expr, A.Compare):
        # A test swallows a following name as its argument (`x is none in y`), so tests get parentheses.
        operand = lambda e: f"({_render(e)[0]})" if isinstance(e, A.IsNone) else _wrap(e, ADD)  # noqa: E731
        parts = [operand(expr.left)]
        for op, right in expr.ops:
            parts += [op, operand(right)]
        return " ".join(parts), CMP
    if isinstance(expr, A.And):
        return f"{_wrap(expr.left, AND)} and {_wrap(expr.right, NOT)}", AND
    if isinstance(expr, A.Or):
        return f"{_wrap(expr.left, OR)} or {_wrap(expr.right, AND)}", OR
    if isinstance(expr, A.Not):
        return f"not {_wrap(expr.operand, NOT)}", NOT
    if isinstance(expr, A.IsNone):
        # Jinja2 refuses `x is none is none`: a test on a test needs parentheses.
        need = ATOM if isinstance(expr.operand, A.IsNone) else POSTFIX
        return f"{_wrap(expr.operand, need)} is {'not ' if expr.negated else ''}none", POSTFIX
    if isinstance(expr, A.Arith):
        level = _ARITH_LEVEL[expr.op]
        return f"{_wrap(expr.left, level)} {expr.op} {_wrap(expr.right, level + 1)}", level
    if isinstance(expr, A.Neg):
        return f"-{_wrap(expr.operand, ATOM)}", UNARY
    if isinstance(expr, A.Filter):
        args = f"({expr.precision})" if expr.name == "round" and expr.precision else ""
        return f"{_wrap(expr.operand, POSTFIX)}|{expr.name}{args}", POSTFIX
    if isinstance(expr, (A.Metric, A.MetricChange)):
        name = "metric" if isinstance(expr, A.Metric) else "metric_change"
        return f"{name}({_literal(expr.name)}, {expr.days}, {_literal(expr.agg)})", ATOM
    if isinstance(expr, A.Days):
        return f"{'days_since' if expr.since else 'days_until'}({_render(expr.operand)[0]})", ATOM
    if isinstance(expr, A.Segment):
        return f"segment({_literal(expr.name)})", ATOM
    if isinstance(expr, A.Glob):
        return f"glob({_render(expr.operand)[0]}, {_literal(expr.pattern)})", ATOM
    raise TypeError(f"not an expression node: {expr!r}")


def _negative(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and str(value).startswith("-")


def _literal(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return repr(value.isoformat())
    if isinstance(value, date):
        return repr(value.isoformat())
    return repr(value)
