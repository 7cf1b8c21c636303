"""Measured figures of the reliability suite: printed and merged into bench/results/reliability.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "reliability.json"


def record_figure(name: str, value: Any) -> None:
    """Keep a measured figure (printed, and merged into bench/results/reliability.json)."""
    print(f"[reliability] {name}: {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[name] = value
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
