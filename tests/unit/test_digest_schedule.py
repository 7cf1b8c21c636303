"""Digest times (§15): the next digest time of a schedule, in the config zone, across weeks and DST changes; the
default layout."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from engine.digests import DigestSchedule, Period, default_layout, schedule_of
from engine.clock import localize


def utc(text: str) -> datetime:
    """A local ISO time with offset, as the naive UTC instant the store keeps."""
    return datetime.fromisoformat(text).astimezone(timezone.utc).replace(tzinfo=None)


@pytest.mark.parametrize(("schedule", "at", "strictly", "expected"), [
    ("daily", "2026-12-07T08:59:00+09:00", False, "2026-12-07T09:00:00+09:00"),
    ("daily", "2026-12-07T09:00:00+09:00", False, "2026-12-07T09:00:00+09:00"),   # at the time: that digest
    ("daily", "2026-12-07T09:00:00+09:00", True, "2026-12-08T09:00:00+09:00"),
    ("weekly", "2026-12-07T10:00:00+09:00", False, "2026-12-14T09:00:00+09:00"),  # Monday after 09:00
    ({"every": "weekly", "day": "fri", "at": "17:30"}, "2026-12-07T10:00:00+09:00", False,
     "2026-12-11T17:30:00+09:00"),
    ({"every": "daily", "at": "23:45"}, "2026-12-31T23:50:00+09:00", False, "2027-01-01T23:45:00+09:00"),
])
def test_next_digest_time(schedule: object, at: str, strictly: bool, expected: str) -> None:
    got = schedule_of(schedule).next_time(utc(at), "Asia/Tokyo", strictly=strictly)
    assert localize(got, "Asia/Tokyo").isoformat() == expected


def test_digest_times_keep_the_local_hour_across_a_dst_change() -> None:
    s = DigestSchedule()
    before = s.next_time(utc("2026-03-07T10:00:00-05:00"), "America/New_York")    # EST
    after = s.next_time(before, "America/New_York", strictly=True)                # EDT from March 8
    assert [localize(t, "America/New_York").isoformat() for t in (before, after)] == [
        "2026-03-08T09:00:00-04:00", "2026-03-09T09:00:00-04:00"]
    assert after - before == timedelta(hours=24)


def test_labels_and_what_a_schedule_refuses() -> None:
    assert [schedule_of(x).label() for x in ("daily", "weekly", {"every": "daily", "at": "17:00"},
                                             {"every": "weekly", "day": "fri"})] == [
        "daily", "weekly", "daily at 17:00", "weekly on fri at 09:00"]
    with pytest.raises(ValueError, match="`day` is for weekly digests"):
        schedule_of({"every": "daily", "day": "mon"})
    with pytest.raises(ValueError, match="is not a time of day"):
        schedule_of({"at": "9am"})


def test_the_default_layout_groups_by_playbook_marks_resolved_items_and_escapes_names_for_slack() -> None:
    end = datetime(2026, 12, 8, 9, 0, tzinfo=timezone.utc)
    items = [{"playbook": "Risk", "playbook_id": "risk", "subject": "A & <B>", "text": "down", "resolved": False},
             {"playbook": "Drop", "playbook_id": "drop", "subject": "C", "text": "gone", "resolved": True},
             {"playbook": "Risk", "playbook_id": "risk", "subject": "D", "text": "late", "resolved": False}]
    period = Period("daily", end - timedelta(days=1), end)
    subject, text = default_layout(items, period, "en", "slack")
    assert subject == "Daily digest, December 8, 2026: 3 alerts from 2 playbooks"
    assert text.split("\n") == ["*Daily digest — December 8, 2026* · 3 alerts from 2 playbooks", "", "*Risk* (2)",
                                "• A &amp; &lt;B&gt;: down", "• D: late", "", "*Drop* (1)", "• ~C: gone~ _(resolved)_"]
    _, plain = default_layout(items, period, "ja", "text")
    assert plain.split("\n")[0] == "Daily digest — 2026年12月8日 · 3 alerts from 2 playbooks"
    assert "• C: gone (resolved)" in plain and "• A & <B>: down" in plain
