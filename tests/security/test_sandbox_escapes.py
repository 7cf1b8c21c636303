"""Published Jinja2 sandbox escapes and the usual tricks (issue 24): each is refused — at validation, with its line,
or by the sandbox at render — or its data is rendered literally. These held before the render limits were added
and must keep holding."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from conftest import Workspace
from engine.templating import CORE_TEMPLATE_FIELDS, TemplateProblem, Templates, context_helpers, render

# (payload, what validation says)
REFUSED_AT_VALIDATE = [
    ("{{ '{0.__class__}'|attr('format')(1) }}", "the `attr` filter is not allowed"),         # CVE-2025-27516
    ("{{ account|attr('__class__') }}", "the `attr` filter is not allowed"),
    ("{{ account.__class__ }}", "access to `__class__` is not allowed"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "access to `__subclasses__` is not allowed"),
    ("{% for c in ''.__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}", "access to `__subclasses__`"),
    ("{{ account['__class__'] }}", "access to `__class__` is not allowed"),
    ("{{ now.__class__ }}", "access to `__class__` is not allowed"),
    ("{% set x = account.name.__class__ %}{{ x }}", "access to `__class__` is not allowed"),
    ("{{ (account.name|string).__class__ }}", "access to `__class__` is not allowed"),
    ("{{ '%s'|format(account.__class__) }}", "access to `__class__` is not allowed"),
    ("{{ 'a'.__mul__(10) }}", "access to `__mul__` is not allowed"),
    ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", "access to `__globals__` is not allowed"),
    ("{{ cycler(1, 2) }}", "unknown function `cycler`"),
    ("{{ lipsum.__globals__['os'].popen('id').read() }}", "access to `__globals__` is not allowed"),
    ("{{ lipsum() }}", "unknown function `lipsum`"),
    ("{{ joiner.__init__.__globals__ }}", "access to `__globals__` is not allowed"),
    ("{{ namespace.__init__.__globals__ }}", "access to `__globals__` is not allowed"),
    ("{% set ns = namespace(s='x') %}{{ ns.s }}", "unknown function `namespace`"),
    ("{{ self.__init__.__globals__ }}", "access to `__globals__` is not allowed"),
    ("{{ self._TemplateReference__context }}", "access to `_TemplateReference__context` is not allowed"),
    ("{{ range.__self__ }}", "access to `__self__` is not allowed"),
    ("{{ days_until.__globals__ }}", "access to `__globals__` is not allowed"),
    ("{{ days_until.__code__ }}", "access to `__code__` is not allowed"),
    ("{{ account.items.__self__ }}", "access to `__self__` is not allowed"),
    ("{{ request.application.__globals__ }}", "access to `__globals__` is not allowed"),
    ("{{ config.items() }}", "unknown name `config`"),
    ("{{ getattr }}", "unknown name `getattr`"),
    ("{{ __builtins__ }}", "unknown name `__builtins__`"),
    ("{{ dict(a=1) }}", "unknown function `dict`"),
    ("{{ account.update({'x': 1}) }}", "unknown field `account.update`"),
    ("{% include account.name %}", "templates may only include or extend templates by a literal name"),
]

# (payload, what the sandbox says when it renders)
REFUSED_AT_RENDER = [
    # CVE-2016-10745: str.format reaching attributes
    ("{{ '{0.__class__.__base__.__subclasses__}'.format(account) }}", "access to attribute '__class__'"),
    ("{{ '{0.__class__}'.format(account.name) }}", "access to attribute '__class__'"),
    ("{{ '{a.__class__}'.format_map({'a': account.name}) }}", "access to attribute '__class__'"),      # CVE-2019-10906
    ("{% set f = '{0.__class__}'.format %}{{ f(account.name) }}", "access to attribute '__class__'"),   # CVE-2024-56326
    ("{{ ('{0.__class__}'.format)(1) }}", "access to attribute '__class__'"),
    ("{{ '{0[__class__]}'.format(account) }}", "access to attribute '__class__'"),
    ("{{ '{0.name.__class__}'.format(account) }}", "access to attribute '__class__'"),
    ("{{ account[('_' * 2) ~ 'class' ~ ('_' * 2)] }}", "access to attribute '__class__'"),
    ("{{ range(10**9)|list|length }}", "Range too big"),
]

# Data is never rendered as a template: each company name appears as written.
LITERAL_NAMES = ["{{ 7*7 }}", "{% for x in range(9) %}x{% endfor %}", "{{ ''.__class__.__mro__ }}",
                 "{{ cycler.__init__.__globals__.os.popen('id').read() }}", "{% include '/etc/passwd' %}",
                 "{0.__class__}", "{{ account.__class__ }}"]


@pytest.fixture
def templates() -> Templates:
    return Templates(None, CORE_TEMPLATE_FIELDS)


def context(name: str = "Acme") -> dict:
    ctx = {"account": {"name": name, "arr": 7, "id": "A1"}, "playbook": {"id": "p", "name": "P", "description": ""},
           "now": None, "today": date(2026, 3, 1), "unsubscribe_url": ""}
    return {**ctx, **context_helpers(date(2026, 3, 1))}


@pytest.mark.parametrize("payload,says", REFUSED_AT_VALIDATE, ids=range(len(REFUSED_AT_VALIDATE)))
def test_refused_when_the_template_compiles(templates: Templates, payload: str, says: str) -> None:
    with pytest.raises(TemplateProblem, match=None) as info:
        templates.compile_inline(payload, "account")
    assert says in info.value.message and info.value.line == 1


@pytest.mark.parametrize("payload,says", REFUSED_AT_RENDER, ids=range(len(REFUSED_AT_RENDER)))
def test_refused_by_the_sandbox_when_it_renders(templates: Templates, payload: str, says: str) -> None:
    compiled = templates.compile_inline(payload, "account")
    with pytest.raises(TemplateProblem) as info:
        render(compiled, context())
    assert says in info.value.message


@pytest.mark.parametrize("name", LITERAL_NAMES)
def test_data_is_rendered_literally(templates: Templates, name: str) -> None:
    compiled = templates.compile_inline("Hello {{ account.name }} and {{ account.name.format(1) }}", "account")
    try:
        out = render(compiled, context(name))
    except TemplateProblem as exc:              # the data as a format string: refused by the sandbox's formatter,
        assert exc.message.startswith(("template sandbox refused", "template error: KeyError")), exc.message
        return                                  # or no such field
    assert out.startswith(f"Hello {name} and ")


def test_payloads_through_the_command_line(ws_sqlite: Workspace, tmp_path: Path) -> None:
    """`validate` names the line of a payload in a template file; data that looks like a template is sent as
    written."""
    ws_sqlite.template("esc.txt.j2", "Hi\n{{ ''.__class__.__mro__[1].__subclasses__() }}\n")
    ws_sqlite.template("esc.subject.j2", "Hello")
    ws_sqlite.playbook("esc", """
        id: esc
        name: Escape
        activation: fire
        trigger: {when: account.arr < 100}
        actions:
          - email: {to: {role: champion}, template: esc}
        """)
    r = ws_sqlite.cli("validate", expect=1)
    assert "templates/esc.txt.j2:2: access to `__subclasses__` is not allowed in templates" in r.output
    (ws_sqlite.root / "playbooks" / "esc.yaml").unlink()
    ws_sqlite.playbook("lit", """
        id: lit
        name: Literal
        activation: fire
        trigger: {when: account.arr < 100}
        actions:
          - slack: {channel: "#cs", text: "{{ account.name }}!"}
        """)
    ws_sqlite.data("accounts", [{"id": "A1", "name": "{{ 7*7 }} {{ cycler.__init__.__globals__ }}", "arr": 10}])
    ws_sqlite.sync()
    events = ws_sqlite.run("2026-03-01T09:00", "--dry-run")["events"]
    assert events[0]["actions"][0]["text"] == "{{ 7*7 }} {{ cycler.__init__.__globals__ }}!"
