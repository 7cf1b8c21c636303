"""The email connector plugin (`connectors.email`): email over SMTP (§9, §10), one kept-open connection, one
transaction per message, outcomes per recipient; without a real configuration, the .eml local sink.

Outcome rules, for the dispatcher:

* every message accepted                     -> SENT, result {"delivered": [message_id, ...]}
* some refused for good (5xx), others sent   -> SENT, plus result["refused"] = {address: reply}
* all refused for good                       -> PERMANENT, result["refused"]
* a 4xx reply, a timeout, a refused or lost connection -> TRANSIENT with whatever was delivered so far
* a recipient-specific 5xx (RCPT, or after DATA with one recipient) is a hard bounce:
  result["bounced"] = {address: reply}, for the suppression list
* a connection lost after the message data was sent (the server may have it) -> TRANSIENT and
  result["uncertain"] = [message_id]

result["delivered"] is cumulative: it includes the ids delivered by earlier attempts (item.result
"delivered"), and those messages are not sent again.

Problems with our own session (greeting, EHLO, STARTTLS, AUTH, TLS verification, a refused MAIL FROM,
530 "authentication required") are TRANSIENT whatever their code and stop the batch: they say nothing
about the message, and a wrong password must not fail the whole outbox for good (the action still fails
once delivery.max_attempts is reached). The password is never logged nor put in a detail.
"""

from __future__ import annotations

import base64
import functools
import logging
import smtplib
import socket
import ssl
import threading
from dataclasses import dataclass, field
from email.headerregistry import Address
from typing import Any, Callable

from connectors.email import DEFAULT_SENDER, EMAIL, EmailConfig, EmailPayload, EmailSink, Mail
from connectors.email_message import (SMTP_POLICY, SMTPUTF8_POLICY, AddressError, build_message, header_safe,
                                      mailbox)
from engine.delivery import BaseConnector, Connector, Outcome, Receipt
from engine.plugins import ConnectorEnv, ConnectorPlugin
from engine.store.outbox import Claimed

log = logging.getLogger("playbook.email")

_OK_RCPT = (250, 251)
_SESSION_STAGES = ("connect", "EHLO", "STARTTLS", "AUTH")
_SHOWN = 5   # refusals spelled out in a detail


@functools.cache
def _local_hostname() -> str:
    return socket.getfqdn()


def _reply(code: int | None, message: bytes | str | None) -> str:
    """'550 5.1.1 no such user' from a code and a server message."""
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else (message or "")
    return " ".join(f"{code or ''} {text}".split())


class _Failed(Exception):
    """One failed step. code None: no reply (timeout, dropped connection). lost: the connection is unusable."""

    def __init__(self, stage: str, code: int | None, reply: str, *, address: str | None = None,
                 lost: bool = False, session: bool = False, sent_data: bool = False) -> None:
        super().__init__(reply)
        self.stage, self.code, self.reply, self.address = stage, code, reply, address
        self.lost, self.sent_data = lost or code == 421, sent_data
        self.session = session or code == 530   # about our session (auth/TLS required), not the message

    @property
    def permanent(self) -> bool:
        return not self.session and self.code is not None and 500 <= self.code < 600


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One message ready for its transaction."""

    message_id: str
    to: str
    cc: tuple[str, ...]
    data: bytes
    international: bool


@dataclass
class _Tally:
    """What one deliver() call achieved, message by message."""

    delivered: list[str]
    refused: dict[str, str] = field(default_factory=dict)
    bounced: dict[str, str] = field(default_factory=dict)
    uncertain: list[str] = field(default_factory=list)
    sent_now: int = 0
    transient: str | None = None

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"delivered": self.delivered}
        for key in ("refused", "bounced", "uncertain"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


class SmtpEmail(BaseConnector):
    """Sends planned emails through one SMTP server, keeping the connection open between deliveries."""

    name = "email"
    on_ambiguous = "resend"   # SMTP cannot be asked; the stable Message-ID lets receivers dedupe

    def __init__(self, conf: EmailConfig, *, ssl_context: ssl.SSLContext | None = None) -> None:
        """`ssl_context` defaults to the system trust store with hostname checks (tests pass their own CA)."""
        self.conf = conf
        try:
            self.sender = mailbox(conf.from_)
        except AddressError as exc:
            raise ValueError(f"connectors.email.from: {exc}") from None
        self._ssl = ssl_context or ssl.create_default_context()
        self._smtp: smtplib.SMTP | None = None
        self._lock = threading.Lock()

    # -- the Connector protocol -----------------------------------------------------------------------

    def deliver(self, item: Claimed) -> Receipt:
        """Send every message of the action not yet delivered; never raises for a delivery problem."""
        p: EmailPayload = item.payload
        earlier = (item.result or {}).get("delivered") or []
        tally = _Tally(delivered=list(dict.fromkeys(earlier)))
        done = set(tally.delivered)
        todo = [m for m in p.messages if m.message_id not in done]
        raw_reply_to = p.reply_to or self.conf.reply_to
        try:
            reply_to = mailbox(raw_reply_to) if raw_reply_to else None
        except AddressError as exc:
            return Receipt(Outcome.PERMANENT, f"reply_to: {exc}", result=tally.result())
        cc: list[Address] = []
        for raw in p.cc:
            try:
                cc.append(mailbox(raw))
            except AddressError:
                tally.refused[header_safe(raw)] = "not a valid email address"
        with self._lock:
            for m in todo:
                if not self._deliver_one(m, cc, reply_to, tally):
                    break
        return self._summary(tally, len(todo))

    def close(self) -> None:
        """QUIT the kept-open connection, if any."""
        with self._lock:
            self._drop(polite=True)

    # -- one message ------------------------------------------------------------------------------------

    def _deliver_one(self, m: Mail, cc: list[Address], reply_to: Address | None, tally: _Tally) -> bool:
        """Send one message, record how it went; False when the connection is gone and the batch must stop."""
        try:
            prepared = self._prepare(m, cc, reply_to)
        except AddressError:
            tally.refused[header_safe(m.to)] = "not a valid email address"
            return True
        try:
            cc_refused = self._send(prepared)
        except _Failed as f:
            where = f.reply if f.stage in _SESSION_STAGES else f"{f.stage} {f.address or prepared.to}: {f.reply}"
            if f.sent_data and f.code is None:
                tally.uncertain.append(prepared.message_id)
                where += " (after the message was sent: the server may have it)"
            if f.permanent:
                tally.refused[prepared.to] = f.reply
                if f.address:
                    tally.bounced[f.address] = f.reply
            elif tally.transient is None:
                tally.transient = where
            if f.lost:
                self._drop()
            return not (f.lost or f.session)   # a session problem would repeat for every message
        tally.sent_now += 1
        tally.delivered.append(prepared.message_id)
        for address, reply in cc_refused.items():
            tally.refused[address] = reply
            if reply[:1] == "5":
                tally.bounced[address] = reply
        return True

    def _prepare(self, m: Mail, cc: list[Address], reply_to: Address | None) -> _Prepared:
        to = mailbox(m.to)
        msg = build_message(m, to=str(to), sender=str(self.sender), cc=[str(c) for c in cc],
                            reply_to=str(reply_to) if reply_to else None)
        copies = tuple(a for a in dict.fromkeys(c.addr_spec for c in cc) if a.lower() != to.addr_spec.lower())
        international = not all(a.isascii() for a in (self.sender.addr_spec, to.addr_spec, *copies))
        policy = SMTPUTF8_POLICY if international else SMTP_POLICY
        return _Prepared(m.message_id, to.addr_spec, copies, msg.as_bytes(policy=policy), international)

    def _send(self, p: _Prepared) -> dict[str, str]:
        """One transaction; a stale kept-open connection is replaced once. Returns refused cc addresses."""
        for attempt in (1, 2):
            smtp, reused = self._connection()
            try:
                return self._transaction(smtp, p)
            except _Failed as f:
                if reused and attempt == 1 and f.stage == "MAIL" and (f.code is None or f.code == 421):
                    log.info("SMTP connection went stale (%s); reconnecting", f.reply)
                    self._drop()
                    continue
                if not f.lost and f.code is not None:
                    self._reset(smtp)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _transaction(self, smtp: smtplib.SMTP, p: _Prepared) -> dict[str, str]:
        options: list[str] = []
        if p.international:
            if not smtp.has_extn("smtputf8"):
                raise _Failed("MAIL", 553, "553 the server does not support SMTPUTF8 (international address)")
            options += ["SMTPUTF8", "BODY=8BITMIME"]
        elif not p.data.isascii() and smtp.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        code, msg = self._step("MAIL", lambda: smtp.mail(self.sender.addr_spec, options))
        if code != 250:   # the sender or our session was refused: the same for every message
            raise _Failed("MAIL", code, _reply(code, msg), session=True)
        code, msg = self._step("RCPT", lambda: smtp.rcpt(p.to))
        if code not in _OK_RCPT:
            raise _Failed("RCPT", code, _reply(code, msg), address=p.to if code // 100 == 5 else None)
        cc_refused: dict[str, str] = {}
        for c in p.cc:
            code, msg = self._step("RCPT", lambda: smtp.rcpt(c))
            if code == 421:
                raise _Failed("RCPT", code, _reply(code, msg), lost=True)
            if code not in _OK_RCPT:
                cc_refused[c] = _reply(code, msg)
        one_recipient = len(cc_refused) == len(p.cc)
        try:
            code, msg = smtp.data(p.data)
        except smtplib.SMTPDataError as exc:  # DATA itself refused: nothing was sent
            raise _Failed("DATA", exc.smtp_code, _reply(exc.smtp_code, exc.smtp_error)) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise _Failed("DATA", None, _describe(exc), lost=True, sent_data=True) from None
        if code != 250:
            bounce = one_recipient and code // 100 == 5
            raise _Failed("DATA", code, _reply(code, msg), address=p.to if bounce else None)
        return cc_refused

    @staticmethod
    def _step(stage: str, fn: Callable[[], tuple[int, bytes]]) -> tuple[int, bytes]:
        try:
            return fn()
        except (smtplib.SMTPException, OSError) as exc:
            raise _Failed(stage, None, _describe(exc), lost=True) from None

    # -- the connection ---------------------------------------------------------------------------------

    def _connection(self) -> tuple[smtplib.SMTP, bool]:
        """The kept-open connection (reused=True) or a new one."""
        if self._smtp is not None and self._smtp.sock is not None:
            return self._smtp, True
        self._smtp = self._connect()
        return self._smtp, False

    def _connect(self) -> smtplib.SMTP:
        s = self.conf.smtp
        stage = "connect"
        try:
            if s.ssl:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, local_hostname=_local_hostname(),
                                                      timeout=s.timeout, context=self._ssl)
            else:
                smtp = smtplib.SMTP(s.host, s.port, local_hostname=_local_hostname(), timeout=s.timeout)
            try:
                stage = "EHLO"
                smtp.ehlo_or_helo_if_needed()
                if s.starttls and not s.ssl:
                    stage = "STARTTLS"
                    smtp.starttls(context=self._ssl)
                    smtp.ehlo()
                if s.username:
                    stage = "AUTH"
                    _login(smtp, s.username, s.password.get_secret_value() if s.password else "")
            except BaseException:
                smtp.close()
                raise
        except smtplib.SMTPResponseException as exc:
            raise _Failed(stage, exc.smtp_code, f"{stage} to {s.host}:{s.port}: "
                          + _reply(exc.smtp_code, exc.smtp_error), lost=True, session=True) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise _Failed(stage, None, f"{stage} to {s.host}:{s.port}: {_describe(exc)}",
                          lost=True, session=True) from None
        return smtp

    def _reset(self, smtp: smtplib.SMTP) -> None:
        """RSET after a refused transaction; a connection that cannot even do that is dropped."""
        try:
            code, _ = smtp.rset()
            if code != 250:
                self._drop()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self, polite: bool = False) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            if polite and smtp.sock is not None:
                smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            smtp.close()

    # -- reporting --------------------------------------------------------------------------------------

    @staticmethod
    def _summary(t: _Tally, planned: int) -> Receipt:
        if t.transient is not None:
            return Receipt(Outcome.TRANSIENT, f"sent {t.sent_now} of {planned}; will retry: {t.transient}"
                            + _refusals(t), result=t.result())
        if not planned:
            return Receipt(Outcome.SENT, "nothing left to send", result=t.result())
        if t.delivered:
            detail = f"sent {t.sent_now} email(s)" if t.sent_now == planned else f"sent {t.sent_now} of {planned}"
            return Receipt(Outcome.SENT, detail + _refusals(t), result=t.result())
        return Receipt(Outcome.PERMANENT, "not sent" + _refusals(t), result=t.result())


def _login(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """smtplib's login, or AUTH PLAIN in UTF-8 (RFC 4616) for credentials smtplib cannot encode."""
    if (user + password).isascii():
        smtp.login(user, password)
        return
    if "plain" not in smtp.esmtp_features.get("auth", "").lower().split():
        raise smtplib.SMTPException("non-ASCII credentials need AUTH PLAIN, which the server does not offer")
    token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode("ascii")
    code, resp = smtp.docmd("AUTH", "PLAIN " + token)
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, resp)


def _refusals(t: _Tally) -> str:
    if not t.refused:
        return ""
    shown = [f"{a} ({r})" for a, r in list(t.refused.items())[:_SHOWN]]
    more = len(t.refused) - len(shown)
    return "; refused: " + ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _describe(exc: BaseException) -> str:
    """A short description of a network error, without any credential (smtplib never echoes them)."""
    text = str(exc) or "no reply"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"timed out ({text})"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"connection closed by the server ({text})"
    return f"{type(exc).__name__}: {text}"


class EmailPlugin(ConnectorPlugin):
    name = "email"
    kind = EMAIL
    config = EmailConfig

    def connector(self, config: Any, env: ConnectorEnv) -> Connector:
        return SmtpEmail(config)

    def local_sink(self, env: ConnectorEnv) -> Connector:
        return EmailSink(env.outbox_dir, DEFAULT_SENDER)


plugin = EmailPlugin()
