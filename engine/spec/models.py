"""Pydantic models of the playbook format (§6, §7, §9): what a YAML playbook may say.

The actions a playbook may use are the installed connector plugins' action kinds (engine/plugins.py):
`playbook_model()` builds the Playbook model whose `actions` hold exactly one of them each."""

from __future__ import annotations

import re
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from engine.clock import CronText, Duration, DurationText, parse_duration
from engine.datamodel import SubjectType
from engine.plugins import Registry, registry

ID_PATTERN = r"^[a-z0-9-]+$"
Agg = Literal["sum", "avg", "min", "max", "count", "last"]


class Model(BaseModel):
    """Base: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OneOf(Model):
    """A mapping that must hold exactly one of its optional keys (a trigger or an action)."""

    @model_validator(mode="before")
    @classmethod
    def _empty_kind(cls, data: Any) -> Any:
        # `goal_achieved:` with nothing after it means "no options", not "absent".
        if isinstance(data, dict):
            return {k: ({} if v is None and k in cls.model_fields else v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> "OneOf":
        set_keys = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(set_keys) != 1:
            what = type(self).__name__.lower()
            given = f"found {', '.join(set_keys)}" if set_keys else "found none"
            raise ValueError(f"a {what} needs exactly one of: {', '.join(type(self).model_fields)} ({given})")
        return self

    @property
    def kind(self) -> str:
        """The name of the one key that is set."""
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    @property
    def options(self) -> Any:
        """The options model of the one key that is set."""
        return getattr(self, self.kind)


class LowUsage(Model):
    metric: str
    days: int = Field(30, ge=1, le=3660)
    agg: Agg = "avg"
    below: float | None = None
    below_per_seat: float | None = None
    drop_pct: float | None = Field(None, gt=0, le=100)

    @model_validator(mode="after")
    def _one_threshold(self) -> "LowUsage":
        given = [k for k in ("below", "below_per_seat", "drop_pct") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("low_usage needs exactly one of `below`, `below_per_seat`, `drop_pct`")
        return self


class RenewalApproaching(Model):
    within_days: int = Field(ge=0)
    field: str = "renewal_date"


class GoalAchieved(Model):
    name: str | None = Field(None, description="only goals whose name matches this glob (* and ?)")


class Trigger(OneOf):
    low_usage: LowUsage | None = None
    renewal_approaching: RenewalApproaching | None = None
    goal_achieved: GoalAchieved | None = None
    when: str | None = None


class Playbook(Model):
    """One playbook file."""

    id: str = Field(max_length=80)
    name: str
    description: str | None = None
    enabled: bool = True
    subject: SubjectType = "account"
    schedule: CronText | None = None
    trigger: Trigger
    where: list[str] = Field(default_factory=list)
    repeat: DurationText | None = None
    cooldown: DurationText | None = None
    max_episodes: int | None = Field(None, ge=1)
    max_actions_per_run: int | None = Field(None, ge=1)
    activation: Literal["baseline", "fire"] = Field(
        "baseline", description="when the playbook is switched on: baseline the subjects that already match "
                                "(no actions), or fire for them (a backfill)")
    max_enters_per_run: int | None = Field(None, ge=1, description="at most this many subjects enter in one run "
                                                                    "(lowest ids first); the rest wait")
    contact_policy: Literal["default", "exempt"] = Field(
        "default", description="exempt: its messages to customers skip quiet hours, business days and caps, "
                               "and do not count towards caps (transactional notices)")
    actions: list[Any] = Field(min_length=1)
    on_resolve: list[Any] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not re.match(ID_PATTERN, v):
            suggestion = re.sub(r"[^a-z0-9]+", "-", v.lower()).strip("-")
            raise ValueError(f"`{v}` is not a valid id: use lower-case letters, digits and -"
                             + (f" (e.g. `{suggestion}`)" if suggestion else ""))
        return v

    @property
    def repeat_duration(self) -> Duration | None:
        return parse_duration(self.repeat) if self.repeat else None

    @property
    def cooldown_duration(self) -> Duration:
        return parse_duration(self.cooldown) if self.cooldown else Duration()


class ActionBase(OneOf):
    """One action: exactly one kind's key, whose options may also name the `connector` that delivers it and say
    whether it is `customer_facing`."""

    @property
    def connector(self) -> str | None:
        return getattr(self.options, "connector", None)

    @property
    def customer_facing(self) -> bool | None:
        return getattr(self.options, "customer_facing", None)


def playbook_model() -> type[Playbook]:
    """The Playbook model whose actions are the installed plugins' action kinds."""
    return _playbook_model(registry())


@cache
def _playbook_model(reg: Registry) -> type[Playbook]:
    kinds = {}
    for name, kind in reg.kinds.items():
        options = create_model(
            kind.options.__name__, __base__=kind.options, __module__=kind.options.__module__,
            connector=(str | None, Field(None, description="the connector that delivers it")),
            customer_facing=(bool | None, Field(None, description="whether it reaches a customer (the contact "
                                                                  "policy applies); default: the kind's own view")))
        kinds[name] = (options | None, None)
    action = create_model("Action", __base__=ActionBase, **kinds)
    return create_model("Playbook", __base__=Playbook, actions=(list[action], Field(min_length=1)),
                        on_resolve=(list[action], Field(default_factory=list)))


def glob_to_like(pattern: str) -> str:
    """A shell glob (* and ?) as a SQL LIKE pattern with `\\` as escape."""
    out = re.sub(r"([%_\\])", r"\\\1", pattern)
    return out.replace("*", "%").replace("?", "_")
