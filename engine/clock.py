"""Time, defined once: the instant an evaluation runs at, the wall clock, durations and cron schedules.

The store keeps instants as naive UTC datetimes; a person gives and reads them in the config time zone."""

from __future__ import annotations

import calendar
import difflib
import re
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import AfterValidator

from engine.errors import UserError

DURATION = re.compile(r"^(\d+)(mo|[smhdw])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION_DAYS = 100 * 366       # a century: longer is a typo, and past datetime's range from now
FIRST_YEAR, LAST_YEAR = 1900, 2999  # the instants a person may give (--now, --until)

# What people write for a time zone that is not an IANA name, and the zone it usually means (abbreviations that
# name several zones, such as CST or IST, are left out).
ZONE_ALIASES = {
    "JST": "Asia/Tokyo", "日本": "Asia/Tokyo", "東京": "Asia/Tokyo", "KST": "Asia/Seoul", "SGT": "Asia/Singapore",
    "HKT": "Asia/Hong_Kong", "PST": "America/Los_Angeles", "PDT": "America/Los_Angeles", "MDT": "America/Denver",
    "CDT": "America/Chicago", "EDT": "America/New_York", "BST": "Europe/London", "CEST": "Europe/Paris",
    "AEST": "Australia/Sydney", "AEDT": "Australia/Sydney",
}


@cache
def zone_names() -> frozenset[str]:
    """Every IANA time zone name this system knows."""
    return frozenset(zoneinfo.available_timezones())


@cache
def _sorted_zones() -> tuple[str, ...]:
    return tuple(sorted(zone_names()))


def suggest_zone(text: str) -> str | None:
    """The IANA name someone most likely meant by a time zone that is not one: a common abbreviation (JST), the
    name in another case (asia/tokyo), a city (Tokyo), or a close spelling (Asia/Tokio); None when nothing fits."""
    names = _sorted_zones()
    given = text.strip()
    if given.upper() in ZONE_ALIASES or given in ZONE_ALIASES:
        return ZONE_ALIASES.get(given.upper()) or ZONE_ALIASES[given]
    folded = given.lower().replace(" ", "_")
    for name in names:
        city = "/" in name and not name.startswith("Etc/")   # Etc/GMT+9 is nine hours *behind* GMT: never guessed
        if name.lower() == folded or (city and name.lower().rsplit("/", 1)[-1] == folded):
            return name
    if "/" in given:        # only an Area/Location spelling is compared letter by letter (Mumbai is not Cuba)
        close = difflib.get_close_matches(given, names, n=1, cutoff=0.6)
        return close[0] if close else None
    return None


@dataclass(frozen=True)
class Clock:
    """The instant an evaluation runs at: `now` (naive UTC), `today` in the config time zone."""

    now: datetime
    today: date
    timezone: str

    def local(self, instant: datetime | None = None) -> datetime:
        """An instant (naive UTC; default `now`) as an aware datetime in the config time zone."""
        return localize(self.now if instant is None else instant, self.timezone)


def localize(instant: datetime, tz: str) -> datetime:
    """An instant (naive UTC, as the store keeps it, or aware) as an aware datetime in time zone `tz`."""
    aware = instant if instant.tzinfo else instant.replace(tzinfo=timezone.utc)
    return aware.astimezone(ZoneInfo(tz))


def show_time(instant: datetime, tz: str, *, seconds: bool = False) -> str:
    """An instant as a person reads it, in time zone `tz` with its offset: `2026-12-07 09:00 +09:00`."""
    local = localize(instant, tz)
    offset = local.strftime("%z")
    return local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + f" {offset[:3]}:{offset[3:5]}"


def parse_instant(text: str, tz: str) -> datetime:
    """An ISO date or date-time a person wrote, as an aware datetime (one without an offset is read in `tz`; a
    date is its midnight); ValueError when it is not ISO, or outside the years 1900 to 2999 (where every
    duration the engine adds or subtracts, up to a century, still gives a date)."""
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if not FIRST_YEAR <= parsed.year <= LAST_YEAR:
        raise OutOfRange(f"`{text}` is not between the years {FIRST_YEAR} and {LAST_YEAR}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=ZoneInfo(tz))


class OutOfRange(ValueError):
    """An instant a person gave that is ISO, but too far in the past or future."""


def parse_when(text: str, now: datetime, tz: str) -> datetime:
    """A time a person gives: a duration from `now` (`3d`, `1mo`; naive UTC) or an ISO date or date-time (no
    offset = `tz`), as naive UTC; ValueError saying how to write one."""
    if DURATION.match(text.strip()):
        return parse_duration(text).after(now, tz)
    try:
        moment = parse_instant(text, tz)
    except OutOfRange:
        raise
    except ValueError:
        raise ValueError(f"`{text}` is neither a date-time nor a duration; write e.g. 2026-12-10, "
                         "2026-12-10T09:00 or 3d") from None
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def known_zone(name: str) -> bool:
    """Whether `name` is an IANA time zone name (`Asia/Tokyo`; not `JST` or `+09:00`)."""
    return name in zone_names()


def wall_clock() -> datetime:
    """Current time as naive UTC (how the store keeps instants)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def make_clock(tz_name: str, now: str | datetime | None = None) -> Clock:
    """The evaluation instant: `now` (ISO; read in `tz_name` when it has no offset) or the wall clock at the
    start of its minute (schedules are minutes: two runs of one schedule are a whole number of minutes apart,
    so `repeat: 1d` on a daily run is due at every run, whatever second it started at)."""
    tz = ZoneInfo(tz_name)
    if now is None:
        instant = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    elif isinstance(now, datetime):
        instant = now if now.tzinfo else now.replace(tzinfo=tz)
    else:
        try:
            instant = parse_instant(now, tz_name)
        except OutOfRange as exc:
            raise UserError(f"--now: {exc}") from None
        except ValueError:
            raise UserError(f"--now: `{now}` is not an ISO date-time (e.g. 2026-03-01T09:00 or "
                            f"2026-03-01T09:00:00+09:00)") from None
    utc = instant.astimezone(timezone.utc)
    return Clock(now=utc.replace(tzinfo=None), today=utc.astimezone(tz).date(), timezone=tz_name)


@dataclass(frozen=True)
class Duration:
    """A length of time: fixed seconds, or calendar months (`1mo` is the 1st to the 1st, whatever the month's
    length; a day past the end of the shorter month is its last day)."""

    seconds: int = 0
    months: int = 0

    def __bool__(self) -> bool:
        return bool(self.seconds or self.months)

    def __str__(self) -> str:
        if self.months:
            return f"{self.months}mo"
        for unit, size in reversed(UNIT_SECONDS.items()):
            if self.seconds % size == 0:
                return f"{self.seconds // size}{unit}"
        return f"{self.seconds}s"   # pragma: no cover - every whole number of seconds has a unit

    def after(self, instant: datetime, tz: str = "UTC") -> datetime:
        """`instant` (naive UTC) plus this duration; months count on the calendar of time zone `tz`."""
        return self._shift(instant, tz, 1)

    def before(self, instant: datetime, tz: str = "UTC") -> datetime:
        """`instant` (naive UTC) minus this duration; months count on the calendar of time zone `tz`."""
        return self._shift(instant, tz, -1)

    def approx_seconds(self) -> int:
        """Its length in seconds, a month counted as 30 days (for timeouts and back-off, not calendars)."""
        return self.seconds + self.months * 30 * 86400

    def _shift(self, instant: datetime, tz: str, sign: int) -> datetime:
        if self.months:
            local = instant.replace(tzinfo=timezone.utc).astimezone(ZoneInfo(tz))
            months = local.year * 12 + local.month - 1 + sign * self.months
            year, month = divmod(months, 12)
            day = min(local.day, calendar.monthrange(year, month + 1)[1])
            moved = local.replace(year=year, month=month + 1, day=day, tzinfo=None).replace(tzinfo=ZoneInfo(tz))
            instant = moved.astimezone(timezone.utc).replace(tzinfo=None)
        return instant + timedelta(seconds=sign * self.seconds)


def parse_duration(text: str) -> Duration:
    """'30m', '12h', '3d', '2w', '1mo' (and '45s') -> a Duration; ValueError with a clear message otherwise."""
    m = DURATION.match(str(text).strip())
    if not m:
        raise ValueError(f"`{text}` is not a duration; write e.g. 30m, 12h, 3d, 2w or 1mo")
    n, unit = int(m.group(1)), m.group(2)
    days = n * (31 if unit == "mo" else UNIT_SECONDS[unit] / 86400)
    if days > MAX_DURATION_DAYS:
        raise ValueError(f"`{text}` is longer than a century; write a shorter duration")
    return Duration(months=n) if unit == "mo" else Duration(seconds=n * UNIT_SECONDS[unit])


def check_duration(text: str) -> str:
    """A duration as written (`3d`), or ValueError saying how to write one."""
    parse_duration(text)
    return text


WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")      # crontab numbering: 0 (and 7) is Sunday


def cron_trigger(text: str, tz: Any = timezone.utc) -> Any:
    """The APScheduler trigger of a five-field crontab expression read in zone `tz`. The weekday field keeps its
    crontab meaning (0 or 7 is Sunday, 1 Monday, `*/2` Sunday, Tuesday, …): APScheduler counts 0 as Monday, so
    the field is handed to it as weekday names."""
    from apscheduler.triggers.cron import CronTrigger

    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"Wrong number of fields; got {len(fields)}, expected 5")
    minute, hour, day, month, weekday = fields
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_weekday_names(weekday),
                       timezone=tz)


def _weekday_names(field: str) -> str:
    """A crontab weekday field (`1-5`, `0,6`, `mon-fri`, `*/2`, `5-7`) as the list of the days' names."""
    if field == "*":
        return field
    days: set[int] = set()
    for item in field.lower().split(","):
        span, _, step_text = item.partition("/")
        if step_text and (not step_text.isdigit() or int(step_text) == 0):
            raise ValueError(f"weekday step `{step_text}` is not a positive whole number")
        step = int(step_text or 1)
        first, dash, last = span.partition("-")
        if span == "*":
            low, high = 0, 6
        else:
            low = _weekday(first)
            high = _weekday(last) if dash else (6 if step_text else low)
            if dash and high == 0 and low > 0:
                high = 7                                   # `5-7`, `fri-sun`: up to Sunday
        if high < low:
            raise ValueError(f"weekday range `{span}` runs backwards; write it from Sunday (0) to Saturday (6)")
        days.update(d % 7 for d in range(low, high + 1, step))
    return ",".join(WEEKDAY_NAMES[d] for d in sorted(days))


def _weekday(token: str) -> int:
    token = token.strip()
    if token in WEEKDAY_NAMES:
        return WEEKDAY_NAMES.index(token)
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token) % 7
    raise ValueError(f"`{token}` is not a weekday (0-7 or sun-sat)")


def check_cron(text: str | None) -> str | None:
    """A five-field cron expression that fires at some time, or ValueError saying how to write one."""
    if text is not None:
        try:
            trigger = cron_trigger(text)
        except ValueError as exc:
            raise ValueError(f"`{text}` is not a cron expression ({exc}); "
                             "write five fields: minute hour day month weekday") from None
        if not _ever_fires(trigger):
            raise ValueError(f"`{text}` never fires: no date has that day in that month; "
                             "check the day and month fields")
    return text


def _ever_fires(trigger: Any) -> bool:
    """Whether a cron's month, day and weekday fields match some date: any day of the 28 years from 2000 (every
    date falls on every weekday in them, 29 February included). APScheduler itself would search until the year
    9999 to find that a cron never fires."""
    fields = [f for f in trigger.fields if f.name in ("month", "day", "day_of_week")]
    day = datetime(2000, 1, 1)
    while day.year < 2028:
        if all(f.get_next_value(day) == f.get_value(day) for f in fields):
            return True
        day += timedelta(days=1)
    return False

# The types of configuration and playbook values that are a duration or a cron expression: every such value is
# checked when it is loaded (so by `playbook validate`), and tests find them all by these types.
DurationText = Annotated[str, AfterValidator(check_duration)]
CronText = Annotated[str, AfterValidator(check_cron)]


def scheduled_between(cron: str, start: datetime, end: datetime, tz: str) -> bool:
    """Whether the cron schedule (read in time zone `tz`) has a time in (start, end] (naive UTC instants)."""
    after = start.replace(tzinfo=timezone.utc) + timedelta(microseconds=1)
    due = cron_trigger(cron, ZoneInfo(tz)).get_next_fire_time(None, after)
    return due is not None and due <= end.replace(tzinfo=timezone.utc)
