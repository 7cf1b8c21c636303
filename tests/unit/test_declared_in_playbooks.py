"""Playbooks checked against the declared values and metrics of the configuration (§17), and without them."""

from __future__ import annotations

from pathlib import Path

from engine.settings import Settings
from engine.spec.loader import load_playbooks

ROLES = ["champion", "decision_maker", "admin", "user"]


def diagnostics(tmp_path: Path, playbook: str, **declared: object) -> list[str]:
    (tmp_path / "p.yaml").write_text(playbook, encoding="utf-8")
    settings = Settings(playbooks=tmp_path, templates=tmp_path / "templates", base_dir=tmp_path, **declared)
    pset = load_playbooks(settings, [tmp_path / "p.yaml"])
    return [str(d).replace(str(tmp_path) + "/", "") for d in pset.diagnostics]


EMAIL = """\
id: p
name: P
trigger: {when: account.arr > 1}
actions:
  - email:
      to: {role: champion}
      cc: {role: [admin, owner, adimn]}
      subject: "Hello"
      body: "Hi {{ contact.name }}"
"""


def test_every_role_an_action_addresses_to_or_cc_must_be_declared(tmp_path: Path) -> None:
    assert diagnostics(tmp_path, EMAIL, values={"contacts.role": ROLES}) == [
        "p.yaml:7:26: 'owner' is not a declared value of contact.role "
        "(declared values: champion, decision_maker, admin, user)",
        "p.yaml:7:33: 'adimn' is not a declared value of contact.role (did you mean 'admin'?)"]


def test_without_declarations_any_role_literal_and_metric_is_accepted(tmp_path: Path) -> None:
    assert diagnostics(tmp_path, EMAIL) == []
    assert diagnostics(tmp_path, EMAIL.replace("account.arr > 1", "metric('whatever') > 1 and account.tier == 'x'"),
                       values={"contacts.role": ROLES + ["owner", "adimn"]}) == []


def test_a_trigger_option_naming_an_undeclared_metric_is_an_error_at_the_option(tmp_path: Path) -> None:
    playbook = EMAIL.replace("trigger: {when: account.arr > 1}",
                             "trigger:\n  low_usage: {metric: api_call, days: 7, drop_pct: 30}")
    assert diagnostics(tmp_path, playbook, metrics=["logins", "api_calls"]) == [
        "p.yaml:4:23: 'api_call' is not a declared metric (did you mean 'api_calls'?)"]


def test_a_trigger_whose_own_literal_is_undeclared_says_what_it_expands_to(tmp_path: Path) -> None:
    playbook = EMAIL.replace("trigger: {when: account.arr > 1}", "subject: goal\ntrigger: {goal_achieved: {}}")
    [problem] = diagnostics(tmp_path, playbook, values={"goals.status": ["open", "done"]})
    assert problem.startswith("p.yaml:4:26: 'achieved' is not a declared value of goal.status (in `(goal.status == "
                              "'achieved' or ")
    assert problem.endswith("which goal_achieved expands to) (declared values: open, done)")


def test_a_metric_no_synced_row_has_is_a_warning_where_it_is_spelled_out_or_at_its_condition(tmp_path: Path) -> None:
    playbook = EMAIL.replace("trigger: {when: account.arr > 1}",
                             "trigger:\n  when: segment('busy') or metric(\"logins\") > 1\n"
                             "where:\n  - \"metric_change('logins') < 0 and metric('api_call') > 0\"")
    (tmp_path / "p.yaml").write_text(playbook, encoding="utf-8")
    settings = Settings(playbooks=tmp_path, templates=tmp_path / "t", base_dir=tmp_path,
                        segments={"busy": "metric('active_user', 7) > 10"})
    pset = load_playbooks(settings, [tmp_path / "p.yaml"], synced_metrics={"logins", "active_users", "api_calls"})
    assert pset.diagnostics == [] and [str(w).replace(str(tmp_path) + "/", "") for w in pset.warnings] == [
        "p.yaml:4:9: no synced usage row has the metric 'active_user' (did you mean 'active_users'?)",
        "p.yaml:6:45: no synced usage row has the metric 'api_call' (did you mean 'api_calls'?)"]
    assert load_playbooks(settings, [tmp_path / "p.yaml"]).warnings == ()          # nothing synced to compare with
