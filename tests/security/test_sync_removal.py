"""A broken or truncated snapshot never removes customers (issue 24): the mass-removal guard, rows that cannot be
read never counting as absent, and a refused sync leaving the next run with nothing to resolve, close or send."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import pytest

from conftest import HEADERS, Workspace
from engine.app import App

ACCOUNTS = 300
WATCH = """
id: watch
name: Watch every account
activation: fire
trigger: {when: account.arr < 100}
actions:
  - task: {title: "Look at {{ account.name }}", assignee: "{{ account.csm_email }}", due_in: 3d}
on_resolve:
  - slack: {channel: "#cs", text: "{{ account.name }} is fine again"}
"""


def accounts_csv(n: int = ACCOUNTS) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=HEADERS["accounts"], lineterminator="\n")
    w.writeheader()
    for i in range(1, n + 1):
        w.writerow({"id": f"A{i:04d}", "name": f"Customer {i}", "arr": 50, "csm_email": "csm@example.com"})
    return out.getvalue()


def contacts_csv(n: int = ACCOUNTS) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=HEADERS["contacts"], lineterminator="\n")
    w.writeheader()
    for i in range(1, n + 1):
        w.writerow({"id": f"C{i:04d}", "account_id": f"A{i:04d}", "email": f"c{i}@example.com", "name": f"C{i}"})
    return out.getvalue()


def write(ws: Workspace, name: str, text: str) -> None:
    (ws.root / "data" / name).write_text(text, encoding="utf-8")


def live(ws: Workspace, entity: str = "accounts") -> int:
    app = App(ws.config)
    try:
        with app.store.read() as tx:
            return tx.entities.count_live(entity)
    finally:
        app.close()


@pytest.fixture
def synced(ws: Workspace) -> Workspace:
    """300 accounts and their contacts, each with an open episode and a task delivered to the built-in list (`run`
    dispatches)."""
    ws.playbook("watch", WATCH)
    write(ws, "accounts.csv", accounts_csv())
    write(ws, "contacts.csv", contacts_csv())
    ws.sync()
    assert len(ws.events("2026-03-02T09:00")) == ACCOUNTS
    return ws


def refused_then_quiet(ws: Workspace, expected: str) -> None:
    """The sync fails naming the problem, nothing is removed, and the next run does nothing at all."""
    r = ws.cli("sync", expect=1)
    assert expected in r.stderr, r.stderr
    assert "Traceback" not in r.output + r.stderr
    assert (live(ws), live(ws, "contacts")) == (ACCOUNTS, ACCOUNTS)
    before, tasks = ws.outbox_rows(), ws.cli("tasks", "--format", "json").stdout
    assert ws.run("2026-03-03T09:00")["events"] == []          # no episode resolves
    assert ws.outbox_rows() == before                            # no task closure, no Slack message planned or sent
    assert ws.cli("tasks", "--format", "json").stdout == tasks  # every task still open


def test_unterminated_quote_in_row_151_is_a_row_error_and_removes_nothing(synced: Workspace) -> None:
    lines = accounts_csv().splitlines(keepends=True)
    lines[151] = lines[151].replace("Customer", '"Customer', 1)   # file line 152 = data row 151
    write(synced, "accounts.csv", "".join(lines))
    refused_then_quiet(synced, "data/accounts.csv:152: a quoted value that starts in this row is never closed")


def test_a_file_cut_to_3_rows_is_refused(synced: Workspace) -> None:
    write(synced, "accounts.csv", accounts_csv(3))
    refused_then_quiet(synced, "data/accounts.csv: refusing to mark 297 of 300 accounts (99%) removed, more than "
                               "sync.max_removal (10%); nothing of accounts changed")


def test_a_header_only_file_is_refused(synced: Workspace) -> None:
    write(synced, "accounts.csv", accounts_csv(0))
    refused_then_quiet(synced, "data/accounts.csv: no data rows: refusing to mark 300 of 300 accounts (100%) "
                               "removed; nothing of accounts changed")
    assert "playbook sync --allow-removal" in synced.cli("sync", expect=1).stderr


def test_header_only_contacts_are_refused_while_accounts_load(synced: Workspace) -> None:
    write(synced, "contacts.csv", contacts_csv(0))
    r = synced.cli("sync", expect=1)
    assert "sync failed — nothing of these entities changed: contacts\n" in r.stderr
    assert live(synced, "contacts") == ACCOUNTS


def test_allow_removal_lets_a_real_removal_through(synced: Workspace) -> None:
    write(synced, "accounts.csv", accounts_csv(3))
    synced.cli("sync", "--allow-removal")
    assert (live(synced), live(synced, "contacts")) == (3, 3)
    events = synced.run("2026-03-03T09:00")["events"]
    assert len(events) == ACCOUNTS - 3 and {e["event"] for e in events} == {"resolve"}


def test_max_removal_in_the_config_and_on_a_source(synced: Workspace) -> None:
    write(synced, "accounts.csv", accounts_csv(240))                     # 20% of the accounts go
    assert "(20%) removed, more than sync.max_removal (10%)" in synced.cli("sync", expect=1).stderr
    synced.configure("sync: {max_removal: 25%}\n")
    synced.sync()
    assert live(synced) == 240
    write(synced, "accounts.csv", accounts_csv(0))                       # an empty file still needs the flag
    assert "no data rows" in synced.cli("sync", expect=1).stderr
    config = Path(synced.config)
    config.write_text(config.read_text().replace("{entity: accounts, csv: data/accounts.csv}",
                                                 "{entity: accounts, csv: data/accounts.csv, max_removal: 50%}"))
    write(synced, "accounts.csv", accounts_csv(100))
    r = synced.cli("sync", expect=1)
    assert "refusing to mark 140 of 240 accounts (58.3%) removed, more than the source's max_removal (50%)" in r.stderr
    write(synced, "accounts.csv", accounts_csv(130))
    synced.sync()
    assert live(synced) == 130


def test_a_share_that_is_not_a_percentage_is_a_config_error(ws: Workspace) -> None:
    ws.configure("sync: {max_removal: 10}\n")
    r = ws.cli("validate", expect=1)
    assert "`10` is not a share; write a percentage from 0% to 100%, e.g. 10%" in r.stderr + r.stdout


def test_rows_that_cannot_be_read_never_count_as_absent(ws: Workspace) -> None:
    """With --skip-invalid, a row whose key cannot be read may be any account: nothing is removed."""
    write(ws, "accounts.csv", accounts_csv(20))
    ws.sync()
    text = accounts_csv(20).replace("A0007,Customer 7,50", "A0007,Customer 7,50,x,y,z,extra,values,,,,,,,", 1)
    text = text.replace("A0008,", ",", 1)                                      # no id at all
    write(ws, "accounts.csv", text)
    r = ws.cli("sync", "--skip-invalid")
    assert "2 rows could not be read, so no accounts were marked removed by this sync" in " ".join(r.stderr.split())
    assert live(ws) == 20


def test_usage_rows_are_guarded_too(ws: Workspace) -> None:
    write(ws, "accounts.csv", accounts_csv(1))
    usage = "account_id,metric,day,value\n" + "".join(f"A0001,logins,2026-02-{d:02d},1\n" for d in range(1, 21))
    write(ws, "usage.csv", usage)
    ws.sync()
    write(ws, "usage.csv", "account_id,metric,day,value\nA0001,logins,2026-02-21,1\n")
    r = ws.cli("sync", expect=1)
    assert "data/usage.csv: refusing to delete 20 of 20 usage rows (100%), more than sync.max_removal" in r.stderr


def test_the_service_keeps_the_old_data_and_alerts(synced: Workspace, caplog: pytest.LogCaptureFixture) -> None:
    from engine.service import Service

    write(synced, "accounts.csv", accounts_csv(3))
    app = App(synced.config)
    try:
        service = Service(app)
        service.token = 1                                         # as the leader
        with caplog.at_level(logging.ERROR, logger="playbook"):
            service.sync()                                        # returns: the service goes on
    finally:
        app.close()
    alert = [r for r in caplog.records if getattr(r, "alert", None) == "mass_removal"]
    assert alert and "ALERT sync failed; nothing of accounts changed" in alert[0].getMessage()
    assert "refusing to mark 297 of 300 accounts" in alert[0].getMessage()
    assert live(synced) == ACCOUNTS
