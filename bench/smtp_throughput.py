"""How many emails per second SmtpEmail sends to a local SMTP server with one worker (target: >= 300/s).

    .venv/bin/python bench/smtp_throughput.py [N]

The server is aiosmtpd's Sink handler in its own process (as a local MTA would be), so the figure is the
client's: message building, one SMTP transaction per message, one kept-open connection.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.delivery import Outcome  # noqa: E402
from connectors.email_smtp import SmtpEmail  # noqa: E402
from connectors.email import EmailConfig, EmailPayload, Mail  # noqa: E402
from engine.store.outbox import Claimed  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                if s.recv(64).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the SMTP server on port {port} did not start")


@contextmanager
def local_smtp_server() -> Iterator[SmtpEmail]:
    """An aiosmtpd Sink in its own process and a SmtpEmail connector pointed at it."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                               "-c", "aiosmtpd.handlers.Sink"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(port)
        conf = EmailConfig.model_validate({"smtp": {"host": "127.0.0.1", "port": port, "starttls": False},
                                              "from": "カスタマーサクセス <cs@example.com>"})
        email = SmtpEmail(conf)
        try:
            yield email
        finally:
            email.close()
    finally:
        server.terminate()
        server.wait(10)


def _item(n: int) -> Claimed:
    """A planned one-message email action, as the planner writes it."""
    m = Mail(to=f"user{n}@example.com", contact_id=f"c{n}", subject=f"更新のご案内 {n}", text=None,
             html=f"<p>Dear customer {n},</p><p>Your renewal is coming up.</p>",
             message_id=f"<bench-{n}@playbook-engine>", unsubscribe_url=f"https://cs.example.com/u/{n}")
    return Claimed(n, f"bench/{n}", "email", "email", EmailPayload([m]), 1, 1, False,
                   "bench", "account", str(n), 1, datetime.now(timezone.utc), None)


def measure(n: int = 2000) -> float:
    """Send n planned one-message actions through SmtpEmail to a local aiosmtpd Sink; messages per second."""
    with local_smtp_server() as email:
        items = [_item(i) for i in range(n)]
        start = time.perf_counter()
        for it in items:
            d = email.deliver(it)
            if d.outcome != Outcome.SENT:
                raise RuntimeError(f"message {it.id} not sent: {d.detail}")
        return n / (time.perf_counter() - start)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print(f"{measure(count):.0f} messages/s ({count} messages, one SmtpEmail, one connection)")
