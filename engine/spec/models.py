"""Pydantic models of the playbook format (§6, §7, §9): what a YAML playbook may say.

The actions a playbook may use are the installed connector plugins' action kinds (engine/plugins.py):
`playbook_model()` builds the Playbook model whose `actions` hold exactly one of them each."""

from __future__ import annotations

import re
from functools import cache
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, create_model, field_validator,
                      model_validator)

from engine.clock import MAX_DURATION_DAYS, CronText, Duration, DurationText, parse_duration
from engine.datamodel import MAX_COUNT, SubjectType
from engine.digests import DigestOption
from engine.plugins import Registry, registry

ID_PATTERN = r"^[a-z0-9-]+$"
Agg = Literal["sum", "avg", "min", "max", "count", "last"]


class Model(BaseModel):
    """Base: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OneOf(Model):
    """A mapping that must hold exactly one of its optional keys (a trigger or an action)."""

    _not_kinds: ClassVar[tuple[str, ...]] = ()        # fields beside the kinds (a step's `id` and `if`)

    @classmethod
    def _kinds(cls) -> list[str]:
        return [k for k in cls.model_fields if k not in cls._not_kinds]

    @model_validator(mode="before")
    @classmethod
    def _empty_kind(cls, data: Any) -> Any:
        # `goal_achieved:` with nothing after it means "no options", not "absent".
        if isinstance(data, dict):
            return {k: ({} if v is None and k in cls._kinds() else v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> "OneOf":
        set_keys = [k for k in self._kinds() if getattr(self, k) is not None]
        if len(set_keys) != 1:
            what = re.sub(r"(?<!^)([A-Z])", r" \1", type(self).__name__).lower()
            given = f"found {', '.join(set_keys)}" if set_keys else "found none"
            raise ValueError(f"a{'n' if what[0] in 'aeiou' else ''} {what} needs exactly one of: "
                             f"{', '.join(self._kinds())} ({given})")
        return self

    @property
    def kind(self) -> str:
        """The name of the one key that is set."""
        return next(k for k in self._kinds() if getattr(self, k) is not None)

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
    within_days: int = Field(ge=0, le=MAX_DURATION_DAYS)
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
    max_episodes: int | None = Field(None, ge=1, le=MAX_COUNT)
    max_actions_per_run: int | None = Field(None, ge=1, le=MAX_COUNT)
    activation: Literal["baseline", "fire"] = Field(
        "baseline", description="when the playbook is switched on: baseline the subjects that already match "
                                "(no actions), or fire for them (a backfill)")
    max_enters_per_run: int | None = Field(None, ge=1, le=MAX_COUNT, description="at most this many subjects enter in one run "
                                                                    "(lowest ids first); the rest wait")
    contact_policy: Literal["default", "exempt"] = Field(
        "default", description="exempt: its messages to customers skip quiet hours, business days and caps, "
                               "and do not count towards caps (transactional notices)")
    actions: list[Any] | None = Field(None, min_length=1)
    on_resolve: list[Any] = Field(default_factory=list)
    steps: list[Any] = Field(default_factory=list, description="a journey (§14): steps run in order, each when "
                                                                "it is due; instead of `actions`")
    exit_when: str | None = Field(None, description="a journey ends (exited) as soon as this holds at a run")
    exit_on_unmatch: bool = Field(False, description="a journey also ends (exited) when the trigger stops matching")

    @model_validator(mode="after")
    def _actions_or_steps(self) -> "Playbook":
        if self.actions is not None and self.steps:
            raise ValueError("a playbook has either `actions:` or `steps:` (a journey), not both")
        if self.actions is None and not self.steps:
            raise ValueError("a playbook needs `actions:` (or `steps:` for a journey)")
        return self

    @property
    def is_journey(self) -> bool:
        return bool(self.steps)

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


_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class WaitOptions(Model):
    """`wait: {business_days: N, at: "HH:MM"}` or `wait: {until: EXPR, timeout: DURATION}`."""

    business_days: int | None = Field(None, ge=1, le=366, description="business days of the contact policy")
    at: str | None = Field(None, description="HH:MM: the next such time, recipient-local for customer steps")
    until: str | None = Field(None, description="continue as soon as this expression holds at a run")
    timeout: DurationText | None = Field(None, description="with `until`: continue anyway after this long")

    @field_validator("at")
    @classmethod
    def _at(cls, v: str | None) -> str | None:
        if v is not None and not _CLOCK.match(str(v)):
            raise ValueError(f"`{v}` is not a time of day; write HH:MM, e.g. \"10:00\" (quoted)")
        return v

    @model_validator(mode="after")
    def _combination(self) -> "WaitOptions":
        if self.until is not None:
            if self.timeout is None:
                raise ValueError("`wait: {until: …}` needs a `timeout` (e.g. `timeout: 4d`)")
            if self.business_days is not None or self.at is not None:
                raise ValueError("`until` does not combine with `business_days` or `at`; use two waits")
        elif self.timeout is not None:
            raise ValueError("`timeout` goes with `until`")
        elif self.business_days is None and self.at is None:
            raise ValueError("a wait needs a duration (`wait: 3d`), `business_days`, `at` or `until`")
        return self


class WaitStep(Model):
    """`wait:` — pause the journey."""

    id: str | None = Field(None, description="optional: waits get `after-<previous step id>` otherwise")
    wait: Annotated[Union[Annotated[DurationText, Tag("=duration")], Annotated[WaitOptions, Tag("=options")]],
                    Discriminator(lambda v: "=options" if isinstance(v, dict) else "=duration")] = Field(
        description="a duration (3d), or {business_days, at} or {until, timeout}")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        return _step_id(v) if v is not None else v


def _step_id(v: str) -> str:
    if not re.match(ID_PATTERN, v):
        raise ValueError(f"`{v}` is not a valid step id: use lower-case letters, digits and -")
    return v


def _step_kind(v: Any) -> str | None:
    """Which kind of step a mapping is: a wait, an if with then/else, or an action step."""
    if isinstance(v, dict):
        return "=wait" if "wait" in v else "=if" if ("then" in v or "else" in v) else "=action"
    return None


class ActionBase(OneOf):
    """One action: exactly one kind's key, whose options may also name the `connector` that delivers it and say
    whether it is `customer_facing`."""

    @property
    def connector(self) -> str | None:
        return getattr(self.options, "connector", None)

    @property
    def customer_facing(self) -> bool | None:
        return getattr(self.options, "customer_facing", None)

    @property
    def digest(self) -> Any:
        return getattr(self.options, "digest", None)

    @property
    def digest_template(self) -> str | None:
        return getattr(self.options, "digest_template", None)


class ActionStepBase(ActionBase):
    """One action step of a journey: exactly one action kind's key, its `id` and an optional `if`."""

    _not_kinds: ClassVar[tuple[str, ...]] = ("id", "if_")

    @field_validator("id", check_fields=False)
    @classmethod
    def _id(cls, v: str) -> str:
        return _step_id(v)


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
                                                                  "policy applies); default: the kind's own view")),
            digest=(DigestOption | None, Field(None, description="collect into one message per recipient: daily, "
                                                                "weekly, or {every, at, day} (§15)")),
            digest_template=(str | None, Field(None, description="the template of the digest message (receives "
                                                                 "items, groups, recipient, period)")))
        kinds[name] = (options | None, None)
    action = create_model("Action", __base__=ActionBase, **kinds)
    action_step = create_model(
        "ActionStep", __base__=ActionStepBase, **kinds,
        id=(str, Field(description="the step's id: unique in the playbook, [a-z0-9-]+")),
        if_=(str | None, Field(None, alias="if", description="skipped when this expression does not hold")))
    if_step = create_model(
        "IfStep", __base__=Model, id=(str | None, None),
        if_=(str, Field(alias="if", description="an expression: `then` when it holds, else `else`")),
        then=(list["Step"], Field(min_length=1)), else_=(list["Step"], Field(default_factory=list, alias="else")))
    step = Annotated[Union[Annotated[action_step, Tag("=action")], Annotated[WaitStep, Tag("=wait")],
                           Annotated[if_step, Tag("=if")]], Discriminator(_step_kind)]
    if_step.model_rebuild(_types_namespace={"Step": step})
    return create_model("Playbook", __base__=Playbook, actions=(list[action] | None, Field(None, min_length=1)),
                        on_resolve=(list[action], Field(default_factory=list)),
                        steps=(list[step], Field(default_factory=list)))


def glob_to_like(pattern: str) -> str:
    """A shell glob (* and ?) as a SQL LIKE pattern with `\\` as escape."""
    out = re.sub(r"([%_\\])", r"\\\1", pattern)
    return out.replace("*", "%").replace("?", "_")
