"""Episode state, events and runs: the repository the evaluation tick writes through."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Iterable

from sqlalchemy import Connection, DateTime, Select, and_, bindparam, insert, select, update

from engine.store.bulk import execute_many, in_list
from engine.store.scan import Slot, clear_bits, set_bits
from engine.store.schema import Schema


@dataclass(frozen=True, slots=True)
class Transition:
    """One subject whose state changes in this tick."""

    subject_id: str
    event: str                # enter | repeat | resolve
    episode: int              # episode number after the change
    firing: int               # firing number inside the episode (resolve keeps the last)
    is_new_row: bool          # no episodes row existed for this subject yet


def decide(conn: Connection, schema: Schema, playbook_id: str, subject: str, enter_ids: list[str],
           resolve_ids: list[str], now: datetime, *, cooldown_s: int,
           max_episodes: int | None) -> tuple[list[Transition], list[str], list[str]]:
    """Enter / resolve from the scan's candidates and the stored episodes (§8); repeats: `repeats_due`.

    Returns the transitions plus the subjects whose bits only need mending (set, clear) because the
    stored episode already says so."""
    ids = sorted(set(enter_ids) | set(resolve_ids))
    rows = {r.subject_id: r for r in conn.execute(_episodes_of(schema, conn.dialect.name),
                                                   {"b_pb": playbook_id, "b_type": subject, "b_ids": ids})} if ids else {}
    out: list[Transition] = []
    mend_set: list[str] = []
    mend_clear: list[str] = []
    cool_before = now - timedelta(seconds=cooldown_s)
    for sid in enter_ids:
        r = rows.get(sid)
        if r is None:
            out.append(Transition(sid, "enter", 1, 1, True))
        elif r.is_open:
            mend_set.append(sid)
        elif (r.resolved_at is None or r.resolved_at <= cool_before) and \
                (max_episodes is None or r.episode < max_episodes):
            out.append(Transition(sid, "enter", r.episode + 1, 1, False))
        # else: cooldown or episodes used up — not entered, reconsidered at the next evaluation
    for sid in resolve_ids:
        r = rows.get(sid)
        if r is not None and r.is_open:
            out.append(Transition(sid, "resolve", r.episode, r.firing, False))
        else:
            mend_clear.append(sid)
    out.sort(key=lambda t: (t.subject_id, t.event))
    return out, mend_set, mend_clear


def repeats_due(conn: Connection, schema: Schema, playbook_id: str, subject: str, now: datetime, repeat_s: int,
                resolving: set[str]) -> list[Transition]:
    """Repeat transitions of the open episodes that last fired at least `repeat_s` ago (not those resolving)."""
    e = schema.episodes
    due = conn.execute(select(e.c.subject_id, e.c.episode, e.c.firing)
                       .where(_repeat_is_due(schema, playbook_id, subject, now, repeat_s)).order_by(e.c.subject_id))
    return [Transition(sid, "repeat", ep, fi + 1, False) for sid, ep, fi in due if sid not in resolving]


def repeat_due(conn: Connection, schema: Schema, playbook_id: str, subject: str, now: datetime,
               repeat_s: int) -> bool:
    """Whether any open episode of the playbook last fired at least `repeat_s` ago."""
    e = schema.episodes
    return conn.execute(select(e.c.subject_id).where(_repeat_is_due(schema, playbook_id, subject, now, repeat_s))
                        .limit(1)).first() is not None


def cooldown_ended(schema: Schema, playbook_id: str, subject: str, after: datetime, until: datetime) -> Select:
    """The ids of the playbook's closed episodes resolved in (after, until]: the subjects whose cooldown ended in
    that span (a range of ix_episodes_resolved)."""
    e = schema.episodes
    return select(e.c.subject_id.label("id")).where(
        e.c.playbook_id == playbook_id, e.c.subject_type == subject, e.c.is_open.is_(False),
        e.c.resolved_at > after, e.c.resolved_at <= until)


def _repeat_is_due(schema: Schema, playbook_id: str, subject: str, now: datetime, repeat_s: int) -> Any:
    """An open episode of the playbook that last fired at least `repeat_s` before `now`."""
    e = schema.episodes
    return and_(e.c.playbook_id == playbook_id, e.c.subject_type == subject, e.c.is_open.is_(True),
                e.c.last_fired_at <= now - timedelta(seconds=repeat_s))


def apply_transitions(conn: Connection, schema: Schema, playbook_id: str, subject: str,
                      changes: Iterable[Transition], now: datetime, run_id: int | None, slot: Slot,
                      mend: tuple[list[str], list[str]] = ([], [])) -> None:
    """Write the new episode states, their match bits, and one event row per transition."""
    changes = list(changes)
    execute_many(conn, _insert(schema.episodes), [
        dict(playbook_id=playbook_id, subject_type=subject, subject_id=t.subject_id, is_open=True, episode=t.episode,
             firing=t.firing, started_at=now, last_fired_at=now, resolved_at=None)
        for t in changes if t.is_new_row])
    for kind in ("enter", "repeat", "resolve"):
        execute_many(conn, _episode_update(schema, kind), [
            {"b_pb": playbook_id, "b_type": subject, "b_sid": t.subject_id, "b_ep": t.episode, "b_fi": t.firing,
             "b_now": now} for t in changes if t.event == kind and not t.is_new_row])
    execute_many(conn, _insert(schema.events), [
        dict(run_id=run_id, at=now, playbook_id=playbook_id, subject_type=subject, subject_id=t.subject_id,
             event=t.event, episode=t.episode, firing=t.firing) for t in changes])
    set_bits(conn, schema, subject, slot, [t.subject_id for t in changes if t.event == "enter"] + mend[0])
    clear_bits(conn, schema, subject, slot, [t.subject_id for t in changes if t.event == "resolve"] + mend[1])


@lru_cache(maxsize=32)
def _insert(table: Any) -> Any:
    return insert(table)


@lru_cache(maxsize=32)
def _episodes_of(schema: Schema, dialect: str) -> Any:
    """The episode rows of one (playbook, subject type) among some subject ids."""
    e = schema.episodes
    return select(e).where(e.c.playbook_id == bindparam("b_pb"), e.c.subject_type == bindparam("b_type"),
                           in_list(e.c.subject_id, "b_ids", dialect))


@lru_cache(maxsize=32)
def _episode_update(schema: Schema, kind: str) -> Any:
    """The episode row update of an enter (into a new episode), a repeat or a resolve."""
    e = schema.episodes
    now = bindparam("b_now", type_=DateTime)
    values = {"enter": dict(is_open=True, started_at=now, last_fired_at=now), "repeat": dict(last_fired_at=now),
              "resolve": dict(is_open=False, resolved_at=now)}[kind]
    return (update(e).where(e.c.playbook_id == bindparam("b_pb"), e.c.subject_type == bindparam("b_type"),
                            e.c.subject_id == bindparam("b_sid"))
            .values(episode=bindparam("b_ep"), firing=bindparam("b_fi"), **values))


def episode_state(conn: Connection, schema: Schema, playbook_id: str, subject: str, subject_id: str) -> dict | None:
    """The stored state of one (playbook, subject), or None."""
    e = schema.episodes
    row = conn.execute(select(e).where(e.c.playbook_id == playbook_id, e.c.subject_type == subject,
                                       e.c.subject_id == subject_id)).mappings().first()
    return dict(row) if row else None


def start_run(conn: Connection, schema: Schema, kind: str, now: datetime | None, started_at: datetime,
              playbook_id: str | None = None) -> int:
    """Insert a run row and return its id."""
    res = conn.execute(insert(schema.runs).values(kind=kind, started_at=started_at, now=now, status="running",
                                                  playbook_id=playbook_id))
    return int(res.inserted_primary_key[0])


def finish_run(conn: Connection, schema: Schema, run_id: int, status: str, finished_at: datetime,
               detail: dict | None = None) -> None:
    """Close a run row with its status and figures."""
    conn.execute(update(schema.runs).where(schema.runs.c.id == run_id)
                 .values(status=status, finished_at=finished_at, detail=detail))


def history(conn: Connection, schema: Schema, *, playbook_id: str | None = None, subject: str | None = None,
            limit: int = 50) -> list[dict]:
    """The latest events, newest first, with the actions each produced and their state."""
    ev = schema.events
    q = select(ev).order_by(ev.c.id.desc()).limit(limit)
    if playbook_id:
        q = q.where(ev.c.playbook_id == playbook_id)
    if subject:
        stype, _, sid = subject.partition(":") if ":" in subject else ("", "", subject)
        q = q.where(ev.c.subject_id == sid)
        if stype:
            q = q.where(ev.c.subject_type == stype)
    return [dict(r) for r in conn.execute(q).mappings()]
