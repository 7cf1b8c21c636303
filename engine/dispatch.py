"""Dispatch (§10): claim due actions with a lease, deliver through connectors, record with fencing."""

from __future__ import annotations

import logging
import os
import random
import socket
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Callable

from connectors.base import Connector, Delivery, Outcome
from engine.settings import Settings, parse_duration
from engine.store import outbox, suppression
from engine.store.db import Database
from engine.store.outbox import Claimed
from engine.tick import wall_clock

log = logging.getLogger("playbook.dispatch")


@dataclass
class DispatchStats:
    """What one dispatch pass did."""

    by_outcome: Counter = field(default_factory=Counter)
    by_connector: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.by_outcome.values())


def worker_id() -> str:
    """host:pid — who holds a lease."""
    return f"{socket.gethostname()}:{os.getpid()}"


def backoff(attempt: int, base_s: float, max_s: float, retry_after: float | None, rng: random.Random) -> float:
    """Exponential backoff with full jitter, never sooner than Retry-After."""
    delay = min(max_s, base_s * (2 ** max(attempt - 1, 0)))
    delay = rng.uniform(delay / 2, delay)
    return max(delay, retry_after or 0.0)


class Dispatcher:
    """Delivers due outbox actions. Safe to run in many processes at once."""

    def __init__(self, db: Database, settings: Settings, connectors: dict[str, Connector], *,
                 owner: str | None = None, clock: Callable[[], datetime] = wall_clock, batch: int = 50):
        self.db, self.settings, self.connectors = db, settings, connectors
        self.owner = owner or worker_id()
        self.clock, self.batch = clock, batch
        d = settings.delivery
        self.lease_s = parse_duration(d.lease)
        self.base_s, self.max_s = parse_duration(d.backoff_base), parse_duration(d.backoff_max)
        self.max_attempts = d.max_attempts
        self.rng = random.Random()

    def claim(self) -> list[Claimed]:
        """Claim a batch and commit the claim before any network I/O."""
        with self.db.engine.connect() as conn:
            conn.info["immediate"] = True
            with conn.begin():
                return outbox.claim(conn, self.db.schema, self.owner, self.clock(), self.lease_s, self.batch)

    def run_once(self, limit: int | None = None) -> DispatchStats:
        """Deliver until nothing is due (or `limit` actions were handled)."""
        stats = DispatchStats()
        while limit is None or stats.total < limit:
            items = self.claim()
            if not items:
                break
            for item in items:
                status = self.handle(item)
                stats.by_outcome[status] += 1
                stats.by_connector[item.connector] += 1
        return stats

    def handle(self, item: Claimed) -> str:
        """Deliver one claimed action and record its outcome; returns the recorded status."""
        now = self.clock()
        connector = self.connectors.get(item.connector)
        if connector is None:
            return self._record(item, "failed", f"no `{item.connector}` connector is configured", "permanent")
        if item.expires_at is not None and now > item.expires_at:
            return self._record(item, "failed", "expired before it could be delivered", "expired")
        if item.ambiguous:
            if connector.on_ambiguous == "hold":
                return self._record(item, "held", "an earlier attempt may have been delivered; "
                                                  "held for a person (`playbook outbox retry|cancel`)", "ambiguous")
            if connector.on_ambiguous == "check":
                found = self._safe(lambda: connector.check(item))
                if isinstance(found, Delivery) and found.outcome == Outcome.SENT:
                    return self._record(item, "sent", f"found at the receiver: {found.detail}", "sent",
                                        result=found.result)
        if item.kind == "email":
            item, suppressed = self._without_suppressed(item)
            if item is None:
                return suppressed
        delivery = self._safe(lambda: connector.deliver(item))
        return self._outcome(item, delivery)

    def _without_suppressed(self, item: Claimed) -> tuple[Claimed | None, str]:
        """Drop recipients that are unsubscribed or bounced now (checked at send time, not only at planning)."""
        messages = item.payload.get("messages", [])
        with self.db.engine.connect() as conn:
            blocked = suppression.blocked(conn, self.db.schema, [m["to"] for m in messages])
        keep = [m for m in messages if m["to"].lower() not in blocked]
        done = set((item.result or {}).get("delivered") or [])
        keep = [m for m in keep if m["message_id"] not in done]
        if not keep:
            if blocked:
                return None, self._record(item, "suppressed", "every recipient is unsubscribed or bounced: "
                                          + ", ".join(sorted(blocked)), "suppressed")
            return None, self._record(item, "sent", "every message was already delivered", "sent")
        if len(keep) == len(messages):
            return item, ""
        return replace(item, payload={**item.payload, "messages": keep, "delivered": sorted(done),
                                      "suppressed": sorted(blocked)}), ""

    def _safe(self, fn: Callable[[], Delivery | None]) -> Delivery | None:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - a connector bug must not kill the worker
            log.exception("connector raised")
            return Delivery(Outcome.TRANSIENT, f"{type(exc).__name__}: {exc}")

    def _outcome(self, item: Claimed, d: Delivery | None) -> str:
        if d is None:  # pragma: no cover - connectors always return a Delivery
            d = Delivery(Outcome.TRANSIENT, "connector returned nothing")
        d = self._merge_progress(item, d)
        if d.outcome == Outcome.SENT:
            return self._record(item, "sent", d.detail, "sent", result=d.result)
        if d.outcome == Outcome.SUPPRESSED:
            return self._record(item, "suppressed", d.detail, "suppressed", result=d.result)
        if d.outcome == Outcome.PERMANENT:
            return self._record(item, "failed", d.detail, "permanent", result=d.result)
        if item.attempts >= self.max_attempts:
            return self._record(item, "failed", f"retries exhausted after {item.attempts} attempts: {d.detail}",
                                "transient", result=d.result)
        delay = backoff(item.attempts, self.base_s, self.max_s, d.retry_after, self.rng)
        return self._record(item, "pending", d.detail, "transient", result=d.result,
                            retry_at=self.clock() + timedelta(seconds=delay))

    def _merge_progress(self, item: Claimed, d: Delivery) -> Delivery:
        """Keep what earlier attempts delivered, and put hard-bounced addresses on the suppression list."""
        before = (item.result or {}).get("delivered") or []
        result = dict(d.result)
        if before or "delivered" in result:
            result["delivered"] = sorted(set(before) | set(result.get("delivered") or []))
        bounced = result.get("bounced") or {}
        if bounced:
            with self.db.engine.begin() as conn:
                for address, reply in bounced.items():
                    suppression.add(conn, self.db.schema, address, "bounced", self.clock(), str(reply)[:500])
        return replace(d, result=result)

    def _record(self, item: Claimed, status: str, detail: str | None, outcome: str, *, result: dict | None = None,
                retry_at: datetime | None = None) -> str:
        with self.db.engine.begin() as conn:
            ok = outbox.record(conn, self.db.schema, item, status=status, now=self.clock(), error=detail,
                               result=result, retry_at=retry_at, worker=self.owner, outcome=outcome)
        if not ok:
            log.warning("lease lost for %s; outcome %s not recorded", item.dedup_key, status)
            return "lease_lost"
        return status

    def release(self) -> int:
        """Give back this worker's leases (clean shutdown)."""
        with self.db.engine.begin() as conn:
            return outbox.release(conn, self.db.schema, self.owner, self.clock())
