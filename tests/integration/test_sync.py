"""Sync (§4): sources, typed fields, atomicity, skip-invalid, warnings, snapshots, incremental loads.

Each database test runs on SQLite (a temporary file) and, when PLAYBOOK_TEST_POSTGRES_URL is set,
on PostgreSQL in a fresh schema that is dropped afterwards.
"""

from __future__ import annotations

import json
import os
import sqlite3
import textwrap
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.errors import DataError, UserError
from engine.settings import load_settings
from conftest import Db
from engine.sync.progress import rich_progress
from engine.sync.runner import SyncFailed, SyncReport, run_sync
from engine.sync.coerce import CoerceError, coercer

T0 = datetime(2024, 5, 1, 12, 0, 0)
T1 = datetime(2024, 5, 2, 12, 0, 0)
T2 = datetime(2024, 5, 3, 12, 0, 0)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture
def database_url(db_url: str) -> str:
    """A database URL for an empty database: a SQLite file, or a fresh PostgreSQL schema (conftest.db_url)."""
    return db_url


class Workspace:
    """A config.yaml with data files in a temporary folder, and helpers to sync and inspect."""

    def __init__(self, root: Path, database_url: str):
        self.root = root
        self.database_url = database_url
        self._db: Db | None = None

    def write(self, name: str, content: str) -> Path:
        path = self.root / name
        path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")
        return path

    def jsonl(self, name: str, rows: list[dict[str, Any]]) -> Path:
        return self.write(name, "".join(json.dumps(r) + "\n" for r in rows))

    def config(self, body: str, timezone: str = "UTC") -> None:
        self.write("config.yaml", f"timezone: {timezone}\ndatabase: \"{self.database_url}\"\n"
                   + textwrap.dedent(body).lstrip("\n"))

    @property
    def settings(self):
        return load_settings(self.root / "config.yaml", env={})

    @property
    def db(self) -> Db:
        if self._db is None:
            settings = self.settings
            self._db = Db(settings.database_url(), settings.custom_fields())
        return self._db

    def sync(self, now: datetime = T0, **kwargs: Any) -> SyncReport:
        # these tests remove rows of tiny data sets on purpose; the mass-removal guard is tested in tests/security
        kwargs.setdefault("allow_removal", True)
        return run_sync(self.settings, self.db.store, now=now, **kwargs)

    def rows(self, name: str) -> list[dict[str, Any]]:
        """All rows of a table, typed, in key order."""
        table = self.db.schema.entity(name)
        with self.db.engine.connect() as conn:
            result = conn.execute(sa.select(table).order_by(*table.primary_key.columns))
            return [dict(r._mapping) for r in result]

    def by_id(self, table: str) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in self.rows(table)}

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()


@pytest.fixture
def ws(tmp_path: Path, database_url: str):
    workspace = Workspace(tmp_path, database_url)
    yield workspace
    workspace.close()


BASIC = """
    fields:
      accounts: {industry: string, nps: integer, health_score: number, onboarding_done_at: date,
                 vip: boolean, last_login_at: datetime}
      contacts: {locale: string}
    sources:
      - {entity: accounts, csv: accounts.csv}
      - {entity: contacts, jsonl: contacts.jsonl}
      - {entity: goals, csv: goals.csv}
      - {entity: usage, csv: usage.csv}
"""
ACCOUNTS = """
    id,name,arr,seats,renewal_date,industry,nps,health_score,onboarding_done_at,vip,last_login_at
    A1,Acme,120000,50,2024-09-30,manufacturing,9,72.5,2024-02-01,yes,2024-04-30T10:00:00Z
    A2,Globex,8000,5,2025-01-15,retail,,40,,No,
    A3,Initech,,,,,,,,,
"""
CONTACTS = [
    {"id": "C1", "account_id": "A1", "email": "ann@acme.test", "role": "champion", "locale": "fr",
     "unsubscribed": False},
    {"id": "C2", "account_id": "A2", "email": "bob@globex.test", "role": "user"},
]
GOALS = """
    id,account_id,name,metric,direction,baseline,target,current,due_date,status
    G1,A1,Adopt reports,reports,increase,0,10,4,2024-08-01,open
    G2,A2,Cut tickets,tickets,Decrease,50,10,30,,open
"""
USAGE = """
    account_id,metric,day,value
    A1,logins,2024-04-29,10
    A1,logins,2024-04-30,12
    A2,logins,2024-04-30,1
"""


def basic(ws: Workspace, accounts: str = ACCOUNTS) -> None:
    ws.config(BASIC)
    ws.write("accounts.csv", accounts)
    ws.jsonl("contacts.jsonl", CONTACTS)
    ws.write("goals.csv", GOALS)
    ws.write("usage.csv", USAGE)


# --------------------------------------------------------------------------- loading and types

def test_loads_every_source_with_typed_custom_fields(ws: Workspace) -> None:
    basic(ws)
    report = ws.sync()
    assert list(report.entities) == ["accounts", "contacts", "goals", "usage"]
    acc = report.entities["accounts"]
    assert (acc.read, acc.loaded, acc.inserted, acc.updated, acc.removed, acc.invalid) == (3, 3, 3, 0, 0, 0)
    accounts = ws.by_id("accounts")
    a1 = accounts["A1"]
    assert a1["arr"] == 120000.0 and a1["seats"] == 50 and a1["nps"] == 9 and a1["health_score"] == 72.5
    assert a1["renewal_date"] == date(2024, 9, 30) and a1["onboarding_done_at"] == date(2024, 2, 1)
    assert a1["vip"] is True and a1["industry"] == "manufacturing"
    assert a1["last_login_at"] == datetime(2024, 4, 30, 10, 0)
    assert a1["removed_at"] is None and a1["synced_at"] == T0
    assert accounts["A2"]["nps"] is None and accounts["A2"]["vip"] is False
    assert accounts["A3"]["arr"] is None and accounts["A3"]["name"] == "Initech"
    contacts = ws.by_id("contacts")
    assert contacts["C1"]["locale"] == "fr" and contacts["C1"]["unsubscribed"] is False
    assert contacts["C2"]["locale"] is None
    goals = ws.by_id("goals")
    assert goals["G2"]["direction"] == "decrease" and goals["G2"]["due_date"] is None
    usage = ws.rows("usage")
    assert [(u["account_id"], u["day"], u["value"]) for u in usage] == [
        ("A1", date(2024, 4, 29), 10.0), ("A1", date(2024, 4, 30), 12.0), ("A2", date(2024, 4, 30), 1.0)]
    state = {r["entity"]: r for r in ws.rows("sync_state")}
    assert state["accounts"]["rows"] == 3 and state["accounts"]["synced_at"] == T0
    assert set(state) == {"accounts", "contacts", "goals", "usage"}


def test_resync_updates_rows_and_counts(ws: Workspace) -> None:
    basic(ws)
    ws.sync()
    ws.write("accounts.csv", ACCOUNTS.replace("Acme", "Acme Corp") + "    A4,Hooli,1,1,,,,,,,\n")
    acc = ws.sync(now=T1, entities=["accounts"]).entities["accounts"]
    assert (acc.loaded, acc.inserted, acc.updated, acc.unchanged) == (4, 1, 1, 2)
    rows = ws.by_id("accounts")
    assert rows["A1"]["name"] == "Acme Corp"
    # rows that did not change keep the stamp of the sync that wrote their values
    assert (rows["A1"]["synced_at"], rows["A2"]["synced_at"], rows["A4"]["synced_at"]) == (T1, T0, T1)


def test_sql_source_and_relative_sqlite_url(ws: Workspace) -> None:
    warehouse = sqlite3.connect(ws.root / "warehouse.db")
    warehouse.execute("CREATE TABLE usage_daily (account_id TEXT, metric TEXT, day TEXT, value REAL)")
    warehouse.executemany("INSERT INTO usage_daily VALUES (?, ?, ?, ?)",
                          [("A1", "logins", "2024-04-30", 7), ("A1", "seats_used", "2024-04-30", 3.5)])
    warehouse.commit()
    warehouse.close()
    ws.config("""
        sources:
          - {entity: accounts, csv: accounts.csv}
          - {entity: usage, sql: {url: "sqlite:///warehouse.db",
                                  query: "select account_id, metric, day, value from usage_daily"}}
    """)
    ws.write("accounts.csv", "id,name\nA1,Acme\n")
    report = ws.sync()
    assert report.entities["usage"].loaded == 2
    assert {(u["metric"], u["value"]) for u in ws.rows("usage")} == {("logins", 7.0), ("seats_used", 3.5)}


def test_several_sources_feed_one_entity_and_keep_columns_they_do_not_name(ws: Workspace) -> None:
    ws.config("""
        fields:
          accounts: {nps: integer}
        sources:
          - {entity: accounts, csv: accounts.csv}
          - {entity: accounts, jsonl: scores.jsonl}
    """)
    ws.write("accounts.csv", "id,name,arr\nA1,Acme,100\nA2,Globex,200\n")
    ws.jsonl("scores.jsonl", [{"id": "A1", "nps": 8}, {"id": "A2", "nps": "3"}])
    ws.sync()
    accounts = ws.by_id("accounts")
    assert (accounts["A1"]["name"], accounts["A1"]["arr"], accounts["A1"]["nps"]) == ("Acme", 100.0, 8)
    assert accounts["A2"]["nps"] == 3
    # Both sources together are the snapshot: a row in only one of them is present.
    ws.jsonl("scores.jsonl", [{"id": "A1", "nps": 9}])
    ws.sync(now=T1)
    accounts = ws.by_id("accounts")
    assert accounts["A2"]["removed_at"] is None and accounts["A2"]["nps"] == 3 and accounts["A1"]["nps"] == 9


def test_datetime_without_offset_is_read_in_the_configured_time_zone(ws: Workspace) -> None:
    ws.config("sources:\n  - {entity: accounts, csv: accounts.csv}\n", timezone="Asia/Tokyo")
    ws.write("accounts.csv", """
        id,created_at
        A1,2024-05-01T09:00:00
        A2,2024-05-01 09:00
        A3,2024-05-01T09:00:00+02:00
        A4,2024-05-01T09:00:00Z
        A5,2024-05-01
    """)
    ws.sync()
    created = {k: v["created_at"] for k, v in ws.by_id("accounts").items()}
    assert created == {"A1": datetime(2024, 5, 1, 0, 0), "A2": datetime(2024, 5, 1, 0, 0),
                       "A3": datetime(2024, 5, 1, 7, 0), "A4": datetime(2024, 5, 1, 9, 0),
                       "A5": datetime(2024, 4, 30, 15, 0)}


# --------------------------------------------------------------------------- atomicity and messages

def test_one_bad_row_changes_nothing_of_its_entity(ws: Workspace) -> None:
    basic(ws)
    ws.sync()
    before = ws.rows("accounts")
    ws.write("accounts.csv", """
        id,name,arr
        A1,Acme Renamed,120000
        A2,Globex,abc
    """)
    ws.jsonl("contacts.jsonl", CONTACTS[:1] + [{**CONTACTS[1], "name": "Bob"}])
    with pytest.raises(DataError) as info:
        ws.sync(now=T1)
    assert str(info.value) == 'accounts.csv:3: arr: "abc" is not a number'
    assert ws.rows("accounts") == before  # no rename, no removal of A3, same stamps
    # Other entities still synced and were committed.
    assert ws.by_id("contacts")["C2"]["name"] == "Bob"
    report = info.value.report
    assert isinstance(info.value, SyncFailed) and report.failed == ["accounts"]
    assert report.entities["accounts"].failed and report.entities["accounts"].loaded == 0
    assert not report.entities["contacts"].failed
    state = {r["entity"]: r["synced_at"] for r in ws.rows("sync_state")}
    assert state["accounts"] == T0 and state["contacts"] == T1


def test_every_bad_row_is_listed_with_an_exact_message(ws: Workspace) -> None:
    ws.config("""
        fields:
          accounts: {nps: integer, vip: boolean, started: datetime}
        sources:
          - {entity: accounts, csv: accounts.csv}
    """)
    ws.write("accounts.csv", """
        id,name,arr,seats,renewal_date,nps,vip,started
        A1,Acme,"1,000",2.5,2024/09/30,x,maybe,soon
        ,No id,1,1,,,,
        A1,Acme again,1,1,,,,
        A2,Good,1,1,2024-02-30,7.0,YES,2024-05-01T08:00
    """)
    with pytest.raises(DataError) as info:
        ws.sync()
    assert str(info.value).splitlines() == [
        'accounts.csv:2: arr: "1,000" is not a number (use a dot for decimals and no thousands separators)',
        'accounts.csv:2: seats: "2.5" is not a whole number',
        'accounts.csv:2: renewal_date: "2024/09/30" is not a date (use YYYY-MM-DD)',
        'accounts.csv:2: nps: "x" is not an integer',
        'accounts.csv:2: vip: "maybe" is not a boolean (use true/false, yes/no or 1/0)',
        'accounts.csv:2: started: "soon" is not a date-time (use ISO 8601, e.g. 2024-05-01T09:30:00+02:00)',
        "accounts.csv:3: id: missing (every accounts row needs an id)",
        'accounts.csv:5: renewal_date: "2024-02-30" is not a date (use YYYY-MM-DD)',
    ]
    assert ws.rows("accounts") == []


def test_duplicate_keys_within_a_snapshot(ws: Workspace) -> None:
    ws.config("""
        sources:
          - {entity: accounts, csv: accounts.csv}
          - {entity: accounts, jsonl: more.jsonl}
          - {entity: usage, csv: usage.csv}
    """)
    ws.write("accounts.csv", "id,name\nA1,Acme\nA2,Globex\nA1,Acme again\n")
    ws.jsonl("more.jsonl", [{"id": "A2"}, {"id": "A3"}, {"id": "A2"}])
    ws.write("usage.csv", "account_id,metric,day,value\nA1,logins,2024-04-30,1\nA1,logins,2024-04-30,2\n")
    with pytest.raises(DataError) as info:
        ws.sync()
    assert str(info.value).splitlines() == [
        'accounts.csv:4: id: duplicate id "A1" (already on line 2)',
        'more.jsonl:3: id: duplicate id "A2" (already on line 1)',
        'usage.csv:2: account_id: unknown account "A1"',
        'usage.csv:3: account_id: unknown account "A1"',
    ]
    # usage validated against the accounts in the database (none: accounts failed).
    assert "usage" in info.value.report.failed


def test_duplicate_usage_rows(ws: Workspace) -> None:
    ws.config("sources:\n  - {entity: accounts, csv: accounts.csv}\n  - {entity: usage, csv: usage.csv}\n")
    ws.write("accounts.csv", "id\nA1\n")
    ws.write("usage.csv", "account_id,metric,day,value\nA1,logins,2024-04-30,1\nA1,logins,2024-04-29,1\n"
                          "A1,logins,2024-04-30,2\n")
    with pytest.raises(DataError) as info:
        ws.sync()
    assert str(info.value) == 'usage.csv:4: day: duplicate row for account "A1", metric "logins" on 2024-04-30'


def test_duplicates_across_chunks_are_found_by_the_database(ws: Workspace, monkeypatch) -> None:
    # Chunks of 2 rows: a key repeated in a later chunk is caught by the keys the sync named so far,
    # reported in line order, counted exactly, and the first row wins; another source may repeat it.
    monkeypatch.setattr("engine.sync.runner.CHUNK", 2)
    ws.config("""
        sources:
          - {entity: accounts, csv: accounts.csv}
          - {entity: accounts, csv: more.csv}
          - {entity: usage, csv: usage.csv}
    """)
    ws.write("accounts.csv", "id,name\nA1,Acme\nA2,Globex\nA3,Initech\nA1,Acme again\nA4,Hooli\nA2,x\n")
    ws.write("more.csv", "id,name\nA1,Acme Corp\nA5,Umbrella\n")
    ws.write("usage.csv", "account_id,metric,day,value\nA1,logins,2024-04-29,1\nA1,logins,2024-04-30,2\n"
                          "A2,logins,2024-04-30,3\nA1,logins,2024-04-29,4\n")
    report = ws.sync(skip_invalid=True)
    assert [str(p) for p in report.problems] == [
        'accounts.csv:5: id: duplicate id "A1" (already on line 2)',
        'accounts.csv:7: id: duplicate id "A2" (already on line 3)',
        'usage.csv:5: day: duplicate row for account "A1", metric "logins" on 2024-04-29',
    ]
    accounts = report.entities["accounts"]
    assert (accounts.read, accounts.loaded, accounts.invalid, accounts.inserted) == (8, 6, 2, 5)
    names = {r["id"]: r["name"] for r in ws.rows("accounts")}
    assert names == {"A1": "Acme Corp", "A2": "Globex", "A3": "Initech", "A4": "Hooli", "A5": "Umbrella"}
    usage = {(r["account_id"], r["day"]): r["value"] for r in ws.rows("usage")}
    assert usage == {("A1", date(2024, 4, 29)): 1, ("A1", date(2024, 4, 30)): 2, ("A2", date(2024, 4, 30)): 3}
    assert report.entities["usage"].invalid == 1

    # Without skip_invalid the entity fails and changes nothing, and still finds every duplicate.
    ws.write("accounts.csv", "id,name\nB1,x\nB2,x\nB1,x\nB3,x\nB2,x\n")
    ws.write("usage.csv", "account_id,metric,day,value\n")
    with pytest.raises(SyncFailed) as info:
        ws.sync(now=T1, entities=["accounts"])
    assert [str(p) for p in info.value.report.problems] == [
        'accounts.csv:4: id: duplicate id "B1" (already on line 2)',
        'accounts.csv:6: id: duplicate id "B2" (already on line 3)',
    ]
    assert info.value.report.entities["accounts"].invalid == 2
    assert {r["id"] for r in ws.rows("accounts")} == {"A1", "A2", "A3", "A4", "A5"}


def test_a_key_repeated_in_one_chunk_or_across_column_sets_keeps_its_first_row(ws: Workspace) -> None:
    # Three rows of one key in one chunk: the first row is kept, both later ones name its line. JSON lines
    # whose keys differ form separate sets of fields within a chunk: still the first line of the key wins.
    ws.config("""
        sources:
          - {entity: accounts, csv: accounts.csv}
          - {entity: accounts, jsonl: more.jsonl}
    """)
    ws.write("accounts.csv", "id,name\nA1,first\nA1,second\nA2,x\nA1,third\n")
    ws.jsonl("more.jsonl", [{"id": "B1", "name": "a"}, {"id": "B2"}, {"id": "B2", "name": "b"},
                            {"id": "B1", "arr": 5}])
    report = ws.sync(skip_invalid=True)
    assert [str(p) for p in report.problems] == [
        'accounts.csv:3: id: duplicate id "A1" (already on line 2)',
        'accounts.csv:5: id: duplicate id "A1" (already on line 2)',
        'more.jsonl:3: id: duplicate id "B2" (already on line 2)',
        'more.jsonl:4: id: duplicate id "B1" (already on line 1)',
    ]
    rows = {r["id"]: (r["name"], r["arr"]) for r in ws.rows("accounts")}
    assert rows == {"A1": ("first", None), "A2": ("x", None), "B1": ("a", None), "B2": (None, None)}
    assert (report.entities["accounts"].loaded, report.entities["accounts"].invalid) == (4, 4)


def test_unknown_and_removed_accounts(ws: Workspace) -> None:
    basic(ws)
    ws.sync()
    ws.write("accounts.csv", "id,name\nA1,Acme\nA3,Initech\n")
    ws.jsonl("contacts.jsonl", CONTACTS + [{"id": "C3", "account_id": "A999"}, {"id": "C4"}])
    with pytest.raises(DataError) as info:
        ws.sync(now=T1, entities=["accounts", "contacts"])
    assert str(info.value).splitlines() == [
        'contacts.jsonl:3: account_id: unknown account "A999"',
        "contacts.jsonl:4: account_id: missing (every contacts row needs an account_id)",
    ]


def test_a_row_with_a_bad_value_and_an_unknown_account_reports_both(ws: Workspace) -> None:
    basic(ws)
    ws.sync()
    ws.jsonl("contacts.jsonl", CONTACTS + [{"id": "C3", "account_id": "A999", "created_at": "soon"},
                                           {"id": "C4", "account_id": "A999"}, {"id": "C4", "account_id": "A1"}])
    with pytest.raises(DataError) as info:
        ws.sync(now=T1, entities=["contacts"])
    assert str(info.value).splitlines() == [
        'contacts.jsonl:3: created_at: "soon" is not a date-time (use ISO 8601, e.g. 2024-05-01T09:30:00+02:00)',
        'contacts.jsonl:3: account_id: unknown account "A999"',
        'contacts.jsonl:4: account_id: unknown account "A999"',
    ]


def test_rows_of_a_removed_account_load_and_stay_removed(ws: Workspace) -> None:
    basic(ws)
    ws.sync()
    ws.write("accounts.csv", "id,name\nA1,Acme\nA3,Initech\n")     # A2 leaves the snapshot
    ws.sync(now=T1)                                                  # contacts still list A2's contact
    contacts = ws.by_id("contacts")
    a2 = [c for c in contacts.values() if c["account_id"] == "A2"]
    assert a2 and all(c["removed_at"] == T1 for c in a2)
    assert all(c["removed_at"] is None for c in contacts.values() if c["account_id"] != "A2")


def test_skip_invalid_loads_good_rows_and_reports_the_rest(ws: Workspace) -> None:
    basic(ws)
    ws.sync()
    ws.write("accounts.csv", """
        id,name,arr
        A1,Acme,1
        A2,Globex,abc
        A4,Hooli,5
    """)
    ws.jsonl("contacts.jsonl", CONTACTS + [{"id": "C3", "account_id": "A999"}])
    report = ws.sync(now=T1, skip_invalid=True)
    acc = report.entities["accounts"]
    assert not report.failed and (acc.loaded, acc.invalid, acc.removed) == (2, 1, 1)
    assert [str(p) for p in report.problems] == ['accounts.csv:3: arr: "abc" is not a number',
                                                 'contacts.jsonl:3: account_id: unknown account "A999"']
    accounts = ws.by_id("accounts")
    assert set(accounts) == {"A1", "A2", "A3", "A4"}
    # A2 is in the snapshot (its row is only invalid): kept as it was, not removed.
    assert accounts["A2"]["removed_at"] is None and accounts["A2"]["arr"] == 8000.0
    assert accounts["A3"]["removed_at"] == T1 and accounts["A4"]["arr"] == 5.0
    assert "C3" not in ws.by_id("contacts")


def test_declared_values_metrics_and_time_zones_are_row_errors_that_skip_invalid_skips(ws: Workspace) -> None:
    ws.config("""
        values:
          contacts.role: [champion, decision_maker, admin, user]
          accounts.lifecycle_stage: [onboarding, adoption, expansion, renewal]
        metrics: [logins, active_users]
        sources:
          - {entity: accounts, csv: accounts.csv}
          - {entity: contacts, jsonl: contacts.jsonl}
          - {entity: usage, csv: usage.csv}
    """)
    ws.write("accounts.csv", """
        id,name,lifecycle_stage,timezone
        A1,Acme,adoption,Asia/Tokyo
        A2,Globex,,
        A3,Initech,Renewal,
        A4,Hooli,expansion,JST
    """)
    ws.jsonl("contacts.jsonl", [{"id": "C1", "account_id": "A1", "role": "champion", "timezone": "Europe/Paris"},
                                {"id": "C2", "account_id": "A1", "role": "チャンピオン"},
                                {"id": "C3", "account_id": "A2"},
                                {"id": "C4", "account_id": "A2", "role": "user", "timezone": "tokyo"}])
    ws.write("usage.csv", """
        account_id,metric,day,value
        A1,logins,2024-04-30,3
        A1,login,2024-04-30,4
        A2,active_users,2024-04-30,1
    """)
    with pytest.raises(SyncFailed) as info:
        ws.sync(entities=["accounts"])
    assert [str(d) for d in info.value.diagnostics] == [
        'accounts.csv:4: lifecycle_stage: "Renewal" is not one of onboarding, adoption, expansion, renewal '
        '(did you mean "renewal"?)',
        'accounts.csv:5: timezone: "JST" is not an IANA time zone (write "Asia/Tokyo")']
    assert ws.rows("accounts") == []                            # atomic: nothing of the entity changed
    report = ws.sync(now=T1, skip_invalid=True)
    assert not report.failed and [str(p) for p in report.problems] == [
        'accounts.csv:4: lifecycle_stage: "Renewal" is not one of onboarding, adoption, expansion, renewal '
        '(did you mean "renewal"?)',
        'accounts.csv:5: timezone: "JST" is not an IANA time zone (write "Asia/Tokyo")',
        'contacts.jsonl:2: role: "チャンピオン" is not one of champion, decision_maker, admin, user',
        'contacts.jsonl:4: timezone: "tokyo" is not an IANA time zone (write "Asia/Tokyo")',
        'usage.csv:3: metric: "login" is not a declared metric (did you mean "logins"?)']
    assert set(ws.by_id("accounts")) == {"A1", "A2"} and set(ws.by_id("contacts")) == {"C1", "C3"}
    assert sorted((r["metric"], r["value"]) for r in ws.rows("usage")) == [("active_users", 1.0), ("logins", 3.0)]


def test_a_source_that_cannot_be_read_fails_its_entity_even_with_skip_invalid(ws: Workspace) -> None:
    basic(ws)
    ws.sync()
    (ws.root / "accounts.csv").unlink()
    ws.write("goals.csv", "id,name\nG1,x\n")
    with pytest.raises(DataError) as info:
        ws.sync(now=T1, skip_invalid=True)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("accounts.csv: file not found (looked for ")
    assert lines[1].startswith("goals.csv: no `account_id` column (every goals row needs an account_id)")
    assert all(r["removed_at"] is None for r in ws.rows("accounts"))
    assert len(ws.rows("goals")) == 2


def test_unreadable_rows(ws: Workspace) -> None:
    ws.config("sources:\n  - {entity: accounts, jsonl: accounts.jsonl}\n  - {entity: accounts, csv: a.csv}\n")
    ws.write("accounts.jsonl", '{"id": "A1"}\n\n{"id": \n[1, 2]\n')
    ws.write("a.csv", "id,name\nA2,x,y\nA3\n")
    with pytest.raises(DataError) as info:
        ws.sync()
    assert str(info.value).splitlines() == [
        "accounts.jsonl:3: not valid JSON: Expecting value (column 8)",
        "accounts.jsonl:4: expected a JSON object, got a list",
        "a.csv:2: row has 3 values but the header has 2 columns",
    ]


# --------------------------------------------------------------------------- columns

def test_unknown_columns_are_reported_once_per_source_and_ignored(ws: Workspace) -> None:
    ws.config("""
        fields:
          accounts: {nps: integer}
        sources:
          - {entity: accounts, csv: data/accounts.csv}
          - {entity: accounts, jsonl: data/more.jsonl}
          - {entity: usage, csv: data/usage.csv}
    """)
    (ws.root / "data").mkdir()
    ws.write("data/accounts.csv", "id,name,foo,nsp\nA1,Acme,1,2\nA2,Globex,3,4\n")
    ws.jsonl("data/more.jsonl", [{"id": "A3", "foo": 1}, {"id": "A4", "foo": 2, "colour": True}])
    ws.write("data/usage.csv", "account_id,metric,day,value,source\nA1,logins,2024-04-30,1,x\n")
    report = ws.sync()
    assert [str(w) for w in report.warnings] == [
        "data/accounts.csv: column `foo` is not a declared field of accounts; ignored "
        "(declare it under fields.accounts in config.yaml)",
        "data/accounts.csv: column `nsp` is not a declared field of accounts; ignored "
        "(did you mean `nps`? or declare it under fields.accounts in config.yaml)",
        "data/more.jsonl: column `foo` is not a declared field of accounts; ignored "
        "(declare it under fields.accounts in config.yaml)",
        "data/more.jsonl: column `colour` is not a declared field of accounts; ignored "
        "(declare it under fields.accounts in config.yaml)",
        "data/usage.csv: column `source` is not a field of usage; ignored "
        "(usage rows have account_id, metric, day and value)",
    ]
    assert len(ws.rows("accounts")) == 4


def test_missing_optional_columns_are_empty(ws: Workspace) -> None:
    ws.config("fields:\n  accounts: {nps: integer}\nsources:\n  - {entity: accounts, csv: accounts.csv}\n")
    ws.write("accounts.csv", "id\nA1\n")
    report = ws.sync()
    assert report.warnings == [] and ws.by_id("accounts")["A1"]["nps"] is None


def test_excel_style_csv_with_bom_crlf_blank_lines_and_padded_header(ws: Workspace) -> None:
    ws.config("sources:\n  - {entity: accounts, csv: accounts.csv}\n")
    (ws.root / "accounts.csv").write_bytes(
        "\ufeffid , name\r\nA1,Acmé\r\n\r\n\"A2\",\"Multi\r\nline\"\r\nA3,Last\r\n".encode())
    ws.sync()
    assert {k: v["name"] for k, v in ws.by_id("accounts").items()} == {
        "A1": "Acmé", "A2": "Multi\r\nline", "A3": "Last"}
    ws.write("accounts.csv", "id,name\nA1,x\nA2,\"y\nz\"\nA3,abc,1\n")
    with pytest.raises(DataError, match=r"accounts.csv:5: row has 3 values"):
        ws.sync(now=T1)  # the line number is where the row starts, after a multi-line value


def test_a_file_that_is_not_utf8_fails_its_entity(ws: Workspace) -> None:
    ws.config("sources:\n  - {entity: accounts, csv: accounts.csv}\n")
    (ws.root / "accounts.csv").write_bytes("id,name\nA1,Acm\xe9\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        ws.sync(skip_invalid=True)
    assert str(info.value) == ("accounts.csv:2: the file is not UTF-8 text (save or export it as UTF-8, or name "
                               "its encoding in the source, e.g. `encoding: cp932`)")


@pytest.mark.parametrize("encoding", ["cp932", "utf-16", "latin-1", "utf-8-sig"])
def test_a_source_reads_the_encoding_it_names(ws: Workspace, encoding: str) -> None:
    name = "Café" if encoding == "latin-1" else "株式会社アクメ"
    ws.config(f"sources:\n  - {{entity: accounts, csv: {{path: accounts.csv, encoding: {encoding}}}}}\n"
              f"  - {{entity: contacts, jsonl: {{path: contacts.jsonl, encoding: {encoding}}}}}\n")
    (ws.root / "accounts.csv").write_bytes(f"id,name\r\nA1,{name}\r\nA2,\"two\nlines\"\r\n".encode(encoding))
    (ws.root / "contacts.jsonl").write_bytes(
        (json.dumps({"id": "C1", "account_id": "A1", "name": name}, ensure_ascii=False) + "\n").encode(encoding))
    ws.sync()
    assert {k: v["name"] for k, v in ws.by_id("accounts").items()} == {"A1": name, "A2": "two\nlines"}
    assert ws.by_id("contacts")["C1"]["name"] == name


def test_bytes_that_do_not_decode_name_the_encoding_and_the_line(ws: Workspace) -> None:
    ws.config("sources:\n  - {entity: accounts, csv: {path: accounts.csv, encoding: cp932}}\n")
    (ws.root / "accounts.csv").write_bytes("id,name\nA1,アクメ\nA2,".encode("cp932") + b"\x82\xff\n")
    with pytest.raises(DataError) as info:
        ws.sync(skip_invalid=True)
    assert str(info.value) == ("accounts.csv:3: the file is not cp932 text (is `encoding: cp932` the file's "
                               "encoding? name the right one, or save the file as cp932)")
    assert ws.rows("accounts") == []


def test_a_csv_source_reads_dates_and_numbers_as_it_writes_them(ws: Workspace) -> None:
    ws.config("""
        fields:
          accounts: {nps: integer, health_score: number, onboarding_done_at: date, last_login: datetime}
        sources:
          - entity: accounts
            csv: {path: accounts.csv, date_format: "%d.%m.%Y", decimal: ",", thousands: "."}
          - {entity: usage, csv: usage.csv}
    """, timezone="Europe/Berlin")
    ws.write("accounts.csv", """
        id,arr,nps,health_score,onboarding_done_at,last_login,renewal_date
        A1,"12.000,50",1.000,"87,5",31.12.2025,01.02.2026 09:30,2026-12-01
        A2,"-3,25",-7,"0,5",1.2.2026,01.02.2026,
    """)
    ws.write("usage.csv", "account_id,metric,day,value\nA1,logins,2026-02-01,1.5\n")
    ws.sync()
    a1, a2 = ws.by_id("accounts")["A1"], ws.by_id("accounts")["A2"]
    assert (a1["arr"], a1["nps"], a1["health_score"]) == (12000.5, 1000, 87.5)
    assert a1["onboarding_done_at"] == date(2025, 12, 31) and a1["renewal_date"] == date(2026, 12, 1)
    assert a1["last_login"] == datetime(2026, 2, 1, 8, 30)          # Berlin, naive: read in the config zone
    assert (a2["arr"], a2["nps"], a2["health_score"]) == (-3.25, -7, 0.5)
    assert a2["onboarding_done_at"] == date(2026, 2, 1) and a2["last_login"] == datetime(2026, 1, 31, 23, 0)
    assert ws.rows("usage")[0]["value"] == 1.5                      # another source keeps the decimal point


def test_values_that_do_not_fit_the_source_formats_are_row_problems(ws: Workspace) -> None:
    ws.config("""
        fields:
          accounts: {nps: integer, onboarding_done_at: date, last_login: datetime}
        sources:
          - {entity: accounts, csv: {path: accounts.csv, date_format: "%Y/%m/%d", thousands: ","}}
    """)
    ws.write("accounts.csv", """
        id,arr,nps,onboarding_done_at,last_login
        A1,"1,5",1,2026/02/30,2026/02/01 25:00
        A2,"12,000",,2026/02/01 10:00,
        A3,"12,000.5","1,000.5",,
    """)
    with pytest.raises(DataError) as info:
        ws.sync()
    assert str(info.value).splitlines() == [
        'accounts.csv:2: arr: "1,5" is not a number (this source writes decimals with "." and thousands with ",")',
        'accounts.csv:2: onboarding_done_at: "2026/02/30" is not a date (use %Y/%m/%d or YYYY-MM-DD)',
        'accounts.csv:2: last_login: "2026/02/01 25:00" is not a date-time (use %Y/%m/%d with an optional '
        'HH:MM[:SS] or ISO 8601)',
        'accounts.csv:3: onboarding_done_at: "2026/02/01 10:00" is not a date (use %Y/%m/%d or YYYY-MM-DD)',
        'accounts.csv:4: nps: "1,000.5" is not an integer (this source writes decimals with "." and thousands '
        'with ",")',
    ]


# --------------------------------------------------------------------------- snapshots

def test_snapshot_marks_absent_rows_removed_and_cascades_to_the_account_s_rows(ws: Workspace) -> None:
    basic(ws)
    ws.sync()
    ws.write("accounts.csv", "id,name\nA1,Acme\nA3,Initech\n")
    report = ws.sync(now=T1, entities=["accounts"])
    acc = report.entities["accounts"]
    assert acc.removed == 1 and acc.cascaded == {"contacts": 1, "goals": 1}
    assert ws.by_id("accounts")["A2"]["removed_at"] == T1
    assert ws.by_id("contacts")["C2"]["removed_at"] == T1 and ws.by_id("contacts")["C1"]["removed_at"] is None
    assert ws.by_id("goals")["G2"]["removed_at"] == T1 and ws.by_id("goals")["G1"]["removed_at"] is None
    # The account reappears: it is present again, and so are its contacts once they sync.
    ws.write("accounts.csv", ACCOUNTS)
    ws.sync(now=T2)
    assert all(r["removed_at"] is None for t in ("accounts", "contacts", "goals") for r in ws.rows(t))
    assert ws.by_id("accounts")["A2"]["synced_at"] == T2


def test_contacts_snapshot_marks_absent_contacts_removed(ws: Workspace) -> None:
    basic(ws)
    ws.sync()
    ws.jsonl("contacts.jsonl", CONTACTS[:1])
    assert ws.sync(now=T1, entities=["contacts"]).entities["contacts"].removed == 1
    assert ws.by_id("contacts")["C2"]["removed_at"] == T1


def test_full_usage_snapshot_deletes_absent_rows(ws: Workspace) -> None:
    basic(ws)
    ws.sync()
    ws.write("usage.csv", "account_id,metric,day,value\nA1,logins,2024-04-30,13\n")
    report = ws.sync(now=T1, entities=["usage"])
    assert report.entities["usage"].removed == 2
    assert [(u["account_id"], u["value"]) for u in ws.rows("usage")] == [("A1", 13.0)]


def test_two_syncs_at_the_same_time_still_remove_absent_rows(ws: Workspace) -> None:
    basic(ws)
    ws.sync()
    ws.write("accounts.csv", "id\nA1\n")
    ws.sync(entities=["accounts"])  # same `now` as the first sync
    assert {k for k, v in ws.by_id("accounts").items() if v["removed_at"] is None} == {"A1"}


# --------------------------------------------------------------------------- incremental

def test_incremental_sql_source_binds_since_and_only_upserts(ws: Workspace) -> None:
    path = ws.root / "crm.db"
    crm = sqlite3.connect(path)
    crm.execute("CREATE TABLE accounts (id TEXT, name TEXT, updated_at TEXT)")
    crm.executemany("INSERT INTO accounts VALUES (?, ?, ?)",
                    [("A1", "Acme", "2024-04-01 00:00:00"), ("A2", "Globex", "2024-04-02 00:00:00")])
    crm.commit()
    ws.config(f"""
        sources:
          - entity: accounts
            sql: {{url: "sqlite:///{path}", query: "select id, name from accounts where updated_at > :since"}}
    """)
    assert ws.settings.sources[0].incremental
    first = ws.sync(now=T0)
    assert first.entities["accounts"].loaded == 2 and first.entities["accounts"].mode == "incremental"
    # Changes after the last sync time are loaded; untouched rows stay (and are not removed).
    crm.execute("UPDATE accounts SET name = 'Globex 2', updated_at = '2024-05-01 13:00:00' WHERE id = 'A2'")
    crm.execute("INSERT INTO accounts VALUES ('A3', 'Initech', '2024-05-01 11:00:00')")  # before T0: not seen
    crm.commit()
    crm.close()
    second = ws.sync(now=T1).entities["accounts"]
    assert (second.loaded, second.inserted, second.updated, second.removed) == (1, 0, 1, 0)
    accounts = ws.by_id("accounts")
    assert set(accounts) == {"A1", "A2"} and accounts["A2"]["name"] == "Globex 2"
    assert all(a["removed_at"] is None for a in accounts.values())


def test_failing_query_names_the_source_and_hides_the_password(ws: Workspace) -> None:
    ws.config("""
        sources:
          - {entity: usage, sql: {url: "postgresql+psycopg://user:s3cret@127.0.0.1:1/x", query: "select 1"}}
    """)
    with pytest.raises(DataError) as info:
        ws.sync()
    text = str(info.value)
    assert text.startswith("sql:usage: the query failed: ") and "s3cret" not in text


# --------------------------------------------------------------------------- progress and options

def test_progress_callback_and_entity_selection(ws: Workspace) -> None:
    basic(ws)
    calls: list[tuple[str, int, int | None]] = []
    report = ws.sync(entities=["usage", "accounts"], progress=lambda *a: calls.append(a))
    assert list(report.entities) == ["accounts", "usage"]
    assert calls[0] == ("accounts", 0, 3) and ("accounts", 3, 3) in calls and calls[-1] == ("usage", 3, 3)
    with pytest.raises(UserError, match="unknown entity `acounts` \\(did you mean `accounts`\\?\\)"):
        ws.sync(entities=["acounts"])


def test_rich_progress_is_a_no_op_without_a_terminal() -> None:
    with rich_progress(enabled=False) as progress:
        progress("accounts", 1, None)
    with rich_progress(enabled=True) as progress:
        progress("accounts", 5, 3)
        progress("accounts", 10, None)


# --------------------------------------------------------------------------- coercion

UTC = __import__("zoneinfo").ZoneInfo("UTC")


@pytest.mark.parametrize("ftype, raw, expected", [
    ("boolean", "Yes", True), ("boolean", "NO", False), ("boolean", "1", True), ("boolean", "0", False),
    ("boolean", "TRUE", True), ("boolean", " false ", False), ("boolean", 1, True), ("boolean", "", None),
    ("integer", "12", 12), ("integer", "-3", -3), ("integer", "12.0", 12), ("integer", 7.0, 7),
    ("integer", " 4 ", 4), ("number", "1e3", 1000.0), ("number", ".5", 0.5), ("number", 3, 3.0),
    ("string", 12, "12"), ("string", "  ", None), ("string", " x ", " x "),
    ("date", "2024-02-29", date(2024, 2, 29)), ("date", datetime(2024, 1, 2), date(2024, 1, 2)),
    ("datetime", "2024-05-01T10:00:00+02:00", datetime(2024, 5, 1, 8, 0)),
])
def test_coercion_accepts(ftype: str, raw: Any, expected: Any) -> None:
    assert coercer(ftype, UTC)(raw) == expected


@pytest.mark.parametrize("ftype, raw, message", [
    ("boolean", "maybe", '"maybe" is not a boolean (use true/false, yes/no or 1/0)'),
    ("boolean", 2, "2 is not a boolean (use true/false, yes/no or 1/0)"),
    ("integer", True, "True is not an integer"),
    ("integer", 2.5, "2.5 is not a whole number"),
    ("number", "nan", '"nan" is not a number'),
    ("number", "1_000", '"1_000" is not a number'),
    ("number", [1], "expected a number, got a list"),
    ("date", "20240501", '"20240501" is not a date (use YYYY-MM-DD)'),
    ("date", datetime(2024, 1, 2, 3, 4), '"2024-01-02T03:04:00" is not a date (it has a time of day)'),
    ("string", {"a": 1}, "expected a text value, got an object"),
])
def test_coercion_rejects(ftype: str, raw: Any, message: str) -> None:
    with pytest.raises(CoerceError) as info:
        coercer(ftype, UTC)(raw)
    assert str(info.value) == message


def test_a_sync_looks_up_the_accounts_its_rows_name_not_every_account(tmp_path: Path) -> None:
    """Whether a row's account exists is asked of the database once per chunk: a contacts sync beside 30,000
    accounts allocates no more than beside 300 (reading every account id into memory took 2.6 MB more)."""
    import tracemalloc

    peaks = {}
    for n in (300, 30_000):
        ws = Workspace(tmp_path / f"ws{n}", f"sqlite:///{tmp_path / f'ws{n}.db'}")
        ws.root.mkdir()
        ws.config("sources:\n  - {entity: accounts, csv: accounts.csv}\n  - {entity: contacts, csv: contacts.csv}\n")
        ws.write("accounts.csv", "id,name\n" + "".join(f"A{i},Account {i}\n" for i in range(n)))
        ws.write("contacts.csv", "id,account_id,email\n" + "".join(f"C{i},A{i},c{i}@x.test\n" for i in range(5))
                 + "C9,A-gone,c9@x.test\n")
        try:
            ws.sync(entities=["accounts"])
            tracemalloc.start()
            report = ws.sync(entities=["contacts"], skip_invalid=True)
            peaks[n] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        finally:
            ws.close()
        contacts = report.entities["contacts"]
        assert (contacts.loaded, contacts.invalid) == (5, 1)
        assert [p.message for p in contacts.problems] == ['account_id: unknown account "A-gone"']
    assert peaks[30_000] - peaks[300] < 1_000_000, peaks
