"""Episodes, events, runs and each playbook's last evaluation: what the tick reads and writes about
playbooks × subjects. The rules deciding the transitions are engine/episodes.py; this module only reads
the rows they need and writes the transitions they return."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import DateTime, and_, bindparam, func, insert, select, update

from engine.episodes import Episode, Transition
from engine.store import dialect
from engine.store.bulk import execute_many
from engine.store.scans import Slot, clear_bits, set_bits
from engine.store.schema import Repository, Schema


class Episodes(Repository):
    """The episode row of every (playbook, subject), the match bits that index the open ones, and events."""

    def stored(self, playbook_id: str, subject: str, ids: list[str]) -> dict[str, Episode]:
        """subject id -> its stored episode, for those of `ids` that have one."""
        if not ids:
            return {}
        rows = self.conn.execute(_episodes_of(self.schema, self.dialect),
                                 {"b_pb": playbook_id, "b_type": subject, "b_ids": ids})
        return {r.subject_id: _episode(r) for r in rows}

    def get(self, playbook_id: str, subject: str, subject_id: str) -> Episode | None:
        """The stored episode of one (playbook, subject), or None."""
        e = self.schema.episodes
        row = self.conn.execute(select(e).where(e.c.playbook_id == playbook_id, e.c.subject_type == subject,
                                                e.c.subject_id == subject_id)).first()
        return _episode(row) if row is not None else None

    def fired_before(self, playbook_id: str, subject: str, cutoff: datetime) -> list[Episode]:
        """The open episodes of a playbook that last fired at or before `cutoff`, in subject order."""
        e = self.schema.episodes
        return [_episode(r) for r in self.conn.execute(
            select(e).where(_fired_before(self.schema, playbook_id, subject, cutoff)).order_by(e.c.subject_id))]

    def any_fired_before(self, playbook_id: str, subject: str, cutoff: datetime) -> bool:
        """Whether any open episode of the playbook last fired at or before `cutoff`."""
        e = self.schema.episodes
        return self.conn.execute(select(e.c.subject_id).where(_fired_before(self.schema, playbook_id, subject,
                                                                            cutoff)).limit(1)).first() is not None

    def apply(self, playbook_id: str, subject: str, changes: Iterable[Transition], now: datetime,
              run_id: int | None, slot: Slot, mend: tuple[list[str], list[str]] = ([], []), *, events: bool = True,
              clear_resolved: bool = True) -> None:
        """Write the new episode states, their match bits, and one event row per transition (`events=False`: the
        caller writes its own; `clear_resolved=False`: a resolve leaves the match bit, as when a journey ends
        while its trigger still holds)."""
        conn, schema = self.conn, self.schema
        changes = list(changes)
        execute_many(conn, _insert(schema.episodes), [
            dict(playbook_id=playbook_id, subject_type=subject, subject_id=t.subject_id, is_open=True,
                 episode=t.episode, firing=t.firing, started_at=now, last_fired_at=now, resolved_at=None,
                 baselined=t.baselined)
            for t in changes if t.is_new_row])
        for kind in ("enter", "repeat", "resolve", "baseline"):
            execute_many(conn, _episode_update(schema, kind), [
                {"b_pb": playbook_id, "b_type": subject, "b_sid": t.subject_id, "b_ep": t.episode,
                 "b_fi": t.firing, "b_now": now} for t in changes if t.event == kind and not t.is_new_row])
        if events:
            execute_many(conn, _insert(schema.events), [
                dict(run_id=run_id, at=now, playbook_id=playbook_id, subject_type=subject, subject_id=t.subject_id,
                     event=t.event, episode=t.episode, firing=t.firing) for t in changes if not t.baselined])
        set_bits(conn, schema, subject, slot,
                 [t.subject_id for t in changes if t.event in ("enter", "baseline")] + mend[0])
        clear_bits(conn, schema, subject, slot,
                   [t.subject_id for t in changes if t.event == "resolve" and clear_resolved] + mend[1])

    def record_events(self, run_id: int | None, now: datetime, playbook_id: str, subject: str,
                      rows: list[dict[str, Any]]) -> None:
        """Event rows with their detail (a journey's: subject_id, event, episode, detail)."""
        execute_many(self.conn, _insert(self.schema.events), [
            dict(run_id=run_id, at=now, playbook_id=playbook_id, subject_type=subject, subject_id=r["subject_id"],
                 event=r["event"], episode=r["episode"], firing=0, detail=r["detail"]) for r in rows])

    def resolved_between(self, playbook_id: str, subject: str, after: datetime, until: datetime) -> set[str]:
        """The subjects whose closed episode of the playbook resolved in (after, until] (a range of
        ix_episodes_resolved, whose `is_open IS false` predicate the statement keeps): those whose cooldown
        ended in a span (engine.episodes.Policy.cooldowns_ended)."""
        return set(self.conn.execute(resolved_between(self.schema), {
            "b_pb": playbook_id, "b_type": subject, "b_after": after, "b_until": until}).scalars())

    def resolved_items(self, rows: list[dict[str, Any]]) -> set[int]:
        """The ids of these outbox rows (digest items) whose episode has resolved since it planned them (an
        `on_resolve` action's item is not: it is the news of the resolve)."""
        by_playbook: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in rows:
            if r["firing"] != "resolve":
                by_playbook.setdefault((r["playbook_id"], r["subject_type"]), []).append(r)
        out = set()
        for (pb, stype), mine in by_playbook.items():
            stored = self.stored(pb, stype, sorted({r["subject_id"] for r in mine}))
            for r in mine:
                ep = stored.get(r["subject_id"])
                if ep is None or ep.episode > r["episode"] or not ep.is_open:
                    out.add(r["id"])
        return out

    def history(self, *, playbook_id: str | None = None, subject: str | None = None, limit: int = 50) -> list[dict]:
        """The latest events, newest first."""
        ev = self.schema.events
        q = select(ev).order_by(ev.c.id.desc()).limit(limit)
        if playbook_id:
            q = q.where(ev.c.playbook_id == playbook_id)
        if subject:
            stype, _, sid = subject.partition(":") if ":" in subject else ("", "", subject)
            q = q.where(ev.c.subject_id == sid)
            if stype:
                q = q.where(ev.c.subject_type == stype)
        return [dict(r) for r in self.conn.execute(q).mappings()]


@lru_cache(maxsize=32)
def resolved_between(schema: Schema) -> Any:
    """The subjects of one (playbook, subject type) whose closed episode resolved in (b_after, b_until]."""
    e = schema.episodes
    return select(e.c.subject_id).where(
        e.c.playbook_id == bindparam("b_pb"), e.c.subject_type == bindparam("b_type"), e.c.is_open.is_(False),
        e.c.resolved_at > bindparam("b_after", type_=DateTime), e.c.resolved_at <= bindparam("b_until", type_=DateTime))


def _episode(row: Any) -> Episode:
    return Episode(row.subject_id, bool(row.is_open), row.episode, row.firing, row.started_at, row.last_fired_at,
                   row.resolved_at, bool(row.baselined))


def _fired_before(schema: Schema, playbook_id: str, subject: str, cutoff: datetime) -> Any:
    e = schema.episodes
    return and_(e.c.playbook_id == playbook_id, e.c.subject_type == subject, e.c.is_open.is_(True),
                e.c.last_fired_at <= cutoff)


@lru_cache(maxsize=32)
def _insert(table: Any) -> Any:
    return insert(table)


@lru_cache(maxsize=32)
def _episodes_of(schema: Schema, dialect_name: str) -> Any:
    """The episode rows of one (playbook, subject type) among some subject ids."""
    e = schema.episodes
    return select(e).where(e.c.playbook_id == bindparam("b_pb"), e.c.subject_type == bindparam("b_type"),
                           dialect.in_list(e.c.subject_id, "b_ids", dialect_name))


@lru_cache(maxsize=32)
def _episode_update(schema: Schema, kind: str) -> Any:
    """The episode row update of an enter (into a new episode), a repeat, a resolve or a baseline (§12)."""
    e = schema.episodes
    now = bindparam("b_now", type_=DateTime)
    values = {"enter": dict(is_open=True, started_at=now, last_fired_at=now, baselined=False),
              "baseline": dict(is_open=True, started_at=now, last_fired_at=now, baselined=True),
              "repeat": dict(last_fired_at=now), "resolve": dict(is_open=False, resolved_at=now)}[kind]
    return (update(e).where(e.c.playbook_id == bindparam("b_pb"), e.c.subject_type == bindparam("b_type"),
                            e.c.subject_id == bindparam("b_sid"))
            .values(episode=bindparam("b_ep"), firing=bindparam("b_fi"), **values))


class Runs(Repository):
    """Runs (one row per evaluation run) and each playbook's latest evaluation (for status, catch-up and
    the next scan's scope)."""

    def lock_playbook(self, playbook_id: str) -> None:
        """Serialise evaluations of one playbook across processes until this transaction ends."""
        dialect.lock(self.conn, f"playbook:{playbook_id}")

    def start(self, kind: str, now: datetime | None, started_at: datetime, playbook_id: str | None = None) -> int:
        """Insert a run row and return its id."""
        res = self.conn.execute(insert(self.schema.runs).values(kind=kind, started_at=started_at, now=now,
                                                                 status="running", playbook_id=playbook_id))
        return int(res.inserted_primary_key[0])

    def finish(self, run_id: int, status: str, finished_at: datetime, detail: dict | None = None) -> None:
        """Close a run row with its status and figures."""
        runs = self.schema.runs
        self.conn.execute(update(runs).where(runs.c.id == run_id)
                          .values(status=status, finished_at=finished_at, detail=detail))

    def record_playbook(self, playbook_id: str, *, evaluated_at: datetime, now: datetime, status: str,
                        detail: dict[str, Any] | None, source_hash: str | None,
                        scan: dict[str, Any] | None = None, active: bool = True,
                        activated_at: datetime | None = None) -> None:
        """Upsert the latest evaluation of one playbook (`scan`: what its scan saw, engine/scope.py; `active`:
        whether its activation is done; `activated_at` when this evaluation was it, else the stored one stays)."""
        execute_many(self.conn, _upsert_state(self.schema, self.dialect), [dict(   # compiled once (bulk.py)
            playbook_id=playbook_id, last_evaluated_at=evaluated_at, last_now=now, status=status, detail=detail,
            source_hash=source_hash, scan=scan, active=active, activated_at=activated_at)])

    def analyze_grown(self, transitions: int, planned: int) -> None:
        """After a tick: refresh the planner statistics of the tables it grew by a tenth (PostgreSQL)."""
        s = self.schema
        dialect.analyze_grown(self.conn, {s.episodes: transitions, s.events: transitions, s.match_state: transitions,
                                          s.outbox: planned})

    def set_active(self, playbook_ids: list[str], active: bool, now: datetime | None = None) -> None:
        """Mark playbooks active (evaluated since their activation at `now`) or not (disabled or removed: their
        next evaluation is an activation again)."""
        if not playbook_ids:
            return
        t = self.schema.playbook_state
        values: dict[str, Any] = {"active": active}
        if active:
            values["activated_at"] = now
        self.conn.execute(update(t).where(t.c.playbook_id.in_(playbook_ids)).values(**values))

    def evaluating(self, until: datetime, since: datetime) -> bool:
        """Whether an evaluation for a moment up to `until` started after `since` and is still running (what it
        plans may belong in a digest due at `until`)."""
        r = self.schema.runs
        return self.conn.execute(select(r.c.id).where(
            r.c.status == "running", r.c.kind.in_(("run", "scheduled")), r.c.now <= until,
            r.c.started_at >= since).limit(1)).first() is not None

    def playbook_states(self) -> dict[str, dict]:
        """playbook id -> its latest evaluation (last_evaluated_at, last_now, status, detail, scan, ...)."""
        t = self.schema.playbook_state
        return {r["playbook_id"]: dict(r) for r in self.conn.execute(select(t)).mappings()}

    def last_synced(self) -> dict[str, datetime]:
        """entity -> when it was last synced."""
        s = self.schema.sync_state
        return {e: at for e, at in self.conn.execute(select(s.c.entity, s.c.synced_at))}


@lru_cache(maxsize=32)
def _upsert_state(schema: Schema, dialect_name: str) -> Any:
    t = schema.playbook_state
    ins = dialect.insert(t, dialect_name)
    written = {c.name: ins.excluded[c.name] for c in t.c if c.name not in ("playbook_id", "activated_at")}
    return ins.on_conflict_do_update(
        index_elements=["playbook_id"],
        set_={**written, "activated_at": func.coalesce(ins.excluded.activated_at, t.c.activated_at)})
