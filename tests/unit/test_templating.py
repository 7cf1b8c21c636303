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


# -- what a template uses is checked when it compiles (§16) -------------------------------------------------------
FIELDS = {"account": ("id", "name", "health_score", "renewal_date"), "contact": ("id", "name", "email"),
          "goal": ("id", "name"), "playbook": ("id", "name", "description")}


@pytest.mark.parametrize(("source", "message", "line"), [
    ("{{ account.name | upper_case }}", "unknown filter `upper_case` (did you mean `upper`?)", 1),
    ("a\n{{ account.name | reverse | titel }}", "unknown filter `titel` (did you mean `title`?)", 2),
    ("{% filter shout %}x{% endfilter %}", "unknown filter `shout` (did you mean `sort`?)", 1),
    ("{% if account.name is stringy %}x{% endif %}", "unknown test `stringy` (did you mean `string`?)", 1),
    ("{{ account.healthscore }}", "unknown field `account.healthscore` (did you mean `health_score`?)", 1),
    ("{{ account['helth_score'] }}", "unknown field `account.helth_score` (did you mean `health_score`?)", 1),
    ("{{ account.items() }}", "unknown field `account.items`", 1),
    ("{{ playbook.title }}", "unknown field `playbook.title`", 1),
    ("{% if true %}\n{{ format_date(account.renewal_date) }}{% endif %}",
     "unknown function `format_date` (functions: days_since, days_until, metric, metric_change, range)", 2),
    ("{{ days_util(account.renewal_date) }}", "unknown function `days_util` (did you mean `days_until`?)", 1),
    ("{{ now() }}", "`now` is not a function", 1),
    ("{{ loop.index }}", "unknown name `loop` in an account playbook (available: account, days_since, days_until, "
                         "metric, metric_change, now, playbook, range, today, unsubscribe_url)", 1),
])
def test_an_unknown_filter_test_field_or_function_is_a_problem_at_its_line(source: str, message: str,
                                                                           line: int) -> None:
    with pytest.raises(TemplateProblem) as info:
        Templates(None, FIELDS).compile_inline(source, "account")
    assert (info.value.message, info.value.line) == (message, line)


def test_contact_and_goal_fields_are_checked_where_those_objects_exist() -> None:
    templates = Templates(None, FIELDS)
    with pytest.raises(TemplateProblem, match=r"unknown field `contact.mail` \(did you mean `email`\?\)"):
        templates.compile_inline("{{ contact.mail }}", "account", frozenset({"contact"}))   # a role-filtered email
    with pytest.raises(TemplateProblem, match="unknown field `goal.title`"):
        templates.compile_inline("{{ goal.title }}", "goal")
    assert templates.compile_inline("{{ contact.email }} {{ goal.name }}", "goal", frozenset({"contact"}))


@pytest.mark.parametrize("source", [
    "{{ now.year }} {{ today.strftime('%Y') }} {{ today.isoformat() }}",             # Python's, left alone
    "{{ account.name.upper() }} {{ account.renewal_date.year }}",                      # a field's own attributes
    "{% for account in [playbook] %}{{ account.title }}{% endfor %}",                 # a name the template binds
    "{% macro row(contact) %}{{ contact.anything }}{% endmacro %}{{ row(playbook) }}",
    "{% set f = days_until %}{{ f(account.renewal_date) }} {{ days_since(account.renewal_date) }}",
    "{% for i in range(3) %}{{ loop.index }}{% endfor %}",
    "{{ account.name | default('x') | upper }} {{ account.health_score is none }}",
])
def test_what_exists_compiles(source: str) -> None:
    assert not isinstance(Templates(None, FIELDS).compile_inline(source, "account"), str)


def test_the_core_fields_are_the_default_and_custom_ones_are_given_by_the_loader() -> None:
    with pytest.raises(TemplateProblem, match="unknown field `account.health_score`"):
        Templates(None).compile_inline("{{ account.health_score }}", "account")
    assert Templates(None).compile_inline("{{ account.renewal_date }} {{ account.lifecycle_stage }}", "account")


def test_a_template_that_compiles_renders_every_field_and_helper_it_checked() -> None:
    from datetime import date

    from engine.templating import context_helpers

    source = ("{% for f in range(2) %}{{ f }}{% endfor %} {{ account.name }} {{ account.health_score }} "
              "{{ playbook.description }} {{ days_until(account.renewal_date) }}")
    compiled = Templates(None, FIELDS).compile_inline(source, "account")
    row = dict.fromkeys(FIELDS["account"]) | {"name": "Acme", "renewal_date": date(2026, 3, 11)}
    context = {"account": row, "playbook": dict.fromkeys(FIELDS["playbook"], ""), "now": None,
               "unsubscribe_url": "", **context_helpers(date(2026, 3, 1))}
    assert render(compiled, context) == "01 Acme   10"      # an empty field prints as nothing


def test_included_templates_must_exist_inside_the_folder_and_are_checked_too(tmp_path: Path) -> None:
    (tmp_path / "sig.txt.j2").write_text("--\n{{ account.nam }}\n")
    (tmp_path / "ok.txt.j2").write_text("{{ account.name }}")
    (tmp_path / "outside.txt").write_text("{{ anything }}")
    templates = Templates(tmp_path, FIELDS)
    with pytest.raises(TemplateProblem) as info:
        templates.compile_inline("hi\n{% include 'sig.txt.j2' %}", "account")
    assert (info.value.message, info.value.line) == (
        "in `sig.txt.j2` line 2: unknown field `account.nam` (did you mean `name`?)", 2)
    (tmp_path / "templates").mkdir()
    with pytest.raises(TemplateProblem, match="template `../outside.txt` leads outside the templates folder"):
        Templates(tmp_path / "templates", FIELDS).compile_inline("{% include '../outside.txt' %}", "account")
    with pytest.raises(TemplateProblem, match=r"template `sig.j2` not found \(did you mean `sig.txt.j2`\?\)"):
        templates.compile_inline("{% extends 'sig.j2' %}", "account")
    assert templates.compile_inline("{% include 'nope.j2' ignore missing %}{% include ['nope.j2', 'ok.txt.j2'] %}",
                                    "account")
    (tmp_path / "a.j2").write_text("{% include 'b.j2' %}")
    (tmp_path / "b.j2").write_text("{% include 'a.j2' %}{{ account.name }}")
    with pytest.raises(TemplateProblem, match=r"template `a.j2` includes itself \(a.j2 → b.j2 → a.j2\)"):
        templates.compile_file("a.j2", "account")                      # it would include itself for ever
