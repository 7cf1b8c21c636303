"""Secrets never printed (issue 24): database and SQL-source passwords, however written, and values from
`${ENV}` appear in no error message, `validate` output or JSON log line; messages name the variable instead."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

from conftest import Workspace
from engine.cli import main
from engine.logs import HumanFormatter, JsonFormatter
from engine.redact import mask_url
from engine.settings import load_settings

PASSWORDS = ["PG-1212@pw-tail", "pa:ss/wo@rd-77", "s3cr3t/slash-99", "colon:secret-88", "plainsecret-55"]


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def written_forms(password: str, port: int) -> list[tuple[str, list[str]]]:
    """(URL, texts that must never print) for one password written every way a user might."""
    from urllib.parse import quote

    encoded = quote(password, safe="")
    pieces = [p for p in password.replace("@", " ").replace(":", " ").replace("/", " ").split() if len(p) >= 4]
    never = [password, encoded, *pieces]
    return [
        (f"postgresql+psycopg://playbook:{password}@127.0.0.1:{port}/db", never),       # as typed
        (f"postgresql+psycopg://playbook:{encoded}@127.0.0.1:{port}/db", never),        # percent-encoded
        (f"postgresql+psycopg://playbook@127.0.0.1:{port}/db?password={encoded}", never),   # in the query
        (f"postgresql+psycopg://playbook:{encoded}@no-such-host.invalid/db", never),    # DNS fails
    ]


def run_cli(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> str:
    result = ws.runner.invoke(main, ["--config", ws.config, *args], env=env, catch_exceptions=False)
    return result.output + (result.stderr if result.stderr_bytes is not None else "")


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_database_password_is_never_printed_however_written(ws_sqlite: Workspace, password: str) -> None:
    for url, never in written_forms(password, unused_port()):
        ws_sqlite.database = url.replace('"', '\\"')
        ws_sqlite.configure("")
        for command in (["validate"], ["validate", "--format", "json"], ["run"], ["sync"], ["outbox", "list"]):
            text = run_cli(ws_sqlite, *command)
            for secret in never:
                assert secret not in text, (url, command, secret, text)


def test_a_password_with_an_unencoded_at_is_refused_before_connecting(ws_sqlite: Workspace) -> None:
    ws_sqlite.database = "postgresql+psycopg://playbook:pw@PG-1212@127.0.0.1/db"
    ws_sqlite.configure("")
    text = run_cli(ws_sqlite, "validate")
    assert "percent-encode it" in text and "PG-1212" not in text and "resolve host" not in text


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_sql_source_password_is_never_printed(ws_sqlite: Workspace, password: str) -> None:
    port = unused_port()
    for url, never in written_forms(password, port)[1:]:       # as typed with `@` is refused by validate
        ws_sqlite.configure("")
        with open(ws_sqlite.config, "a") as fh:
            fh.write(f'  - {{entity: usage, sql: {{url: "{url}", query: "select 1"}}}}\n')
        text = run_cli(ws_sqlite, "sync")
        assert "the query failed" in text or "percent-encode" in text, text
        for secret in never:
            assert secret not in text, (url, secret, text)


@pytest.mark.parametrize("key, yaml", [
    ("timezone", 'timezone: "${LEAKED}"'),
    ("defaults.schedule", 'defaults: {schedule: "${LEAKED}"}'),
    ("delivery.max_attempts", 'delivery: {max_attempts: "${LEAKED}"}'),
    ("delivery.lease", 'delivery: {lease: "${LEAKED}"}'),
    ("outbox_dir", 'sources: [{entity: accounts, csv: "${LEAKED}"}]'),
    ("connectors.email.from", 'connectors: {email: {smtp: {host: x}, from: "${LEAKED}"}}'),
    ("connectors.slack.base_url", 'connectors: {slack: {token: t, base_url: "${LEAKED}"}}'),
    ("outbound.allow", 'outbound: {allow: ["${LEAKED}"]}'),
    ("values", 'values: {"${LEAKED}": [a]}'),
])
def test_a_value_from_the_environment_is_named_never_echoed(tmp_path: Path, key: str, yaml: str) -> None:
    secret = "dbpw-9f8e7d6c5b4a 1/x"
    (tmp_path / "config.yaml").write_text(yaml + "\n")
    from click.testing import CliRunner

    for command in (["validate"], ["validate", "--format", "json"], ["run"], ["sync"]):
        result = CliRunner().invoke(main, ["--config", str(tmp_path / "config.yaml"), *command],
                                    env={"LEAKED": secret}, catch_exceptions=False)
        text = result.output + result.stderr
        assert secret not in text and "dbpw-9f8e7d6c5b4a" not in text, (key, command, text)


def test_the_time_zone_message_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text('timezone: "${TZ_SECRET}"\n')
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["--config", str(tmp_path / "config.yaml"), "validate"],
                                env={"TZ_SECRET": "dbpw-0123456789"})
    assert "unknown time zone `${TZ_SECRET}`" in result.stderr and "dbpw" not in result.stderr


def test_log_lines_never_carry_a_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAREHOUSE_PASSWORD", "wh-pass%40word%2F42")
    (tmp_path / "config.yaml").write_text(
        'database: "postgresql+psycopg://app:pa%3Ass%40word-77@db.internal/app?sslpassword=ssl-secret-9"\n'
        'sources:\n  - {entity: usage, sql: {url: "postgresql+psycopg://wh:${WAREHOUSE_PASSWORD}@wh.internal/x", '
        'query: "select 1"}}\n')
    load_settings(tmp_path / "config.yaml")
    record = logging.LogRecord("playbook.sync", logging.ERROR, __file__, 1,
                               "sync failed: authentication failed with password '%s'; dsn %s; warehouse %s", (
                                   "pa:ss@word-77", "postgresql://app:pa%3Ass%40word-77@db.internal?sslpassword=x",
                                   "wh-pass@word/42"), None)
    record.detail = "password=ssl-secret-9 and ssl-secret-9"
    for formatter in (JsonFormatter(), HumanFormatter()):
        line = formatter.format(record)
        for secret in ("pa:ss@word-77", "pa%3Ass%40word-77", "ssl-secret-9", "wh-pass@word/42", "wh-pass%40word%2F42"):
            assert secret not in line, (secret, line)
    data = json.loads(JsonFormatter().format(record))
    assert data["msg"].startswith("sync failed") and "${WAREHOUSE_PASSWORD}" in data["msg"]


def test_an_unencoded_at_from_the_environment_is_refused_without_echo(tmp_path: Path) -> None:
    from click.testing import CliRunner

    (tmp_path / "config.yaml").write_text('database: "postgresql+psycopg://app:${PGPW}@db.internal/app"\n')
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "config.yaml"), "run"],
                                env={"PGPW": "PG-1212@secret-tail"})
    assert result.exit_code == 1 and "percent-encode" in result.stderr
    assert "PG-1212" not in result.stderr and "secret-tail" not in result.stderr


@pytest.mark.parametrize("url, shown", [
    ("postgresql://u:p@ss/w:rd@host:5432/db", "postgresql://u:***@host:5432/db"),
    ("postgresql://u:p%40ss@host/db", "postgresql://u:***@host/db"),
    ("postgresql://u@host/db?password=abc%20d&sslmode=require", "postgresql://u@host/db?password=***&sslmode=require"),
    ("mysql://u:pw@host/db", "mysql://u:***@host/db"),
])
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_a_receiver_echoing_a_secret_does_not_put_it_in_the_outbox(ws_sqlite: Workspace, httpserver) -> None:  # noqa: ANN001
    """What a receiver answers becomes the action's recorded detail; a secret of the configuration in it is
    named, never stored or shown."""
    secret = "whsec-echoed-4242"
    httpserver.expect_request("/hook").respond_with_data(f"bad signature, expected key {secret}", status=400)
    ws_sqlite.configure("outbound: {allow: [127.0.0.1]}\nconnectors:\n  webhook: {secret: \"${HOOK_SECRET}\"}\n")
    ws_sqlite.playbook("hook", f"""
        id: hook
        name: Hook
        activation: fire
        trigger: {{when: account.arr < 100}}
        actions:
          - webhook: {{url: "{httpserver.url_for('/hook')}", body: {{a: 1}}}}
        """)
    ws_sqlite.data("accounts", [{"id": "A1", "name": "Acme", "arr": 10}])
    env = {"HOOK_SECRET": secret}
    ws_sqlite.runner.invoke(main, ["--config", ws_sqlite.config, "sync"], env=env, catch_exceptions=False)
    ws_sqlite.runner.invoke(main, ["--config", ws_sqlite.config, "run", "--now", "2026-03-02T09:00"], env=env,
                            catch_exceptions=False)
    assert len(httpserver.log) == 1
    listing = ws_sqlite.runner.invoke(main, ["--config", ws_sqlite.config, "outbox", "list", "--format", "json"],
                                      env=env, catch_exceptions=False).output
    history = ws_sqlite.runner.invoke(main, ["--config", ws_sqlite.config, "history", "--attempts", "--format",
                                             "json"], env=env, catch_exceptions=False).output
    assert "${HOOK_SECRET}" in listing
    assert secret not in listing and secret not in history
