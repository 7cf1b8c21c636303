"""Instants as a person reads and writes them: the store's naive UTC shown in the config zone with the offset of
each instant's own date, and ISO date-times without an offset read in that zone."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from engine.cli.output import iso_time, jsonable, local_time
from engine.clock import parse_instant, show_time


@pytest.mark.parametrize(("instant", "tz", "shown"), [
    (datetime(2026, 12, 7, 0, 0), "Asia/Tokyo", "2026-12-07 09:00 +09:00"),
    (datetime(2026, 3, 28, 12, 0), "Europe/Paris", "2026-03-28 13:00 +01:00"),
    (datetime(2026, 3, 30, 12, 0), "Europe/Paris", "2026-03-30 14:00 +02:00"),
    (datetime(2026, 1, 1, 4, 30), "America/St_Johns", "2026-01-01 01:00 -03:30"),
    (datetime(2026, 1, 1, 4, 30), "UTC", "2026-01-01 04:30 +00:00"),
    (datetime(2026, 1, 1, 4, 30, tzinfo=timezone.utc), "Asia/Kolkata", "2026-01-01 10:00 +05:30"),
])
def test_an_instant_is_shown_in_the_zone_with_its_offset(instant: datetime, tz: str, shown: str) -> None:
    assert show_time(instant, tz) == shown
    assert local_time(instant, tz) == shown
    assert local_time(instant.isoformat(), tz) == shown


def test_seconds_and_empty_values() -> None:
    assert local_time(datetime(2026, 12, 7, 0, 0, 5), "Asia/Tokyo", seconds=True) == "2026-12-07 09:00:05 +09:00"
    assert local_time(None, "Asia/Tokyo") == "" and iso_time(None, "Asia/Tokyo") is None


def test_json_rows_carry_the_offset_and_keep_their_keys() -> None:
    row = {"id": 3, "at": datetime(2026, 12, 7, 0, 0), "day": datetime(2026, 12, 7).date(), "note": None}
    assert jsonable(row, "Asia/Tokyo") == {"id": 3, "at": "2026-12-07T09:00:00+09:00", "day": "2026-12-07",
                                           "note": None}
    assert iso_time("2026-12-07T00:00:00", "Europe/Paris") == "2026-12-07T01:00:00+01:00"
    assert iso_time("2026-12-07T09:00:00+09:00", "UTC") == "2026-12-07T00:00:00+00:00"


def test_an_iso_time_without_an_offset_is_read_in_the_zone() -> None:
    assert parse_instant("2026-12-10", "Asia/Tokyo").isoformat() == "2026-12-10T00:00:00+09:00"
    assert parse_instant("2026-12-10T09:00", "Asia/Tokyo").isoformat() == "2026-12-10T09:00:00+09:00"
    assert parse_instant("2026-12-10T09:00Z", "Asia/Tokyo").isoformat() == "2026-12-10T09:00:00+00:00"
    with pytest.raises(ValueError):
        parse_instant("next week", "UTC")
