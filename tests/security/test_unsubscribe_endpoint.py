"""The one-click unsubscribe endpoint under hostile requests (issue 24), served by a real `playbook start`: it
listens on 127.0.0.1 unless told otherwise; malformed requests get a 4xx answer, never a dropped connection; half-
sent and idle connections are closed and hold no thread; forged links unsubscribe nobody; and every line it logs
is one JSON object, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conftest import Workspace
from engine.app import App
from engine.consent import sign
from engine.unsubscribe_http import CONNECTIONS, IDLE_SECONDS, REQUEST_SECONDS, THREADS
from smtp_server import free_port

SECRET = "unsubscribe-secret-for-tests"
ADDRESS = "c0@acme.example"


class Endpoint:
    """A `playbook start` process serving the endpoint on a free port."""

    def __init__(self, ws: Workspace, *extra: str):
        self.port = free_port()
        env = {**os.environ, "PLAYBOOK_UNSUBSCRIBE_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
        self.proc = ws.spawn("start", "--every", "600", "--workers", "1", "--log-format", "json",
                             "--unsubscribe-port", str(self.port), *extra, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("the endpoint did not start")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def threads(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))

    def raw(self, data: bytes, timeout: float = 10) -> bytes:
        """Send raw bytes; the server's answer (its head and as much body as it says it sends)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
                head, _, body = out.partition(b"\r\n\r\n")
                length = [int(x.split(b":")[1]) for x in head.split(b"\r\n")
                          if x.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
            return out

    def stop(self) -> list[dict[str, Any]]:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        assert "Traceback" not in err
        return [json.loads(line) for line in err.splitlines() if line.strip()]   # each line one JSON object


@pytest.fixture
def endpoint(ws_sqlite: Workspace) -> Any:
    ws_sqlite.data("accounts", [{"id": "A1", "name": "Acme", "arr": 10}])
    ws_sqlite.sync()
    server = Endpoint(ws_sqlite)
    yield server
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.communicate()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def suppressed(ws: Workspace) -> set[str]:
    app = App(ws.config)
    try:
        with app.store.read() as tx:
            return tx.suppressions.blocked([ADDRESS, "victim@example.com"])
    finally:
        app.close()


def outward_address() -> str | None:
    """This machine's address on its outward interface (no packet is sent), when it has one besides loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_listens_on_loopback_by_default(endpoint: Endpoint) -> None:
    other = outward_address()
    if other is not None:
        with pytest.raises(OSError):
            socket.create_connection((other, endpoint.port), timeout=2).close()
    lines = endpoint.stop()
    listening = [x for x in lines if x["msg"] == "unsubscribe endpoint listening"]
    assert [(x["host"], x["port"]) for x in listening] == [("127.0.0.1", endpoint.port)]


def test_the_address_is_configurable(ws_sqlite: Workspace) -> None:
    server = Endpoint(ws_sqlite, "--unsubscribe-host", "0.0.0.0")
    other = outward_address()
    if other is not None:
        socket.create_connection((other, server.port), timeout=2).close()
    assert [x["host"] for x in server.stop() if x["msg"] == "unsubscribe endpoint listening"] == ["0.0.0.0"]


MALFORMED = [
    ("content-length-abc", b"POST /unsubscribe HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
    ("content-length-negative", b"POST /unsubscribe HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    ("content-length-twice", b"POST /unsubscribe HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n"
                             b"\r\nab", 400),
    ("body-over-4-kib", b"POST /unsubscribe?e=a&t=b HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
     + b"x" * 5000, 400),
    ("body-over-64-kib", b"POST /unsubscribe HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n", 413),
    ("headers-over-8-kib", b"GET /unsubscribe HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
    ("not-http", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", 400),
    ("bad-request-line", b"GET\r\n\r\n", 400),
    ("nul-in-path", b"GET /unsubscribe%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("dot-dot-path", b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    ("unknown-path", b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    ("not-utf8-query", b"GET /unsubscribe?e=%ff%fe&t=%c3 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("no-token", b"GET /unsubscribe?e=c0@acme.example HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("many-fields", b"GET /unsubscribe?" + b"&".join(b"a=%d" % i for i in range(500)) + b" HTTP/1.1\r\n"
                    b"Host: x\r\n\r\n", 400),
    ("method", b"DELETE /unsubscribe HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ("chunked-garbage", b"POST /unsubscribe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
]


def test_malformed_requests_are_answered_and_logged_in_one_line_each(endpoint: Endpoint,
                                                                      ws_sqlite: Workspace) -> None:
    for name, request, expected in MALFORMED:
        answer = endpoint.raw(request)
        assert answer.startswith(b"HTTP/1."), (name, answer[:80])
        assert status_of(answer) == expected, (name, answer[:200])
    assert urllib.request.urlopen(endpoint.url("/healthz")).read().endswith(b"ok</body>")   # still serving
    lines = endpoint.stop()
    refused = [x for x in lines if x["msg"].startswith("unsubscribe request refused")]
    assert len(refused) == len(MALFORMED)
    assert not any(ADDRESS in json.dumps(x) for x in lines)
    assert not suppressed(ws_sqlite)


def test_forged_links_unsubscribe_nobody_and_a_real_one_does(endpoint: Endpoint, ws_sqlite: Workspace) -> None:
    token = sign(SECRET.encode(), ADDRESS)
    forged = [f"e={ADDRESS}&t={token[:-1]}{'A' if token[-1] != 'A' else 'B'}", f"e={ADDRESS}&t=",
              f"e=victim@example.com&t={token}", f"e={ADDRESS.upper()}x&t={token}", f"e={ADDRESS}&t={token * 3}",
              f"e={'a' * 400}@example.com&t={token}"] + [f"e=victim@example.com&t={i:022d}" for i in range(194)]
    for query in forged:
        request = urllib.request.Request(endpoint.url(f"/unsubscribe?{query}"), data=b"List-Unsubscribe=One-Click")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request)
        assert info.value.code == 400
    assert not suppressed(ws_sqlite)
    good = endpoint.url(f"/unsubscribe?e={ADDRESS}&t={token}")
    assert b"Unsubscribe</button>" in urllib.request.urlopen(good).read()          # GET only asks
    assert not suppressed(ws_sqlite)
    assert urllib.request.urlopen(urllib.request.Request(good, data=b"List-Unsubscribe=One-Click")).status == 200
    assert suppressed(ws_sqlite) == {ADDRESS}
    endpoint.stop()


def test_half_sent_requests_hold_no_thread_and_are_closed(endpoint: Endpoint) -> None:
    """400 requests that never finish (the slow-loris attack) leave the thread count as it was, are closed
    after REQUEST_SECONDS, and an idle connection after IDLE_SECONDS; the endpoint then answers again."""
    before = endpoint.threads()
    idle = socket.create_connection(("127.0.0.1", endpoint.port), timeout=60)
    sockets = []
    for i in range(400):
        s = socket.create_connection(("127.0.0.1", endpoint.port), timeout=60)
        s.sendall(b"POST /unsubscribe HTTP/1.1\r\nHost: x\r\nContent-Length: 26\r\n" if i % 2 else b"GET /unsub")
        sockets.append(s)
    time.sleep(1)
    during = endpoint.threads()
    assert during <= before, (before, during)      # waitress's THREADS were started with the endpoint
    closed = 0
    for s in sockets[:CONNECTIONS - 1]:             # the ones accepted at once (the rest wait in the backlog)
        if s.recv(1024) == b"":
            closed += 1
    assert closed == CONNECTIONS - 1
    assert idle.recv(1024) == b""                   # closed for idling
    for s in sockets:
        s.close()
    assert urllib.request.urlopen(endpoint.url("/healthz"), timeout=60).status == 200
    lines = endpoint.stop()
    assert any(x["msg"] == f"unsubscribe request refused: not received within {REQUEST_SECONDS} s" for x in lines)
    assert THREADS <= before and IDLE_SECONDS >= REQUEST_SECONDS
