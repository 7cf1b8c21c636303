"""Field history (§18): every sync keeps the versions it replaces; the data as of any moment reads back.

On SQLite and, when PLAYBOOK_TEST_POSTGRES_URL is set, PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.store.field_history import as_of, at_moments, moments_table, versions
from engine.sync.runner import SyncFailed
from conftest import Db
from test_sync import Workspace

T0 = datetime(2024, 5, 1, 6, 0)
T1 = T0 + timedelta(days=1)
T2 = T0 + timedelta(days=2)
T3 = T0 + timedelta(days=3)

CONFIG = """
    fields:
      accounts: {health_score: number}
    sources:
      - {entity: accounts, csv: accounts.csv}
      - {entity: contacts, csv: contacts.csv}
      - {entity: usage, csv: usage.csv}
"""


@pytest.fixture
def ws(tmp_path: Path, db_url: str):
    workspace = Workspace(tmp_path, db_url)
    workspace.config(CONFIG)
    yield workspace
    workspace.close()


def load(ws: Workspace, now: datetime, accounts: str, contacts: str = "id,account_id,email\n",
         usage: str = "account_id,metric,day,value\n", **kwargs: Any):
    ws.write("accounts.csv", accounts)
    ws.write("contacts.csv", contacts)
    ws.write("usage.csv", usage)
    return ws.sync(now=now, **kwargs)


def read(ws: Workspace, query: Any) -> list[dict[str, Any]]:
    with ws.db.store.read() as tx:
        return [dict(r._mapping) for r in tx.conn.execute(query)]


def accounts_at(ws: Workspace, moment: datetime) -> dict[str, tuple[Any, ...]]:
    """id -> (name, health_score, removed) as of `moment`."""
    return {r["id"]: (r["name"], r["health_score"], r["removed_at"] is not None)
            for r in read(ws, as_of(ws.db.schema, "accounts", moment))}


def history_rows(ws: Workspace, entity: str) -> int:
    with ws.db.store.read() as tx:
        return tx.field_history.count(entity)


def test_changes_are_kept_and_read_back_as_of_any_moment(ws: Workspace) -> None:
    load(ws, T0, "id,name,health_score\nA1,Acme,50\nA2,Globex,70\nA3,Initech,10\n")
    assert history_rows(ws, "accounts") == 0
    report = load(ws, T1, "id,name,health_score\nA1,Acme,65\nA2,Globex,70\nA3,Initech,10\n")
    assert (report.entities["accounts"].updated, report.entities["accounts"].unchanged) == (1, 2)
    assert history_rows(ws, "accounts") == 1          # only the changed row's old version, not rows x syncs
    load(ws, T2, "id,name,health_score\nA1,Acme,65\nA2,Globex,70\n")            # A3 absent: removed
    load(ws, T3, "id,name,health_score\nA1,Acme,65\nA2,Globex,70\nA3,Initech,12\nA4,Hooli,1\n")  # back, changed
    assert history_rows(ws, "accounts") == 3

    before = T0 - timedelta(seconds=1)
    assert accounts_at(ws, before) == {}
    assert accounts_at(ws, T0) == {"A1": ("Acme", 50, False), "A2": ("Globex", 70, False),
                                   "A3": ("Initech", 10, False)}
    assert accounts_at(ws, T1 - timedelta(microseconds=1)) == accounts_at(ws, T0)
    assert accounts_at(ws, T1)["A1"] == ("Acme", 65, False)
    assert accounts_at(ws, T2 + timedelta(hours=1))["A3"] == ("Initech", 10, True)
    assert accounts_at(ws, T3) == {"A1": ("Acme", 65, False), "A2": ("Globex", 70, False),
                                   "A3": ("Initech", 12, False), "A4": ("Hooli", 1, False)}
    # the current rows equal the data as of now
    now = {r["id"]: r for r in ws.rows("accounts")}
    assert {r["id"]: r for r in read(ws, as_of(ws.db.schema, "accounts", T3 + timedelta(days=9)))} == now

    # every version with its interval; set-based over many moments equals as_of at each
    spans = sorted((r["id"], r["valid_from"], r["valid_to"]) for r in read(ws, versions(ws.db.schema, "accounts")))
    assert [s for s in spans if s[0] == "A3"] == [("A3", T0, T2), ("A3", T2, T3), ("A3", T3, None)]
    moments = [before, T0, T1, T2, T3]
    rows = read(ws, at_moments(ws.db.schema, "accounts", moments_table(moments)))
    for m in moments:
        at = {r["id"]: (r["name"], r["health_score"], r["removed_at"] is not None) for r in rows if r["moment"] == m}
        assert at == accounts_at(ws, m), m


def test_usage_counts_from_when_it_was_synced(ws: Workspace) -> None:
    accounts = "id,name\nA1,Acme\n"
    load(ws, T0, accounts, usage="account_id,metric,day,value\nA1,logins,2024-04-30,5\n")
    load(ws, T1, accounts, usage="account_id,metric,day,value\nA1,logins,2024-04-30,7\nA1,logins,2024-05-01,3\n")
    load(ws, T2, accounts, usage="account_id,metric,day,value\nA1,logins,2024-05-01,3\n")   # 04-30 deleted

    def usage_at(moment: datetime) -> dict[date, float]:
        return {r["day"]: r["value"] for r in read(ws, as_of(ws.db.schema, "usage", moment))}

    assert usage_at(T0) == {date(2024, 4, 30): 5}              # the 05-01 row synced later is invisible
    assert usage_at(T1) == {date(2024, 4, 30): 7, date(2024, 5, 1): 3}   # the revision applies from T1
    assert usage_at(T2) == {date(2024, 5, 1): 3}
    assert history_rows(ws, "usage") == 2                        # the revised value and the deleted row


def test_contacts_of_a_removed_account_are_kept_once(ws: Workspace) -> None:
    contacts = "id,account_id,email\nC1,A1,a@x.example\nC2,A2,b@x.example\n"
    load(ws, T0, "id,name\nA1,Acme\nA2,Globex\n", contacts)
    load(ws, T1, "id,name\nA1,Acme\n", contacts)            # A2 removed: C2 cascades, still in the contacts file
    kept = history_rows(ws, "contacts")
    assert kept == 1
    load(ws, T2, "id,name\nA1,Acme\n", contacts)
    load(ws, T3, "id,name\nA1,Acme\n", contacts)
    assert history_rows(ws, "contacts") == kept               # unchanged syncs add nothing
    c2 = {r["id"]: r for r in read(ws, as_of(ws.db.schema, "contacts", T0))}["C2"]
    assert c2["removed_at"] is None
    assert {r["id"]: r for r in ws.rows("contacts")}["C2"]["removed_at"] == T1


def test_a_failed_sync_keeps_no_history_and_skipped_rows_are_not_removed(ws: Workspace) -> None:
    load(ws, T0, "id,name,health_score\nA1,Acme,50\nA2,Globex,70\n")
    with pytest.raises(SyncFailed):
        load(ws, T1, "id,name,health_score\nA1,Acme,51\nA2,Globex,oops\n")
    assert history_rows(ws, "accounts") == 0
    load(ws, T2, "id,name,health_score\nA1,Acme,51\nA2,Globex,oops\n", skip_invalid=True)
    assert accounts_at(ws, T2) == {"A1": ("Acme", 51, False), "A2": ("Globex", 70, False)}
    assert history_rows(ws, "accounts") == 1


def test_snapshot_fills_temporary_tables_the_tick_s_sql_can_read(ws: Workspace) -> None:
    load(ws, T0, "id,name,health_score\nA1,Acme,50\n", "id,account_id,email\nC1,A1,a@x.example\n",
         "account_id,metric,day,value\nA1,logins,2024-04-30,5\n")
    load(ws, T1, "id,name,health_score\nA1,Acme,80\nA2,Globex,1\n", "id,account_id,email\nC1,A1,a@x.example\n",
         "account_id,metric,day,value\nA1,logins,2024-04-30,6\n")
    with ws.db.store.write() as tx:
        past = tx.field_history.snapshot(T0)
        assert past.accounts.name == "asof_accounts" and past.episodes is ws.db.schema.episodes
        a = past.accounts
        assert [tuple(r) for r in tx.conn.execute(sa.select(a.c.id, a.c.health_score))] == [("A1", 50)]
        u = past.usage
        assert [r.value for r in tx.conn.execute(sa.select(u))] == [5]
        assert len(list(tx.conn.execute(sa.select(past.contacts)))) == 1
        again = tx.field_history.snapshot(T1)             # replaces what the tables held
        assert sorted(r.id for r in tx.conn.execute(sa.select(again.accounts))) == ["A1", "A2"]
        tx.field_history.drop_snapshot()


def test_sync_as_of_loads_past_snapshots_in_order(tmp_path: Path, db_url: str) -> None:
    import json

    from conftest import Workspace as CliWorkspace

    cli = CliWorkspace(tmp_path / "cli", db_url, timezone="Asia/Tokyo")
    for day, arr in ((1, 100), (2, 200), (3, 300)):
        cli.data("accounts", [{"id": "A1", "name": "Acme", "arr": arr}])
        result = cli.cli("sync", "--as-of", f"2026-11-0{day}T06:00", "--format", "json")
        accounts = next(e for e in json.loads(result.stdout)["entities"] if e["entity"] == "accounts")
        assert (accounts["inserted"], accounts["updated"]) == ((1, 0) if day == 1 else (0, 1))
    early = cli.cli("sync", "--as-of", "2026-11-02T06:00", expect=1)
    assert ("--as-of 2026-11-02 06:00 +09:00 is earlier than the latest sync of usage (2026-11-03 06:00 +09:00): "
            "the field history is recorded in order") in early.output
    assert "load past snapshots oldest first" in early.output
    future = cli.cli("sync", "--as-of", "2999-01-01", expect=1)
    assert "is in the future" in future.output
    bad = cli.cli("sync", "--as-of", "yesterday", expect=2)
    assert "`yesterday` is not an ISO date-time" in bad.output
    db = Db(db_url)
    try:
        with db.store.read() as tx:
            def arr(at: datetime) -> list[float]:
                return [r.arr for r in tx.conn.execute(as_of(db.schema, "accounts", at))]
            # 06:00 in Tokyo is 21:00 UTC the day before
            assert arr(datetime(2026, 10, 31, 20, 59)) == []
            assert arr(datetime(2026, 10, 31, 21, 0)) == [100]
            assert arr(datetime(2026, 11, 2, 0, 0)) == [200]
            assert arr(datetime(2026, 11, 2, 21, 0)) == [300]
    finally:
        db.dispose()


def test_a_usage_snapshot_that_only_deletes_rows_reaches_the_next_run(tmp_path: Path, db_url: str) -> None:
    """No row is rewritten, so no usage row carries the sync's stamp: the deletion itself must move the usage
    mark, or the metric windows and the changes-only scan would keep the deleted values."""
    from conftest import Workspace as CliWorkspace

    cli = CliWorkspace(tmp_path / "cli", db_url)
    cli.playbook("busy", """
id: busy
name: Busy
activation: fire
trigger: {when: "metric('logins', 7, 'sum') > 5"}
actions:
  - slack: {channel: "#cs", text: "{{ account.name }} is busy"}
""")
    cli.data("accounts", [{"id": "A1", "name": "Acme"}, {"id": "A2", "name": "Globex"}])
    usage = [{"account_id": "A1", "metric": "logins", "day": "2026-11-29", "value": 3},
             {"account_id": "A1", "metric": "logins", "day": "2026-11-30", "value": 4},
             {"account_id": "A2", "metric": "logins", "day": "2026-11-30", "value": 9}]
    cli.data("usage", usage)
    cli.cli("sync", "--as-of", "2026-12-01T06:00")
    assert {e[1] for e in cli.events("2026-12-01T09:00") if e[2] == "enter"} == {"account:A1", "account:A2"}
    cli.data("usage", usage[1:])                   # A1's 2026-11-29 row deleted, nothing else changed
    cli.cli("sync", "--as-of", "2026-12-01T10:00", "--allow-removal")
    assert cli.events("2026-12-01T11:00") == [("busy", "account:A1", "resolve", 1)]
    assert cli.events("2026-12-01T12:00") == []
