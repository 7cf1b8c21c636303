"""Hostile data values (issue 24): out-of-range integers and numbers, huge exponents, out-of-range date-times,
bare-CR line endings, deeply nested JSON and NUL characters are row errors with `file:row`, found at once, on
SQLite and PostgreSQL — never a traceback, never a stalled sync, never a removal."""

from __future__ import annotations

import pytest

from conftest import Workspace

CONFIG = """\
timezone: Asia/Tokyo
database: "{database}"
fields:
  accounts: {{nps: integer, health_score: number, onboarding_done_at: date, note: string}}
sources:
  - {{entity: accounts, {kind}: data/accounts.{kind}}}
"""
HEADER = b"id,name,nps,health_score,onboarding_done_at,note,created_at\n"
GOOD = b"A2,Beta,,,,,\n"


def csv_row(**values: bytes) -> bytes:
    row = {"id": b"A1", "name": b"Acme", "nps": b"", "health_score": b"", "onboarding_done_at": b"", "note": b"",
           "created_at": b""} | values
    return HEADER + b",".join(row.values()) + b"\n" + GOOD


def jsonl_row(text: bytes) -> bytes:
    return b'{"id": "A2", "name": "Beta"}\n' + text + b"\n"


# (what, kind, file content, the line of the error that must be printed)
ROW_ERRORS = [
    ("integer beyond 64 bits", "csv", csv_row(nps=b"99999999999999999999999"),
     'data/accounts.csv:2: nps: "99999999999999999999999" is out of range (integers are from '
     "-9,223,372,036,854,775,808 to 9,223,372,036,854,775,807)"),
    ("integer 2**63", "csv", csv_row(nps=b"9223372036854775808"), 'nps: "9223372036854775808" is out of range'),
    ("integer 1e100000", "csv", csv_row(nps=b"1e100000"), 'data/accounts.csv:2: nps: "1e100000" is out of range'),
    ("integer 1e999999999", "csv", csv_row(nps=b"1e999999999"),
     'data/accounts.csv:2: nps: "1e999999999" is out of range'),
    ("integer of 5000 digits", "csv", csv_row(nps=b"9" * 5000), "data/accounts.csv:2: nps: "),
    ("JSON integer beyond 64 bits", "jsonl", jsonl_row(b'{"id": "A1", "nps": 1000000000000000000000000000000}'),
     "data/accounts.jsonl:2: nps: 1000000000000000000000000000000 is out of range"),
    ("JSON integer of 5000 digits", "jsonl", jsonl_row(b'{"id": "A1", "nps": ' + b"9" * 5000 + b"}"),
     "data/accounts.jsonl:2: a number with too many digits to read (more than 4,300)"),
    ("JSON 1e999999999 as an integer", "jsonl", jsonl_row(b'{"id": "A1", "nps": 1e999999999}'),
     "data/accounts.jsonl:2: nps: inf is out of range"),
    ("number 1e999999999", "csv", csv_row(health_score=b"1e999999999"),
     'data/accounts.csv:2: health_score: "1e999999999" is out of range for a number'),
    ("JSON number 10**400", "jsonl", jsonl_row(b'{"id": "A1", "health_score": 1' + b"0" * 400 + b"}"),
     "data/accounts.jsonl:2: health_score: an integer of about 401 digits is out of range for a number"),
    ("date-time before year 1 in UTC", "csv", csv_row(created_at=b"0001-01-01T00:00:00"),
     'data/accounts.csv:2: created_at: "0001-01-01T00:00:00" is out of range (a date-time is within the years 1 '
     "to 9999 in UTC)"),
    ("date-time after year 9999 in UTC", "csv", csv_row(created_at=b"9999-12-31T23:59:59-05:00"),
     'data/accounts.csv:2: created_at: "9999-12-31T23:59:59-05:00" is out of range'),
    ("year 10000", "csv", csv_row(created_at=b"10000-01-01T00:00:00"),
     'data/accounts.csv:2: created_at: "10000-01-01T00:00:00" is not a date-time'),
    ("date of year 0", "csv", csv_row(onboarding_done_at=b"0000-01-01"),
     'data/accounts.csv:2: onboarding_done_at: "0000-01-01" is not a date'),
    ("bare CR inside an unquoted value", "csv", HEADER + b"A1,Ac\rme,,,,,\n" + GOOD,
     "data/accounts.csv:2: a carriage return (CR) inside a value that is not quoted"),
    ("100k-deep JSON value", "jsonl", jsonl_row(b'{"id": "A1", "note": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
     "data/accounts.jsonl:2: JSON nested too deeply to read"),
    ("100k-deep JSON line", "jsonl", jsonl_row(b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
     "data/accounts.jsonl:2: JSON nested too deeply to read"),
    ("NUL in a CSV name", "csv", csv_row(name=b"Ac\x00me"),
     "data/accounts.csv:2: name: contains a NUL character (\\u0000), which cannot be stored"),
    ("NUL in a CSV id", "csv", csv_row(id=b"A\x001"), "data/accounts.csv:2: id: contains a NUL character"),
    ("NUL in a JSON string", "jsonl", jsonl_row(b'{"id": "A1", "name": "Ac\\u0000me"}'),
     "data/accounts.jsonl:2: name: contains a NUL character"),
    ("NUL in a JSON id", "jsonl", jsonl_row(b'{"id": "A\\u00001"}'), "data/accounts.jsonl:2: id: contains a NUL"),
    ("a 20 MB runaway quote", "csv", HEADER + b'A1,"Acme\n' + b"A3,Gamma,,,,,\n" * 1_500_000,
     "data/accounts.csv:2: a value longer than 131,072 characters starts in this row (is a quote never closed?)"),
]


def setup(ws: Workspace, kind: str, content: bytes) -> None:
    (ws.root / "config.yaml").write_text(CONFIG.format(database=ws.database, kind=kind))
    (ws.root / "data" / f"accounts.{kind}").write_bytes(content)


@pytest.mark.parametrize("what,kind,content,expected", ROW_ERRORS, ids=[c[0] for c in ROW_ERRORS])
def test_a_hostile_value_is_a_row_error(ws: Workspace, what: str, kind: str, content: bytes, expected: str) -> None:
    setup(ws, kind, b"")
    (ws.root / "data" / f"accounts.{kind}").write_bytes(HEADER + GOOD + b"A1,Acme,,,,,\n" if kind == "csv" else
                                                      b'{"id": "A1"}\n{"id": "A2"}\n')
    ws.sync()
    (ws.root / "data" / f"accounts.{kind}").write_bytes(content)
    r = ws.cli("sync", expect=1)
    assert expected in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    r = ws.cli("sync", "--skip-invalid", expect=None)              # the good rows load; nothing is removed
    assert r.exit_code in (0, 1) and "Traceback" not in r.stderr
    assert live_accounts(ws) == 2


def live_accounts(ws: Workspace) -> int:
    from engine.app import App

    app = App(ws.config)
    try:
        with app.store.read() as tx:
            return tx.entities.count_live("accounts")
    finally:
        app.close()


@pytest.mark.parametrize("kind,content", [
    ("csv", HEADER.replace(b"\n", b"\r") + b"A1,Acme,7,,,,\rA2,Beta,,,,,\r"),
    ("jsonl", b'{"id": "A1", "name": "Acme", "nps": 7}\r{"id": "A2", "name": "Beta"}\r'),
    ("csv", HEADER.replace(b"\n", b"\r\n") + b"A1,Acme,7,,,,\r\nA2,Beta,,,,,\r\n"),
], ids=["csv with CR line endings", "jsonl with CR line endings", "csv with CRLF line endings"])
def test_cr_line_endings_are_read_as_lines(ws: Workspace, kind: str, content: bytes) -> None:
    setup(ws, kind, content)
    ws.sync()
    from engine.app import App

    app = App(ws.config)
    try:
        with app.store.read() as tx:
            rows = {r["id"]: r for r in tx.conn.execute(tx.schema.accounts.select()).mappings()}
    finally:
        app.close()
    assert set(rows) == {"A1", "A2"} and rows["A1"]["name"] == "Acme" and rows["A1"]["nps"] == 7


@pytest.mark.parametrize("value,stored", [("9223372036854775807", 9223372036854775807),
                                          ("-9223372036854775808", -9223372036854775808),
                                          ("1e18", 10 ** 18), ("0e999999999", 0), ("12.0", 12)])
def test_the_edges_of_the_integer_range_are_kept(ws: Workspace, value: str, stored: int) -> None:
    setup(ws, "csv", csv_row(nps=value.encode()))
    ws.sync()
    from engine.app import App

    app = App(ws.config)
    try:
        with app.store.read() as tx:
            nps = {r["id"]: r["nps"] for r in tx.conn.execute(tx.schema.accounts.select()).mappings()}
    finally:
        app.close()
    assert nps["A1"] == stored
