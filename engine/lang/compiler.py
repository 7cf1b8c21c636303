"""Compile expression text: Jinja2 tree -> typed tree, type-checked, every error with a column."""

from __future__ import annotations

import math
from dataclasses import replace

from jinja2 import nodes

from engine.datamodel import SUBJECT_TYPES
from engine.errors import ExpressionError, declared_hint, suggest
from engine.lang import ast as A
from engine.lang.calls import FUNCTIONS, check_call
from engine.lang.parse import Locator, parse
from engine.lang.types import (BOOLEAN, DATE, DATETIME, INTEGER, LIST, NONE, NUMBER, ORDERED, STRING,
                               comparable, describe, is_numeric, arith_result, parse_iso)

ENTITIES = SUBJECT_TYPES       # the names an expression reads fields of
FILTERS = ("lower", "upper", "abs", "round")
CMP_OPS = {"eq": "==", "ne": "!=", "lt": "<", "lteq": "<=", "gt": ">", "gteq": ">=", "in": "in", "notin": "not in"}
ARITH = {"Add": ("+", "add"), "Sub": ("-", "sub"), "Mul": ("*", "mul"), "Div": ("/", "div"), "Mod": ("%", "mod")}
UNSUPPORTED = {
    "FloorDiv": ("`//` is not supported", "use `/` (true division)", "floordiv"),
    "Pow": ("`**` is not supported", None, "pow"),
    "Concat": ("`~` (string concatenation) is not supported", None, "tilde"),
    "CondExpr": ("`... if ... else ...` is not supported", "use `and` / `or`", None),
    "Dict": ("dict literals are not supported", None, None),
    "Getitem": ("subscripts `[...]` are not supported", "write fields as `account.field`", None),
    "Slice": ("slices are not supported", None, None),
}


# Bounds checked when an expression compiles, so that `validate` refuses what would exhaust the evaluation:
# the SQL and Python back ends recurse once per level, and a segment is written out wherever it is used.
MAX_TEXT = 100_000              # characters of one expression
MAX_LITERAL = 10_000            # characters of a string literal, items of a list literal
MAX_DEPTH = 100                 # levels of nesting, through the segments it uses
MAX_TERMS = 10_000              # nodes once its segments are written out
INT_MIN, INT_MAX = -2**63, 2**63 - 1        # a database integer


class SegmentCycle(ExpressionError):
    """A segment refers to itself, directly or through other segments."""


def compile_expression(text: str, scope: A.Scope, *, want_bool: bool = True) -> A.Expr:
    """Parse, translate and type-check `text`; ExpressionError(message, col, hint) on any problem."""
    return compile_in(text, scope, want_bool, (), {}, {})


def compile_in(text: str, scope: A.Scope, want_bool: bool, stack: tuple[str, ...],
               segments: dict[str, A.Expr], sizes: dict[int, tuple[int, int]]) -> A.Expr:
    """compile_expression with the segments being compiled (`stack`), those already compiled, and the size of
    each compiled one (by the id of its tree: terms, depth)."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be text, not {type(text).__name__}", None)
    if len(text) > MAX_TEXT:
        raise ExpressionError(f"the expression is longer than {MAX_TEXT} characters", 1,
                              "name parts of it as segments in config.yaml, or simplify it")
    tree, tokens = parse(text)
    translator = _Translator(scope, Locator(tokens, text), stack, segments, sizes)
    try:
        expr, _ = translator.expr(tree)
        terms, depth = _size(expr, sizes)
    except RecursionError:
        raise ExpressionError("the expression is nested too deeply", 1,
                              f"nest at most {MAX_DEPTH} levels, segments included") from None
    if depth > MAX_DEPTH:
        raise ExpressionError(f"the expression is nested more than {MAX_DEPTH} levels deep"
                              + (" (its segments included)" if translator.used_segments else ""), 1,
                              "write it flatter, e.g. `not not x` is `x`")
    if terms > MAX_TERMS:
        raise ExpressionError(f"the expression has more than {MAX_TERMS} terms once its segments are written out",
                              1, "a segment that uses another one twice doubles its size at each level: "
                                 "use each segment once")
    sizes[id(expr)] = (terms, depth)
    if want_bool and expr.type != BOOLEAN:
        raise ExpressionError(f"a condition must be true or false, but this expression gives {describe(expr.type)}",
                              1, "compare it with something, e.g. `... > 0`")
    return expr


class _Translator:
    """Walks the Jinja2 tree in source order; returns (typed node, 1-based column) pairs."""

    def __init__(self, scope: A.Scope, locator: Locator, stack: tuple[str, ...], segments: dict[str, A.Expr],
                 sizes: dict[int, tuple[int, int]]):
        self.scope = scope
        self.loc = locator
        self.stack = stack
        self.segments = segments
        self.sizes = sizes
        self.used_segments = False
        self.item_cols: dict[int, list[int | None]] = {}    # id of a ListLiteral -> the column of each item

    def expr(self, node: nodes.Node) -> tuple[A.Expr, int | None]:
        """Translate one Jinja2 node."""
        kind = type(node).__name__
        if kind in ARITH:
            return self._arith(node, *ARITH[kind])
        if kind in UNSUPPORTED:
            message, hint, token = UNSUPPORTED[kind]
            col = self.loc.peek()
            first = node.left if isinstance(node, nodes.BinExpr) else node.nodes[0] if kind == "Concat" else None
            if token and first is not None:
                self.expr(first)
                col = self.loc.find(token) or col
            raise ExpressionError(message, col, hint)
        handler = getattr(self, "_" + kind, None)
        if handler is None:
            raise ExpressionError("this kind of expression is not supported", self.loc.peek())
        return handler(node)

    # -- leaves ------------------------------------------------------------------------------
    def _Const(self, node: nodes.Const) -> tuple[A.Expr, int | None]:
        value = node.value
        if isinstance(value, bool) or value is None:
            spelled = {True: ("true", "True"), False: ("false", "False"), None: ("none", "None")}[value]
            col = self.loc.find("name", *spelled)
            return A.Literal(value, BOOLEAN if value is not None else NONE), col
        if isinstance(value, int):
            col = self.loc.find("integer", value)
            if not INT_MIN <= value <= INT_MAX:
                raise ExpressionError("the integer is beyond 64 bits", col,
                                      f"integers lie between {INT_MIN} and {INT_MAX}")
            return A.Literal(value, INTEGER), col
        if isinstance(value, float):
            col = self.loc.find("float", value)
            if not math.isfinite(value):
                raise ExpressionError("the number is too large", col, "write a number below 1e308")
            return A.Literal(value, NUMBER), col
        if isinstance(value, str):
            col = self.loc.find("string", value)
            if len(value) > MAX_LITERAL:
                raise ExpressionError(f"the string is longer than {MAX_LITERAL} characters", col)
            return A.Literal(value, STRING), col
        raise ExpressionError("unsupported constant", self.loc.peek())

    def _Name(self, node: nodes.Name) -> tuple[A.Expr, int | None]:
        col = self.loc.find("name", node.name)
        if node.name == "now":
            return A.Now(), col
        if node.name == "today":
            return A.Today(), col
        if node.name in ENTITIES:
            raise ExpressionError(f"`{node.name}` needs a field, e.g. `{node.name}.name`", col)
        if node.name in FUNCTIONS:
            raise ExpressionError(f"`{node.name}` is a function: call it, e.g. `{node.name}(...)`", col)
        near = suggest(node.name, [*ENTITIES, "now", "today", *FUNCTIONS])
        raise ExpressionError(f"unknown name `{node.name}`", col, near and f"did you mean `{near}`?")

    def _Getattr(self, node: nodes.Getattr) -> tuple[A.Expr, int | None]:
        base = node.node
        if not (isinstance(base, nodes.Name) and base.name in ENTITIES):
            _, col = self.expr(base)
            raise ExpressionError(f"`.{node.attr}`: only fields of account, contact and goal can be read "
                                  "with `.`", col)
        entity = base.name
        col = self.loc.find("name", entity)
        self.loc.find("name", node.attr)
        if entity != "account" and self.scope.subject != entity:
            raise ExpressionError(f"`{entity}` fields are only available when the playbook subject is {entity} "
                                  f"(here it is {self.scope.subject})", col)
        fields = self.scope.fields.get(entity, {})
        if node.attr not in fields:
            near = None if node.attr.startswith("_") else suggest(node.attr, list(fields))
            raise ExpressionError(f"unknown field `{entity}.{node.attr}`", col, near and f"did you mean `{near}`?")
        return A.Field(entity, node.attr, fields[node.attr]), col

    def _List(self, node: nodes.List | nodes.Tuple) -> tuple[A.Expr, int | None]:
        col = self.loc.peek()
        items: list[A.Literal] = []
        cols: list[int | None] = []
        for item in node.items:
            expr, icol = self.expr(item)
            cols.append(icol)
            if not isinstance(expr, A.Literal):
                raise ExpressionError("list items must be literals", icol)
            if expr.type == NONE:
                raise ExpressionError("`none` cannot be a list item", icol, "test for emptiness with `is none`")
            if items and not comparable(items[0].type, expr.type):
                raise ExpressionError(f"list items must all have one type: {describe(items[0].type)} and "
                                      f"{describe(expr.type)} are mixed", icol)
            items.append(expr)
        if not items:
            raise ExpressionError("the list is empty", col)
        if len(items) > MAX_LITERAL:
            raise ExpressionError(f"the list has more than {MAX_LITERAL} items", col,
                                  "keep long lists of values in the data, e.g. as a field")
        types = {item.type for item in items}
        elem = NUMBER if types == {INTEGER, NUMBER} else items[0].type
        result = A.ListLiteral(tuple(items), elem)
        self.item_cols[id(result)] = cols
        return result, col

    _Tuple = _List

    # -- operators ---------------------------------------------------------------------------
    def _Neg(self, node: nodes.Neg) -> tuple[A.Expr, int | None]:
        col = self.loc.find("sub")
        operand, _ = self.expr(node.node)
        if not is_numeric(operand.type):
            raise ExpressionError(f"unary `-` needs a number, got {describe(operand.type)}", col)
        if isinstance(operand, A.Literal):
            return A.Literal(-operand.value, operand.type), col  # type: ignore[operator]
        return A.Neg(operand, operand.type), col

    def _Pos(self, node: nodes.Pos) -> tuple[A.Expr, int | None]:
        col = self.loc.find("add")
        operand, _ = self.expr(node.node)
        if not is_numeric(operand.type):
            raise ExpressionError(f"unary `+` needs a number, got {describe(operand.type)}", col)
        return operand, col

    def _arith(self, node: nodes.BinExpr, op: str, token: str) -> tuple[A.Expr, int | None]:
        left, lcol = self.expr(node.left)
        col = self.loc.find(token)
        right, _ = self.expr(node.right)
        if not (is_numeric(left.type) and is_numeric(right.type)):
            raise ExpressionError(f"`{op}` needs numbers, got {describe(left.type)} and {describe(right.type)}",
                                  col or lcol)
        return A.Arith(op, left, right, arith_result(op, left.type, right.type)), lcol

    def _Not(self, node: nodes.Not) -> tuple[A.Expr, int | None]:
        if isinstance(node.node, nodes.Test):
            test, col = self.expr(node.node)
            assert isinstance(test, A.IsNone)
            return A.IsNone(test.operand, not test.negated), col
        col = self.loc.find("name", "not")
        operand, _ = self.expr(node.node)
        if operand.type != BOOLEAN:
            raise ExpressionError(f"`not` needs true/false, got {describe(operand.type)}", col)
        return A.Not(operand), col

    def _And(self, node: nodes.And) -> tuple[A.Expr, int | None]:
        return self._logic(node, "and", A.And)

    def _Or(self, node: nodes.Or) -> tuple[A.Expr, int | None]:
        return self._logic(node, "or", A.Or)

    def _logic(self, node: nodes.BinExpr, word: str, make: type) -> tuple[A.Expr, int | None]:
        left, lcol = self.expr(node.left)
        col = self.loc.find("name", word)
        right, rcol = self.expr(node.right)
        for side, scol in ((left, lcol), (right, rcol)):
            if side.type != BOOLEAN:
                raise ExpressionError(f"`{word}` needs true/false on both sides, got {describe(side.type)}",
                                      scol or col)
        return make(left, right), lcol

    def _Test(self, node: nodes.Test) -> tuple[A.Expr, int | None]:
        operand, col = self.expr(node.node)
        self.loc.find("name", "is")
        tcol = self.loc.find("name", node.name)
        if node.name != "none":
            raise ExpressionError(f"unsupported test `is {node.name}`", tcol or col,
                                  "only `is none` and `is not none` are supported")
        if node.args or node.kwargs or node.dyn_args or node.dyn_kwargs:
            raise ExpressionError("`is none` takes no arguments", tcol or col)
        if operand.type == LIST:
            raise ExpressionError("a list is never none", col)
        return A.IsNone(operand, False), col

    def _Compare(self, node: nodes.Compare) -> tuple[A.Expr, int | None]:
        first, first_col = self.expr(node.expr)
        operands: list[A.Expr] = [first]
        cols: list[int | None] = [first_col]
        ops: list[str] = []
        for operand in node.ops:
            op = CMP_OPS[operand.op]
            if op == "not in":
                col = self.loc.find("name", "not")
                self.loc.find("name", "in")
            elif op == "in":
                col = self.loc.find("name", "in")
            else:
                col = self.loc.find(operand.op)
            right, rcol = self.expr(operand.expr)
            operands[-1], right = self._pair(op, operands[-1], right, (cols[-1], col, rcol))
            operands.append(right)
            cols.append(rcol)
            ops.append(op)
        return A.Compare(operands[0], tuple(zip(ops, operands[1:]))), first_col

    def _pair(self, op: str, left: A.Expr, right: A.Expr,
              cols: tuple[int | None, int | None, int | None]) -> tuple[A.Expr, A.Expr]:
        lcol, col, rcol = cols
        if NONE in (left.type, right.type):
            raise ExpressionError(f"`{op}` with `none` is never true or false", col,
                                  "test for emptiness with `is none` or `is not none`")
        if left.type == LIST:
            raise ExpressionError("a list can only be on the right of `in`", lcol)
        if op in ("in", "not in"):
            if isinstance(left, A.Field) and isinstance(right, A.ListLiteral):
                self._declared(left, right.items, self.item_cols.get(id(right)) or [rcol] * len(right.items))
            return self._membership(op, left, right, cols)
        if op in ("==", "!="):
            if isinstance(left, A.Field):
                self._declared(left, (right,), [rcol])
            if isinstance(right, A.Field):
                self._declared(right, (left,), [lcol])
        left = _coerce(left, right.type, lcol)
        right = _coerce(right, left.type, rcol)
        if {left.type, right.type} == {DATE, DATETIME}:
            raise ExpressionError(f"cannot compare a date with a datetime using `{op}`", col,
                                  "compare dates with dates, e.g. use days_since()")
        if not comparable(left.type, right.type):
            raise ExpressionError(f"cannot compare {describe(left.type)} with {describe(right.type)}", col)
        if op not in ("==", "!=") and left.type not in ORDERED:
            raise ExpressionError(f"`{op}` cannot order booleans", col, "use `==` or `!=`")
        return left, right

    def _membership(self, op: str, left: A.Expr, right: A.Expr,
                    cols: tuple[int | None, int | None, int | None]) -> tuple[A.Expr, A.Expr]:
        lcol, col, rcol = cols
        if isinstance(right, A.ListLiteral):
            left = _coerce(left, right.elem_type, lcol)
            if left.type in (DATE, DATETIME) and right.elem_type == STRING:
                right = A.ListLiteral(tuple(_coerce(item, left.type, rcol) for item in right.items),  # type: ignore[misc]
                                      left.type)
            if not comparable(left.type, right.elem_type):
                raise ExpressionError(f"cannot look for {describe(left.type)} in a list of "
                                      f"{describe(right.elem_type)} items", col)
            return left, right
        if right.type == STRING:
            if left.type != STRING:
                raise ExpressionError(f"`{op}` with a string on the right needs a string on the left, got "
                                      f"{describe(left.type)}", col)
            return left, right
        raise ExpressionError(f"`{op}` needs a list literal or a string on its right, got {describe(right.type)}",
                              rcol or col)

    def _declared(self, field: A.Field, literals: tuple[A.Expr, ...], cols: list[int | None]) -> None:
        """A string literal compared with a field whose values are declared must be one of them (§17)."""
        allowed = self.scope.values.get(field.entity, {}).get(field.name)
        if allowed is None:
            return
        for literal, col in zip(literals, cols):
            if isinstance(literal, A.Literal) and isinstance(literal.value, str) and literal.value not in allowed:
                raise ExpressionError(f"'{literal.value}' is not a declared value of {field.entity}.{field.name}",
                                      col, declared_hint(literal.value, allowed, "declared values"))

    def _Filter(self, node: nodes.Filter) -> tuple[A.Expr, int | None]:
        if node.node is None:
            raise ExpressionError("filter blocks are not supported", self.loc.peek())
        operand, col = self.expr(node.node)
        self.loc.find("pipe")
        fcol = self.loc.find("name", node.name) or col
        if node.name not in FILTERS:
            near = suggest(node.name, FILTERS)
            raise ExpressionError(f"unsupported filter `{node.name}`", fcol,
                                  f"did you mean `{near}`?" if near else "supported filters: " + ", ".join(FILTERS))
        args = [self.expr(arg) for arg in node.args]
        kwargs = self._keywords(node)
        if node.dyn_args or node.dyn_kwargs:
            raise ExpressionError("`*` and `**` arguments are not supported", fcol)
        precision = 0
        if node.name == "round":
            precision = _round_precision(args, kwargs, fcol)
        elif args or kwargs:
            raise ExpressionError(f"`{node.name}` takes no arguments", fcol)
        if node.name in ("lower", "upper"):
            if operand.type != STRING:
                raise ExpressionError(f"`{node.name}` needs a string, got {describe(operand.type)}", fcol)
            return A.Filter(node.name, operand, STRING), col
        if not is_numeric(operand.type):
            raise ExpressionError(f"`{node.name}` needs a number, got {describe(operand.type)}", fcol)
        result = operand.type if node.name == "abs" else NUMBER
        return A.Filter(node.name, operand, result, precision), col

    def _Call(self, node: nodes.Call) -> tuple[A.Expr, int | None]:
        if not isinstance(node.node, nodes.Name):
            raise ExpressionError("only metric(), metric_change(), days_until(), days_since(), glob() and segment() can be "
                                  "called", self.loc.peek())
        col = self.loc.find("name", node.node.name)
        if node.dyn_args or node.dyn_kwargs:
            raise ExpressionError("`*` and `**` arguments are not supported", col)
        args = [self.expr(arg) for arg in node.args]
        kwargs = self._keywords(node)
        return check_call(node.node.name, args, kwargs, col, self._segment, self.scope.metrics), col

    def _keywords(self, node: nodes.Call | nodes.Filter) -> list[tuple[str, int | None, A.Expr, int | None]]:
        out = []
        for kw in node.kwargs:
            key_col = self.loc.find("name", kw.key)
            value, col = self.expr(kw.value)
            out.append((kw.key, key_col, value, col))
        return out

    def _segment(self, name: str, col: int | None) -> A.Segment:
        """Compile the named segment in account scope (once per top-level compile)."""
        if name not in self.scope.segments:
            near = suggest(name, list(self.scope.segments))
            raise ExpressionError(f"unknown segment `{name}`", col, near and f"did you mean `{near}`?")
        if name in self.stack:
            cycle = " -> ".join([*self.stack[self.stack.index(name):], name])
            raise SegmentCycle(f"segment `{name}` refers to itself: {cycle}", col)
        self.used_segments = True
        if name not in self.segments:
            scope = replace(self.scope, subject="account", fields={"account": self.scope.fields.get("account", {})})
            try:
                self.segments[name] = compile_in(self.scope.segments[name], scope, True,
                                                 (*self.stack, name), self.segments, self.sizes)
            except SegmentCycle as exc:
                raise SegmentCycle(exc.message, col, exc.hint) from None
            except ExpressionError as exc:        # through a chain of segments: in segment `a` → `b`: …
                inner = exc.message.removeprefix("in segment ")
                joint = " → " if inner != exc.message else ": "
                raise ExpressionError(f"in segment `{name}`{joint}{inner}", col, exc.hint) from None
        return A.Segment(name, self.segments[name])


def _size(expr: A.Expr, sizes: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(terms, depth) of a typed tree with its segments written out; a segment's size is the one recorded when it
    compiled, so that a chain of segments is measured without writing it out."""
    if isinstance(expr, A.Segment):
        terms, depth = sizes.get(id(expr.expr)) or _size(expr.expr, sizes)
        return terms + 1, depth + 1
    terms, depth = 1, 0
    for child in A.children(expr):
        t, d = _size(child, sizes)
        terms, depth = terms + t, max(depth, d)
    return terms, depth + 1


def _coerce(expr: A.Expr, target: str, col: int | None) -> A.Expr:
    """A string literal compared with a date/datetime becomes that date/datetime (ISO only)."""
    if not (isinstance(expr, A.Literal) and expr.type == STRING and target in (DATE, DATETIME)):
        return expr
    value = parse_iso(expr.value, target)  # type: ignore[arg-type]
    if value is None:
        example = "'2024-06-30'" if target == DATE else "'2024-06-30T09:00:00'"
        raise ExpressionError(f"'{expr.value}' is not an ISO {target}", col, f"write it like {example}")
    return A.Literal(value, target)


def _round_precision(args: list, kwargs: list, col: int | None) -> int:
    """The precision argument of `round` (a small integer literal, default 0)."""
    if len(args) + len(kwargs) > 1 or any(kw[0] != "precision" for kw in kwargs):
        raise ExpressionError("`round` takes only a precision, e.g. `|round(2)`", col)
    if not args and not kwargs:
        return 0
    expr, acol = args[0] if args else kwargs[0][2:]
    if not (isinstance(expr, A.Literal) and expr.type == INTEGER and -15 <= expr.value <= 15):  # type: ignore[operator]
        raise ExpressionError("the precision of `round` must be an integer literal between -15 and 15", acol or col)
    return int(expr.value)  # type: ignore[call-overload]
