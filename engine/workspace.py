"""`playbook init`: a working directory with a configuration, the example playbooks, their tests and sample data.

The scaffold configuration and the example playbooks ship inside the package (`engine/scaffold/` and
`engine.examples`, which is the repository's `playbooks/` folder, with the playbooks' tests in its `tests/`), so
a wheel install can scaffold too."""

from __future__ import annotations

from datetime import date
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

SKIP = {"__init__.py", "__pycache__"}
TESTS = "tests"             # the example playbooks' tests, scaffolded as playbook-tests/ (`playbook test`)


def scaffold(directory: Path, *, accounts: int = 300, anchor: date | None = None) -> dict[str, int]:
    """Write a working directory: config.yaml, playbooks/ (with templates/), playbook-tests/ and data/; returns
    the sample rows written per entity."""
    from engine.demo_data import generate

    directory.mkdir(parents=True, exist_ok=True)
    config = resources.files("engine").joinpath("scaffold", "config.yaml")
    (directory / "config.yaml").write_bytes(config.read_bytes())
    examples = resources.files("engine.examples")
    copy_tree(examples, directory / "playbooks", skip=frozenset({TESTS}))
    copy_tree(examples.joinpath(TESTS), directory / "playbook-tests")
    return generate(directory / "data", anchor or date.today(), accounts=accounts)


def copy_tree(source: Traversable, target: Path, skip: frozenset[str] = frozenset()) -> None:
    """Copy a package resource folder to `target` (existing files are overwritten; Python files and the names in
    `skip` left out)."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name in SKIP or item.name in skip or item.name.endswith(".pyc"):
            continue
        if item.is_dir():
            copy_tree(item, target / item.name)
        else:
            (target / item.name).write_bytes(item.read_bytes())
