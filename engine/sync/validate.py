"""Validation of synced rows: typed fields, required keys, declared values, time zones, known accounts, duplicate
keys.

`RowChecker.check` turns one raw row into the typed values to store, or the list of problems
(`field: problem`) that make it invalid; sync/columns.py gives the same values for a batch of rows, column by
column, and leaves a batch with any invalid row to `check`. A key that appears twice in one source is found by
the database (`store.entities.write_rows`); `duplicate_problem` says it. Whether a row's account exists is
asked of the database once per chunk (`store.entities.existing_accounts`), not of a copy of every account id;
`unknown_account_problem` says it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import date, tzinfo
from typing import Any

from engine.clock import suggest_zone, zone_names
from engine.datamodel import KEYS, fields_of
from engine.errors import suggest
from engine.sync.coerce import ISO, CoerceError, Coercer, ValueFormats, coercer, show

# Fields every row of an entity must have, beyond its key.
REQUIRED: dict[str, tuple[str, ...]] = {
    "accounts": (), "contacts": ("account_id",), "goals": ("account_id",), "usage": ("value",),
}
DIRECTIONS = ("increase", "decrease")
ZONE_FIELDS = ("timezone",)     # fields whose values are IANA time zone names (accounts, contacts: §13)
SHOWN_VALUES = 12               # declared values listed in a message, at most


def entity_fields(entity: str, custom: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """Core and declared custom fields of an entity, name -> type."""
    return fields_of(entity, custom)


def required_fields(entity: str) -> tuple[str, ...]:
    """The fields without which a row of the entity is invalid (its key first)."""
    return KEYS[entity] + REQUIRED[entity]


class RowChecker:
    """Validates the rows of one entity from one source (whose values are written as `formats` says)."""

    def __init__(self, entity: str, fields: Mapping[str, str], tz: tzinfo, formats: ValueFormats = ISO,
                 declared: Mapping[str, Collection[str]] | None = None):
        self.entity = entity
        self.fields = dict(fields)
        self.formats = formats
        self.coercers: dict[str, Coercer] = {name: coercer(t, tz, formats) for name, t in fields.items()}
        for name, ftype in fields.items():      # dates repeat from row to row: each text is converted once
            if ftype in ("date", "datetime"):
                self.coercers[name] = _remembered(self.coercers[name])
        self.key = KEYS[entity]
        self.required = required_fields(entity)
        self.declared = {name: (frozenset(allowed), tuple(allowed)) for name, allowed in (declared or {}).items()}
        self.zones = tuple(name for name in ZONE_FIELDS if name in self.fields)
        self.zone_names = zone_names()

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
        for name, (allowed, listed) in self.declared.items():
            value = values.get(name)
            if value is not None and value not in allowed:
                problems.append(undeclared_problem(self.entity, name, value, listed))
        for name in self.zones:
            value = values.get(name)
            if value is not None and value not in self.zone_names:
                problems.append(zone_problem(name, value))
        if self.entity == "goals" and isinstance(values.get("direction"), str):
            direction = values["direction"].strip().lower()
            if direction in DIRECTIONS:
                values["direction"] = direction
            else:
                problems.append(f"direction: {show(values['direction'])} is not increase or decrease")
        return values, problems, key


def _remembered(convert: Coercer, size: int = 4096) -> Coercer:
    """`convert`, remembering the values of the last texts it converted (a bad text still raises each time)."""
    seen: dict[Any, Any] = {}

    def coerce(value: Any) -> Any:
        if type(value) is not str:
            return convert(value)
        done = seen.get(value)
        if done is None:
            done = convert(value)
            if len(seen) >= size:
                seen.clear()
            seen[value] = done
        return done
    return coerce


def undeclared_problem(entity: str, name: str, value: str, declared: tuple[str, ...]) -> str:
    """The problem of a value its field's declaration (`values:`, or `metrics:` for a usage row) does not list."""
    near = suggest(value, declared)
    if entity == "usage" and name == "metric":
        hint = f"did you mean {show(near)}?" if near else "metrics: " + _listed(declared)
        return f"metric: {show(value)} is not a declared metric ({hint})"
    suffix = f" (did you mean {show(near)}?)" if near else ""
    return f"{name}: {show(value)} is not one of {_listed(declared)}{suffix}"


def zone_problem(name: str, value: str) -> str:
    """The problem of a time zone field whose value is not an IANA name, with the name to write when one fits."""
    close = suggest_zone(value)
    what = f"write {show(close)}" if close else 'write a name such as "Asia/Tokyo" or "America/New_York"'
    return f"{name}: {show(value)} is not an IANA time zone ({what})"


def _listed(values: tuple[str, ...]) -> str:
    shown = ", ".join(values[:SHOWN_VALUES])
    return shown + (f" and {len(values) - SHOWN_VALUES} more" if len(values) > SHOWN_VALUES else "")


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
