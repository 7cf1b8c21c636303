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
from typing import Any, Callable

from engine.contact_policy import ContactPolicy
from engine.digests import assemble_due
from engine.delivery import Connector, Outcome, Receipt
from engine.plugins import Unrendered, registry
from engine.redact import redact
from engine.clock import parse_duration, wall_clock
from engine.settings import Settings
from engine.store import DatabaseError, Session, Store
from engine.store.outbox import Claimed, Decision

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
    """Delivers due outbox actions. Safe to run in many processes and threads at once."""

    def __init__(self, store: Store, settings: Settings, connectors: dict[str, Connector], *,
                 owner: str | None = None, clock: Callable[[], datetime] = wall_clock, batch: int = 100):
        self.store, self.settings, self.connectors = store, settings, connectors
        self.owner = owner or worker_id()
        self.clock, self.batch = clock, batch
        d = settings.delivery
        self.lease_s = parse_duration(d.lease).approx_seconds()
        self.base_s = parse_duration(d.backoff_base).approx_seconds()
        self.max_s = parse_duration(d.backoff_max).approx_seconds()
        self.max_attempts = d.max_attempts
        self.rng = random.Random()
        self.kinds = registry().kinds
        self._blocked: set[str] = set()
        self.policy = ContactPolicy(settings.contact_policy, settings.timezone)
        self.expire_after = parse_duration(d.expire_after)
        self._reserved: set[int] = set()      # customer-facing messages holding a place in the caps' ledger
        self._unattempted: set[int] = set()   # claimed, never handed to a connector: safe to give back
        self._unrecorded: list[Decision] = []  # delivered, but a database error kept the outcome from the outbox

    def claim(self, limit: int | None = None) -> list[Claimed]:
        """Claim a batch (at most `limit` actions) and commit the claim before any network I/O."""
        size = self.batch if limit is None else min(self.batch, limit)
        with self.store.write() as tx:
            items = tx.outbox.claim(self.owner, self.clock(), self.lease_s, size)
        self._unattempted.update(i.id for i in items)
        return items

    def assemble(self) -> int:
        """Make the digests due now out of their items (engine/digests.py); they are then claimed like any action."""
        return assemble_due(self.store, self.settings, self.clock())

    def run_once(self, limit: int | None = None) -> DispatchStats:
        """Deliver until nothing is due, or until `limit` actions were handled."""
        stats = DispatchStats()
        self.assemble()
        while limit is None or stats.total < limit:
            items = self.claim(None if limit is None else limit - stats.total)
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
        typed = [self._typed(i) for i in items]
        self._blocked = self._blocked_among([i for i in typed if isinstance(i, Claimed)])
        with self.store.session() as session:          # one connection for the batch's records (no lock held)
            for item in typed:
                if stop is not None and stop.is_set():
                    break
                if isinstance(item, Decision):
                    self._unattempted.discard(item.item.id)
                    done += self._record_or_keep([item], session)
                    continue
                self._unattempted.discard(item.id)
                decision = self.decide(item)
                connector = self.connectors.get(item.connector)
                if getattr(connector, "batch_safe", False):
                    late.append(decision)
                else:
                    done += self._record_or_keep([decision], session)
            if late:
                for name in {d.item.connector for d in late}:
                    flush = getattr(self.connectors[name], "flush", None)
                    if flush:
                        flush()
                done += self._record_or_keep(late, session)
        return done

    def _record_or_keep(self, decisions: list[Decision], session: Session) -> list[tuple[Claimed, str]]:
        """Record; when the database fails, keep the decisions for settle() so that what was delivered is
        recorded as delivered rather than left to expire as ambiguous."""
        try:
            return self.record(decisions, session)
        except DatabaseError:
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
            except DatabaseError:
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
                if isinstance(found, Receipt) and found.outcome == Outcome.SENT:
                    return Decision(item, "sent", f"found at the receiver: {found.detail}", "sent", found.result)
        kind = self.kinds.get(item.kind)
        if kind is not None:      # recipients unsubscribed or bounced by now are dropped (checked at send time)
            check = kind.at_send(item.payload, self._blocked, item.result)
            if check.payload is None:
                return Decision(item, check.status or "suppressed", check.detail, check.status or "suppressed")
            if check.payload is not item.payload:
                item = replace(item, payload=check.payload)
        if item.policy == "customer" and self.policy.caps:
            capped = self._reserve(item, now)
            if capped is not None:
                return capped
        return self._outcome(item, self._safe(lambda: connector.deliver(item)))

    def _reserve(self, item: Claimed, now: datetime) -> Decision | None:
        """Take this message's place under the frequency caps (committed before it is handed to a connector),
        or the decision a cap makes instead: suppressed (`on_cap: drop`) or deferred until the window allows."""
        tz = self.settings.timezone

        def first_cap(tx: Any) -> Any:
            """The first cap (in config order) this message would exceed, and when it would not."""
            for cap in self.policy.caps:
                who = item.contact_id if cap.per == "contact" else item.account_id
                if who is not None:
                    sent = tx.contact_sends.sent(cap.per, who, cap.window.before(now, tz))
                    until = self.policy.capped(cap, sent, now, tz)
                    if until is not None:
                        return cap, until
            return None

        with self.store.write() as tx:
            stop = tx.contact_sends.reserve(item.id, item.contact_id, item.account_id, now, lambda: first_cap(tx))
        if stop is None:
            self._reserved.add(item.id)
            return None
        cap, until = stop
        if self.policy.on_cap == "drop":
            return Decision(item, "suppressed", str(cap), "suppressed")
        slot = self.policy.slot(until, item.zone or tz)
        return Decision(item, "pending", f"deferred: {cap} until {slot.local().isoformat(timespec='seconds')}",
                        "deferred", retry_at=slot.at, expires_at=self.expire_after.after(slot.at, tz))

    def _typed(self, item: Claimed) -> Claimed | Decision:
        """The claimed action with its payload read into its kind's type, or the decision to fail it."""
        try:
            return registry().load(item)
        except Unrendered as exc:
            return Decision(item, "failed", str(exc), "permanent")
        except Exception as exc:  # noqa: BLE001 - an unreadable payload fails that action, not the batch
            return Decision(item, "failed", f"the planned payload cannot be read ({type(exc).__name__}: {exc})",
                            "permanent")

    def _blocked_among(self, items: list[Claimed]) -> set[str]:
        """The suppressed addresses among a batch's recipients (one query per batch)."""
        addresses = [a for i in items if i.kind in self.kinds for a in self.kinds[i.kind].addresses(i.payload)]
        if not addresses:
            return set()
        with self.store.read() as tx:
            return tx.suppressions.blocked(addresses)

    def _safe(self, fn: Callable[[], Receipt | None]) -> Receipt | None:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - a connector bug must not kill the worker
            log.exception("connector raised")
            return Receipt(Outcome.TRANSIENT, f"{type(exc).__name__}: {exc}")

    def _outcome(self, item: Claimed, d: Receipt | None) -> Decision:
        if d is None:  # pragma: no cover - connectors always return a Receipt
            d = Receipt(Outcome.TRANSIENT, "connector returned nothing")
        if d.detail:            # recorded and shown by `outbox list` and `history`: never a secret (engine/redact.py)
            d = replace(d, detail=redact(d.detail))
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

    def _merge_progress(self, item: Claimed, d: Receipt) -> Receipt:
        """Keep what earlier attempts delivered, and put hard-bounced addresses on the suppression list."""
        before = (item.result or {}).get("delivered") or []
        result = dict(d.result)
        if before or "delivered" in result:
            result["delivered"] = sorted(set(before) | set(result.get("delivered") or []))
        bounced = result.get("bounced") or {}
        if bounced:
            with self.store.write() as tx:
                for address, reply in bounced.items():
                    tx.suppressions.add(address, "bounced", self.clock(), str(reply)[:500])
        return replace(d, result=result)

    def record(self, decisions: list[Decision], session: Session | None = None) -> list[tuple[Claimed, str]]:
        """Record decisions in one transaction (on `session`'s connection, or one of its own), each only if its
        lease token still holds."""
        if session is None:
            with self.store.session() as own:
                return self.record(decisions, own)
        out = []
        with session.write() as tx:
            oks = tx.outbox.record(decisions, self.clock(), self.owner)
            if self._reserved:
                self._settle_reservations(tx, decisions, oks)
        for d, ok in zip(decisions, oks):
            if not ok:
                log.warning("lease lost; outcome not recorded", extra={"dedup_key": d.item.dedup_key,
                                                                       "status": d.status})
            out.append((d.item, d.status if ok else "lease_lost"))
        return out

    def _settle_reservations(self, tx: Any, decisions: list[Decision], oks: list[bool]) -> None:
        """A reserved message that went out (or may have) stays counted; one that did not gives its place back.
        An outcome this worker could not record leaves the reservation to whoever holds the action now."""
        sent, unsent = [], []
        for d, ok in zip(decisions, oks):
            if d.item.id not in self._reserved:
                continue
            self._reserved.discard(d.item.id)
            if ok:
                (sent if d.status == "sent" or d.ambiguous else unsent).append(d.item.id)
        tx.contact_sends.settle(sent, unsent)

    def release(self) -> int:
        """Give back the claimed actions this worker never handed to a connector (on stop, or after an error
        cut a batch short). An action whose delivery was attempted but not recorded keeps its lease: when
        the lease expires it is claimed again flagged ambiguous, because the receiver may have it."""
        if not self._unattempted:
            return 0
        with self.store.write() as tx:
            released = tx.outbox.release(self.owner, self.clock(), sorted(self._unattempted))
        self._unattempted.clear()
        return released


def deliver_due(store: Store, settings: Settings, clock: Any = None, *, limit: int | None = None) -> DispatchStats:
    """Deliver what is due now, once, through the configured connectors (at most `limit` actions).

    With an evaluation clock (`run --now`), what that run planned counts as due at its `now`."""
    from engine.plugins import build_connectors

    when = wall_clock if clock is None else (lambda: max(wall_clock(), clock.now))
    connectors = build_connectors(settings, store, when)
    try:
        return Dispatcher(store, settings, connectors, clock=when).run_once(limit)
    finally:
        for c in connectors.values():
            c.close()
