"""Fencing: an outcome is recorded only while the worker's lease token holds (§10), on both databases."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from engine.store import outbox
from engine.store.db import open_database

NOW = datetime(2026, 3, 2, 9, 0)


def planned(i: int) -> dict:
    return dict(dedup_key=f"pb/account:A{i}/1/1/0", playbook_id="pb", subject_type="account", subject_id=f"A{i}",
                episode=1, firing="1", action_index=0, kind="webhook", connector="webhook", payload={"n": i},
                status="pending", attempts=0, not_before=NOW, expires_at=None, lease_token=0, ambiguous=False,
                created_at=NOW, updated_at=NOW, last_error=None, finished_at=None)


def test_outcomes_of_a_lost_lease_are_not_recorded(db_url: str) -> None:
    db = open_database(db_url)
    s = db.schema
    try:
        with db.engine.begin() as conn:
            outbox.plan(conn, s, [planned(i) for i in range(4)])
            mine = outbox.claim(conn, s, "a", NOW, 30, 10)
        assert len(mine) == 4
        # a's lease on the third action expires and worker b claims it again (a new token)
        later = NOW + timedelta(seconds=60)
        with db.engine.begin() as conn:
            conn.execute(s.outbox.update().where(s.outbox.c.id != mine[2].id).values(lease_until=later + timedelta(1)))
            [theirs] = outbox.claim(conn, s, "b", later, 30, 10)
        assert theirs.id == mine[2].id and theirs.token == mine[2].token + 1 and theirs.ambiguous
        with db.engine.begin() as conn:
            done = outbox.record_many(conn, s, [outbox.Outcome(c, "sent") for c in mine], later, "a")
        assert done == [True, True, False, True]
        with db.engine.connect() as conn:
            status = dict(conn.execute(select(s.outbox.c.id, s.outbox.c.status)).all())
            attempts = conn.execute(select(s.attempts.c.outbox_id, s.attempts.c.worker)).all()
        assert [status[c.id] for c in mine] == ["sent", "sent", "claimed", "sent"]
        assert sorted(attempts) == sorted((c.id, "a") for i, c in enumerate(mine) if i != 2)
        # every lease held: all recorded in one statement
        with db.engine.begin() as conn:
            assert outbox.record_many(conn, s, [outbox.Outcome(theirs, "failed", "nope")], later, "b") == [True]
    finally:
        db.dispose()
