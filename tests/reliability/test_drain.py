"""Many workers share the outbox on PostgreSQL: exactly-once to a local sink, kills, cut connections."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from engine.delivery import BaseConnector, Outcome, Receipt
from reliability.figures import record_figure
from engine.app import App
from engine.dispatch import Dispatcher

N = 10_000


def enqueue(ws, n: int = N) -> None:  # noqa: ANN001
    """Plan n webhook actions (delivered to outbox/webhook.jsonl by the local sink)."""
    app = App(ws.config)
    now = datetime.utcnow()
    rows = [dict(dedup_key=f"load/account:A{i}/1/1/0", playbook_id="load", subject_type="account",
                 subject_id=f"A{i}", episode=1, firing="1", action_index=0, kind="webhook", connector="webhook",
                 payload={"url": "https://example.invalid/hook", "method": "POST", "headers": {}, "body": {"i": i}},
                 status="pending", attempts=0, not_before=now, expires_at=now + timedelta(days=1), lease_token=0,
                 ambiguous=False, created_at=now, updated_at=now) for i in range(n)]
    with app.store.write() as tx:
        for i in range(0, n, 2000):
            tx.outbox.enqueue(rows[i:i + 2000])
    app.close()


def sink_counts(ws) -> Counter:  # noqa: ANN001
    path = ws.root / "outbox" / "webhook.jsonl"
    return Counter(json.loads(line)["dedup_key"] for line in path.read_text().splitlines())


def states(ws) -> dict[str, dict]:  # noqa: ANN001
    app = App(ws.config)
    with app.store.read() as tx:
        rows = {r["dedup_key"]: r for r in tx.outbox.list(limit=N + 10)}
    app.close()
    return rows


def check_exactly_once(ws, figure: str, seconds: float) -> None:  # noqa: ANN001
    counts = sink_counts(ws)
    rows = states(ws)
    lost = [k for k, r in rows.items() if counts.get(k, 0) == 0]
    dups = [k for k, n in counts.items() if n > 1]
    assert not lost, f"{len(lost)} actions lost"
    assert all(r["status"] == "sent" for r in rows.values())
    assert all(rows[k]["ambiguous"] for k in dups), "a duplicate that is not flagged ambiguous"
    record_figure(figure, {"actions": len(rows), "lost": len(lost), "duplicates": len(dups),
                           "ambiguous": sum(1 for r in rows.values() if r["ambiguous"]),
                           "seconds": round(seconds, 2), "actions_per_s": round(len(rows) / seconds)})


def delivered_so_far(ws) -> int:  # noqa: ANN001
    path = ws.root / "outbox" / "webhook.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def drain(ws, workers: int, *, during=None) -> float:  # noqa: ANN001
    started = time.perf_counter()
    procs = [ws.spawn("worker", "--max-idle", "3", "--interval", "0.2") for _ in range(workers)]
    if during:
        deadline = time.monotonic() + 120
        while delivered_so_far(ws) < 200 and time.monotonic() < deadline:   # workers are busy delivering
            time.sleep(0.05)
        procs = during(procs)
    for p in procs:
        p.communicate(timeout=600)
    return time.perf_counter() - started - 3.0


def test_four_workers_drain_exactly_once(pg_ws) -> None:  # noqa: ANN001
    enqueue(pg_ws)
    seconds = drain(pg_ws, 4)
    check_exactly_once(pg_ws, "drain_4_workers", seconds)
    assert set(sink_counts(pg_ws).values()) == {1}


def test_random_worker_kills(pg_ws) -> None:  # noqa: ANN001
    enqueue(pg_ws)
    rng = random.Random(7)
    kills = []

    def killer(procs):  # noqa: ANN001, ANN202
        for _ in range(4):
            time.sleep(0.3)
            victim = rng.choice([p for p in procs if p.poll() is None] or procs)
            if victim.poll() is None:
                victim.kill()                                   # SIGKILL
                victim.wait()
                kills.append(victim.pid)
            procs = [p for p in procs if p is not victim]
            procs.append(pg_ws.spawn("worker", "--max-idle", "3", "--interval", "0.2"))
        return procs

    pg_ws.configure("delivery: {lease: 3s}\n")
    seconds = drain(pg_ws, 4, during=killer)
    assert len(kills) >= 3
    check_exactly_once(pg_ws, "drain_with_4_kills", seconds)


def test_connections_cut_during_drain(pg_ws) -> None:  # noqa: ANN001
    enqueue(pg_ws)
    cuts = []

    def cutter(procs):  # noqa: ANN001, ANN202
        for _ in range(3):
            time.sleep(0.3)
            with pg_ws.admin.begin() as conn:
                n = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                      "WHERE application_name = :a"), {"a": pg_ws.schema_name}).scalar_one()
            cuts.append(n)
        return procs

    pg_ws.configure("delivery: {lease: 5s}\n")
    seconds = drain(pg_ws, 4, during=cutter)
    assert sum(cuts) > 0
    check_exactly_once(pg_ws, "drain_with_cut_connections", seconds)


class CuttingReceiver(BaseConnector):
    """A batch-safe receiver that, at its second delivery, cuts every database connection of the workspace
    (as a PostgreSQL restart would): the batch's outcomes then cannot be recorded."""

    name = "webhook"
    batch_safe = True

    def __init__(self, ws):  # noqa: ANN001
        self.ws, self.got = ws, []

    def deliver(self, item):  # noqa: ANN001, ANN201
        self.got.append(item.dedup_key)
        if len(self.got) == 2:
            with self.ws.admin.begin() as conn:
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :a"),
                             {"a": self.ws.schema_name})
        return Receipt(Outcome.SENT, "kept")


def test_outcomes_a_cut_connection_held_back_are_recorded_once_it_returns(pg_ws) -> None:  # noqa: ANN001
    enqueue(pg_ws, 3)
    app = App(pg_ws.config)
    receiver = CuttingReceiver(pg_ws)
    d = Dispatcher(app.store, app.settings, {"webhook": receiver}, owner="a")
    try:
        items = d.claim()
        with pytest.raises(OperationalError):
            d.process(items)
        assert len(receiver.got) == 3
        assert {r["status"] for r in states(pg_ws).values()} == {"claimed"}
        assert sorted(i.dedup_key for i, status in d.settle() if status == "sent") == sorted(receiver.got)
        rows = states(pg_ws)
        assert {(r["status"], r["ambiguous"]) for r in rows.values()} == {("sent", False)}
        assert d.settle() == []
    finally:
        app.close()
