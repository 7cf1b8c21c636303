"""Aggregates for the Prometheus endpoint, read from the database at scrape time."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from engine.store.schema import Repository

BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 21600, 86400)


class Stats(Repository):
    """What the service exports as metrics."""

    def snapshot(self, now: datetime) -> dict[str, Any]:
        """Outbox states, runs, open episodes and delivery latency over the last day, in a few GROUP BYs."""
        s = self.schema
        o, r, e = s.outbox, s.runs, s.episodes
        conn = self.conn
        outbox = {k: v for k, v in conn.execute(select(o.c.status, func.count()).group_by(o.c.status))}
        runs = {(k, st): n for k, st, n in conn.execute(select(r.c.kind, r.c.status, func.count())
                                                         .group_by(r.c.kind, r.c.status))}
        episodes = {k: v for k, v in conn.execute(select(e.c.playbook_id, func.count()).where(e.c.is_open.is_(True))
                                                  .group_by(e.c.playbook_id))}
        pairs = conn.execute(select(o.c.created_at, o.c.finished_at).where(
            o.c.status == "sent", o.c.finished_at >= now - timedelta(days=1))).all()
        latencies = [max((f - c).total_seconds(), 0.0) for c, f in pairs if f and c]
        buckets = [(str(b), sum(1 for x in latencies if x <= b)) for b in BUCKETS] + [("+Inf", len(latencies))]
        return {"outbox": outbox, "queue_depth": outbox.get("pending", 0) + outbox.get("claimed", 0), "runs": runs,
                "open_episodes": episodes, "latency_buckets": buckets, "latency_sum": sum(latencies)}
