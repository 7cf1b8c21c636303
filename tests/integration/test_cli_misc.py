"""Small CLI and configuration contracts: the example config, the JSON Schema, init, exit codes, the warnings
of validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import Workspace
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
    assert r.exit_code == 0 and "9 of 9 playbook(s) valid" in r.stdout and "warning" not in r.stderr
    r = runner.invoke(main, ["init", str(tmp_path / "cs")])
    assert r.exit_code == 1


def test_usage_error_exits_2() -> None:
    assert CliRunner().invoke(main, ["run", "--format", "yaml"]).exit_code == 2
    assert CliRunner().invoke(main, ["no-such-command"]).exit_code == 2


NEVER_SYNCS = ("warning: `playbook start` will evaluate the playbooks but never sync these sources: neither "
               "`defaults.sync_schedule` nor any source's `schedule` is set (add `sync_schedule: \"0 * * * *\"` "
               "under `defaults:` to sync hourly, or a `schedule:` to a source, or run `playbook sync` yourself)")


def test_validate_warns_when_start_would_never_sync(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    r = ws.cli("validate")                                    # a warning leaves the exit code at 0
    assert r.stderr.splitlines() == [f"{ws.config}:10:1: {NEVER_SYNCS}"]
    assert "0 of 0 playbook(s) valid, 1 warning(s)" in r.stdout
    doc = json.loads(ws.cli("validate", "--format", "json").stdout)
    assert doc["errors"] == [] and [(w["file"], w["line"], w["col"]) for w in doc["warnings"]] == [
        (ws.config, 10, 1)]
    assert doc["warnings"][0]["message"].startswith("`playbook start` will evaluate the playbooks but never sync")
    ws.playbook("broken", "id: broken\nname: B\ntrigger: {when: account.arrr > 1}\nactions: []\n")
    r = ws.cli("validate", expect=1)                          # errors first (stdout), then the warning
    assert "broken.yaml:3:17: unknown field `account.arrr`" in r.stdout and NEVER_SYNCS in r.stderr
    doc = json.loads(ws.cli("validate", "--format", "json", expect=1).stdout)
    assert len(doc["errors"]) == 2 and len(doc["warnings"]) == 1


@pytest.mark.parametrize("extra", [
    'defaults: {sync_schedule: "*/15 * * * *"}\n',
    "sources:\n  - {entity: accounts, csv: data/accounts.csv, schedule: '0 * * * *'}\n",
])
def test_no_warning_when_start_syncs(ws_sqlite: Workspace, extra: str) -> None:
    ws = ws_sqlite
    config = Path(ws.config)
    if extra.startswith("sources"):
        base = config.read_text()
        config.write_text(base[:base.index("sources:")] + extra)
    else:
        ws.configure(extra)
    r = ws.cli("validate")
    assert r.stderr == "" and "warning" not in r.stdout
    assert json.loads(ws.cli("validate", "--format", "json").stdout)["warnings"] == []


def test_no_warning_without_sources(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("timezone: UTC\n")
    (tmp_path / "playbooks").mkdir()
    r = CliRunner().invoke(main, ["--config", str(tmp_path / "config.yaml"), "validate"])
    assert r.exit_code == 0 and r.stderr == ""


def test_a_missing_playbooks_folder_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("timezone: UTC\nplaybooks: playbok/\n")
    for args in (["validate"], ["run", "--dry-run"]):
        r = CliRunner().invoke(main, ["--config", str(tmp_path / "config.yaml"), *args])
        assert r.exit_code == 0
        assert "config.yaml:2:1: warning: no playbooks: `playbok` does not exist (correct " \
               "`playbooks:`, or create the folder)" in r.stderr
