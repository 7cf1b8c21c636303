"""The contact policy (§13): when a message to a customer may go out, and how many may.

`contact_policy:` in config.yaml applies to customer-facing actions (an email to contacts, or an action a
playbook marks `customer_facing: true`) of every playbook that is not `contact_policy: exempt`:

- each message is planned for its recipient's time zone (the first of `timezone_from` that is set, else the
  config zone) at the first moment outside quiet hours on a business day (`ContactPolicy.slot`);
- the caps are checked when it is sent, against the messages already sent to that contact or account within
  each cap's window (the ledger and its locks: engine/store/contact_sends.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import cached_property
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.clock import Duration, DurationText, known_zone, parse_duration
from engine.datamodel import MAX_COUNT

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_CLOCK_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_REGION = re.compile(r"^([A-Z]{2,3})(?:-([A-Z0-9]{1,5}))?$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _clock_time(v: str) -> str:
    if not _CLOCK_TIME.match(str(v)):
        raise ValueError(f"`{v}` is not a time of day; write HH:MM, e.g. \"09:00\" (quoted)")
    return v


class QuietHours(_Model):
    """Recipient-local hours when no message goes out; `start` after `end` crosses midnight."""

    start: str = Field(description="HH:MM, recipient-local")
    end: str = Field(description="HH:MM, recipient-local; messages wait until then")

    _times = field_validator("start", "end", mode="before")(classmethod(lambda cls, v: _clock_time(v)))

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("quiet hours start and end at the same time; remove `quiet_hours` or widen it")
        return self


class BusinessDays(_Model):
    """The days messages go out on: these weekdays, except public holidays of a country (ISO code, `JP`, or
    with a subdivision, `US-NY`) and listed dates."""

    weekdays: list[Weekday] = Field(default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"], min_length=1)
    holidays: str | date | list[str | date] = Field(default_factory=list)

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, v: Any) -> list[str | date]:
        items = v if isinstance(v, list) else [v]
        out: list[str | date] = []
        for item in items:
            if isinstance(item, date):
                out.append(item)
                continue
            try:
                out.append(date.fromisoformat(item))
                continue
            except ValueError:
                pass
            _calendar(item)          # raises a clear ValueError for an unknown country or subdivision
            out.append(item)
        return out


class Cap(_Model):
    """At most `max` customer-facing messages per contact (or per account) within a window."""

    per: Literal["contact", "account"]
    max: int = Field(ge=1, le=MAX_COUNT)
    within: DurationText = Field(description="the window, a duration such as 7d or 1mo")

    @property
    def window(self) -> Duration:
        return parse_duration(self.within)

    def __str__(self) -> str:
        return f"frequency cap: {self.max} per {self.per} in {self.within}"


class ContactPolicyConfig(_Model):
    """`contact_policy:` in config.yaml."""

    timezone_from: list[str] = Field(default_factory=lambda: ["contact.timezone", "account.timezone"],
                                     description="fields holding the recipient's IANA time zone, first set wins")
    quiet_hours: QuietHours | None = None
    business_days: BusinessDays | None = None
    caps: list[Cap] = Field(default_factory=list)
    on_cap: Literal["drop", "defer"] = Field("drop", description="drop: the message is suppressed with the "
                                                                "reason; defer: it waits until the window allows")

    @field_validator("timezone_from")
    @classmethod
    def _fields(cls, v: list[str]) -> list[str]:
        for name in v:
            entity, _, field = name.partition(".")
            if entity not in ("contact", "account") or not field:
                raise ValueError(f"`{name}` is not a contact or account field; write e.g. contact.timezone")
        return v


def _calendar(code: str) -> Any:
    """The public holidays of a country (`JP`) or a subdivision (`US-NY`), from the holidays library."""
    import holidays

    m = _REGION.match(str(code))
    supported = holidays.list_supported_countries()
    if not m or m.group(1) not in supported:
        from engine.errors import suggest

        close = suggest(str(code).upper(), supported)
        raise ValueError(f"`{code}` is neither a date (YYYY-MM-DD) nor a country code with public holidays"
                         + (f"; did you mean `{close}`?" if close else "; write an ISO code such as JP"))
    country, subdivision = m.group(1), m.group(2)
    if subdivision and subdivision not in supported[country]:
        raise ValueError(f"`{code}`: {country} has no subdivision `{subdivision}`; known ones: "
                         + ", ".join(supported[country][:20]) + ("…" if len(supported[country]) > 20 else ""))
    return holidays.country_holidays(country, subdiv=subdivision)


@dataclass(frozen=True)
class Slot:
    """When a customer-facing message may go out: the recipient's zone, the moment (naive UTC) and, when it
    waits, why."""

    zone: str
    at: datetime
    reason: str | None = None

    def local(self) -> datetime:
        return self.at.replace(tzinfo=timezone.utc).astimezone(ZoneInfo(self.zone))

    @property
    def note(self) -> str | None:
        """What `outbox list` and `explain` say: "deferred: quiet hours until 2026-12-07T09:00:00+09:00"."""
        return f"deferred: {self.reason} until {self.local().isoformat(timespec='seconds')}" if self.reason else None


class ContactPolicy:
    """The configured policy, ready to plan with (`active` is False when config.yaml has none)."""

    def __init__(self, config: ContactPolicyConfig | None, default_zone: str):
        self.config, self.default_zone = config, default_zone
        self.active = config is not None
        self.caps: list[Cap] = list(config.caps) if config else []
        self.on_cap = config.on_cap if config else "drop"

    @cached_property
    def _sources(self) -> list[tuple[str, str]]:
        return [tuple(name.split(".", 1)) for name in self.config.timezone_from] if self.config else []

    def zone(self, contact: dict | None, account: dict | None) -> str:
        """The recipient's zone: the first `timezone_from` field that holds a known IANA name, else the config
        zone (sync rejects other values; rows synced before that are read past, not trusted)."""
        rows = {"contact": contact or {}, "account": account or {}}
        for entity, field in self._sources:
            value = rows[entity].get(field)
            if value and known_zone(str(value)):
                return str(value)
        return self.default_zone

    def slot(self, at: datetime, zone: str) -> Slot:
        """The first moment at or after `at` (naive UTC) that is outside quiet hours on a business day in
        `zone`; the reason it waits is the first rule that held it back."""
        if self.config is None:
            return Slot(zone, at)
        tz = ZoneInfo(zone)
        local = at.replace(tzinfo=timezone.utc).astimezone(tz)
        reason = None
        for _ in range(2 * 366):
            why = self._closed(local)
            if why is None:
                return Slot(zone, local.astimezone(timezone.utc).replace(tzinfo=None), reason)
            reason = reason or why
            local = self._next_opening(local, tz)
        raise ValueError("the contact policy allows no moment within two years")   # pragma: no cover

    def _closed(self, local: datetime) -> str | None:
        day = self._day_off(local.date())
        if day:
            return day
        q = self.config.quiet_hours if self.config else None
        if q is not None and _in_quiet(local.time(), q):
            return "quiet hours"
        return None

    def business_day(self, day: date) -> bool:
        """Whether `day` is a business day: the policy's weekdays and holidays, else Monday to Friday."""
        if self.config is None or self.config.business_days is None:
            return day.weekday() < 5
        return self._day_off(day) is None

    def _day_off(self, day: date) -> str | None:
        b = self.config.business_days if self.config else None
        if b is None:
            return None
        if WEEKDAYS[day.weekday()] not in b.weekdays:
            return f"not a business day ({day.strftime('%A')})"
        if day in self._listed:
            return f"holiday ({day.isoformat()})"
        for cal in self._calendars:
            name = cal.get(day)
            if name:
                return f"public holiday ({name})"
        return None

    @cached_property
    def _listed(self) -> frozenset[date]:
        b = self.config.business_days if self.config else None
        return frozenset(d for d in (b.holidays if b else []) if isinstance(d, date))

    @cached_property
    def _calendars(self) -> list[Any]:
        b = self.config.business_days if self.config else None
        return [_calendar(c) for c in (b.holidays if b else []) if isinstance(c, str)]

    def _next_opening(self, local: datetime, tz: ZoneInfo) -> datetime:
        """The next moment a rule could open: the end of the quiet hours this moment is in, else the next
        day's start."""
        q = self.config.quiet_hours if self.config else None
        if q is not None and _in_quiet(local.time(), q) and not self._day_off(local.date()):
            end = _parse(q.end)
            day = local.date() + timedelta(days=1) if local.time() >= end else local.date()
            return datetime.combine(day, end, tzinfo=tz)
        return datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=tz)

    def capped(self, cap: Cap, sent: list[datetime], now: datetime, tz: str) -> datetime | None:
        """When a cap holds a message back: None if fewer than `max` of `sent` (ascending, naive UTC) fall in
        the window ending `now`; else the moment enough of them will have left it."""
        start = cap.window.before(now, tz)
        inside = [s for s in sent if s > start]
        if len(inside) < cap.max:
            return None
        return cap.window.after(inside[len(inside) - cap.max], tz)


def _parse(hhmm: str) -> time:
    h, m = hhmm.split(":")
    return time(int(h), int(m))


def _in_quiet(t: time, q: QuietHours) -> bool:
    start, end = _parse(q.start), _parse(q.end)
    if start < end:
        return start <= t < end
    return t >= start or t < end          # crosses midnight




class CapPreview:
    """What the caps would do to the messages of a dry run or an explanation: each message is counted against
    the messages already sent or waiting for its contact and account (`history(per, id)`, ascending naive UTC)
    and the ones this preview saw before it."""

    def __init__(self, policy: ContactPolicy, history: Any,
                 seen: dict[tuple[str, str], list[datetime]] | None = None):
        self.policy, self.history = policy, history
        self._seen: dict[tuple[str, str], list[datetime]] = {} if seen is None else seen   # (per, id) -> times

    def check(self, row: dict[str, Any]) -> str | None:
        """"frequency cap: 2 per contact in 7d (drop)", or "… (waits until T)", or None when no cap stops it."""
        at, stopped = row["not_before"], None
        counted = [(cap, (cap.per, row[f"{cap.per}_id"])) for cap in self.policy.caps if row.get(f"{cap.per}_id")]
        for _, key in counted:
            if key not in self._seen:
                self._seen[key] = list(self.history(*key))
        for cap, key in counted:
            sent = sorted(s for s in self._seen[key] if s <= at)
            until = self.policy.capped(cap, sent, at, self.policy.default_zone)
            if until is not None:
                if self.policy.on_cap == "drop":
                    stopped = f"{cap} (dropped)"
                else:
                    shown = self.policy.slot(until, row["zone"]).local().isoformat(timespec="seconds")
                    stopped = f"{cap} (waits until {shown})"
                break
        if stopped is None:
            for _, key in counted:
                self._seen[key].append(at)
        return stopped
