"""Secrets out of every message: what error messages, `validate` and log lines print passes through `redact`.

Two kinds of text are kept out:

* values the configuration took from the environment (`${NAME}`): each is replaced by `${NAME}`, so a message
  still says which value it is about (`unknown time zone `${TZ_SECRET}``) without printing it;
* passwords in URLs, however they are written: `user:pa/ss:w@host`, percent-encoded (`p%40ss`), or in the
  query (`?password=…`): the password as written and decoded becomes `***`. URLs the configuration does not
  hold (a driver's message, a traceback) lose their `user:password@` and `password=` values by pattern.

`load_settings` tells this module what to keep out (`forget_all`, `remember_env`, `remember_url`), once per
configuration loaded; the CLI's error output, the log formatters and the internal-error report call `redact`."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote

MASK = "***"
MIN_LENGTH = 4          # shorter values (`true`, `587`, `UTC`) are no secret and would garble messages

_SECRET_KEY = re.compile(r"pass(word|wd)?|pwd|secret|token|api_?key|private_?key|credential|signature|auth",
                         re.IGNORECASE)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://(?P<rest>.*)$", re.DOTALL)
# in text from elsewhere: user:password@ of a URL (up to the last @ of the URL), and secret=value pairs
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@'\"]*:)[^\s'\"]*@")
_QUERY_SECRET = re.compile(r"(?i)\b((?:ssl)?pass(?:word|wd)?|pwd|secret|token|api_?key|access_token)=(?!\*\*\*)[^&\s'\"]+")

_known: dict[str, str] = {}                     # secret text -> what is printed instead
_order: list[str] = []                          # the keys, longest first


def forget_all() -> None:
    """Start again (a configuration is being loaded)."""
    _known.clear()
    _order.clear()


def remember(value: str, shown: str = MASK) -> None:
    """Keep `value` (and its percent-decoded form) out of messages, printing `shown` instead."""
    for form in {value, unquote(value)}:
        if len(form) >= MIN_LENGTH and form not in _known:
            _known[form] = shown
    _order[:] = sorted(_known, key=len, reverse=True)


def remember_env(name: str, value: str) -> None:
    """A value the configuration took from the environment variable `name`."""
    remember(value, "${" + name + "}")


def remember_url(url: str) -> None:
    """The secrets of a URL of the configuration: its password (as written and decoded) and the values of secret
    query parameters. (A password with an unencoded `@`, which a parser would cut in two and a driver then echo
    as a host name, is refused when the configuration loads: engine/store/database.py, `url_problem`.)"""
    for secret in url_secrets(url):
        remember(secret)


def url_secrets(url: str) -> list[str]:
    """The password of a URL (everything between the user's `:` and the last `@`) and secret query values."""
    m = _URL.match(url.strip())
    if m is None:
        return []
    rest = m.group("rest")
    found = []
    userinfo, at, _ = rest.rpartition("@")
    if at:
        _, colon, password = userinfo.partition(":")
        if colon and password:
            found.append(password)
    _, question, query = rest.partition("?")
    if question:
        found += [v for k, v in parse_qsl(query, keep_blank_values=False) if _SECRET_KEY.search(k)]
        found += [raw.partition("=")[2] for raw in query.split("&") if _SECRET_KEY.search(raw.partition("=")[0])]
    return [s for s in found if s]


def mask_url(url: str) -> str:
    """A URL to print: its password and secret query values as ***, whatever characters they hold."""
    return redact(url, known=False)


def redact(text: str, *, known: bool = True) -> str:
    """The text without any secret: remembered values replaced, URL passwords and secret parameters masked."""
    if not text:
        return text
    if known:
        for value in _order:
            if value in text:
                text = text.replace(value, _known[value])
    text = _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)
    return _QUERY_SECRET.sub(rf"\g<1>={MASK}", text)
