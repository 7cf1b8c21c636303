"""Isolation and bounds (issue 24): a playbook that would exhaust the engine (a template or an expression too large
to compute, too deep to evaluate, a count out of range) is refused by `validate` at its line, and `run` reports
it, exits 1, and still plans the other playbooks' actions. What only the data can show is refused at render, as
that action's failure. Every case here crashed, hung or exhausted memory before."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import Workspace

GOOD = """
id: good
name: Good
activation: fire
trigger: {when: account.arr < 100}
actions:
  - slack: {channel: "#cs", text: "{{ account.name }} is small"}
"""


def hostile(text: str = "hi", *, trigger: str = "when: account.arr < 100", extra: str = "") -> str:
    """A playbook firing for the same accounts, with `text` as its Slack message."""
    return (f"id: bad\nname: Bad\nactivation: fire\ntrigger:\n  {trigger}\n{extra}actions:\n"
            f"  - slack: {{channel: \"#cs\", text: {json.dumps(text)}}}\n")


def prepare(ws: Workspace, bad: str, templates: dict[str, str] | None = None, segments: str = "") -> None:
    if segments:
        config = ws.root / "config.yaml"
        config.write_text(config.read_text().replace("segments:\n", "segments:\n" + segments))
    ws.playbook("good", GOOD)
    (ws.root / "playbooks" / "bad.yaml").write_text(bad)
    for name, text in (templates or {}).items():
        ws.template(name, text)
    ws.data("accounts", [{"id": "A1", "name": "Acme", "arr": 10, "seats": 99_999_999},
                         {"id": "A2", "name": "Beta", "arr": 20, "seats": 3}])
    ws.sync()


def run_json(ws: Workspace) -> tuple[Any, dict[str, Any]]:
    r = ws.cli("run", "--dry-run", "--now", "2026-03-01T09:00", "--format", "json", expect=None)
    return r, json.loads(r.stdout)


def good_events(payload: dict[str, Any]) -> list[str]:
    return sorted(e["subject"] for e in payload["events"] if e["playbook"] == "good")


# (name, playbook text, templates, line:col where validate says it, what it says)
REFUSED_AT_VALIDATE = [
    ("template-pow", hostile("{{ 7 ** 99999999 }}"), {}, "7:35:", "an integer beyond 64 bits"),
    ("template-list-repeat", hostile("{{ ([1] * 10**9)|length }}"), {}, "7:35:", "a list of more than 100000 items"),
    ("template-indent", hostile("{{ 'a\nb'|indent(999999999) }}"), {}, "7:35:", "a width of 999999999"),
    ("template-int-literal", hostile("{{ 99999999999999999999999 }}"), {}, "7:35:", "an integer beyond 64 bits"),
    ("template-percent-width", hostile("{{ '%999999999d' % 1 }}"), {}, "7:35:", "a width of 999999999"),
    ("template-format-width", hostile("{{ '{:>999999999}'.format(1) }}"), {}, "7:35:", "a width of 999999999"),
    ("template-nested-lists", hostile("{{ [[1] * 100000] * 100000 }}"), {}, "7:35:",
     "a value holding more than 262144 characters or items"),
    ("template-recursive-macro", hostile("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}"), {}, "7:35:",
     "macro `f` calls itself"),
    ("template-self-include", hostile("{% include 'loop.txt.j2' %}"), {"loop.txt.j2": "x{% include 'loop.txt.j2' %}"},
     "7:35:", "template `loop.txt.j2` includes itself"),
    ("template-include-cycle", hostile("{% include 'a.txt.j2' %}"),
     {"a.txt.j2": "{% include 'b.txt.j2' %}", "b.txt.j2": "{% include 'a.txt.j2' %}"}, "7:35:",
     "includes itself (a.txt.j2 → b.txt.j2 → a.txt.j2)"),
    ("expression-400-not", hostile(trigger="when: " + "not " * 400 + "account.arr < 100"), {}, "5:9:",
     "the expression is nested more than 100 levels deep"),
    ("expression-int-beyond-64-bits", hostile(trigger="when: account.arr < 99999999999999999999999"), {}, "5:23:",
     "the integer is beyond 64 bits"),
    ("expression-float-overflow", hostile(trigger="when: account.arr < 1e999"), {}, "5:23:",
     "the number is too large"),
    ("expression-long-string", hostile(trigger="when: account.name == '" + "a" * 20_000 + "'"), {}, "5:25:",
     "the string is longer than 10000 characters"),
    ("expression-long-list", hostile(trigger="when: account.arr in [" + ",".join(["1"] * 20_000) + "]"), {},
     "5:24:", "the list has more than 10000 items"),
    ("repeat-duration", hostile(extra="repeat: 99999999999999999999d\n"), {}, "6:9:", "longer than a century"),
    ("max-episodes", hostile(extra="max_episodes: 99999999999999999999\n"), {}, "6:15:",
     "less than or equal to 1000000000"),
    ("max-enters-per-run", hostile(extra="max_enters_per_run: 99999999999999999999\n"), {}, "6:21:",
     "less than or equal to 1000000000"),
    ("within-days", hostile(trigger="renewal_approaching: {within_days: 99999999999999999999}"), {}, "5:38:",
     "less than or equal to 36600"),
]


@pytest.mark.parametrize("name,bad,templates,where,says", REFUSED_AT_VALIDATE, ids=[c[0] for c in REFUSED_AT_VALIDATE])
def test_refused_at_validate_and_the_others_still_run(ws_sqlite: Workspace, name: str, bad: str,
                                                      templates: dict[str, str], where: str, says: str) -> None:
    prepare(ws_sqlite, bad, templates)
    v = ws_sqlite.cli("validate", expect=1)
    assert f"playbooks/bad.yaml:{where}" in v.output and says in v.output, v.output
    assert "1 of 2 playbook(s) valid" in v.output
    r, payload = run_json(ws_sqlite)
    assert r.exit_code == 1
    assert "skipped playbooks/bad.yaml: invalid playbook" in r.stderr and says in r.stderr
    assert good_events(payload) == ["account:A1", "account:A2"]
    assert "Traceback" not in r.output + r.stderr


def test_segments_that_double_at_each_level_are_refused_at_validate(ws_sqlite: Workspace) -> None:
    segments = "  s0: \"account.arr > 1\"\n" + "".join(
        f"  s{i}: \"segment('s{i - 1}') and segment('s{i - 1}')\"\n" for i in range(1, 27))
    prepare(ws_sqlite, hostile(trigger="when: segment('s26')"), segments=segments)
    v = ws_sqlite.cli("validate", expect=1)
    assert ("playbooks/bad.yaml:5:9: in segment `s26` → `s25` → " in v.output
            and "the expression has more than 10000 terms once its segments are written out" in v.output), v.output
    r, payload = run_json(ws_sqlite)
    assert r.exit_code == 1 and good_events(payload) == ["account:A1", "account:A2"]


# What only the data shows (A1 has 99,999,999 seats): the action fails for that subject with the reason, the
# others are planned. (name, message text, what the failure says)
REFUSED_AT_RENDER = [
    ("repeat-text", "{{ account.name * account.seats }}", "a value holding more than 262144 characters"),
    ("power", "{{ account.seats ** account.seats }}", "an integer beyond 64 bits"),
    ("product", "{{ account.seats * account.seats * account.seats * account.seats }}", "an integer beyond 64 bits"),
    ("indent", "{{ 'a\nb'|indent(account.seats) }}", "an indentation of 99999999"),
    ("center", "{{ account.name|center(account.seats) }}", "a width of 99999999"),
    ("ljust", "{{ account.name.ljust(account.seats) }}", "a width of 99999999"),
    ("format-width", "{{ ('%' ~ account.seats ~ 'd') % 1 }}", "a width of 99999999"),
    ("list-repeat", "{{ ([account.name] * account.seats)|length }}", "a list of more than 100000 items"),
    ("batch", "{{ [1, 2]|batch(account.seats, 0)|list }}", "a batch size of 99999999"),
    ("replace", "{{ account.name|replace('', account.name * (account.seats // 2000)) }}",
     "a text longer than 262144 characters"),
    ("set-block-doubling", "{% set a %}{{ account.name * (account.seats // 2000) }}{% endset %}"
                           "{% set b %}{{ a }}{{ a }}{{ a }}{{ a }}{{ a }}{{ a }}{% endset %}{{ b|length }}",
     "template output longer than 262144 characters"),
    ("nested-loops", "{% for i in range(account.seats // 1000) %}{% for j in range(account.seats // 1000) %}"
                     "{% endfor %}{% endfor %}", "the template took more than 2 s to render"),
]


@pytest.mark.parametrize("name,text,says", REFUSED_AT_RENDER, ids=[c[0] for c in REFUSED_AT_RENDER])
def test_refused_at_render_for_that_subject_only(ws_sqlite: Workspace, name: str, text: str, says: str) -> None:
    prepare(ws_sqlite, hostile(text, trigger="when: account.arr < 100 and account.seats > 1000"))
    ws_sqlite.cli("validate")
    r = ws_sqlite.cli("run", "--now", "2026-03-01T09:00", "--format", "json", "--no-dispatch", expect=1)
    assert f"bad: not planned, rendering failed for bad/account:A1/1/1/0: template exceeds a limit: {says}" in r.stderr
    assert "Traceback" not in r.output + r.stderr
    rows = {(x["playbook_id"], x["subject_id"]): x for x in ws_sqlite.outbox_rows()}
    assert set(rows) == {("good", "A1"), ("good", "A2"), ("bad", "A1")}
    assert rows[("bad", "A1")]["status"] == "failed" and says in rows[("bad", "A1")]["last_error"]


def test_a_recursive_loop_is_bounded_in_depth(ws_sqlite: Workspace) -> None:
    prepare(ws_sqlite, hostile("{% for x in [1, 2] recursive %}{{ loop([x]) }}{% endfor %}"))
    r = ws_sqlite.cli("run", "--now", "2026-03-01T09:00", "--no-dispatch", expect=1)
    assert "template exceeds a limit: macros nested more than 32 calls deep" in r.stderr
    assert sorted(x["subject_id"] for x in ws_sqlite.outbox_rows() if x["status"] != "failed") == ["A1", "A2"]


def test_one_playbook_failing_at_evaluation_leaves_the_others_planned(ws_sqlite: Workspace,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever makes one playbook's evaluation fail (here the outbox write of that playbook, standing for a
    failure no check foresaw), `run` says so in one line, exits 1 and plans the other playbooks."""
    from engine.store.outbox import Outbox

    prepare(ws_sqlite, hostile("{{ account.name }} too"))
    real = Outbox.enqueue

    def fail_for_bad(self: Any, rows: list[dict[str, Any]]) -> int:
        if any(row["playbook_id"] == "bad" for row in rows):
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return real(self, rows)

    monkeypatch.setattr(Outbox, "enqueue", fail_for_bad)
    r = ws_sqlite.cli("run", "--now", "2026-03-01T09:00", "--no-dispatch", expect=1)
    assert "bad: not evaluated, nothing of it changed; internal error (OverflowError)" in r.stderr
    assert "Traceback" not in r.output + r.stderr
    monkeypatch.setattr(Outbox, "enqueue", real)
    assert sorted((x["playbook_id"], x["subject_id"]) for x in ws_sqlite.outbox_rows()) == [
        ("good", "A1"), ("good", "A2")]
    r = ws_sqlite.cli("run", "--now", "2026-03-01T09:00", "--no-dispatch")   # the next run evaluates it
    assert sorted(x["playbook_id"] for x in ws_sqlite.outbox_rows()) == ["bad", "bad", "good", "good"]
