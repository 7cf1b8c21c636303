"""Store statements over a list of subject ids, dedup keys or outbox ids bind the whole list as one parameter
(engine.store.dialect.in_list): one statement however long the list, the same rows as a lookup of each."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import create_engine, event, insert, select

from engine import episodes
from engine.store import Tx, subjects
from engine.store import scans as scan
from engine.store.schema import build_schema

NOW = datetime(2026, 3, 2, 9, 0)
N = 1_200            # more than the 500 a chunk the store once used


@pytest.fixture
def store(db_url: str):  # noqa: ANN201
    """(engine, schema, statements): fresh tables, and the list of SQL statements sent since the last clear."""
    engine = create_engine(db_url)
    schema = build_schema()
    schema.metadata.create_all(engine)
    sent: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
    yield engine, schema, sent
    engine.dispose()


def ids(n: int = N) -> list[str]:
    return [f"A{i:05d}" for i in range(n)]


def outbox_row(key: str, sid: str, status: str) -> dict:
    return dict(dedup_key=key, playbook_id="pb", subject_type="account", subject_id=sid, episode=1, firing="1",
                action_index=0, kind="task", connector="builtin", status=status, attempts=1, not_before=NOW,
                expires_at=None, lease_token=1, lease_owner="w1" if status == "claimed" else None, ambiguous=False,
                created_at=NOW, updated_at=NOW, payload={"title": "t"})


def test_episodes_of_many_subjects_in_one_statement(store) -> None:  # noqa: ANN001
    engine, schema, sent = store
    every = ids()
    with engine.begin() as conn:
        # every third subject has an open episode, every third + 1 a resolved one
        conn.execute(insert(schema.episodes), [
            dict(playbook_id="pb", subject_type="account", subject_id=sid, is_open=k % 3 == 0, episode=2, firing=1,
                 started_at=NOW, last_fired_at=NOW, resolved_at=None if k % 3 == 0 else NOW - timedelta(days=9))
            for k, sid in enumerate(every) if k % 3 != 2])
        sent.clear()
        stored = Tx(conn, schema).episodes.stored("pb", "account", every)
        decided = episodes.decide(every[: N // 2], every[N // 2:], stored, NOW, episodes.Policy())
        transitions, mend_set, mend_clear = decided.transitions, decided.mend_set, decided.mend_clear
    assert len(sent) == 1
    got = {(t.subject_id, t.event, t.episode) for t in transitions}
    want = {(sid, "enter", 1 if k % 3 == 2 else 3) for k, sid in enumerate(every[: N // 2]) if k % 3 != 0}
    want |= {(sid, "resolve", 2) for k, sid in enumerate(every) if k >= N // 2 and k % 3 == 0}
    assert got == want
    assert mend_set == [sid for k, sid in enumerate(every[: N // 2]) if k % 3 == 0]
    assert mend_clear == [sid for k, sid in enumerate(every) if k >= N // 2 and k % 3 != 0]


def test_match_bits_cleared_for_many_subjects_in_one_statement(store) -> None:  # noqa: ANN001
    engine, schema, sent = store
    every = ids()
    slot, other = scan.Slot(0, 3), scan.Slot(0, 5)
    with engine.begin() as conn:
        scan.set_bits(conn, schema, "account", slot, every)
        scan.set_bits(conn, schema, "account", other, every)
        sent.clear()
        scan.clear_bits(conn, schema, "account", slot, every[::2])
        assert len(sent) == 1
        scan.clear_bits(conn, schema, "account", slot, [])
        assert len(sent) == 1            # nothing to clear: no statement
        ms = schema.match_state
        masks = dict(conn.execute(select(ms.c.subject_id, ms.c.mask)).all())
    assert masks == {sid: other.value | (0 if k % 2 == 0 else slot.value) for k, sid in enumerate(every)}


def test_cancel_and_release_many_outbox_rows_in_one_statement(store) -> None:  # noqa: ANN001
    engine, schema, sent = store
    every = ids()
    statuses = ("pending", "claimed", "sent")
    o = schema.outbox
    with engine.begin() as conn:
        conn.execute(insert(o), [outbox_row(f"k/{sid}", sid, statuses[k % 3]) for k, sid in enumerate(every)])
        sent.clear()
        outbox = Tx(conn, schema).outbox
        cancelled = outbox.cancel_pending([f"k/{sid}" for sid in every] + ["k/missing"], NOW,
                                          "episode resolved before delivery")
        assert len(sent) == 1
        claimed_ids = conn.execute(select(o.c.id).where(o.c.status == "claimed").order_by(o.c.id)).scalars().all()
        sent.clear()
        released = outbox.release("w1", NOW, claimed_ids + [10**9])
        assert len(sent) == 1
        assert outbox.cancel_pending([], NOW, "x") == 0 and outbox.release("w1", NOW, []) == 0
        assert len(sent) == 1
        by_status = dict(conn.execute(select(o.c.subject_id, o.c.status)).all())
    assert cancelled == N // 3 and released == N // 3
    # pending -> cancelled; claimed -> pending again (given back); sent stays
    assert by_status == {sid: ("cancelled", "pending", "sent")[k % 3] for k, sid in enumerate(every)}


def test_tasks_to_close_of_many_episodes_in_one_statement(store) -> None:  # noqa: ANN001
    engine, schema, sent = store
    every = ids()
    with engine.begin() as conn:
        tasks = Tx(conn, schema).tasks
        tasks.create_many([
            dict(dedup_key=f"t/{sid}/{ep}", playbook_id="pb", subject_type="account", subject_id=sid, episode=ep,
                 title=f"call {sid}", priority="normal", status="open", close_on_resolve=True, connector="builtin",
                 created_at=NOW)
            for sid in every for ep in (1, 2)])
        sent.clear()
        found = tasks.open_for_episodes("pb", "account", [(sid, 2) for sid in every[::2]])
    assert len(sent) == 1
    assert [t["dedup_key"] for t in found] == [f"t/{sid}/2" for sid in every[::2]]   # in id order, episode 2 only


def test_subject_rows_and_contacts_of_many_accounts_in_one_statement_each(store) -> None:  # noqa: ANN001
    engine, schema, sent = store
    every = ids()
    with engine.begin() as conn:
        conn.execute(insert(schema.accounts), [dict(id=sid, name=f"Account {sid}", synced_at=NOW) for sid in every])
        conn.execute(insert(schema.contacts), [
            dict(id=f"C{k:05d}{j}", account_id=sid, email=f"{j}@{sid}.test", role="admin", unsubscribed=j == 1,
                 synced_at=NOW) for k, sid in enumerate(every) for j in (0, 1, 2)])
        cache = subjects.RowCache()
        sent.clear()
        rows = cache.rows(conn, schema.accounts, every + ["nope"])
        contacts = cache.contacts(conn, schema, every)
        assert len(sent) == 2
        assert cache.rows(conn, schema.accounts, every[:10]) and len(sent) == 2     # read once per tick
    assert sorted(rows) == every and rows["A00007"]["name"] == "Account A00007"
    assert {a: [c["email"] for c in cs] for a, cs in contacts.items()} == {
        sid: [f"0@{sid}.test", f"2@{sid}.test"] for sid in every}
