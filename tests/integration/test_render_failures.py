"""An action whose rendering fails at planning is recorded failed with the reason, never delivered, and the
episode's other actions go out (§9); `outbox retry` refuses it, `outbox retry --rerender` renders it again."""

from __future__ import annotations

import json
from datetime import datetime

from conftest import Workspace

PLAYBOOK = """
id: ratio
name: Ratio
activation: fire
trigger: {when: account.arr < 100}
actions:
  - slack: {channel: "#cs", text: "{{ account.name }} is small"}
  - slack: {channel: "#cs", text: "{{ account.name }}: {{ 100 // account.nps }} per point"}
"""


def setup(ws: Workspace, nps: int) -> None:
    ws.data("accounts", [{"id": "A1", "name": "Acme", "arr": 10, "nps": nps}])
    ws.sync()
    ws.playbook("ratio", PLAYBOOK)


def sink(ws: Workspace) -> list[str]:
    path = ws.root / "outbox" / "slack.jsonl"
    return [json.loads(line)["text"] for line in path.read_text().splitlines()] if path.exists() else []


def test_a_failed_render_is_reported_kept_out_of_delivery_and_rendered_again(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    setup(ws, nps=0)
    result = ws.cli("run", "--now", "2027-01-12T10:00", expect=1)
    assert "ratio: not planned, rendering failed for ratio/account:A1/1/1/1" in result.stderr
    assert "ZeroDivisionError" in result.stderr and "--rerender" in result.stderr
    assert sink(ws) == ["Acme is small"]                           # the episode's other action went out
    failed = [r for r in ws.outbox_rows() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["last_error"].startswith("rendering failed: template error: ZeroDivision")
    rid = str(failed[0]["id"])

    refused = ws.cli("outbox", "retry", rid, expect=1)             # a plain retry would send an error record
    assert "never rendered" in refused.output + refused.stderr and f"--rerender {rid}" in refused.output + refused.stderr
    assert [r["status"] for r in ws.outbox_rows() if r["id"] == int(rid)] == ["failed"]

    still = ws.cli("outbox", "retry", "--rerender", rid, expect=1)  # the data has not changed: still fails
    assert "rendering still fails" in still.stdout

    setup(ws, nps=4)                                               # the data is fixed
    ws.cli("outbox", "retry", "--rerender", rid)
    ws.cli("dispatch")
    assert sink(ws) == ["Acme is small", "Acme: 25 per point"]
    assert [r["status"] for r in ws.outbox_rows() if r["id"] == int(rid)] == ["sent"]


def test_an_error_record_made_due_by_hand_fails_instead_of_being_sent(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    setup(ws, nps=0)
    ws.cli("run", "--now", "2027-01-12T10:00", expect=1)
    from engine.app import App

    app = App(ws.config)
    with app.store.write() as tx:            # as an older version's `outbox retry` did
        o = tx.schema.outbox
        tx.conn.execute(o.update().where(o.c.status == "failed").values(status="pending", not_before=datetime(2026, 1, 1)))
    app.close()
    ws.cli("dispatch")
    assert sink(ws) == ["Acme is small"]
    failed = [r for r in ws.outbox_rows() if r["status"] == "failed"]
    assert len(failed) == 1 and "never rendered" in failed[0]["last_error"]


def test_a_run_at_a_future_now_plans_and_delivers_as_if_that_moment_had_come(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    setup(ws, nps=4)
    ws.configure("delivery: {expire_after: 1d}\n")
    ws.cli("run", "--now", "2031-06-03T10:00")                      # years ahead: far past expire_after
    rows = ws.outbox_rows()
    assert {r["status"] for r in rows} == {"sent"} and len(rows) == 2
    assert all(str(r["not_before"]).startswith("2031-06-03 10:00") for r in rows)
