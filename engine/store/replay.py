"""Reading the synced data as it was at a past moment, for a backtest (engine/backtest.py): which subjects
matched each playbook then, and their rows as the templates saw them. Reads only.

Everything here goes through `as_of(entity, at)`: the rows of accounts, contacts, goals (with their
`removed_at`) and usage as a tick at `at` saw them. It is the one place that knows where past data lives.
The matching statement mirrors the tick's scan (engine/store/scans.py) — the same compiled conditions, the
same liveness, metric windows with the semantics of engine/store/metric_cache.py (computed for every run of
the backtest in memory, engine/store/replay_windows.py) — over those rows."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, case, literal, select

from engine.clock import Clock
from engine.datamodel import ENTITY_OF
from engine.lang import MetricRef, SqlContext, correlated_metric, metric_calls, to_sql
from engine.store.dialect import in_list
from engine.store.journeys import truth_values
from engine.store.replay_windows import ReplayWindows
from engine.store.schema import Repository


class Replay(Repository):
    """The data as synced at a past moment: matching subjects, subject rows and contacts."""

    def as_of(self, entity: str, at: datetime) -> Any:
        """The rows of `entity` as a tick at `at` (naive UTC) saw them, with the live table's columns (the field
        history, engine/store/field_history.py)."""
        from engine.store.field_history import as_of
        return as_of(self.schema, entity, at).subquery(entity)

    def windows(self, refs: Iterable[MetricRef], first: Clock, last: Clock) -> ReplayWindows:
        """The metric windows of `refs` at moments from `first` to `last` (the first and last runs of a backtest),
        each `step` giving them at the next moment in a temporary table of this connection
        (engine/store/replay_windows.py)."""
        return ReplayWindows(self.conn, self.schema, refs, first.now, last.now, first.today, last.today)

    def changes(self, after: datetime, until: datetime) -> list[datetime]:
        """The moments in (after, until] at which the data as synced changed (a version synced, replaced or
        deleted), in order: between two of them every moment reads the same rows (`as_of`)."""
        from engine.store.field_history import change_moments
        return change_moments(self.conn, self.schema, after, until)

    def matching(self, subject: str, conditions: dict[int, list[Any]], clock: Clock,
                 windows: ReplayWindows | None = None) -> Iterator[tuple[str, int]]:
        """(subject id, bits) of the live subjects matching at least one of the playbooks given (bit number ->
        compiled conditions), on the data as synced at `clock.now`; each playbook's bit set when it matches.
        `windows` holds the metric windows at `clock` (`windows()` stepped to `clock`) when the
        conditions read any."""
        from_, id_col, live, tables = self._subject_rows(subject, clock.now)
        accounts = tables["account"]
        refs = {r for exprs in conditions.values() for e in exprs for r in metric_calls(e)}
        if refs:
            assert windows is not None, "conditions read metric windows: pass windows()"
            from_ = windows.join(from_, accounts.c.id, refs)
        ctx = SqlContext(columns=lambda entity, field: tables[entity].c[field], today=clock.today, now=clock.now,
                         timezone=clock.timezone, dialect=self.dialect,
                         metric=lambda ref: windows.value(ref, accounts.c.id) if windows else None)
        bits = [case((and_(*live, *[to_sql(e, ctx) for e in exprs]), literal(1 << b)), else_=literal(0))
                for b, exprs in sorted(conditions.items())]
        new = bits[0]
        for term in bits[1:]:
            new = new + term
        for sid, value in self.conn.execute(select(id_col, new).select_from(from_).where(new != 0)):
            yield sid, int(value)

    def values(self, subject: str, ids: Iterable[str], exprs: list[Any], clock: Clock
               ) -> dict[str, tuple[bool, tuple[bool, ...]]]:
        """subject id -> (live, whether each compiled expression holds) for these subjects on the data as synced
        at `clock.now`: what engine/store/journeys.py `values` gives a run (metric windows as correlated
        subqueries over the usage synced then, the same values as the tick's windows)."""
        ids = sorted(set(ids))
        if not ids:
            return {}
        from_, id_col, live, tables = self._subject_rows(subject, clock.now)
        accounts = tables["account"]
        usage = self.as_of("usage", clock.now) if any(metric_calls(e) for e in exprs) else None
        ctx = SqlContext(columns=lambda entity, field: tables[entity].c[field], today=clock.today, now=clock.now,
                         timezone=clock.timezone, dialect=self.dialect,
                         metric=lambda ref: correlated_metric(usage, accounts.c.id, ref, clock.today))
        return truth_values(self.conn, self.dialect, from_, id_col, live, [to_sql(e, ctx) for e in exprs], ids)

    def _subject_rows(self, subject: str, at: datetime) -> tuple[Any, Any, list[Any], dict[str, Any]]:
        """FROM clause, subject id column, liveness conditions and the tables by entity name (`account`, and
        the subject's own) of a subject type as synced at `at`: the tick's `scans.subject_from` on past rows."""
        accounts = self.as_of("accounts", at)
        if subject == "account":
            return accounts, accounts.c.id, [accounts.c.removed_at.is_(None)], {"account": accounts}
        own = self.as_of(ENTITY_OF[subject], at)
        return (own.join(accounts, own.c.account_id == accounts.c.id), own.c.id,
                [own.c.removed_at.is_(None), accounts.c.removed_at.is_(None)], {"account": accounts, subject: own})

    def subjects(self, at: datetime, shape: Callable[[dict], dict]) -> PastSubjects:
        """Subject rows, role contacts and usage as synced at `at`, with the reading methods of the live ones
        (engine/store/subjects.py), each row as `shape(row)`: what planning reads (engine.planner.plan_inputs)."""
        return PastSubjects(self, at, shape)

    def rows(self, entity: str, ids: Iterable[str], at: datetime) -> dict[str, dict]:
        """id -> row (without synced_at) of these ids as synced at `at`, removed rows included."""
        t = self.as_of(entity, at)
        cols = [col for col in t.c if col.name != "synced_at"]
        q = select(*cols).where(in_list(t.c.id, "ids", self.dialect))
        keys = [col.name for col in cols]
        return {row[0]: dict(zip(keys, row)) for row in self.conn.execute(q, {"ids": sorted(set(ids))})}


class PastSubjects:
    """engine.store.subjects.Subjects' reading methods, on the data as synced at one moment."""

    def __init__(self, replay: Replay, at: datetime, shape: Callable[[dict], dict]):
        self.replay, self.at, self.shape = replay, at, shape

    def records(self, subject: str, ids: Iterable[str], cache: Any = None) -> dict[str, dict[str, dict]]:
        """subject id -> {'account': row, 'contact'|'goal': row} (removed rows included)."""
        ids = sorted(set(ids))
        if not ids:
            return {}
        if subject == "account":
            return {i: {"account": self.shape(row)} for i, row in self.replay.rows("accounts", ids, self.at).items()}
        own = self.replay.rows(ENTITY_OF[subject], ids, self.at)
        accounts = self.replay.rows("accounts", {row["account_id"] for row in own.values()}, self.at)
        return {i: {subject: self.shape(row), "account": self.shape(accounts[row["account_id"]])
                    if row["account_id"] in accounts else {}} for i, row in own.items()}

    def contacts_with_roles(self, account_ids: Iterable[str], roles: list[str], cache: Any = None
                            ) -> dict[str, list[dict]]:
        """account id -> its live contacts with one of `roles`, unsubscribed ones left out, in id order."""
        account_ids = sorted(set(account_ids))
        if not account_ids or not roles:
            return {}
        c = self.replay.as_of("contacts", self.at)
        cols = [col for col in c.c if col.name != "synced_at"]
        q = (select(*cols).where(in_list(c.c.account_id, "ids", self.replay.dialect), c.c.removed_at.is_(None),
                                 c.c.unsubscribed.isnot(True), c.c.role.in_(sorted(roles))).order_by(c.c.id))
        out: dict[str, list[dict]] = {}
        for values in self.replay.conn.execute(q, {"ids": account_ids}):
            row = self.shape(dict(zip([col.name for col in cols], values)))
            out.setdefault(row["account_id"], []).append(row)
        return out

    def usage_of(self, account_ids: list[str], metrics: list[str], since: date, until: date) -> dict[str, dict]:
        """account id -> metric -> {day: value} over a date range."""
        u = self.replay.as_of("usage", self.at).c
        q = select(u.account_id, u.metric, u.day, u.value).where(
            in_list(u.account_id, "ids", self.replay.dialect), u.metric.in_(metrics), u.day >= since,
            u.day <= until)
        out: dict[str, dict] = {}
        for account, metric, day, value in self.replay.conn.execute(q, {"ids": account_ids}):
            out.setdefault(account, {}).setdefault(metric, {})[day] = value
        return out
