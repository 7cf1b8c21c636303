"""Fencing: an outcome is recorded only while the worker's lease token holds (§10), and a worker gives back
only the leases of actions it never attempted; on both databases."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from engine.delivery import BaseConnector, Outcome, Receipt
from engine.dispatch import Dispatcher
from engine.settings import Settings
from conftest import Db
from engine.store import Tx
from engine.store.outbox import Claimed, Decision

NOW = datetime(2026, 3, 2, 9, 0)


def planned(i: int) -> dict:
    return dict(dedup_key=f"pb/account:A{i}/1/1/0", playbook_id="pb", subject_type="account", subject_id=f"A{i}",
                episode=1, firing="1", action_index=0, kind="webhook", connector="webhook",
                payload={"url": "https://example.invalid/hook", "body": {"n": i}},
                status="pending", attempts=0, not_before=NOW, expires_at=None, lease_token=0, ambiguous=False,
                created_at=NOW, updated_at=NOW, last_error=None, finished_at=None)


def test_outcomes_of_a_lost_lease_are_not_recorded(db_url: str) -> None:
    db = Db(db_url)
    s = db.schema
    try:
        with db.engine.begin() as conn:
            Tx(conn, s).outbox.enqueue([planned(i) for i in range(4)])
            mine = Tx(conn, s).outbox.claim("a", NOW, 30, 10)
        assert len(mine) == 4
        # a's lease on the third action expires and worker b claims it again (a new token)
        later = NOW + timedelta(seconds=60)
        with db.engine.begin() as conn:
            conn.execute(s.outbox.update().where(s.outbox.c.id != mine[2].id).values(lease_until=later + timedelta(1)))
            [theirs] = Tx(conn, s).outbox.claim("b", later, 30, 10)
        assert theirs.id == mine[2].id and theirs.token == mine[2].token + 1 and theirs.ambiguous
        with db.engine.begin() as conn:
            done = Tx(conn, s).outbox.record([Decision(c, "sent") for c in mine], later, "a")
        assert done == [True, True, False, True]
        with db.engine.connect() as conn:
            status = dict(conn.execute(select(s.outbox.c.id, s.outbox.c.status)).all())
            attempts = conn.execute(select(s.attempts.c.outbox_id, s.attempts.c.worker)).all()
        assert [status[c.id] for c in mine] == ["sent", "sent", "claimed", "sent"]
        assert sorted(attempts) == sorted((c.id, "a") for i, c in enumerate(mine) if i != 2)
        # every lease held: all recorded in one statement
        with db.engine.begin() as conn:
            assert Tx(conn, s).outbox.record([Decision(theirs, "failed", "nope")], later, "b") == [True]
    finally:
        db.dispose()


class Receiver(BaseConnector):
    """A batch-safe receiver that keeps what it was given; asks the worker to stop after `stop_after`
    deliveries, and fails its flush when told to (the batch's outcomes then go unrecorded)."""

    name = "webhook"
    batch_safe = True

    def __init__(self, stop: threading.Event, stop_after: int, flush_fails: bool):
        self.stop, self.stop_after, self.flush_fails = stop, stop_after, flush_fails
        self.got: list[str] = []

    def deliver(self, item: Claimed) -> Receipt:
        self.got.append(item.dedup_key)
        if len(self.got) == self.stop_after:
            self.stop.set()
        return Receipt(Outcome.SENT, "kept")

    def flush(self) -> None:
        if self.flush_fails:
            raise OSError("disk full")


@pytest.mark.parametrize("flush_fails", [False, True], ids=["stopped", "batch-failed"])
def test_release_gives_back_only_actions_no_connector_was_given(db_url: str, tmp_path, flush_fails: bool) -> None:  # noqa: ANN001
    db = Db(db_url)
    s = db.schema
    try:
        with db.store.write() as tx:
            tx.outbox.enqueue([planned(i) for i in range(4)])
        stop = threading.Event()
        receiver = Receiver(stop, stop_after=2, flush_fails=flush_fails)
        d = Dispatcher(db.store, Settings(base_dir=tmp_path, config_file="c.yaml"), {"webhook": receiver},
                       owner="a", clock=lambda: NOW)
        items = d.claim()
        assert len(items) == 4
        if flush_fails:
            with pytest.raises(OSError):
                d.process(items, stop)
        else:
            assert [status for _, status in d.process(items, stop)] == ["sent", "sent"]
        assert d.release() == 2
        assert d.release() == 0
        with db.engine.connect() as conn:
            rows = {r.dedup_key: r for r in conn.execute(select(s.outbox))}
        given, never = receiver.got, sorted(set(rows) - set(receiver.got))
        assert len(given) == 2 and len(never) == 2
        assert all(rows[k].status == "pending" and rows[k].attempts == 0 for k in never)
        # delivered but not recorded: the lease stays, so the next claim after it expires flags it ambiguous
        assert all(rows[k].status == ("claimed" if flush_fails else "sent") for k in given)
        if flush_fails:
            with db.engine.begin() as conn:
                again = Tx(conn, s).outbox.claim("b", NOW + timedelta(hours=1), 30, 10)
            assert sorted((c.dedup_key, c.ambiguous) for c in again) == sorted(
                [(k, True) for k in given] + [(k, False) for k in never])
    finally:
        db.dispose()
