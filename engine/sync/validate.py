"""Validation of synced rows: typed fields, required keys, known accounts, duplicate keys.

`RowChecker.check` turns one raw row into the typed values to store, or the list of problems
(`field: problem`) that make it invalid. A key that appears twice in one source is found by the
runner (within a chunk of rows) and by the database (across chunks: `store.upsert_new_rows`);
`duplicate_problem` says it. Whether a row's account exists is asked of the database once per chunk
(`store.existing_accounts`), not of a copy of every account id; `unknown_account_problem` says it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, tzinfo
from typing import Any

from engine.datamodel import KEYS, fields_of
from engine.sync.coerce import ISO, CoerceError, Coercer, ValueFormats, coercer, show

# Fields every row of an entity must have, beyond its key.
REQUIRED: dict[str, tuple[str, ...]] = {
    "accounts": (), "contacts": ("account_id",), "goals": ("account_id",), "usage": ("value",),
}
DIRECTIONS = ("increase", "decrease")


def entity_fields(entity: str, custom: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """Core and declared custom fields of an entity, name -> type."""
    return fields_of(entity, custom)


def required_fields(entity: str) -> tuple[str, ...]:
    """The fields without which a row of the entity is invalid (its key first)."""
    return KEYS[entity] + REQUIRED[entity]


class RowChecker:
    """Validates the rows of one entity from one source (whose values are written as `formats` says)."""

    def __init__(self, entity: str, fields: Mapping[str, str], tz: tzinfo, formats: ValueFormats = ISO):
        self.entity = entity
        self.fields = dict(fields)
        self.coercers: dict[str, Coercer] = {name: coercer(t, tz, formats) for name, t in fields.items()}
        self.key = KEYS[entity]
        self.required = required_fields(entity)

    def check(self, raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[str], tuple[Any, ...] | None]:
        """(typed values, problems, key or None when the key itself is unusable); the values are to be stored
        only when there is no problem (a value that failed to convert is None among them)."""
        values: dict[str, Any] = {}
        problems: list[str] = []
        coercers = self.coercers
        for name, value in raw.items():
            convert = coercers.get(name)
            if convert is not None:
                try:
                    values[name] = convert(value)
                except CoerceError as exc:
                    problems.append(f"{name}: {exc}")
                    values[name] = None
        for name in self.required:
            value = values.get(name)
            if value is None:
                if not problems or not any(p.startswith(name + ":") for p in problems):
                    problems.append(f"{name}: missing (every {self.entity} row needs {_article(name)} {name})")
            elif type(value) is str:
                values[name] = value.strip()
        key: tuple[Any, ...] | None = tuple(map(values.get, self.key))
        if None in key:  # type: ignore[operator]
            key = None
        if self.entity == "goals" and isinstance(values.get("direction"), str):
            direction = values["direction"].strip().lower()
            if direction in DIRECTIONS:
                values["direction"] = direction
            else:
                problems.append(f"direction: {show(values['direction'])} is not increase or decrease")
        return values, problems, key


def unknown_account_problem(account_id: str) -> str:
    """The problem of a row whose account the store does not have (a removed account it still has)."""
    return f"account_id: unknown account {show(account_id)}"


def duplicate_problem(entity: str, key: tuple[Any, ...], first: int | None) -> str:
    """The problem of a row whose key an earlier row of the same source has (on line `first`, if known)."""
    if len(key) > 1:
        account, metric, day = key
        return (f"day: duplicate row for account {show(account)}, metric {show(metric)} "
                f"on {day.isoformat() if isinstance(day, date) else day}")
    name = KEYS[entity][0]
    where = f"already on line {first}" if first is not None else "already on an earlier line"
    return f"{name}: duplicate {name} {show(key[0])} ({where})"


def _article(name: str) -> str:
    return "an" if name[0] in "aeiou" else "a"
