"""The broken-input corpus (issue 23, item 4): every kind of mistake a user makes, each fed to the `playbook`
commands that read it. A case breaks a copy of the valid working directory of base.py and lists the commands
to run there, with the exit codes each may give and the text (the file and line of the problem) its output
must contain. test_broken_inputs.py runs them all and checks that none prints a traceback.

The cases come from the fixtures in tests/fixtures/invalid/ (generated.py), from the configuration and
playbook models (every duration and cron key, generated.py), and from the list of mistakes in inputs.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Run:
    """One command on a broken input: its arguments (after `playbook`, in the working directory), the exit
    codes it may give (0 only where the input is not the command's business), and what its output must say."""

    args: tuple[str, ...]
    codes: frozenset[int] = frozenset({1})
    says: tuple[str, ...] = ()          # texts the output must contain: the file and line of the problem
    absent: str | None = None           # what the output must not show (a password)


@dataclass(frozen=True)
class Case:
    """One broken input: its category (for the figures), a name, how it breaks the working directory, and the
    commands run on it."""

    category: str
    name: str
    breaks: Callable[[Path], None]
    runs: tuple[Run, ...] = field(default_factory=tuple)

    @property
    def id(self) -> str:
        return f"{self.category}/{self.name}"


def all_cases() -> list[Case]:
    """Every case of the corpus, in a stable order; their ids are unique."""
    from corpus import generated, inputs

    cases = generated.cases() + inputs.cases()
    ids = [c.id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"duplicate corpus cases: {duplicates}"
    return cases
