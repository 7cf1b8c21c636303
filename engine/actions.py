"""Action kinds: what a playbook action (`email:`, `slack:`, `task:`, `webhook:`, or a plugin's) may say, how it is
compiled when playbooks load, planned into a typed payload, checked at send time and summarised for `run`.

The core never lists kinds: the loader, the planner and the dispatcher ask the action's `ActionKind`, which a
connector plugin brings (engine/plugins.py). Several connectors may deliver one kind (tasks: the built-in list,
HubSpot, Salesforce) and share its ActionKind object."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, ClassVar

from pydantic import BaseModel

from engine.templating import TemplateProblem, Templates, render


class Payload:
    """Base of a typed payload: a frozen dataclass an action kind plans, the outbox stores as JSON and the kind's
    connectors deliver. Fields may be nested payloads or lists of them."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in the outbox (empty fields left out: reading it back gives their defaults)."""
        names, nested = _fields(type(self))
        if not nested:
            return {name: value for name in names if (value := getattr(self, name)) is not None}
        return {name: (value if name not in nested else _dump(value)) for name in names
                if (value := getattr(self, name)) is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Any:
        """The payload an outbox row holds (keys it does not know are ignored, missing ones take defaults)."""
        names, nested = _fields(cls)
        if not nested:
            return cls(**{name: data[name] for name in names if name in data})
        return cls(**{name: (data[name] if name not in nested else _load(nested[name], data[name]))
                      for name in names if name in data})


@cache
def _fields(cls: type) -> tuple[tuple[str, ...], dict[str, type[Payload]]]:
    """A payload class's field names, and those holding payloads (alone or in a list) with their type."""
    hints = typing.get_type_hints(cls)
    names, nested = [], {}
    for f in dataclasses.fields(cls):
        names.append(f.name)
        hint = hints[f.name]
        inner = typing.get_args(hint)[0] if typing.get_origin(hint) is list else hint
        if isinstance(inner, type) and issubclass(inner, Payload):
            nested[f.name] = inner
    return tuple(names), nested


def _dump(value: Any) -> Any:
    return [v.to_json() for v in value] if isinstance(value, list) else value.to_json()


def _load(kind: type[Payload], value: Any) -> Any:
    if isinstance(value, list):
        return [kind.from_json(v) if isinstance(v, dict) else v for v in value]
    return kind.from_json(value) if isinstance(value, dict) else value


class Refusal(TemplateProblem):
    """An action rendered, but what it rendered to may not be sent (a webhook URL the `outbound` rule refuses, an
    email recipient from data that is not one address): recorded failed with the reason, like a template that
    fails to render."""

    label = "refused"


@dataclass(frozen=True, slots=True)
class ClosePayload(Payload):
    """Closing what an episode's action created (a task) when the episode resolves: the dedup key of the action
    that created it, the id the receiving system gave it, and its title."""

    task_key: str
    external_id: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class CompiledAction:
    """One action of a loaded playbook: its options with every templated string compiled, and the connector
    that delivers it."""

    index: int
    kind: str                       # the action's key: email | slack | task | webhook | a plugin's
    spec: Any                       # the options model the kind validated
    fields: Any                     # options as a nested structure whose strings are compiled templates
    files: dict[str, Any] = field(default_factory=dict)   # template files, by part (email: subject, html, text)
    connector: str = ""             # the connector plugin that delivers it (engine/plugins.py: route)
    customer_facing: bool = False   # it reaches a customer: the contact policy applies (engine/contact_policy.py)
    metrics: frozenset = frozenset()  # the metric windows its templates read (metric(), metric_change())
    digest: Any = None              # the DigestSchedule it collects into (engine/digests.py), or None
    digest_template: str | None = None


@dataclass
class CompileContext:
    """What an action kind needs to compile one action: the playbook's subject, the templates, and where to
    report a problem (`problem(path, message, hint)`, path relative to the action's options)."""

    subject: str
    templates: Templates
    templates_shown: str                                         # the templates folder as the user would write it
    settings: Any
    problem: Callable[..., None]
    template_problem: Callable[[str, TemplateProblem], None]     # (template file name, problem) of a template file

    def structure(self, value: Any, literal: frozenset[str], extra: frozenset[str] = frozenset(),
                  path: tuple[Any, ...] = (), markup: str = "text") -> Any:
        """A nested structure of options with each string compiled as an inline template, except the values of
        the keys in `literal`; `extra` names template variables besides the subject's; `markup` is how what
        expressions output is escaped (engine/templating.py: Templates.compile_inline)."""
        if isinstance(value, dict):
            return {k: (v if k in literal else self.structure(v, literal, extra, path + (k,), markup))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self.structure(v, literal, extra, path + (i,), markup) for i, v in enumerate(value)]
        if isinstance(value, str):
            try:
                return self.templates.compile_inline(value, self.subject, extra, markup)
            except TemplateProblem as exc:
                self.problem(path, exc.message)
                return None
        return value


@dataclass
class PlanContext:
    """What an action kind needs to plan one action for one subject: the template context (with the subject's
    rows), the rows themselves, the contacts of the subject's account with the roles the actions address,
    the clock, the settings, and the action's dedup key."""

    context: dict[str, Any]
    records: dict[str, dict]
    contacts: dict[str, list[dict]]
    now: datetime
    settings: Any
    key: str
    zone_of: Callable[[dict | None, dict | None], str] | None = None   # a recipient's zone (contact, account)

    def recipient(self, contact: dict | None) -> dict[str, Any]:
        """What a template renders with for one contact as recipient (§16): `contact`, and the locale and time
        zone the filters format in — the contact's, else the account's, else the config's."""
        from engine.locales import recipient_locale

        account = self.records.get("account")
        out: dict[str, Any] = {"_locale": recipient_locale(contact, account, self.settings.default_locale)}
        if contact is not None:
            out["contact"] = contact
        if self.zone_of is not None:
            out["_zone"] = self.zone_of(contact, account)
        return out

    def render(self, template: Any, extra: dict[str, Any] | None = None) -> str:
        """Render one compiled template in this context (plus `extra` names)."""
        return render(template, dict(self.context, **extra) if extra else self.context)

    def render_structure(self, value: Any, extra: dict[str, Any] | None = None) -> Any:
        """Render every compiled template inside a nested structure."""
        if isinstance(value, dict):
            return {k: self.render_structure(v, extra) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render_structure(v, extra) for v in value]
        if hasattr(value, "generate"):
            return self.render(value, extra)
        return value


@dataclass(frozen=True)
class SendCheck:
    """What is left to deliver of a claimed action once the suppression list has been read: the payload, or no
    payload and the status to record instead (`suppressed`, or `sent` when an earlier attempt delivered all)."""

    payload: Any
    status: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Rendering:
    """One message or item as it would be sent, for `playbook preview`: its headline fields in display order
    (To, Subject, Channel, Title…), its bodies as people read them (text, html, blocks as JSON…), and the raw
    bytes a connector would send, if it sends a document (an email's .eml)."""

    fields: dict[str, str]
    bodies: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    raw_suffix: str | None = None       # the raw document's file suffix (".eml")


class ActionKind:
    """A kind of action. Subclasses set `name`, `options` and `payload`, and override what differs from the
    defaults: every option string a template (except `literal` keys), the payload built from the rendered
    options."""

    name: ClassVar[str]
    options: ClassVar[type[BaseModel]]
    payload: ClassVar[type[Payload]]
    literal: ClassVar[frozenset[str]] = frozenset()     # option keys whose values are not templates

    def compile(self, options: BaseModel, ctx: CompileContext) -> tuple[Any, dict[str, Any]]:
        """(fields, files): the options with their templates compiled, and any template files."""
        return ctx.structure(self.dump(options), self.literal), {}

    @staticmethod
    def dump(options: BaseModel) -> dict[str, Any]:
        """The options as written (without `connector`, which the core reads)."""
        return options.model_dump(exclude_none=True, by_alias=True,
                                  exclude={"connector", "customer_facing", "digest", "digest_template"})

    def plan(self, action: CompiledAction, ctx: PlanContext) -> Payload:
        """The payload of one action for one subject (raises TemplateProblem when a template fails)."""
        return self.payload.from_json(ctx.render_structure(action.fields))

    def nothing_to_send(self, payload: Any) -> str | None:
        """Why a planned payload has no one to deliver to (it is recorded suppressed at once), or None."""
        return None

    def contact_roles(self, options: BaseModel) -> list[str]:
        """The contact roles whose contacts (of the subject's account) the action addresses."""
        return []

    def customer_facing(self, options: BaseModel) -> bool:
        """Whether the action reaches customers unless the playbook says otherwise (`customer_facing:`)."""
        return False

    def per_recipient(self, payload: Any) -> list[tuple[str | None, Any]]:
        """The payload split into one per recipient, each with its contact id (None: the subject's), so that
        each customer's message is timed and capped on its own. Default: one payload, the whole."""
        return [(None, payload)]

    def closable(self, options: BaseModel) -> bool:
        """Whether what this action creates is closed when its episode resolves (a `<kind>_close` action)."""
        return False

    def addresses(self, payload: Any) -> list[str]:
        """The people's addresses this payload goes to, checked against the suppression list at send time."""
        return []

    def at_send(self, payload: Any, blocked: set[str], result: dict | None) -> SendCheck:
        """What to deliver now, given the suppressed addresses among `addresses()` and an earlier attempt's
        result."""
        return SendCheck(payload)

    def summary(self, payload: Any) -> dict[str, Any]:
        """The short form `run` shows and its JSON lists: {"to": [...], and "subject", "text" or "title"}."""
        return {"to": []}

    def preview(self, payload: Any, settings: Any) -> list[Rendering]:
        """How a planned payload reads when sent (`playbook preview`): one Rendering per message. Default: its
        plain fields as headline fields, its nested ones as JSON bodies."""
        import json

        data = payload.to_json()
        flat = {k: str(v) for k, v in data.items() if not isinstance(v, (dict, list))}
        nested = {k: json.dumps(v, ensure_ascii=False, indent=2) for k, v in data.items()
                  if isinstance(v, (dict, list))}
        return [Rendering(flat, nested)]

    def test_copy(self, payload: Any, address: str) -> Any:
        """The payload sent to `address` only and marked as a test (`playbook preview --send-to`), or None when
        this kind has nothing to send to an address."""
        return None

    # digests (§15, engine/digests.py): kinds whose messages may collect into one per recipient override these
    digest_markup: ClassVar[str] = "text"      # how a digest's default layout is written: `slack` or `text`

    def digest_parts(self, payload: Any) -> list[tuple[str, str, Payload]] | None:
        """(recipient, the text a digest lists, the payload to that recipient) of each recipient of a planned
        payload; None: this kind's actions cannot collect into digests."""
        return None

    def digest_message(self, recipient: str, message: Any, key: str) -> Payload:
        """The payload of one digest to `recipient` (message: engine.digests.DigestMessage)."""
        raise NotImplementedError
