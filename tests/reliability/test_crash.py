"""Crash tests with real processes (§10): `kill -9` of a worker (a) after its claim, before it reached the
SMTP server, and (b) after the server accepted DATA, before the outcome was recorded. After a restart and
lease expiry nothing is lost; a duplicate happens only in (b), at most one, and it is flagged ambiguous."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter

import pytest

from conftest import Workspace
from reliability.polling import wait_for
from smtp_server import ScriptedHandler, SmtpServer, free_port

N = 5
PLAYBOOK = """
id: note
name: Note to the CSM
activation: fire
trigger:
  when: account.arr < 100
actions:
  - email: {to: "{{ account.csm_email }}", subject: "About {{ account.name }}", body: "Hello"}
"""


def smtp_config(port: int) -> str:
    return f"""
connectors:
  email:
    smtp: {{host: 127.0.0.1, port: {port}, starttls: false, timeout: 20}}
    from: "CS <cs@example.com>"
delivery: {{lease: 2s, backoff_base: 1s}}
"""


def plan(ws: Workspace, port: int) -> None:
    ws.configure(smtp_config(port))
    ws.playbook("note", PLAYBOOK)
    ws.data("accounts", [{"id": f"A{i}", "name": f"Acme {i}", "arr": 10, "csm_email": f"csm{i}@example.com"}
                         for i in range(N)])
    ws.sync()
    ws.cli("run", "--now", "2026-03-02T09:00", "--no-dispatch")



def restart_and_drain(ws: Workspace, port: int) -> None:
    ws.configure(smtp_config(port))
    time.sleep(2.2)                                  # let the dead worker's lease expire
    proc = ws.spawn("worker", "--max-idle", "2", "--interval", "0.1")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


@pytest.fixture
def blackhole() -> int:
    """A TCP server that accepts connections and never says a word (the worker waits for a greeting)."""
    port = free_port()
    srv = socket.socket()
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield port
    stop.set()
    t.join()
    for c in held:
        c.close()
    srv.close()


def test_kill_after_claim_before_connecting(tmp_path, blackhole: int) -> None:  # noqa: ANN001
    ws = Workspace(tmp_path / "ws", f"sqlite:///{tmp_path / 'crash.db'}")
    plan(ws, blackhole)
    worker = ws.spawn("worker", "--interval", "0.1")
    wait_for(lambda: any(r["status"] == "claimed" for r in ws.outbox_rows()))
    time.sleep(0.3)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(10)
    with SmtpServer() as server:
        restart_and_drain(ws, server.port)
        ids = Counter(r.message()["Message-ID"] for r in server.handler.accepted)
    final = ws.outbox_rows()
    assert [r["status"] for r in final] == ["sent"] * N          # nothing lost
    assert len(ids) == N and set(ids.values()) == {1}             # no duplicate
    assert all(r["ambiguous"] for r in final)                     # rescued leases are flagged


class KillOnData(ScriptedHandler):
    """Accepts the first DATA, then kills the worker before it can read the 250 or record anything."""

    victim: int | None = None

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201
        reply = await super().handle_DATA(server, session, envelope)
        if self.victim is not None:
            os.kill(self.victim, signal.SIGKILL)
            self.victim = None
        return reply


def test_kill_after_data_accepted_before_recording(tmp_path) -> None:  # noqa: ANN001
    ws = Workspace(tmp_path / "ws", f"sqlite:///{tmp_path / 'crash.db'}")
    handler = KillOnData()
    with SmtpServer(handler) as server:
        plan(ws, server.port)
        worker = ws.spawn("worker", "--interval", "0.1")
        handler.victim = worker.pid
        worker.wait(30)
        assert worker.returncode == -signal.SIGKILL
        assert len(handler.accepted) == 1
        restart_and_drain(ws, server.port)
        ids = Counter(r.message()["Message-ID"] for r in handler.accepted)
    final = ws.outbox_rows()
    assert [r["status"] for r in final] == ["sent"] * N           # nothing lost
    assert len(ids) == N                                           # every action arrived
    dups = [mid for mid, n in ids.items() if n > 1]
    assert len(dups) == 1 and ids[dups[0]] == 2                    # exactly one duplicate, once
    dup_row = [r for r in final if r["payload"]["messages"][0]["message_id"] == dups[0]][0]
    assert dup_row["ambiguous"] is True                            # and it is flagged
