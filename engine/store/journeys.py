"""Journey state (§14): where each subject is in a journey, which waits are due, and the values of a journey's
conditions for the subjects a run looks at. The rules are engine/journey.py; this module reads and writes rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, literal, or_, select

from engine.clock import Clock
from engine.lang import metric_calls, to_sql
from engine.store import dialect
from engine.store.bulk import execute_many
from engine.store.metric_cache import MetricCache
from engine.store.scans import sql_context, subject_from
from engine.store.schema import Repository, Schema


@dataclass(frozen=True, slots=True)
class JourneyState:
    """One subject's journey: its episode, status, the wait it rests at and when that is over."""

    subject_id: str
    episode: int
    status: str                  # active | completed | exited
    step: str | None
    due_at: datetime | None
    since: datetime
    started_at: datetime
    reason: str | None = None

    def row(self, playbook_id: str, subject_type: str) -> dict[str, Any]:
        return dict(playbook_id=playbook_id, subject_type=subject_type, subject_id=self.subject_id,
                    episode=self.episode, status=self.status, step=self.step, due_at=self.due_at, since=self.since,
                    started_at=self.started_at, reason=self.reason)


class Journeys(Repository):
    """The `journeys` table and the statements a run evaluates journey conditions with."""

    def due(self, playbook_id: str, subject: str, now: datetime) -> list[JourneyState]:
        """The active journeys whose wait is over at `now` (a range of ix_journeys_due)."""
        j = self.schema.journeys
        # no ORDER BY: sorting by subject would make the database read the table in key order instead
        q = select(j).where(j.c.playbook_id == playbook_id, j.c.subject_type == subject, j.c.due_at.is_not(None),
                            j.c.due_at <= now)
        return sorted((_state(r) for r in self.conn.execute(q)), key=lambda s: s.subject_id)

    def of(self, playbook_id: str, subject: str, ids: Sequence[str], active: bool = True) -> dict[str, JourneyState]:
        """The journeys of these subjects (only active ones by default)."""
        if not ids:
            return {}
        rows = self.conn.execute(_of(self.schema, self.dialect), {"b_pb": playbook_id, "b_type": subject,
                                                                  "b_ids": list(ids)})
        return {r.subject_id: _state(r) for r in rows if not active or r.status == "active"}

    def holding(self, playbook_id: str, subject: str, exprs: Sequence[Any], clock: Clock,
                cache: MetricCache | None) -> list[str]:
        """The subjects in an active journey of the playbook for whom any of `exprs` (pairs of a wait step id
        or None, and a compiled expression: the wait's `until`, or `exit_when` for every step) holds now: what a
        full scan looks for beyond the due waits."""
        if not exprs:
            return []
        j = self.schema.journeys
        from_, id_col, live, ctx = self._from(subject, [e for _, e in exprs], clock, cache)
        from_ = from_.join(j, and_(j.c.subject_id == id_col, j.c.playbook_id == playbook_id,
                                   j.c.subject_type == subject))
        held = [to_sql(e, ctx) if step is None else and_(j.c.step == step, to_sql(e, ctx)) for step, e in exprs]
        q = select(id_col).select_from(from_).where(j.c.due_at.is_not(None), or_(*held, ~and_(*live)))
        return list(self.conn.execute(q).scalars())

    def elsewhere(self, playbook_id: str, subject: str, steps: Sequence[str]) -> list[str]:
        """The subjects in an active journey of the playbook waiting at a step not among `steps` (after an edit)."""
        j = self.schema.journeys
        q = select(j.c.subject_id).where(j.c.playbook_id == playbook_id, j.c.subject_type == subject,
                                         j.c.due_at.is_not(None), j.c.step.not_in(list(steps)))
        return list(self.conn.execute(q).scalars())

    def values(self, subject: str, ids: Sequence[str], exprs: Sequence[Any], clock: Clock,
               cache: MetricCache | None) -> dict[str, tuple[bool, tuple[bool, ...]]]:
        """subject id -> (live, whether each expression holds) for these subjects (an empty value: no)."""
        if not ids:
            return {}
        from_, id_col, live, ctx = self._from(subject, exprs, clock, cache)
        return truth_values(self.conn, self.dialect, from_, id_col, live, [to_sql(e, ctx) for e in exprs], ids)

    def _from(self, subject: str, exprs: Sequence[Any], clock: Clock, cache: MetricCache | None) -> tuple[Any, ...]:
        schema = self.schema
        from_, id_col, live = subject_from(schema, subject)
        needed = {r for e in exprs for r in metric_calls(e)}
        if cache is not None and needed and needed <= set(cache.columns):
            from_ = cache.join(from_, schema.accounts.c.id)
            ctx = sql_context(schema, subject, clock, self.dialect, metric=cache.value)
        else:
            ctx = sql_context(schema, subject, clock, self.dialect)
        return from_, id_col, live, ctx

    def write(self, playbook_id: str, subject: str, states: Iterable[JourneyState]) -> None:
        """Insert or replace these subjects' journey rows."""
        rows = [s.row(playbook_id, subject) for s in states]
        execute_many(self.conn, _upsert(self.schema, self.dialect), rows)

    def counts(self, playbook_id: str | None = None) -> list[dict[str, Any]]:
        """(playbook, status, step) -> how many subjects, and the earliest due time of those waiting."""
        j = self.schema.journeys
        q = select(j.c.playbook_id, j.c.status, j.c.step, func.count().label("subjects"),
                   func.min(j.c.due_at).label("next_due")).group_by(j.c.playbook_id, j.c.status, j.c.step)
        if playbook_id:
            q = q.where(j.c.playbook_id == playbook_id)
        return [dict(r) for r in self.conn.execute(q.order_by(j.c.playbook_id, j.c.status, j.c.step)).mappings()]

    def waiting_at(self, playbook_id: str) -> dict[str, int]:
        """step id -> how many subjects rest there in an active journey of the playbook."""
        j = self.schema.journeys
        q = (select(j.c.step, func.count()).where(j.c.playbook_id == playbook_id, j.c.status == "active")
             .group_by(j.c.step))
        return {step: n for step, n in self.conn.execute(q)}

    def get(self, playbook_id: str, subject: str, subject_id: str) -> JourneyState | None:
        """One subject's journey row (any status)."""
        return self.of(playbook_id, subject, [subject_id], active=False).get(subject_id)

    def forget(self, playbook_id: str) -> None:
        """Drop a playbook's journey rows (its file is gone for good: tests and tools only)."""
        j = self.schema.journeys
        self.conn.execute(delete(j).where(j.c.playbook_id == playbook_id))


def truth_values(conn: Any, dialect_name: str, from_: Any, id_col: Any, live: list[Any], conditions: list[Any],
                 ids: Sequence[str]) -> dict[str, tuple[bool, tuple[bool, ...]]]:
    """subject id -> (live, whether each SQL condition holds) for these subjects of `from_` (an empty value: no),
    in one statement."""
    cols = [case((and_(*live), literal(1)), else_=literal(0))]
    cols += [case((c, literal(1)), else_=literal(0)) for c in conditions]
    q = select(id_col, *cols).select_from(from_).where(dialect.in_list(id_col, "ids", dialect_name))
    return {r[0]: (bool(r[1]), tuple(bool(v) for v in r[2:])) for r in conn.execute(q, {"ids": list(ids)})}


def _state(r: Any) -> JourneyState:
    return JourneyState(r.subject_id, r.episode, r.status, r.step, r.due_at, r.since, r.started_at, r.reason)


@lru_cache(maxsize=32)
def _of(schema: Schema, dialect_name: str) -> Any:
    j = schema.journeys
    return select(j).where(j.c.playbook_id == bindparam("b_pb"), j.c.subject_type == bindparam("b_type"),
                           dialect.in_list(j.c.subject_id, "b_ids", dialect_name))


@lru_cache(maxsize=32)
def _upsert(schema: Schema, dialect_name: str) -> Any:
    j = schema.journeys
    ins = dialect.insert(j, dialect_name)
    keys = ("playbook_id", "subject_type", "subject_id")
    return ins.on_conflict_do_update(index_elements=list(keys),
                                     set_={c.name: ins.excluded[c.name] for c in j.c if c.name not in (*keys, "id")})
