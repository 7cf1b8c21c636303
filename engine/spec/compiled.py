"""What a loaded playbook becomes: validated models plus compiled expressions and templates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.actions import CompiledAction
from engine.errors import Diagnostic
from engine.journey import Journey

JOURNEY_SCHEDULE = "*/15 * * * *"
from engine.spec.models import Playbook

__all__ = ["CompiledAction", "CompiledPlaybook", "Condition", "InvalidPlaybook", "PlaybookSet"]


@dataclass(frozen=True)
class Condition:
    """One condition of a playbook: the trigger's expression or one `where` item."""

    label: str          # "trigger (low_usage)" or "where[1]"
    text: str           # the expression text
    expr: Any           # compiled engine.lang expression


@dataclass(frozen=True)
class CompiledPlaybook:
    """A valid playbook, ready to evaluate."""

    spec: Playbook
    file: str
    conditions: tuple[Condition, ...]
    actions: tuple[CompiledAction, ...]
    on_resolve: tuple[CompiledAction, ...]
    source_hash: str
    journey: Journey | None = None          # a playbook with `steps:` (§14)

    @property
    def steps(self) -> tuple[CompiledAction, ...]:
        """The actions of a journey's steps (none for a playbook with `actions:`)."""
        return tuple(n.action for n in self.journey.nodes if n.action is not None) if self.journey else ()

    def schedule(self, default: str) -> str:
        """When the playbook is evaluated: its own `schedule`, else every 15 minutes for a journey (its steps come
        due at any time), else the configured default."""
        return self.spec.schedule or (JOURNEY_SCHEDULE if self.journey is not None else default)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def subject(self) -> str:
        return self.spec.subject


@dataclass(frozen=True)
class InvalidPlaybook:
    """A playbook file that failed validation: never run, reported with its diagnostics."""

    file: str
    id: str | None
    diagnostics: tuple[Diagnostic, ...]


@dataclass(frozen=True)
class PlaybookSet:
    """Every playbook file of the playbooks directory, valid or not."""

    valid: tuple[CompiledPlaybook, ...]
    invalid: tuple[InvalidPlaybook, ...]
    warnings: tuple[Diagnostic, ...] = ()       # what may be wrong but does not make a playbook invalid

    def get(self, playbook_id: str) -> CompiledPlaybook | None:
        return next((p for p in self.valid if p.id == playbook_id), None)

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return [d for inv in self.invalid for d in inv.diagnostics]
