"""YAML loading (issue 24): recursive aliases, alias bombs, unknown tags, bad `!!int` and excessive nesting are
refused with file:line, in a playbook (the others still run) and in config.yaml; never a traceback, never a
constructed Python object."""

from __future__ import annotations

import json

import pytest

from conftest import Workspace
from security.test_isolation import GOOD, good_events, run_json


def billion_laughs(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HEAD = "id: bad\nname: Bad\nactivation: fire\n"
ACTIONS = 'trigger: {when: account.arr < 100}\nactions:\n  - slack: {channel: "#cs", text: hi}\n'

# (name, playbook text, file:line:col it is reported at, what is said)
CASES = [
    ("recursive-alias", HEAD + "x: &a [*a]\n" + ACTIONS, "4:4:", "nested more than 64 levels deep"),
    ("recursive-alias-in-trigger", "id: bad\nname: Bad\ntrigger: &t\n  when: *t\n"
     "actions:\n  - slack: {channel: \"#cs\", text: hi}\n", "4:3:", "nested more than 64 levels deep"),
    ("billion-laughs", HEAD + ACTIONS + billion_laughs(), "7:59:", "the YAML expands to more than 100000 values"),
    ("python-name-tag", "id: !!python/name:os.system bad\nname: Bad\n" + ACTIONS, "1:5:",
     "unknown YAML tag `!!python/name:os.system`"),
    ("python-object-tag", HEAD + "x: !!python/object/apply:os.system [\"touch pwned\"]\n" + ACTIONS, "4:4:",
     "unknown YAML tag `!!python/object/apply:os.system`"),
    ("bad-int", HEAD + "max_episodes: !!int abc\n" + ACTIONS, "4:15:", "`abc` is not a valid !!int"),
    ("500-deep-list", HEAD + "x: " + "[" * 500 + "]" * 500 + "\n" + ACTIONS, "4:",
     "the YAML is nested more than 64 levels deep"),
    ("500-deep-mapping", HEAD + "x:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(500))
     + "  " * 501 + "v\n" + ACTIONS, "68:129:", "the YAML is nested more than 64 levels deep"),
    ("syntax-error", HEAD + "trigger: [\n", "5:1:", "YAML syntax error"),
]


@pytest.mark.parametrize("name,text,where,says", CASES, ids=[c[0] for c in CASES])
def test_a_hostile_playbook_is_reported_at_its_line_and_the_others_run(ws_sqlite: Workspace, name: str, text: str,
                                                                       where: str, says: str) -> None:
    ws_sqlite.playbook("good", GOOD)
    (ws_sqlite.root / "playbooks" / "bad.yaml").write_text(text)
    ws_sqlite.data("accounts", [{"id": "A1", "name": "Acme", "arr": 10}])
    ws_sqlite.sync()
    v = ws_sqlite.cli("validate", expect=1)
    assert f"playbooks/bad.yaml:{where}" in v.output and says in v.output, v.output
    assert "Traceback" not in v.output
    r, payload = run_json(ws_sqlite)
    assert r.exit_code == 1 and says in r.stderr and "Traceback" not in r.output + r.stderr
    assert good_events(payload) == ["account:A1"]
    assert not (ws_sqlite.root / "pwned").exists()


CONFIG_CASES = [
    ("billion-laughs", billion_laughs(), "the YAML expands to more than 100000 values"),
    ("recursive-alias", "x: &a [*a]\n", "nested more than 64 levels deep"),
    ("python-tag", "x: !!python/object/apply:os.system [\"touch pwned\"]\n", "unknown YAML tag"),
    ("500-deep", "x: " + "[" * 500 + "]" * 500 + "\n", "the YAML is nested more than 64 levels deep"),
]


@pytest.mark.parametrize("name,extra,says", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_a_hostile_config_is_a_configuration_error(ws_sqlite: Workspace, name: str, extra: str, says: str) -> None:
    ws_sqlite.configure(extra)
    for command in (["validate"], ["run", "--dry-run"], ["start", "--every", "1"]):
        r = ws_sqlite.cli(*command, expect=1)
        assert "config.yaml:" in r.stderr and says in r.stderr, (command, r.output)
        assert "Traceback" not in r.output
    assert not (ws_sqlite.root / "pwned").exists()


def test_anchors_and_aliases_used_sensibly_still_load(ws_sqlite: Workspace) -> None:
    ws_sqlite.playbook("good", GOOD)
    ws_sqlite.playbook("shared", """
        id: shared
        name: Shared
        activation: fire
        trigger: {when: account.arr < 100}
        actions:
          - slack: &message {channel: "#cs", text: "{{ account.name }}"}
        on_resolve:
          - slack: *message
        """)
    ws_sqlite.data("accounts", [{"id": "A1", "name": "Acme", "arr": 10}])
    ws_sqlite.sync()
    ws_sqlite.cli("validate")
    payload = json.loads(ws_sqlite.cli("run", "--dry-run", "--format", "json").stdout)
    assert sorted(e["playbook"] for e in payload["events"]) == ["good", "shared"]
