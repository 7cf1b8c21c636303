"""The bounded Jinja2 sandbox templates compile in: Jinja's ImmutableSandboxedEnvironment, plus limits on what
one render may build, so that no template can exhaust memory, time or the stack of the process that renders it.

Jinja's sandbox refuses unsafe attributes and calls; it does not bound work. Here every operation that can grow
a value or repeat work is checked before it runs:
- arithmetic (`*`, `**`, `+`, `%`): integers stay within 64 bits, repeated or joined strings and lists within
  MAX_OUTPUT characters / MAX_ITEMS items, `%` format widths within MAX_OUTPUT;
- filters and string methods that widen text (`indent`, `center`, `format`, `join`, `replace`, `ljust`, …) are
  checked against what they would produce;
- what a macro, a `{% set %}` block, a `~` concatenation or the whole template writes, through bounded output
  buffers (a code generator that makes them);
- nested macro calls (MAX_CALL_DEPTH), and the time of one render (MAX_SECONDS): checked at each call,
  operator, loop iteration and output chunk.
A limit reached raises LimitExceeded (a SecurityError); templating.render reports it as that action's problem."""

from __future__ import annotations

import re
import string
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from collections.abc import Iterable, Iterator
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import pass_environment, pass_eval_context

MAX_OUTPUT = 256 * 1024         # characters a template, a macro or a set block may produce; of any one string
MAX_ITEMS = 100_000             # items of a list or tuple a template makes (as `range` allows)
MAX_WIDTH = 10_000              # a width or precision in a format, a padding or an indentation
MAX_INT_BITS = 64               # integers a template computes
MAX_CALL_DEPTH = 32             # nested macro calls (and recursive loops)
MAX_SECONDS = 2.0               # one render
LOOP_GUARD = "loop_guard"       # the filter every `{% for %}` iterates through (added when a template is parsed)


class LimitExceeded(SecurityError):
    """A template went beyond one of the render limits."""


class TimeLimitExceeded(LimitExceeded):
    """A render took more than MAX_SECONDS."""


@dataclass
class _Budget:
    deadline: float
    depth: int = 0


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


@contextmanager
def render_budget(seconds: float = MAX_SECONDS) -> Iterator[None]:
    """The time and call depth one render may use (renders in other threads have their own)."""
    token = _BUDGET.set(_Budget(time.monotonic() + seconds))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def tick() -> None:
    """Raise LimitExceeded when the current render has run out of time."""
    budget = _BUDGET.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise TimeLimitExceeded(f"the template took more than {MAX_SECONDS:g} s to render")


# ---- sizes -----------------------------------------------------------------------------------------
def check_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() >= MAX_INT_BITS:
        raise LimitExceeded(f"an integer beyond {MAX_INT_BITS} bits")
    return value


def check_text(size: int, what: str = "a text") -> None:
    if size > MAX_OUTPUT:
        raise LimitExceeded(f"{what} longer than {MAX_OUTPUT} characters")


def check_items(count: int) -> None:
    if count > MAX_ITEMS:
        raise LimitExceeded(f"a list of more than {MAX_ITEMS} items")


def check_width(width: Any, what: str = "a width") -> None:
    if isinstance(width, int) and not isinstance(width, bool) and width > MAX_WIDTH:
        raise LimitExceeded(f"{what} of {width} (at most {MAX_WIDTH})")


_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def check_percent_format(fmt: str) -> None:
    """`'%10d' % x` and `|format`: widths and precisions written out, never taken from the arguments (`%*d`)."""
    for match in _PERCENT.finditer(fmt):
        for part in match.groups():
            if part == "*":
                raise LimitExceeded("a `*` width in a format")
            if part is not None:
                check_width(int(part))


def check_brace_format(fmt: str) -> None:
    """`'{:>10}'.format(x)`: widths and precisions written out, never nested fields (`{:{w}}`)."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return                      # str.format raises the same error itself
    for _, _, spec, _ in fields:
        if spec and "{" in spec:
            raise LimitExceeded("a nested field in a format")
        for digits in re.findall(r"\d+", spec or ""):
            check_width(int(digits))


def _length(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


def weight(value: Any, cap: int = MAX_OUTPUT) -> int:
    """How much a value holds: the characters of a text, the items of a list, tuple or dict and what they hold,
    counted up to just beyond `cap` (a list holding the same big list many times weighs what it prints as)."""
    total, stack = 0, [value]
    while stack and total <= cap:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item)
        elif isinstance(item, (list, tuple)):
            total += len(item)
            stack.extend(item[:max(cap - total + 1, 0)])
        elif isinstance(item, dict):
            total += len(item)
            stack.extend(list(item.items())[:max(cap - total + 1, 0)])
    return total


def check_weight(value: Any) -> Any:
    if weight(value) > MAX_OUTPUT:
        raise LimitExceeded(f"a value holding more than {MAX_OUTPUT} characters or items")
    return value


def binop(op: str, left: Any, right: Any) -> None:
    """Refuse an arithmetic operation whose result would be too large, before computing it."""
    tick()
    if op == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        if right * (abs(left).bit_length() - 1) >= MAX_INT_BITS:
            raise LimitExceeded(f"an integer beyond {MAX_INT_BITS} bits")
    elif op == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int) and n > 0:
                if isinstance(seq, (list, tuple)):
                    check_items(len(seq) * n)
                if weight(seq) * n > MAX_OUTPUT:
                    raise LimitExceeded(f"a value holding more than {MAX_OUTPUT} characters or items")
    elif op == "+" and isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
        if weight(left) + weight(right) > MAX_OUTPUT:
            raise LimitExceeded(f"a value holding more than {MAX_OUTPUT} characters or items")
    elif op == "%" and isinstance(left, str):
        check_percent_format(left)


def _grows(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Check a call of a method of a string that can widen it."""
    owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
    wrapped = getattr(obj, "__wrapped__", None)      # the sandbox's own wrapper of str.format / format_map
    if wrapped is not None and isinstance(getattr(wrapped, "__self__", None), str):
        owner, name = wrapped.__self__, wrapped.__name__
    if not isinstance(owner, (str, bytes)):
        return
    if name in ("format", "format_map"):
        check_brace_format(owner)
    elif name in ("ljust", "rjust", "center", "zfill") and args:
        check_width(args[0])
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            check_text(len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * size)
    elif name == "replace" and len(args) >= 2:
        check_text(_replaced(owner, args[0], args[1], args[2] if len(args) > 2 else -1))
    elif name == "join" and args:
        items = list(args[0]) if not isinstance(args[0], (str, bytes)) else args[0]
        check_items(len(items))
        check_text(sum(_length(i) for i in items) + len(owner) * max(len(items) - 1, 0))
    elif name == "translate" and args and isinstance(args[0], dict):
        widest = max((_length(v) for v in args[0].values()), default=1)
        check_text(len(owner) * max(widest, 1))


def _replaced(text: Any, old: Any, new: Any, count: Any = -1) -> int:
    """The length of `text.replace(old, new, count)`, without building it."""
    if not isinstance(old, type(text)) or not isinstance(new, type(text)):
        return 0
    n = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    return len(text) + n * (len(new) - len(old))


# ---- bounded filters ---------------------------------------------------------------------------
def bounded_filters(filters: dict[str, Any]) -> dict[str, Any]:
    """Jinja's filters that can widen text or make many items, each preceded by the check of what it builds."""
    indent, center, fmt, join = filters["indent"], filters["center"], filters["format"], filters["join"]
    replace, wordwrap, batch, slice_, sum_ = (filters["replace"], filters["wordwrap"], filters["batch"],
                                              filters["slice"], filters["sum"])

    def _indent(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> Any:
        text = str(s)
        step = width if isinstance(width, int) else _length(width)
        check_width(step, "an indentation")
        check_text(len(text) + (text.count("\n") + 1) * step)
        return indent(s, width, first, blank)

    def _center(value: Any, width: int = 80) -> Any:
        check_width(width)
        return center(value, width)

    def _format(value: Any, *args: Any, **kwargs: Any) -> Any:
        check_percent_format(str(value))
        return fmt(value, *args, **kwargs)

    @pass_eval_context
    def _join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        items = list(value)
        check_items(len(items))
        check_text(sum(_length(i) if isinstance(i, str) else 20 for i in items) + _length(d) * max(len(items) - 1, 0))
        return join(eval_ctx, items, d, attribute)

    @pass_eval_context
    def _replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: Any = None) -> Any:
        check_text(_replaced(str(s), str(old), str(new), -1 if count is None else count))
        return replace(eval_ctx, s, old, new, count)

    @pass_environment
    def _wordwrap(environment: Any, s: str, width: int = 79, break_long_words: bool = True,
                  wrapstring: str | None = None, break_on_hyphens: bool = True) -> str:
        if wrapstring:
            lines = len(s) // max(int(width), 1) + s.count("\n") + 1
            check_text(len(s) + lines * len(wrapstring))
        return wordwrap(environment, s, width, break_long_words, wrapstring, break_on_hyphens)

    def _batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
        check_width(linecount, "a batch size")
        return batch(value, linecount, fill_with)

    def _slice(value: Any, slices: int, fill_with: Any = None) -> Any:
        check_width(slices, "a number of slices")
        return slice_(value, slices, fill_with)

    @pass_environment
    def _sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
        if not isinstance(start, (int, float)):
            raise LimitExceeded("`sum` adds numbers")
        return sum_(environment, iterable, attribute, start)

    return {"indent": _indent, "center": _center, "format": _format, "join": _join, "replace": _replace,
            "wordwrap": _wordwrap, "batch": _batch, "slice": _slice, "sum": _sum}


def loop_guard(iterable: Any) -> Iterator[Any]:
    """What `{% for %}` iterates through: the same items, with the render's time checked as it goes."""
    for n, item in enumerate(iterable):
        if not n & 63:
            tick()
        yield item


# ---- the environment ---------------------------------------------------------------------------
class _Output(list):
    """A render buffer (of a macro, a set block, a loop's body) that refuses to grow beyond MAX_OUTPUT."""

    __slots__ = ("size",)

    def __init__(self) -> None:
        super().__init__()
        self.size = 0

    def append(self, item: Any) -> None:
        self.size += _length(item)
        if self.size > MAX_OUTPUT:
            raise LimitExceeded(f"template output longer than {MAX_OUTPUT} characters")
        super().append(item)

    def extend(self, items: Iterable[Any]) -> None:
        for item in items:
            self.append(item)


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator with bounded buffers and `~` concatenations."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.output_buffer()")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self.write("environment.check_weight(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self.write("environment.check_weight(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":                      # an assignment's targets, not a value
            return super().visit_Tuple(node, frame)
        self.write("environment.check_weight(")
        super().visit_Tuple(node, frame)
        self.write(")")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"environment.bounded_join({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment with the limits of this module."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "-", "%", "//"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters.update(bounded_filters(self.filters))
        self.filters[LOOP_GUARD] = loop_guard

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """Parse, then make every `{% for %}` iterate through the loop guard."""
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, LOOP_GUARD, [], [], None, None, lineno=loop.lineno)
        return tree

    check_weight = staticmethod(check_weight)

    @staticmethod
    def output_buffer() -> _Output:
        return _Output()

    @staticmethod
    def bounded_join(join: Any, items: tuple[Any, ...]) -> Any:
        check_text(sum(_length(i) for i in items))
        return join(items)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        binop(operator, left, right)
        return check_int(self.binop_table[operator](left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's form
        tick()
        if not isinstance(__obj, (Macro, LoopContext)):
            _grows(__obj, args, kwargs)
            return super().call(__context, __obj, *args, **kwargs)
        budget = _BUDGET.get()
        if budget is None:                          # outside render(): Python's own recursion limit applies
            return super().call(__context, __obj, *args, **kwargs)
        if budget.depth >= MAX_CALL_DEPTH:
            raise LimitExceeded(f"macros nested more than {MAX_CALL_DEPTH} calls deep")
        budget.depth += 1
        try:
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            budget.depth -= 1
        check_text(_length(result), "a macro's output")
        return result


# ---- what validation can see -------------------------------------------------------------------
_WIDTH_ARGS = {"indent": "width", "center": "width", "batch": "linecount", "slice": "slices"}
_FOLDED = {nodes.Add: "+", nodes.Sub: "-", nodes.Mul: "*", nodes.Pow: "**", nodes.Mod: "%", nodes.FloorDiv: "//"}


class _NotConstant(Exception):
    pass


def _fold(node: nodes.Node) -> Any:
    """The value of a constant expression, computed with the render's checks (LimitExceeded when too large)."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, (nodes.List, nodes.Tuple)):
        return check_weight([_fold(n) for n in node.items])
    if isinstance(node, nodes.Neg):
        return -_fold(node.node)
    op = _FOLDED.get(type(node))
    if op is None:
        raise _NotConstant
    left, right = _fold(node.left), _fold(node.right)       # type: ignore[attr-defined]
    binop(op, left, right)
    try:
        return check_int(BoundedSandbox.default_binop_table[op](left, right))
    except Exception:                                       # noqa: BLE001 - e.g. 1 // 0: the render says so
        raise _NotConstant from None


def static_limit(ast: nodes.Template) -> tuple[str, int] | None:
    """The first limit a template would exceed whatever its data (message, line), or None: an integer literal
    beyond 64 bits, a constant expression too large to compute (`7 ** 99999999`, `[1] * 10**9`), a literal width
    too large (`|indent(999999999)`, `'%999999999d'`), a macro that calls itself."""
    for node in ast.find_all((nodes.Const, nodes.BinExpr, nodes.Filter, nodes.Call)):
        try:
            if isinstance(node, nodes.Const):
                check_int(node.value)
                if isinstance(node.value, str):
                    check_text(len(node.value), "a string literal")
            elif isinstance(node, nodes.BinExpr):
                try:
                    _fold(node)
                except _NotConstant:
                    pass
                if isinstance(node, nodes.Mod) and isinstance(node.left, nodes.Const) \
                        and isinstance(node.left.value, str):
                    check_percent_format(node.left.value)
            elif isinstance(node, nodes.Filter):
                _static_filter(node)
            elif isinstance(node.node, nodes.Getattr) and node.node.attr in ("format", "format_map") \
                    and isinstance(node.node.node, nodes.Const) and isinstance(node.node.node.value, str):
                check_brace_format(node.node.node.value)
        except LimitExceeded as exc:
            return f"the template exceeds a limit whatever its data: {exc}", node.lineno
    return _recursive_macro(ast)


def _static_filter(node: nodes.Filter) -> None:
    if node.name == "format" and isinstance(node.node, nodes.Const) and isinstance(node.node.value, str):
        check_percent_format(node.node.value)
    key = _WIDTH_ARGS.get(node.name)
    if key is None:
        return
    args = [a for a in node.args[:1]] + [k.value for k in node.kwargs if k.key == key]
    for arg in args:
        if isinstance(arg, nodes.Const):
            check_width(arg.value)


def _recursive_macro(ast: nodes.Template) -> tuple[str, int] | None:
    """A macro of this template that calls itself, directly or through its other macros."""
    macros = {m.name: m for m in ast.find_all(nodes.Macro)}
    calls = {name: {c.node.name for c in m.find_all(nodes.Call)
                    if isinstance(c.node, nodes.Name) and c.node.name in macros} for name, m in macros.items()}
    for name, macro in macros.items():
        seen, todo = set(), list(calls[name])
        while todo:
            callee = todo.pop()
            if callee == name:
                return (f"macro `{name}` calls itself: templates may not recurse (write the levels out, "
                        f"or prepare the data as a field)"), macro.lineno
            if callee not in seen:
                seen.add(callee)
                todo.extend(calls[callee])
    return None
