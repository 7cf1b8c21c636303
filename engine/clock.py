"""Time, defined once: the instant an evaluation runs at, the wall clock, durations and cron schedules.

The store keeps instants as naive UTC datetimes; a person gives and reads them in the config time zone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

from engine.errors import UserError

DURATION = re.compile(r"^(\d+)([smhdw])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Clock:
    """The instant an evaluation runs at: `now` (naive UTC), `today` in the config time zone."""

    now: datetime
    today: date
    timezone: str

    def local(self, instant: datetime | None = None) -> datetime:
        """An instant (naive UTC; default `now`) as an aware datetime in the config time zone."""
        value = self.now if instant is None else instant
        return value.replace(tzinfo=timezone.utc).astimezone(ZoneInfo(self.timezone))


def wall_clock() -> datetime:
    """Current time as naive UTC (how the store keeps instants)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def make_clock(tz_name: str, now: str | datetime | None = None) -> Clock:
    """The evaluation instant: `now` (ISO; read in `tz_name` when it has no offset) or the wall clock."""
    tz = ZoneInfo(tz_name)
    if now is None:
        instant = datetime.now(timezone.utc)
    elif isinstance(now, datetime):
        instant = now if now.tzinfo else now.replace(tzinfo=tz)
    else:
        try:
            parsed = datetime.fromisoformat(now.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UserError(f"--now: `{now}` is not an ISO date-time (e.g. 2026-03-01T09:00 or "
                            f"2026-03-01T09:00:00+09:00)") from None
        instant = parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)
    utc = instant.astimezone(timezone.utc)
    return Clock(now=utc.replace(tzinfo=None), today=utc.astimezone(tz).date(), timezone=tz_name)


def parse_duration(text: str) -> int:
    """'30m', '12h', '3d', '2w' (and '45s') -> seconds; ValueError with a clear message otherwise."""
    m = DURATION.match(str(text).strip())
    if not m:
        raise ValueError(f"`{text}` is not a duration; write e.g. 30m, 12h, 3d or 2w")
    return int(m.group(1)) * UNIT_SECONDS[m.group(2)]


def check_cron(text: str | None) -> str | None:
    """A five-field cron expression, or ValueError saying how to write one."""
    if text is not None:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(text)
        except ValueError as exc:
            raise ValueError(f"`{text}` is not a cron expression ({exc}); "
                             "write five fields: minute hour day month weekday") from None
    return text
