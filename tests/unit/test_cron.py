"""Cron schedules keep crontab's weekday numbering (0 or 7 is Sunday), whatever the scheduler library counts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from engine.clock import check_cron, cron_trigger, scheduled_between


def fire_days(cron: str, days: int = 14) -> list[str]:
    """The weekday names of the times `cron` fires in `days` days from Sunday 2026-12-06 (UTC)."""
    trigger, out = cron_trigger(cron), []
    after = datetime(2026, 12, 6, tzinfo=timezone.utc)
    while (nxt := trigger.get_next_fire_time(None, after)) < datetime(2026, 12, 6, tzinfo=timezone.utc) + \
            timedelta(days=days):
        out.append(nxt.strftime("%a"))
        after = nxt + timedelta(seconds=1)
    return out


@pytest.mark.parametrize("field, days", [
    ("1-5", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
    ("mon-fri", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
    ("0", ["Sun"]), ("7", ["Sun"]), ("sun", ["Sun"]),
    ("0,6", ["Sun", "Sat"]),
    ("5-7", ["Sun", "Fri", "Sat"]),
    ("*/2", ["Sun", "Tue", "Thu", "Sat"]),
    ("1/2", ["Mon", "Wed", "Fri"]),
    ("*", ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]),
])
def test_weekdays_count_from_sunday_as_in_crontab(field: str, days: list[str]) -> None:
    assert fire_days(f"0 9 * * {field}", days=7) == days


def test_a_weekday_schedule_skips_the_weekend() -> None:
    # Saturday 2026-12-12 09:00 to Sunday 2026-12-13 23:59 (UTC): nothing; Monday 09:00: due.
    assert not scheduled_between("0 9 * * 1-5", datetime(2026, 12, 12), datetime(2026, 12, 13, 23, 59), "UTC")
    assert scheduled_between("0 9 * * 1-5", datetime(2026, 12, 13), datetime(2026, 12, 14, 9), "UTC")


@pytest.mark.parametrize("cron, says", [
    ("0 9 * * 8", "`8` is not a weekday"),
    ("0 9 * * 5-2", "runs backwards"),
    ("0 9 * * */0", "not a positive whole number"),
    ("0 9 * * */00", "not a positive whole number"),
    ("0 9 * *", "write five fields"),
])
def test_a_bad_weekday_field_says_how_to_write_it(cron: str, says: str) -> None:
    with pytest.raises(ValueError) as info:
        check_cron(cron)
    assert says in str(info.value)
