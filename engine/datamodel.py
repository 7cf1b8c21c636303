"""The synced data model (§4), defined once: entities, their keys and core fields, and subject types.

Everything that names an entity, a field type or a subject type reads it from here: the store's
tables, the sync validator, the expression language's scope, the configuration's field checks."""

from __future__ import annotations

from typing import Literal, get_args

FieldType = Literal["string", "integer", "number", "boolean", "date", "datetime"]
FIELD_TYPE_NAMES: tuple[str, ...] = get_args(FieldType)

# The synced tables, in the order a sync loads them (contacts and goals name an account; usage too).
Entity = Literal["accounts", "contacts", "goals", "usage"]
ENTITIES: tuple[str, ...] = get_args(Entity)

# Core fields of each entity and their types (§4). Keys are listed first.
CORE_FIELDS: dict[str, dict[str, str]] = {
    "accounts": {
        "id": "string", "name": "string", "domain": "string", "tier": "string",
        "lifecycle_stage": "string", "arr": "number", "seats": "integer", "plan": "string",
        "csm_email": "string", "renewal_date": "date", "created_at": "datetime", "timezone": "string",
    },
    "contacts": {
        "id": "string", "account_id": "string", "email": "string", "name": "string", "role": "string",
        "created_at": "datetime", "timezone": "string", "unsubscribed": "boolean",
    },
    "usage": {"account_id": "string", "metric": "string", "day": "date", "value": "number"},
    "goals": {
        "id": "string", "account_id": "string", "name": "string", "metric": "string", "direction": "string",
        "baseline": "number", "target": "number", "current": "number", "due_date": "date", "status": "string",
    },
}
KEYS: dict[str, tuple[str, ...]] = {
    "accounts": ("id",), "contacts": ("id",), "usage": ("account_id", "metric", "day"), "goals": ("id",),
}
# Columns the engine keeps on entity tables for itself (not fields a user may declare).
BOOKKEEPING = ("removed_at", "synced_at")
MAX_COUNT = 1_000_000_000     # the largest count a playbook or the configuration may set (a database integer)

# What a playbook is about, in the order a tick evaluates them, and the entity each one's rows live in.
SubjectType = Literal["account", "contact", "goal"]
SUBJECT_TYPES: tuple[str, ...] = get_args(SubjectType)
ENTITY_OF: dict[str, str] = {"account": "accounts", "contact": "contacts", "goal": "goals"}
SubjectEntity = Literal["accounts", "contacts", "goals"]      # the entities that may declare custom fields


def fields_of(entity: str, custom: dict[str, dict[str, str]]) -> dict[str, str]:
    """Every field of an entity (core, then the declared custom ones) with its type name."""
    return {**CORE_FIELDS[entity], **custom.get(entity, {})}
