"""A CSV file exported from a spreadsheet (Excel in Japan: cp932, dates as 2026/12/01, numbers as 12,000), synced
and evaluated through the real CLI with the source options that say so — on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Workspace

EXCEL = '{entity: accounts, csv: {path: data/accounts.csv, encoding: cp932, date_format: "%Y/%m/%d", thousands: ","}}'
RENEWING = """
id: renewing
name: Renewing
activation: fire
trigger: {when: "account.arr >= 12000 and account.renewal_date <= '2026-12-31'"}
actions:
  - slack: {channel: "#cs", text: "{{ account.name }} renews {{ account.renewal_date }} ({{ account.arr }})"}
"""


def excel(tmp_path: Path, db_url: str, rows: str) -> Workspace:
    ws = Workspace(tmp_path / "ws", db_url, timezone="Asia/Tokyo")
    config = ws.root / "config.yaml"
    config.write_text(config.read_text().replace("{entity: accounts, csv: data/accounts.csv}", EXCEL))
    (ws.root / "data" / "accounts.csv").write_bytes(
        ("id,name,arr,renewal_date,created_at\r\n" + rows).encode("cp932"))
    return ws


def test_a_japanese_excel_export_syncs_and_fires(tmp_path: Path, db_url: str) -> None:
    ws = excel(tmp_path, db_url, '"A1","株式会社アクメ","12,000",2026/12/01,2026/04/01 10:00\r\n'
                                 '"A2","小さな会社","900",2026/12/01,\r\n')
    ws.playbook("renewing", RENEWING)
    ws.cli("validate")
    synced = json.loads(ws.cli("sync", "--format", "json").stdout)["entities"]
    assert [(e["entity"], e["rows"], e["invalid"]) for e in synced if e["entity"] == "accounts"] == [
        ("accounts", 2, 0)]
    out = ws.run("2026-11-02T09:00")
    assert [(e["subject"], e["actions"][0]["text"]) for e in out["events"]] == [
        ("account:A1", "株式会社アクメ renews 2026-12-01 (12000)")]
    doc = json.loads(ws.cli("explain", "A1", "--now", "2026-11-02T09:00", "--format", "json").stdout)
    assert doc["playbooks"][0]["verdict"] == "in_episode"


def test_rows_that_do_not_fit_the_source_formats_fail_the_sync(tmp_path: Path, db_url: str) -> None:
    ws = excel(tmp_path, db_url, '"A1","アクメ","12.000,5",2026-13-01,\r\n')
    r = ws.cli("sync", expect=1)
    assert ('data/accounts.csv:2: arr: "12.000,5" is not a number (this source writes decimals with "." and '
            'thousands with ",")') in r.stderr
    assert 'data/accounts.csv:2: renewal_date: "2026-13-01" is not a date (use %Y/%m/%d or YYYY-MM-DD)' in r.stderr


def test_a_file_in_another_encoding_names_the_line_and_the_encoding(tmp_path: Path, db_url: str) -> None:
    ws = excel(tmp_path, db_url, "")
    (ws.root / "data" / "accounts.csv").write_bytes("id,name\nA1,Acme\nA2,".encode() + b"\x82\xff\n")
    r = ws.cli("sync", expect=1)
    assert ("data/accounts.csv:3: the file is not cp932 text (is `encoding: cp932` the file's encoding? name the "
            "right one, or save the file as cp932)") in r.stderr
    assert "Traceback" not in r.output
