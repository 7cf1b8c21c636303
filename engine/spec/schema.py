"""`playbook schema`: the JSON Schema of the playbook format, for editors and CI."""

from __future__ import annotations

from typing import Any

from engine.spec.models import Action, Playbook, Trigger


def playbook_json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of one playbook file; trigger and action mappings hold exactly one key."""
    schema = Playbook.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://playbook-engine.dev/schema/playbook.json"
    defs = schema.get("$defs", {})
    for model in (Trigger, Action):
        if model.__name__ in defs:
            defs[model.__name__]["minProperties"] = 1
            defs[model.__name__]["maxProperties"] = 1
    return schema
