"""The configuration: what `load_settings` accepts is usable at run time, and what it rejects is said at its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.clock import parse_duration
from engine.errors import ConfigError
from engine.settings import Settings, load_settings


def load(tmp_path: Path, text: str) -> Settings:
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    return load_settings(tmp_path / "config.yaml", env={})


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return [str(d).replace(str(tmp_path / "config.yaml"), "config.yaml") for d in info.value.diagnostics]


def test_delivery_durations_that_load_are_the_durations_the_dispatcher_reads(tmp_path: Path) -> None:
    s = load(tmp_path, "delivery: {backoff_base: 45s, backoff_max: 2h, expire_after: 1mo, lease: 90s}\n")
    d = s.delivery
    assert [parse_duration(v).approx_seconds() for v in (d.backoff_base, d.backoff_max, d.expire_after, d.lease)] \
        == [45, 7200, 30 * 86400, 90]


@pytest.mark.parametrize(("text", "message"), [
    ("delivery: {backoff_max: 1 hour}\n",
     "config.yaml:1:25: delivery.backoff_max: `1 hour` is not a duration; write e.g. 30m, 12h, 3d, 2w or 1mo"),
    ("delivery:\n  backoff_base: abc\n",
     "config.yaml:2:17: delivery.backoff_base: `abc` is not a duration; write e.g. 30m, 12h, 3d, 2w or 1mo"),
    ("delivery: {lease: 0s}\n", "config.yaml:1:19: delivery.lease: `0s` is zero; write a duration such as 5m"),
    ("defaults: {sync_schedule: daily}\n",
     "config.yaml:1:27: defaults.sync_schedule: `daily` is not a cron expression (Wrong number of fields; got 1, "
     "expected 5); write five fields: minute hour day month weekday"),
])
def test_a_setting_the_engine_could_not_use_is_an_error_at_its_line(tmp_path: Path, text: str, message: str) -> None:
    assert problems(tmp_path, text) == [message]


@pytest.mark.parametrize(("url", "message"), [
    ("not a url", "not a database URL; write e.g. sqlite:///playbook.db or postgresql+psycopg://user@host/db"),
    ("oracle://scott:tiger@db/orcl", "the engine runs on SQLite or PostgreSQL, not oracle"),
    ("postgresql+nodriver://scott:tiger@db/cs", "`postgresql+nodriver` is not a database driver SQLAlchemy knows"),
])
def test_a_database_url_the_engine_cannot_open_is_an_error_that_never_shows_the_password(
        tmp_path: Path, url: str, message: str) -> None:
    [problem] = problems(tmp_path, f"database: '{url}'\n")
    assert problem == f"config.yaml:1:11: database: {message}"
    assert "tiger" not in problem


@pytest.mark.parametrize("url", ["sqlite:///playbook.db", "sqlite:///:memory:", "sqlite:////tmp/x.db",
                                 "postgresql+psycopg://cs@db.internal/cs"])
def test_sqlite_and_postgresql_urls_load(tmp_path: Path, url: str) -> None:
    assert load(tmp_path, f"database: '{url}'\n").database == url


def test_values_are_declared_for_core_and_custom_string_fields_and_metrics_for_usage(tmp_path: Path) -> None:
    s = load(tmp_path, "fields: {accounts: {segment_name: string}}\n"
                       "values:\n"
                       "  contacts.role: [champion, user]\n"
                       "  accounts.segment_name: [smb, enterprise]\n"
                       "  goals.status: [open, achieved, missed]\n"
                       "metrics: [logins, api_calls]\n")
    assert s.declared_values("contacts") == {"role": ("champion", "user")}
    assert s.declared_values("accounts") == {"segment_name": ("smb", "enterprise")}
    assert s.declared_values("goals") == {"status": ("open", "achieved", "missed")}
    assert s.declared_values("usage") == {"metric": ("logins", "api_calls")}
    assert load(tmp_path, "timezone: UTC\n").declared_values("usage") == {}


@pytest.mark.parametrize(("text", "message"), [
    ("values:\n  contacts.rol: [a]\n",
     "config.yaml:2:3: values.contacts.rol: unknown field `rol` of contacts (did you mean `role`?)"),
    ("values: {accounts.tier: [a], usage.metric: [logins]}\n",
     "config.yaml:1:30: values.usage.metric: usage metrics are declared under `metrics:` "
     "(e.g. metrics: [logins, active_users])"),
    ("values:\n  goals.due_date: ['2026-01-01']\n",
     "config.yaml:2:3: values.goals.due_date: `goals.due_date` is of type date; only string fields have declared "
     "values"),
    ("values:\n  role: [a]\n",
     "config.yaml:2:3: values.role: write the key as ENTITY.FIELD (e.g. contacts.role or accounts.lifecycle_stage)"),
    ("values:\n  contacts.role: []\n",
     "config.yaml:2:18: values.contacts.role: must not be empty (add at least one item under `values.contacts.role:`)"),
    ("metrics: []\n", "config.yaml:1:10: metrics: must not be empty (add at least one item under `metrics:`)"),
])
def test_a_values_key_that_names_no_string_field_is_an_error_at_the_key(tmp_path: Path, text: str,
                                                                        message: str) -> None:
    assert problems(tmp_path, text) == [message]


def test_a_values_key_is_not_checked_against_fields_that_are_invalid_themselves(tmp_path: Path) -> None:
    assert problems(tmp_path, "fields: {accounts: {segment_name: strin}}\nvalues: {accounts.segment_name: [a]}\n") \
        == ["config.yaml:1:35: fields.accounts.segment_name: `strin` is not one of 'string', 'integer', 'number', "
            "'boolean', 'date' or 'datetime' (did you mean `string`?)"]


def test_the_config_time_zone_suggests_the_iana_name_for_an_abbreviation(tmp_path: Path) -> None:
    assert problems(tmp_path, "timezone: JST\n") == [
        "config.yaml:1:11: timezone: unknown time zone `JST`: did you mean `Asia/Tokyo`?"]


@pytest.mark.parametrize(("block", "message"), [
    ("email: {smtp: {host: h}, from: 'Customer Success cs@example.com'}",
     "connectors.email.from: `Customer Success cs@example.com` is not an email address"),
    ("email: {smtp: {host: h}, from: cs@example.com, reply_to: 'cs at example.com'}",
     "connectors.email.reply_to: `cs at example.com` is not an email address"),
    ("email: {smtp: {host: h, port: 70000}, from: cs@example.com}",
     "connectors.email.smtp.port: Input should be less than or equal to 65535"),
    ("email: {smtp: {host: h}, from: cs@example.com, unsubscribe_url: cs.example.com/u}",
     "connectors.email.unsubscribe_url: the URL must start with http:// or https://"),
    ("slack: {token: ''}", "connectors.slack: the slack connector needs `token` (a bot token) or `webhook_url`"),
    ("slack: {webhook_url: 'hooks.slack.com/services/T/B/secret'}",
     "connectors.slack.webhook_url: the URL must start with http:// or https://"),
    ("webhook: {timeout: 0}", "connectors.webhook.timeout: Input should be greater than 0"),
    ("hubspot: {token: t, base_url: api.hubapi.com}",
     "connectors.hubspot.base_url: the URL must start with http:// or https://"),
])
def test_a_connector_block_its_connector_could_not_use_is_an_error(tmp_path: Path, block: str, message: str) -> None:
    [problem] = problems(tmp_path, f"connectors:\n  {block}\n")
    assert problem.split(": ", 1)[1] == message and "secret" not in problem


def test_a_sql_source_url_must_be_a_url_with_its_driver_installed(tmp_path: Path) -> None:
    assert problems(tmp_path, "sources:\n  - {entity: usage, sql: {url: warehouse, query: 'select 1'}}\n") == [
        "config.yaml:2:32: sources.0.sql.url: not a database URL; write e.g. sqlite:///playbook.db or "
        "postgresql+psycopg://user@host/db"]
    assert load(tmp_path, "sources:\n  - {entity: usage, sql: {url: 'sqlite:///w.db', query: 'select 1'}}\n").sources
