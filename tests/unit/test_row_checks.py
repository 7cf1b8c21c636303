"""Row checks at sync that need no database: declared values, declared metrics, IANA time zones."""

from __future__ import annotations

from datetime import timezone

import pytest

from engine.clock import suggest_zone
from engine.datamodel import fields_of
from engine.sync.validate import RowChecker

ROLES = ("champion", "decision_maker", "admin", "user")


def problems(entity: str, row: dict, declared: dict | None = None) -> list[str]:
    checker = RowChecker(entity, fields_of(entity, {}), timezone.utc, declared=declared)
    return checker.check(row)[1]


def test_a_declared_field_takes_its_values_and_empty_but_nothing_else() -> None:
    declared = {"role": ROLES}
    row = {"id": "C1", "account_id": "A1"}
    assert problems("contacts", {**row, "role": "admin"}, declared) == []
    assert problems("contacts", {**row, "role": ""}, declared) == []
    assert problems("contacts", row, declared) == []
    assert problems("contacts", {**row, "role": "admin "}, declared) == [
        'role: "admin " is not one of champion, decision_maker, admin, user (did you mean "admin"?)']
    assert problems("contacts", {**row, "role": "owner"}, declared) == [
        'role: "owner" is not one of champion, decision_maker, admin, user']
    assert problems("contacts", {**row, "role": "owner"}) == []           # nothing declared: anything goes


def test_a_long_list_of_declared_values_is_shortened_in_the_message() -> None:
    stages = tuple(f"stage_{i:02}" for i in range(20))
    assert problems("accounts", {"id": "A1", "lifecycle_stage": "x"}, {"lifecycle_stage": stages}) == [
        f'lifecycle_stage: "x" is not one of {", ".join(stages[:12])} and 8 more']


def test_usage_rows_of_an_undeclared_metric_are_invalid() -> None:
    row = {"account_id": "A1", "day": "2026-03-01", "value": "1"}
    declared = {"metric": ("logins", "active_users")}
    assert problems("usage", {**row, "metric": "logins"}, declared) == []
    assert problems("usage", {**row, "metric": "Logins"}, declared) == [
        'metric: "Logins" is not a declared metric (did you mean "logins"?)']
    assert problems("usage", {**row, "metric": "seats"}, declared) == [
        'metric: "seats" is not a declared metric (metrics: logins, active_users)']


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/Argentina/Buenos_Aires", "UTC", "Europe/Paris", ""])
def test_iana_time_zones_and_empty_ones_are_valid(zone: str) -> None:
    assert problems("accounts", {"id": "A1", "timezone": zone}) == []
    assert problems("contacts", {"id": "C1", "account_id": "A1", "timezone": zone}) == []


@pytest.mark.parametrize(("zone", "what"), [
    ("JST", 'write "Asia/Tokyo"'), ("日本", 'write "Asia/Tokyo"'), ("pst", 'write "America/Los_Angeles"'),
    ("asia/tokyo", 'write "Asia/Tokyo"'), ("Tokyo", 'write "Asia/Tokyo"'), ("New York", 'write "America/New_York"'),
    ("Asia/Tokio", 'write "Asia/Tokyo"'), (" Asia/Tokyo", 'write "Asia/Tokyo"'),
    ("GMT+9", 'write a name such as "Asia/Tokyo" or "America/New_York"'),
    ("CST", 'write a name such as "Asia/Tokyo" or "America/New_York"'),
])
def test_a_time_zone_that_is_not_an_iana_name_is_invalid_and_says_what_to_write(zone: str, what: str) -> None:
    shown = '"' + zone + '"'
    assert problems("contacts", {"id": "C1", "account_id": "A1", "timezone": zone}) == [
        f"timezone: {shown} is not an IANA time zone ({what})"]


def test_a_suggested_zone_is_always_a_real_one() -> None:
    from engine.clock import ZONE_ALIASES, zone_names

    assert set(ZONE_ALIASES.values()) <= zone_names()
    assert suggest_zone("Etc/GMT-9x") in zone_names()
    assert suggest_zone("Mumbai") is None                   # not a close spelling of some unrelated zone
