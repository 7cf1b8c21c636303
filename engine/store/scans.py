"""The scan: one statement per subject type evaluating every playbook's conditions together, returning
only the subjects whose verdict changed.

Each (playbook, subject) pair owns one bit in `match_state`: set while the subject is in an open
episode of that playbook. A tick computes, in a single statement over the subject table, the bits
the subjects *should* have now (one CASE per playbook, summed) and returns only the subjects whose
bits differ from the stored ones — on a steady day, a few percent of the rows. `episodes` remains
the full record; the bits are its index, kept in step by state.apply_transitions."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator, Sequence

from sqlalchemy import BigInteger, Connection, and_, bindparam, case, delete, func, insert, literal, select, update

from engine.clock import Clock
from engine.lang import SqlContext, correlated_metric, metric_calls, to_sql
from engine.store import dialect as sql_dialect
from engine.store.bulk import execute_many
from engine.store.dialect import in_list
from engine.store.metric_cache import MetricCache
from engine.store.schema import Repository, Schema

BITS = 62  # bits used per word: stays clear of the sign bit of a 64-bit integer


@dataclass(frozen=True)
class Slot:
    """Where a playbook's bit lives."""

    word: int
    bit: int

    @property
    def value(self) -> int:
        return 1 << self.bit


def _assign_slots(conn: Connection, schema: Schema, playbooks: Iterable[tuple[str, str]]) -> dict[str, Slot]:
    """The bit of each (playbook id, subject type), assigning free ones (and seeding them from open episodes)."""
    pb = schema.playbook_bits
    rows = {r.playbook_id: r for r in conn.execute(select(pb))}
    out: dict[str, Slot] = {}
    for pid, subject in playbooks:
        row = rows.get(pid)
        if row is not None and row.subject_type == subject:
            out[pid] = Slot(row.word, row.bit)
            continue
        if row is not None:          # the playbook changed its subject: its old bit goes away
            _clear_bit(conn, schema, row.subject_type, Slot(row.word, row.bit))
            conn.execute(delete(pb).where(pb.c.playbook_id == pid))
        used = {(r.word, r.bit) for r in conn.execute(select(pb.c.word, pb.c.bit).where(pb.c.subject_type == subject))}
        n = next(i for i in range(10_000) if (i // BITS, i % BITS) not in used)
        slot = Slot(n // BITS, n % BITS)
        conn.execute(insert(pb).values(playbook_id=pid, subject_type=subject, word=slot.word, bit=slot.bit))
        _seed_from_episodes(conn, schema, pid, subject, slot)
        out[pid] = slot
    return out


def _clear_bit(conn: Connection, schema: Schema, subject: str, slot: Slot) -> None:
    ms = schema.match_state
    conn.execute(update(ms).where(ms.c.subject_type == subject, ms.c.word == slot.word)
                 .values(mask=ms.c.mask.op("&")(~slot.value)))


def _seed_from_episodes(conn: Connection, schema: Schema, pid: str, subject: str, slot: Slot) -> None:
    e = schema.episodes
    ids = conn.execute(select(e.c.subject_id).where(e.c.playbook_id == pid, e.c.subject_type == subject,
                                                     e.c.is_open.is_(True))).scalars().all()
    set_bits(conn, schema, subject, slot, ids)


def set_bits(conn: Connection, schema: Schema, subject: str, slot: Slot, ids: Iterable[str]) -> None:
    """mask |= bit for these subjects."""
    rows = [dict(subject_type=subject, subject_id=i, word=slot.word, mask=slot.value) for i in ids]
    execute_many(conn, _set_bits(schema, conn.dialect.name), rows)


def clear_bits(conn: Connection, schema: Schema, subject: str, slot: Slot, ids: Iterable[str]) -> None:
    """mask &= ~bit for these subjects."""
    ids = list(ids)
    if ids:
        conn.execute(_clear_bits(schema, conn.dialect.name),
                     {"b_type": subject, "b_word": slot.word, "b_keep": ~slot.value, "b_ids": ids})


@lru_cache(maxsize=32)
def _set_bits(schema: Schema, dialect: str) -> Any:
    ms = schema.match_state
    ins = sql_dialect.insert(ms, dialect)
    return ins.on_conflict_do_update(index_elements=["subject_type", "word", "subject_id"],
                                     set_={"mask": ms.c.mask.op("|")(ins.excluded.mask)})


@lru_cache(maxsize=32)
def _clear_bits(schema: Schema, dialect: str) -> Any:
    ms = schema.match_state
    return (update(ms).where(ms.c.subject_type == bindparam("b_type"), ms.c.word == bindparam("b_word"),
                             in_list(ms.c.subject_id, "b_ids", dialect))
            .values(mask=ms.c.mask.op("&")(bindparam("b_keep", type_=BigInteger))))


@dataclass(frozen=True)
class Change:
    """A subject whose bits in one word differ from what the playbooks say now."""

    subject_id: str
    old: int
    new: int


class Scans(Repository):
    """The match bits and the scan that compares them with the playbooks' conditions now."""

    def assign_slots(self, playbooks: Iterable[tuple[str, str]]) -> dict[str, Slot]:
        """The bit of each (playbook id, subject type), assigning free ones (and seeding them from open
        episodes). Bits are derived data, so they are assigned even by a dry run."""
        return _assign_slots(self.conn, self.schema, playbooks)

    def bit_is_set(self, playbook_id: str, subject: str, subject_id: str) -> bool:
        """Whether the playbook's match bit is set for this subject (for a journey: the trigger held at its last
        look)."""
        pb, ms = self.schema.playbook_bits, self.schema.match_state
        slot = self.conn.execute(select(pb.c.word, pb.c.bit).where(pb.c.playbook_id == playbook_id,
                                                                   pb.c.subject_type == subject)).first()
        if slot is None:
            return False
        mask = self.conn.execute(select(ms.c.mask).where(ms.c.subject_type == subject, ms.c.word == slot.word,
                                                         ms.c.subject_id == subject_id)).scalar()
        return bool((mask or 0) & (1 << slot.bit))

    def prefer_index_lookups(self) -> None:
        """Plan this transaction's scans for a few thousand listed subjects (see dialect.py)."""
        sql_dialect.prefer_index_lookups(self.conn)

    def scan(self, subject: str, word: int, conditions: dict[int, list[Any]], clock: Clock,
             cache: MetricCache | None, only: Sequence[str] | None = None, *, changed: bool = True) -> Iterator[Change]:
        """Subjects whose bits (among the playbooks given as bit -> compiled expressions) should change, among
        all subjects or those listed in `only`; with changed=False every listed subject, changed or not (what
        `explain` compares its verdict with)."""
        schema, dialect = self.schema, self.dialect
        from_, id_col, live = subject_from(schema, subject)
        needed = {r for exprs in conditions.values() for e in exprs for r in metric_calls(e)}
        if cache is not None and needed and needed <= set(cache.columns):
            from_ = cache.join(from_, schema.accounts.c.id)
            ctx = sql_context(schema, subject, clock, dialect, metric=cache.value)
        else:
            ctx = sql_context(schema, subject, clock, dialect)
        ms = schema.match_state
        from_ = from_.outerjoin(ms, and_(ms.c.subject_type == subject, ms.c.subject_id == id_col, ms.c.word == word))
        selected = sum(1 << b for b in conditions)
        bits = [case((and_(*live, *[to_sql(e, ctx) for e in exprs]), literal(1 << b)), else_=literal(0))
                for b, exprs in sorted(conditions.items())]
        new = bits[0]
        for term in bits[1:]:
            new = new + term
        old = func.coalesce(ms.c.mask, 0).op("&")(selected)
        q = select(id_col, old, new).select_from(from_)
        if changed:
            q = q.where(old != new)
        if only is not None:
            q = q.where(in_list(id_col, "only", dialect))
        # A plain cursor on purpose: a server-side (streaming) cursor makes PostgreSQL plan for the first rows
        # (cursor_tuple_fraction) and pick nested loops, far slower here. Only changed subjects come back.
        for sid, o, n in self.conn.execute(q, {"only": list(only)} if only is not None else {}):
            yield Change(sid, int(o), int(n))


def subject_columns(schema: Schema, subject: str) -> Callable[[str, str], Any]:
    """(entity, field) -> column, for the tables joined when evaluating a `subject` playbook."""
    tables = {"account": schema.accounts, "contact": schema.contacts, "goal": schema.goals}

    def column(entity: str, field: str) -> Any:
        return tables[entity].c[field]

    return column


def subject_from(schema: Schema, subject: str) -> tuple[Any, Any, list[Any]]:
    """FROM clause, subject id column and liveness conditions for a subject type."""
    a = schema.accounts
    if subject == "account":
        return a, a.c.id, [a.c.removed_at.is_(None)]
    t = schema.contacts if subject == "contact" else schema.goals
    return (t.join(a, t.c.account_id == a.c.id), t.c.id,
            [t.c.removed_at.is_(None), a.c.removed_at.is_(None)])


def sql_context(schema: Schema, subject: str, clock: Clock, dialect: str,
                metric: Callable[[Any], Any] | None = None) -> SqlContext:
    """The SqlContext that compiles expressions against the subject's tables (metric windows from `metric`,
    else correlated subqueries over the usage table: the same values, the windows being the fast path)."""
    accounts_id = schema.accounts.c.id
    return SqlContext(
        columns=subject_columns(schema, subject), today=clock.today, now=clock.now,
        timezone=clock.timezone, dialect=dialect,
        metric=metric or (lambda ref: correlated_metric(schema.usage, accounts_id, ref, clock.today)))
