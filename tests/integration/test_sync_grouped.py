"""A usage source grouped by account syncs account by account (sync/grouped.py): compared with the stored rows
of its accounts, writing only what changed; an ungrouped source falls back to the general path with the same
result. On SQLite and, when PLAYBOOK_TEST_POSTGRES_URL is set, PostgreSQL."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from conftest import postgres_schema
from engine.store.entities import Entities
from engine.sync.runner import SyncFailed
from test_sync import Workspace

T0 = datetime(2024, 5, 1, 6, 0)
T1 = T0 + timedelta(days=1)
T2 = T0 + timedelta(days=2)
CONFIG = """
    sources:
      - {entity: accounts, csv: accounts.csv}
      - {entity: usage, csv: usage.csv}
"""
ACCOUNTS = "id,name\nA1,a\nA2,b\nA3,c\n"
HEADER = "account_id,metric,day,value\n"


def usage(changes: dict[tuple[str, str, int], float | None] | None = None, accounts: tuple[str, ...] = ("A2", "A1", "A3"),
          grouped: bool = True) -> str:
    """Rows of accounts × metrics (seats before logins) × 3 days, grouped by account, or account by account
    within each day (not grouped); `changes` sets a row's value, or drops it (None)."""
    changes = changes or {}
    keys = [(a, m, d) for a in accounts for m in ("seats", "logins") for d in (1, 2, 3)]
    if not grouped:
        keys.sort(key=lambda k: (k[2], k[1]))
    lines = []
    for a, m, d in keys:
        value = changes.get((a, m, d), float(d + len(a) + len(m)))
        if value is not None:
            lines.append(f"{a},{m},2024-04-0{d},{value}\n")
    return HEADER + "".join(lines)


@pytest.fixture
def ws(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    monkeypatch.setattr("engine.sync.runner.CHUNK", 4)      # an account's 6 rows span chunks
    workspace = Workspace(tmp_path, db_url)
    workspace.config(CONFIG)
    yield workspace
    workspace.close()


@pytest.fixture
def general(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the chunks written by the general path (store/entities.py `write_rows`)."""
    calls: list[int] = []
    original = Entities.write_rows

    def counted(self: Entities, entity: str, *args: Any, **kwargs: Any) -> Any:
        if entity == "usage":
            calls.append(1)
        return original(self, entity, *args, **kwargs)

    monkeypatch.setattr(Entities, "write_rows", counted)
    return calls


def indexes(ws: Workspace) -> set[str]:
    """The names of usage's secondary indexes in the database."""
    return {i["name"] for i in sa.inspect(ws.db.engine).get_indexes("usage")}


def load(ws: Workspace, now: datetime, text: str, **kwargs: Any):
    ws.write("accounts.csv", ACCOUNTS)
    ws.write("usage.csv", text)
    return ws.sync(now=now, **kwargs)


def dump(ws: Workspace) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every usage row and every usage history row, sorted."""
    schema = ws.db.schema
    with ws.db.engine.connect() as conn:
        rows = sorted(tuple(r) for r in conn.execute(sa.select(schema.usage)))
        past = sorted(tuple(r) for r in conn.execute(sa.select(schema.history["usage"])))
    return rows, past


def test_an_unchanged_grouped_resync_writes_nothing_and_keeps_the_stamps(ws: Workspace, general: list[int]) -> None:
    first = load(ws, T0, usage()).entities["usage"]
    assert (first.loaded, first.inserted, first.written) == (18, 18, 18)
    assert indexes(ws) == {"ix_usage_metric_account_day", "ix_usage_synced_at"}     # dropped for the load, rebuilt
    again = load(ws, T1, usage()).entities["usage"]
    assert (again.read, again.loaded, again.written, again.unchanged, again.removed) == (18, 18, 0, 18, 0)
    rows, past = dump(ws)
    assert {r[-1] for r in rows} == {T0}
    assert past == []
    assert general == []                                    # the grouped path wrote every chunk


def test_changed_new_and_removed_rows_and_a_removed_account_are_recorded(ws: Workspace, general: list[int]) -> None:
    load(ws, T0, usage())
    text = usage({("A1", "seats", 2): 99.0, ("A2", "logins", 3): None}, accounts=("A2", "A1")) + \
        "A1,seats,2024-04-04,7.0\n"
    report = load(ws, T1, text).entities["usage"]
    assert (report.inserted, report.updated, report.removed, report.unchanged) == (1, 1, 7, 10)
    rows, past = dump(ws)
    stamps = {(a, m, d.day): (v, at) for a, m, d, v, at in rows}
    assert stamps[("A1", "seats", 2)] == (99.0, T1)
    assert stamps[("A1", "seats", 4)] == (7.0, T1)
    assert stamps[("A1", "seats", 1)][1] == T0
    assert ("A2", "logins", 3) not in stamps and not any(a == "A3" for a, _, _ in stamps)
    kept = {(a, m, d.day): (v, since, until) for a, m, d, v, since, until in past}
    assert len(kept) == 8                                   # the changed row, the removed one, A3's six
    assert kept[("A1", "seats", 2)] == (9.0, T0, T1)
    assert kept[("A2", "logins", 3)] == (11.0, T0, T1)
    assert {k for k in kept if k[0] == "A3"} == {("A3", m, d) for m in ("seats", "logins") for d in (1, 2, 3)}
    assert general == []


def test_a_key_repeated_in_its_account_is_reported_at_its_line(ws: Workspace, general: list[int]) -> None:
    load(ws, T0, usage())
    text = usage(accounts=("A2", "A1", "A3"))
    lines = text.splitlines(keepends=True)
    # line 9 (A1 seats day 2) repeated right after it, with another value: the first row wins
    repeated = lines[:9] + ["A1,seats,2024-04-02,50\n"] + lines[9:]
    with pytest.raises(SyncFailed) as info:
        load(ws, T1, "".join(repeated))
    assert [str(p) for p in info.value.report.problems] == [
        'usage.csv:10: day: duplicate row for account "A1", metric "seats" on 2024-04-02']
    assert {(r[3], r[4]) for r in dump(ws)[0] if r[:3] == ("A1", "seats", r[2]) and r[2].day == 2} == {(9.0, T0)}
    # skipped: the first row stays; a bad row keeps its stored row while the account's absent rows go
    bad = "".join(repeated).replace("A1,logins,2024-04-03,11.0", "A1,logins,2024-04-03,many")
    bad = bad.replace("A1,logins,2024-04-02,10.0\n", "")
    report = load(ws, T1, bad, skip_invalid=True)
    assert [str(p) for p in report.problems] == [
        'usage.csv:10: day: duplicate row for account "A1", metric "seats" on 2024-04-02',
        'usage.csv:13: value: "many" is not a number']
    usage_report = report.entities["usage"]
    assert (usage_report.invalid, usage_report.removed, usage_report.written) == (2, 1, 0)
    rows = {(a, m, d.day): v for a, m, d, v, _ in dump(ws)[0]}
    assert rows[("A1", "seats", 2)] == 9.0 and rows[("A1", "logins", 3)] == 11.0
    assert ("A1", "logins", 2) not in rows and len(rows) == 17
    assert general == []


def test_a_grouped_snapshot_removing_too_much_is_refused(ws: Workspace) -> None:
    load(ws, T0, usage())
    with pytest.raises(SyncFailed) as info:
        load(ws, T1, usage(accounts=("A2",)), allow_removal=False)
    assert "refusing to delete 12 of 18 usage rows" in str(info.value)
    assert len(dump(ws)[0]) == 18


@contextmanager
def other_database(tmp_path: Path, db_url: str) -> Iterator[str]:
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
    else:
        with postgres_schema("u") as schema:
            yield schema.url


def test_an_ungrouped_source_falls_back_with_the_same_result(ws: Workspace, tmp_path: Path, db_url: str,
                                                             general: list[int]) -> None:
    steps = [(T0, {}, ("A2", "A1", "A3")), (T1, {}, ("A2", "A1", "A3")),
             (T2, {("A1", "seats", 2): 99.0, ("A2", "logins", 3): None, ("A3", "seats", 1): 1.5}, ("A1", "A3"))]
    for now, changes, accounts in steps:
        load(ws, now, usage(changes, accounts))
    assert general == []
    with other_database(tmp_path, db_url) as url:
        (tmp_path / "ungrouped").mkdir()
        other = Workspace(tmp_path / "ungrouped", url)
        try:
            other.config(CONFIG)
            reports = [load(other, now, usage(changes, accounts, grouped=False)).entities["usage"]
                       for now, changes, accounts in steps]
            assert general                                  # rolled back and written by the general path
            assert [(r.inserted, r.updated, r.removed, r.unchanged) for r in reports] == [
                (18, 0, 0, 0), (0, 0, 0, 18), (0, 2, 6, 10)]
            assert dump(other) == dump(ws)
            assert indexes(other) == indexes(ws) == {"ix_usage_metric_account_day", "ix_usage_synced_at"}
        finally:
            other.close()
