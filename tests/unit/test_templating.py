"""Compiled templates: a template of literal text only is kept as that text, and renders as Jinja would."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.templating import MAX_OUTPUT, TemplateProblem, Templates, render

CONTEXT = {"account": {"name": "Acme {{ 7*7 }}"}, "playbook": {"id": "p"}, "now": None, "today": None,
           "unsubscribe_url": "", "days_until": lambda d: None, "days_since": lambda d: None}


@pytest.mark.parametrize(("source", "literal"), [
    ("#cs-alerts", True), ("", True), ("line one\nline two\n", True), ("{% raw %}{{ x }}{% endraw %}", True),
    ("  spaced  ", True), ("a {#- comment -#} b", True), ("{{ '{{' }}", False), ("{{ account.name }}", False),
    ("{% if true %}x{% endif %}", False), ("{{ [1, 2] | random }}x", False)])
def test_literal_text_is_kept_and_equals_jinja(source: str, literal: bool) -> None:
    templates = Templates(None)
    compiled = templates.compile_inline(source, "account")
    assert isinstance(compiled, str) == literal
    if "random" not in source:
        assert render(compiled, CONTEXT) == templates.text_env.from_string(source).render(CONTEXT)


def test_templates_render_on_the_callers_context_without_changing_it(tmp_path: Path) -> None:
    templates = Templates(None)
    compiled = templates.compile_inline("{% set x = account.name %}{{ x }}|{{ playbook.id }}", "account")
    context = dict(CONTEXT)
    assert render(compiled, context) == "Acme {{ 7*7 }}|p"      # data is never rendered twice
    assert context == CONTEXT and "x" not in context
    with pytest.raises(TemplateProblem, match="unknown name"):
        templates.compile_inline("{{ contact.email }}", "account")
    big = templates.compile_inline("{% for i in range(n) %}xxxxxxxxxx{% endfor %}", "account", frozenset({"n"}))
    with pytest.raises(TemplateProblem, match="exceeds"):
        render(big, {**CONTEXT, "n": MAX_OUTPUT, "range": range})
