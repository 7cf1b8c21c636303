"""The sandboxed Jinja2 environment for action templates (§9): compiled and checked at load, bounded at render.

Everything a template uses is checked when it compiles (§16): its names, the fields it reads of `account`,
`contact`, `goal` and `playbook`, its filters and tests, the functions it calls and the templates it includes,
so that a template `validate` accepts fails at render time only for what the data holds. `metric()` and
`metric_change()` take literal arguments, checked as in expressions (§5), so that the windows a template reads
are known before any subject is planned (`Templates.collecting`)."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import (FileSystemLoader, StrictUndefined, TemplateError, TemplateNotFound, TemplateSyntaxError,
                    UndefinedError, meta, nodes)
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError, safe_range

from engine.datamodel import CORE_FIELDS, ENTITY_OF
from engine.errors import ExpressionError, suggest
from engine.lang import ast as A
from engine.lang.calls import check_call
from engine.lang.python import PyEnv, evaluate, python_metric
from engine.lang.types import INTEGER, NUMBER, STRING
from engine.locales import FILTERS, SIGNATURES, FilterArgumentError, check_filter, finalize
from engine.sandbox import (MAX_OUTPUT, BoundedSandbox, LimitExceeded, TimeLimitExceeded, render_budget, static_limit,
                            tick)
from engine.textfile import not_utf8

CONTEXT_NAMES = {
    "account": {"account", "playbook", "now", "today", "unsubscribe_url"},
    "contact": {"account", "contact", "playbook", "now", "today", "unsubscribe_url"},
    "goal": {"account", "goal", "playbook", "now", "today", "unsubscribe_url"},
    "digest": {"items", "groups", "recipient", "period"},        # a digest_template (engine/digests.py)
}
HELPERS = {"days_until", "days_since", "range", "metric", "metric_change"}   # what a template may call
METRIC_FUNCTIONS = ("metric", "metric_change")
PLAYBOOK_FIELDS = ("id", "name", "description")             # `playbook.…`: what templates see of the playbook
CORE_TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    **{stype: tuple(CORE_FIELDS[entity]) for stype, entity in ENTITY_OF.items()}, "playbook": PLAYBOOK_FIELDS}


class TemplateProblem(Exception):
    """A template failed to compile or check; `line` is 1-based inside the template source."""

    def __init__(self, message: str, line: int | None = None, file: str | None = None):
        self.message, self.line, self.file = message, line, file
        super().__init__(message)


class RenderTimeout(TemplateProblem):
    """A render ran out of time: the same template would for the next subjects too."""


def plain_name_problem(name: str, what: str = "template") -> str | None:
    """Why the NAME of a set of template files (`template: NAME`, `digest_template: NAME`) is not a plain name
    (no folder, `..`, absolute path, drive or glob character), or None when it is."""
    if name and not name.startswith(".") and not any(c in name for c in "/\\:*?[]\0"):
        return None
    return f"{what} `{name}` is not a plain name: templates are read only from the templates folder"


def outside_problem(directory: Path | None, name: str) -> str | None:
    """Why a template name does not name a file inside the templates folder, or None when it does (or names
    nothing): a name is relative to the folder, without `..`, and no link in the folder may lead out of it."""
    if directory is None:
        return None
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(parts[0]) >= 2 and parts[0][1] == ":"):
        return f"template `{name}` is an absolute path: templates are read only from the templates folder"
    if any(p in ("", ".", "..") for p in parts):
        return f"template `{name}` leads outside the templates folder: name a file inside it, without `..`"
    path = directory / name
    if path.exists() and not path.resolve().is_relative_to(directory.resolve()):
        return f"template `{name}` is a link to a file outside the templates folder: copy the file into the folder"
    return None


class FolderLoader(FileSystemLoader):
    """Jinja's file loader that never reads outside its folder (no `..`, no absolute name, no link leading out),
    for what templates include, extend or import at render time."""

    def __init__(self, directory: Path):
        super().__init__(str(directory))
        self.directory = directory

    def get_source(self, environment: Any, template: str) -> Any:
        if outside_problem(self.directory, template):
            raise TemplateNotFound(template)
        return super().get_source(environment, template)


def make_environment(templates_dir: Path | None, *, html: bool = False, slack: bool = False) -> BoundedSandbox:
    """A sandboxed environment: StrictUndefined, no file access beyond `templates_dir`; `html` escapes what
    expressions output for HTML, `slack` for Slack's message formatting (see `render`)."""
    loader = FolderLoader(templates_dir) if templates_dir else None
    env = BoundedSandbox(loader=loader, undefined=StrictUndefined, autoescape=html or slack,
                         keep_trailing_newline=False, auto_reload=False, finalize=finalize)
    env.slack = slack  # type: ignore[attr-defined]
    env.globals.clear()
    env.globals.update(days_until=_days_until, days_since=_days_since)
    env.filters.pop("attr", None)
    env.filters.update(FILTERS)
    return env


@dataclass
class Templates:
    """Compiled templates of one templates directory: a text and an HTML environment. `fields` names what a template
    may read of each context object (`account`, `contact`, `goal`: their fields; `playbook`: id, name,
    description); by default the core fields."""

    directory: Path | None
    fields: Mapping[str, Collection[str]] = field(default_factory=lambda: CORE_TEMPLATE_FIELDS)
    metrics: tuple[str, ...] | None = None          # the declared metrics (§17); None: any

    def __post_init__(self) -> None:
        self.text_env = make_environment(self.directory, html=False)
        self.html_env = make_environment(self.directory, html=True)
        self.slack_env = make_environment(self.directory, slack=True)
        self._collected: set[A.MetricRef] | None = None

    @contextmanager
    def collecting(self) -> Iterator[set[A.MetricRef]]:
        """The metric windows the templates compiled inside this block read (through `metric()` calls)."""
        self._collected = found = set()
        try:
            yield found
        finally:
            self._collected = None

    def compile_inline(self, source: str, subject: str, extra: frozenset[str] = frozenset(),
                       markup: str = "text") -> Any:
        """Compile a templated string from a playbook: plain text (no escaping), or `slack` text, where what
        expressions output is escaped for Slack so that data cannot mention or link."""
        return self._compile(self.slack_env if markup == "slack" else self.text_env, source, subject, None, extra)

    def compile_file(self, name: str, subject: str, extra: frozenset[str] = frozenset(),
                     markup: str | None = None) -> Any:
        """Compile a template file by name; `.html.j2` files autoescape, and so does `markup="slack"` for Slack
        (see compile_inline)."""
        env = self.slack_env if markup == "slack" else self.html_env if ".html" in name else self.text_env
        outside = outside_problem(self.directory, name)
        if outside:
            raise TemplateProblem(outside, None, name)
        if self.directory is None or not (self.directory / name).is_file():
            raise TemplateProblem(f"template `{name}` not found in {self.directory}", None, name)
        data = (self.directory / name).read_bytes()
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _not_utf8(name, exc) from None
        return self._compile(env, source, subject, name, extra)

    def names(self) -> list[str]:
        """Email template names (the NAME of NAME.subject.j2 etc.) in the directory."""
        if self.directory is None:
            return []
        return sorted({p.name.split(".")[0] for p in self.directory.glob("*.j2")})

    def locales_of(self, name: str, suffixes: tuple[str, ...]) -> dict[str, str]:
        """The locales with their own files of template NAME (`NAME.ja.subject.j2`): locale -> as written."""
        if self.directory is None:
            return {}
        from engine.locales import parse_locale

        found: dict[str, str] = {}
        for path in sorted(self.directory.glob(f"{name}.*.j2")):
            middle = next((path.name[len(name) + 1:-len(s)] for s in suffixes if path.name.endswith(s)), "")
            loc = parse_locale(middle) if middle and "." not in middle else None
            if loc is not None:
                found.setdefault(str(loc), middle)
        return found

    def exists(self, name: str) -> bool:
        """Whether a template file of this name is in the folder (a name leading outside it is, for
        `compile_file` to refuse)."""
        return self.directory is not None and (self.directory / name).is_file()

    def _compile(self, env: ImmutableSandboxedEnvironment, source: str, subject: str, name: str | None,
                 extra: frozenset[str] = frozenset()) -> Any:
        ast = self._check(env, source, subject, name, extra, ())
        constant = _constant(ast)
        if constant is not None and len(constant) <= MAX_OUTPUT:
            return constant
        try:
            template = env.from_string(source) if name is None else env.get_template(name)
        except TemplateNotFound as exc:
            raise TemplateProblem(f"template `{exc.name}` not found", None, name) from None
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"template syntax error: {exc.message}", exc.lineno, name) from None
        # the environment's globals are fixed once made: a plain dict instead of Jinja's ChainMap makes the
        # context every render creates cheaper (it takes the set of their names)
        template.globals = dict(template.globals)
        return template

    def _check(self, env: ImmutableSandboxedEnvironment, source: str, subject: str, name: str | None,
               extra: frozenset[str], including: tuple[str, ...]) -> nodes.Template:
        """Parse a template and check everything it uses; raise TemplateProblem at the first problem."""
        try:
            ast = env.parse(source, name=name)
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"template syntax error: {exc.message}", exc.lineno, name) from None
        _check_safe(ast, name)
        _check_filters(ast, env, name)
        limit = static_limit(ast)
        if limit is not None:
            raise TemplateProblem(*limit, name)
        for ref in _metric_refs(ast, name, self.metrics):
            if self._collected is not None:
                self._collected.add(ref)
        try:
            undeclared = meta.find_undeclared_variables(ast)
        except TemplateSyntaxError as exc:      # what Jinja's code generator refuses beyond the checks above
            raise TemplateProblem(f"template error: {exc.message}", exc.lineno, name) from None
        names = CONTEXT_NAMES[subject] | extra
        bound = _bound_names(ast)
        _check_calls(ast, undeclared - bound, names, name)
        for var in sorted(undeclared):
            if var not in names | HELPERS:
                where = {"contact": "contact playbooks", "goal": "goal playbooks"}.get(var)
                close = suggest(var, sorted(names | HELPERS))
                hint = (f"`{var}` is only available in {where}" if where else f"did you mean `{close}`?" if close
                        else f"available: {', '.join(sorted(names | HELPERS))}")
                raise TemplateProblem(f"unknown name `{var}` in {'an' if subject[0] in 'aeiou' else 'a'} {subject} "
                                      f"playbook ({hint})",
                                      _line_of(ast, var), name)
        self._check_fields(ast, (names & undeclared) - bound, name)
        for refs, line, optional in _references(ast):
            if refs is None:
                raise TemplateProblem("templates may only include or extend templates by a literal name", line, name)
            self._check_reference(env, refs, line, optional, subject, name, extra | bound, including)
        return ast

    def _check_fields(self, ast: nodes.Template, objects: set[str], name: str | None) -> None:
        """`account.x`, `contact.x`, `goal.x`, `playbook.x` (or `account['x']`) must name a field of that object."""
        for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
            base = node.node
            if not (isinstance(base, nodes.Name) and base.name in objects and base.name in self.fields):
                continue
            if isinstance(node, nodes.Getattr):
                attr = node.attr
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                attr = node.arg.value
            else:
                continue
            known = self.fields[base.name]
            if attr not in known:
                close = suggest(attr, sorted(known))
                raise TemplateProblem(f"unknown field `{base.name}.{attr}`"
                                      + (f" (did you mean `{close}`?)" if close else ""), node.lineno, name)

    def _check_reference(self, env: ImmutableSandboxedEnvironment, refs: tuple[str, ...], line: int,
                         optional: bool, subject: str, name: str | None, extra: frozenset[str],
                         including: tuple[str, ...]) -> None:
        """A template included, extended or imported must exist (the first that does, of a list), and is checked
        like the one that names it; none may lead outside the templates folder."""
        for r in refs:
            outside = outside_problem(self.directory, r)
            if outside:
                raise TemplateProblem(outside, line, name)
        ref = next((r for r in refs if _source(env, r) is not None), None)
        if ref is None:
            if optional:                    # `ignore missing`
                return
            near = suggest(refs[0], [p.name for p in self.directory.glob("*.j2")]) if self.directory else None
            raise TemplateProblem(f"template `{refs[0]}` not found" + (f" (did you mean `{near}`?)" if near else ""),
                                  line, name)
        if ref in including or ref == name:
            loop = list(including[including.index(ref):]) if ref in including else []
            chain = " → ".join([*loop, *(n for n in (name,) if n), ref])
            raise TemplateProblem(f"template `{ref}` includes itself ({chain}): templates may not recurse", line,
                                  name)
        source = _source(env, ref) or ""
        try:
            self._check(env, source, subject, ref, extra, (*including, *(n for n in (name,) if n)))
        except TemplateProblem as exc:
            where = f" line {exc.line}" if exc.line else ""
            raise TemplateProblem(f"in `{ref}`{where}: {exc.message}", line, name) from None


def _source(env: ImmutableSandboxedEnvironment, ref: str) -> str | None:
    """The text of a template the environment's loader finds (never outside the templates folder), or None."""
    if env.loader is None:
        return None
    try:
        return env.loader.get_source(env, ref)[0]
    except TemplateNotFound:
        return None
    except UnicodeDecodeError as exc:
        raise _not_utf8(ref, exc) from None


def _not_utf8(name: str, exc: UnicodeDecodeError) -> TemplateProblem:
    """The problem of a template file that is not UTF-8, at the line of its first byte that is not."""
    problem = not_utf8(name, exc.object, exc.start)
    return TemplateProblem(f"{problem.message} ({problem.hint})", problem.line, name)


def _references(ast: nodes.Template) -> list[tuple[tuple[str, ...] | None, int, bool]]:
    """(names, line, ignore missing) of each template an include, extends, import or from-import names: one name,
    or a list of which the first that exists is used; None when they are not literals."""
    out: list[tuple[tuple[str, ...] | None, int, bool]] = []
    for node in ast.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
        target, optional = node.template, bool(getattr(node, "ignore_missing", False))
        if isinstance(target, nodes.Const) and isinstance(target.value, str):
            out.append(((target.value,), node.lineno, optional))
        elif isinstance(target, (nodes.Tuple, nodes.List)) and target.items and all(
                isinstance(i, nodes.Const) and isinstance(i.value, str) for i in target.items):
            out.append((tuple(i.value for i in target.items), node.lineno, optional))
        else:
            out.append((None, node.lineno, optional))
    return out


def _check_filters(ast: nodes.Template, env: ImmutableSandboxedEnvironment, name: str | None) -> None:
    """Every filter and test must exist (Jinja only says so when it generates code: a traceback at load)."""
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        table, what = (env.filters, "filter") if isinstance(node, nodes.Filter) else (env.tests, "test")
        if node.name not in table:
            close = suggest(node.name, sorted(n for n in table if n != "attr"))
            raise TemplateProblem(f"unknown {what} `{node.name}`" + (f" (did you mean `{close}`?)" if close else ""),
                                  node.lineno, name)
        if isinstance(node, nodes.Filter) and node.name in SIGNATURES:
            if node.dyn_args is not None or node.dyn_kwargs is not None:
                raise TemplateProblem(f"the `{node.name}` filter takes its arguments written out, not * or **",
                                      node.lineno, name)
            try:
                check_filter(node.name, [_literal(a) for a in node.args],
                             {k.key: _literal(k.value) for k in node.kwargs})
            except FilterArgumentError as exc:
                raise TemplateProblem(str(exc), node.lineno, name) from None


def _literal(node: nodes.Expr) -> tuple[bool, Any]:
    """(True, value) for a constant argument, (False, None) for one only the data decides."""
    try:
        return True, node.as_const()
    except nodes.Impossible:
        return False, None


def _metric_refs(ast: nodes.Template, name: str | None, declared: tuple[str, ...] | None) -> set[A.MetricRef]:
    """The metric windows the template's `metric()` and `metric_change()` calls read; their arguments must be
    literals, checked as in expressions (a metric `metrics:` does not declare, days, agg)."""
    refs: set[A.MetricRef] = set()
    for node in ast.find_all(nodes.Call):
        if not (isinstance(node.node, nodes.Name) and node.node.name in METRIC_FUNCTIONS):
            continue
        fn = node.node.name
        values = [_literal(a) for a in node.args] + [_literal(k.value) for k in node.kwargs]
        if node.dyn_args is not None or node.dyn_kwargs is not None or not all(lit for lit, _ in values):
            raise TemplateProblem(f"{fn}() in a template takes literal arguments, e.g. {fn}('logins', 30, 'sum')",
                                  node.lineno, name)
        try:
            expr = metric_call(fn, tuple(a.as_const() for a in node.args),
                               tuple((k.key, k.value.as_const()) for k in node.kwargs), declared)
        except ExpressionError as exc:
            raise TemplateProblem(exc.message + (f" ({exc.hint})" if exc.hint else ""), node.lineno, name) from None
        refs |= A.metric_refs(expr)
    return refs


@lru_cache(maxsize=1024)
def metric_call(fn: str, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...],
                declared: tuple[str, ...] | None = None) -> Any:
    """The typed node of a `metric()`/`metric_change()` call with these literal arguments (the expression
    language's own binding and checks)."""
    def lit(v: Any) -> A.Literal:
        return A.Literal(v, INTEGER if isinstance(v, int) and not isinstance(v, bool) else
                         NUMBER if isinstance(v, float) else STRING)
    return check_call(fn, [(lit(v), None) for v in args], [(k, None, lit(v), None) for k, v in kwargs], None,
                      lambda seg, col: None, declared)   # type: ignore[arg-type, return-value]


def _check_calls(ast: nodes.Template, free: set[str], names: set[str], name: str | None) -> None:
    """A call of a name from the context (not a macro or variable the template defines) must call a helper."""
    for node in ast.find_all(nodes.Call):
        if not isinstance(node.node, nodes.Name) or node.node.name not in free or node.node.name in HELPERS:
            continue
        called = node.node.name
        if called in names:
            raise TemplateProblem(f"`{called}` is not a function", node.lineno, name)
        close = suggest(called, sorted(HELPERS))
        hint = f"did you mean `{close}`?" if close else f"functions: {', '.join(sorted(HELPERS))}"
        raise TemplateProblem(f"unknown function `{called}` ({hint})", node.lineno, name)


def _bound_names(ast: nodes.Template) -> frozenset[str]:
    """The names the template binds itself (set, for, with, macro and call arguments, imports)."""
    bound: set[str] = set()
    for node in ast.find_all((nodes.Assign, nodes.AssignBlock, nodes.For, nodes.With, nodes.Macro, nodes.CallBlock,
                              nodes.Import, nodes.FromImport)):
        if isinstance(node, nodes.Macro):
            bound.add(node.name)
        if isinstance(node, nodes.Import):
            bound.add(node.target)
        elif isinstance(node, nodes.FromImport):
            bound.update(n if isinstance(n, str) else n[1] for n in node.names)
        targets = [node.target] if isinstance(node, (nodes.Assign, nodes.AssignBlock, nodes.For)) else (
            list(node.targets) if isinstance(node, nodes.With) else list(getattr(node, "args", [])))
        for target in targets:
            bound.update(n.name for n in ([target] if isinstance(target, nodes.Name) else target.find_all(nodes.Name)))
    return frozenset(bound)


def _check_safe(ast: nodes.Template, name: str | None) -> None:
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise TemplateProblem(f"access to `{node.attr}` is not allowed in templates", node.lineno, name)
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and isinstance(node.arg.value, str) and node.arg.value.startswith("_"):
            raise TemplateProblem(f"access to `{node.arg.value}` is not allowed in templates", node.lineno, name)
        if isinstance(node, nodes.Filter) and node.name == "attr":
            raise TemplateProblem("the `attr` filter is not allowed in templates", node.lineno, name)


def _constant(ast: nodes.Template) -> str | None:
    """The output of a template made only of literal text (no expression, tag or filter), else None.

    Such a template renders to that text whatever the context, so it is kept as a plain string."""
    out = []
    for node in ast.body:
        if not isinstance(node, nodes.Output) or not all(isinstance(n, nodes.TemplateData) for n in node.nodes):
            return None
        out += [n.data for n in node.nodes]
    return "".join(out)


def _line_of(ast: nodes.Template, var: str) -> int | None:
    for node in ast.find_all(nodes.Name):
        if node.name == var:
            return node.lineno
    return None


def render(template: Any, context: dict[str, Any]) -> str:
    """Render a compiled template (or a constant one: a plain string) with bounded output; raises
    TemplateProblem on any rendering error.

    The context is shared with Jinja, not copied (Jinja's `generate(**context)` copies it on every call);
    a template cannot change it: `set` writes to the render's own variables. It must hold everything a
    template may name: globals are not merged in (see `context_helpers`)."""
    if isinstance(template, str):
        return template
    try:
        out: list[str] = []
        size = 0
        with render_budget():
            for chunk in template.root_render_func(template.new_context(context, shared=True)):
                size += len(chunk)
                if size > MAX_OUTPUT:
                    raise TemplateProblem(f"template output exceeds {MAX_OUTPUT} characters")
                tick()
                out.append(chunk)
        text = "".join(out)
        return _slack_quotes(text) if getattr(template.environment, "slack", False) else text
    except TimeLimitExceeded as exc:
        raise RenderTimeout(f"template exceeds a limit: {exc}") from None
    except LimitExceeded as exc:
        raise TemplateProblem(f"template exceeds a limit: {exc}") from None
    except (RecursionError, MemoryError):
        raise TemplateProblem("template exceeds a limit: it nests or builds too much to render") from None
    except UndefinedError as exc:
        raise TemplateProblem(f"template error: {exc.message}") from None
    except SecurityError as exc:
        raise TemplateProblem(f"template sandbox refused: {exc}") from None
    except TemplateError as exc:
        raise TemplateProblem(f"template error: {exc}") from None
    except (TypeError, ValueError, LookupError, AttributeError, ArithmeticError) as exc:
        raise TemplateProblem(f"template error: {type(exc).__name__}: {exc}") from None


def _slack_quotes(text: str) -> str:
    """Slack text escaped the HTML way turned into Slack's escaping: Slack reads `&amp;`, `&lt;` and `&gt;` (so a
    value's `<!channel>`, `<@U0123>` or `<https://x|click>` shows as typed, never mentions or links) but not
    `&#34;` and `&#39;`, which autoescaping also writes for quotes (the author's own text is never escaped)."""
    return text.replace("&#34;", '"').replace("&#39;", "'")


def _days_until(d: date | datetime | None, *, _today: date | None = None) -> int | None:
    return None if d is None else (_as_date(d) - (_today or date.today())).days


def _days_since(d: date | datetime | None, *, _today: date | None = None) -> int | None:
    return None if d is None else ((_today or date.today()) - _as_date(d)).days


def _as_date(d: date | datetime) -> date:
    return d.date() if isinstance(d, datetime) else d


def context_helpers(today: date) -> dict[str, Any]:
    """The functions a template may call (HELPERS): days_until / days_since bound to the evaluation's `today` (not
    the wall clock), the sandbox's bounded range, and metric() / metric_change() of no account (`metric_helpers`
    binds them to the subject's)."""
    return {"days_until": lambda d: _days_until(d, _today=today),
            "days_since": lambda d: _days_since(d, _today=today), "today": today, "range": safe_range,
            **metric_helpers(None, today)}


def metric_helpers(usage: Mapping[str, Mapping[date, float]] | None, today: date) -> dict[str, Any]:
    """`metric()` and `metric_change()` over one account's usage rows (metric -> {day: value}), with the same
    rules as in expressions (§5); None when the subject has no account."""
    env = PyEnv({}, today, datetime.combine(today, datetime.min.time()), "UTC",
                lambda ref: python_metric((usage or {}).get(ref.name, {}), ref, today))

    def call(fn: str) -> Any:
        def helper(*args: Any, **kwargs: Any) -> Any:
            if usage is None:
                return None
            return evaluate(metric_call(fn, args, tuple(sorted(kwargs.items()))), env)
        return helper
    return {fn: call(fn) for fn in METRIC_FUNCTIONS}
