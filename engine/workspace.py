"""`playbook init`: a working directory with a configuration, the example playbooks and sample data.

The scaffold configuration and the example playbooks ship inside the package (`engine/scaffold/` and
`engine.examples`, which is the repository's `playbooks/` folder), so a wheel install can scaffold too."""

from __future__ import annotations

from datetime import date
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

SKIP = {"__init__.py", "__pycache__"}


def scaffold(directory: Path, *, accounts: int = 300, anchor: date | None = None) -> dict[str, int]:
    """Write a working directory: config.yaml, playbooks/ (with templates/) and data/; returns the sample rows
    written per entity."""
    from engine.demo_data import generate

    directory.mkdir(parents=True, exist_ok=True)
    config = resources.files("engine").joinpath("scaffold", "config.yaml")
    (directory / "config.yaml").write_bytes(config.read_bytes())
    copy_tree(resources.files("engine.examples"), directory / "playbooks")
    return generate(directory / "data", anchor or date.today(), accounts=accounts)


def copy_tree(source: Traversable, target: Path) -> None:
    """Copy a package resource folder to `target` (existing files are overwritten; Python files skipped)."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name in SKIP or item.name.endswith(".pyc"):
            continue
        if item.is_dir():
            copy_tree(item, target / item.name)
        else:
            (target / item.name).write_bytes(item.read_bytes())
