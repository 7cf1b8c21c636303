"""Dispatch (§10): claim due actions with a lease, deliver through connectors, record with fencing.

A claim is committed before any network I/O. Each delivery ends in a Decision (the status to record);
decisions are recorded only while this worker's lease token still holds. For connectors whose
redelivery is harmless (`batch_safe`: local sinks, the built-in task list, Salesforce upserts) the
decisions of a batch are made durable together (connector.flush(), then one transaction); for the
others each outcome is recorded as soon as it is known, so a crash leaves at most the one in-flight
action ambiguous."""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

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


@dataclass(frozen=True)
class Decision:
    """What to record for one claimed action."""

    item: Claimed
    status: str                     # sent | failed | suppressed | held | pending (retry)
    detail: str | None
    outcome: str                    # attempt outcome: sent | transient | permanent | suppressed | expired | ambiguous
    result: dict | None = None
    retry_at: datetime | None = None
    ambiguous: bool = False         # a message may have reached the receiver although the attempt failed


def worker_id() -> str:
    """host:pid — who holds a lease."""
    return f"{socket.gethostname()}:{os.getpid()}"


def backoff(attempt: int, base_s: float, max_s: float, retry_after: float | None, rng: random.Random) -> float:
    """Exponential backoff with full jitter, never sooner than Retry-After."""
    delay = min(max_s, base_s * (2 ** max(attempt - 1, 0)))
    delay = rng.uniform(delay / 2, delay)
    return max(delay, retry_after or 0.0)


class Dispatcher:
    """Delivers due outbox actions. Safe to run in many processes and threads at once."""

    def __init__(self, db: Database, settings: Settings, connectors: dict[str, Connector], *,
                 owner: str | None = None, clock: Callable[[], datetime] = wall_clock, batch: int = 100):
        self.db, self.settings, self.connectors = db, settings, connectors
        self.owner = owner or worker_id()
        self.clock, self.batch = clock, batch
        d = settings.delivery
        self.lease_s = parse_duration(d.lease)
        self.base_s, self.max_s = parse_duration(d.backoff_base), parse_duration(d.backoff_max)
        self.max_attempts = d.max_attempts
        self.rng = random.Random()
        self._blocked: set[str] = set()
        self._unattempted: set[int] = set()   # claimed, never handed to a connector: safe to give back
        self._unrecorded: list[Decision] = []  # delivered, but a database error kept the outcome from the outbox

    def claim(self) -> list[Claimed]:
        """Claim a batch and commit the claim before any network I/O."""
        with self.db.engine.connect() as conn:
            conn.info["immediate"] = True
            with conn.begin():
                items = outbox.claim(conn, self.db.schema, self.owner, self.clock(), self.lease_s, self.batch)
        self._unattempted.update(i.id for i in items)
        return items

    def run_once(self, limit: int | None = None) -> DispatchStats:
        """Deliver until nothing is due (or `limit` actions were handled)."""
        stats = DispatchStats()
        while limit is None or stats.total < limit:
            items = self.claim()
            if not items:
                break
            for item, status in self.process(items):
                stats.by_outcome[status] += 1
                stats.by_connector[item.connector] += 1
        return stats

    def process(self, items: list[Claimed], stop: threading.Event | None = None) -> list[tuple[Claimed, str]]:
        """Deliver a claimed batch; returns (item, recorded status). Items left when `stop` is set stay claimed
        (the caller releases them)."""
        done: list[tuple[Claimed, str]] = []
        late: list[Decision] = []
        self._blocked = self._blocked_among(items)
        with self.db.engine.connect() as conn:          # one connection for the batch's records (no lock held)
            for item in items:
                if stop is not None and stop.is_set():
                    break
                self._unattempted.discard(item.id)
                decision = self.decide(item)
                connector = self.connectors.get(item.connector)
                if getattr(connector, "batch_safe", False):
                    late.append(decision)
                else:
                    done += self._record_or_keep([decision], conn)
            if late:
                for name in {d.item.connector for d in late}:
                    flush = getattr(self.connectors[name], "flush", None)
                    if flush:
                        flush()
                done += self._record_or_keep(late, conn)
        return done

    def _record_or_keep(self, decisions: list[Decision], conn: Connection) -> list[tuple[Claimed, str]]:
        """Record; when the database fails, keep the decisions for settle() so that what was delivered is
        recorded as delivered rather than left to expire as ambiguous."""
        try:
            return self.record(decisions, conn)
        except DBAPIError:
            self._unrecorded += decisions
            raise

    def settle(self) -> list[tuple[Claimed, str]]:
        """After a database error cut a batch short: record the outcomes it kept from the outbox (each only if
        this worker's lease still holds), then give back the claims no connector was given. Runs no query
        when there is nothing to settle."""
        done: list[tuple[Claimed, str]] = []
        if self._unrecorded:
            decisions, self._unrecorded = self._unrecorded, []
            try:
                done = self.record(decisions)
            except DBAPIError:
                self._unrecorded = decisions + self._unrecorded
                raise
            log.info("recorded %d outcome(s) a database error had held back", len(done))
        released = self.release()
        if released:
            log.info("released %d lease(s) no connector was given", released)
        return done

    def handle(self, item: Claimed) -> str:
        """Deliver one claimed action and record its outcome; returns the recorded status."""
        return self.process([item])[0][1]

    def decide(self, item: Claimed) -> Decision:
        """Deliver one claimed action (or decide not to) — no database write except suppression reads."""
        now = self.clock()
        connector = self.connectors.get(item.connector)
        if connector is None:
            return Decision(item, "failed", f"no `{item.connector}` connector is configured", "permanent")
        if item.expires_at is not None and now > item.expires_at:
            return Decision(item, "failed", "expired before it could be delivered", "expired")
        if item.ambiguous:
            if connector.on_ambiguous == "hold":
                return Decision(item, "held", "an earlier attempt may have been delivered; held for a person "
                                              "(`playbook outbox retry|cancel`)", "ambiguous")
            if connector.on_ambiguous == "check":
                found = self._safe(lambda: connector.check(item))
                if isinstance(found, Delivery) and found.outcome == Outcome.SENT:
                    return Decision(item, "sent", f"found at the receiver: {found.detail}", "sent", found.result)
        if item.kind == "email":
            item, decided = self._without_suppressed(item)
            if decided is not None:
                return decided
        return self._outcome(item, self._safe(lambda: connector.deliver(item)))

    def _without_suppressed(self, item: Claimed) -> tuple[Claimed, Decision | None]:
        """Drop recipients that are unsubscribed or bounced now (checked at send time, not only at planning)."""
        messages = item.payload.get("messages", [])
        blocked = {m["to"].lower() for m in messages} & self._blocked
        done = set((item.result or {}).get("delivered") or [])
        keep = [m for m in messages if m["to"].lower() not in blocked and m["message_id"] not in done]
        if not keep:
            if blocked:
                return item, Decision(item, "suppressed", "every recipient is unsubscribed or bounced: "
                                      + ", ".join(sorted(blocked)), "suppressed")
            return item, Decision(item, "sent", "every message was already delivered", "sent")
        if len(keep) == len(messages):
            return item, None
        return replace(item, payload={**item.payload, "messages": keep, "delivered": sorted(done),
                                      "suppressed": sorted(blocked)}), None

    def _blocked_among(self, items: list[Claimed]) -> set[str]:
        """The suppressed addresses among a batch's email recipients (one query per batch)."""
        addresses = [m["to"] for i in items if i.kind == "email" for m in i.payload.get("messages", [])]
        if not addresses:
            return set()
        with self.db.engine.connect() as conn:
            return suppression.blocked(conn, self.db.schema, addresses)

    def _safe(self, fn: Callable[[], Delivery | None]) -> Delivery | None:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - a connector bug must not kill the worker
            log.exception("connector raised")
            return Delivery(Outcome.TRANSIENT, f"{type(exc).__name__}: {exc}")

    def _outcome(self, item: Claimed, d: Delivery | None) -> Decision:
        if d is None:  # pragma: no cover - connectors always return a Delivery
            d = Delivery(Outcome.TRANSIENT, "connector returned nothing")
        d = self._merge_progress(item, d)
        uncertain = bool(d.result.get("uncertain"))
        if d.outcome == Outcome.SENT:
            return Decision(item, "sent", d.detail, "sent", d.result, ambiguous=uncertain)
        if d.outcome == Outcome.SUPPRESSED:
            return Decision(item, "suppressed", d.detail, "suppressed", d.result)
        if d.outcome == Outcome.PERMANENT:
            return Decision(item, "failed", d.detail, "permanent", d.result, ambiguous=uncertain)
        if item.attempts >= self.max_attempts:
            return Decision(item, "failed", f"retries exhausted after {item.attempts} attempts: {d.detail}",
                            "transient", d.result, ambiguous=uncertain)
        delay = backoff(item.attempts, self.base_s, self.max_s, d.retry_after, self.rng)
        return Decision(item, "pending", d.detail, "transient", d.result,
                        retry_at=self.clock() + timedelta(seconds=delay), ambiguous=uncertain)

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

    def record(self, decisions: list[Decision], conn: Connection | None = None) -> list[tuple[Claimed, str]]:
        """Record decisions in one transaction (on `conn`, or a connection of its own), each only if its lease
        token still holds."""
        if conn is None:
            with self.db.engine.connect() as own:
                return self.record(decisions, own)
        out = []
        with conn.begin():
            oks = outbox.record_many(conn, self.db.schema, [
                outbox.Outcome(d.item, d.status, d.detail, d.result, d.retry_at, d.outcome, d.ambiguous)
                for d in decisions], self.clock(), self.owner)
        for d, ok in zip(decisions, oks):
            if not ok:
                log.warning("lease lost; outcome not recorded", extra={"dedup_key": d.item.dedup_key,
                                                                       "status": d.status})
            out.append((d.item, d.status if ok else "lease_lost"))
        return out

    def release(self) -> int:
        """Give back the claimed actions this worker never handed to a connector (on stop, or after an error
        cut a batch short). An action whose delivery was attempted but not recorded keeps its lease: when
        the lease expires it is claimed again flagged ambiguous, because the receiver may have it."""
        if not self._unattempted:
            return 0
        with self.db.engine.begin() as conn:
            released = outbox.release(conn, self.db.schema, self.owner, self.clock(), sorted(self._unattempted))
        self._unattempted.clear()
        return released
