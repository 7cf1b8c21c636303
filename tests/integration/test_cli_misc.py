"""Small CLI and configuration contracts: the example config, the JSON Schema, init, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from engine.cli import main
from engine.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_config_example_documents_a_valid_configuration(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("SMTP_USER", "cs-robot")
    for var in ("SMTP_PASSWORD", "SLACK_BOT_TOKEN", "HUBSPOT_TOKEN", "SALESFORCE_TOKEN",
                "WEBHOOK_SECRET", "PLAYBOOK_UNSUBSCRIBE_SECRET"):
        monkeypatch.setenv(var, "secret-value")
    monkeypatch.setenv("WAREHOUSE_URL", "sqlite://")
    settings = load_settings(ROOT / "config.example.yaml")
    assert settings.timezone == "Asia/Tokyo" and settings.connectors and settings.connectors.email
    assert "secret-value" not in repr(settings)                  # secrets are SecretStr


def test_missing_secret_names_the_variable_not_a_value(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    (tmp_path / "config.yaml").write_text('connectors:\n  slack: {token: "${SLACK_BOT_TOKEN}"}\n')
    r = CliRunner().invoke(main, ["--config", str(tmp_path / "config.yaml"), "validate"])
    assert r.exit_code == 1
    assert "config.yaml:2:18: environment variable `SLACK_BOT_TOKEN` is not set" in r.stderr
    assert "Traceback" not in r.output


def test_committed_schema_is_current() -> None:
    r = CliRunner().invoke(main, ["schema"])
    assert r.exit_code == 0
    schema = json.loads(r.stdout)
    assert schema["properties"]["trigger"]
    assert schema == json.loads((ROOT / "playbook.schema.json").read_text()), \
        "run `playbook schema -o playbook.schema.json`"


def test_init_then_validate(tmp_path) -> None:  # noqa: ANN001
    runner = CliRunner()
    r = runner.invoke(main, ["init", str(tmp_path / "cs"), "--accounts", "40"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["--config", str(tmp_path / "cs" / "config.yaml"), "validate"])
    assert r.exit_code == 0 and "7 of 7 playbook(s) valid" in r.stdout
    r = runner.invoke(main, ["init", str(tmp_path / "cs")])
    assert r.exit_code == 1


def test_usage_error_exits_2() -> None:
    assert CliRunner().invoke(main, ["run", "--format", "yaml"]).exit_code == 2
    assert CliRunner().invoke(main, ["no-such-command"]).exit_code == 2
