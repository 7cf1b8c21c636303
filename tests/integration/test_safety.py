"""Safety rails (max_actions_per_run, stale data) and the service's observability (JSON logs, /metrics)."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from datetime import timedelta

from sqlalchemy import update

from conftest import Workspace
from engine.app import App
from engine.clock import wall_clock
from smtp_server import free_port

WIDE = """
id: wide
name: Too wide
max_actions_per_run: 2
activation: fire
trigger: {when: account.arr < 100}
actions:
  - slack: {channel: "#cs", text: "{{ account.name }}"}
"""


def test_max_actions_per_run_plans_nothing_and_alerts(ws: Workspace) -> None:
    ws.playbook("wide", WIDE)
    ws.data("accounts", [{"id": f"A{i}", "name": f"N{i}", "arr": 10} for i in range(3)])
    ws.sync()
    r = ws.cli("run", "--now", "2026-03-02T09:00", "--format", "json")
    assert json.loads(r.stdout)["events"] == []
    assert "wide: blocked: would plan 3 actions, more than max_actions_per_run (2)" in r.stderr
    assert '"status": "blocked"' in ws.cli("status", "--format", "json").stdout
    assert '"events": []' in ws.cli("history", "--format", "json").stdout
    ws.data("accounts", [{"id": f"A{i}", "name": f"N{i}", "arr": 10 if i == 0 else 500} for i in range(3)])
    ws.sync()
    assert ws.events("2026-03-03T09:00") == [("wide", "account:A0", "enter", 1)]


def test_stale_data_guard(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    ws.configure("defaults: {max_data_age: 1h}\n")
    ws.playbook("wide", WIDE.replace("max_actions_per_run: 2\n", ""))
    ws.data("accounts", [{"id": "A0", "name": "N0", "arr": 10}])
    ws.sync()
    app = App(ws.config)
    with app.store.engine.begin() as conn:
        conn.execute(update(app.store.schema.sync_state).values(synced_at=wall_clock() - timedelta(hours=2)))
    app.close()
    r = ws.cli("run", "--now", "2026-03-02T09:00", "--format", "json")
    assert json.loads(r.stdout)["events"] == []
    assert "stale data: accounts last synced more than 1h ago (defaults.max_data_age)" in r.stderr
    ws.sync()
    assert ws.events("2026-03-02T09:00") == [("wide", "account:A0", "enter", 1)]


def test_service_logs_json_and_serves_metrics(ws_sqlite: Workspace) -> None:
    ws = ws_sqlite
    ws.playbook("wide", WIDE.replace("max_actions_per_run: 2\n", ""))
    ws.data("accounts", [{"id": f"A{i}", "name": f"N{i}", "arr": 10} for i in range(3)])
    ws.sync()
    port = free_port()
    p = ws.spawn("start", "--every", "0.5", "--lease", "3", "--metrics-port", str(port), "--log-format", "json")
    try:
        body = ""
        deadline = time.monotonic() + 30
        while 'playbook_outbox_actions{state="sent"} 3.0' not in body and time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                continue
        assert 'playbook_outbox_actions{state="sent"} 3.0' in body
        assert 'playbook_open_episodes{playbook="wide"} 3.0' in body
        assert "playbook_delivery_latency_seconds_bucket" in body
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    assert p.returncode == 0
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any(r["msg"] == "evaluated" and r["playbook"] == "wide" and "run_id" in r for r in records)
    assert records[-1]["msg"] == "stopped"
