"""The sandboxed Jinja2 environment for action templates (§9): compiled at load, bounded at render."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from jinja2 import (FileSystemLoader, StrictUndefined, TemplateError, TemplateNotFound, TemplateSyntaxError,
                    UndefinedError, meta, nodes)
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

MAX_OUTPUT = 256 * 1024  # characters one rendered template may produce
CONTEXT_NAMES = {
    "account": {"account", "playbook", "now", "today", "unsubscribe_url"},
    "contact": {"account", "contact", "playbook", "now", "today", "unsubscribe_url"},
    "goal": {"account", "goal", "playbook", "now", "today", "unsubscribe_url"},
}
HELPERS = {"days_until", "days_since"}


class TemplateProblem(Exception):
    """A template failed to compile or check; `line` is 1-based inside the template source."""

    def __init__(self, message: str, line: int | None = None, file: str | None = None):
        self.message, self.line, self.file = message, line, file
        super().__init__(message)


def make_environment(templates_dir: Path | None, *, html: bool = False) -> ImmutableSandboxedEnvironment:
    """A sandboxed environment: StrictUndefined, no file access beyond `templates_dir`."""
    loader = FileSystemLoader(str(templates_dir)) if templates_dir else None
    env = ImmutableSandboxedEnvironment(loader=loader, undefined=StrictUndefined, autoescape=html,
                                        keep_trailing_newline=False, auto_reload=False)
    env.globals.clear()
    env.globals.update(days_until=_days_until, days_since=_days_since)
    env.filters.pop("attr", None)
    return env


@dataclass
class Templates:
    """Compiled templates of one templates directory: a text and an HTML environment."""

    directory: Path | None

    def __post_init__(self) -> None:
        self.text_env = make_environment(self.directory, html=False)
        self.html_env = make_environment(self.directory, html=True)

    def compile_inline(self, source: str, subject: str, extra: frozenset[str] = frozenset()) -> Any:
        """Compile a templated string from a playbook (plain text, no autoescape)."""
        return self._compile(self.text_env, source, subject, None, extra)

    def compile_file(self, name: str, subject: str, extra: frozenset[str] = frozenset()) -> Any:
        """Compile a template file by name; `.html.j2` files autoescape."""
        env = self.html_env if ".html" in name else self.text_env
        if self.directory is None or not (self.directory / name).is_file():
            raise TemplateProblem(f"template `{name}` not found in {self.directory}", None, name)
        source = (self.directory / name).read_text(encoding="utf-8")
        return self._compile(env, source, subject, name, extra)

    def names(self) -> list[str]:
        """Email template names (the NAME of NAME.subject.j2 etc.) in the directory."""
        if self.directory is None:
            return []
        return sorted({p.name.split(".")[0] for p in self.directory.glob("*.j2")})

    def exists(self, name: str) -> bool:
        return self.directory is not None and (self.directory / name).is_file()

    def _compile(self, env: ImmutableSandboxedEnvironment, source: str, subject: str, name: str | None,
                 extra: frozenset[str] = frozenset()) -> Any:
        try:
            ast = env.parse(source, name=name)
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"template syntax error: {exc.message}", exc.lineno, name) from None
        _check_safe(ast, name)
        allowed = CONTEXT_NAMES[subject] | extra | HELPERS | {"loop", "range"}
        for var in sorted(meta.find_undeclared_variables(ast)):
            if var not in allowed:
                from engine.errors import suggest

                where = {"contact": "contact playbooks", "goal": "goal playbooks"}.get(var)
                close = suggest(var, sorted(CONTEXT_NAMES[subject] | extra | HELPERS))
                hint = (f"`{var}` is only available in {where}" if where else f"did you mean `{close}`?" if close
                        else f"available: {', '.join(sorted(CONTEXT_NAMES[subject] | extra | HELPERS))}")
                raise TemplateProblem(f"unknown name `{var}` in {'an' if subject[0] in 'aeiou' else 'a'} {subject} "
                                      f"playbook ({hint})",
                                      _line_of(ast, var), name)
        for ref in meta.find_referenced_templates(ast):
            if ref is None:
                raise TemplateProblem("templates may only include or extend templates by a literal name", None, name)
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
        for chunk in template.root_render_func(template.new_context(context, shared=True)):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateProblem(f"template output exceeds {MAX_OUTPUT} characters")
            out.append(chunk)
        return "".join(out)
    except UndefinedError as exc:
        raise TemplateProblem(f"template error: {exc.message}") from None
    except SecurityError as exc:
        raise TemplateProblem(f"template sandbox refused: {exc}") from None
    except TemplateError as exc:
        raise TemplateProblem(f"template error: {exc}") from None
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
        raise TemplateProblem(f"template error: {type(exc).__name__}: {exc}") from None


def _days_until(d: date | datetime | None, *, _today: date | None = None) -> int | None:
    return None if d is None else (_as_date(d) - (_today or date.today())).days


def _days_since(d: date | datetime | None, *, _today: date | None = None) -> int | None:
    return None if d is None else ((_today or date.today()) - _as_date(d)).days


def _as_date(d: date | datetime) -> date:
    return d.date() if isinstance(d, datetime) else d


def context_helpers(today: date) -> dict[str, Any]:
    """days_until / days_since bound to the evaluation's `today` (not the wall clock)."""
    return {"days_until": lambda d: _days_until(d, _today=today),
            "days_since": lambda d: _days_since(d, _today=today), "today": today}
