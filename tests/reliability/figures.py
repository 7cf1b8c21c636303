"""Measured figures of the reliability suite: printed, and kept in the JSON file named by
$PLAYBOOK_RELIABILITY_FIGURES when set (tests never write into the source tree)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def record_figure(name: str, value: Any, suite: str = "reliability") -> None:
    """Print a measured figure (labelled with its `suite`), and merge it into $PLAYBOOK_RELIABILITY_FIGURES when
    that names a file."""
    print(f"[{suite}] {name}: {value}")
    target = os.environ.get("PLAYBOOK_RELIABILITY_FIGURES")
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = value
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
