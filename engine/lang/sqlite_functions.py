"""Python functions registered on every SQLite connection so SQLite computes what PostgreSQL does."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from engine.lang.values import local_date, round_half_away


def pb_local_date(value: str | None, tz: str | None) -> str | None:
    """ISO date, in time zone `tz`, of a stored naive-UTC datetime text ('YYYY-MM-DD HH:MM:SS[.ffffff]')."""
    if value is None or tz is None:
        return None
    return local_date(datetime.fromisoformat(str(value)), tz).isoformat()


def pb_round(value: float | None, precision: int | None) -> float | None:
    """round_half_away for SQLite; NULL in, NULL out."""
    if value is None or precision is None:
        return None
    return round_half_away(value, int(precision))


def pb_floor(value: float | None) -> float | None:
    """floor() that passes NULL through (SQLAlchemy's pysqlite dialect replaces SQLite's floor with math.floor)."""
    return None if value is None else float(math.floor(value))


def register(dbapi_connection: Any) -> None:
    """Register the helper functions on a sqlite3 connection (call it from a SQLAlchemy `connect` event)."""
    dbapi_connection.create_function("pb_local_date", 2, pb_local_date, deterministic=True)
    dbapi_connection.create_function("pb_round", 2, pb_round, deterministic=True)
    dbapi_connection.create_function("pb_floor", 1, pb_floor, deterministic=True)
