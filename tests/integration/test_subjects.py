"""Subject rows read once per tick (RowCache): the same answers as reading them afresh, however small its
bound (it starts afresh when full)."""

from __future__ import annotations

from conftest import Workspace
from engine.app import App
from engine.store import subjects


def test_row_cache_answers_like_a_fresh_read_when_it_overflows(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    ws.data("accounts", [{"id": f"A{i}", "name": f"Acme {i}"} for i in range(6)])
    ws.data("contacts", [{"id": f"C{i}{r}", "account_id": f"A{i}", "email": f"{r}{i}@acme.example", "role": r,
                          "unsubscribed": "false"} for i in range(6) for r in ("champion", "admin")])
    ws.sync()
    app = App(ws.config)
    with app.store.read() as tx:
        cache = subjects.RowCache(limit=3)
        for ids in (["C0champion", "C1admin"], ["C2champion", "C3admin", "C0champion"], ["C5admin", "C4champion"]):
            want = tx.subjects.records("contact", ids)
            assert tx.subjects.records("contact", ids, cache) == want and len(want) == len(ids)
        for accounts in (["A0", "A1"], ["A2", "A3", "A0"], ["A5", "A4", "A1"]):
            want = tx.subjects.contacts_with_roles(accounts, ["champion"])
            assert tx.subjects.contacts_with_roles(accounts, ["champion"], cache) == want
            assert sorted(want) == sorted(accounts)
    app.close()
