"""The durable outbox (§10): planned actions, claims with leases and fencing tokens, outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Iterable

from sqlalchemy import JSON, Boolean, Connection, DateTime, and_, bindparam, func, insert, or_, select, update

from engine.store import dialect as sql_dialect
from engine.store.bulk import execute_many
from engine.store.dialect import in_list
from engine.store.schema import Repository, Schema

TERMINAL = ("sent", "failed", "suppressed", "cancelled")


@dataclass(frozen=True, slots=True)
class Claimed:
    """An outbox row claimed by one worker; its token must still hold when the outcome is recorded."""

    id: int
    dedup_key: str
    kind: str
    connector: str
    payload: dict
    attempts: int
    token: int
    ambiguous: bool
    playbook_id: str
    subject_type: str
    subject_id: str
    episode: int
    created_at: datetime
    expires_at: datetime | None
    result: dict | None = None
    policy: str | None = None       # the contact policy: customer | exempt | None (internal)
    account_id: str | None = None   # the recipient's account, contact and time zone (customer-facing rows)
    contact_id: str | None = None
    zone: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What to record for one claimed action (Outbox.record)."""

    item: Claimed
    status: str                     # sent | failed | suppressed | held | pending (retry)
    detail: str | None = None
    outcome: str | None = None      # the attempt's outcome: sent | transient | permanent | suppressed | expired | ambiguous
    result: dict | None = None
    retry_at: datetime | None = None
    ambiguous: bool = False         # a message may have reached the receiver although the attempt failed
    expires_at: datetime | None = None   # a deferral's new expiry (outcome `deferred`)

    @property
    def deferred(self) -> bool:
        """Held back by a frequency cap until `retry_at`: pending again, the claim's attempt not counted."""
        return self.outcome == "deferred"


class Outbox(Repository):
    """Planned actions: enqueued by the tick, claimed and recorded by dispatchers, steered by operators."""

    def enqueue(self, rows: Iterable[dict[str, Any]]) -> int:
        """Insert planned actions; a dedup key already present is left alone. Returns rows inserted."""
        return execute_many(self.conn, _enqueue(self.schema, self.dialect), list(rows))

    def claim(self, owner: str, now: datetime, lease_s: float, limit: int,
              kinds: tuple[str, ...] | None = None) -> list[Claimed]:
        """Claim up to `limit` due actions (and expired leases, flagged ambiguous). Caller commits at once."""
        return claim(self.conn, self.schema, owner, now, lease_s, limit, kinds)

    def record(self, decisions: list[Decision], now: datetime, worker: str | None) -> list[bool]:
        """Record decisions, each only if its worker's token still holds (fencing); one attempt row per
        recorded one. Returns, per decision, whether it was recorded."""
        return record_many(self.conn, self.schema, decisions, now, worker)

    def release(self, owner: str, now: datetime, ids: list[int]) -> int:
        """Give back these claimed actions, where `owner` still holds them: they become due again, the claim's
        attempt uncounted. Only for actions no connector was given (see Dispatcher.release)."""
        if not ids:
            return 0
        return self.conn.execute(_release(self.schema, self.dialect),
                                 {"b_ids": ids, "b_owner": owner, "b_now": now}).rowcount

    def cancel_pending(self, dedup_keys: list[str], now: datetime, reason: str) -> int:
        """Cancel the pending actions among these dedup keys (claimed ones are left to finish)."""
        if not dedup_keys:
            return 0
        return self.conn.execute(_cancel_pending(self.schema, self.dialect),
                                 {"b_keys": dedup_keys, "b_reason": reason, "b_now": now}).rowcount

    def cancel_journey(self, playbook_id: str, subject: str, episodes: list[tuple[str, int]], now: datetime,
                       reason: str) -> int:
        """Cancel the pending step actions of these (subject id, episode) journeys (not their on_resolve
        actions, nor the closing of tasks); claimed ones are left to finish. The pending rows are found through
        ix_outbox_due (few: those not yet due), the wanted ones picked by episode, then cancelled by id."""
        if not episodes:
            return 0
        o = self.schema.outbox
        wanted = set(episodes)
        found = self.conn.execute(
            select(o.c.id, o.c.subject_id, o.c.episode).where(
                o.c.status == "pending", o.c.playbook_id == playbook_id, o.c.subject_type == subject,
                o.c.firing != "resolve", o.c.action_index >= 0,
                in_list(o.c.subject_id, "b_ids", self.dialect)),
            {"b_ids": sorted({sid for sid, _ in wanted})})
        ids = [r.id for r in found if (r.subject_id, r.episode) in wanted]
        if not ids:
            return 0
        stmt = (update(o).where(in_list(o.c.id, "b_rows", self.dialect), _status_is(o, "pending"))
                .values(status="cancelled", last_error=reason, finished_at=now, updated_at=now))
        return self.conn.execute(stmt, {"b_rows": ids}).rowcount or 0

    # -- digests (engine/digests.py) ---------------------------------------------------------------------------

    def digests_due(self, now: datetime) -> list[str]:
        """The digests (`digest/<connector>/<recipient>`) with items due at `now`."""
        o = self.schema.outbox
        q = select(o.c.digest_key).where(o.c.status == "digest", o.c.not_before <= now).distinct()
        return sorted(k for (k,) in self.conn.execute(q) if k)

    def lock_digest(self, digest: str) -> None:
        """Serialise the transactions that make this recipient's digest until this one ends."""
        sql_dialect.lock(self.conn, f"digest:{digest}")

    def digest_items(self, digest: str, now: datetime) -> list[dict]:
        """The items of a digest due at `now`, in planning order."""
        o = self.schema.outbox
        q = select(o).where(o.c.digest_key == digest, o.c.status == "digest", o.c.not_before <= now).order_by(o.c.id)
        return [dict(r) for r in self.conn.execute(q).mappings()]

    def id_of(self, dedup_key: str) -> int | None:
        """The id of the action with this dedup key, if there is one."""
        o = self.schema.outbox
        return self.conn.execute(select(o.c.id).where(o.c.dedup_key == dedup_key)).scalar()

    def postpone_digest_items(self, due: list[tuple[int, datetime]], now: datetime) -> None:
        """Items that came due after their digest was made: due at their next digest time instead."""
        o = self.schema.outbox
        for id_, at in due:
            self.conn.execute(update(o).where(o.c.id == id_, o.c.status == "digest").values(not_before=at,
                                                                                         updated_at=now))

    def collect(self, ids: list[int], digest_key: str, note: str, now: datetime) -> int:
        """Items put into the digest `digest_key` (they take its outcome when it is recorded)."""
        o = self.schema.outbox
        return self.conn.execute(update(o).where(o.c.id.in_(ids), o.c.status == "digest").values(
            status="collected", digest_key=digest_key, note=note, updated_at=now)).rowcount or 0

    def follow_digests(self, outcomes: list[tuple[str, str, str | None]], now: datetime) -> None:
        """Each digest's outcome (dedup key, status, detail) copied to the items it collected."""
        o = self.schema.outbox
        for key, status, detail in outcomes:
            terminal = status in TERMINAL
            self.conn.execute(update(o).where(o.c.digest_key == key, o.c.status != status).values(
                status=status if terminal else "collected", last_error=detail if status != "sent" else None,
                finished_at=now if terminal else None, updated_at=now))

    def counts(self) -> dict[str, int]:
        """status -> number of actions."""
        o = self.schema.outbox
        return {s: n for s, n in self.conn.execute(select(o.c.status, func.count()).group_by(o.c.status))}

    def list(self, *, status: str | None = None, playbook_id: str | None = None, limit: int = 50) -> list[dict]:
        """Planned actions, newest first."""
        o = self.schema.outbox
        q = select(o).order_by(o.c.id.desc()).limit(limit)
        if status:
            q = q.where(o.c.status == status)
        if playbook_id:
            q = q.where(o.c.playbook_id == playbook_id)
        return [dict(r) for r in self.conn.execute(q).mappings()]

    def attempts(self, *, playbook_id: str | None = None, subject: str | None = None,
                 limit: int = 50) -> list[dict]:
        """Delivery attempts, newest first, with the action they belong to."""
        a, o = self.schema.attempts, self.schema.outbox
        q = (select(a.c.at, a.c.attempt, a.c.outcome, a.c.detail, a.c.worker, o.c.id.label("outbox_id"),
                    o.c.dedup_key, o.c.kind, o.c.status)
             .join_from(a, o, a.c.outbox_id == o.c.id).order_by(a.c.id.desc()).limit(limit))
        if playbook_id:
            q = q.where(o.c.playbook_id == playbook_id)
        if subject:
            stype, _, sid = subject.rpartition(":")
            q = q.where(o.c.subject_id == sid, *([o.c.subject_type == stype] if stype else []))
        return [dict(r) for r in self.conn.execute(q).mappings()]

    def of_subject(self, playbook_id: str, subject_type: str, subject_id: str, limit: int = 10) -> list[dict]:
        """A playbook's actions for one subject that are not done yet (pending, claimed, held, or waiting for their
        digest), or were
        suppressed by a frequency cap; newest first."""
        o = self.schema.outbox
        prefix = f"{playbook_id}/{subject_type}:{subject_id}/"     # the dedup keys of this subject's actions
        q = (select(o).where(o.c.dedup_key >= prefix, o.c.dedup_key < prefix[:-1] + "0",   # read by the key index
                             o.c.playbook_id == playbook_id, o.c.subject_id == subject_id,
                             or_(o.c.status.in_(("pending", "claimed", "held", "digest")),
                                 and_(o.c.status == "suppressed", o.c.last_error.like("frequency cap:%"))))
             .order_by(o.c.id.desc()).limit(limit))
        return [dict(r) for r in self.conn.execute(q).mappings()]

    def by_ids(self, ids: list[int]) -> list[dict]:
        """These planned actions (the ids that exist)."""
        o = self.schema.outbox
        return [dict(r) for r in self.conn.execute(select(o).where(o.c.id.in_(ids))).mappings()]

    def unrendered(self, ids: list[int]) -> list[dict]:
        """Those among these actions that hold why their rendering failed instead of a payload."""
        return [r for r in self.by_ids(ids) if isinstance(r["payload"], dict) and set(r["payload"]) == {"error"}]

    def replan(self, id_: int, row: dict[str, Any], now: datetime) -> int:
        """Give a failed, held or pending action the payload (and timing) it was planned again with."""
        o = self.schema.outbox
        keep = ("payload", "status", "not_before", "expires_at", "last_error", "finished_at", "policy", "account_id",
                "contact_id", "zone", "note")
        values = {k: row[k] for k in keep if k in row}
        res = self.conn.execute(update(o).where(o.c.id == id_, o.c.status.in_(("failed", "held", "pending")))
                                .values(**values, updated_at=now))
        return res.rowcount or 0

    def set_status(self, ids: list[int], status: str, now: datetime, from_statuses: tuple[str, ...]) -> int:
        """Operator action (retry / cancel) on rows currently in one of `from_statuses`."""
        o = self.schema.outbox
        values: dict[str, Any] = dict(status=status, updated_at=now)
        if status == "pending":
            values.update(not_before=now, finished_at=None, last_error=None)
        else:
            values.update(finished_at=now)
        changed = [(r.dedup_key, r.subject_type) for r in self.conn.execute(
            select(o.c.dedup_key, o.c.subject_type).where(o.c.id.in_(ids), o.c.status.in_(from_statuses)))]
        res = self.conn.execute(update(o).where(o.c.id.in_(ids), o.c.status.in_(from_statuses)).values(**values))
        self.follow_digests([(key, status, "cancelled by an operator" if status == "cancelled" else None)
                             for key, stype in changed if stype == "digest"], now)
        return res.rowcount or 0


@lru_cache(maxsize=32)
def _enqueue(schema: Schema, dialect: str) -> Any:
    return sql_dialect.insert(schema.outbox, dialect).on_conflict_do_nothing(index_elements=["dedup_key"])


def claim(conn: Connection, schema: Schema, owner: str, now: datetime, lease_s: float, limit: int,
          kinds: tuple[str, ...] | None = None) -> list[Claimed]:
    """Claim up to `limit` due actions (and expired leases, flagged ambiguous). Caller commits at once."""
    stmts = _claim_statements(schema, conn.dialect.name, bool(kinds))
    picked = conn.execute(stmts.due, {"b_now": now, "b_limit": limit, **({"b_kinds": list(kinds)} if kinds else {})}
                          ).all()
    if not picked:
        return []
    expired = [r.id for r in picked if r.status == "claimed"]
    ids = [r.id for r in picked]
    if expired:
        conn.execute(stmts.flag_ambiguous, {"b_ids": expired})
    conn.execute(stmts.lease, {"b_ids": ids, "b_owner": owner, "b_until": now + timedelta(seconds=lease_s),
                               "b_now": now})
    return [Claimed(*r[:7], bool(r[7]), *r[8:]) for r in conn.execute(stmts.claimed, {"b_ids": ids})]


@dataclass(frozen=True)
class _ClaimStatements:
    due: Any
    flag_ambiguous: Any
    lease: Any
    claimed: Any


@lru_cache(maxsize=32)
def _claim_statements(schema: Schema, dialect: str, by_kind: bool) -> _ClaimStatements:
    o = schema.outbox
    now = bindparam("b_now", type_=DateTime)
    ids = bindparam("b_ids", expanding=True)
    due = or_(and_(o.c.status == "pending", o.c.not_before <= now), and_(o.c.status == "claimed", o.c.lease_until < now))
    q = select(o.c.id, o.c.status).where(due).order_by(o.c.not_before, o.c.id).limit(bindparam("b_limit"))
    if by_kind:
        q = q.where(o.c.kind.in_(bindparam("b_kinds", expanding=True)))
    q = sql_dialect.skip_locked(q, dialect)
    return _ClaimStatements(
        due=q,
        flag_ambiguous=update(o).where(o.c.id.in_(ids)).values(ambiguous=True),
        lease=update(o).where(o.c.id.in_(ids)).values(
            status="claimed", lease_owner=bindparam("b_owner"), lease_until=bindparam("b_until", type_=DateTime),
            lease_token=o.c.lease_token + 1, attempts=o.c.attempts + 1, updated_at=now),
        claimed=select(o.c.id, o.c.dedup_key, o.c.kind, o.c.connector, o.c.payload, o.c.attempts, o.c.lease_token,
                       o.c.ambiguous, o.c.playbook_id, o.c.subject_type, o.c.subject_id, o.c.episode, o.c.created_at,
                       o.c.expires_at, o.c.result, o.c.policy, o.c.account_id, o.c.contact_id, o.c.zone)
        .where(o.c.id.in_(ids)).order_by(o.c.not_before, o.c.id))


def record_many(conn: Connection, schema: Schema, outcomes: list[Decision], now: datetime,
                worker: str | None) -> list[bool]:
    """See Outbox.record: one UPDATE for all rows (driver executemany); when it changed fewer rows than given,
    a lease was lost somewhere and the rows that kept this worker's token are read back (same transaction) to
    tell which."""
    if not outcomes:
        return []
    if any(x.deferred for x in outcomes):
        deferred = [x for x in outcomes if x.deferred]
        kept = [bool(conn.execute(_defer(schema), dict(
            b_id=x.item.id, b_token=x.item.token, b_retry=x.retry_at, b_expires=x.expires_at, b_note=x.detail,
            b_now=now)).rowcount) for x in deferred]
        _attempts(conn, schema, [x for x, ok in zip(deferred, kept) if ok], now, worker)
        others = [x for x in outcomes if not x.deferred]
        done = dict(zip((id(x) for x in deferred), kept))
        done.update(zip((id(x) for x in others), record_many(conn, schema, others, now, worker)))
        return [done[id(x)] for x in outcomes]
    rows = [dict(b_id=x.item.id, b_token=x.item.token, b_status=x.status, b_error=x.detail, b_result=x.result,
                 b_ambiguous=bool(x.ambiguous), b_finished=now if x.status in TERMINAL else None,
                 b_retry=x.retry_at if x.status == "pending" else None, b_now=now) for x in outcomes]
    changed = execute_many(conn, _record_outcome(schema), rows)
    if changed == len(outcomes):
        done = [True] * len(outcomes)
    else:
        o = schema.outbox
        kept = {(r.id, r.lease_token) for r in conn.execute(
            select(o.c.id, o.c.lease_token).where(o.c.id.in_([x.item.id for x in outcomes]), o.c.status != "claimed"))}
        done = [(x.item.id, x.item.token) in kept for x in outcomes]
    _attempts(conn, schema, [x for x, ok in zip(outcomes, done) if ok], now, worker)
    digests = [(x.item.dedup_key, x.status, x.detail) for x, ok in zip(outcomes, done)
               if ok and x.item.subject_type == "digest" and x.status in TERMINAL]
    if digests:
        Outbox(conn, schema).follow_digests(digests, now)
    return done


def _attempts(conn: Connection, schema: Schema, recorded: list[Decision], now: datetime, worker: str | None) -> None:
    execute_many(conn, _insert_attempt(schema), [dict(outbox_id=x.item.id, attempt=x.item.attempts, at=now,
                                                      outcome=x.outcome or x.status, detail=x.detail, worker=worker)
                                                 for x in recorded])


@lru_cache(maxsize=32)
def _defer(schema: Schema) -> Any:
    """A claimed action a frequency cap holds back: pending again until the window allows, its claim's attempt
    not counted, the reason in `note`."""
    o = schema.outbox
    return (update(o).where(o.c.id == bindparam("b_id"), o.c.lease_token == bindparam("b_token"),
                            o.c.status == "claimed")
            .values(status="pending", lease_owner=None, lease_until=None, attempts=o.c.attempts - 1,
                    not_before=bindparam("b_retry", type_=DateTime), expires_at=bindparam("b_expires", type_=DateTime),
                    note=bindparam("b_note"), updated_at=bindparam("b_now", type_=DateTime)))


@lru_cache(maxsize=32)
def _record_outcome(schema: Schema) -> Any:
    o = schema.outbox
    return (update(o).where(o.c.id == bindparam("b_id"), o.c.lease_token == bindparam("b_token"),
                            o.c.status == "claimed")
            .values(status=bindparam("b_status"), updated_at=bindparam("b_now", type_=DateTime),
                    last_error=bindparam("b_error"), lease_owner=None, lease_until=None,
                    result=func.coalesce(bindparam("b_result", type_=JSON(none_as_null=True)), o.c.result),
                    ambiguous=or_(o.c.ambiguous, bindparam("b_ambiguous", type_=Boolean)),
                    finished_at=bindparam("b_finished", type_=DateTime),
                    not_before=func.coalesce(bindparam("b_retry", type_=DateTime), o.c.not_before)))


@lru_cache(maxsize=32)
def _insert_attempt(schema: Schema) -> Any:
    return insert(schema.attempts)


@lru_cache(maxsize=32)
def _release(schema: Schema, dialect: str) -> Any:
    o = schema.outbox
    return (update(o).where(in_list(o.c.id, "b_ids", dialect), _status_is(o, "claimed"),
                            o.c.lease_owner == bindparam("b_owner"))
            .values(status="pending", lease_owner=None, lease_until=None, attempts=o.c.attempts - 1,
                    updated_at=bindparam("b_now", type_=DateTime)))


def _status_is(o: Any, status: str) -> Any:
    """`status || '' = status` for statements that name their rows by key: not indexable on purpose, so SQLite's
    planner, without statistics, looks the listed keys up in their unique index rather than read every row of
    that status through ix_outbox_due."""
    return (o.c.status + "") == status


@lru_cache(maxsize=32)
def _cancel_pending(schema: Schema, dialect: str) -> Any:
    o = schema.outbox
    now = bindparam("b_now", type_=DateTime)
    return (update(o).where(in_list(o.c.dedup_key, "b_keys", dialect), _status_is(o, "pending"))
            .values(status="cancelled", last_error=bindparam("b_reason"), updated_at=now, finished_at=now))
