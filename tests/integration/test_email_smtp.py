"""SmtpEmail against real local aiosmtpd servers: content, safety, outcomes per reply, TLS and AUTH."""

from __future__ import annotations

import logging
import socket
import ssl
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from smtp_server import DROP, Authenticator, SmtpServer, free_port, self_signed_cert

from engine.delivery import Connector, Outcome
from engine.plugins import registry
from connectors.email_smtp import SmtpEmail
from connectors.email import EmailConfig as EmailConnector
from engine.store.outbox import Claimed

SENDER = "カスタマーサクセス <cs@example.com>"


def conf(port: int, **smtp: Any) -> EmailConnector:
    """Connector settings for a local server: plain SMTP unless told otherwise."""
    values = {"host": "127.0.0.1", "port": port, "starttls": False, "timeout": 5.0, **smtp}
    return EmailConnector.model_validate({"smtp": values, "from": SENDER, "reply_to": "team@example.com"})


def message(n: int, to: str | None = None, **extra: Any) -> dict[str, Any]:
    """A planned message as the planner writes it."""
    return {"to": to or f"user{n}@example.com", "contact_id": f"c{n}", "subject": f"Hello {n}",
            "text": f"Body {n}\n", "html": None, "message_id": f"<m{n}@playbook-engine>",
            "unsubscribe_url": None, **extra}


def item(*messages: dict[str, Any], cc: list[str] | None = None, reply_to: str | None = None,
         result: dict[str, Any] | None = None) -> Claimed:
    """A claimed email action (`result`: what the previous attempt recorded), its payload typed as dispatch
    hands it to the connector."""
    payload: dict[str, Any] = {"messages": list(messages), "cc": cc or [], "reply_to": reply_to}
    return registry().load(Claimed(1, "pb/account:a1/1/1/0", "email", "email", payload, 1, 1, False, "pb",
                                   "account", "a1", 1, datetime.now(timezone.utc), None, result))


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    with SmtpServer() as s:
        yield s


@pytest.fixture
def email(server: SmtpServer) -> Iterator[SmtpEmail]:
    c = SmtpEmail(conf(server.port))
    yield c
    c.close()


# -- content ------------------------------------------------------------------------------------------


def test_is_a_connector(email: SmtpEmail) -> None:
    assert isinstance(email, Connector)
    assert (email.name, email.on_ambiguous) == ("email", "resend")


def test_multipart_message_headers_and_envelope(server: SmtpServer, email: SmtpEmail) -> None:
    both = message(1, text="Plain body\n", html="<p>HTML <b>body</b></p>",
                   unsubscribe_url="https://cs.example.com/u/abc")
    html_only = message(2, text=None, html="<h1>Welcome</h1><p>See <a href='https://x.example/d'>docs</a></p>")
    d = email.deliver(item(both, reply_to="csm@example.com"))
    assert d.outcome == Outcome.SENT and d.retry_after is None
    assert d.result == {"delivered": ["<m1@playbook-engine>"]}
    assert email.deliver(item(html_only)).result == {"delivered": ["<m2@playbook-engine>"]}
    first, second = server.handler.received
    for raw in (first.data, second.data):
        assert b"\n" not in raw.replace(b"\r\n", b"")             # CRLF only: no bare LF on the wire
    assert (first.mail_from, first.rcpt_tos) == ("cs@example.com", ["user1@example.com"])
    assert second.rcpt_tos == ["user2@example.com"]

    m = first.message()
    assert m["Message-ID"] == "<m1@playbook-engine>"
    assert m["List-Unsubscribe"] == "<https://cs.example.com/u/abc>"
    assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert m["Reply-To"] == "csm@example.com"      # the action's reply_to wins over the configured one
    assert m.get_content_type() == "multipart/alternative"
    assert m.get_body(("plain",)).get_content() == "Plain body\n"
    assert m.get_body(("html",)).get_content().strip() == "<p>HTML <b>body</b></p>"

    m2 = second.message()
    assert m2["Message-ID"] == "<m2@playbook-engine>" and m2["List-Unsubscribe"] is None
    assert m2["Reply-To"] == "team@example.com"
    text = m2.get_body(("plain",)).get_content()
    assert "Welcome" in text and "docs <https://x.example/d>" in text and "<h1>" not in text


def test_japanese_subject_and_display_names_arrive_intact(server: SmtpServer, email: SmtpEmail) -> None:
    m = message(1, to="山田 太郎 <taro@example.co.jp>", subject="件名: 更新のご案内",
                text="山田様\n\nご契約更新のご案内です。\n")
    assert email.deliver(item(m, cc=["佐藤 花子 <hanako@example.co.jp>"])).outcome == Outcome.SENT
    (got,) = server.handler.received
    assert "BODY=8BITMIME" in got.mail_options                     # the UTF-8 body goes as 8bit
    assert b"\r\nSubject: =?utf-8?" in got.data                       # headers stay ASCII (RFC 2047)
    parsed = got.message()
    assert parsed["Subject"] == "件名: 更新のご案内"
    (frm,) = parsed["From"].addresses
    assert (frm.display_name, frm.addr_spec) == ("カスタマーサクセス", "cs@example.com")
    (to,) = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == ("山田 太郎", "taro@example.co.jp")
    assert parsed["Cc"].addresses[0].display_name == "佐藤 花子"
    assert parsed.get_body(("plain",)).get_content() == "山田様\n\nご契約更新のご案内です。\n"
    assert got.rcpt_tos == ["taro@example.co.jp", "hanako@example.co.jp"]


def test_international_address_uses_smtputf8(server: SmtpServer, email: SmtpEmail) -> None:
    d = email.deliver(item(message(1, to="たろう@example.jp")))
    assert d.outcome == Outcome.SENT
    (got,) = server.handler.received
    assert got.rcpt_tos == ["たろう@example.jp"] and "SMTPUTF8" in got.mail_options
    assert "\r\nTo: たろう@example.jp\r\n".encode() in got.data    # a UTF-8 header, as SMTPUTF8 allows


# -- header injection ---------------------------------------------------------------------------------


def _header_names(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    return [line.split(":", 1)[0].lower() for line in head.split("\r\n") if line and line[0] not in " \t"]


def test_injection_in_subject_and_display_name_cannot_add_a_header(server: SmtpServer, email: SmtpEmail) -> None:
    m = message(1, to="Alice\r\nBcc: evil@example.com <alice@example.com>",
                subject="Renewal\r\nBcc: evil@example.com")
    d = email.deliver(item(m, reply_to="Team\nBcc: evil@example.com <team@example.com>"))
    assert d.outcome == Outcome.SENT
    (got,) = server.handler.received
    assert got.rcpt_tos == ["alice@example.com"]
    assert "bcc" not in _header_names(got.data)
    parsed = got.message()
    assert parsed["Subject"] == "Renewal Bcc: evil@example.com"          # the line break became a space
    assert [a.addr_spec for a in parsed["To"].addresses] == ["alice@example.com"]
    assert [a.addr_spec for a in parsed["Reply-To"].addresses] == ["team@example.com"]
    assert "evil@example.com" not in str([a.addr_spec for h in ("To", "Cc", "Reply-To")
                                          for a in (parsed[h].addresses if parsed[h] else ())])


def test_injection_in_a_bare_address_is_refused_not_guessed(server: SmtpServer, email: SmtpEmail) -> None:
    bad = message(1, to="alice@example.com\r\nBcc: evil@example.com")
    d = email.deliver(item(bad))
    assert d.outcome == Outcome.PERMANENT
    assert d.result["refused"] == {"alice@example.com Bcc: evil@example.com": "not a valid email address"}
    assert "bounced" not in d.result               # our data is wrong; the mailbox did not bounce
    assert server.handler.received == []
    # in a batch the others still go out
    d = email.deliver(item(message(2), bad))
    assert d.outcome == Outcome.SENT and d.result["delivered"] == ["<m2@playbook-engine>"]
    assert [r.rcpt_tos for r in server.handler.received] == [["user2@example.com"]]


# -- outcomes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["rcpt", "data"])
@pytest.mark.parametrize("reply", ["421 4.3.2 Service shutting down", "451 4.3.0 Try again later"])
def test_4xx_is_transient(server: SmtpServer, email: SmtpEmail, where: str, reply: str) -> None:
    if where == "rcpt":
        server.handler.rcpt_reply = reply
    else:
        server.handler.data_replies.append(reply)
    d = email.deliver(item(message(1)))
    assert d.outcome == Outcome.TRANSIENT and d.retry_after is None
    assert reply in d.detail and d.result == {"delivered": []}
    assert server.handler.accepted == []
    server.handler.rcpt_reply = None
    assert email.deliver(item(message(1))).outcome == Outcome.SENT   # reconnects after a 421


def test_550_on_the_only_recipient_is_a_permanent_bounce(server: SmtpServer, email: SmtpEmail) -> None:
    server.handler.rcpt_replies["user1@example.com"] = "550 5.1.1 <user1@example.com>: no such user"
    d = email.deliver(item(message(1)))
    assert d.outcome == Outcome.PERMANENT
    assert d.result["bounced"] == {"user1@example.com": "550 5.1.1 <user1@example.com>: no such user"}
    assert d.result["delivered"] == []
    assert server.handler.received == []


def test_550_after_data_for_one_recipient_is_a_bounce(server: SmtpServer, email: SmtpEmail) -> None:
    server.handler.data_replies.append("550 5.7.1 Message rejected")
    d = email.deliver(item(message(1)))
    assert d.outcome == Outcome.PERMANENT
    assert d.result["bounced"] == {"user1@example.com": "550 5.7.1 Message rejected"}


def test_mixed_batch_reports_per_recipient(server: SmtpServer, email: SmtpEmail) -> None:
    server.handler.rcpt_replies["user2@example.com"] = "550 5.1.1 no such user"
    d = email.deliver(item(message(1), message(2), message(3)))
    assert d.outcome == Outcome.SENT
    assert d.result == {"delivered": ["<m1@playbook-engine>", "<m3@playbook-engine>"],
                        "refused": {"user2@example.com": "550 5.1.1 no such user"},
                        "bounced": {"user2@example.com": "550 5.1.1 no such user"}}
    assert "user2@example.com" in d.detail
    assert [r.rcpt_tos for r in server.handler.accepted] == [["user1@example.com"], ["user3@example.com"]]
    assert len(server.handler.sessions) == 1          # one connection for the whole batch


def test_partial_transient_then_retry_skips_delivered(server: SmtpServer, email: SmtpEmail) -> None:
    server.handler.data_replies[:] = ["250 OK", "451 4.7.1 Greylisted", "250 OK"]
    msgs = (message(1), message(2), message(3))
    d = email.deliver(item(*msgs))
    assert d.outcome == Outcome.TRANSIENT
    assert d.result == {"delivered": ["<m1@playbook-engine>", "<m3@playbook-engine>"]}
    # the next attempt gets the previous one's recorded result, and sends only what it did not deliver
    d = email.deliver(item(*msgs, result=d.result))
    assert d.outcome == Outcome.SENT
    assert d.result["delivered"] == ["<m1@playbook-engine>", "<m3@playbook-engine>", "<m2@playbook-engine>"]
    assert [r.rcpt_tos[0] for r in server.handler.accepted] == ["user1@example.com", "user3@example.com",
                                                               "user2@example.com"]
    # once every message is delivered, another attempt sends nothing
    d = email.deliver(item(*msgs, result={"delivered": d.result["delivered"]}))
    assert d.outcome == Outcome.SENT and len(server.handler.accepted) == 3


def test_permanent_failure_after_earlier_deliveries_is_sent_with_refusal(server: SmtpServer,
                                                                          email: SmtpEmail) -> None:
    server.handler.rcpt_replies["user2@example.com"] = "550 5.1.1 no such user"
    d = email.deliver(item(message(1), message(2), result={"delivered": ["<m1@playbook-engine>"]}))
    assert d.outcome == Outcome.SENT
    assert d.result["delivered"] == ["<m1@playbook-engine>"]
    assert d.result["refused"] == {"user2@example.com": "550 5.1.1 no such user"}
    assert server.handler.received == []


def test_421_stops_the_batch(server: SmtpServer, email: SmtpEmail) -> None:
    server.handler.rcpt_replies["user2@example.com"] = "421 4.3.2 Too busy"
    d = email.deliver(item(message(1), message(2), message(3)))
    assert d.outcome == Outcome.TRANSIENT
    assert d.result == {"delivered": ["<m1@playbook-engine>"]}
    assert [r.rcpt_tos for r in server.handler.received] == [["user1@example.com"]]


def test_connection_dropped_after_data_is_transient_and_uncertain(server: SmtpServer, email: SmtpEmail) -> None:
    server.handler.data_replies.append(DROP)
    d = email.deliver(item(message(1), message(2)))
    assert d.outcome == Outcome.TRANSIENT
    assert d.result == {"delivered": [], "uncertain": ["<m1@playbook-engine>"]}
    assert "may have it" in d.detail
    assert len(server.handler.received) == 1           # the server did read it: a resend may duplicate
    d = email.deliver(item(message(1), message(2)))
    assert d.outcome == Outcome.SENT
    assert {r.message()["Message-ID"] for r in server.handler.received} == {"<m1@playbook-engine>",
                                                                            "<m2@playbook-engine>"}


def test_cc_goes_to_the_envelope_and_a_refused_cc_is_reported(server: SmtpServer, email: SmtpEmail) -> None:
    server.handler.rcpt_replies["gone@example.com"] = "550 5.1.1 no such user"
    d = email.deliver(item(message(1), cc=["csm@example.com", "gone@example.com", "USER1@example.com"]))
    assert d.outcome == Outcome.SENT
    assert d.result == {"delivered": ["<m1@playbook-engine>"],
                        "refused": {"gone@example.com": "550 5.1.1 no such user"},
                        "bounced": {"gone@example.com": "550 5.1.1 no such user"}}
    (got,) = server.handler.received
    assert got.rcpt_tos == ["user1@example.com", "csm@example.com"]   # the recipient gets one copy
    assert got.message()["Cc"] == "csm@example.com, gone@example.com, USER1@example.com"


def test_a_refused_sender_is_transient_and_stops_the_batch(server: SmtpServer, email: SmtpEmail) -> None:
    server.handler.mail_reply = "550 5.7.1 Sender not allowed to relay"
    d = email.deliver(item(message(1), message(2)))
    assert d.outcome == Outcome.TRANSIENT and "550 5.7.1" in d.detail   # our setup, not the recipients
    assert d.result == {"delivered": []} and "bounced" not in d.result
    assert server.handler.received == []


def test_an_invalid_reply_to_is_permanent(server: SmtpServer, email: SmtpEmail) -> None:
    d = email.deliver(item(message(1), reply_to="not an address"))
    assert d.outcome == Outcome.PERMANENT and d.detail.startswith("reply_to:")
    assert server.handler.received == []


def test_connection_refused_is_transient() -> None:
    email = SmtpEmail(conf(free_port()))
    d = email.deliver(item(message(1)))
    assert d.outcome == Outcome.TRANSIENT and "connect" in d.detail
    assert d.result == {"delivered": []}


def test_timeout_is_transient() -> None:
    with socket.socket() as silent:                    # accepts connections, never says hello
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        email = SmtpEmail(conf(silent.getsockname()[1], timeout=0.3))
        d = email.deliver(item(message(1)))
    assert d.outcome == Outcome.TRANSIENT and "timed out" in d.detail


def test_connection_is_kept_open_and_reopened_when_dropped(server: SmtpServer, email: SmtpEmail) -> None:
    for n in range(3):
        assert email.deliver(item(message(n))).outcome == Outcome.SENT
    assert len(server.handler.sessions) == 1
    server.drop_connections()                          # e.g. the server's idle timeout
    assert email.deliver(item(message(9))).outcome == Outcome.SENT
    assert len(server.handler.sessions) == 2 and len(server.handler.accepted) == 4
    email.close()
    email.close()                                      # closing twice is harmless


# -- login and TLS -----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_login_with_username_and_password(caplog: pytest.LogCaptureFixture) -> None:
    auth = Authenticator("mailer", "s3cret-pässword")
    with SmtpServer(authenticator=auth, auth_required=True, auth_require_tls=False) as srv:
        caplog.set_level(logging.DEBUG)
        good = SmtpEmail(conf(srv.port, username="mailer", password="s3cret-pässword"))
        assert good.deliver(item(message(1))).outcome == Outcome.SENT
        good.close()
        bad = SmtpEmail(conf(srv.port, username="mailer", password="wrong-pw-42"))
        d = bad.deliver(item(message(2)))
        anonymous = SmtpEmail(conf(srv.port)).deliver(item(message(3)))
        assert set(auth.attempts) == {"mailer"} and len(auth.attempts) >= 2
        assert len(srv.handler.accepted) == 1
    # a rejected login is about our configuration, not the message: retried, never failed for good
    assert d.outcome == Outcome.TRANSIENT and "AUTH" in d.detail and "535" in d.detail
    assert anonymous.outcome == Outcome.TRANSIENT and "530" in anonymous.detail   # auth required, at MAIL
    for text in (d.detail, str(d.result), caplog.text, repr(bad.conf)):
        assert "wrong-pw-42" not in text and "s3cret" not in text


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    made = self_signed_cert(tmp_path_factory.mktemp("tls"))
    if isinstance(made, str):
        pytest.skip(made)
    return made


def _server_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert)
    return ctx


def test_starttls_verifies_the_server(certificate: tuple[Path, Path]) -> None:
    with SmtpServer(tls_context=_server_context(certificate), require_starttls=True) as srv:
        trusting = SmtpEmail(conf(srv.port, starttls=True),
                             ssl_context=ssl.create_default_context(cafile=str(certificate[0])))
        assert trusting.deliver(item(message(1))).outcome == Outcome.SENT
        trusting.close()
        default = SmtpEmail(conf(srv.port, starttls=True))   # system trust store: self-signed is rejected
        d = default.deliver(item(message(2)))
        plain = SmtpEmail(conf(srv.port, starttls=False)).deliver(item(message(3)))
        assert [r.rcpt_tos for r in srv.handler.accepted] == [["user1@example.com"]]
    assert d.outcome == Outcome.TRANSIENT and "STARTTLS" in d.detail and "CERTIFICATE_VERIFY_FAILED" in d.detail
    assert plain.outcome == Outcome.TRANSIENT and "530" in plain.detail          # STARTTLS required


def test_implicit_tls(certificate: tuple[Path, Path]) -> None:
    with SmtpServer(ssl_context=_server_context(certificate)) as srv:
        email = SmtpEmail(conf(srv.port, ssl=True, starttls=False),
                          ssl_context=ssl.create_default_context(cafile=str(certificate[0])))
        assert email.deliver(item(message(1))).outcome == Outcome.SENT
        email.close()
        assert len(srv.handler.accepted) == 1
