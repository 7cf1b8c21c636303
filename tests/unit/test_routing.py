"""Which connector delivers an action: the one it names, the one configured for its kind, the one that needs no
configuration, or — with no `connectors:` section — the kind's local sink; and `sink: local` beside real ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.plugins import LocalSink, Unroutable, route
from engine.settings import load_settings

SMTP = "email: {smtp: {host: smtp.example.com}, from: cs@example.com}"
HUBSPOT = "hubspot: {token: t}"
SALESFORCE = "salesforce: {instance_url: 'https://x.my.salesforce.com', token: t}"


def settings(tmp_path: Path, connectors: list[str] | None) -> object:
    text = "timezone: UTC\n"
    if connectors is not None:
        text += "connectors:\n" + "".join(f"  {c}\n" for c in connectors) if connectors else "connectors: {}\n"
    (tmp_path / "config.yaml").write_text(text)
    return load_settings(tmp_path / "config.yaml", env={})


def test_without_a_connectors_section_every_kind_goes_to_its_local_sink(tmp_path: Path) -> None:
    s = settings(tmp_path, None)
    assert [route(k, None, s) for k in ("email", "slack", "webhook", "task")] == ["email", "slack", "webhook",
                                                                                  "builtin"]
    assert route("task", "hubspot", s) == "hubspot"           # named: delivered to hubspot's local sink


def test_a_configured_connector_takes_its_kind_and_sink_local_mixes_with_real_ones(tmp_path: Path) -> None:
    s = settings(tmp_path, [SMTP, "slack: {sink: local}"])
    assert route("email", None, s) == "email" and route("slack", None, s) == "slack"
    assert isinstance(s.connectors.slack, LocalSink) and s.connectors.email.smtp.host == "smtp.example.com"
    assert route("webhook", None, s) == "webhook"              # needs no configuration
    assert route("task", None, s) == "builtin"                 # the built-in list, when no CRM is configured


def test_a_kind_not_configured_is_unroutable_with_what_to_do(tmp_path: Path) -> None:
    s = settings(tmp_path, [SMTP])
    with pytest.raises(Unroutable) as info:
        route("slack", None, s)
    assert info.value.message == "this playbook uses `slack` but no slack connector is configured"
    assert "connectors.slack: {sink: local}" in (info.value.hint or "")


def test_task_actions_go_to_the_one_crm_configured_or_the_default_among_several(tmp_path: Path) -> None:
    assert route("task", None, settings(tmp_path, [HUBSPOT])) == "hubspot"
    both = settings(tmp_path, [HUBSPOT, SALESFORCE])
    with pytest.raises(Unroutable) as info:
        route("task", None, both)
    assert "can go to hubspot, salesforce" in info.value.message
    assert route("task", "salesforce", both) == "salesforce"
    assert route("task", None, settings(tmp_path, [HUBSPOT, SALESFORCE[:-1] + ", default: true}"])) == "salesforce"


def test_a_named_connector_must_exist_deliver_the_kind_and_be_configured(tmp_path: Path) -> None:
    s = settings(tmp_path, [SMTP])
    for name, words in (("hubspto", "unknown connector `hubspto` (did you mean `hubspot`?)"),
                        ("slack", "connector `slack` delivers `slack` actions, not `task`"),
                        ("hubspot", "connector `hubspot` is not configured")):
        with pytest.raises(Unroutable) as info:
            route("task", name, s)
        assert info.value.message == words


def test_a_connector_block_is_validated_by_its_plugin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, ["email: {smtp: {hots: x}, from: cs@example.com}", "slack: {sink: lokal}"])
    messages = sorted(d.message for d in info.value.diagnostics)
    assert any(m.startswith("unknown key `hots`") for m in messages), messages
    assert any("missing required key `host`" in m for m in messages), messages
    assert any("`lokal` is not one of" in m for m in messages), messages
