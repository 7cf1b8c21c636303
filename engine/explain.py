"""`playbook explain`: each condition's value for one subject, and why the playbook fires or not."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection

from engine.lang import PyEnv, evaluate_traced, metric_calls, python_metric
from engine.spec.compiled import CompiledPlaybook
from engine.store import state, subjects
from engine.store.db import Database
from engine.store.matching import Clock, match_query, subject_from


@dataclass
class ConditionValue:
    label: str
    text: str
    value: Any
    trace: list[tuple[str, Any]] = field(default_factory=list)

    def details(self) -> list[tuple[str, Any]]:
        """Sub-expression values worth showing, each once, without the condition itself."""
        seen, out = {self.text}, []
        for text, value in self.trace:
            if text not in seen:
                seen.add(text)
                out.append((text, value))
        return out


_FIELD = re.compile(r"\b(account|contact|goal)\.([a-z_][a-z0-9_]*)")


def field_values(text: str, records: dict[str, dict]) -> list[tuple[str, Any]]:
    """The data fields an expression reads, with this subject's values."""
    out = []
    for entity, name in dict.fromkeys(_FIELD.findall(text)):
        row = records.get(entity) or {}
        if name in row:
            out.append((f"{entity}.{name}", row[name]))
    return out


@dataclass
class Explanation:
    """Why one playbook does or does not fire for one subject at one instant."""

    playbook: str
    subject: str
    conditions: list[ConditionValue]
    matches: bool
    verdict: str          # fires | repeats | in_episode | not_matching | cooldown | episodes_used_up | removed
    reason: str
    sql_agrees: bool

    def as_json(self) -> dict[str, Any]:
        return {"playbook": self.playbook, "subject": self.subject, "matches": self.matches,
                "verdict": self.verdict, "reason": self.reason, "sql_agrees": self.sql_agrees,
                "conditions": [{"label": c.label, "expression": c.text, "value": _jsonable(c.value),
                                "details": [{"expression": t, "value": _jsonable(v)} for t, v in c.details()]}
                               for c in self.conditions]}


def _jsonable(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def explain(db: Database, pb: CompiledPlaybook, subject_id: str, clock: Clock) -> Explanation:
    """Evaluate every condition in Python (the reference back end) and read the episode state."""
    with db.engine.connect() as conn:
        recs = subjects.records(conn, db.schema, pb.subject, [subject_id]).get(subject_id)
        label = f"{pb.subject}:{subject_id}"
        if not recs:
            return Explanation(pb.id, label, [], False, "unknown", f"no {pb.subject} `{subject_id}`", True)
        env = _env(conn, db, pb, recs, clock)
        conds = []
        for c in pb.conditions:
            value, trace = evaluate_traced(c.expr, env)
            conds.append(ConditionValue(c.label, c.text, value, field_values(c.text, recs) + trace))
        removed = any((r or {}).get("removed_at") for r in recs.values())
        matches = not removed and all(c.value is True for c in conds)
        sql_match = _sql_matches(conn, db, pb, subject_id, clock)
        st = state.episode_state(conn, db.schema, pb.id, pb.subject, subject_id)
    verdict, reason = _verdict(pb, conds, matches, removed, st, clock)
    return Explanation(pb.id, label, conds, matches, verdict, reason, sql_match == matches)


def _env(conn: Connection, db: Database, pb: CompiledPlaybook, recs: dict, clock: Clock) -> PyEnv:
    refs = set().union(*(metric_calls(c.expr) for c in pb.conditions)) if pb.conditions else set()
    span = max((r.days + r.offset_days for r in refs), default=0)
    account = recs.get("account") or {}
    usage = subjects.usage_rows(conn, db.schema, account.get("id", ""), clock.today - timedelta(days=span),
                                clock.today) if refs and account else {}
    records = {k: v for k, v in recs.items()}
    return PyEnv(records=records, today=clock.today, now=clock.now, timezone=clock.timezone,
                 metric=lambda ref: python_metric(usage.get(ref.name, {}), ref, clock.today))


def _sql_matches(conn: Connection, db: Database, pb: CompiledPlaybook, subject_id: str, clock: Clock) -> bool:
    _, id_col, _ = subject_from(db.schema, pb.subject)
    q = match_query(db.schema, pb.subject, [c.expr for c in pb.conditions], clock, db.dialect)
    return conn.execute(q.where(id_col == subject_id)).first() is not None


def _verdict(pb: CompiledPlaybook, conds: list[ConditionValue], matches: bool, removed: bool, st: dict | None,
             clock: Clock) -> tuple[str, str]:
    is_open = bool(st and st["is_open"])
    if removed:
        return "removed", "the subject was removed by the last sync" + ("; its episode resolves" if is_open else "")
    if not matches:
        failing = [c for c in conds if c.value is not True]
        first = failing[0]
        why = "is empty (unknown)" if first.value is None else "is false"
        more = f" (and {len(failing) - 1} more)" if len(failing) > 1 else ""
        tail = f"; episode {st['episode']} resolves at the next run" if is_open else ""
        return "not_matching", f"does not match: {first.label} `{first.text}` {why}{more}{tail}"
    spec = pb.spec
    if is_open:
        if spec.repeat_seconds is not None:
            due = st["last_fired_at"] + timedelta(seconds=spec.repeat_seconds)
            if clock.now >= due:
                return "repeats", f"matches, in episode {st['episode']}; repeat is due: fires again"
            return "in_episode", (f"matches, already in episode {st['episode']} since {st['started_at']:%Y-%m-%d %H:%M}"
                                  f" UTC; next repeat at {due:%Y-%m-%d %H:%M} UTC")
        return "in_episode", (f"matches, already in episode {st['episode']} since "
                              f"{st['started_at']:%Y-%m-%d %H:%M} UTC (no repeat set)")
    if st and spec.max_episodes is not None and st["episode"] >= spec.max_episodes:
        return "episodes_used_up", f"matches, but max_episodes ({spec.max_episodes}) is used up"
    if st and st["resolved_at"] and spec.cooldown_seconds:
        until = st["resolved_at"] + timedelta(seconds=spec.cooldown_seconds)
        if clock.now < until:
            return "cooldown", f"matches, but in cooldown until {until:%Y-%m-%d %H:%M} UTC"
    return "fires", f"matches: enters episode {(st['episode'] if st else 0) + 1} and fires at the next run"
