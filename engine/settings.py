"""config.yaml + environment -> typed, frozen Settings (§3)."""

from __future__ import annotations

import os
import re
import zoneinfo
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator,
                      model_validator)

from engine.errors import ConfigError, Diagnostic
from engine.spec.diagnostics import validation_diagnostics
from engine.spec.yamlmarks import Marks, load_yaml
from engine.store.schema import CORE_FIELDS, FIELD_TYPES

FieldType = Literal["string", "integer", "number", "boolean", "date", "datetime"]
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
DURATION = re.compile(r"^(\d+)([smhdw])$")


class Model(BaseModel):
    """Base for every configuration model: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SqlSource(Model):
    url: str
    query: str


class Source(Model):
    """One place synced data comes from; exactly one of csv, jsonl, sql."""

    entity: Literal["accounts", "contacts", "usage", "goals"]
    csv: str | None = None
    jsonl: str | None = None
    sql: SqlSource | None = None
    mode: Literal["snapshot", "incremental"] | None = Field(
        None, description="snapshot: rows absent are removed; incremental: upsert only. "
                          "Default: incremental when the SQL query uses :since, else snapshot.")
    schedule: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "Source":
        kinds = [k for k in ("csv", "jsonl", "sql") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a source needs exactly one of `csv`, `jsonl`, `sql`")
        return self

    @property
    def kind(self) -> str:
        return "csv" if self.csv else "jsonl" if self.jsonl else "sql"

    @property
    def incremental(self) -> bool:
        if self.mode is not None:
            return self.mode == "incremental"
        return bool(self.sql and ":since" in self.sql.query)


class SmtpSettings(Model):
    host: str
    port: int = 587
    starttls: bool = True
    ssl: bool = False
    username: str | None = None
    password: SecretStr | None = None
    timeout: float = 30.0


class EmailConnector(Model):
    smtp: SmtpSettings
    from_: str = Field(alias="from")
    reply_to: str | None = None
    unsubscribe_url: str | None = Field(None, description="base URL of the one-click unsubscribe endpoint")
    unsubscribe_secret: SecretStr | None = None


class SlackConnector(Model):
    token: SecretStr | None = None
    base_url: str = "https://slack.com/api/"
    webhook_url: SecretStr | None = None
    timeout: float = 30.0


class HubspotSettings(Model):
    token: SecretStr
    base_url: str = "https://api.hubapi.com"
    owner_by_email: bool = True


class SalesforceSettings(Model):
    instance_url: str
    token: SecretStr
    api_version: str = "v60.0"
    external_id_field: str = "Playbook_Key__c"


class TasksConnector(Model):
    default: Literal["builtin", "hubspot", "salesforce"] | None = None
    hubspot: HubspotSettings | None = None
    salesforce: SalesforceSettings | None = None


class WebhookConnector(Model):
    secret: SecretStr | None = None
    timeout: float = 10.0


class Connectors(Model):
    email: EmailConnector | None = None
    slack: SlackConnector | None = None
    tasks: TasksConnector | None = None
    webhook: WebhookConnector | None = None


class Delivery(Model):
    max_attempts: int = Field(8, ge=1)
    backoff_base: str = "30s"
    backoff_max: str = "1h"
    expire_after: str = "3d"
    lease: str = "5m"


class Defaults(Model):
    schedule: str = "0 9 * * 1-5"
    sync_schedule: str | None = Field(None, description="cron for syncing every source without its own schedule")
    max_actions_per_run: int | None = Field(None, ge=1)
    max_data_age: str | None = Field(None, description="a playbook does not evaluate when the data it reads "
                                                       "was synced longer ago than this (e.g. 2d)")

    @field_validator("max_data_age")
    @classmethod
    def _age(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    _cron = field_validator("schedule", "sync_schedule")(classmethod(lambda cls, v: check_cron(v)))


class Settings(Model):
    """The whole configuration; paths are absolute (resolved against the config file's folder)."""

    timezone: str = "UTC"
    database: str = "sqlite:///playbook.db"
    playbooks: Path = Path("playbooks")
    templates: Path = Path("playbooks/templates")
    outbox_dir: Path = Path("outbox")
    fields: dict[Literal["accounts", "contacts", "goals"], dict[str, FieldType]] = Field(default_factory=dict)
    segments: dict[str, str] = Field(default_factory=dict)
    sources: list[Source] = Field(default_factory=list)
    connectors: Connectors | None = None
    defaults: Defaults = Field(default_factory=Defaults)
    delivery: Delivery = Field(default_factory=Delivery)
    base_dir: Path = Field(Path("."), exclude=True)
    config_file: str = Field("config.yaml", exclude=True)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            from engine.errors import suggest

            close = suggest(v, zoneinfo.available_timezones())
            raise ValueError(f"unknown time zone `{v}`: "
                             + (f"did you mean `{close}`?" if close else "use an IANA name such as Europe/Paris")
                             ) from None
        return v

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for entity, fields in v.items():
            for name in fields:
                if not _NAME.match(name):
                    raise ValueError(f"field name `{name}` must match [a-z_][a-z0-9_]*")
                if name in CORE_FIELDS[entity] or name in ("removed_at", "synced_at"):
                    raise ValueError(f"`{name}` is already a core field of {entity}; pick another name")
        return v

    @field_validator("segments")
    @classmethod
    def _segments(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not re.match(r"^[A-Za-z0-9_-]+$", name):
                raise ValueError(f"segment name `{name}` may only use letters, digits, _ and -")
        return v

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def local_sinks(self) -> bool:
        """True when no connectors are configured: delivery goes to files under outbox/."""
        return self.connectors is None

    def resolve(self, path: str | Path) -> Path:
        """A user path from the config, made absolute against the config file's folder."""
        p = Path(path)
        return p if p.is_absolute() else (self.base_dir / p)

    def database_url(self) -> str:
        """The database URL with a relative SQLite path resolved against the config's folder."""
        url = self.database
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and ":memory:" not in url:
            rel = url[len("sqlite:///"):]
            if rel:
                return "sqlite:///" + str(self.resolve(rel))
        return url

    def custom_fields(self) -> dict[str, dict[str, str]]:
        return {k: dict(v) for k, v in self.fields.items()}


def interpolate_env(data: Any, marks: Marks, env: dict[str, str] | None = None) -> Any:
    """Replace ${VAR} in string values (not keys); a missing variable is an error naming it, never a value."""
    env = dict(os.environ) if env is None else env
    problems: list[Diagnostic] = []

    def walk(node: Any, path: tuple[Any, ...]) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, path + (k,)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, path + (i,)) for i, v in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            def sub(m: re.Match[str]) -> str:
                name = m.group(1)
                if name not in env:
                    problems.append(marks.diagnostic(path, f"environment variable `{name}` is not set",
                                                     f"export {name}=… before running, or remove it"))
                    return ""
                return env[name]
            return _ENV.sub(sub, node)
        return node

    result = walk(data, ())
    if problems:
        raise ConfigError(problems)
    return result


def find_config(path: str | Path | None) -> Path:
    """--config PATH, else $PLAYBOOK_CONFIG, else ./config.yaml."""
    if path:
        return Path(path)
    if os.environ.get("PLAYBOOK_CONFIG"):
        return Path(os.environ["PLAYBOOK_CONFIG"])
    return Path("config.yaml")


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Load and validate the configuration; every problem raised as ConfigError with file:line:col."""
    file = find_config(path)
    shown = str(file)
    if not file.exists():
        raise ConfigError(Diagnostic(shown, None, None, "configuration file not found",
                                     "pass --config PATH, set PLAYBOOK_CONFIG, or run `playbook init DIR`"))
    data, marks = load_yaml(file.read_text(encoding="utf-8"), shown)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(marks.diagnostic((), "the configuration must be a mapping of keys"))
    data = interpolate_env(data, marks, env)
    for reserved in ("base_dir", "config_file"):
        if reserved in data:
            raise ConfigError(marks.diagnostic((reserved,), f"unknown key `{reserved}`", key=True))
    try:
        settings = Settings.model_validate({**data, "base_dir": file.resolve().parent, "config_file": shown})
    except ValidationError as exc:
        raise ConfigError(validation_diagnostics(exc, Settings, marks)) from None
    return settings.model_copy(update={
        "playbooks": settings.resolve(settings.playbooks),
        "templates": settings.resolve(settings.templates),
        "outbox_dir": settings.resolve(settings.outbox_dir),
    })


def check_cron(text: str | None) -> str | None:
    """A five-field cron expression, or ValueError saying how to write one."""
    if text is not None:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(text)
        except ValueError as exc:
            raise ValueError(f"`{text}` is not a cron expression ({exc}); "
                             "write five fields: minute hour day month weekday") from None
    return text


def parse_duration(text: str) -> int:
    """'30m', '12h', '3d', '2w' (and '45s') -> seconds; ValueError with a clear message otherwise."""
    m = DURATION.match(str(text).strip())
    if not m:
        raise ValueError(f"`{text}` is not a duration; write e.g. 30m, 12h, 3d or 2w")
    n, unit = int(m.group(1)), m.group(2)
    return n * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]


assert set(FIELD_TYPES) == {"string", "integer", "number", "boolean", "date", "datetime"}
