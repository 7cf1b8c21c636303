"""Episode state, events and runs: the repository the evaluation tick writes through."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable

from sqlalchemy import Connection, and_, exists, func, insert, literal, or_, select, update

from engine.store.schema import Schema


@dataclass(frozen=True, slots=True)
class Transition:
    """One subject whose state changes in this tick."""

    subject_id: str
    event: str                # enter | repeat | resolve
    episode: int              # episode number after the change
    firing: int               # firing number inside the episode (resolve keeps the last)
    is_new_row: bool          # no episodes row existed for this subject yet


def transitions(conn: Connection, schema: Schema, playbook_id: str, subject: str, match: Any, now: datetime, *,
                repeat_s: int | None, cooldown_s: int, max_episodes: int | None) -> list[Transition]:
    """Enter / repeat / resolve for one playbook, computed by set operations in the database."""
    e = schema.episodes
    m = match.cte("matching")
    mine = and_(e.c.playbook_id == playbook_id, e.c.subject_type == subject)
    joined = m.outerjoin(e, and_(mine, e.c.subject_id == m.c.subject_id))
    may_enter = and_(
        e.c.is_open.is_(False),
        or_(e.c.resolved_at.is_(None), e.c.resolved_at <= now - timedelta(seconds=cooldown_s)),
        *( [e.c.episode < max_episodes] if max_episodes is not None else []),
    )
    first_time = e.c.subject_id.is_(None)
    if max_episodes is not None and max_episodes < 1:  # pragma: no cover - models forbid it
        first_time = literal(False)
    conds = [first_time, may_enter]
    if repeat_s is not None:
        conds.append(and_(e.c.is_open.is_(True), e.c.last_fired_at <= now - timedelta(seconds=repeat_s)))
    q1 = (select(m.c.subject_id, e.c.subject_id.is_(None).label("new"), e.c.is_open, e.c.episode, e.c.firing)
          .select_from(joined).where(or_(*conds)))
    q2 = (select(e.c.subject_id, literal(False).label("new"), e.c.is_open, e.c.episode, e.c.firing)
          .where(mine, e.c.is_open.is_(True), ~exists().where(m.c.subject_id == e.c.subject_id)))
    out: list[Transition] = []
    for sid, new, is_open, episode, firing in conn.execute(q1):
        if new:
            out.append(Transition(sid, "enter", 1, 1, True))
        elif is_open:
            out.append(Transition(sid, "repeat", episode, firing + 1, False))
        else:
            out.append(Transition(sid, "enter", episode + 1, 1, False))
    for sid, _new, _open, episode, firing in conn.execute(q2):
        out.append(Transition(sid, "resolve", episode, firing, False))
    out.sort(key=lambda t: (t.subject_id, t.event))
    return out


def apply_transitions(conn: Connection, schema: Schema, playbook_id: str, subject: str,
                      changes: Iterable[Transition], now: datetime, run_id: int | None) -> None:
    """Write the new episode states and one event row per transition."""
    e, ev = schema.episodes, schema.events
    changes = list(changes)
    new_rows = [dict(playbook_id=playbook_id, subject_type=subject, subject_id=t.subject_id, is_open=True,
                     episode=t.episode, firing=t.firing, started_at=now, last_fired_at=now, resolved_at=None)
                for t in changes if t.is_new_row]
    if new_rows:
        conn.execute(insert(e), new_rows)
    key = and_(e.c.playbook_id == playbook_id, e.c.subject_type == subject)
    for kind, values in (
        ("enter", dict(is_open=True, started_at=now, last_fired_at=now)),
        ("repeat", dict(last_fired_at=now)),
        ("resolve", dict(is_open=False, resolved_at=now)),
    ):
        rows = [{"sid": t.subject_id, "ep": t.episode, "fi": t.firing}
                for t in changes if t.event == kind and not t.is_new_row]
        if rows:
            from sqlalchemy import bindparam

            stmt = (update(e).where(key, e.c.subject_id == bindparam("sid"))
                    .values(episode=bindparam("ep"), firing=bindparam("fi"), **values))
            conn.execute(stmt, rows)
    if changes:
        conn.execute(insert(ev), [dict(run_id=run_id, at=now, playbook_id=playbook_id, subject_type=subject,
                                       subject_id=t.subject_id, event=t.event, episode=t.episode,
                                       firing=t.firing) for t in changes])


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


def count_events(conn: Connection, schema: Schema) -> int:
    return int(conn.execute(select(func.count()).select_from(schema.events)).scalar_one())
