"""Build RFC 5322 messages safely: policy.default, no header injection, stable Message-ID, List-Unsubscribe; and
the strict parser of one mailbox (`mailbox`) that sender, recipient and reply-to addresses go through."""

from __future__ import annotations

import re
import secrets
from email.errors import HeaderParseError
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import formatdate
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any


class _FoldedOnce:
    """A header that keeps its folded text per policy (a header object is immutable, so is its folding)."""

    def fold(self, *, policy: Any) -> str:
        folds = self.__dict__.setdefault("_folds", {})
        if policy not in folds:
            folds[policy] = super().fold(policy=policy)  # type: ignore[misc]
        return folds[policy]


class _HeaderClasses(HeaderRegistry):
    """The standard header registry with three memories: each header's class is built once (the stdlib
    makes a new class every time a header is set or read), a header value seen before is not parsed again
    (a sender, `Content-Type: text/plain; charset="utf-8"`, …), and a header object folds once per policy.
    Header objects are immutable, so sharing them between messages is safe."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}
        self._parsed = lru_cache(maxsize=1024)(super().__call__)

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            standard = super().__getitem__(name)
            made = self._made[key] = type(standard.__name__, (_FoldedOnce, standard), {})
        return made

    def __call__(self, name: str, value: Any) -> BaseHeader:
        return self._parsed(name, value) if isinstance(value, str) else super().__call__(name, value)


POLICY = default_policy.clone(header_factory=_HeaderClasses())   # policy.default in every other respect
SMTP_POLICY = POLICY.clone(linesep="\r\n")                       # what goes on the wire: CRLF, never bare LF
SMTPUTF8_POLICY = SMTP_POLICY.clone(utf8=True)                   # for international addresses (RFC 6531)


def header_safe(value: str | None) -> str:
    """A header value with every line break (and other control characters) turned into a space."""
    return re.sub(r"[\r\n\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+", " ", value or "").strip()


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("br", "p", "div", "li", "tr", "h1", "h2", "h3"):
            self.parts.append("\n")
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self._href = href

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1
        elif tag == "a" and getattr(self, "_href", None):
            self.parts.append(f" <{self._href}>")
            self._href = None
        elif tag in ("p", "div", "h1", "h2", "h3"):
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """A readable plain-text alternative for an HTML body."""
    p = _TextExtractor()
    p.feed(html)
    text = "".join(p.parts)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def build_message(message: Any, *, sender: str, cc: list[str] | None = None, reply_to: str | None = None,
                  date: float | None = None, to: str | None = None) -> EmailMessage:
    """One outgoing email from a planned message (connectors.email.Mail: to, subject, text/html, message_id,
    unsubscribe_url); `to` overrides the message's recipient (as the envelope parsed it)."""
    msg = EmailMessage(policy=POLICY)
    _header(msg, "From", header_safe(sender))
    _header(msg, "To", header_safe(to or message.to))
    if cc:
        _header(msg, "Cc", ", ".join(header_safe(c) for c in cc))
    if reply_to:
        _header(msg, "Reply-To", header_safe(reply_to))
    _header(msg, "Subject", header_safe(message.subject))
    _header(msg, "Message-ID", header_safe(message.message_id))
    _header(msg, "Date", formatdate(date, localtime=False))
    if message.unsubscribe_url:
        _header(msg, "List-Unsubscribe", f"<{header_safe(message.unsubscribe_url)}>")
        _header(msg, "List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    html = message.html
    text = message.text or (html_to_text(html) if html else "")
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
        msg.set_boundary(_boundary(text, html))
    return msg


def _header(msg: EmailMessage, name: str, value: str) -> None:
    """Set a (sanitized) header. A short printable ASCII value is stored as it is: the policy would write it
    out unchanged, and parsing it into a header object costs more than the rest of the message; any other
    value is parsed, encoded and folded by the policy."""
    if value.isascii() and value.isprintable() and len(name) + 2 + len(value) <= POLICY.max_line_length:
        msg.set_raw(name, value)
    else:
        msg[name] = value


def _boundary(*parts: str) -> str:
    """A random MIME boundary found in no part (the stdlib picks one by compiling a regular expression
    per message)."""
    while True:
        boundary = f"=_{secrets.token_hex(16)}"
        if not any(boundary in p for p in parts):
            return boundary


_ANGLE = re.compile(r"(?P<name>.*?)\s*<(?P<addr>[^<>]*)>")
_ADDR_SPEC = re.compile(r'[^\s<>(),;:"@\[\]\\]+@[^\s<>(),;:"@\[\]\\]+')


class AddressError(ValueError):
    """A planned address that is not exactly one mailbox."""


def mailbox(value: str | None) -> Address:
    """'a@b.example' or 'Name <a@b.example>' as one Address; AddressError for anything else.

    Strict on purpose: the envelope recipient comes from here, never from re-parsing a header, so text
    such as 'a@b.example\\r\\nBcc: evil@x' can neither add a header nor a recipient.
    """
    text = header_safe(value)
    angle = _ANGLE.fullmatch(text)
    name, spec = (angle.group("name").strip(), angle.group("addr").strip()) if angle else ("", text)
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = re.sub(r'\\(.)', r"\1", name[1:-1])
    elif any(c in name for c in '<>,;"'):      # a second address (`a <x@y>, b <z@w>`) or a stray quote
        raise AddressError(f"`{text}` is not one email address (a display name with `,`, `;`, `<` or `>` is "
                           'written in quotes: "Doe, Jane" <jane@example.com>)')
    if not _ADDR_SPEC.fullmatch(spec):
        raise AddressError(f"`{text}` is not an email address")
    try:
        if spec.isascii():
            return Address(display_name=name, addr_spec=spec)
        local, domain = spec.rsplit("@", 1)   # international (SMTPUTF8); the parser refuses these
        return Address(display_name=name, username=local, domain=domain)
    except (ValueError, IndexError, HeaderParseError):
        raise AddressError(f"`{text}` is not an email address") from None
