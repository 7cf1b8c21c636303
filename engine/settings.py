"""config.yaml + environment -> typed, frozen Settings (§3)."""

from __future__ import annotations

import os
import re
import zoneinfo
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, PrivateAttr, Tag,
                      ValidationError, ValidationInfo, create_model, field_validator, model_validator)
from pydantic_core import PydanticCustomError

from engine.clock import CronText, DurationText, parse_duration, suggest_zone
from engine.contact_policy import ContactPolicyConfig
from engine.datamodel import BOOKKEEPING, MAX_COUNT, CORE_FIELDS, ENTITY_OF, Entity, FieldType, SubjectEntity, fields_of
from engine.errors import ConfigError, Diagnostic, UserError
from engine.outbound import OutboundConfig
from engine.plugins import LocalSink, Registry, registry
from engine import redact
from engine.spec.diagnostics import validation_diagnostics
from engine.spec.yamlfile import Positions, load_yaml
from engine.textfile import read_text

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SHARE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_share(text: str) -> float:
    """A share written as a percentage (`10%`, `2.5%`, `100%`) as a fraction (0.1, 0.025, 1.0)."""
    match = _SHARE.match(text)
    if not match or float(match.group(1)) > 100:
        raise ValueError(f"`{text}` is not a share; write a percentage from 0% to 100%, e.g. 10%")
    return float(match.group(1)) / 100


def _share(value: Any) -> str:
    if not isinstance(value, str):      # 10 or 0.1: rows or a fraction? only a percentage is unambiguous
        raise ValueError(f"`{value}` is not a share; write a percentage from 0% to 100%, e.g. 10%")
    parse_share(value)
    return value.strip()


ShareText = Annotated[str, BeforeValidator(_share)]
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class Model(BaseModel):
    """Base for every configuration model: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Source(Model):
    """One place synced data comes from: an entity and exactly one source plugin's key (`csv: data/a.csv`,
    `sql: {url, query}`, …). The model `settings_model()` validates with has one optional field per installed
    source plugin."""

    entity: Entity
    mode: Literal["snapshot", "incremental"] | None = Field(
        None, description="snapshot: rows absent are removed; incremental: upsert only. "
                          "Default: the source's own (incremental for a SQL query that uses :since).")
    schedule: CronText | None = None
    max_removal: ShareText | None = Field(
        None, description="the share of the entity's rows a snapshot sync may mark removed (e.g. 25%); default: "
                          "`sync.max_removal`")

    @model_validator(mode="after")
    def _one_kind(self) -> Source:
        kinds = [k for k in registry().sources if getattr(self, k, None) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a source needs exactly one of {', '.join(f'`{k}`' for k in registry().sources)}")
        return self

    @property
    def kind(self) -> str:
        """The source plugin's name (`csv`, `jsonl`, `sql`, …)."""
        return next(k for k in registry().sources if getattr(self, k, None) is not None)

    @property
    def plugin(self) -> Any:
        return registry().sources[self.kind]

    @property
    def config(self) -> Any:
        """The source plugin's options."""
        return getattr(self, self.kind)

    @property
    def incremental(self) -> bool:
        if self.mode is not None:
            return self.mode == "incremental"
        return self.plugin.incremental(self.config)


class DeliverySettings(Model):
    max_attempts: int = Field(8, ge=1, le=1000)
    backoff_base: DurationText = "30s"
    backoff_max: DurationText = "1h"
    expire_after: DurationText = "3d"
    lease: DurationText = "5m"

    @field_validator("lease")
    @classmethod
    def _lease(cls, v: str) -> str:
        if not parse_duration(v):           # another worker could take the action back at once
            raise ValueError(f"`{v}` is zero; write a duration such as 5m")
        return v


class SyncSettings(Model):
    max_removal: ShareText = Field("10%", description="a snapshot sync that would mark removed more than this "
                                                     "share of an entity's rows is refused for that entity")


class Defaults(Model):
    schedule: CronText = "0 9 * * 1-5"
    sync_schedule: CronText | None = Field(None, description="cron for syncing every source without its own "
                                                             "schedule")
    max_actions_per_run: int | None = Field(None, ge=1, le=MAX_COUNT)
    max_total_actions_per_run: int | None = Field(
        None, ge=1, le=MAX_COUNT, description="a run that would plan more actions and task closures than this "
                                             "across all its playbooks plans nothing")
    max_data_age: DurationText | None = Field(None, description="a playbook does not evaluate when the data it "
                                                                "reads was synced longer ago than this (e.g. 2d)")


def _value_key(key: str, info: ValidationInfo) -> str:
    """A `values:` key: `entity.field`, a string field (core, or declared under `fields:`) of accounts, contacts
    or goals. Problems are reported at the key, with the nearest name."""
    from engine.errors import suggest

    entity, dot, name = key.partition(".")
    entities = tuple(ENTITY_OF.values())
    if not dot or not name:
        raise PydanticCustomError("value_error", "write the key as ENTITY.FIELD",
                                  {"hint": "e.g. contacts.role or accounts.lifecycle_stage"})
    if entity == "usage" and name == "metric":
        raise PydanticCustomError("value_error", "usage metrics are declared under `metrics:`",
                                  {"hint": "e.g. metrics: [logins, active_users]"})
    if entity not in entities:
        near = suggest(entity, entities)
        raise PydanticCustomError("value_error", f"`{entity}` is not accounts, contacts or goals",
                                  {"hint": f"did you mean `{near}.{name}`?" if near else
                                   "declared values are for fields of accounts, contacts and goals"})
    if "fields" not in info.data:               # `fields:` is invalid itself (and reported): nothing to check against
        return key
    fields = fields_of(entity, {e: dict(f) for e, f in info.data["fields"].items()})
    if name not in fields:
        near = suggest(name, [f for f, t in fields.items() if t == "string"])
        raise PydanticCustomError("value_error", f"unknown field `{name}` of {entity}",
                                  {"hint": f"did you mean `{near}`?" if near else
                                   f"declare it under fields.{entity}, or use one of its string fields"})
    if fields[name] != "string":
        raise PydanticCustomError("value_error", f"`{entity}.{name}` is of type {fields[name]}; only string fields "
                                  "have declared values", {})
    return key


class Settings(Model):
    """The whole configuration; paths are absolute (resolved against the config file's folder)."""

    timezone: str = "UTC"
    default_locale: str = Field("en", description="the locale of messages whose recipient has none (§16): "
                                                  "`en`, `ja`, `pt_BR`, …")
    database: str = "sqlite:///playbook.db"
    playbooks: Path = Path("playbooks")
    templates: Path = Path("playbooks/templates")
    outbox_dir: Path = Path("outbox")
    fields: dict[SubjectEntity, dict[str, FieldType]] = Field(default_factory=dict)
    segments: dict[str, str] = Field(default_factory=dict)
    values: dict[Annotated[str, AfterValidator(_value_key)], Annotated[list[str], Field(min_length=1)]] = Field(
        default_factory=dict, description="`entity.field` -> the values that string field may hold (§17)")
    metrics: Annotated[list[str], Field(min_length=1)] | None = Field(
        None, description="the usage metrics data may hold; unset: any (§17)")
    sources: list[Source] = Field(default_factory=list)
    connectors: Any = Field(None, description="connector name -> its block (engine/plugins.py)")
    outbound: OutboundConfig = Field(default_factory=OutboundConfig,
                                     description="the non-public hosts and networks a webhook may reach")
    defaults: Defaults = Field(default_factory=Defaults)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    contact_policy: ContactPolicyConfig | None = Field(
        None, description="time zones, quiet hours, business days and frequency caps for messages to customers")
    base_dir: Path = Field(Path("."), exclude=True)
    config_file: str = Field("config.yaml", exclude=True)
    _positions: Positions | None = PrivateAttr(None)      # where each key is in the file, for warnings

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            close = suggest_zone(v)
            raise ValueError(f"unknown time zone `{v}`: "
                             + (f"did you mean `{close}`?" if close else "use an IANA name such as Europe/Paris")
                             ) from None
        return v

    @field_validator("default_locale")
    @classmethod
    def _locale(cls, v: str) -> str:
        from engine.locales import parse_locale

        loc = parse_locale(v)
        if loc is None:
            raise ValueError(f"unknown locale `{v}`: use a language code such as en, ja or pt_BR")
        return str(loc)

    @field_validator("contact_policy")
    @classmethod
    def _zone_fields(cls, v: ContactPolicyConfig | None, info: ValidationInfo) -> ContactPolicyConfig | None:
        """`timezone_from` names string fields of contacts or accounts (core, or declared under `fields:`)."""
        if v is None or "fields" not in info.data:
            return v
        from engine.errors import suggest

        declared = {e: dict(f) for e, f in info.data["fields"].items()}
        for name in v.timezone_from:
            entity, _, field = name.partition(".")
            fields = fields_of(ENTITY_OF[entity], declared)
            if fields.get(field) != "string":
                near = suggest(field, [f for f, t in fields.items() if t == "string"])
                raise PydanticCustomError(
                    "value_error", f"timezone_from: `{name}` is not a string field of {ENTITY_OF[entity]}",
                    {"hint": f"did you mean `{entity}.{near}`?" if near else f"declare it under fields.{entity}"})
        return v

    @field_validator("database")
    @classmethod
    def _database(cls, v: str) -> str:
        from engine.store.database import url_problem

        problem = url_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for entity, fields in v.items():
            for name in fields:
                if not _NAME.match(name):
                    raise ValueError(f"field name `{name}` must match [a-z_][a-z0-9_]*")
                if name in CORE_FIELDS[entity] or name in BOOKKEEPING:
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

    def declared_values(self, entity: str) -> dict[str, tuple[str, ...]]:
        """field -> its declared values, for the fields of `entity` that have them (`values:`; for usage, the
        metric from `metrics:`)."""
        if entity == "usage":
            return {"metric": tuple(self.metrics)} if self.metrics is not None else {}
        prefix = entity + "."
        return {key[len(prefix):]: tuple(v) for key, v in self.values.items() if key.startswith(prefix)}

    @property
    def sync_cron(self) -> str | None:
        """The cron `playbook start` syncs on: `defaults.sync_schedule`, else hourly when a source sets its own
        `schedule`; None when it never syncs."""
        if self.defaults.sync_schedule:
            return self.defaults.sync_schedule
        return "0 * * * *" if any(s.schedule for s in self.sources) else None

    def warnings(self) -> list[Diagnostic]:
        """What is valid but probably not meant, at its place in the config file (`playbook validate`)."""
        found = []
        if self.sources and self.sync_cron is None:
            found.append(self.diagnostic(
                ("sources",), "`playbook start` will evaluate the playbooks but never sync these sources: "
                "neither `defaults.sync_schedule` nor any source's `schedule` is set",
                'add `sync_schedule: "0 * * * *"` under `defaults:` to sync hourly, or a `schedule:` to a '
                "source, or run `playbook sync` yourself"))
        return found

    def diagnostic(self, path: tuple[str, ...], message: str, hint: str | None = None) -> Diagnostic:
        """A problem with the value at `path` in the configuration file, at its key's line and column."""
        if self._positions is None:
            return Diagnostic(self.config_file, None, None, message, hint)
        return self._positions.diagnostic(path, message, hint, key=True)


def settings_model() -> type[Settings]:
    """The Settings model with the installed plugins' blocks: `connectors.<name>` validated by each connector
    plugin's config model (or `sink: local`), `sources` entries by the source plugin whose key they hold."""
    return _settings_model(registry())


@cache
def _settings_model(reg: Registry) -> type[Settings]:
    def pick(value: Any) -> str:
        return LOCAL if isinstance(value, dict) and "sink" in value else CONNECTOR

    blocks: dict[str, Any] = {}
    for name, plugin in reg.connectors.items():
        own = create_model(f"{name.title()}Block", __base__=plugin.config or Model, default=(bool, False))
        blocks[name] = (Annotated[Union[Annotated[LocalSink, Tag(LOCAL)], Annotated[own, Tag(CONNECTOR)]],
                        Discriminator(pick)] | None, None)
    connectors = create_model("Connectors", __base__=Model, **blocks)
    source = create_model("Source", __base__=Source,
                          **{name: (p.config | None, None) for name, p in reg.sources.items()})
    return create_model("Settings", __base__=Settings, connectors=(connectors | None, None),
                        sources=(list[source], Field(default_factory=list)))


LOCAL, CONNECTOR = "=local sink", "=connector"      # tags of a connector block's two forms (spec/diagnostics.py)


def interpolate_env(data: Any, positions: Positions, env: dict[str, str] | None = None) -> Any:
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
                    problems.append(positions.diagnostic(path, f"environment variable `{name}` is not set",
                                                     f"export {name}=… before running, or remove it"))
                    return ""
                redact.remember_env(name, env[name])       # never echoed: messages name the variable instead
                return env[name]
            return _ENV.sub(sub, node)
        return node

    result = walk(data, ())
    if problems:
        raise ConfigError(problems)
    return result


def _remember_urls(node: Any) -> None:
    """Keep the passwords of every URL in the configuration (database, SQL sources, …) out of messages."""
    if isinstance(node, dict):
        for v in node.values():
            _remember_urls(v)
    elif isinstance(node, list):
        for v in node:
            _remember_urls(v)
    elif isinstance(node, str) and "://" in node:
        redact.remember_url(node)


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
    try:
        data, positions = load_yaml(read_text(file, shown), shown)
    except UserError as exc:
        raise ConfigError(exc.diagnostics) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(positions.diagnostic((), "the configuration must be a mapping of keys"))
    redact.forget_all()
    data = interpolate_env(data, positions, env)
    _remember_urls(data)
    for reserved in ("base_dir", "config_file"):
        if reserved in data:
            raise ConfigError(positions.diagnostic((reserved,), f"unknown key `{reserved}`", key=True))
    model = settings_model()
    try:
        settings = model.model_validate({**data, "base_dir": file.resolve().parent, "config_file": shown})
    except ValidationError as exc:
        raise ConfigError(validation_diagnostics(exc, model, positions)) from None
    settings = settings.model_copy(update={
        "playbooks": settings.resolve(settings.playbooks),
        "templates": settings.resolve(settings.templates),
        "outbox_dir": settings.resolve(settings.outbox_dir),
    })
    settings._positions = positions
    return settings

