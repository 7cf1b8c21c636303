"""A scriptable local SMTP server for tests: a real aiosmtpd server that records what it receives.

    with SmtpServer() as server:
        server.handler.rcpt_replies["bob@example.com"] = "550 5.1.1 no such user"
        server.handler.data_replies.append(DROP)     # the next DATA: close without answering
        ...
        server.handler.received[0].message()["Subject"]

Replies starting with 421 close the connection after being sent, as real servers do.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

DROP = "drop"  # a scripted reply meaning: close the connection without answering


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    """One DATA command the server read to the end, and how it answered."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: Any
    reply: str
    mail_options: list[str]

    @property
    def accepted(self) -> bool:
        return self.reply.startswith("250")

    def message(self) -> EmailMessage:
        """The received bytes parsed with policy.default, CRLF read as a line break (as a mail store would)."""
        return BytesParser(policy=default_policy).parsebytes(  # type: ignore[return-value]
            self.data.replace(b"\r\n", b"\n"))


class ScriptedHandler:
    """aiosmtpd handler: records every DATA; replies can be scripted for MAIL, RCPT and DATA."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.mail_reply: str | None = None            # reply to every MAIL FROM, when set
        self.rcpt_replies: dict[str, str] = {}        # recipient (any case) -> reply
        self.rcpt_reply: str | None = None            # reply to every other RCPT, when set
        self.data_replies: list[str] = []             # replies to the next DATA commands, in order
        self.sessions: list[SMTP] = []                # protocol instances that sent MAIL (connections)
        self._lock = threading.Lock()

    @property
    def accepted(self) -> list[Received]:
        """Messages the server answered 250 to."""
        return [r for r in self.received if r.accepted]

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> Any:
        with self._lock:
            if server not in self.sessions:
                self.sessions.append(server)
        if self.mail_reply:
            return _reply(server, self.mail_reply)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> Any:
        scripted = self.rcpt_replies.get(address.lower()) or self.rcpt_reply
        if scripted:
            return _reply(server, scripted)
        return MISSING

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            reply = self.data_replies.pop(0) if self.data_replies else "250 OK"
        self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos),
                                      bytes(envelope.original_content or b""), session.peer, reply,
                                      list(envelope.mail_options)))
        if reply == DROP:
            assert server.transport is not None
            server.transport.abort()
            return "250 OK"   # written to a closed transport: never reaches the client
        return _reply(server, reply)

    def drop_connections(self, controller: Controller) -> None:
        """Close every client connection from the server side (as an idle timeout would)."""
        done = threading.Event()

        def close() -> None:
            for s in self.sessions:
                if s.transport is not None:
                    s.transport.close()
            done.set()

        controller.loop.call_soon_threadsafe(close)
        done.wait(5)


def _reply(server: SMTP, reply: str) -> str:
    if reply.startswith("421") and server.transport is not None:
        asyncio.get_running_loop().call_soon(server.transport.close)  # after the reply is written
    return reply


class Authenticator:
    """Accepts exactly one user/password pair; records every attempted login name."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password
        self.attempts: list[str] = []

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                 auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.attempts.append(login)
        if login == self.user and password == self.password:
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)   # aiosmtpd answers 535


class SmtpServer:
    """An aiosmtpd server on 127.0.0.1 and a free port; extra kwargs go to aiosmtpd's SMTP class."""

    def __init__(self, handler: ScriptedHandler | None = None, **kwargs: Any) -> None:
        self.handler = handler or ScriptedHandler()
        self.host, self.port = "127.0.0.1", free_port()
        self.controller = Controller(self.handler, hostname=self.host, port=self.port, **kwargs)

    def __enter__(self) -> "SmtpServer":
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    def drop_connections(self) -> None:
        """Close every open client connection from the server side."""
        self.handler.drop_connections(self.controller)


def self_signed_cert(directory: Path) -> tuple[Path, Path] | str:
    """(cert.pem, key.pem) for 127.0.0.1/localhost, or the reason none could be made.

    Uses the `cryptography` package when installed, else the `openssl` command.
    """
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        _cert_with_cryptography(cert, key)
        return cert, key
    except ImportError:
        pass
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"no self-signed certificate: neither `cryptography` nor a working `openssl` ({exc})"
    return cert, key


def _cert_with_cryptography(cert_path: Path, key_path: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


__all__ = ["DROP", "Authenticator", "Received", "ScriptedHandler", "SmtpServer", "free_port",
           "self_signed_cert"]
