"""Plugins: connectors (delivery channels) and sync sources, found through entry points.

The built-ins register exactly as a third party's package does, in its pyproject.toml:

    [project.entry-points."playbook_engine.connectors"]
    teams = "my_package.teams:plugin"          # a ConnectorPlugin named "teams"

    [project.entry-points."playbook_engine.sources"]
    parquet = "my_package.parquet:plugin"      # a SourcePlugin named "parquet"

A connector plugin owns its config block (`connectors.<name>` in config.yaml), the action kind it delivers
(engine/actions.py: the playbook key, its options and payload) and how to build the connector, for real or as
a local sink. A source plugin owns its key in a `sources:` entry and how to read it. The core validates a
config block, a source or an action by asking the plugin, and never lists kinds itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from engine.actions import ActionKind, ClosePayload, Payload
from engine.delivery import Connector
from engine.errors import ConfigError, Diagnostic, suggest
from engine.store import Store
from engine.store.outbox import Claimed


CONNECTORS = "playbook_engine.connectors"
SOURCES = "playbook_engine.sources"
CLOSE = "_close"      # the kind of the action closing what `<kind>` created (task_close)


# -- plugins ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConnectorEnv:
    """What building a connector may use: the store (task lists), the clock, where local sinks write, and the
    settings."""

    store: Store
    clock: Callable[[], datetime]
    outbox_dir: Path
    settings: Any


class ConnectorPlugin:
    """A delivery channel. `name` is its key under `connectors:` and in the outbox; `kind` the action it delivers;
    `config` its config block's model (None: it takes none). A `standalone` connector delivers even when the
    configuration has no block for it (built from its config model's defaults)."""

    name: ClassVar[str]
    kind: ClassVar[ActionKind]
    config: ClassVar[type[BaseModel] | None] = None
    standalone: ClassVar[bool] = False
    sink_in_store: ClassVar[bool] = False     # its local sink writes only to the engine's own store (task lists)

    def connector(self, config: BaseModel | None, env: ConnectorEnv) -> Connector:
        """The connector for a config block (None when the plugin takes no config)."""
        raise NotImplementedError

    def local_sink(self, env: ConnectorEnv) -> Connector:
        """Where this connector delivers when it is not configured for real (no `connectors:` section, or
        `sink: local`): one JSON line per action in outbox/<name>.jsonl."""
        from engine.sinks import JsonlSink

        return JsonlSink(self.name, env.outbox_dir / f"{self.name}.jsonl")


@dataclass(frozen=True)
class SourceEnv:
    """What opening a source may use: paths resolved against the config's folder, its label in messages, the
    entity's last sync time (for incremental sources), and the config time zone."""

    resolve: Callable[[str], Path]
    label: str
    since: datetime
    timezone: str


class SourcePlugin:
    """A kind of sync source: `name` is its key in a `sources:` entry, `config` the model of that key's value."""

    name: ClassVar[str]
    config: ClassVar[type[BaseModel]]

    def incremental(self, config: BaseModel) -> bool:
        """Whether the source only upserts by default (else it is a snapshot: rows absent are removed)."""
        return False

    def label(self, config: BaseModel) -> str | None:
        """How the source is named in messages (a file path as written); None: `<name>:<entity>`."""
        return None

    def open(self, config: BaseModel, env: SourceEnv) -> Any:
        """A reader of the source (engine/sync/reader.py), not yet opened."""
        raise NotImplementedError


class LocalSink(BaseModel):
    """A connector block that only says `sink: local`: deliver to the local sink while others are real."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sink: Literal["local"]
    default: bool = False


# -- the registry -----------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Registry:
    """The installed plugins, by name (hashed by identity: models built from it are cached per registry)."""

    connectors: dict[str, ConnectorPlugin]
    sources: dict[str, SourcePlugin]

    @property
    def kinds(self) -> dict[str, ActionKind]:
        """Action kind name -> its ActionKind, in plugin order."""
        return {p.kind.name: p.kind for p in self.connectors.values()}

    def delivering(self, kind: str) -> list[ConnectorPlugin]:
        """The connector plugins that deliver actions of `kind`."""
        return [p for p in self.connectors.values() if p.kind.name == kind]

    def payload_type(self, kind: str) -> type[Payload]:
        """The payload type of an outbox row's kind (`<kind>_close` rows carry a ClosePayload)."""
        if kind.endswith(CLOSE) and kind[:-len(CLOSE)] in self.kinds:
            return ClosePayload
        return self.kinds[kind].payload

    def load(self, item: Claimed) -> Claimed:
        """A claimed action whose payload (JSON from the outbox) is read into its kind's payload type."""
        from dataclasses import replace

        if isinstance(item.payload, Payload):
            return item
        if set(item.payload) == {"error"}:          # planning could not render it (engine/planner.py)
            raise Unrendered(item.payload["error"])
        return replace(item, payload=self.payload_type(item.kind).from_json(item.payload))


class Unrendered(ValueError):
    """An outbox row that holds why its templates failed to render instead of a payload: never delivered;
    `playbook outbox retry --rerender` renders it again."""

    def __str__(self) -> str:
        return (f"it was never rendered ({self.args[0]}); fix the template, then "
                f"`playbook outbox retry --rerender`")


@cache
def registry() -> Registry:
    """The plugins installed in this environment (read once; `reload()` reads them again)."""
    connectors = _load(CONNECTORS, ConnectorPlugin)
    sources = _load(SOURCES, SourcePlugin)
    kinds: dict[str, ActionKind] = {}
    for p in connectors.values():
        if not isinstance(getattr(p, "kind", None), ActionKind):
            raise _broken(CONNECTORS, p.name, "its `kind` is not an ActionKind")
        other = kinds.setdefault(p.kind.name, p.kind)
        if other is not p.kind:
            raise _broken(CONNECTORS, p.name, f"it defines action kind `{p.kind.name}` again; connectors that "
                                              "deliver one kind must share its ActionKind object")
    return Registry(connectors, sources)


def reload() -> Registry:
    """Read the installed plugins again (after installing one, or in tests)."""
    registry.cache_clear()
    return registry()


def _load(group: str, base: type) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, whatever it raised
            raise _broken(group, ep.name, f"loading `{ep.value}` failed: {type(exc).__name__}: {exc}") from None
        plugin = obj() if isinstance(obj, type) else obj
        if not isinstance(plugin, base):
            raise _broken(group, ep.name, f"`{ep.value}` is not a {base.__name__}")
        if plugin.name != ep.name:
            raise _broken(group, ep.name, f"the plugin calls itself `{plugin.name}`")
        found.setdefault(ep.name, plugin)
    if not found:
        raise ConfigError(Diagnostic("", None, None, f"no plugins registered under `{group}`",
                                     "is playbook-engine installed? (pip install playbook-engine, or "
                                     "pip install -e . in a checkout)"))
    return found


def _broken(group: str, name: str, why: str) -> ConfigError:
    return ConfigError(Diagnostic("", None, None, f"plugin `{name}` ({group}): {why}",
                                  "fix or uninstall the package that provides it"))


def unknown(what: str, name: str, known: list[str]) -> str:
    """`unknown connector `x` (did you mean `y`?)` for a name no plugin has."""
    close = suggest(name, known)
    return f"unknown {what} `{name}`" + (f" (did you mean `{close}`?)" if close else
                                         f" (installed: {', '.join(known)})")


# -- routing and building ---------------------------------------------------------------------------------------

def block(settings: Any, name: str) -> BaseModel | None:
    """The config block of connector `name`, or None when the config has none."""
    return None if settings.connectors is None else getattr(settings.connectors, name, None)


class Unroutable(Exception):
    """No connector can deliver an action: `message` and `hint` say why and what to do."""

    def __init__(self, message: str, hint: str | None = None):
        self.message, self.hint = message, hint
        super().__init__(message)


def route(kind: str, explicit: str | None, settings: Any) -> str:
    """The connector that delivers an action of `kind`: the one it names, else the one configured for its kind
    (one block, or the one marked `default: true`), else one that needs no configuration, else — with no
    `connectors:` section — the kind's only connector, delivering to its local sink. Unroutable otherwise."""
    reg = registry()
    candidates = reg.delivering(kind)
    local = settings.connectors is None
    if explicit:
        plugin = reg.connectors.get(explicit)
        if plugin is None:
            raise Unroutable(unknown("connector", explicit, [p.name for p in candidates] or list(reg.connectors)))
        if plugin.kind.name != kind:
            raise Unroutable(f"connector `{explicit}` delivers `{plugin.kind.name}` actions, not `{kind}`")
        if not (local or plugin.standalone or block(settings, explicit) is not None):
            raise Unroutable(f"connector `{explicit}` is not configured", _configure(explicit))
        return explicit
    configured = [p for p in candidates if block(settings, p.name) is not None]
    if len(configured) > 1:
        chosen = [p for p in configured if getattr(block(settings, p.name), "default", False)]
        if len(chosen) != 1:
            raise Unroutable(f"`{kind}` actions can go to {', '.join(p.name for p in configured)}",
                             "say which with `connector:` on the action, or mark one `default: true` in its "
                             "connectors block")
        return chosen[0].name
    if configured:
        return configured[0].name
    standalone = [p for p in candidates if p.standalone]
    if len(standalone) == 1:
        return standalone[0].name
    if local and len(candidates) == 1:
        return candidates[0].name
    raise Unroutable(f"this playbook uses `{kind}` but no {kind} connector is configured", _configure(kind))


def _configure(name: str) -> str:
    return f"add connectors.{name} to config.yaml, or `connectors.{name}: {{sink: local}}` to deliver it to outbox/"


def build_connectors(settings: Any, store: Store, clock: Callable[[], datetime]) -> dict[str, Connector]:
    """Connector name -> instance, for every connector this configuration can deliver through."""
    env = ConnectorEnv(store, clock, settings.outbox_dir, settings)
    out: dict[str, Connector] = {}
    for name, plugin in registry().connectors.items():
        conf = block(settings, name)
        if settings.connectors is None or isinstance(conf, LocalSink):
            out[name] = plugin.local_sink(env)
        elif conf is not None:
            out[name] = plugin.connector(conf, env)
        elif plugin.standalone:
            out[name] = plugin.connector(plugin.config() if plugin.config else None, env)
    return out
