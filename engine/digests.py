"""Digests (§15): internal messages collected per recipient and channel, delivered as one message at the digest time.

- **Planning** (engine/planner.py): an action with `digest:` becomes one outbox row per recipient in status
  `digest`, due at the next digest time of its schedule (in the config zone), with `digest_key` naming its
  digest without a time (`digest/<connector>/<recipient>`) and `digest` holding what the message lists of it.
- **Assembly** (every dispatcher, before it claims): for each recipient with items due, under a lock per
  recipient, the items due become one ordinary outbox row — the digest, keyed `digest/<connector>/<recipient>/
  <digest time>` — and are marked `collected` into it, in one transaction. The digest is then claimed, sent,
  retried and recorded like any action, and its outcome is copied to its items (engine/store/outbox.py).
  A digest waits while an evaluation for a moment up to its time is still running, so that the alerts of a
  run at the digest time go in it. Items that come due after their digest was made (a run planned them late)
  go into the next one: none is lost, none is listed twice.
- **Layout**: the items grouped by playbook, each with its subject's name and the action's text, resolved ones
  marked; or the `digest_template` (receiving `items`, `groups`, `recipient`, `period`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from engine.clock import localize
from engine.contact_policy import WEEKDAYS, Weekday, _clock_time

log = logging.getLogger("playbook.digests")

DIGEST_PLAYBOOK = "@digest"      # the playbook id of digest rows (a playbook's id cannot start with @)
MAX_TEXT = 35_000                # characters of a default layout (Slack refuses messages of 40,000)
WAIT_FOR_RUNS = timedelta(hours=1)   # an evaluation still "running" after this long crashed: not waited for


class DigestSchedule(BaseModel):
    """When a digest goes out: `every` day or week (on `day`), at `at` in the config time zone."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    every: Literal["daily", "weekly"] = "daily"
    at: str = Field("09:00", description="HH:MM in the config time zone")
    day: Weekday | None = Field(None, description="weekly digests: the day they go out (default mon)")

    _at = field_validator("at", mode="before")(classmethod(lambda cls, v: _clock_time(v)))

    @model_validator(mode="after")
    def _day(self) -> DigestSchedule:
        if self.day is not None and self.every != "weekly":
            raise ValueError("`day` is for weekly digests (every: weekly)")
        return self

    def next_time(self, instant: datetime, zone: str, *, strictly: bool = False) -> datetime:
        """The first digest time at (or, `strictly`, after) an instant (naive UTC, as is the result)."""
        tz = ZoneInfo(zone)
        local = localize(instant, zone)
        hour, minute = (int(x) for x in self.at.split(":"))
        weekday = WEEKDAYS.index(self.day or "mon")
        for offset in range(9):
            day = local.date() + timedelta(days=offset)
            if self.every == "weekly" and day.weekday() != weekday:
                continue
            at = datetime.combine(day, time(hour, minute), tzinfo=tz).astimezone(timezone.utc).replace(tzinfo=None)
            if at > instant or (at == instant and not strictly):
                return at
        raise AssertionError("a digest time within nine days")     # pragma: no cover

    @property
    def span(self) -> timedelta:
        return timedelta(days=7 if self.every == "weekly" else 1)

    def label(self) -> str:
        """`daily`, `weekly`, `daily at 17:00`, `weekly on fri at 09:00`."""
        parts = [self.every] + ([f"on {self.day}"] if self.day and self.day != "mon" else [])
        return " ".join(parts + ([f"at {self.at}"] if self.at != "09:00" or len(parts) > 1 else []))


def _from_word(value: Any) -> Any:
    """`digest: daily` or `digest: weekly` is the schedule of that name at its defaults."""
    if isinstance(value, str):
        if value not in ("daily", "weekly"):
            raise ValueError(f"`{value}` is not a digest schedule: use daily, weekly or "
                             "{every: daily, at: \"09:00\"}")
        return {"every": value}
    return value


_SCHEMA = {"anyOf": [{"enum": ["daily", "weekly"]}, {
    "type": "object", "additionalProperties": False,
    "properties": {"every": {"enum": ["daily", "weekly"]}, "at": {"type": "string", "pattern": r"^\d\d:\d\d$"},
                   "day": {"enum": list(WEEKDAYS)}}}],
    "description": "collect into one message per recipient: daily, weekly, or {every, at, day} (§15)"}
DigestOption = Annotated[DigestSchedule, BeforeValidator(_from_word), WithJsonSchema(_SCHEMA)]


def schedule_of(option: Any) -> DigestSchedule:
    """The schedule an action's `digest:` says."""
    return option if isinstance(option, DigestSchedule) else DigestSchedule.model_validate(_from_word(option))


def group_key(connector: str, recipient: str) -> str:
    """The digest of a recipient on a channel, without its time (`digest/slack/csm@example.com`)."""
    who = recipient.strip()
    return f"digest/{connector}/{who.lower() if '@' in who else who}"


def digest_dedup_key(group: str, at: datetime, zone: str) -> str:
    """`digest/<connector>/<recipient>/<digest time>` (§15): one digest per recipient, channel and time."""
    return f"{group}/{localize(at, zone).isoformat(timespec='minutes')}"


def subject_name(subject_type: str, records: dict[str, dict]) -> str:
    """How a digest names an item's subject: the account's name; a contact's or goal's with their account's."""
    account = records.get("account") or {}
    own = records.get(subject_type) or {}
    if subject_type == "account":
        return str(account.get("name") or account.get("id") or "")
    name = own.get("name") or own.get("email") or own.get("id") or ""
    return f"{name} ({account['name']})" if account.get("name") else str(name)


# -- the message ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Period:
    """What a digest covers: the schedule's span ending at its time."""

    every: str
    start: datetime
    end: datetime


def items_view(rows: list[dict[str, Any]], resolved: set[int], tz: str) -> list[dict[str, Any]]:
    """The items a digest lists, in planning order: playbook, subject, text, resolved, planned at."""
    out = []
    for r in rows:
        d = r["digest"] or {}
        out.append({"playbook": d.get("playbook") or r["playbook_id"], "playbook_id": r["playbook_id"],
                    "subject": d.get("subject") or r["subject_id"], "subject_id": r["subject_id"],
                    "text": d.get("text") or "", "resolved": r["id"] in resolved,
                    "at": localize(r["created_at"], tz)})
    return out


@dataclass(frozen=True)
class Group:
    """One playbook's items in a digest (`g.playbook`, `g.items` in a digest_template)."""

    playbook: str
    items: list[dict[str, Any]]


def grouped(items: list[dict[str, Any]]) -> list[Group]:
    """Items by playbook, playbooks in the order of their first item."""
    groups: dict[str, Group] = {}
    for item in items:
        groups.setdefault(item["playbook_id"], Group(item["playbook"], [])).items.append(item)
    return list(groups.values())


def default_layout(items: list[dict[str, Any]], period: Period, locale: str, markup: str) -> tuple[str, str]:
    """(subject, text) of the default layout: a title, then per playbook its items, resolved ones marked.
    `markup` is `slack` (bold, strike-through; names escaped) or `text`."""
    from babel.dates import format_date

    day = format_date(period.end.date(), "long", locale=locale)
    what = "Daily" if period.every == "daily" else "Weekly"
    groups = grouped(items)
    count = f"{len(items)} alert{'s' if len(items) != 1 else ''} from {len(groups)} playbook" \
            f"{'s' if len(groups) != 1 else ''}"
    subject = f"{what} digest, {day}: {count}"
    slack = markup == "slack"
    lines = [f"*{what} digest — {day}* · {count}" if slack else f"{what} digest — {day} · {count}"]
    shown = 0
    for g in groups:
        head = _escape(g.playbook, slack)
        lines += ["", f"*{head}* ({len(g.items)})" if slack else f"{head} ({len(g.items)})"]
        for item in g.items:
            name, text = _escape(item["subject"], slack), item["text"]
            line = f"• {name}: {text}"
            if item["resolved"]:
                line = f"• ~{name}: {text}~ _(resolved)_" if slack else f"{line} (resolved)"
            if sum(len(x) + 1 for x in lines) + len(line) > MAX_TEXT:
                lines.append(f"… and {len(items) - shown} more")
                return subject, "\n".join(lines)
            lines.append(line)
            shown += 1
    return subject, "\n".join(lines)


def _escape(text: str, slack: bool) -> str:
    """Data in Slack text: `&`, `<` and `>` escaped, so that a name cannot mention or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") if slack else text


# -- assembly ---------------------------------------------------------------------------------------------------

def assemble_due(store: Any, settings: Any, now: datetime) -> int:
    """Make the digests that are due at `now` (naive UTC); returns how many were made. Safe in any number of
    concurrent dispatchers. Costs one indexed read when none is due."""
    with store.read() as tx:
        groups = tx.outbox.digests_due(now)
        if not groups or tx.runs.evaluating(now, now - WAIT_FOR_RUNS):
            return 0
    made = 0
    for group in groups:
        with store.write() as tx:
            made += _assemble(tx, settings, group, now)
    return made


def _assemble(tx: Any, settings: Any, group: str, now: datetime) -> int:
    """One recipient's digest, under a lock on that recipient (items of another digest wait for it)."""
    from engine.plugins import registry

    tz = settings.timezone
    tx.outbox.lock_digest(group)
    rows = tx.outbox.digest_items(group, now)
    if not rows:
        return 0
    at = max(r["not_before"] for r in rows)
    key = digest_dedup_key(group, at, tz)
    if tx.outbox.id_of(key) is not None:          # made before these items came due: they go into the next one
        tx.outbox.postpone_digest_items([(r["id"], _schedule(r).next_time(at, tz, strictly=True)) for r in rows],
                                        now)
        return 0
    resolved = tx.episodes.resolved_items(rows)
    items = items_view(rows, resolved, tz)
    schedules = [_schedule(r) for r in rows]
    longest = max(schedules, key=lambda s: s.span)
    period = Period(longest.every, localize(at - longest.span, tz), localize(at, tz))
    first = rows[0]
    kind = registry().kinds[first["kind"]]
    recipient = (first["digest"] or {}).get("to") or group.split("/", 2)[2]
    template = next((r["digest"].get("template") for r in rows if (r["digest"] or {}).get("template")), None)
    message = render_digest(kind, settings, template, items, recipient, period)
    payload = kind.digest_message(recipient, message, key)
    row = digest_row(key, group, first, payload, now, settings, {
        "to": recipient, "items": len(rows), "every": period.every,
        "period": [period.start.isoformat(), period.end.isoformat()], **({"template": template} if template else {}),
        **({"note": message.note} if message.note else {})})
    tx.outbox.enqueue([row])
    digest_id = tx.outbox.id_of(key)
    tx.outbox.collect([r["id"] for r in rows], key, f"in digest #{digest_id}", now)
    log.info("digest made", extra={"dedup_key": key, "items": len(rows)})
    return 1


def _schedule(row: dict[str, Any]) -> DigestSchedule:
    d = row["digest"] or {}
    return DigestSchedule(every=d.get("every", "daily"), at=d.get("at", "09:00"), day=d.get("day"))


def digest_row(key: str, group: str, first: dict[str, Any], payload: Any, now: datetime, settings: Any,
               meta: dict[str, Any]) -> dict[str, Any]:
    """The outbox row of a digest: an ordinary action, due now, delivered by its items' connector."""
    from engine.clock import parse_duration

    return dict(dedup_key=key, playbook_id=DIGEST_PLAYBOOK, subject_type="digest", subject_id=group.split("/", 1)[1],
                episode=0, firing="digest", action_index=0, kind=first["kind"], connector=first["connector"],
                payload=payload.to_json(), status="pending", attempts=0, not_before=now,
                expires_at=parse_duration(settings.delivery.expire_after).after(now, settings.timezone),
                lease_token=0, ambiguous=False, created_at=now, updated_at=now, last_error=None, finished_at=None,
                digest_key=None, digest=meta)


@dataclass(frozen=True)
class DigestMessage:
    """A digest as rendered: subject (emails), text, HTML (emails, from a template), and a note when the
    `digest_template` failed and the default layout was used instead."""

    subject: str
    text: str
    html: str | None = None
    note: str | None = None


def render_digest(kind: Any, settings: Any, template: str | None, items: list[dict[str, Any]], recipient: str,
                  period: Period) -> DigestMessage:
    """The digest's message: its `digest_template` when it names one (and it renders), else the default layout."""
    markup = kind.digest_markup
    subject, text = default_layout(items, period, settings.default_locale, markup)
    if not template:
        return DigestMessage(subject, text)
    from engine.templating import TemplateProblem

    try:
        return _from_template(settings, template, items, recipient, period, markup, subject)
    except TemplateProblem as exc:
        note = f"digest_template `{template}` failed ({exc.message}); the default layout was used"
        log.error(note)
        return DigestMessage(subject, text, None, note)


def _from_template(settings: Any, name: str, items: list[dict[str, Any]], recipient: str, period: Period,
                   markup: str, default_subject: str) -> DigestMessage:
    from markupsafe import Markup

    from engine.templating import TemplateProblem, Templates, render

    templates = Templates(settings.templates if settings.templates.is_dir() else None)
    if markup == "slack":      # item texts are Slack text already (their data escaped when they were planned)
        items = [dict(i, text=Markup(i["text"])) for i in items]
    context = {"items": items, "groups": grouped(items), "recipient": recipient,
               "period": {"every": period.every, "start": period.start, "end": period.end},
               "_locale": settings.default_locale, "_zone": settings.timezone}
    parts = {}
    for part, suffix in (("subject", ".subject.j2"), ("text", ".txt.j2"), ("html", ".html.j2")):
        if templates.exists(name + suffix):
            compiled = templates.compile_file(name + suffix, "digest",
                                              markup="slack" if markup == "slack" and part == "text" else None)
            parts[part] = render(compiled, context)
    if "text" not in parts and "html" not in parts:
        raise TemplateProblem(f"template `{name}` has no {name}.txt.j2")
    return DigestMessage(" ".join(parts.get("subject", default_subject).split()), parts.get("text", ""),
                         parts.get("html"))

