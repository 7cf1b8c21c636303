"""A journey's steps (§14): the ids waits get, and when a wait is over — business days with holidays, a local
time of day in the subject's zone or the config zone, durations across months."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from engine.contact_policy import ContactPolicy, ContactPolicyConfig
from engine.journey import Calendar, Node, due_after, wait_ids
from engine.spec.models import WaitOptions, playbook_model

JP = Calendar(ContactPolicy(ContactPolicyConfig.model_validate({"business_days": {"holidays": "JP"}}),
                            "Asia/Tokyo").business_day, "Asia/Tokyo")


def utc(text: str, zone: str = "Asia/Tokyo") -> datetime:
    """A local time written in `zone`, as the naive UTC the store keeps."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).astimezone(timezone.utc).replace(tzinfo=None)


def wait(spec: object, customer: bool = False) -> Node:
    w = spec if isinstance(spec, str) else WaitOptions.model_validate(spec)
    return Node("wait", "w", None, ("steps", 0), wait=w, customer=customer)


@pytest.mark.parametrize(("spec", "start", "due"), [
    ("3d", "2027-01-08T10:00", "2027-01-11T10:00"),                       # a duration counts every day
    ("1mo", "2027-01-31T10:00", "2027-02-28T10:00"),                      # a calendar month
    ({"business_days": 1}, "2027-01-08T10:00", "2027-01-12T10:00"),       # Fri -> Tue: weekend, Coming of Age Day
    ({"business_days": 2, "at": "10:00"}, "2027-01-14T16:30", "2027-01-18T10:00"),
    ({"at": "10:00"}, "2027-01-08T09:00", "2027-01-08T10:00"),            # later the same day
    ({"at": "10:00"}, "2027-01-08T10:30", "2027-01-09T10:00"),            # else the next day (any day)
    ({"until": "true", "timeout": "4d"}, "2027-01-11T10:00", "2027-01-15T10:00"),   # the timeout
])
def test_when_a_wait_is_over(spec: object, start: str, due: str) -> None:
    assert due_after(wait(spec), utc(start), "Asia/Tokyo", JP) == utc(due)


def test_a_wait_before_customer_steps_counts_in_the_subjects_zone() -> None:
    start = utc("2027-01-08T10:00")                                 # Friday 10:00 in Tokyo, Thursday 20:00 in New York
    assert due_after(wait({"at": "09:00"}, customer=True), start, "America/New_York", JP) == \
        utc("2027-01-08T09:00", "America/New_York")
    assert due_after(wait({"at": "09:00"}), start, "America/New_York", JP) == utc("2027-01-09T09:00")


def test_waits_get_ids_from_the_step_before_them() -> None:
    pb = playbook_model().model_validate({"id": "x", "name": "x", "trigger": {"when": "true"}, "steps": [
        {"wait": "1d"},
        {"id": "hello", "slack": {"channel": "#c", "text": "t"}},
        {"wait": "1d"}, {"wait": {"at": "10:00"}},
        {"if": "true", "then": [{"id": "inner", "slack": {"channel": "#c", "text": "t"}}, {"wait": "2d"}]},
        {"id": "mine", "wait": "1d"}, {"wait": "1d"}]})
    assert sorted(wait_ids(pb.steps).values()) == sorted(
        ["start", "after-hello", "after-hello-2", "after-inner", "mine", "after-mine"])
