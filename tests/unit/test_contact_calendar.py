"""The contact policy's calendar and caps (§13): the recipient's next allowed moment, and when a cap lets a
message through."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from engine.contact_policy import Cap, ContactPolicy, ContactPolicyConfig

JP_POLICY = {"quiet_hours": {"start": "19:00", "end": "09:00"},
             "business_days": {"weekdays": ["mon", "tue", "wed", "thu", "fri"], "holidays": "JP"}}


def policy(**config: object) -> ContactPolicy:
    return ContactPolicy(ContactPolicyConfig.model_validate(config or JP_POLICY), "Asia/Tokyo")


def utc(local: str, zone: str) -> datetime:
    """A local wall time in `zone` as the naive UTC instant the store keeps."""
    aware = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(zone))
    return aware.astimezone(timezone.utc).replace(tzinfo=None)


@pytest.mark.parametrize("planned, zone, expected, reason", [
    # Tuesday 23:00 in Tokyo: quiet hours until Wednesday 09:00
    ("2027-01-12T23:00", "Asia/Tokyo", "2027-01-13T09:00:00+09:00", "quiet hours"),
    # just after midnight: still the same night's quiet hours
    ("2027-01-13T00:30", "Asia/Tokyo", "2027-01-13T09:00:00+09:00", "quiet hours"),
    # Saturday 23:00 in Tokyo: the weekend, then Monday 11 January 2027 is Coming of Age Day
    ("2027-01-09T23:00", "Asia/Tokyo", "2027-01-12T09:00:00+09:00", "not a business day (Saturday)"),
    # Coming of Age Day, 10:00: a public holiday (JP holidays hold for every recipient)
    ("2027-01-11T10:00", "Asia/Tokyo", "2027-01-12T09:00:00+09:00", "public holiday (Coming of Age Day)"),
    # the same Saturday evening in Tokyo is Saturday morning in New York: its own Tuesday 09:00
    ("2027-01-09T09:00", "America/New_York", "2027-01-12T09:00:00-05:00", "not a business day (Saturday)"),
    # inside the allowed hours on a business day: at once, no reason
    ("2027-01-13T10:15", "Asia/Tokyo", "2027-01-13T10:15:00+09:00", None),
    # the morning daylight-saving time starts in New York, a Sunday: Monday 09:00 in EDT
    ("2027-03-14T03:30", "America/New_York", "2027-03-15T09:00:00-04:00", "not a business day (Sunday)"),
])
def test_a_message_goes_out_at_the_recipients_next_allowed_moment(planned: str, zone: str, expected: str,
                                                                   reason: str | None) -> None:
    slot = policy().slot(utc(planned, zone), zone)
    assert slot.local().isoformat() == expected
    assert slot.reason == reason
    assert (slot.note is None) == (reason is None)
    if reason:
        assert slot.note == f"deferred: {reason} until {expected}"


def test_quiet_hours_within_a_day_and_listed_days_off() -> None:
    p = policy(quiet_hours={"start": "12:00", "end": "13:30"},
               business_days={"weekdays": ["mon", "tue", "wed", "thu", "fri", "sat"], "holidays": ["2027-01-13"]})
    assert p.slot(utc("2027-01-12T12:10", "Asia/Tokyo"), "Asia/Tokyo").local().isoformat() \
        == "2027-01-12T13:30:00+09:00"
    listed = p.slot(utc("2027-01-13T10:00", "Asia/Tokyo"), "Asia/Tokyo")
    assert (listed.local().isoformat(), listed.reason) == ("2027-01-14T00:00:00+09:00", "holiday (2027-01-13)")
    assert p.slot(utc("2027-01-16T10:00", "Asia/Tokyo"), "Asia/Tokyo").reason is None       # Saturday works


def test_the_recipients_zone_is_the_first_known_field_else_the_config_zone() -> None:
    p = policy()
    assert p.zone({"timezone": "America/New_York"}, {"timezone": "Asia/Tokyo"}) == "America/New_York"
    assert p.zone({"timezone": None}, {"timezone": "Europe/Paris"}) == "Europe/Paris"
    assert p.zone({"timezone": "JST"}, {}) == "Asia/Tokyo"           # not an IANA name: read past
    assert p.zone(None, None) == "Asia/Tokyo"


def test_a_cap_holds_until_enough_sends_leave_its_window() -> None:
    cap = Cap(per="contact", max=2, within="7d")
    now = datetime(2027, 1, 12, 1, 0)
    p = policy()
    assert p.capped(cap, [now - timedelta(days=8), now - timedelta(days=1)], now, "UTC") is None
    sent = [now - timedelta(days=6), now - timedelta(days=1)]
    assert p.capped(cap, sent, now, "UTC") == now + timedelta(days=1)       # when the 6-day-old one leaves
    monthly = Cap(per="account", max=1, within="1mo")
    assert p.capped(monthly, [datetime(2027, 1, 31, 0, 0)], datetime(2027, 2, 10), "UTC") == datetime(2027, 2, 28)
    assert str(cap) == "frequency cap: 2 per contact in 7d"


@pytest.mark.parametrize("config, message", [
    ({"quiet_hours": {"start": "7pm", "end": "09:00"}}, "not a time of day"),
    ({"quiet_hours": {"start": "09:00", "end": "09:00"}}, "same time"),
    ({"business_days": {"holidays": "JPN_"}}, "neither a date"),
    ({"business_days": {"holidays": "US-XX"}}, "no subdivision `XX`"),
    ({"business_days": {"weekdays": ["monday"]}}, "monday"),
    ({"caps": [{"per": "contact", "max": 2, "within": "7 days"}]}, "not a duration"),
    ({"caps": [{"per": "user", "max": 2, "within": "7d"}]}, "contact"),
    ({"timezone_from": ["timezone"]}, "not a contact or account field"),
    ({"on_cap": "skip"}, "drop"),
])
def test_a_bad_policy_is_refused_saying_what_to_write(config: dict, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        ContactPolicyConfig.model_validate(config)
    assert message in str(exc.value)
