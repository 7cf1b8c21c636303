"""`playbook schema`: the JSON Schema of the playbook format, for editors and CI."""

from __future__ import annotations

from typing import Any

from engine.spec.models import Trigger, playbook_model


def playbook_json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of one playbook file; trigger and action mappings hold exactly one key."""
    schema = playbook_model().model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://playbook-engine.dev/schema/playbook.json"
    defs = schema.get("$defs", {})
    for name in (Trigger.__name__, "Action"):
        if name in defs:
            defs[name]["minProperties"] = 1
            defs[name]["maxProperties"] = 1
    return schema
