"""Wiring shared by the CLI and the service: settings -> store -> playbooks -> clock."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path

from engine.clock import Clock, make_clock
from engine.settings import Settings, load_settings
from engine.spec.compiled import PlaybookSet
from engine.store import Store, open_store


@dataclass
class App:
    """Lazily opened parts of the engine for one command."""

    config_path: str | Path | None = None

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_path)

    @cached_property
    def store(self) -> Store:
        from engine.errors import ConfigError
        from engine.store.database import DatabaseUnavailable

        try:
            return open_store(self.settings.database_url(), self.settings.custom_fields())
        except DatabaseUnavailable as exc:         # at the line of config.yaml that names the database
            raise ConfigError(self.settings.diagnostic(exc.key, exc.message, exc.hint)) from None

    @cached_property
    def playbooks(self) -> PlaybookSet:
        from engine.spec.loader import load_playbooks

        loaded = load_playbooks(self.settings)
        # settings, compiled playbooks and templates, the database's tables: what is loaded now lives as long
        # as the process, so the cyclic garbage collector stops walking it (a tick allocates many short-lived
        # rows, and every full collection re-walked these ~100,000 objects)
        gc.collect()
        gc.freeze()
        return loaded

    def clock(self, now: str | datetime | None = None) -> Clock:
        """The evaluation instant: `now` (ISO; no offset = the config time zone) or the wall clock."""
        return make_clock(self.settings.timezone, now)

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.dispose()
