"""Wiring shared by the CLI and the service: settings -> database -> playbooks -> clock."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

from engine.errors import UserError
from engine.settings import Settings, load_settings
from engine.spec.compiled import PlaybookSet
from engine.store.db import Database, open_database
from engine.store.matching import Clock


def make_clock(settings: Settings, now: str | datetime | None = None) -> Clock:
    """The evaluation instant: `now` (ISO; read in config.timezone when it has no offset) or the wall clock."""
    tz = ZoneInfo(settings.timezone)
    if now is None:
        instant = datetime.now(timezone.utc)
    elif isinstance(now, datetime):
        instant = now if now.tzinfo else now.replace(tzinfo=tz)
    else:
        try:
            parsed = datetime.fromisoformat(now.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UserError(f"--now: `{now}` is not an ISO date-time (e.g. 2026-03-01T09:00 or "
                            f"2026-03-01T09:00:00+09:00)") from None
        instant = parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)
    utc = instant.astimezone(timezone.utc)
    return Clock(now=utc.replace(tzinfo=None), today=utc.astimezone(tz).date(), timezone=settings.timezone)


@dataclass
class App:
    """Lazily opened parts of the engine for one command."""

    config_path: str | Path | None = None

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_path)

    @cached_property
    def db(self) -> Database:
        return open_database(self.settings.database_url(), self.settings.custom_fields())

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

    def clock(self, now: str | None = None) -> Clock:
        return make_clock(self.settings, now)

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.dispose()
